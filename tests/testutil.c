/*
 * testutil.c — see testutil.h.
 */
#include "testutil.h"

#include "core/dtype.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int g_failures = 0;

static uint64_t g_state;
static int      g_seeded;

// splitmix64: small, good enough for test data.
static uint64_t next_u64(void) {
    if (!g_seeded) {
        const char * s = getenv("SD3Q_TEST_SEED");
        g_state  = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
        g_seeded = 1;
        fprintf(stderr, "test seed: SD3Q_TEST_SEED=%llu\n", (unsigned long long)g_state);
    }
    uint64_t z = (g_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint32_t rand_below(uint32_t n) { return (uint32_t)(next_u64() % n); }

void fill_randn(float * x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) {
        double u1 = ((next_u64() >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (next_u64() >> 11) / 9007199254740992.0;
        x[i] = (float)(scale * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

double rel_l2(const float * a, const float * b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

double check_tensor(const char * name, const float * got, const float * ref, int64_t n, double tol) {
    double maxd = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > maxd) maxd = d;
    }
    double rel = rel_l2(got, ref, n);
    int ok = finite && rel <= tol;
    printf("%-40s n=%-9lld maxabs=%.3e rel=%.3e tol=%.0e %s\n", name, (long long)n, maxd, rel, tol, ok ? "OK" : "NOT OK");
    for (int64_t i = 0; i < n && i < 4 && !ok; i++) printf("    [%lld] got %+.6f ref %+.6f\n", (long long)i, got[i], ref[i]);
    if (!ok) g_failures++;
    return rel;
}

int test_finish(const char * name) {
    if (g_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", name, g_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

// Compares every observed activation the golden file also holds.
void golden_hook_on_tensor(void * ud, const char * name, const void * data, int64_t batch, int64_t rows, int64_t cols) {
    struct golden_hook *     h = ud;
    const struct st_tensor * t = st_find(h->io, name);
    if (!t) return;
    int64_t n = batch * rows * cols;
    CHECKF(t->numel == n, "%s: golden %s has %lld elements, got %lld", h->label, name, (long long)t->numel, (long long)n);
    if (t->numel != n) return;
    float * ref = malloc(sizeof(float) * (size_t)n);
    dtype_to_f32(t->type, t->data, ref, n);
    char label[160];
    snprintf(label, sizeof label, "%s %s", h->label, name);
    check_tensor(label, data, ref, n, h->tol);
    free(ref);
    h->compared++;
}

// ---- first-principles decoders of the stored float formats (the spec the dtype tables are checked against) -------

double f16_formula(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double sign = s ? -1.0 : 1.0;
    if (e == 0) return sign * ldexp((double)m, -24);            // subnormal (and ±0)
    if (e == 31) return m == 0 ? sign * INFINITY : NAN;           // inf / NaN
    return sign * ldexp(1.0 + m / 1024.0, e - 15);
}

double bf16_formula(uint16_t h) {
    int s = h >> 15, e = (h >> 7) & 255, m = h & 127;
    double sign = s ? -1.0 : 1.0;
    if (e == 0) return sign * ldexp((double)m, -133);
    if (e == 255) return m == 0 ? sign * INFINITY : NAN;
    return sign * ldexp(1.0 + m / 128.0, e - 127);
}

double f8_formula(uint8_t v) {
    int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    double sign = s ? -1.0 : 1.0;
    if (e == 15 && m == 7) return NAN;                            // e4m3fn: no infinities, S.1111.111 is NaN
    if (e == 0) return sign * ldexp((double)m, -9);
    return sign * ldexp(1.0 + m / 8.0, e - 7);
}
