/*
 * checked.h — overflow-checked size arithmetic for everything derived from untrusted input.
 * Each helper returns true on success and false on overflow (the output is then unspecified).
 */
#ifndef SD3Q_CORE_CHECKED_H
#define SD3Q_CORE_CHECKED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// a + b into *out without wrap-around.
static inline bool ck_add_size(size_t a, size_t b, size_t * out) { return !__builtin_add_overflow(a, b, out); }
// a * b into *out without wrap-around.
static inline bool ck_mul_size(size_t a, size_t b, size_t * out) { return !__builtin_mul_overflow(a, b, out); }
// a + b for 64-bit unsigned offsets.
static inline bool ck_add_u64(uint64_t a, uint64_t b, uint64_t * out) { return !__builtin_add_overflow(a, b, out); }
// a * b for 64-bit unsigned values.
static inline bool ck_mul_u64(uint64_t a, uint64_t b, uint64_t * out) { return !__builtin_mul_overflow(a, b, out); }
// a * b for signed 64-bit element counts.
static inline bool ck_mul_i64(int64_t a, int64_t b, int64_t * out) { return !__builtin_mul_overflow(a, b, out); }
// a + b for signed 64-bit element counts.
static inline bool ck_add_i64(int64_t a, int64_t b, int64_t * out) { return !__builtin_add_overflow(a, b, out); }

// Product of n non-negative dims into *out; false on overflow or a negative dim.
static inline bool ck_numel(const int64_t * dims, int n, int64_t * out) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) {
        if (dims[i] < 0 || !ck_mul_i64(p, dims[i], &p)) return false;
    }
    *out = p;
    return true;
}

#endif
