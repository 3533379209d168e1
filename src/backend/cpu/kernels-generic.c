/*
 * kernels-generic.c — the CPU kernels for any x86-64 (SSE2) or other CPU; the fallback table.
 */
#include "backend/cpu/cpu-kernels.h"

#define KFN(name) generic_##name
static inline float generic_f16(uint16_t h) { return f16_to_f32(h); }
#include "backend/cpu/kernels-impl.h"

KERNEL_TABLE(cpu_kernels_generic, "generic");
