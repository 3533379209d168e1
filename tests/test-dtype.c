/*
 * test-dtype.c — element-type conversions (src/core/dtype.{h,c}) against first-principles formulas.
 *
 *   f16 → f32     all 65536 inputs against sign·2^(e−15)·(1 + m/1024) (subnormals m·2^−24, ±inf, NaN), bit-exact
 *   f32 → f16     round trip of every non-NaN f16; round-to-nearest-even on every midpoint between adjacent f16
 *                 values (and one f32 ulp either side of it); overflow at 65520; 16.8 M f32 patterns against a
 *                 nearest-value search over the sorted f16 table
 *   bf16 → f32    all 65536 inputs against sign·2^(e−127)·(1 + m/128), bit-exact
 *   f32 → bf16    round trip, midpoints, NaN stays NaN (also payloads whose truncation would read as infinity)
 *   f8 e4m3fn     all 256 values against sign·2^(e−7)·(1 + m/8), subnormals m·2^−9, 0x7f/0xff NaN, max 448
 *   dtype_to_f32  every dtype (integers included) from unaligned sources; names/sizes/parse
 *
 * Every expected value is computed here with ldexp/double arithmetic, never by the code under test.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "testutil.h"

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Same float, bit for bit (so −0 ≠ +0); NaN matches any NaN with the same sign.
static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b) && !!signbit(a) == !!signbit(b);
    return f32_bits(a) == f32_bits(b);
}

// ---- f16 -----------------------------------------------------------------------------------------------------------

// Independent f32 → f16 reference: nearest entry of the sorted positive f16 table (0x0000..0x7bff), ties to the even
// bit pattern, |x| ≥ 65520 (the midpoint to the would-be next value 65536) → infinity.
static float g_f16_pos[0x7c00];

static uint16_t f16_nearest(float x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (isnan(x)) return 0xffff;  // caller checks NaN separately
    if (a >= 65520.0) return sign | 0x7c00;
    int lo = 0, hi = 0x7bff;  // largest index with table[idx] <= a
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if ((double)g_f16_pos[mid] <= a) lo = mid;
        else hi = mid - 1;
    }
    if (lo == 0x7bff || (double)g_f16_pos[lo] == a) return sign | (uint16_t)lo;
    double dl = a - g_f16_pos[lo], dh = (double)g_f16_pos[lo + 1] - a;
    int pick = dl < dh ? lo : dh < dl ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
    return sign | (uint16_t)pick;
}

static void test_f16(void) {
    int bad = 0, nan_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = f16_to_f32((uint16_t)h);
        double want = f16_formula((uint16_t)h);
        int ok;
        if (isnan(want)) {
            ok = isnan(got) && !!signbit(got) == ((h & 0x8000) != 0);
            nan_bad += !ok;
        } else {
            ok = same_float(got, (float)want) && (double)got == want;  // exactly representable: no rounding allowed
        }
        if (!ok && bad++ < 5) fprintf(stderr, "f16_to_f32(0x%04x) = %.9g (0x%08x), formula %.9g\n", h, got, f32_bits(got), want);
    }
    CHECKF(bad == 0, "%d of 65536 f16 values decode wrongly (%d NaNs)", bad, nan_bad);
    printf("f16_to_f32: all 65536 inputs match the formula (%d mismatches)\n", bad);
    // a few anchors anyone can verify by hand
    CHECK(f16_to_f32(0x3c00) == 1.0f);
    CHECK(f16_to_f32(0xc000) == -2.0f);
    CHECK(f16_to_f32(0x7bff) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(isinf(f16_to_f32(0x7c00)) && f16_to_f32(0x7c00) > 0);
    CHECK(isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
    CHECK(isnan(f16_to_f32(0x7e00)) && isnan(f16_to_f32(0x7c01)) && isnan(f16_to_f32(0xfc01)));
    CHECK(f32_bits(f16_to_f32(0x8000)) == 0x80000000u);

    // round trip of every non-NaN value; NaN stays NaN with its sign
    int rt_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int is_nan = ((h >> 10) & 31) == 31 && (h & 1023);
        uint16_t back = f32_to_f16(f16_to_f32((uint16_t)h));
        int ok = is_nan ? (((back >> 10) & 31) == 31 && (back & 1023) && (back & 0x8000) == (h & 0x8000)) : back == h;
        if (!ok && rt_bad++ < 5) fprintf(stderr, "f32_to_f16(f16_to_f32(0x%04x)) = 0x%04x\n", h, back);
    }
    CHECKF(rt_bad == 0, "%d f16 values do not round-trip", rt_bad);

    // midpoints between adjacent values go to the even pattern; one f32 ulp off goes to the nearer one
    for (int i = 0; i < 0x7c00; i++) g_f16_pos[i] = f16_to_f32((uint16_t)i);
    int mid_bad = 0, n_mid = 0;
    for (int i = 0; i < 0x7bff; i++) {
        for (int sgn = 0; sgn < 2; sgn++) {
            double a = f16_formula((uint16_t)i), b = f16_formula((uint16_t)(i + 1));
            float mid = (float)((a + b) / 2);  // needs 12 significant bits: exact in f32
            CHECKF((double)mid == (a + b) / 2, "midpoint of 0x%04x not exact in f32", i);
            uint16_t s = sgn ? 0x8000 : 0;
            if (sgn) mid = -mid;
            uint16_t even = (i & 1) ? (uint16_t)(i + 1) : (uint16_t)i;
            uint16_t got = f32_to_f16(mid);
            uint16_t below = f32_to_f16(nextafterf(mid, 0.0f));
            uint16_t above = f32_to_f16(nextafterf(mid, sgn ? -INFINITY : INFINITY));
            int ok = got == (s | even) && below == (s | i) && above == (s | (i + 1));
            n_mid++;
            if (!ok && mid_bad++ < 5)
                fprintf(stderr, "midpoint %.9g between 0x%04x/0x%04x: got 0x%04x (below 0x%04x, above 0x%04x)\n", mid, s | i,
                        s | (i + 1), got, below, above);
        }
    }
    CHECKF(mid_bad == 0, "%d of %d midpoints round wrongly", mid_bad, n_mid);
    printf("f32_to_f16: %d midpoints round to even, ±1 ulp to the nearer value (%d mismatches)\n", n_mid, mid_bad);

    // overflow: 65520 is the midpoint between 65504 and 65536 (even → 65536 = infinity)
    CHECK(f32_to_f16(65504.0f) == 0x7bff);
    CHECK(f32_to_f16(nextafterf(65520.0f, 0.0f)) == 0x7bff);
    CHECK(f32_to_f16(65520.0f) == 0x7c00);
    CHECK(f32_to_f16(-65520.0f) == 0xfc00);
    CHECK(f32_to_f16(1e30f) == 0x7c00);
    CHECK(f32_to_f16(INFINITY) == 0x7c00 && f32_to_f16(-INFINITY) == 0xfc00);
    // underflow: 2^-25 is the midpoint between 0 and the smallest subnormal (even → 0)
    CHECK(f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);
    CHECK(f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)) == 0x0001);
    CHECK(f32_to_f16(ldexpf(3.0f, -26)) == 0x0001);  // 0.75·2^-24: nearest is 2^-24
    CHECK(f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);  // 1.5·2^-24: tie between 1 and 2 steps, even → 2
    CHECK(f32_to_f16(ldexpf(5.0f, -25)) == 0x0002);  // 2.5·2^-24: tie between 2 and 3 steps, even → 2
    CHECK(f32_to_f16(ldexpf(2047.0f, -25)) == 0x0400);  // 1023.5 steps: tie, rounds up into the smallest normal
    CHECK(f32_to_f16(-ldexpf(1.0f, -30)) == 0x8000);
    CHECK(f32_to_f16(ldexpf(1.0f, -149)) == 0x0000);
    {
        uint16_t q = f32_to_f16(NAN), qn = f32_to_f16(-NAN);
        CHECK(((q >> 10) & 31) == 31 && (q & 1023) != 0);
        CHECK(((qn >> 10) & 31) == 31 && (qn & 1023) != 0 && (qn & 0x8000));
        uint16_t p = f32_to_f16(bits_f32(0x7f800001u));  // low payload bit only: must not become infinity
        CHECK(((p >> 10) & 31) == 31 && (p & 1023) != 0);
    }

    // 2^24 f32 bit patterns (every 256th, plus a varying low byte) against the table search
    int sweep_bad = 0;
    uint32_t lcg = 12345;
    for (uint64_t k = 0; k < (1ull << 24); k++) {
        lcg = lcg * 1664525u + 1013904223u;
        uint32_t u = (uint32_t)(k << 8) | (lcg >> 24);
        float x = bits_f32(u);
        if (isnan(x)) continue;
        uint16_t got = f32_to_f16(x), want = f16_nearest(x);
        if (got != want && sweep_bad++ < 5) fprintf(stderr, "f32_to_f16(%.9g = 0x%08x) = 0x%04x, nearest is 0x%04x\n", x, u, got, want);
    }
    CHECKF(sweep_bad == 0, "%d f32 → f16 conversions are not round-to-nearest-even", sweep_bad);
    printf("f32_to_f16: 16.8 M f32 patterns agree with the nearest-value search (%d mismatches)\n", sweep_bad);
}

// ---- bf16 ----------------------------------------------------------------------------------------------------------

// Independent f32 → bf16 reference: the two bf16 neighbours of x by truncation, nearer one by exact double distance,
// ties to the even pattern; beyond the largest finite value the would-be next value 2^128 decides (→ infinity).
static uint16_t bf16_nearest(float x) {
    uint32_t u = f32_bits(x);
    uint16_t lo = (uint16_t)(u >> 16);
    if ((u & 0xffffu) == 0) return lo;
    uint16_t hi = (uint16_t)(lo + 1);  // next away from zero (same sign)
    double a = fabs((double)x), vl = fabs(bf16_formula(lo));
    double vh = ((hi & 0x7fff) == 0x7f80) ? ldexp(1.0, 128) : fabs(bf16_formula(hi));
    double dl = a - vl, dh = vh - a;
    if (dl < dh) return lo;
    if (dh < dl) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16(void) {
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = bf16_to_f32((uint16_t)h);
        double want = bf16_formula((uint16_t)h);
        int ok = isnan(want) ? (isnan(got) && !!signbit(got) == ((h & 0x8000) != 0)) : ((double)got == want && same_float(got, (float)want));
        if (!ok && bad++ < 5) fprintf(stderr, "bf16_to_f32(0x%04x) = %.9g, formula %.9g\n", h, got, want);
    }
    CHECKF(bad == 0, "%d of 65536 bf16 values decode wrongly", bad);
    printf("bf16_to_f32: all 65536 inputs match the formula (%d mismatches)\n", bad);
    CHECK(bf16_to_f32(0x3f80) == 1.0f && bf16_to_f32(0xc040) == -3.0f);

    int rt_bad = 0, mid_bad = 0, n_mid = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int is_nan = ((h >> 7) & 255) == 255 && (h & 127);
        uint16_t back = f32_to_bf16(bf16_to_f32((uint16_t)h));
        int ok = is_nan ? (((back >> 7) & 255) == 255 && (back & 127) && (back & 0x8000) == (h & 0x8000)) : back == h;
        if (!ok && rt_bad++ < 5) fprintf(stderr, "f32_to_bf16(bf16_to_f32(0x%04x)) = 0x%04x\n", h, back);
        // midpoint to the next pattern (same sign), for finite h whose successor is finite
        if ((h & 0x7fff) < 0x7f7f) {
            double a = bf16_formula((uint16_t)h), b = bf16_formula((uint16_t)(h + 1));
            float mid = (float)((a + b) / 2);
            uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
            uint16_t got = f32_to_bf16(mid);
            uint16_t toward0 = f32_to_bf16(nextafterf(mid, 0.0f));
            uint16_t away = f32_to_bf16(nextafterf(mid, (h & 0x8000) ? -INFINITY : INFINITY));
            n_mid++;
            int ok2 = (double)mid == (a + b) / 2 && got == even && toward0 == h && away == h + 1;
            if (!ok2 && mid_bad++ < 5) fprintf(stderr, "bf16 midpoint after 0x%04x: got 0x%04x\n", h, got);
        }
    }
    CHECKF(rt_bad == 0, "%d bf16 values do not round-trip", rt_bad);
    CHECKF(mid_bad == 0, "%d of %d bf16 midpoints round wrongly", mid_bad, n_mid);
    printf("f32_to_bf16: round trip of all values, %d midpoints to even (%d + %d mismatches)\n", n_mid, rt_bad, mid_bad);

    // NaN stays NaN even when the payload lives only in the low 16 bits (truncation would give infinity)
    uint32_t nans[] = {0x7f800001u, 0xff800001u, 0x7fc00000u, 0x7f80ffffu, 0xffffffffu};
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        uint16_t b = f32_to_bf16(bits_f32(nans[i]));
        CHECKF(((b >> 7) & 255) == 255 && (b & 127) != 0 && (b >> 15) == (nans[i] >> 31), "f32_to_bf16(0x%08x) = 0x%04x", nans[i], b);
    }
    // overflow: the largest finite f32 rounds to infinity (it lies above the midpoint 0x7f7f8000)
    CHECK(f32_to_bf16(bits_f32(0x7f7fffffu)) == 0x7f80);
    CHECK(f32_to_bf16(bits_f32(0xff7fffffu)) == 0xff80);
    CHECK(f32_to_bf16(bits_f32(0x7f7f7fffu)) == 0x7f7f);

    int sweep_bad = 0;
    uint32_t lcg = 777;
    for (uint64_t k = 0; k < (1ull << 22); k++) {
        lcg = lcg * 1664525u + 1013904223u;
        uint32_t u = (uint32_t)(k << 10) ^ (lcg >> 16) ^ ((lcg & 1) ? 0x8000u : 0);  // low halves incl. exact 0x8000 ties
        float x = bits_f32(u);
        if (isnan(x)) continue;
        uint16_t got = f32_to_bf16(x), want = bf16_nearest(x);
        if (got != want && sweep_bad++ < 5) fprintf(stderr, "f32_to_bf16(0x%08x) = 0x%04x, nearest 0x%04x\n", u, got, want);
    }
    CHECKF(sweep_bad == 0, "%d f32 → bf16 conversions are not round-to-nearest-even", sweep_bad);
    printf("f32_to_bf16: 4.2 M f32 patterns agree with the nearest-value rule (%d mismatches)\n", sweep_bad);
}

// ---- f8 e4m3fn -------------------------------------------------------------------------------------------------------

static void test_f8(void) {
    int bad = 0, n_nan = 0;
    double maxv = 0;
    for (int v = 0; v < 256; v++) {
        float got = f8e4m3_to_f32((uint8_t)v);
        double want = f8_formula((uint8_t)v);
        int ok;
        if (isnan(want)) {
            n_nan++;
            ok = isnan(got);
        } else {
            ok = (double)got == want && same_float(got, (float)want);
            if (fabs(want) > maxv) maxv = fabs(want);
        }
        if (!ok && bad++ < 5) fprintf(stderr, "f8e4m3_to_f32(0x%02x) = %.9g, formula %.9g\n", v, got, want);
    }
    CHECKF(bad == 0, "%d of 256 f8 values decode wrongly", bad);
    CHECKF(n_nan == 2, "%d NaN encodings (expected 0x7f and 0xff only)", n_nan);
    CHECKF(maxv == 448.0, "largest finite value %g (expected 448)", maxv);
    CHECK(isnan(f8e4m3_to_f32(0x7f)) && isnan(f8e4m3_to_f32(0xff)));
    CHECK(f8e4m3_to_f32(0x7e) == 448.0f && f8e4m3_to_f32(0xfe) == -448.0f);
    CHECK(f8e4m3_to_f32(0x78) == 256.0f);  // e = 15, m = 0 is a number in e4m3fn, not infinity
    CHECK(f8e4m3_to_f32(0x01) == ldexpf(1.0f, -9) && f8e4m3_to_f32(0x07) == ldexpf(7.0f, -9));
    CHECK(f8e4m3_to_f32(0x08) == ldexpf(1.0f, -6) && f8e4m3_to_f32(0x38) == 1.0f);
    CHECK(f32_bits(f8e4m3_to_f32(0x80)) == 0x80000000u);
    printf("f8e4m3_to_f32: all 256 values match the formula (%d mismatches), NaN only at 0x7f/0xff, max %g\n", bad, maxv);
}

// ---- dtype_to_f32, names, sizes ------------------------------------------------------------------------------------

static void test_bulk(void) {
    static const char * names[DT_COUNT] = {"F32", "F16", "BF16", "F8_E4M3", "I8", "U8", "I32", "I64"};
    static const int sizes[DT_COUNT] = {4, 2, 2, 1, 1, 1, 4, 8};
    for (int t = 0; t < DT_COUNT; t++) {
        CHECKF(strcmp(dtype_name((enum dtype)t), names[t]) == 0, "dtype_name(%d) = %s", t, dtype_name((enum dtype)t));
        CHECKF(dtype_size((enum dtype)t) == sizes[t], "dtype_size(%s) = %d", names[t], dtype_size((enum dtype)t));
        enum dtype p = DT_COUNT;
        CHECKF(dtype_parse(names[t], &p) == 0 && p == (enum dtype)t, "dtype_parse(%s)", names[t]);
    }
    const char * bad[] = {"", "f32", "F64", "F8_E5M2", "BOOL", "U16", "F32 ", "I8\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum dtype p;
        CHECKF(dtype_parse(bad[i], &p) == -1, "dtype_parse(\"%s\") accepted", bad[i]);
    }
    CHECK(strcmp(dtype_name(DT_COUNT), "?") == 0 && dtype_size(DT_COUNT) == 0);
    CHECK(dtype_is_float(DT_F32) && dtype_is_float(DT_F16) && dtype_is_float(DT_BF16) && dtype_is_float(DT_F8_E4M3));
    CHECK(!dtype_is_float(DT_I8) && !dtype_is_float(DT_U8) && !dtype_is_float(DT_I32) && !dtype_is_float(DT_I64));

    // every dtype from an odd address (offset 1): values chosen so that each element is exact in f32
    enum { N = 37 };
    uint8_t raw[1 + N * 8];
    float out[N + 1];
    for (int t = 0; t < DT_COUNT; t++) {
        double want[N];
        uint8_t * p = raw + 1;
        for (int i = 0; i < N; i++) {
            uint32_t r = rand_below(0xffffffffu);
            switch (t) {
                case DT_F32: { float f; uint32_t u = r; if (((u >> 23) & 255) == 255) u &= 0xbfffffffu; memcpy(&f, &u, 4); memcpy(p + 4 * i, &u, 4); want[i] = f; break; }
                case DT_F16: { uint16_t h = (uint16_t)r; if (((h >> 10) & 31) == 31) h &= 0xbfff; memcpy(p + 2 * i, &h, 2); want[i] = f16_formula(h); break; }
                case DT_BF16: { uint16_t h = (uint16_t)r; if (((h >> 7) & 255) == 255) h &= 0xbfff; memcpy(p + 2 * i, &h, 2); want[i] = bf16_formula(h); break; }
                case DT_F8_E4M3: { uint8_t v = (uint8_t)r; if ((v & 0x7f) == 0x7f) v = 0x12; p[i] = v; want[i] = f8_formula(v); break; }
                case DT_I8: { int8_t v = (int8_t)r; memcpy(p + i, &v, 1); want[i] = v; break; }
                case DT_U8: { uint8_t v = (uint8_t)r; p[i] = v; want[i] = v; break; }
                case DT_I32: { int32_t v = (int32_t)(r >> 8) - (1 << 23); memcpy(p + 4 * i, &v, 4); want[i] = v; break; }  // |v| < 2^24: exact
                case DT_I64: { int64_t v = ((int64_t)(r >> 8) - (1 << 23)) * ((i & 1) ? 1 : 1024); memcpy(p + 8 * i, &v, 8); want[i] = (double)v; break; }
            }
        }
        out[N] = 12345.0f;  // guard
        dtype_to_f32((enum dtype)t, p, out, N);
        int nbad = 0;
        for (int i = 0; i < N; i++)
            if ((double)out[i] != want[i] && nbad++ < 3) fprintf(stderr, "dtype_to_f32(%s)[%d] = %.9g, want %.9g\n", names[t], i, out[i], want[i]);
        CHECKF(nbad == 0, "dtype_to_f32(%s): %d wrong values", names[t], nbad);
        CHECKF(out[N] == 12345.0f, "dtype_to_f32(%s) wrote past n", names[t]);
    }
    // integer extremes
    int64_t i64[3] = {INT64_MIN, -1, (int64_t)1 << 40};
    int32_t i32[3] = {INT32_MIN, INT32_MAX, -7};
    dtype_to_f32(DT_I64, i64, out, 3);
    CHECK(out[0] == -9223372036854775808.0f && out[1] == -1.0f && out[2] == 1099511627776.0f);
    dtype_to_f32(DT_I32, i32, out, 3);
    CHECK(out[0] == -2147483648.0f && out[1] == 2147483648.0f && out[2] == -7.0f);  // INT32_MAX rounds to 2^31 in f32
    dtype_to_f32(DT_F32, raw, out, 0);  // n = 0 touches nothing
    printf("dtype_to_f32: every dtype from an unaligned source matches (names, sizes, parse checked)\n");
}

int main(void) {
    test_f16();
    test_bf16();
    test_f8();
    test_bulk();
    return test_finish("test-dtype");
}
