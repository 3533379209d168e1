/*
 * progress.c — see progress.h. Writes to stderr so stdout stays machine-readable.
 */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void progress_begin(struct progress * p, const char * what, int total, int item, int items) {
    p->what  = what;
    p->unit  = "steps";
    p->total = total;
    p->item  = item;
    p->items = items;
    p->tty   = isatty(STDERR_FILENO);
    p->t0    = now();
}

int progress_callback(void * user_data, int done, int total) {
    struct progress * p = user_data;
    double el = now() - p->t0, rate = el > 0 ? done / el : 0, eta = rate > 0 ? (total - done) / rate : 0;
    char head[64] = "";
    if (p->items > 1) snprintf(head, sizeof head, " %d/%d", p->item, p->items);
    if (p->tty) {
        char bar[41];
        int fill = total > 0 ? 40 * done / total : 40;
        for (int i = 0; i < 40; i++) bar[i] = i < fill ? '#' : '.';
        bar[40] = '\0';
        fprintf(stderr, "\r%s%s [%s] %d/%d  %.2f %s/s  ETA %.0f s ", p->what, head, bar, done, total, rate, p->unit, eta);
    } else {
        fprintf(stderr, "%s%s: %d/%d %s  %.2f %s/s  elapsed %.1f s  ETA %.0f s\n", p->what, head, done, total, p->unit, rate, p->unit, el, eta);
    }
    fflush(stderr);
    return 0;
}

void progress_end(struct progress * p) {
    if (p->tty) fprintf(stderr, "\n");
}
