/*
 * kernels-avx512.c — the CPU kernels compiled for AVX-512 (F, BW, VL, DQ) (CMake sets the flags for *-avx512.c).
 */
#include "backend/cpu/cpu-kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#define KFN(name) avx512_##name
static inline float avx512_f16(uint16_t h) { return _cvtsh_ss(h); }
#include "backend/cpu/kernels-impl.h"
KERNEL_TABLE(cpu_kernels_avx512, "avx512");
#else
const struct cpu_kernels cpu_kernels_avx512 = {0};
#endif
