/*
 * threads.h — a small fixed thread pool. Ops split their work into tasks; `pool_run` hands tasks out to the workers
 * and the calling thread (dynamic scheduling through an atomic counter) and returns when all are done.
 * No OpenMP: the library must not fight an embedding program's threading runtime.
 */
#ifndef SD3Q_CORE_THREADS_H
#define SD3Q_CORE_THREADS_H

#include <stdint.h>

struct pool;

// Runs task `task` (0 ≤ task < n_tasks) on thread `ith` (0 ≤ ith < pool_size).
typedef void (*pool_task_fn)(void * ctx, int64_t task, int ith);

// Creates a pool of n_threads (≥ 1; the caller counts as one). Returns NULL when threads cannot be started.
struct pool * pool_create(int n_threads);

// Stops and joins the workers.
void pool_free(struct pool * p);

// Number of threads including the caller.
int pool_size(const struct pool * p);

// Runs fn for every task and waits.
void pool_run(struct pool * p, pool_task_fn fn, void * ctx, int64_t n_tasks);

// Number of online CPUs (at least 1).
int cpu_count(void);

#endif
