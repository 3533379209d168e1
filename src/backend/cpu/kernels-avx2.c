/*
 * kernels-avx2.c — the CPU kernels compiled for AVX2 + FMA + F16C (CMake sets the flags for *-avx2.c).
 */
#include "backend/cpu/cpu-kernels.h"

#if defined(__x86_64__) && defined(__F16C__) && defined(__AVX2__)
#include <immintrin.h>
#define KFN(name) avx2_##name
// 8 halves at a time with vcvtph2ps; unaligned loads.
static inline int64_t avx2_f16_block(const uint8_t * src, float * dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 2 * i))));
    return i;
}
#include "backend/cpu/kernels-impl.h"
KERNEL_TABLE(cpu_kernels_avx2, "avx2");
#else
const struct cpu_kernels cpu_kernels_avx2 = {0};
#endif
