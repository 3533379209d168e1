/*
 * threads.c — pthread pool with dynamic task distribution (see threads.h).
 */
#include "core/threads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct pool {
    int             n;          // threads including the caller
    pthread_t *     workers;    // n - 1
    pthread_mutex_t mu;
    pthread_cond_t  wake;       // workers wait for a new generation
    pthread_cond_t  done;       // the caller waits for all workers to finish
    uint64_t        generation; // bumped by each pool_run
    int             running;    // workers still busy in this generation
    int             stop;
    pool_task_fn    fn;
    void *          ctx;
    int64_t         n_tasks;
    atomic_llong    next;       // next task to hand out
};

struct worker_arg {
    struct pool * p;
    int           ith;
};

// Takes tasks until none are left.
static void drain(struct pool * p, int ith) {
    for (;;) {
        int64_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, ith);
    }
}

static void * worker_main(void * arg) {
    struct worker_arg * wa = arg;
    struct pool * p = wa->p;
    int ith = wa->ith;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p, ith);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct pool * pool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    struct pool * p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!p->workers) {
            free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            struct worker_arg * wa = malloc(sizeof(*wa));
            if (wa) {
                wa->p   = p;
                wa->ith = i + 1;
            }
            if (!wa || pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
                free(wa);
                p->n = i + 1;  // keep the workers that started
                break;
            }
        }
    }
    return p;
}

void pool_free(struct pool * p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n - 1; i++) pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int pool_size(const struct pool * p) { return p ? p->n : 1; }

void pool_run(struct pool * p, pool_task_fn fn, void * ctx, int64_t n_tasks) {
    if (n_tasks <= 0) return;
    if (!p || p->n == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn      = fn;
    p->ctx     = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    p->running = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->running > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}
