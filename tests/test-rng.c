/*
 * test-rng.c — the torch-compatible noise against torch itself (tests/golden/rng.json, written by
 * tools/reference/make_rng_fixtures.py from torch 2.5.1): both of torch's float32 CPU normal kernels (AVX2, portable
 * scalar) and its float16 one,
 * seven seeds (including ones above 2³² that torch truncates), sizes from 1 to [1,16,128,128], bit-exact equality of
 * every stored value and of the FNV-1a hash over the whole output. Also the mt19937 engine against the C++
 * standard's published check value, and the public sd3q_randn_torch = the AVX2 kernel.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "io/json.h"
#include "testutil.h"

// FNV-1a 64 over the little-endian bytes of n floats (x86-64 and aarch64 are little-endian).
static uint64_t fnv1a64(const float * x, int64_t n) {
    const unsigned char * p = (const unsigned char *)x;
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i < 4 * n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

// The bit pattern of a float as the fixtures write it.
static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// Compares one stored hex value with out[i]; returns 1 when equal.
static int same(const cJSON * hex, const float * out, int64_t i) {
    if (!cJSON_IsString(hex)) return 0;
    return (uint32_t)strtoul(hex->valuestring, NULL, 16) == bits_of(out[i]);
}

// Checks every case of one kernel; returns the number of cases checked.
static int check_kernel(const cJSON * kern, enum randn_kind kind, const char * label, float * buf) {
    const cJSON * cases = cJSON_GetObjectItemCaseSensitive(kern, "cases");
    const cJSON * c;
    int n_cases = 0, n_values = 0, n_bad = 0;
    cJSON_ArrayForEach(c, cases) {
        const cJSON * sj = cJSON_GetObjectItemCaseSensitive(c, "seed");  // a decimal string (2^63 + 5 is not a double)
        int64_t n = (int64_t)cJSON_GetObjectItemCaseSensitive(c, "n")->valuedouble;
        uint64_t seed = cJSON_IsString(sj) ? strtoull(sj->valuestring, NULL, 10) : 0;
        CHECKF(cJSON_IsString(sj) && n >= 0 && n <= 16 * 128 * 128, "%s: malformed case", label);
        if (!cJSON_IsString(sj) || n < 0 || n > 16 * 128 * 128) continue;
        for (int64_t i = 0; i < n; i++) buf[i] = 1e30f;
        randn_torch(seed, buf, n, kind);
        int bad = 0;
        const cJSON * vals = cJSON_GetObjectItemCaseSensitive(c, "values");
        if (vals) {
            int64_t i = 0;
            const cJSON * v;
            cJSON_ArrayForEach(v, vals) {
                if (!same(v, buf, i)) {
                    if (!bad) fprintf(stderr, "  %s seed %llu n %lld: [%lld] got %08x want %s\n", label, (unsigned long long)seed,
                                      (long long)n, (long long)i, bits_of(buf[i]), v->valuestring);
                    bad++;
                }
                i++;
                n_values++;
            }
            CHECKF(i == n, "%s seed %llu: %lld values stored for n %lld", label, (unsigned long long)seed, (long long)i, (long long)n);
        } else {
            const cJSON * head = cJSON_GetObjectItemCaseSensitive(c, "head"), * tail = cJSON_GetObjectItemCaseSensitive(c, "tail");
            const cJSON * at = cJSON_GetObjectItemCaseSensitive(c, "at"), * v;
            int64_t i = 0;
            cJSON_ArrayForEach(v, head) bad += !same(v, buf, i++);
            i = n - 8;
            cJSON_ArrayForEach(v, tail) bad += !same(v, buf, i++);
            cJSON_ArrayForEach(v, at) bad += !same(v, buf, strtoll(v->string, NULL, 10));
            n_values += 24;
            uint64_t want = strtoull(cJSON_GetObjectItemCaseSensitive(c, "fnv1a64")->valuestring, NULL, 16), got = fnv1a64(buf, n);
            if (want != got) {
                fprintf(stderr, "  %s seed %llu n %lld: hash %016llx, want %016llx\n", label, (unsigned long long)seed, (long long)n,
                        (unsigned long long)got, (unsigned long long)want);
                bad++;
            }
        }
        CHECKF(bad == 0, "%s seed %llu n %lld: %d mismatches", label, (unsigned long long)seed, (long long)n, bad);
        n_bad += bad != 0;
        n_cases++;
    }
    printf("%-8s %d cases (%d stored values + whole-output hashes): %d differ from torch\n", label, n_cases, n_values, n_bad);
    return n_cases;
}

int main(void) {
    // mt19937 check value: the 10000th output for the default seed 5489 is 4123659995 (C++ [rand.predef])
    struct mt19937 g;
    mt19937_seed(&g, 5489);
    uint32_t v = 0;
    for (int i = 0; i < 10000; i++) v = mt19937_next(&g);
    CHECKF(v == 4123659995u, "mt19937 10000th output %u", v);
    printf("mt19937 10000th output for seed 5489: %u (expected 4123659995)\n", v);

    cJSON * j = NULL;
    struct sd3q_errbuf e;
    enum sd3q_status st = json_load(SD3Q_SOURCE_DIR "/tests/golden/rng.json", &j, &e);
    CHECKF(st == SD3Q_OK, "%s", e.msg);
    if (st != SD3Q_OK) return test_finish("test-rng");
    const cJSON * k = cJSON_GetObjectItemCaseSensitive(j, "kernels");
    float * buf = malloc(sizeof(float) * 16 * 128 * 128);
    float * pub = malloc(sizeof(float) * 16 * 128 * 128);
    SD3Q_ASSERT(buf && pub);
    int n1 = check_kernel(cJSON_GetObjectItemCaseSensitive(k, "avx2"), RANDN_TORCH_AVX2, "avx2", buf);
    int n2 = check_kernel(cJSON_GetObjectItemCaseSensitive(k, "scalar"), RANDN_TORCH_SCALAR, "scalar", buf);
    int n3 = check_kernel(cJSON_GetObjectItemCaseSensitive(k, "f16"), RANDN_TORCH_F16, "f16", buf);
    CHECK(n1 >= 80 && n2 == n1 && n3 == n1);

    // the public entry point is the AVX2 kernel (what torch gives on x86-64)
    int64_t n = 16 * 64 * 64;
    randn_torch(42, buf, n, RANDN_TORCH_AVX2);
    sd3q_randn_torch(42, pub, n);
    CHECK(memcmp(buf, pub, sizeof(float) * (size_t)n) == 0);
    // n = 0 writes nothing
    pub[0] = 7.0f;
    sd3q_randn_torch(42, pub, 0);
    CHECK(pub[0] == 7.0f);
    // plausibility of the distribution at [1,16,128,128]
    n = 16 * 128 * 128;
    sd3q_randn_torch(1, buf, n);
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += buf[i];
        s2 += (double)buf[i] * buf[i];
    }
    double mean = s / (double)n, var = s2 / (double)n - mean * mean;
    printf("seed 1, [1,16,128,128]: mean %+.4f, variance %.4f\n", mean, var);
    CHECK(mean > -0.01 && mean < 0.01 && var > 0.98 && var < 1.02);
    free(buf);
    free(pub);
    cJSON_Delete(j);
    return test_finish("test-rng");
}
