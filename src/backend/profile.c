/*
 * profile.c — a backend that wraps another one and times each op (wall clock, after a synchronize where the inner
 * backend has one). Used by the benchmarks and by `--profile`, so a per-op breakdown costs nothing when off.
 */
#include "backend/profile.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { P_LINEAR, P_LN, P_RMS, P_ATTN, P_GELU, P_SILU, P_GATE, P_GATE_LN, P_ADD, P_LAYOUT, P_ACT, P_NORM, P_CONV, P_GN, P_COUNT };
static const char * const p_names[P_COUNT] = {"linear", "ln_modulate", "rmsnorm_heads", "attention", "gelu_tanh",
                                              "silu", "gate_residual", "gate_ln_modulate", "add", "layout", "act",
                                              "layer/rms norm", "conv2d", "group_norm"};

struct prof_backend {
    struct backend     base;
    struct backend_ops ops;  // prof_ops, plus the optional fused ops that the inner backend has
    struct backend *   in;
    double             sec[P_COUNT];
    int64_t            calls[P_COUNT];
    double             flops[P_COUNT];
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static struct prof_backend * pb(struct backend * b) { return (struct prof_backend *)b; }

#define WRAP_BEGIN(b) struct prof_backend * p = pb(b); double t0_ = now();
#define WRAP_END(k, fl)                            \
    if (p->in->ops->sync) p->in->ops->sync(p->in); \
    p->sec[k] += now() - t0_;                      \
    p->calls[k]++;                                 \
    p->flops[k] += (fl);

static void w_free(struct backend * b) {
    pb(b)->in->ops->free(pb(b)->in);
    free(b);
}
static size_t w_act_size(const struct backend * b) { return ((const struct prof_backend *)b)->in->ops->act_size(((const struct prof_backend *)b)->in); }
static void * w_arena_alloc(struct backend * b, size_t n) { return pb(b)->in->ops->arena_alloc(pb(b)->in, n); }
static void w_arena_free(struct backend * b, void * q) { pb(b)->in->ops->arena_free(pb(b)->in, q); }
// The inner backend, after handing it the wrapper's error buffer (set by the session after wrapping).
static struct backend * inner(struct backend * b) {
    pb(b)->in->err = b->err;
    return pb(b)->in;
}
static enum sd3q_status w_upload(struct backend * b, void * d, const float * s, int64_t n) { return inner(b)->ops->upload(inner(b), d, s, n); }
static enum sd3q_status w_download(struct backend * b, float * d, const void * s, int64_t n) { return inner(b)->ops->download(inner(b), d, s, n); }
static enum sd3q_status w_prepare(struct backend * b, int group, const struct wt * const * w, int64_t n) {
    return inner(b)->ops->prepare ? inner(b)->ops->prepare(inner(b), group, w, n) : SD3Q_OK;
}
static void w_release(struct backend * b, int group) {
    if (inner(b)->ops->release) inner(b)->ops->release(inner(b), group);
}

static void w_linear(struct backend * b, void * y, const void * x, int64_t M, const struct wt * w, const struct wt * bias) {
    WRAP_BEGIN(b)
    p->in->ops->linear(p->in, y, x, M, w, bias);
    WRAP_END(P_LINEAR, 2.0 * (double)M * (double)w->shape[0] * (double)w->row_elems)
}
static void w_ln(struct backend * b, void * y, const void * x, int64_t B, int64_t T, int64_t D, const void * sh, const void * sc,
                 int64_t ms, float eps) {
    WRAP_BEGIN(b)
    p->in->ops->ln_modulate(p->in, y, x, B, T, D, sh, sc, ms, eps);
    WRAP_END(P_LN, 0)
}
static void w_rms(struct backend * b, void * q, int64_t rows, int64_t D, int64_t off, int64_t HD, const struct wt * w, float eps) {
    WRAP_BEGIN(b)
    p->in->ops->rmsnorm_heads(p->in, q, rows, D, off, HD, w, eps);
    WRAP_END(P_RMS, 0)
}
static void w_attn(struct backend * b, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale,
                   const struct attn_opts * opt) {
    WRAP_BEGIN(b)
    p->in->ops->attention(p->in, seg, nseg, B, NH, HD, scale, opt);
    double L = 0, Q = 0;
    for (int s = 0; s < nseg; s++) {
        L += (double)seg[s].n;
        if (seg[s].out) Q += (double)seg[s].n;
    }
    WRAP_END(P_ATTN, 4.0 * (double)B * (double)NH * (double)HD * Q * L)
}
static void w_gelu(struct backend * b, void * x, int64_t n) {
    WRAP_BEGIN(b)
    p->in->ops->gelu_tanh(p->in, x, n);
    WRAP_END(P_GELU, 0)
}
static void w_silu(struct backend * b, void * y, const void * x, int64_t n) {
    WRAP_BEGIN(b)
    p->in->ops->silu(p->in, y, x, n);
    WRAP_END(P_SILU, 0)
}
static void w_gate(struct backend * b, void * x, const void * y, const void * g, int64_t B, int64_t T, int64_t D, int64_t ms) {
    WRAP_BEGIN(b)
    p->in->ops->gate_residual(p->in, x, y, g, B, T, D, ms);
    WRAP_END(P_GATE, 0)
}
static void w_gate_ln(struct backend * b, void * h, void * x, const void * y, const void * g, int64_t gs, int64_t B, int64_t T,
                      int64_t D, const void * sh, const void * sc, int64_t ms, float eps) {
    WRAP_BEGIN(b)
    p->in->ops->gate_ln_modulate(p->in, h, x, y, g, gs, B, T, D, sh, sc, ms, eps);
    WRAP_END(P_GATE_LN, 0)
}
static void w_add(struct backend * b, void * y, const void * x, int64_t n) {
    WRAP_BEGIN(b)
    p->in->ops->add(p->in, y, x, n);
    WRAP_END(P_ADD, 0)
}
static void w_patchify(struct backend * b, void * c, const void * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t pp) {
    WRAP_BEGIN(b)
    p->in->ops->patchify(p->in, c, x, B, C, H, W, pp);
    WRAP_END(P_LAYOUT, 0)
}
static void w_pos(struct backend * b, void * t, const struct wt * pos, int64_t B, int64_t gh, int64_t gw, int64_t g, int64_t D) {
    WRAP_BEGIN(b)
    p->in->ops->add_pos_embed(p->in, t, pos, B, gh, gw, g, D);
    WRAP_END(P_LAYOUT, 0)
}
static void w_unpatchify(struct backend * b, void * y, const void * t, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t pp) {
    WRAP_BEGIN(b)
    p->in->ops->unpatchify(p->in, y, t, B, C, gh, gw, pp);
    WRAP_END(P_LAYOUT, 0)
}
static void w_act(struct backend * b, void * y, const void * x, int64_t n, enum act_kind k) {
    WRAP_BEGIN(b)
    p->in->ops->act(p->in, y, x, n, k);
    WRAP_END(P_ACT, 0)
}
static void w_gated(struct backend * b, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k) {
    WRAP_BEGIN(b)
    p->in->ops->gated_act(p->in, y, x, rows, F, k);
    WRAP_END(P_ACT, 0)
}
static void w_layernorm(struct backend * b, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w,
                        const struct wt * bb, float eps) {
    WRAP_BEGIN(b)
    p->in->ops->layernorm(p->in, y, x, rows, D, w, bb, eps);
    WRAP_END(P_NORM, 0)
}
static void w_rmsnorm(struct backend * b, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps) {
    WRAP_BEGIN(b)
    p->in->ops->rmsnorm(p->in, y, x, rows, D, w, eps);
    WRAP_END(P_NORM, 0)
}
static void w_conv(struct backend * b, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w,
                   const struct wt * bb, int st, int pt, int pl, int pbm, int pr) {
    WRAP_BEGIN(b)
    p->in->ops->conv2d(p->in, y, x, B, Cin, H, W, w, bb, st, pt, pl, pbm, pr);
    int64_t kh = w->ndim == 4 ? w->shape[2] : 1, kw = w->ndim == 4 ? w->shape[3] : 1;
    double ho = (double)((H + pt + pbm - kh) / st + 1), wo = (double)((W + pl + pr - kw) / st + 1);
    WRAP_END(P_CONV, 2.0 * (double)B * (double)w->shape[0] * (double)w->row_elems * ho * wo)
}
static void w_gn(struct backend * b, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t G, const struct wt * w,
                 const struct wt * bb, float eps, int silu) {
    WRAP_BEGIN(b)
    p->in->ops->group_norm(p->in, y, x, B, C, HW, G, w, bb, eps, silu);
    WRAP_END(P_GN, 0)
}
static void w_up(struct backend * b, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    WRAP_BEGIN(b)
    p->in->ops->upsample2x(p->in, y, x, B, C, H, W);
    WRAP_END(P_LAYOUT, 0)
}
static void w_tr(struct backend * b, void * y, const void * x, int64_t B, int64_t R, int64_t C) {
    WRAP_BEGIN(b)
    p->in->ops->transpose(p->in, y, x, B, R, C);
    WRAP_END(P_LAYOUT, 0)
}
static void w_sync(struct backend * b) {
    if (pb(b)->in->ops->sync) pb(b)->in->ops->sync(pb(b)->in);
}

static const struct backend_ops prof_ops = {
    .name = "profile", .free = w_free, .act_size = w_act_size, .arena_alloc = w_arena_alloc, .arena_free = w_arena_free,
    .upload = w_upload, .download = w_download, .linear = w_linear, .ln_modulate = w_ln, .rmsnorm_heads = w_rms,
    .attention = w_attn, .gelu_tanh = w_gelu, .silu = w_silu, .gate_residual = w_gate, .add = w_add,
    .patchify = w_patchify, .add_pos_embed = w_pos, .unpatchify = w_unpatchify, .act = w_act, .gated_act = w_gated,
    .layernorm = w_layernorm, .rmsnorm = w_rmsnorm, .conv2d = w_conv, .group_norm = w_gn, .upsample2x = w_up,
    .transpose = w_tr, .sync = w_sync, .prepare = w_prepare, .release = w_release,
};

struct backend * backend_profile_wrap(struct backend * inner) {
    struct prof_backend * p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->ops = prof_ops;  // the fused gate + LN only where the inner backend fuses it, so the caller's choice is the same
    p->ops.gate_ln_modulate = inner->ops->gate_ln_modulate ? w_gate_ln : NULL;
    p->base.ops = &p->ops;
    p->base.err = inner->err;
    p->in       = inner;
    return &p->base;
}

// Whether b is a profiling wrapper (its ops table lives inside it).
static int is_prof(const struct backend * b) { return b->ops->free == w_free; }

void backend_profile_report(struct backend * b, FILE * f) {
    if (!is_prof(b)) return;
    struct prof_backend * p = pb(b);
    double total = 0;
    for (int k = 0; k < P_COUNT; k++) total += p->sec[k];
    fprintf(f, "%-18s %10s %8s %7s %10s\n", "op", "seconds", "calls", "share", "GFLOP/s");
    for (int k = 0; k < P_COUNT; k++) {
        if (!p->calls[k]) continue;
        fprintf(f, "%-18s %10.3f %8lld %6.1f%%", p_names[k], p->sec[k], (long long)p->calls[k], total > 0 ? 100 * p->sec[k] / total : 0);
        if (p->flops[k] > 0 && p->sec[k] > 0) fprintf(f, " %10.1f", p->flops[k] / p->sec[k] / 1e9);
        fprintf(f, "\n");
    }
    fprintf(f, "%-18s %10.3f\n", "total", total);
}

void backend_profile_reset(struct backend * b) {
    if (!is_prof(b)) return;
    struct prof_backend * p = pb(b);
    for (int k = 0; k < P_COUNT; k++) p->sec[k] = p->flops[k] = 0, p->calls[k] = 0;
}
