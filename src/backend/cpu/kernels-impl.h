/*
 * kernels-impl.h — the body of the CPU kernels, written as simple loops that compilers vectorise. Included by
 * kernels-generic.c, kernels-avx2.c and kernels-avx512.c, each compiled with its own target flags, which define
 * KFN(name) to give the functions distinct names. Not a public header.
 *
 * exp is a Cephes-style polynomial (range reduction by ln 2, degree-6 minimax): about 2 ulp, branch-free, so it
 * vectorises; libm's expf does not.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "core/dtype.h"

// e^x for x in [-87.3, 88.3] (clamped), branch-free so that loops calling it vectorise.
static inline float KFN(expf)(float x) {
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    // n = round(x / ln 2) by the 1.5·2^23 trick (no branch, no lrint call)
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float z = r * r;
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    union {
        int32_t i;
        float   f;
    } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}

static float          KFN(f8_lut)[256];
static pthread_once_t KFN(f8_once) = PTHREAD_ONCE_INIT;

// Fills the F8_E4M3 → f32 table (once).
static void KFN(f8_init)(void) {
    for (int i = 0; i < 256; i++) KFN(f8_lut)[i] = f8e4m3_to_f32((uint8_t)i);
}

static void KFN(to_f32)(enum dtype t, const void * src, float * dst, int64_t n) {
    const uint8_t * p = (const uint8_t *)src;
    if (t == DT_F16) {
        int64_t i = KFN(f16_block)(p, dst, n);  // the ISA's wide conversion; returns how many it did
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
    } else if (t == DT_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
    } else if (t == DT_F8_E4M3) {  // a 256-entry table: the scalar decode is 10× slower than the product it feeds
        pthread_once(&KFN(f8_once), KFN(f8_init));
        for (int64_t i = 0; i < n; i++) dst[i] = KFN(f8_lut)[p[i]];
    } else {
        dtype_to_f32(t, src, dst, n);
    }
}

static void KFN(gelu_tanh)(float * x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float u = x[i];
        float a = 0.7978845608028654f * (u + 0.044715f * u * u * u);
        // tanh(a) = 1 − 2/(e^{2a}+1); 0.5·u·(1 + tanh a) = u − u/(e^{2a}+1)
        float e = KFN(expf)(2.0f * a);
        x[i] = u - u / (e + 1.0f);
    }
}

static void KFN(silu)(float * y, const float * x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        float u = x[i];
        y[i] = u / (1.0f + KFN(expf)(-u));
    }
}

static float KFN(exp_shifted)(float * x, int64_t n) {
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) {
        x[i] = KFN(expf)(x[i] - mx);
        s += x[i];
    }
    return s;
}

static void KFN(ln_row)(float * y, const float * x, int64_t D, const float * shift, const float * scale, const float * w,
                        const float * b, float eps) {
    float s = 0;
    for (int64_t i = 0; i < D; i++) s += x[i];
    float mu = s / (float)D, v = 0;
    for (int64_t i = 0; i < D; i++) {
        float d = x[i] - mu;
        v += d * d;
    }
    float rs = 1.0f / sqrtf(v / (float)D + eps);
    if (shift) {
        for (int64_t i = 0; i < D; i++) y[i] = (x[i] - mu) * rs * (1.0f + scale[i]) + shift[i];
    } else {
        for (int64_t i = 0; i < D; i++) {
            float t = (x[i] - mu) * rs;
            if (w) t *= w[i];
            if (b) t += b[i];
            y[i] = t;
        }
    }
}

static void KFN(axpy_gate)(float * y, const float * x, const float * g, int64_t n) {
    if (g)
        for (int64_t i = 0; i < n; i++) y[i] += g[i] * x[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), branch-free for vectorisation.
static inline float KFN(erff)(float x) {
    float ax = x < 0 ? -x : x;
    float t  = 1.0f / (1.0f + 0.3275911f * ax);
    float y  = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t *
                         KFN(expf)(-ax * ax);
    return x < 0 ? -y : y;
}

static void KFN(act)(float * y, const float * x, const float * g, int64_t n, int kind) {
    // one loop per kind so each vectorises; g multiplies the result (gated activations)
    switch (kind) {
        case 0:  // GELU, tanh approximation
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float u = x[i], a = 0.7978845608028654f * (u + 0.044715f * u * u * u);
                float r = u - u / (KFN(expf)(2.0f * a) + 1.0f);
                y[i] = g ? r * g[i] : r;
            }
            break;
        case 1:  // GELU, exact (erf)
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float u = x[i], r = 0.5f * u * (1.0f + KFN(erff)(u * 0.70710678118654752f));
                y[i] = g ? r * g[i] : r;
            }
            break;
        case 2:  // quick GELU
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float u = x[i], r = u / (1.0f + KFN(expf)(-1.702f * u));
                y[i] = g ? r * g[i] : r;
            }
            break;
        default:  // SiLU
#pragma omp simd
            for (int64_t i = 0; i < n; i++) {
                float u = x[i], r = u / (1.0f + KFN(expf)(-u));
                y[i] = g ? r * g[i] : r;
            }
            break;
    }
}

#define KERNEL_TABLE(tname, label)                                                                          \
    const struct cpu_kernels tname = {label,        KFN(to_f32),  KFN(gelu_tanh), KFN(silu), KFN(exp_shifted), \
                                      KFN(ln_row), KFN(axpy_gate), KFN(act)}
