/*
 * status.h — the library's error convention.
 *
 * Every fallible internal function returns an `enum sd3q_status` and, on failure, writes a human-readable
 * detail message into a caller-owned `struct sd3q_errbuf` (kept on the model or session object, never in a
 * global). Messages name the file, the tensor or field, and expected versus got.
 * Bugs (broken internal invariants) are not errors: they abort through SD3Q_ASSERT, also in release builds.
 */
#ifndef SD3Q_CORE_STATUS_H
#define SD3Q_CORE_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#include "sd3q.h"

#define SD3Q_ERRBUF_SIZE 1024

struct sd3q_errbuf {
    char msg[SD3Q_ERRBUF_SIZE];
};

// Sets the detail message (printf-style) and returns `st`, so callers can write `return err_set(e, ...)`.
enum sd3q_status err_set(struct sd3q_errbuf * e, enum sd3q_status st, const char * fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

// Prepends "prefix: " to the current message (used to add the file name as an error travels up).
void err_prefix(struct sd3q_errbuf * e, const char * fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Clears the message.
void err_clear(struct sd3q_errbuf * e);

// Aborts with file, line and expression; for broken invariants only, never for bad input.
void sd3q_abort(const char * file, int line, const char * expr);

#define SD3Q_ASSERT(x)                                  \
    do {                                                \
        if (!(x)) sd3q_abort(__FILE__, __LINE__, #x);   \
    } while (0)

// Returns from the enclosing function when `expr` yields a status other than SD3Q_OK.
#define TRY(expr)                                       \
    do {                                                \
        enum sd3q_status try_st_ = (expr);              \
        if (try_st_ != SD3Q_OK) return try_st_;         \
    } while (0)

#endif
