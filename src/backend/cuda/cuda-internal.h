/*
 * cuda-internal.h — what the CUDA backend's .cu files share (CUDA C++ only; C code sees cuda-backend.h).
 *
 * One `struct cuda_backend` per backend object holds everything (device, stream, library handles, the weight
 * table, workspaces, the sticky error): there are no globals. Every CUDA / cuBLAS call goes through CU()/CUBLAS(),
 * which record the first failure with the failing call's text; kernel launches are followed by LAUNCHED(), which
 * checks cudaGetLastError (and synchronizes when $SD3Q_CUDA_SYNC=1, so an asynchronous fault names its kernel).
 */
#ifndef SD3Q_BACKEND_CUDA_CUDA_INTERNAL_H
#define SD3Q_BACKEND_CUDA_CUDA_INTERNAL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend/backend.h"
#include "backend/cuda/cuda-backend.h"
#include "core/status.h"
}

typedef __nv_bfloat16 bf16;

#define CUDA_EVENTS     16
#define LT_PLANS        128
#define LT_WORKSPACE    (32u << 20)
#define LT_CANDIDATES   16          // room for the cuBLASLt algorithms timed per Linear shape at first use
#define LT_CAND_DEFAULT 6           // how many of them by default ($SD3Q_CUDA_LT_CAND: 1..LT_CANDIDATES)
#define STAGE_FLOATS    (4 << 20)   // host↔device staging (16 MiB each side)
#define GN_PARTIALS     (1 << 18)   // group-norm partial statistics (double pairs)
#define ARENAS_MAX      32          // live arena allocations tracked for the memory accounting
#define FA_VARIANTS     19          // flash-attention kernel variants (attention.cu; 3-18 need sm_90a)
#define FA_DEFAULT      0           // mma.sync, 128 queries × 64 keys (any cc ≥ 8.0)
#define FA_DEFAULT_SM90 18          // wgmma, TMA, Q in registers, 128 queries × 64 keys: cc 9.0's choice from FA_SPLIT_L tokens on
#define FA_SHORT_SM90   18          // the same below FA_SPLIT_L tokens (the fastest at every measured length, docs/PERF.md)
#define FA_SPLIT_L      BACKEND_CUDA_FA_AUTO_SPLIT  // joint length of the switch (attention.cu, docs/PERF.md)

// A device copy of one weight (bf16), keyed by the `struct wt` pointer and checked against its data pointer/shape.
struct cuda_wentry {
    const struct wt * key;
    const void *      data0;  // key->part[0].data when copied (a reused struct with new data is re-copied)
    int64_t           numel;
    bf16 *            d;
    int               group;  // residency group (enum sd3q_component), -1: copied on first use
    int               slab;   // index into slabs, or -1 when d is its own allocation
    uint64_t          last_use;  // op serial of the last use (first-use copies are evicted least recently used first)
};

// One allocation that holds the weights of one prepare() call.
struct cuda_slab {
    void * p;
    size_t bytes;
    int    group;
};

// A cached cuBLASLt configuration for one Linear shape (descriptors + the heuristic's algorithm).
struct lt_plan {
    int64_t                M, N, K;
    int                    epi;    // 0 none, 1 bias, 2 gelu, 3 gelu+bias
    int                    align;  // smallest pointer alignment class of the operands (bytes, ≤ 256)
    int                    ok;     // 0: no algorithm, use the cuBLAS fallback
    int                    tuned;  // 1: algo is the fastest of the candidates on this card (timed at first use)
    int                    ncand;
    cublasLtMatmulDesc_t   desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t   algo;
    cublasLtMatmulAlgo_t   cand[LT_CANDIDATES];  // the heuristic's best few, fastest first after tuning
};

struct cuda_backend {
    struct backend     base;
    struct backend_plan plan;
    int                dev, cc, n_sm;
    char               name[256];
    cudaStream_t       stream;     // the current queue: s_main or s_side (backend_ops.lane)
    cudaStream_t       s_main, s_side;
    cudaEvent_t        ev_fork, ev_join;
    int                side_used;  // something was queued on s_side since the last settle
    cublasLtHandle_t   lt;
    cublasHandle_t     blas;
    void *             lt_ws;      // the current queue's cuBLAS(Lt) workspace: lt_ws_main or lt_ws_side
    void *             lt_ws_main, * lt_ws_side;
    // weights
    struct cuda_wentry * wtab;  // open addressing, capacity wcap (power of two)
    int64_t              wcap, wcount;
    struct cuda_slab *   slabs;
    int                  nslabs, slabcap;
    size_t               weight_bytes;
    uint64_t             op_serial;  // incremented at every op: weights used by the current op are never evicted
    // staging and scratch
    float *  stage_d;           // device f32 staging (STAGE_FLOATS)
    float *  stage_h;           // pinned host staging (STAGE_FLOATS)
    void *   attn_ws;           // general attention path scratch (allocated on first use)
    size_t   attn_ws_bytes;
    void *   conv_ws;           // im2col tiles (allocated on first use)
    size_t   conv_ws_bytes;
    double * gn_part;           // group-norm partials [GN_PARTIALS][2]
    // cuBLASLt plans
    struct lt_plan plans[LT_PLANS];
    int            nplans, plan_next;
    // deferred Linear, fused with a following GELU into the GEMM epilogue
    struct {
        int               on;
        void *            y;
        const void *      x;
        int64_t           M;
        const struct wt * w, * b;
    } pend;
    int fuse;        // 0: $SD3Q_CUDA_NO_FUSE set
    int lanes_off;   // 1: $SD3Q_CUDA_NO_LANES set (the lane op does nothing: one queue)
    int sync_debug;  // 1: $SD3Q_CUDA_SYNC set (synchronize after every launch)
    int tune;          // 0: $SD3Q_CUDA_NO_TUNE set (take the heuristic's first algorithm untimed)
    int lt_cand;       // heuristic candidates asked for and timed per Linear shape
    int attn_general;  // 1: $SD3Q_CUDA_ATTN_GENERAL set (every attention on the cuBLAS path, for testing)
    int      fa_variant;   // flash kernel variant (attention.cu) from $SD3Q_CUDA_FA or a set call, else BACKEND_CUDA_FA_AUTO
    unsigned fa_attr_set;  // bit v: variant v's dynamic shared-memory limit has been raised
    // errors and accounting
    enum sd3q_status   st;
    char               msg[600];
    struct sd3q_errbuf create_err;
    size_t             bytes_now, bytes_peak;
    struct {
        void * p;
        size_t bytes;
    } arenas[ARENAS_MAX];
    cudaEvent_t        ev[CUDA_EVENTS];
};

static inline struct cuda_backend * cuda_of(struct backend * bk) { return (struct cuda_backend *)bk; }

// Records the first failure (call text, file:line, CUDA's message); returns true when `e` is success.
bool cuda_ok(struct cuda_backend * c, cudaError_t e, const char * call, const char * file, int line);
bool cublas_ok(struct cuda_backend * c, cublasStatus_t s, const char * call, const char * file, int line);
// Records a failure of our own (bad argument combination, missing scratch) in the same sticky slot.
void cuda_fail(struct cuda_backend * c, enum sd3q_status st, const char * fmt, ...);

#define CU(c, call)     cuda_ok((c), (call), #call, __FILE__, __LINE__)
#define CUBLAS(c, call) cublas_ok((c), (call), #call, __FILE__, __LINE__)
#define LAUNCHED(c, name) cuda_launched((c), (name), __FILE__, __LINE__)
bool cuda_launched(struct cuda_backend * c, const char * kernel, const char * file, int line);

// Whether flash-attention variant v can run on c's device (attention.cu).
int cuda_attention_variant_ok(const struct cuda_backend * c, int v);
// The variant the flash kernel runs for a joint length of L tokens: the chosen one, or the automatic pick (attention.cu).
int cuda_attention_pick(const struct cuda_backend * c, int64_t L);

// Device memory with accounting (cudaMalloc / cudaFree through CU()).
void * cuda_alloc(struct cuda_backend * c, size_t bytes, const char * what);
void   cuda_free_mem(struct cuda_backend * c, void * p, size_t bytes);

// The bf16 device copy of a weight (copied now if absent); NULL when absent or on failure (error recorded).
const bf16 * cuda_weight(struct cuda_backend * c, const struct wt * w);

// Number of blocks for a grid-stride kernel over n items with `threads` per block.
static inline unsigned grid_for(int64_t n, int threads) {
    int64_t g = (n + threads - 1) / threads;
    if (g < 1) g = 1;
    if (g > (1 << 20)) g = 1 << 20;
    return (unsigned)g;
}

// 1 when p is aligned to `a` bytes.
static inline int aligned_to(const void * p, int a) { return ((uintptr_t)p & (uintptr_t)(a - 1)) == 0; }

// ---- launchers (one .cu per op family) -----------------------------------------------------------------------------

// elementwise.cu
void convert_f32_to_bf16_cuda(struct cuda_backend * c, bf16 * y, const float * x, int64_t n);
void convert_bf16_to_f32_cuda(struct cuda_backend * c, float * y, const bf16 * x, int64_t n);
void convert_weight_cuda(struct cuda_backend * c, bf16 * y, const void * x, enum dtype t, int64_t n);
void act_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t n, int kind);
void gated_act_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t F, int kind);
void gate_residual_cuda(struct cuda_backend * c, bf16 * x, const bf16 * y, const bf16 * gate, int64_t B, int64_t T, int64_t D,
                        int64_t mod_stride);
void patchify_cuda(struct cuda_backend * c, bf16 * cols, const bf16 * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p);
void add_pos_embed_cuda(struct cuda_backend * c, bf16 * tok, const bf16 * pos, int64_t B, int64_t gh, int64_t gw, int64_t grid,
                        int64_t D);
void unpatchify_cuda(struct cuda_backend * c, bf16 * y, const bf16 * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p);
void upsample2x_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t C, int64_t H, int64_t W);
void transpose_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t R, int64_t C);
void bias_rows_cuda(struct cuda_backend * c, bf16 * y, const bf16 * bias, int64_t rows, int64_t N);
void bias_channels_cuda(struct cuda_backend * c, bf16 * y, const bf16 * bias, int64_t B, int64_t C, int64_t HW);

// norm.cu
void ln_modulate_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t T, int64_t D, const bf16 * shift,
                      const bf16 * scale, int64_t mod_stride, float eps);
void gate_ln_modulate_cuda(struct cuda_backend * c, bf16 * h, bf16 * x, const bf16 * y, const bf16 * gate, int64_t gate_stride, int64_t B,
                           int64_t T, int64_t D, const bf16 * shift, const bf16 * scale, int64_t mod_stride, float eps);
void layernorm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t D, const bf16 * w, const bf16 * b,
                    float eps);
void rmsnorm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t D, const bf16 * w, float eps);
void rmsnorm_heads_cuda(struct cuda_backend * c, bf16 * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD, const bf16 * w,
                        float eps);
void group_norm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t C, int64_t HW, int64_t G,
                     const bf16 * w, const bf16 * b, float eps, int silu);

// matmul.cu
void linear_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t M, const struct wt * w, const struct wt * b, int gelu);
// Column-major C[m, n] (ldc, f32 or bf16 per c_f32) = alpha · op(A)·op(B) + beta·C, batched with strides (cublasGemmStridedBatchedEx).
void gemm_batched_cuda(struct cuda_backend * c, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const bf16 * A,
                       int64_t lda, int64_t sA, const bf16 * B, int64_t ldb, int64_t sB, float beta, void * C, int c_f32,
                       int64_t ldc, int64_t sC, int64_t batch);
void lt_plans_free(struct cuda_backend * c);

// attention.cu
void attention_cuda(struct cuda_backend * c, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale,
                    int causal, const bf16 * bias);

// conv.cu
void conv2d_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w,
                 const struct wt * b, int stride, int pt, int pl, int pb, int pr);

#endif
