/*
 * ops-ref.c — scalar reference ops (see ops-ref.h). Deliberately simple and slow: clarity over speed.
 * Follows the equations of ../shared/research/sd3_arch_spec.md §2.4 and diffusers' modules.
 */
#include "backend/cpu/ops-ref.h"

#include <math.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "core/status.h"

// Converts a whole weight to a new float array (NULL if absent).
static float * weight_f32(const struct wt * w) {
    if (!w || !wt_present(w)) return NULL;
    float * p = malloc((size_t)wt_numel(w) * sizeof(float));
    SD3Q_ASSERT(p);
    wt_rows_to_f32(w, 0, w->shape[0], p);
    return p;
}

void ref_linear(float * y, const float * x, int64_t M, const struct wt * w, const struct wt * b) {
    int64_t N = w->shape[0], K = w->row_elems;
    float * W  = weight_f32(w);
    float * bb = weight_f32(b);
    for (int64_t m = 0; m < M; m++) {
        for (int64_t n = 0; n < N; n++) {
            double acc = bb ? bb[n] : 0.0;
            for (int64_t k = 0; k < K; k++) acc += (double)x[m * K + k] * W[n * K + k];
            y[m * N + n] = (float)acc;
        }
    }
    free(W);
    free(bb);
}

// Mean and 1/sqrt(var + eps) of one row, in double.
static void row_stats(const float * x, int64_t D, float eps, double * mean, double * rstd) {
    double s = 0;
    for (int64_t i = 0; i < D; i++) s += x[i];
    double mu = s / (double)D, v = 0;
    for (int64_t i = 0; i < D; i++) v += ((double)x[i] - mu) * ((double)x[i] - mu);
    *mean = mu;
    *rstd = 1.0 / sqrt(v / (double)D + eps);
}

void ref_ln_modulate(float * y, const float * x, int64_t B, int64_t T, int64_t D, const float * shift, const float * scale,
                     int64_t mod_stride, float eps) {
    for (int64_t b = 0; b < B; b++) {
        for (int64_t t = 0; t < T; t++) {
            const float * xr = x + (b * T + t) * D;
            float * yr = y + (b * T + t) * D;
            double mu, rs;
            row_stats(xr, D, eps, &mu, &rs);
            for (int64_t i = 0; i < D; i++)
                yr[i] = (float)(((double)xr[i] - mu) * rs * (1.0 + scale[b * mod_stride + i]) + shift[b * mod_stride + i]);
        }
    }
}

void ref_layernorm(float * y, const float * x, int64_t rows, int64_t D, const struct wt * w, const struct wt * b, float eps) {
    float * W  = weight_f32(w);
    float * bb = weight_f32(b);
    for (int64_t r = 0; r < rows; r++) {
        double mu, rs;
        row_stats(x + r * D, D, eps, &mu, &rs);
        for (int64_t i = 0; i < D; i++) {
            double v = ((double)x[r * D + i] - mu) * rs;
            if (W) v *= W[i];
            if (bb) v += bb[i];
            y[r * D + i] = (float)v;
        }
    }
    free(W);
    free(bb);
}

void ref_rmsnorm_heads(float * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD, const struct wt * w, float eps) {
    float * W = weight_f32(w);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t h = 0; h < D / HD; h++) {
            float * v = qkv + r * 3 * D + col_off + h * HD;
            double ss = 0;
            for (int64_t i = 0; i < HD; i++) ss += (double)v[i] * v[i];
            double rs = 1.0 / sqrt(ss / (double)HD + eps);
            for (int64_t i = 0; i < HD; i++) v[i] = (float)(v[i] * rs * W[i]);
        }
    }
    free(W);
}

void ref_attention(const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale, int causal,
                   const float * bias) {
    int64_t D = NH * HD, L = 0;
    for (int s = 0; s < nseg; s++) L += seg[s].n;
    double * sc = malloc((size_t)L * sizeof(double));
    double * o  = malloc((size_t)HD * sizeof(double));
    SD3Q_ASSERT(sc && o);
    for (int64_t b = 0; b < B; b++) {
        for (int qs = 0; qs < nseg; qs++) {
            if (!seg[qs].out) continue;
            const float * qkv_q = (const float *)seg[qs].qkv + b * seg[qs].n * 3 * D;
            float * out = (float *)seg[qs].out + b * seg[qs].n * D;
            for (int64_t i = 0; i < seg[qs].n; i++) {
                for (int64_t h = 0; h < NH; h++) {
                    const float * q = qkv_q + i * 3 * D + h * HD;
                    double mx = -INFINITY;
                    int64_t j = 0;
                    for (int ks = 0; ks < nseg; ks++) {
                        const float * kv = (const float *)seg[ks].qkv + b * seg[ks].n * 3 * D;
                        for (int64_t t = 0; t < seg[ks].n; t++, j++) {
                            const float * k = kv + t * 3 * D + D + h * HD;
                            double d = 0;
                            for (int64_t c = 0; c < HD; c++) d += (double)q[c] * k[c];
                            sc[j] = d * scale;
                            if (bias) sc[j] += bias[(h * L + i) * L + j];
                            if (causal && j > i) sc[j] = -INFINITY;
                            if (sc[j] > mx) mx = sc[j];
                        }
                    }
                    double sum = 0;
                    for (j = 0; j < L; j++) {
                        sc[j] = exp(sc[j] - mx);
                        sum += sc[j];
                    }
                    for (int64_t c = 0; c < HD; c++) o[c] = 0;
                    j = 0;
                    for (int ks = 0; ks < nseg; ks++) {
                        const float * kv = (const float *)seg[ks].qkv + b * seg[ks].n * 3 * D;
                        for (int64_t t = 0; t < seg[ks].n; t++, j++) {
                            const float * v = kv + t * 3 * D + 2 * D + h * HD;
                            for (int64_t c = 0; c < HD; c++) o[c] += sc[j] * v[c];
                        }
                    }
                    for (int64_t c = 0; c < HD; c++) out[i * D + h * HD + c] = (float)(o[c] / sum);
                }
            }
        }
    }
    free(sc);
    free(o);
}

void ref_gelu_tanh(float * x, int64_t n) {
    const double k = 0.7978845608028654;  // sqrt(2/pi)
    for (int64_t i = 0; i < n; i++) {
        double u = x[i];
        x[i] = (float)(0.5 * u * (1.0 + tanh(k * (u + 0.044715 * u * u * u))));
    }
}

void ref_silu(float * y, const float * x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double u = x[i];
        y[i] = (float)(u / (1.0 + exp(-u)));
    }
}

void ref_gate_residual(float * x, const float * y, const float * gate, int64_t B, int64_t T, int64_t D, int64_t mod_stride) {
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < D; i++) {
                int64_t k = (b * T + t) * D + i;
                x[k] += (gate ? gate[b * mod_stride + i] : 1.0f) * y[k];
            }
}

void ref_patchify(float * cols, const float * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p) {
    int64_t gh = H / p, gw = W / p, K = C * p * p;
    for (int64_t b = 0; b < B; b++)
        for (int64_t py = 0; py < gh; py++)
            for (int64_t px = 0; px < gw; px++) {
                float * row = cols + ((b * gh + py) * gw + px) * K;
                for (int64_t c = 0; c < C; c++)
                    for (int64_t i = 0; i < p; i++)
                        for (int64_t j = 0; j < p; j++)
                            row[(c * p + i) * p + j] = x[((b * C + c) * H + py * p + i) * W + px * p + j];
            }
}

void ref_add_pos_embed(float * tok, const struct wt * pos, int64_t B, int64_t gh, int64_t gw, int64_t grid, int64_t D) {
    // the table is [1, grid·grid, D]: view it as [grid, grid, D] and take the centred gh × gw window
    float * row = malloc((size_t)D * sizeof(float));
    SD3Q_ASSERT(row);
    int64_t top = (grid - gh) / 2, left = (grid - gw) / 2;
    struct wt flat = *pos;  // view [grid·grid, D] so rows can be gathered
    flat.ndim      = 2;
    flat.shape[0]  = pos->shape[0] * pos->shape[1];
    flat.shape[1]  = D;
    flat.row_elems = D;
    flat.part[0].rows = flat.shape[0];
    for (int64_t py = 0; py < gh; py++)
        for (int64_t px = 0; px < gw; px++) {
            wt_rows_to_f32(&flat, (top + py) * grid + left + px, 1, row);
            for (int64_t b = 0; b < B; b++) {
                float * t = tok + ((b * gh + py) * gw + px) * D;
                for (int64_t i = 0; i < D; i++) t[i] += row[i];
            }
        }
    free(row);
}

void ref_unpatchify(float * y, const float * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p) {
    int64_t H = gh * p, W = gw * p;
    for (int64_t b = 0; b < B; b++)
        for (int64_t py = 0; py < gh; py++)
            for (int64_t px = 0; px < gw; px++) {
                const float * t = tok + ((b * gh + py) * gw + px) * p * p * C;
                for (int64_t i = 0; i < p; i++)
                    for (int64_t j = 0; j < p; j++)
                        for (int64_t c = 0; c < C; c++)
                            y[((b * C + c) * H + py * p + i) * W + px * p + j] = t[(i * p + j) * C + c];
            }
}

// One activation in double.
static double act1(double u, int kind) {
    switch (kind) {
        case 0: return 0.5 * u * (1.0 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)));
        case 1: return 0.5 * u * (1.0 + erf(u / sqrt(2.0)));
        case 2: return u / (1.0 + exp(-1.702 * u));
        default: return u / (1.0 + exp(-u));
    }
}

void ref_act(float * y, const float * x, const float * g, int64_t n, int kind) {
    for (int64_t i = 0; i < n; i++) y[i] = (float)(act1(x[i], kind) * (g ? (double)g[i] : 1.0));
}

void ref_gated_act(float * y, const float * x, int64_t rows, int64_t F, int kind) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < F; j++) y[r * F + j] = (float)(act1(x[r * 2 * F + j], kind) * x[r * 2 * F + F + j]);
}

void ref_rmsnorm(float * y, const float * x, int64_t rows, int64_t D, const struct wt * w, float eps) {
    float * W = weight_f32(w);
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)x[r * D + i] * x[r * D + i];
        double rs = 1.0 / sqrt(ss / (double)D + eps);
        for (int64_t i = 0; i < D; i++) y[r * D + i] = (float)(x[r * D + i] * rs * W[i]);
    }
    free(W);
}

void ref_conv2d(float * y, const float * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w, const struct wt * b,
                int stride, int pad_t, int pad_l, int pad_b, int pad_r) {
    int64_t Cout = w->shape[0], kh = w->ndim == 4 ? w->shape[2] : 1, kw = w->ndim == 4 ? w->shape[3] : 1;
    int64_t Ho = (H + pad_t + pad_b - kh) / stride + 1, Wo = (W + pad_l + pad_r - kw) / stride + 1;
    float * Wf = weight_f32(w);
    float * bf = weight_f32(b && wt_present(b) ? b : NULL);
    for (int64_t n = 0; n < B; n++)
        for (int64_t o = 0; o < Cout; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double acc = bf ? bf[o] : 0.0;
                    for (int64_t ci = 0; ci < Cin; ci++)
                        for (int64_t ky = 0; ky < kh; ky++)
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t iy = oy * stride + ky - pad_t, ix = ox * stride + kx - pad_l;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)Wf[((o * Cin + ci) * kh + ky) * kw + kx] * x[((n * Cin + ci) * H + iy) * W + ix];
                            }
                    y[((n * Cout + o) * Ho + oy) * Wo + ox] = (float)acc;
                }
    free(Wf);
    free(bf);
}

void ref_group_norm(float * y, const float * x, int64_t B, int64_t C, int64_t HW, int64_t groups, const struct wt * w,
                    const struct wt * b, float eps, int silu) {
    float * Wf = weight_f32(w && wt_present(w) ? w : NULL), * bf = weight_f32(b && wt_present(b) ? b : NULL);
    int64_t cg = C / groups;
    for (int64_t n = 0; n < B; n++)
        for (int64_t g = 0; g < groups; g++) {
            const float * xg = x + (n * C + g * cg) * HW;
            double s = 0, v = 0;
            for (int64_t i = 0; i < cg * HW; i++) s += xg[i];
            double mu = s / (double)(cg * HW);
            for (int64_t i = 0; i < cg * HW; i++) v += ((double)xg[i] - mu) * ((double)xg[i] - mu);
            double rs = 1.0 / sqrt(v / (double)(cg * HW) + eps);
            for (int64_t c = 0; c < cg; c++)
                for (int64_t i = 0; i < HW; i++) {
                    int64_t k = (n * C + g * cg + c) * HW + i;
                    double t = ((double)x[k] - mu) * rs * (Wf ? Wf[g * cg + c] : 1.0) + (bf ? bf[g * cg + c] : 0.0);
                    y[k] = (float)(silu ? t / (1.0 + exp(-t)) : t);
                }
        }
    free(Wf);
    free(bf);
}

void ref_upsample2x(float * y, const float * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    for (int64_t p = 0; p < B * C; p++)
        for (int64_t i = 0; i < 2 * H; i++)
            for (int64_t j = 0; j < 2 * W; j++) y[(p * 2 * H + i) * 2 * W + j] = x[(p * H + i / 2) * W + j / 2];
}

void ref_transpose(float * y, const float * x, int64_t B, int64_t R, int64_t C) {
    for (int64_t n = 0; n < B; n++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) y[(n * C + c) * R + r] = x[(n * R + r) * C + c];
}
