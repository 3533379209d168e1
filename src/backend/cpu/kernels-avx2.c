/*
 * kernels-avx2.c — the CPU kernels compiled for AVX2 + FMA + F16C (CMake sets the flags for *-avx2.c).
 */
#include "backend/cpu/cpu-kernels.h"

#if defined(__x86_64__) && defined(__F16C__)
#include <immintrin.h>
#define KFN(name) avx2_##name
static inline float avx2_f16(uint16_t h) { return _cvtsh_ss(h); }
#include "backend/cpu/kernels-impl.h"
KERNEL_TABLE(cpu_kernels_avx2, "avx2");
#else
const struct cpu_kernels cpu_kernels_avx2 = {0};
#endif
