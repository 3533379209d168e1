/*
 * cpu-kernels.h — the hot inner loops of the CPU backend, one table per instruction set.
 *
 * The same plain-C source (kernels-impl.h) is compiled three times with different target flags (generic x86-64,
 * AVX2+FMA+F16C, AVX-512) and auto-vectorised; cpu_kernels_best() picks a table with cpuid once. Each table must
 * agree with ops-ref.c within float32 rounding (tests/test-ops.c runs every table that the machine supports).
 */
#ifndef SD3Q_BACKEND_CPU_KERNELS_H
#define SD3Q_BACKEND_CPU_KERNELS_H

#include <stdint.h>

#include "core/dtype.h"

struct cpu_kernels {
    const char * name;
    // dst[i] = float(src[i]) for a stored weight type (F32/F16/BF16/F8_E4M3), any source alignment.
    void (*to_f32)(enum dtype t, const void * src, float * dst, int64_t n);
    // x ← GELU_tanh(x).
    void (*gelu_tanh)(float * x, int64_t n);
    // y ← SiLU(x).
    void (*silu)(float * y, const float * x, int64_t n);
    // x ← exp(x − max(x)) in place; returns the sum (a softmax without the division).
    float (*exp_shifted)(float * x, int64_t n);
    // y = LN(x)·(1 + scale) + shift over one row of D (shift/scale NULL: plain LN; w/b: affine, may be NULL).
    void (*ln_row)(float * y, const float * x, int64_t D, const float * shift, const float * scale, const float * w,
                   const float * b, float eps);
    // y[i] += g[i]·x[i] (g NULL: y += x).
    void (*axpy_gate)(float * y, const float * x, const float * g, int64_t n);
    // y[i] = act(x[i]) · (g ? g[i] : 1) for an enum act_kind (backend.h); y may equal x.
    void (*act)(float * y, const float * x, const float * g, int64_t n, int kind);
};

extern const struct cpu_kernels cpu_kernels_generic;
extern const struct cpu_kernels cpu_kernels_avx2;
extern const struct cpu_kernels cpu_kernels_avx512;

// The best table this CPU supports (SD3Q_CPU_KERNELS=generic|avx2|avx512 in the environment overrides).
const struct cpu_kernels * cpu_kernels_best(void);

// 1 when this CPU can run the given table.
int cpu_kernels_supported(const struct cpu_kernels * k);

#endif
