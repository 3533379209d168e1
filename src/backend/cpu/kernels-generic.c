/*
 * kernels-generic.c — the CPU kernels for any x86-64 (SSE2) or other CPU; the fallback table.
 */
#include "backend/cpu/cpu-kernels.h"

#define KFN(name) generic_##name
// No wide f16 conversion here: the scalar tail converts everything.
static inline int64_t generic_f16_block(const uint8_t * src, float * dst, int64_t n) { return 0; }
#include "backend/cpu/kernels-impl.h"

KERNEL_TABLE(cpu_kernels_generic, "generic");
