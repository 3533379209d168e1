/*
 * testutil.h — tiny helpers shared by the test programs: checks that count failures, tensor comparison that prints
 * evidence (first values, max abs error, relative L2 error) in llm.c's check_tensor style, and fresh random data.
 */
#ifndef SD3Q_TESTS_TESTUTIL_H
#define SD3Q_TESTS_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>

extern int g_failures;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);              \
            g_failures++;                                                                \
        }                                                                                \
    } while (0)

#define CHECKF(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                \
            fprintf(stderr, "\n");                                                       \
            g_failures++;                                                                \
        }                                                                                \
    } while (0)

// Compares got with ref: prints the name, first values, max abs diff and ‖got−ref‖/‖ref‖; counts a failure when the
// relative error exceeds tol or any value is not finite. Returns the relative error.
double check_tensor(const char * name, const float * got, const float * ref, int64_t n, double tol);

// Relative L2 error ‖a−b‖/‖b‖ (b all zero: ‖a‖).
double rel_l2(const float * a, const float * b, int64_t n);

// Fills with N(0, scale²) values from a generator seeded from the clock unless SD3Q_TEST_SEED is set; the seed used
// is printed once so a failure can be replayed.
void fill_randn(float * x, int64_t n, float scale);

// Uniform random integer in [0, n).
uint32_t rand_below(uint32_t n);

// The value of an f16 / bf16 / f8 (e4m3fn) bit pattern from the formats' definitions (sign, exponent, mantissa), in
// double; written from the IEEE 754 / OCP FP8 texts, independent of src/core/dtype.c.
double f16_formula(uint16_t h);
double bf16_formula(uint16_t h);
double f8_formula(uint8_t v);

struct st_file;

// Model-hook state for golden comparisons: every activation the model reports that `io` also holds is compared
// (check_tensor at tol) and counted, so a test can assert that the comparisons really happened.
struct golden_hook {
    const struct st_file * io;
    const char *           label;
    double                 tol;
    int                    compared;
};

// The hook function (struct mmdit_hook.fn) for a struct golden_hook passed as ud.
void golden_hook_on_tensor(void * ud, const char * name, const void * data, int64_t batch, int64_t rows, int64_t cols);

// Prints a summary and returns the process exit code (0 when no check failed).
int test_finish(const char * name);

#endif
