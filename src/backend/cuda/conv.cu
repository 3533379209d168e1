/*
 * conv.cu — 2-D convolution as GEMMs: a 1×1 stride-1 unpadded convolution is one GEMM per image over the NCHW
 * tensor as it lies; any other kernel builds im2col tiles of P output pixels ([K = Cin·kh·kw][P] bf16, in a scratch
 * buffer allocated on first use) and multiplies each tile with the filter (cuBLAS, f32 accumulation) straight into
 * its columns of the output. The column matrix of a whole 1024² VAE plane never exists. The bias is one pass after.
 *
 * Parallelisation: the im2col kernel has one thread per tile element (consecutive threads → consecutive pixels of
 * one (channel, ky, kx) row, so the stores are coalesced and the loads nearly so); the GEMM is cuBLAS's. In
 * column-major terms a tile is Yᵀ[P, Cout] (ld = Ho·Wo, the NCHW plane) = colsᵀ[P, K] · Wᵀ[K, Cout].
 */
#include "backend/cuda/cuda-internal.h"

#define CONV_WS_BYTES ((size_t)64 << 20)

// cols[k, j] for k = (ci·kh + ky)·kw + kx and output pixel p0 + j of one image (zero outside the input).
__global__ void im2col_kernel(bf16 * cols, const bf16 * x, int64_t Cin, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t Wo,
                              int stride, int pt, int pl, int64_t p0, int64_t P, int64_t np) {
    int64_t n = Cin * kh * kw * np;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = o % np, k = o / np;
        int64_t kx = k % kw, ky = (k / kw) % kh, ci = k / (kw * kh);
        int64_t pix = p0 + j, oy = pix / Wo, ox = pix - oy * Wo;
        int64_t iy = oy * stride + ky - pt, ix = ox * stride + kx - pl;
        cols[k * P + j] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? x[(ci * H + iy) * W + ix] : __float2bfloat16_rn(0.0f);
    }
}

// 1×1: one GEMM per image; otherwise im2col tiles + GEMM; then the bias.
void conv2d_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w,
                 const struct wt * b, int stride, int pt, int pl, int pb, int pr) {
    int64_t Cout = w->shape[0], kh = w->ndim == 4 ? w->shape[2] : 1, kw = w->ndim == 4 ? w->shape[3] : 1, K = Cin * kh * kw;
    if (w->row_elems != K || stride < 1) {
        cuda_fail(c, SD3Q_ERR_SHAPE, "conv2d: weight %s has %lld elements per filter, expected %lld", w->name, (long long)w->row_elems,
                  (long long)K);
        return;
    }
    int64_t Ho = (H + pt + pb - kh) / stride + 1, Wo = (W + pl + pr - kw) / stride + 1, HWo = Ho * Wo;
    if (B <= 0 || Cout <= 0 || Ho <= 0 || Wo <= 0) return;
    const bf16 * Wd = cuda_weight(c, w), * bias = b ? cuda_weight(c, b) : NULL;
    if (!Wd || (b && !bias)) return;
    if (kh == 1 && kw == 1 && stride == 1 && pt == 0 && pl == 0 && pb == 0 && pr == 0) {
        // Yᵀ[HW, Cout] = Xᵀ[HW, Cin] · Wᵀ[Cin, Cout], one image per batch entry
        gemm_batched_cuda(c, 0, 0, HWo, Cout, Cin, 1.0f, x, HWo, Cin * HWo, Wd, Cin, 0, 0.0f, y, 0, HWo, Cout * HWo, B);
    } else {
        if (!c->conv_ws) {
            c->conv_ws = cuda_alloc(c, CONV_WS_BYTES, "convolution tiles");
            if (!c->conv_ws) return;
            c->conv_ws_bytes = CONV_WS_BYTES;
        }
        int64_t P = (int64_t)(c->conv_ws_bytes / sizeof(bf16)) / K;
        P = P >= 128 ? P / 128 * 128 : P;
        if (P > HWo) P = HWo;
        if (P < 1) {
            cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "conv2d: filters of %lld elements exceed the tile scratch", (long long)K);
            return;
        }
        bf16 * cols = (bf16 *)c->conv_ws;
        for (int64_t bi = 0; bi < B && c->st == SD3Q_OK; bi++)
            for (int64_t p0 = 0; p0 < HWo; p0 += P) {
                int64_t np = HWo - p0 < P ? HWo - p0 : P;
                im2col_kernel<<<grid_for(K * np, 256), 256, 0, c->stream>>>(cols, x + bi * Cin * H * W, Cin, H, W, kh, kw, Wo, stride,
                                                                           pt, pl, p0, P, np);
                if (!LAUNCHED(c, "im2col_kernel")) return;
                gemm_batched_cuda(c, 0, 0, np, Cout, K, 1.0f, cols, P, 0, Wd, K, 0, 0.0f, y + bi * Cout * HWo + p0, 0, HWo, 0, 1);
            }
    }
    if (bias) bias_channels_cuda(c, y, bias, B, Cout, HWo);
}
