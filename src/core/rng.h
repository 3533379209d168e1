/*
 * rng.h — PyTorch's CPU random number generator, reproduced bit for bit: the mt19937 engine seeded as
 * torch.Generator("cpu").manual_seed(seed) seeds it, and torch.randn's float32 algorithm on the CPU.
 *
 * torch.randn(n, generator=g) (float32, contiguous) takes one of two roads (ATen's normal_kernel):
 *   n ≥ 16: every element first receives a uniform float u = (next32() & 0xFFFFFF)·2⁻²⁴; each block of 16 is then
 *           turned into normals by Box–Muller over its two halves (u1 = 1 − u[j], u2 = u[j+8], j < 8:
 *           out[j] = √(−2 ln u1)·cos 2πu2, out[j+8] = √(−2 ln u1)·sin 2πu2). When n % 16 ≠ 0, 16 fresh uniforms
 *           overwrite the last 16 positions and that block is transformed again (the overlap is recomputed).
 *           ln/sin/cos are float32: on x86-64 torch dispatches (for AVX2 and AVX-512 machines alike) to an AVX2 kernel
 *           whose log/sincos are Cephes polynomials (avx_mathfun.h) compiled with FMA contraction; on other CPUs
 *           (ATEN_CPU_CAPABILITY=default, aarch64) to a scalar loop over libm's logf/cosf/sinf.
 *   n < 16: a double Box–Muller per pair, u = (next64() & (2⁵³−1))·2⁻⁵³ with next64 = hi·2³² + lo of two draws:
 *           r = √(−2·log1p(−u2)), θ = 2π·u1, out = float(r·cos θ), then the cached float(r·sin θ), and so on.
 * RANDN_TORCH_AVX2 is what torch gives on every x86-64 machine with AVX2 (the default of sd3q_randn_torch);
 * RANDN_TORCH_SCALAR is the portable path. float16 (RANDN_TORCH_F16) always takes the scalar road with 11-bit uniforms
 * (u = (next32() & 0x7FF)·2⁻¹¹) and Half roundings in between. All three are checked against torch 2.5.1 by
 * tests/test-rng.c.
 */
#ifndef SD3Q_CORE_RNG_H
#define SD3Q_CORE_RNG_H

#include <stdint.h>

#define MT19937_N 624

// The 32-bit Mersenne Twister as at::mt19937 (== std::mt19937) holds it.
struct mt19937 {
    uint32_t state[MT19937_N];
    int      next;  // index of the next state word to temper; MT19937_N: regenerate first
};

// Seeds like torch.Generator.manual_seed(seed): only the low 32 bits of the seed matter (Knuth's initialisation).
void mt19937_seed(struct mt19937 * g, uint64_t seed);

// The next 32-bit output.
uint32_t mt19937_next(struct mt19937 * g);

enum randn_kind {
    RANDN_TORCH_AVX2   = 0,  // torch on x86-64 with AVX2 or AVX-512 (diffusers' usual CPU generator)
    RANDN_TORCH_SCALAR = 1,  // torch's portable kernel (ATEN_CPU_CAPABILITY=default; aarch64 builds with glibc)
    RANDN_TORCH_F16    = 2,  // torch.randn(..., dtype=torch.float16) on the CPU (any machine): what a diffusers pipeline
                             // loaded with torch_dtype=torch.float16 and a CPU generator starts from; values returned
                             // as float (each exactly a float16)
};

// out[0..n) = torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32), for the
// given kernel. n may be 0.
void randn_torch(uint64_t seed, float * out, int64_t n, enum randn_kind kind);

#endif
