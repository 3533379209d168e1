/*
 * kernels-avx512.c — the CPU kernels compiled for AVX-512 (F, BW, VL, DQ) (CMake sets the flags for *-avx512.c).
 */
#include "backend/cpu/cpu-kernels.h"

#if defined(__x86_64__) && defined(__AVX512F__)
#include <immintrin.h>
#define KFN(name) avx512_##name
// 16 halves at a time with vcvtph2ps; unaligned loads.
static inline int64_t avx512_f16_block(const uint8_t * src, float * dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 2 * i))));
    return i;
}
#include "backend/cpu/kernels-impl.h"
KERNEL_TABLE(cpu_kernels_avx512, "avx512");
#else
const struct cpu_kernels cpu_kernels_avx512 = {0};
#endif
