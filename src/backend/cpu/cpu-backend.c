/*
 * cpu-backend.c — the CPU backend: f32 activations, our thread pool, OpenBLAS sgemm for dense products.
 *
 * Parallel strategy. OpenBLAS runs single-threaded (openblas_set_num_threads(1)) and every op splits its own work
 * into tasks for our pool, so there is one threading runtime. A Linear is split along its output features in
 * chunks of LIN_CHUNK rows of W: each task converts its chunk of W from the stored type (f16/bf16/f8) to f32 into
 * the thread's scratch (sized once at creation from the largest K) and calls sgemm on it — the conversion is fused
 * into the product's packing step in effect, and the 4 GB of SD3-Medium weights are never copied as a whole.
 * Attention is split into (batch, head, 64-query block) tasks; each computes its scores against all keys of all
 * segments with sgemm into a thread scratch row block (64 × L floats), so the L×L matrix never exists.
 *
 * A second vtable, "cpu-ref", runs the scalar references of ops-ref.c single-threaded: the spec every optimised op
 * and whole forward pass is tested against.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu-kernels.h"
#include "backend/cpu/ops-ref.h"
#include "backend/cpu/cpu-internal.h"
#include "core/threads.h"

// ---- memory ---------------------------------------------------------------------------------------------------

static size_t cpu_act_size(const struct backend * bk) { return sizeof(float); }

static void * cpu_arena_alloc(struct backend * bk, size_t bytes) {
    size_t n = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, n ? n : 64);
}

static void cpu_arena_free(struct backend * bk, void * p) { free(p); }

static enum sd3q_status cpu_upload(struct backend * bk, void * dst, const float * src, int64_t n) {
    if (dst != src) memcpy(dst, src, (size_t)n * sizeof(float));
    return SD3Q_OK;
}

static enum sd3q_status cpu_download(struct backend * bk, float * dst, const void * src, int64_t n) {
    if (dst != src) memcpy(dst, src, (size_t)n * sizeof(float));
    return SD3Q_OK;
}

// ---- linear -----------------------------------------------------------------------------------------------------

struct lin_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              M, N, K;
    const struct wt *    w;
    const float *        bias;  // converted bias [N], or NULL
    int64_t              chunk; // rows of W per task
};

// One chunk of output features: convert W rows [n0, n1) to f32 unless usable in place, then y[:, n0:n1] = x·Wᵀ.
static void lin_task_run(void * ctx, int64_t task, int ith) {
    struct lin_task * t = ctx;
    int64_t n0 = task * t->chunk, nn = t->N - n0 < t->chunk ? t->N - n0 : t->chunk;
    const float * W = wt_f32_rows(t->w, n0);
    if (!W) {
        float * s = t->c->scratch[ith];
        int64_t r0 = n0, left = nn;
        // gather across parts with the vectorised converter
        int64_t base = 0, esz = dtype_size(t->w->type);
        float * d = s;
        for (int p = 0; p < t->w->nparts && left > 0; p++) {
            int64_t pr = t->w->part[p].rows;
            if (r0 < base + pr) {
                int64_t off = r0 - base, take = pr - off < left ? pr - off : left;
                t->c->k->to_f32(t->w->type, t->w->part[p].data + off * t->K * esz, d, take * t->K);
                d += take * t->K;
                r0 += take;
                left -= take;
            }
            base += pr;
        }
        W = s;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t->M, (int)nn, (int)t->K, 1.0f, t->x, (int)t->K, W,
                (int)t->K, 0.0f, t->y + n0, (int)t->N);
    if (t->bias)
        for (int64_t m = 0; m < t->M; m++) {
            float * yr = t->y + m * t->N + n0;
            for (int64_t i = 0; i < nn; i++) yr[i] += t->bias[n0 + i];
        }
}

static void cpu_linear(struct backend * bk, void * y, const void * x, int64_t M, const struct wt * w, const struct wt * b) {
    struct cpu_backend * c = cpu(bk);
    int64_t N = w->shape[0], K = w->row_elems;
    SD3Q_ASSERT(K <= c->max_k);
    SD3Q_ASSERT(N <= c->max_n);
    // the bias is small: converted once per call (not per task) unless usable in place
    const float * bias = NULL;
    if (b && wt_present(b)) {
        bias = wt_f32_rows(b, 0);
        if (!bias) {
            wt_rows_to_f32(b, 0, N, c->bias);
            bias = c->bias;
        }
    }
    // Large chunks amortise sgemm's packing of x (re-packed once per call); at least two tasks per thread keep the
    // threads balanced.
    int64_t nt = pool_size(c->pool), chunk = (N + 2 * nt - 1) / (2 * nt);
    chunk = (chunk + 15) / 16 * 16;
    if (chunk > LIN_CHUNK) chunk = LIN_CHUNK;
    if (chunk < LIN_MIN) chunk = LIN_MIN;
    struct lin_task t = {c, y, x, M, N, K, w, bias, chunk};
    pool_run(c->pool, lin_task_run, &t, (N + chunk - 1) / chunk);
}

// ---- row-wise ops -------------------------------------------------------------------------------------------------

struct ln_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              T, D, mod_stride, rows_per_task, rows;
    const float *        shift, * scale;
    float                eps;
};

static void ln_task_run(void * ctx, int64_t task, int ith) {
    struct ln_task * t = ctx;
    int64_t r0 = task * t->rows_per_task, r1 = r0 + t->rows_per_task < t->rows ? r0 + t->rows_per_task : t->rows;
    for (int64_t r = r0; r < r1; r++) {
        int64_t b = r / t->T;
        t->c->k->ln_row(t->y + r * t->D, t->x + r * t->D, t->D, t->shift + b * t->mod_stride, t->scale + b * t->mod_stride,
                        NULL, NULL, t->eps);
    }
}

static void cpu_ln_modulate(struct backend * bk, void * y, const void * x, int64_t B, int64_t T, int64_t D,
                            const void * shift, const void * scale, int64_t mod_stride, float eps) {
    struct cpu_backend * c = cpu(bk);
    struct ln_task t = {c, y, x, T, D, mod_stride, 64, B * T, shift, scale, eps};
    pool_run(c->pool, ln_task_run, &t, (t.rows + 63) / 64);
}

static void cpu_rmsnorm_heads(struct backend * bk, void * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD,
                              const struct wt * w, float eps) {
    // tiny next to the products around it: the reference loop is fast enough, w converted once
    float wf[512];
    SD3Q_ASSERT(HD <= 512);
    wt_rows_to_f32(w, 0, w->shape[0], wf);
    float * q = qkv;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t h = 0; h < D / HD; h++) {
            float * v = q + r * 3 * D + col_off + h * HD;
            float ss = 0;
            for (int64_t i = 0; i < HD; i++) ss += v[i] * v[i];
            float rs = 1.0f / sqrtf(ss / (float)HD + eps);
            for (int64_t i = 0; i < HD; i++) v[i] = v[i] * rs * wf[i];
        }
}

// ---- attention ------------------------------------------------------------------------------------------------------

struct attn_task {
    struct cpu_backend *    c;
    const struct attn_seg * seg;
    int                     nseg;
    int64_t                 B, NH, HD, D, L, nqb_total;
    int64_t                 qb_start[3];  // first query-block index of each segment (per batch·head)
    float                   scale;
    int                     causal;
    const float *           bias;         // [NH, L, L] or NULL
};

// Scores of ATTN_QB queries against every key (sgemm per key segment), softmax, then P·V per segment.
static void attn_task_run(void * ctx, int64_t task, int ith) {
    struct attn_task * t = ctx;
    int64_t per_bh = t->nqb_total;
    int64_t bh = task / per_bh, qb = task % per_bh;
    int64_t b = bh / t->NH, h = bh % t->NH, D = t->D;
    int qs = 0;
    while (qs + 1 < t->nseg && qb >= t->qb_start[qs + 1]) qs++;
    const struct attn_seg * sq = &t->seg[qs];
    if (!sq->out) return;
    int64_t i0 = (qb - t->qb_start[qs]) * ATTN_QB;
    int64_t nq = sq->n - i0 < ATTN_QB ? sq->n - i0 : ATTN_QB;
    const float * Q = (const float *)sq->qkv + (b * sq->n + i0) * 3 * D + h * t->HD;
    float * S = t->c->scratch[ith];  // [nq, L]
    int64_t off = 0;
    for (int ks = 0; ks < t->nseg; ks++) {
        const float * K = (const float *)t->seg[ks].qkv + b * t->seg[ks].n * 3 * D + D + h * t->HD;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)t->seg[ks].n, (int)t->HD, t->scale, Q, (int)(3 * D),
                    K, (int)(3 * D), 0.0f, S + off, (int)t->L);
        off += t->seg[ks].n;
    }
    if (t->bias) {  // single segment: query i0+i, key j
        const float * bh_ = t->bias + (h * t->L + i0) * t->L;
        for (int64_t i = 0; i < nq; i++)
            for (int64_t j = 0; j < t->L; j++) S[i * t->L + j] += bh_[i * t->L + j];
    }
    if (t->causal)
        for (int64_t i = 0; i < nq; i++)
            for (int64_t j = i0 + i + 1; j < t->L; j++) S[i * t->L + j] = -INFINITY;
    float inv[ATTN_QB];
    for (int64_t i = 0; i < nq; i++) inv[i] = 1.0f / t->c->k->exp_shifted(S + i * t->L, t->L);
    float * O = (float *)sq->out + (b * sq->n + i0) * D + h * t->HD;
    off = 0;
    for (int ks = 0; ks < t->nseg; ks++) {
        const float * V = (const float *)t->seg[ks].qkv + b * t->seg[ks].n * 3 * D + 2 * D + h * t->HD;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)t->HD, (int)t->seg[ks].n, 1.0f, S + off,
                    (int)t->L, V, (int)(3 * D), ks ? 1.0f : 0.0f, O, (int)D);
        off += t->seg[ks].n;
    }
    for (int64_t i = 0; i < nq; i++)
        for (int64_t j = 0; j < t->HD; j++) O[i * D + j] *= inv[i];
}

static void cpu_attention(struct backend * bk, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD,
                          float scale, const struct attn_opts * opt) {
    struct cpu_backend * c = cpu(bk);
    SD3Q_ASSERT(nseg >= 1 && nseg <= 3);
    SD3Q_ASSERT(!opt || ((!opt->causal && !opt->bias) || nseg == 1));
    struct attn_task t = {c, seg, nseg, B, NH, HD, NH * HD, 0, 0, {0}, scale, opt ? opt->causal : 0, opt ? opt->bias : NULL};
    for (int s = 0; s < nseg; s++) {
        t.qb_start[s] = t.nqb_total;
        t.nqb_total += (seg[s].n + ATTN_QB - 1) / ATTN_QB;
        t.L += seg[s].n;
    }
    SD3Q_ASSERT(t.L <= c->max_tokens);
    pool_run(c->pool, attn_task_run, &t, B * NH * t.nqb_total);
}

// ---- elementwise ----------------------------------------------------------------------------------------------------

#define EW_CHUNK 16384

struct ew_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              n;
    int                  op;  // 0 gelu, 1 silu, 2 add
};

static void ew_task_run(void * ctx, int64_t task, int ith) {
    struct ew_task * t = ctx;
    int64_t i0 = task * EW_CHUNK, n = t->n - i0 < EW_CHUNK ? t->n - i0 : EW_CHUNK;
    if (t->op == 0) t->c->k->gelu_tanh(t->y + i0, n);
    else if (t->op == 1) t->c->k->silu(t->y + i0, t->x + i0, n);
    else t->c->k->axpy_gate(t->y + i0, t->x + i0, NULL, n);
}

static void ew_run(struct cpu_backend * c, float * y, const float * x, int64_t n, int op) {
    struct ew_task t = {c, y, x, n, op};
    pool_run(c->pool, ew_task_run, &t, (n + EW_CHUNK - 1) / EW_CHUNK);
}

static void cpu_gelu_tanh(struct backend * bk, void * x, int64_t n) { ew_run(cpu(bk), x, x, n, 0); }
static void cpu_silu(struct backend * bk, void * y, const void * x, int64_t n) { ew_run(cpu(bk), y, x, n, 1); }
static void cpu_add(struct backend * bk, void * y, const void * x, int64_t n) { ew_run(cpu(bk), y, x, n, 2); }

struct gate_task {
    struct cpu_backend * c;
    float *              x;
    const float *        y, * gate;
    int64_t              T, D, mod_stride, rows;
};

static void gate_task_run(void * ctx, int64_t task, int ith) {
    struct gate_task * t = ctx;
    int64_t r1 = (task + 1) * 64 < t->rows ? (task + 1) * 64 : t->rows;
    for (int64_t r = task * 64; r < r1; r++)
        t->c->k->axpy_gate(t->x + r * t->D, t->y + r * t->D, t->gate ? t->gate + (r / t->T) * t->mod_stride : NULL, t->D);
}

static void cpu_gate_residual(struct backend * bk, void * x, const void * y, const void * gate, int64_t B, int64_t T,
                              int64_t D, int64_t mod_stride) {
    struct gate_task t = {cpu(bk), x, y, gate, T, D, mod_stride, B * T};
    pool_run(cpu(bk)->pool, gate_task_run, &t, (t.rows + 63) / 64);
}

// Layout ops are cheap (one pass over the latent); the reference code is the implementation.
static void cpu_patchify(struct backend * bk, void * cols, const void * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p) {
    ref_patchify(cols, x, B, C, H, W, p);
}
static void cpu_add_pos_embed(struct backend * bk, void * tok, const struct wt * pos, int64_t B, int64_t gh, int64_t gw,
                              int64_t grid, int64_t D) {
    ref_add_pos_embed(tok, pos, B, gh, gw, grid, D);
}
static void cpu_unpatchify(struct backend * bk, void * y, const void * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p) {
    ref_unpatchify(y, tok, B, C, gh, gw, p);
}

// ---- the scalar reference vtable ------------------------------------------------------------------------------------

static void ref_linear_op(struct backend * bk, void * y, const void * x, int64_t M, const struct wt * w, const struct wt * b) {
    ref_linear(y, x, M, w, b && wt_present(b) ? b : NULL);
}
static void ref_ln_modulate_op(struct backend * bk, void * y, const void * x, int64_t B, int64_t T, int64_t D,
                               const void * shift, const void * scale, int64_t mod_stride, float eps) {
    ref_ln_modulate(y, x, B, T, D, shift, scale, mod_stride, eps);
}
static void ref_rmsnorm_heads_op(struct backend * bk, void * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD,
                                 const struct wt * w, float eps) {
    ref_rmsnorm_heads(qkv, rows, D, col_off, HD, w, eps);
}
static void ref_attention_op(struct backend * bk, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD,
                             float scale, const struct attn_opts * opt) {
    ref_attention(seg, nseg, B, NH, HD, scale, opt ? opt->causal : 0, opt ? opt->bias : NULL);
}
static void ref_act_op(struct backend * bk, void * y, const void * x, int64_t n, enum act_kind k) { ref_act(y, x, NULL, n, k); }
static void ref_gated_act_op(struct backend * bk, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k) {
    ref_gated_act(y, x, rows, F, k);
}
static void ref_layernorm_op(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w,
                             const struct wt * b, float eps) {
    ref_layernorm(y, x, rows, D, w, b, eps);
}
static void ref_rmsnorm_op(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps) {
    ref_rmsnorm(y, x, rows, D, w, eps);
}
static void ref_conv2d_op(struct backend * bk, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W,
                          const struct wt * w, const struct wt * b, int stride, int pt, int pl, int pb, int pr) {
    ref_conv2d(y, x, B, Cin, H, W, w, b, stride, pt, pl, pb, pr);
}
static void ref_group_norm_op(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t G,
                              const struct wt * w, const struct wt * b, float eps, int silu) {
    ref_group_norm(y, x, B, C, HW, G, w, b, eps, silu);
}
static void ref_upsample2x_op(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    ref_upsample2x(y, x, B, C, H, W);
}
static void ref_transpose_op(struct backend * bk, void * y, const void * x, int64_t B, int64_t R, int64_t C) {
    ref_transpose(y, x, B, R, C);
}
static void ref_gelu_op(struct backend * bk, void * x, int64_t n) { ref_gelu_tanh(x, n); }
static void ref_silu_op(struct backend * bk, void * y, const void * x, int64_t n) { ref_silu(y, x, n); }
static void ref_gate_op(struct backend * bk, void * x, const void * y, const void * gate, int64_t B, int64_t T, int64_t D,
                        int64_t mod_stride) {
    ref_gate_residual(x, y, gate, B, T, D, mod_stride);
}
static void ref_add_op(struct backend * bk, void * y, const void * x, int64_t n) { ref_gate_residual(y, x, NULL, 1, 1, n, 0); }

// ---- creation -------------------------------------------------------------------------------------------------------

static void cpu_free(struct backend * bk) {
    struct cpu_backend * c = cpu(bk);
    if (!c) return;
    for (int i = 0; i < pool_size(c->pool); i++) {
        if (c->scratch) free(c->scratch[i]);
        if (c->cols) free(c->cols[i]);
    }
    free(c->scratch);
    free(c->cols);
    free(c->bias);
    pool_free(c->pool);
    free(c);
}

static const struct backend_ops cpu_ops = {
    .name          = "cpu",
    .free          = cpu_free,
    .act_size      = cpu_act_size,
    .arena_alloc   = cpu_arena_alloc,
    .arena_free    = cpu_arena_free,
    .upload        = cpu_upload,
    .download      = cpu_download,
    .linear        = cpu_linear,
    .ln_modulate   = cpu_ln_modulate,
    .rmsnorm_heads = cpu_rmsnorm_heads,
    .attention     = cpu_attention,
    .gelu_tanh     = cpu_gelu_tanh,
    .silu          = cpu_silu,
    .gate_residual = cpu_gate_residual,
    .add           = cpu_add,
    .patchify      = cpu_patchify,
    .add_pos_embed = cpu_add_pos_embed,
    .unpatchify    = cpu_unpatchify,
    .act           = cpu_op_act,
    .gated_act     = cpu_op_gated_act,
    .layernorm     = cpu_op_layernorm,
    .rmsnorm       = cpu_op_rmsnorm,
    .conv2d        = cpu_op_conv2d,
    .group_norm    = cpu_op_group_norm,
    .upsample2x    = cpu_op_upsample2x,
    .transpose     = cpu_op_transpose,
};

static const struct backend_ops cpu_ref_ops = {
    .name          = "cpu-ref",
    .free          = cpu_free,
    .act_size      = cpu_act_size,
    .arena_alloc   = cpu_arena_alloc,
    .arena_free    = cpu_arena_free,
    .upload        = cpu_upload,
    .download      = cpu_download,
    .linear        = ref_linear_op,
    .ln_modulate   = ref_ln_modulate_op,
    .rmsnorm_heads = ref_rmsnorm_heads_op,
    .attention     = ref_attention_op,
    .gelu_tanh     = ref_gelu_op,
    .silu          = ref_silu_op,
    .gate_residual = ref_gate_op,
    .add           = ref_add_op,
    .patchify      = cpu_patchify,
    .add_pos_embed = cpu_add_pos_embed,
    .unpatchify    = cpu_unpatchify,
    .act           = ref_act_op,
    .gated_act     = ref_gated_act_op,
    .layernorm     = ref_layernorm_op,
    .rmsnorm       = ref_rmsnorm_op,
    .conv2d        = ref_conv2d_op,
    .group_norm    = ref_group_norm_op,
    .upsample2x    = ref_upsample2x_op,
    .transpose     = ref_transpose_op,
};

enum sd3q_status backend_cpu_create(const struct backend_plan * plan, struct backend ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    struct cpu_backend * c = calloc(1, sizeof(*c));
    if (!c) return err_set(e, SD3Q_ERR_OOM, "cpu backend: out of memory");
    c->base.ops   = plan->ref ? &cpu_ref_ops : &cpu_ops;
    c->ref        = plan->ref;
    c->k          = cpu_kernels_best();
    c->max_k      = plan->max_k;
    c->max_n      = plan->max_n;
    c->max_tokens = plan->max_tokens;
    c->pool       = pool_create(plan->ref ? 1 : (plan->n_threads > 0 ? plan->n_threads : cpu_count()));
    if (!c->pool) {
        free(c);
        return err_set(e, SD3Q_ERR_OOM, "cpu backend: cannot start %d threads", plan->n_threads);
    }
    openblas_set_num_threads(1);
    int nt = pool_size(c->pool);
    int64_t lin = LIN_CHUNK * plan->max_k, att = ATTN_QB * plan->max_tokens;
    size_t per = (size_t)(lin > att ? lin : att);
    c->scratch = calloc((size_t)nt, sizeof(float *));
    c->cols    = calloc((size_t)nt, sizeof(float *));
    c->bias    = aligned_alloc(64, ((2 * (size_t)(plan->max_n > 0 ? plan->max_n : 1) * sizeof(float)) + 63) & ~(size_t)63);
    if (!c->scratch || !c->cols || !c->bias) {
        cpu_free(&c->base);
        return err_set(e, SD3Q_ERR_OOM, "cpu backend: out of memory");
    }
    for (int i = 0; i < nt; i++) {
        c->scratch[i] = aligned_alloc(64, ((per ? per : 16) * sizeof(float) + 63) & ~(size_t)63);
        c->cols[i]    = aligned_alloc(64, ((size_t)(plan->max_k > 0 ? plan->max_k : 1) * CONV_TILE * sizeof(float) + 63) & ~(size_t)63);
        if (!c->scratch[i] || !c->cols[i]) {
            cpu_free(&c->base);
            return err_set(e, SD3Q_ERR_OOM, "cpu backend: cannot allocate %zu MiB of per-thread scratch", per * 4 >> 20);
        }
    }
    *out = &c->base;
    return SD3Q_OK;
}
