/*
 * cuda-backend.h — the CUDA backend's C interface (implemented in CUDA C++: the .cu files beside it).
 *
 * The backend implements every op of backend.h on one NVIDIA GPU: bf16 activations (act_size 2) with f32
 * accumulation, weights uploaded once as bf16 copies keyed by their `struct wt` pointer, cuBLASLt for the dense
 * products, and our own kernels for attention (flash style), norms, activations and layout ops. docs/CUDA.md
 * describes the design, the tolerances and the memory/residency policy.
 *
 * Only compiled when the build found nvcc (SD3Q_HAVE_CUDA); C callers guard their use with #ifdef SD3Q_HAVE_CUDA.
 */
#ifndef SD3Q_BACKEND_CUDA_CUDA_BACKEND_H
#define SD3Q_BACKEND_CUDA_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 when a CUDA device of compute capability 8.0 or newer can be used (driver present, a device visible).
int backend_cuda_available(void);

// Creates the CUDA backend on device 0 (or $SD3Q_CUDA_DEVICE): stream, cuBLAS/cuBLASLt handles, workspaces.
// Fails with SD3Q_ERR_DEVICE (and the failing call's name in `e`) when no usable GPU is present.
enum sd3q_status backend_cuda_create(const struct backend_plan * plan, struct backend ** out, struct sd3q_errbuf * e);

// 1 when `bk` is a CUDA backend (not a wrapper around one).
int backend_cuda_is(const struct backend * bk);

// The bf16 device copy of weight w (copied now if absent; NULL on failure): for tests that check the uploads.
const void * backend_cuda_weight(struct backend * bk, const struct wt * w);

// The default flash-attention setting (unless $SD3Q_CUDA_FA names a variant): each call picks by its joint length L,
// on cc 9.0 with sm_90a code the 128-query wgmma kernel below BACKEND_CUDA_FA_AUTO_SPLIT tokens and the 192-query one
// from there on, elsewhere the mma.sync kernel (attention.cu says what was measured).
#define BACKEND_CUDA_FA_AUTO       (-2)
#define BACKEND_CUDA_FA_AUTO_SPLIT 3072

// Selects the flash-attention kernel variant v (0 .. backend_cuda_attention_variants() − 1, see attention.cu; for
// tuning and tests) or BACKEND_CUDA_FA_AUTO; returns the previous setting (a variant or BACKEND_CUDA_FA_AUTO), or -1
// when bk is not a CUDA backend. Any other v (-1, a variant this device or build cannot run) changes nothing, so
// v0 = set(bk, -1) queries and set(bk, v0) restores.
int backend_cuda_set_attention_variant(struct backend * bk, int v);
int backend_cuda_attention_variants(void);
// The variant the flash kernel runs under the current setting for a joint length of L tokens (-1: bk is not CUDA).
int backend_cuda_attention_variant_for(struct backend * bk, int64_t L);

// Writes the device name (e.g. "NVIDIA H100 80GB HBM3") into buf; returns 0, or -1 when bk is not a CUDA backend.
int backend_cuda_device_name(const struct backend * bk, char * buf, size_t size);

// Memory the backend holds: weights now, everything it allocated now and at its peak (weights, arena, workspaces),
// and the device's used/total memory as cudaMemGetInfo reports it (all in bytes; NULL pointers are skipped).
struct cuda_mem_info {
    size_t weights_now, backend_now, backend_peak, device_used, device_total;
};
int backend_cuda_mem_info(const struct backend * bk, struct cuda_mem_info * mi);

// Timing marks on the backend's stream (CUDA events): mark(slot) records event `slot` (0..13); elapsed_ms(a, b)
// waits for b and returns the milliseconds between the two marks (negative on error).
int    backend_cuda_mark(struct backend * bk, int slot);
double backend_cuda_elapsed_ms(struct backend * bk, int a, int b);

#ifdef __cplusplus
}
#endif

#endif
