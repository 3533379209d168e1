/*
 * cpu-ops.c — the CPU backend's activations, norms and image ops (text encoders and VAE), split into pool tasks.
 *
 * conv2d is an im2col + sgemm per tile of CONV_TILE output pixels: the filter is converted to f32 once per call, each
 * task builds one tile's columns in its thread's buffer and multiplies all output channels at once. The column matrix
 * of a whole 1024² VAE plane (GBs) never exists.
 */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu-internal.h"

// ---- activations ------------------------------------------------------------------------------------------------------

#define EW_CHUNK 16384

struct act_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              n, F;  // F > 0: gated rows of 2F inputs
    int                  kind;
};

static void act_task_run(void * ctx, int64_t task, int ith) {
    struct act_task * t = ctx;
    if (t->F > 0) {  // one row per task: y[r, :F] = act(x[r, :F]) ⊙ x[r, F:]
        const float * xr = t->x + task * 2 * t->F;
        t->c->k->act(t->y + task * t->F, xr, xr + t->F, t->F, t->kind);
        return;
    }
    int64_t i0 = task * EW_CHUNK, n = t->n - i0 < EW_CHUNK ? t->n - i0 : EW_CHUNK;
    t->c->k->act(t->y + i0, t->x + i0, NULL, n, t->kind);
}

void cpu_op_act(struct backend * bk, void * y, const void * x, int64_t n, enum act_kind k) {
    struct act_task t = {cpu(bk), y, x, n, 0, (int)k};
    pool_run(cpu(bk)->pool, act_task_run, &t, (n + EW_CHUNK - 1) / EW_CHUNK);
}

void cpu_op_gated_act(struct backend * bk, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k) {
    struct act_task t = {cpu(bk), y, x, rows * F, F, (int)k};
    pool_run(cpu(bk)->pool, act_task_run, &t, rows);
}

// ---- norms --------------------------------------------------------------------------------------------------------------

struct norm_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              rows, D;
    const float *        w, * b;  // converted affine parameters (in the backend's bias buffer), or NULL
    float                eps;
    int                  rms;
};

static void norm_task_run(void * ctx, int64_t task, int ith) {
    struct norm_task * t = ctx;
    int64_t r1 = (task + 1) * 16 < t->rows ? (task + 1) * 16 : t->rows;
    for (int64_t r = task * 16; r < r1; r++) {
        const float * x = t->x + r * t->D;
        float * y = t->y + r * t->D;
        if (!t->rms) {
            t->c->k->ln_row(y, x, t->D, NULL, NULL, t->w, t->b, t->eps);
            continue;
        }
        float ss = 0;
        for (int64_t i = 0; i < t->D; i++) ss += x[i] * x[i];
        float rs = 1.0f / sqrtf(ss / (float)t->D + t->eps);
        for (int64_t i = 0; i < t->D; i++) y[i] = x[i] * rs * t->w[i];
    }
}

// Converts a small parameter vector into part of the backend's f32 parameter buffer; NULL when absent.
static const float * param_f32(struct cpu_backend * c, const struct wt * w, int64_t off) {
    if (!w || !wt_present(w)) return NULL;
    SD3Q_ASSERT(off + w->shape[0] <= 2 * c->max_n);
    wt_rows_to_f32(w, 0, w->shape[0], c->bias + off);
    return c->bias + off;
}

void cpu_op_layernorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w,
                      const struct wt * b, float eps) {
    struct cpu_backend * c = cpu(bk);
    struct norm_task t = {c, y, x, rows, D, param_f32(c, w, 0), param_f32(c, b, D), eps, 0};
    pool_run(c->pool, norm_task_run, &t, (rows + 15) / 16);
}

void cpu_op_rmsnorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps) {
    struct cpu_backend * c = cpu(bk);
    struct norm_task t = {c, y, x, rows, D, param_f32(c, w, 0), NULL, eps, 1};
    pool_run(c->pool, norm_task_run, &t, (rows + 15) / 16);
}

struct gn_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              C, HW, G;
    const float *        w, * b;
    float                eps;
    int                  silu;
};

// One (batch, group): statistics over C/G channels × HW pixels (two passes, double sums), then affine (+ SiLU).
static void gn_task_run(void * ctx, int64_t task, int ith) {
    struct gn_task * t = ctx;
    int64_t b = task / t->G, g = task % t->G, cg = t->C / t->G;
    const float * x = t->x + (b * t->C + g * cg) * t->HW;
    float * y = t->y + (b * t->C + g * cg) * t->HW;
    int64_t n = cg * t->HW;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double mu = s / (double)n, v = 0;
    for (int64_t i = 0; i < n; i++) v += ((double)x[i] - mu) * ((double)x[i] - mu);
    float rs = (float)(1.0 / sqrt(v / (double)n + t->eps)), m = (float)mu;
    for (int64_t ch = 0; ch < cg; ch++) {
        float a = rs * (t->w ? t->w[g * cg + ch] : 1.0f), bb = t->b ? t->b[g * cg + ch] : 0.0f;
        float * yr = y + ch * t->HW;
        const float * xr = x + ch * t->HW;
        for (int64_t i = 0; i < t->HW; i++) yr[i] = (xr[i] - m) * a + bb;
        if (t->silu) t->c->k->act(yr, yr, NULL, t->HW, ACT_SILU);
    }
}

void cpu_op_group_norm(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t groups,
                       const struct wt * w, const struct wt * b, float eps, int silu) {
    struct cpu_backend * c = cpu(bk);
    SD3Q_ASSERT(groups > 0 && C % groups == 0);
    struct gn_task t = {c, y, x, C, HW, groups, param_f32(c, w, 0), param_f32(c, b, C), eps, silu};
    pool_run(c->pool, gn_task_run, &t, B * groups);
}

// ---- convolution ---------------------------------------------------------------------------------------------------------

struct conv_task {
    struct cpu_backend * c;
    float *              y;
    const float *        x;
    int64_t              B, Cin, H, W, Cout, kh, kw, Ho, Wo, K, ntile;
    int                  stride, pt, pl;
    const float *        Wf;    // [Cout, K] this chunk of the filter in f32 (converted once per call, or the mapping)
    const float *        bias;
    int64_t              Cfull; // output channels of the whole convolution (the batch stride of y)
};

// Columns of one tile of output pixels [p0, p0 + np): cols[(ci·kh + ky)·kw + kx][j] = x[ci, iy, ix] or 0 outside.
// Walks output rows so the inner loop is a strided copy without divisions.
static void im2col_tile(const struct conv_task * t, const float * xb, int64_t p0, int64_t np, float * cols) {
    for (int64_t ci = 0; ci < t->Cin; ci++)
        for (int64_t ky = 0; ky < t->kh; ky++)
            for (int64_t kx = 0; kx < t->kw; kx++) {
                float * row = cols + ((ci * t->kh + ky) * t->kw + kx) * CONV_TILE;
                const float * xc = xb + ci * t->H * t->W;
                for (int64_t j = 0; j < np;) {
                    int64_t oy = (p0 + j) / t->Wo, ox0 = (p0 + j) % t->Wo;
                    int64_t run = t->Wo - ox0 < np - j ? t->Wo - ox0 : np - j;  // pixels left in this output row
                    int64_t iy = oy * t->stride + ky - t->pt;
                    if (iy < 0 || iy >= t->H) {
                        memset(row + j, 0, sizeof(float) * (size_t)run);
                    } else {
                        const float * xr = xc + iy * t->W;
                        for (int64_t q = 0; q < run; q++) {
                            int64_t ix = (ox0 + q) * t->stride + kx - t->pl;
                            row[j + q] = ix >= 0 && ix < t->W ? xr[ix] : 0.0f;
                        }
                    }
                    j += run;
                }
            }
}

// One tile of output pixels of one image, every output channel: im2col into the thread's buffer, then one sgemm.
static void conv_task_run(void * ctx, int64_t task, int ith) {
    struct conv_task * t = ctx;
    int64_t b = task / t->ntile, p0 = (task % t->ntile) * CONV_TILE, P = t->Ho * t->Wo;
    int64_t np = P - p0 < CONV_TILE ? P - p0 : CONV_TILE;
    float * cols = t->c->cols[ith];  // [K, CONV_TILE]
    im2col_tile(t, t->x + b * t->Cin * t->H * t->W, p0, np, cols);
    float * yb = t->y + b * t->Cfull * P;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t->Cout, (int)np, (int)t->K, 1.0f, t->Wf, (int)t->K, cols, CONV_TILE, 0.0f,
                yb + p0, (int)P);
    if (t->bias)
        for (int64_t o = 0; o < t->Cout; o++) {
            float bv = t->bias[o], * yr = yb + o * P + p0;
            for (int64_t j = 0; j < np; j++) yr[j] += bv;
        }
}

void cpu_op_conv2d(struct backend * bk, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W,
                   const struct wt * w, const struct wt * b, int stride, int pad_t, int pad_l, int pad_b, int pad_r) {
    struct cpu_backend * c = cpu(bk);
    int64_t Cout = w->shape[0], kh = w->ndim == 4 ? w->shape[2] : 1, kw = w->ndim == 4 ? w->shape[3] : 1;
    int64_t K = Cin * kh * kw;
    SD3Q_ASSERT(w->row_elems == K && K <= c->max_k && Cout <= c->max_n && stride >= 1);
    // a chunk of up to LIN_CHUNK output channels of the filter fits one thread scratch (LIN_CHUNK·max_k floats; SD3's
    // VAE filters have ≤ 512 outputs, one chunk); it is only read by the tasks, so scratch[0] can hold it while thread 0
    // builds columns in its own im2col buffer
    int64_t Ho = (H + pad_t + pad_b - kh) / stride + 1, Wo = (W + pad_l + pad_r - kw) / stride + 1;
    int64_t ntile = (Ho * Wo + CONV_TILE - 1) / CONV_TILE;
    const float * bias = param_f32(c, b, 0);
    for (int64_t o0 = 0; o0 < Cout; o0 += LIN_CHUNK) {
        int64_t no = Cout - o0 < LIN_CHUNK ? Cout - o0 : LIN_CHUNK;
        const float * Wf = wt_f32_rows(w, o0);
        if (!Wf) {
            wt_rows_to_f32(w, o0, no, c->scratch[0]);
            Wf = c->scratch[0];
        }
        struct conv_task t = {c, (float *)y + o0 * Ho * Wo, x, B, Cin, H, W, no, kh, kw, Ho, Wo, K, ntile, stride, pad_t, pad_l,
                              Wf, bias ? bias + o0 : NULL, Cout};
        pool_run(c->pool, conv_task_run, &t, B * ntile);
    }
}

// ---- layout ----------------------------------------------------------------------------------------------------------------

struct layout_task {
    float *       y;
    const float * x;
    int64_t       R, C, H, W;
};

static void up_task_run(void * ctx, int64_t task, int ith) {  // one (batch, channel) plane
    struct layout_task * t = ctx;
    const float * x = t->x + task * t->H * t->W;
    float * y = t->y + task * 4 * t->H * t->W;
    for (int64_t i = 0; i < 2 * t->H; i++)
        for (int64_t j = 0; j < 2 * t->W; j++) y[i * 2 * t->W + j] = x[(i / 2) * t->W + j / 2];
}

void cpu_op_upsample2x(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    struct layout_task t = {y, x, 0, 0, H, W};
    pool_run(cpu(bk)->pool, up_task_run, &t, B * C);
}

static void tr_task_run(void * ctx, int64_t task, int ith) {  // one batch element, 32×32 blocks for locality
    struct layout_task * t = ctx;
    const float * x = t->x + task * t->R * t->C;
    float * y = t->y + task * t->R * t->C;
    for (int64_t r0 = 0; r0 < t->R; r0 += 32)
        for (int64_t c0 = 0; c0 < t->C; c0 += 32)
            for (int64_t r = r0; r < r0 + 32 && r < t->R; r++)
                for (int64_t cc = c0; cc < c0 + 32 && cc < t->C; cc++) y[cc * t->R + r] = x[r * t->C + cc];
}

void cpu_op_transpose(struct backend * bk, void * y, const void * x, int64_t B, int64_t R, int64_t C) {
    struct layout_task t = {y, x, R, C, 0, 0};
    pool_run(cpu(bk)->pool, tr_task_run, &t, B);
}
