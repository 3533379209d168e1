/*
 * cpu-feats.c — picks the kernel table for this CPU once (cpuid through the compiler's builtins).
 */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu-kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>

// F16C from cpuid leaf 1 directly: clang before 15 rejects the feature string "f16c" in __builtin_cpu_supports (and
// the libFuzzer build uses clang).
static int has_f16c(void) {
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

int cpu_kernels_supported(const struct cpu_kernels * k) {
    if (!k || !k->name) return 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (k == &cpu_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni") && has_f16c();
    if (k == &cpu_kernels_avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
#else
    if (k != &cpu_kernels_generic) return 0;
#endif
    return 1;
}

const struct cpu_kernels * cpu_kernels_best(void) {
    const struct cpu_kernels * all[] = {&cpu_kernels_avx512, &cpu_kernels_avx2, &cpu_kernels_generic};
    const char * force = getenv("SD3Q_CPU_KERNELS");
    for (int i = 0; i < 3; i++) {
        if (force && (!all[i]->name || strcmp(force, all[i]->name) != 0)) continue;
        if (cpu_kernels_supported(all[i])) return all[i];
    }
    return &cpu_kernels_generic;
}
