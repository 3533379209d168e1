/*
 * ops-ref.h — the scalar reference of every CPU op: plain C, no intrinsics, no threads, double accumulators.
 * This is the specification: the optimised CPU ops and the CUDA kernels are tested against these functions.
 */
#ifndef SD3Q_BACKEND_CPU_OPS_REF_H
#define SD3Q_BACKEND_CPU_OPS_REF_H

#include <stdint.h>

#include "core/weights.h"

// y[M, N] = x[M, K] · W[N, K]ᵀ + b (b may be NULL); W and b are converted from their stored type.
void ref_linear(float * y, const float * x, int64_t M, const struct wt * w, const struct wt * b);

// LayerNorm over D (biased variance, eps, no affine) then y = n · (1 + scale[b]) + shift[b].
void ref_ln_modulate(float * y, const float * x, int64_t B, int64_t T, int64_t D, const float * shift, const float * scale,
                     int64_t mod_stride, float eps);

// LayerNorm with affine weight/bias (w, b may be NULL): y = (x − mean)/sqrt(var + eps) · w + b, over rows of D.
void ref_layernorm(float * y, const float * x, int64_t rows, int64_t D, const struct wt * w, const struct wt * b, float eps);

// Per-head RMSNorm of the q or k part of a fused qkv buffer, in place (see backend.h).
void ref_rmsnorm_heads(float * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD, const struct wt * w, float eps);

// Joint softmax attention over segments (see backend.h); plain loops, full score rows in double.
// causal: key j visible to query i only when j ≤ i; bias [NH, L, L] added to the scaled logits (single segment).
struct attn_seg;
void ref_attention(const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale, int causal,
                   const float * bias);

// y = act(x) (· g when g is not NULL) for an enum act_kind, evaluated in double.
void ref_act(float * y, const float * x, const float * g, int64_t n, int kind);

// y[r, j] = act(x[r, j]) · x[r, F + j] for x [rows, 2F].
void ref_gated_act(float * y, const float * x, int64_t rows, int64_t F, int kind);

// y = x / sqrt(mean(x²) + eps) · w over rows of D.
void ref_rmsnorm(float * y, const float * x, int64_t rows, int64_t D, const struct wt * w, float eps);

// Direct 2-D convolution with stride and per-side zero padding (see backend.h).
void ref_conv2d(float * y, const float * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w, const struct wt * b,
                int stride, int pad_t, int pad_l, int pad_b, int pad_r);

// GroupNorm with affine parameters, optional SiLU.
void ref_group_norm(float * y, const float * x, int64_t B, int64_t C, int64_t HW, int64_t groups, const struct wt * w,
                    const struct wt * b, float eps, int silu);

// Nearest ×2 upsampling.
void ref_upsample2x(float * y, const float * x, int64_t B, int64_t C, int64_t H, int64_t W);

// y[b, c, r] = x[b, r, c].
void ref_transpose(float * y, const float * x, int64_t B, int64_t R, int64_t C);

// GELU with the tanh approximation: 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³))), in place.
void ref_gelu_tanh(float * x, int64_t n);

// SiLU: u·sigmoid(u).
void ref_silu(float * y, const float * x, int64_t n);

// x += gate ⊙ y per batch element (gate NULL: x += y).
void ref_gate_residual(float * x, const float * y, const float * gate, int64_t B, int64_t T, int64_t D, int64_t mod_stride);

// x [B, C, H, W] → cols [B·(H/p)·(W/p), C·p·p], (c, i, j) order.
void ref_patchify(float * cols, const float * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p);

// Centre-cropped position table added to tokens.
void ref_add_pos_embed(float * tok, const struct wt * pos, int64_t B, int64_t gh, int64_t gw, int64_t grid, int64_t D);

// tok [B, gh·gw, p·p·C] ((i, j, c), c fastest) → y [B, C, gh·p, gw·p].
void ref_unpatchify(float * y, const float * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p);

#endif
