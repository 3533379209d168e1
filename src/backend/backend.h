/*
 * backend.h — the one small internal interface between the model code and a compute backend (CPU or CUDA).
 *
 * The model code (src/model/) runs a fixed sequence of these ops; it never touches activation memory directly, so
 * the same forward function serves the CPU (host pointers, f32) and CUDA (device pointers). Activations live in the
 * session arena, which the backend allocates (backend_arena_alloc) after the planning pass has measured it.
 * Weights are `struct wt` views of the memory-mapped checkpoint; a backend may keep its own copies keyed by wt->id.
 *
 * Conventions: shapes in PyTorch order; every activation is row-major f32 on the CPU backend (the CUDA backend
 * chooses its own storage type, see act_size); "rows" of an activation are tokens.
 */
#ifndef SD3Q_BACKEND_BACKEND_H
#define SD3Q_BACKEND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/weights.h"

struct backend;

// One segment of a joint attention: `n` tokens per batch element whose fused q|k|v rows ([B, n, 3·D], q at column 0,
// k at D, v at 2·D) are at `qkv`, and whose output rows ([B, n, D]) go to `out` (NULL: output not needed).
struct attn_seg {
    const void * qkv;
    void *       out;
    int64_t      n;
};

// Elementwise activations (spec §11 pitfall 9: four different GELUs across SD3's networks).
enum act_kind {
    ACT_GELU_TANH  = 0,  // 0.5·u·(1 + tanh(√(2/π)(u + 0.044715u³)))   MMDiT MLP, T5 gate
    ACT_GELU_ERF   = 1,  // 0.5·u·(1 + erf(u/√2))                        CLIP-G
    ACT_QUICK_GELU = 2,  // u·σ(1.702u)                                   CLIP-L
    ACT_SILU       = 3,  // u·σ(u)                                        adaLN inputs, VAE
    ACT_COUNT
};

// Options of an attention call (NULL: none of them).
struct attn_opts {
    int          causal;  // key j is visible to query i only when j ≤ i (CLIP); single segment only
    const void * bias;    // [NH, Lq, Lk] activation buffer added to the scaled logits (T5 position bias), or NULL
};

// Queue operations of backend_ops.lane.
enum backend_lane {
    BACKEND_LANE_MAIN = 0,  // the following ops go to the main queue
    BACKEND_LANE_SIDE = 1,  // the following ops go to the side queue
    BACKEND_LANE_FORK = 2,  // the side queue starts nothing before everything queued on the main one so far is done
    BACKEND_LANE_JOIN = 3,  // the main queue starts nothing before everything queued on the side one so far is done
};

struct backend_ops {
    const char * name;

    // Frees the backend and everything it owns.
    void (*free)(struct backend * bk);

    // Bytes of one activation element (4 for f32).
    size_t (*act_size)(const struct backend * bk);

    // Allocates the activation arena of `bytes`; returns a base pointer in the backend's memory or NULL.
    void * (*arena_alloc)(struct backend * bk, size_t bytes);

    // Frees what arena_alloc returned.
    void (*arena_free)(struct backend * bk, void * p);

    // Copies n f32 values host → backend activation memory (converting to the backend's storage type).
    enum sd3q_status (*upload)(struct backend * bk, void * dst, const float * src, int64_t n);

    // Copies n activation values → host f32.
    enum sd3q_status (*download)(struct backend * bk, float * dst, const void * src, int64_t n);

    // y[M, N] = x[M, K] · W[N, K]ᵀ + b[N] (b may be NULL). N = w->shape[0], K = w->row_elems.
    void (*linear)(struct backend * bk, void * y, const void * x, int64_t M, const struct wt * w, const struct wt * b);

    // y[b, t, :] = LN(x[b, t, :]) · (1 + scale[b, :]) + shift[b, :] over D, eps, no affine. shift/scale point into a
    // per-batch modulation row (stride mod_stride elements between batch elements).
    void (*ln_modulate)(struct backend * bk, void * y, const void * x, int64_t B, int64_t T, int64_t D,
                        const void * shift, const void * scale, int64_t mod_stride, float eps);

    // RMSNorm over each head's HD channels of the q (col_off 0) or k (col_off D) part of a fused qkv buffer
    // ([rows, 3·D]), in place, with weight w[HD]: x ← x / sqrt(mean(x²) + eps) · w.
    void (*rmsnorm_heads)(struct backend * bk, void * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD,
                          const struct wt * w, float eps);

    // Multi-head softmax attention over the concatenation of nseg segments (1 or 2) per batch element; each query
    // token attends to every key token of all segments; scale multiplies the logits.
    void (*attention)(struct backend * bk, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD,
                      float scale, const struct attn_opts * opt);

    // x[i] ← GELU_tanh(x[i]) for n elements.
    void (*gelu_tanh)(struct backend * bk, void * x, int64_t n);

    // y[i] ← SiLU(x[i]) for n elements (y may equal x).
    void (*silu)(struct backend * bk, void * y, const void * x, int64_t n);

    // x[b, t, :] += gate[b, :] ⊙ y[b, t, :] (gate rows are mod_stride apart; gate NULL: plain residual add).
    void (*gate_residual)(struct backend * bk, void * x, const void * y, const void * gate, int64_t B, int64_t T,
                          int64_t D, int64_t mod_stride);

    // y[n] += x[n] for n elements.
    void (*add)(struct backend * bk, void * y, const void * x, int64_t n);

    // Patch embedding input: x [B, C, H, W] → cols [B·(H/p)·(W/p), C·p·p] with (c, i, j) order per token.
    void (*patchify)(struct backend * bk, void * cols, const void * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p);

    // Adds the centre-cropped position table (pos [1, grid·grid, D]) to tokens [B, gh·gw, D].
    void (*add_pos_embed)(struct backend * bk, void * tok, const struct wt * pos, int64_t B, int64_t gh, int64_t gw,
                          int64_t grid, int64_t D);

    // Un-patchify: tok [B, gh·gw, p·p·C] with (i, j, c) order, c fastest → y [B, C, gh·p, gw·p].
    void (*unpatchify)(struct backend * bk, void * y, const void * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p);

    // y[i] = act(x[i]) for n elements (y may equal x).
    void (*act)(struct backend * bk, void * y, const void * x, int64_t n, enum act_kind k);

    // Gated activation: y[r, j] = act(x[r, j]) · x[r, F + j] for x [rows, 2F] → y [rows, F] (T5's gated GELU).
    void (*gated_act)(struct backend * bk, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k);

    // LayerNorm over rows of D with optional affine weight/bias (NULL or absent: none).
    void (*layernorm)(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w,
                      const struct wt * b, float eps);

    // RMSNorm over rows of D: y = x / sqrt(mean(x²) + eps) · w (T5; no mean, no bias).
    void (*rmsnorm)(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps);

    // 2-D convolution: x [B, Cin, H, W], w [Cout, Cin, kh, kw], b [Cout] (may be NULL) → y [B, Cout, Ho, Wo] with the
    // given stride and zero padding on each side (top, left, bottom, right).
    void (*conv2d)(struct backend * bk, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W,
                   const struct wt * w, const struct wt * b, int stride, int pad_t, int pad_l, int pad_b, int pad_r);

    // GroupNorm over x [B, C, HW] with `groups` groups and affine w/b [C]; silu = 1 applies SiLU after it.
    void (*group_norm)(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t groups,
                       const struct wt * w, const struct wt * b, float eps, int silu);

    // Nearest-neighbour ×2 upsampling: x [B, C, H, W] → y [B, C, 2H, 2W].
    void (*upsample2x)(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W);

    // Batched transpose: y[b, c, r] = x[b, r, c] for x [B, R, C].
    void (*transpose)(struct backend * bk, void * y, const void * x, int64_t B, int64_t R, int64_t C);

    // Waits until queued work is done (NULL for synchronous backends).
    void (*sync)(struct backend * bk);

    // Makes device copies of n weights ahead of use, as residency group `group` (an enum sd3q_component), so that
    // no forward pass allocates or copies weights. NULL for backends that read weights in place. A weight used
    // without being prepared is copied on first use (group -1). A weight's bytes must not change while a copy is held.
    enum sd3q_status (*prepare)(struct backend * bk, int group, const struct wt * const * w, int64_t n);

    // Frees the device copies of group `group`'s weights (-1: those copied on first use); a later prepare or use
    // copies them again. This is the residency policy's lever: keep only the running component on a small card.
    void (*release)(struct backend * bk, int group);

    // Two queues of ops that may run at the same time (NULL: one queue, ops in order, as on the CPU): op is an enum
    // backend_lane. Between a FORK and the next JOIN the caller keeps the two queues on disjoint buffers (or orders
    // them with FORK/JOIN); transfers, sync and release wait for both queues.
    void (*lane)(struct backend * bk, int op);

    // gate_residual then ln_modulate: x[b, t, :] += gate[b, :] ⊙ y[b, t, :] (gate rows gate_stride apart), then
    // h[b, t, :] = LN(x[b, t, :]) · (1 + scale[b, :]) + shift[b, :] (rows mod_stride apart) — the two calls' values from
    // one pass over x. h may be y. NULL: the caller makes the two calls.
    void (*gate_ln_modulate)(struct backend * bk, void * h, void * x, const void * y, const void * gate, int64_t gate_stride,
                             int64_t B, int64_t T, int64_t D, const void * shift, const void * scale, int64_t mod_stride, float eps);
};

struct backend {
    const struct backend_ops * ops;
    struct sd3q_errbuf *       err;  // where upload/download failures are described (the session's buffer)
};

// What a backend must be ready for; its scratch memory is sized from this once, at creation.
struct backend_plan {
    int     n_threads;   // CPU threads (0: all online CPUs)
    int64_t max_k;       // largest weight row length (K of a Linear)
    int64_t max_n;       // largest weight row count (N of a Linear)
    int64_t max_tokens;  // largest attention sequence (all segments)
    int     ref;         // CPU only: 1 selects the scalar reference ops ("cpu-ref"), single-threaded
};

// Creates the CPU backend.
enum sd3q_status backend_cpu_create(const struct backend_plan * plan, struct backend ** out, struct sd3q_errbuf * e);

#endif
