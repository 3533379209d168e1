/*
 * rng.c — see rng.h. Written from the algorithm's description (ATen's normal_kernel and the Cephes-derived
 * avx_mathfun.h polynomials), one scalar lane at a time, so that every float operation rounds exactly as the vector
 * code does.
 *
 * Rounding discipline. The x86-64 torch wheels are compiled by GCC with -mfma and FMA contraction on, so in the
 * AVX2 kernel every multiply whose only use is an add becomes one fused multiply-add; the lanes below call fmaf()
 * at exactly those places (found by reading the instruction stream, confirmed bit for bit against torch on 2²⁰
 * values per seed). Everything else must round after each operation: one operation per statement, and contraction
 * is switched off for this file (GCC and Clang pragmas) so that a -march=native build does not fuse on its own.
 */
#include "core/rng.h"

#include "core/dtype.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

// ---- mt19937 ----------------------------------------------------------------------------------------------------------

#define MT_M     397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu
#define MT_A     0x9908b0dfu

void mt19937_seed(struct mt19937 * g, uint64_t seed) {
    g->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < MT19937_N; j++) g->state[j] = 1812433253u * (g->state[j - 1] ^ (g->state[j - 1] >> 30)) + j;
    g->next = MT19937_N;
}

// Regenerates all 624 state words (the standard twist).
static void mt_twist(struct mt19937 * g) {
    uint32_t * s = g->state;
    for (int k = 0; k < MT19937_N; k++) {
        uint32_t y = (s[k] & MT_UPPER) | (s[(k + 1) % MT19937_N] & MT_LOWER);
        s[k] = s[(k + MT_M) % MT19937_N] ^ (y >> 1) ^ ((y & 1u) ? MT_A : 0u);
    }
    g->next = 0;
}

uint32_t mt19937_next(struct mt19937 * g) {
    if (g->next >= MT19937_N) mt_twist(g);
    uint32_t y = g->state[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

// ---- uniforms ---------------------------------------------------------------------------------------------------------

// A uniform float in [0, 1): 24 random bits scaled by 2⁻²⁴ (exact).
static float uniform_f32(struct mt19937 * g) { return (float)(mt19937_next(g) & 0xffffffu) * 0x1p-24f; }

// A uniform double in [0, 1): 53 bits of hi·2³² + lo (first draw high) scaled by 2⁻⁵³ (exact).
static double uniform_f64(struct mt19937 * g) {
    uint64_t hi = mt19937_next(g), lo = mt19937_next(g);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * 0x1p-53;
}

// ---- one lane of the AVX2 kernel --------------------------------------------------------------------------------------

static float f_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t u_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// Natural logarithm of x in (0, 1] by the Cephes polynomial, as one lane of log256_ps.
static float lane_log(float x) {
    const float sqrthf = (float)0.707106781186547524;
    const float p[9] = {(float)7.0376836292E-2,  (float)-1.1514610310E-1, (float)1.1676998740E-1,
                        (float)-1.2420140846E-1, (float)1.4249322787E-1,  (float)-1.6668057665E-1,
                        (float)2.0000714765E-1,  (float)-2.4999993993E-1, (float)3.3333331174E-1};
    const float q1 = (float)-2.12194440e-4, q2 = 0.693359375f;
    if (x < 0x1p-126f) x = 0x1p-126f;  // cut off denormals (never reached for u ≥ 2⁻²⁴)
    uint32_t bits = u_of(x);
    int32_t ex = (int32_t)(bits >> 23) - 0x7f;
    float m = f_of((bits & ~0x7f800000u) | 0x3f000000u);  // mantissa in [0.5, 1)
    float e = (float)ex;
    e = e + 1.0f;
    int lt = m < sqrthf;
    float tmp = lt ? m : 0.0f;
    m = m - 1.0f;
    e = e - (lt ? 1.0f : 0.0f);
    m = m + tmp;
    float z = m * m;
    float y = p[0];
    for (int i = 1; i < 9; i++) y = fmaf(y, m, p[i]);
    y = y * m;
    float eq1 = e * q1;
    y = fmaf(y, z, eq1);
    float hz = z * 0.5f;
    y = y - hz;
    float r = m + y;
    return fmaf(e, q2, r);
}

// sin and cos of x ≥ 0 (x < 8192) by Cephes' reduction and polynomials, as one lane of sincos256_ps.
static void lane_sincos(float x, float * s, float * c) {
    const float fopi = (float)1.27323954473516;
    const float dp1 = -0.78515625f, dp2 = (float)-2.4187564849853515625e-4, dp3 = (float)-3.77489497744594108e-8;
    const float sp0 = (float)-1.9515295891E-4, sp1 = (float)8.3321608736E-3, sp2 = (float)-1.6666654611E-1;
    const float cp0 = (float)2.443315711809948E-005, cp1 = (float)-1.388731625493765E-003, cp2 = (float)4.166664568298827E-002;
    uint32_t sign_sin = u_of(x) & 0x80000000u;
    x = f_of(u_of(x) & 0x7fffffffu);
    float y = x * fopi;
    int32_t j = (int32_t)y;
    j = (j + 1) & ~1;
    y = (float)j;
    uint32_t swap_sin = ((uint32_t)j & 4u) << 29;
    int poly = (j & 2) == 0;
    x = fmaf(y, dp1, x);
    x = fmaf(y, dp2, x);
    x = fmaf(y, dp3, x);
    uint32_t sign_cos = (~(uint32_t)(j - 2) & 4u) << 29;
    sign_sin ^= swap_sin;
    float z = x * x;
    float yc = cp0;
    yc = fmaf(yc, z, cp1);
    yc = fmaf(yc, z, cp2);
    yc = yc * z;
    float hz = z * 0.5f;
    yc = fmaf(yc, z, -hz);
    yc = yc + 1.0f;
    float ys = sp0;
    ys = fmaf(ys, z, sp1);
    ys = fmaf(ys, z, sp2);
    ys = ys * z;
    ys = fmaf(ys, x, x);
    float ysin2 = poly ? ys : 0.0f, ysin1 = poly ? 0.0f : yc;
    ys = ys - ysin2;
    yc = yc - ysin1;
    float so = ysin1 + ysin2, co = yc + ys;
    *s = f_of(u_of(so) ^ sign_sin);
    *c = f_of(u_of(co) ^ sign_cos);
}

// Rounds a float to the nearest float16 value (ties to even), returned as float: c10::Half's constructor.
static float half(float x) { return f16_to_f32(f32_to_f16(x)); }

// Box–Muller over a block of 16 float16 uniforms in place, as torch's scalar kernel for c10::Half: Half arithmetic
// widens to float and rounds the result back to Half, and for Half arguments log, sqrt, sin and cos are
// Half(f(float(x))) (c10's reduced-precision overloads), so nearly every step rounds to Half; theta is 2π·u2 in double
// rounded to Half (via float).
static void block16_f16(float * d) {
    for (int j = 0; j < 8; j++) {
        float u1 = half(1.0f - d[j]), u2 = d[j + 8];
        float l  = half(logf(u1));
        float r  = half(sqrtf(half(-2.0f * l)));
        float th = half((float)(2.0 * 3.14159265358979323846 * (double)u2));
        float cs = half(cosf(th)), sn = half(sinf(th));
        d[j]     = half(half(r * cs) + 0.0f);  // · std + mean (Half 1 and 0)
        d[j + 8] = half(half(r * sn) + 0.0f);
    }
}

// Box–Muller over one block of 16 uniforms, in place.
static void block16(float * d, enum randn_kind kind) {
    if (kind == RANDN_TORCH_F16) {
        block16_f16(d);
        return;
    }
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j], u2 = d[j + 8];
        float n1, n2;
        if (kind == RANDN_TORCH_AVX2) {
            float l = lane_log(u1);
            float r = sqrtf(-2.0f * l);
            float th = (float)(2.0 * 3.14159265358979323846) * u2;
            float sn, cs;
            lane_sincos(th, &sn, &cs);
            n1 = r * cs;
            n2 = r * sn;
        } else {
            float l = logf(u1);
            float r = sqrtf(-2.0f * l);
            float th = (float)(2.0 * 3.14159265358979323846 * (double)u2);
            float cs = cosf(th), sn = sinf(th);
            n1 = r * cs;
            n2 = r * sn;
        }
        d[j]     = n1 + 0.0f;  // · std + mean with std 1, mean 0 (turns −0 into +0, as torch does)
        d[j + 8] = n2 + 0.0f;
    }
}

// A uniform float16 in [0, 1): 11 random bits scaled by 2⁻¹¹ (exact), as a float.
static float uniform_f16(struct mt19937 * g) { return (float)(mt19937_next(g) & 0x7ffu) * 0x1p-11f; }

void randn_torch(uint64_t seed, float * out, int64_t n, enum randn_kind kind) {
    struct mt19937 g;
    mt19937_seed(&g, seed);
    if (n <= 0) return;
    const int f16 = kind == RANDN_TORCH_F16;
    if (n < 16) {  // double Box–Muller, pairs (cos, cached sin)
        for (int64_t i = 0; i < n; i += 2) {
            double u1 = uniform_f64(&g), u2 = uniform_f64(&g);
            double r = sqrt(-2.0 * log1p(-u2)), th = 2.0 * 3.14159265358979323846 * u1;
            float a = (float)(r * cos(th) + 0.0), b = (float)(r * sin(th) + 0.0);  // · std + mean (−0 → +0)
            out[i] = f16 ? half(a) : a;  // float16: double → float → Half, as the cast chain does
            if (i + 1 < n) out[i + 1] = f16 ? half(b) : b;
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) out[i] = f16 ? uniform_f16(&g) : uniform_f32(&g);
    for (int64_t i = 0; i + 16 <= n; i += 16) block16(out + i, kind);
    if (n % 16) {
        float * d = out + n - 16;
        for (int i = 0; i < 16; i++) d[i] = f16 ? uniform_f16(&g) : uniform_f32(&g);
        block16(d, kind);
    }
}

void sd3q_randn_torch(uint64_t seed, float * out, int64_t n) {
    if (out) randn_torch(seed, out, n, RANDN_TORCH_AVX2);
}
