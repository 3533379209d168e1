/*
 * status.c — status strings and the per-object detail message.
 */
#include "core/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Fixed, never-NULL description of a status code.
const char * sd3q_status_str(enum sd3q_status st) {
    switch (st) {
        case SD3Q_OK:                  return "ok";
        case SD3Q_ERR_INVALID_ARG:     return "invalid argument";
        case SD3Q_ERR_IO:              return "i/o error";
        case SD3Q_ERR_FORMAT:          return "malformed file";
        case SD3Q_ERR_SHAPE:           return "shape mismatch";
        case SD3Q_ERR_MISSING:         return "missing tensor or file";
        case SD3Q_ERR_OOM:             return "out of memory";
        case SD3Q_ERR_UNSUPPORTED:     return "unsupported";
        case SD3Q_ERR_DEVICE:          return "device error";
        case SD3Q_ERR_ABORTED:         return "aborted";
        case SD3Q_STATUS_COUNT:        break;
    }
    return "unknown status";
}

enum sd3q_status err_set(struct sd3q_errbuf * e, enum sd3q_status st, const char * fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
        va_end(ap);
    }
    return st;
}

void err_prefix(struct sd3q_errbuf * e, const char * fmt, ...) {
    if (!e) return;
    char pre[SD3Q_ERRBUF_SIZE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof(pre), fmt, ap);
    va_end(ap);
    size_t lp = strlen(pre), lo = strlen(e->msg);
    if (lp > SD3Q_ERRBUF_SIZE - 3) lp = SD3Q_ERRBUF_SIZE - 3;
    size_t keep = SD3Q_ERRBUF_SIZE - 1 - lp - 2;
    if (lo < keep) keep = lo;
    memmove(e->msg + lp + 2, e->msg, keep);
    e->msg[lp + 2 + keep] = '\0';
    memcpy(e->msg, pre, lp);
    e->msg[lp]     = ':';
    e->msg[lp + 1] = ' ';
}

void err_clear(struct sd3q_errbuf * e) {
    if (e) e->msg[0] = '\0';
}

void sd3q_abort(const char * file, int line, const char * expr) {
    fflush(stdout);
    fprintf(stderr, "sd3q: internal error at %s:%d: assertion failed: %s\n", file, line, expr);
    abort();
}
