/*
 * cpu-internal.h — what the CPU backend's source files share: the backend object and its tuning constants.
 */
#ifndef SD3Q_BACKEND_CPU_INTERNAL_H
#define SD3Q_BACKEND_CPU_INTERNAL_H

#include "backend/backend.h"
#include "backend/cpu/cpu-kernels.h"
#include "core/threads.h"

#define LIN_CHUNK  512  // most rows of W per task: the scratch holds LIN_CHUNK·K floats
#define LIN_MIN    64   // fewest rows per task (a multiple of 16 keeps sgemm's micro-tiles full)
#define CONV_TILE  256  // output pixels per im2col tile
#define ATTN_QB    128  // queries per attention task (a 128 × L score block stays in L2 at 512²)

void openblas_set_num_threads(int num_threads);

struct cpu_backend {
    struct backend             base;
    struct pool *              pool;
    const struct cpu_kernels * k;
    int64_t                    max_k;      // largest weight row
    int64_t                    max_n;      // largest weight row count
    int64_t                    max_tokens; // largest attention sequence
    float **                   scratch;    // per thread: max(LIN_CHUNK·max_k, ATTN_QB·max_tokens) floats
    float **                   cols;       // per thread: im2col tile, max_k · CONV_TILE floats
    float *                    bias;       // [max_n]: a Linear's bias converted to f32
    int                        ref;        // 1: scalar reference ops
};

static inline struct cpu_backend * cpu(struct backend * bk) { return (struct cpu_backend *)bk; }

// The ops of cpu-ops.c (norms, activations, image ops), used by both vtables where they are the implementation.
void cpu_op_act(struct backend * bk, void * y, const void * x, int64_t n, enum act_kind k);
void cpu_op_gated_act(struct backend * bk, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k);
void cpu_op_layernorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w,
                      const struct wt * b, float eps);
void cpu_op_rmsnorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps);
void cpu_op_conv2d(struct backend * bk, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W,
                   const struct wt * w, const struct wt * b, int stride, int pad_t, int pad_l, int pad_b, int pad_r);
void cpu_op_group_norm(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t groups,
                       const struct wt * w, const struct wt * b, float eps, int silu);
void cpu_op_upsample2x(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W);
void cpu_op_transpose(struct backend * bk, void * y, const void * x, int64_t B, int64_t R, int64_t C);

#endif
