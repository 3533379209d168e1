/*
 * norm.cu — LayerNorm with adaLN modulation (MMDiT), LayerNorm with affine weights (CLIP), RMSNorm (T5), per-head
 * RMSNorm of q/k inside a fused qkv buffer (SD3.5), and GroupNorm (+SiLU) (VAE).
 *
 * Parallelisation. Row norms: on the vector path (D a multiple of 8, 16-byte aligned pointers, D ≤ NORM_THREADS·8·
 * NORM_VMAX) one warp per row up to D = 2560 (four rows per block), one block of NORM_THREADS threads per row above;
 * each thread keeps its chunks of 8 values in registers, so the row is read once: mean, then the variance around it
 * (two passes over registers, f32), then the output; gate_ln_modulate first adds gate ⊙ y to the row in the same pass
 * (the MMDiT's gated residual and the next modulated LN: x is read once instead of twice). Otherwise the scalar path
 * reads the row from global memory per pass. Block reductions go through warp shuffles
 * and a 32-float shared array. Per-head RMSNorm: one warp per (row, head). GroupNorm: a group's C/G channels × HW
 * pixels are contiguous; a first kernel writes per-chunk partial sums of (x − x₀) and (x − x₀)² (x₀ = the group's
 * first value, which keeps the one-pass variance well conditioned) in double, a second kernel reduces a group's
 * partials in every block and normalises its chunk.
 */
#include "backend/cuda/cuda-internal.h"

#define NORM_THREADS 128
#define NORM_VMAX    8    // vector path: up to 8 chunks of 8 per thread (D ≤ 8192)
#define GN_THREADS   256
#define GN_GROUPS_MAX 65536  // B·G limit (grid y); their x₀ values sit at the end of the partials buffer

// Sum over the block (every thread gets the result); red is a 32-float shared array.
__device__ __forceinline__ float block_sum(float v, float * red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = (blockDim.x + 31) >> 5;
    __syncthreads();  // red may still be read from a previous call
    if (l == 0) red[w] = v;
    __syncthreads();
    float t = l < nw ? red[l] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

struct rownorm_args {
    bf16 *       y;
    const bf16 * x;
    int64_t      D, T, ms;      // row width; rows per batch element and modulation stride (adaLN)
    const bf16 * shift, * scale;  // adaLN modulation rows (both or neither)
    const bf16 * w, * b;        // affine weight/bias (each optional)
    float        eps;
    int          rms;           // 1: RMSNorm (no mean)
    const bf16 * gy, * gate;    // gate_ln_modulate: x gets gate[b, :] ⊙ gy first, in place
    int64_t      gs;            // gate row stride
};

// Applies the affine part to one normalised value at column i of a row in batch element bi.
__device__ __forceinline__ float norm_out(const rownorm_args & a, float n, int64_t bi, int64_t i) {
    if (a.scale) return n * (1.0f + __bfloat162float(a.scale[bi * a.ms + i])) + __bfloat162float(a.shift[bi * a.ms + i]);
    if (a.w) n *= __bfloat162float(a.w[i]);
    if (a.b) n += __bfloat162float(a.b[i]);
    return n;
}

// Sum over the TPR threads that share a row: a warp (shuffles only) or the whole block (block_sum).
template <int TPR> __device__ __forceinline__ float row_sum(float v, float * red) {
    if constexpr (TPR > 32) {
        return block_sum(v, red);
    } else {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
    }
}

// The vector path: TPR threads per row (a warp for rows up to 32·8·VMAX values, else the whole block), each holding
// its chunks of 8 values — and, for adaLN, the matching shift/scale chunks, loaded up front so that their latency
// overlaps the statistics — as packed bf16 in registers: the row is read once, mean and variance are two passes over
// registers (f32). With one block per row, 1536-wide rows ran at about a quarter of the memory bandwidth on an H100
// (ncu: 38.6 µs for 8192 rows, 886 GB/s): four block barriers per row and 1.5 chunks per thread left too few loads in
// flight. Rows past the end (the last block's spare warps) return at once.
// GATE (gate_ln_modulate): the row is first x + gate ⊙ gy, rounded to bf16 and written back, with gate_residual's
// arithmetic, and normalised from those bf16 values, so the result is bit for bit the two kernels' (test-cuda-ops-gpu).
template <int TPR, int VMAX, bool GATE>
__global__ void __launch_bounds__(NORM_THREADS) rownorm_vec_kernel(rownorm_args a, int64_t rows) {
    __shared__ float red[32];
    const int64_t r = (int64_t)blockIdx.x * (NORM_THREADS / TPR) + threadIdx.x / TPR;
    const int t = (int)(threadIdx.x % TPR);
    if (TPR == 32 && r >= rows) return;
    const int64_t bi = r / a.T;
    const bf16 * x = a.x + r * a.D;
    bf16 * y = a.y + r * a.D;
    const int nch = (int)(a.D / 8);
    uint4 xv[VMAX], sv[VMAX], hv[VMAX], yv[GATE ? VMAX : 1], gv[GATE ? VMAX : 1];
#pragma unroll
    for (int j = 0; j < VMAX; j++) {
        const int k = t + j * TPR;
        if (k < nch) {
            xv[j] = *(const uint4 *)(x + 8 * k);
            if (GATE) yv[j] = *(const uint4 *)(a.gy + r * a.D + 8 * k), gv[j] = *(const uint4 *)(a.gate + bi * a.gs + 8 * k);
            if (a.scale) sv[j] = *(const uint4 *)(a.scale + bi * a.ms + 8 * k), hv[j] = *(const uint4 *)(a.shift + bi * a.ms + 8 * k);
        }
    }
    if (GATE) {
#pragma unroll
        for (int j = 0; j < VMAX; j++) {
            const int k = t + j * TPR;
            if (k < nch) {
                __nv_bfloat162 * h = (__nv_bfloat162 *)&xv[j];
                const __nv_bfloat162 * yy = (const __nv_bfloat162 *)&yv[j], * gg = (const __nv_bfloat162 *)&gv[j];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    float2 f = __bfloat1622float2(h[q]);
                    const float2 fy = __bfloat1622float2(yy[q]), fg = __bfloat1622float2(gg[q]);
                    f.x += fg.x * fy.x;
                    f.y += fg.y * fy.y;
                    h[q] = __floats2bfloat162_rn(f.x, f.y);
                }
                *(uint4 *)((bf16 *)a.x + r * a.D + 8 * k) = xv[j];  // x is the caller's mutable residual
            }
        }
    }
    float s = 0;
#pragma unroll
    for (int j = 0; j < VMAX; j++)
        if (t + j * TPR < nch) {
            const __nv_bfloat162 * h = (const __nv_bfloat162 *)&xv[j];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const float2 f = __bfloat1622float2(h[q]);
                s += f.x + f.y;
            }
        }
    const float mean = a.rms ? 0.0f : row_sum<TPR>(s, red) / (float)a.D;
    float ss = 0;
#pragma unroll
    for (int j = 0; j < VMAX; j++)
        if (t + j * TPR < nch) {
            const __nv_bfloat162 * h = (const __nv_bfloat162 *)&xv[j];
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const float2 f = __bfloat1622float2(h[q]);
                ss += (f.x - mean) * (f.x - mean) + (f.y - mean) * (f.y - mean);
            }
        }
    const float rstd = rsqrtf(row_sum<TPR>(ss, red) / (float)a.D + a.eps);
#pragma unroll
    for (int j = 0; j < VMAX; j++) {
        const int k = t + j * TPR;
        if (k < nch) {
            const __nv_bfloat162 * h = (const __nv_bfloat162 *)&xv[j];
            uint4 u;
            __nv_bfloat162 * o = (__nv_bfloat162 *)&u;
            if (a.scale) {  // adaLN: shift and scale rows of the batch element
                const __nv_bfloat162 * sc = (const __nv_bfloat162 *)&sv[j], * sh = (const __nv_bfloat162 *)&hv[j];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const float2 f = __bfloat1622float2(h[q]), fs = __bfloat1622float2(sc[q]), fh = __bfloat1622float2(sh[q]);
                    o[q] = __floats2bfloat162_rn((f.x - mean) * rstd * (1.0f + fs.x) + fh.x, (f.y - mean) * rstd * (1.0f + fs.y) + fh.y);
                }
            } else {
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const float2 f = __bfloat1622float2(h[q]);
                    const int64_t i = 8 * k + 2 * q;
                    o[q] = __floats2bfloat162_rn(norm_out(a, (f.x - mean) * rstd, bi, i), norm_out(a, (f.y - mean) * rstd, bi, i + 1));
                }
            }
            *(uint4 *)(y + 8 * k) = u;
        }
    }
}

// One row per block, any width and alignment (scalar path: the row is read from memory in each pass).
__global__ void __launch_bounds__(NORM_THREADS) rownorm_kernel(rownorm_args a) {
    __shared__ float red[32];
    int64_t r = blockIdx.x, bi = r / a.T;
    const bf16 * x = a.x + r * a.D;
    bf16 * y = a.y + r * a.D;
    float s = 0;
    if (!a.rms)
        for (int64_t i = threadIdx.x; i < a.D; i += NORM_THREADS) s += __bfloat162float(x[i]);
    float mean = a.rms ? 0.0f : block_sum(s, red) / (float)a.D, ss = 0;
    for (int64_t i = threadIdx.x; i < a.D; i += NORM_THREADS) {
        float d = __bfloat162float(x[i]) - mean;
        ss += d * d;
    }
    float rstd = rsqrtf(block_sum(ss, red) / (float)a.D + a.eps);
    for (int64_t i = threadIdx.x; i < a.D; i += NORM_THREADS)
        y[i] = __float2bfloat16_rn(norm_out(a, (__bfloat162float(x[i]) - mean) * rstd, bi, i));
}

// Whether rows of a.D fit the vector path (widths and 16-byte alignment of every pointer it reads or writes).
static bool rownorm_vec_ok(const rownorm_args & a) {
    return a.D % 8 == 0 && a.D <= (int64_t)NORM_THREADS * 8 * NORM_VMAX && aligned_to(a.x, 16) && aligned_to(a.y, 16) &&
           (!a.scale || (aligned_to(a.scale, 16) && aligned_to(a.shift, 16) && a.ms % 8 == 0)) && (!a.w || aligned_to(a.w, 16)) &&
           (!a.b || aligned_to(a.b, 16)) && (!a.gy || (aligned_to(a.gy, 16) && aligned_to(a.gate, 16) && a.gs % 8 == 0));
}

// Launches the vector path for rows × a.D (rownorm_vec_ok): one warp per row up to 2560 columns, else a block.
template <bool GATE> static void rownorm_vec(struct cuda_backend * c, const rownorm_args & a, int64_t rows) {
    const int64_t nch = a.D / 8, wb = (rows + NORM_THREADS / 32 - 1) / (NORM_THREADS / 32);  // blocks of 4 one-warp rows
    if (nch <= 32 * 2) rownorm_vec_kernel<32, 2, GATE><<<(unsigned)wb, NORM_THREADS, 0, c->stream>>>(a, rows);
    else if (nch <= 32 * 6) rownorm_vec_kernel<32, 6, GATE><<<(unsigned)wb, NORM_THREADS, 0, c->stream>>>(a, rows);  // SD3(.5)-Medium
    else if (nch <= 32 * 10) rownorm_vec_kernel<32, 10, GATE><<<(unsigned)wb, NORM_THREADS, 0, c->stream>>>(a, rows);  // SD3.5-Large
    else rownorm_vec_kernel<NORM_THREADS, NORM_VMAX, GATE><<<(unsigned)rows, NORM_THREADS, 0, c->stream>>>(a, rows);
    LAUNCHED(c, GATE ? "rownorm_vec_kernel (gate)" : "rownorm_vec_kernel");
}

// Picks the vector or scalar path for rows × D.
static void rownorm(struct cuda_backend * c, const rownorm_args & a, int64_t rows) {
    if (rows <= 0 || a.D <= 0) return;
    if (rows > 0x7fffffff) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "norm: %lld rows exceed the grid", (long long)rows);
        return;
    }
    if (rownorm_vec_ok(a)) {
        rownorm_vec<false>(c, a, rows);
    } else {
        rownorm_kernel<<<(unsigned)rows, NORM_THREADS, 0, c->stream>>>(a);
        LAUNCHED(c, "rownorm_kernel");
    }
}

// LayerNorm (no affine) then ·(1 + scale) + shift per batch element.
void ln_modulate_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t T, int64_t D, const bf16 * shift,
                      const bf16 * scale, int64_t mod_stride, float eps) {
    rownorm_args a = {y, x, D, T > 0 ? T : 1, mod_stride, shift, scale, NULL, NULL, eps, 0, NULL, NULL, 0};
    rownorm(c, a, B * T);
}

// gate_residual then ln_modulate in one pass over x where the vector path applies (x read once, not twice), else the
// two kernels; the same values either way.
void gate_ln_modulate_cuda(struct cuda_backend * c, bf16 * h, bf16 * x, const bf16 * y, const bf16 * gate, int64_t gate_stride, int64_t B,
                           int64_t T, int64_t D, const bf16 * shift, const bf16 * scale, int64_t mod_stride, float eps) {
    rownorm_args a = {h, x, D, T > 0 ? T : 1, mod_stride, shift, scale, NULL, NULL, eps, 0, y, gate, gate_stride};
    const int64_t rows = B * T;
    if (c->fuse && gate && rows > 0 && rows <= 0x7fffffff && rownorm_vec_ok(a)) {
        rownorm_vec<true>(c, a, rows);
        return;
    }
    gate_residual_cuda(c, x, y, gate, B, T, D, gate_stride);
    ln_modulate_cuda(c, h, x, B, T, D, shift, scale, mod_stride, eps);
}

// LayerNorm with optional affine weight and bias.
void layernorm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t D, const bf16 * w, const bf16 * b,
                    float eps) {
    rownorm_args a = {y, x, D, 1, 0, NULL, NULL, w, b, eps, 0, NULL, NULL, 0};
    rownorm(c, a, rows);
}

// RMSNorm with weight.
void rmsnorm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t D, const bf16 * w, float eps) {
    rownorm_args a = {y, x, D, 1, 0, NULL, NULL, w, NULL, eps, 1, NULL, NULL, 0};
    rownorm(c, a, rows);
}

// ---- per-head RMSNorm ---------------------------------------------------------------------------------------------------

// One warp per (row, head): v ← v / sqrt(mean(v²) + eps) · w over the head's HD channels, in place.
__global__ void rmsnorm_heads_kernel(bf16 * qkv, int64_t rows, int64_t D, int64_t off, int64_t HD, const bf16 * w, float eps) {
    int64_t H = D / HD, items = rows * H;
    int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5, nw = ((int64_t)gridDim.x * blockDim.x) >> 5;
    int lane = threadIdx.x & 31;
    for (int64_t it = wid; it < items; it += nw) {
        int64_t r = it / H, h = it - r * H;
        bf16 * v = qkv + r * 3 * D + off + h * HD;
        float ss = 0;
        for (int64_t i = lane; i < HD; i += 32) {
            float f = __bfloat162float(v[i]);
            ss += f * f;
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
        float rs = rsqrtf(ss / (float)HD + eps);
        for (int64_t i = lane; i < HD; i += 32) v[i] = __float2bfloat16_rn(__bfloat162float(v[i]) * rs * __bfloat162float(w[i]));
    }
}

// One warp per (row, head) of the q or k part.
void rmsnorm_heads_cuda(struct cuda_backend * c, bf16 * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD, const bf16 * w,
                        float eps) {
    if (!w || rows <= 0 || HD <= 0) return;
    int64_t items = rows * (D / HD);
    rmsnorm_heads_kernel<<<grid_for(items * 32, 256), 256, 0, c->stream>>>(qkv, rows, D, col_off, HD, w, eps);
    LAUNCHED(c, "rmsnorm_heads_kernel");
}

// ---- group norm -----------------------------------------------------------------------------------------------------------

// Partial sums of (x − x₀) and (x − x₀)² over one chunk of one group (grid: chunks × groups).
__global__ void __launch_bounds__(GN_THREADS) gn_stats_kernel(const bf16 * x, int64_t n_group, int64_t chunk, int nchunk, double * part,
                                                              float * x0s) {
    __shared__ double red[2][GN_THREADS / 32];
    int64_t g = blockIdx.y, c0 = (int64_t)blockIdx.x * chunk, c1 = c0 + chunk < n_group ? c0 + chunk : n_group;
    const bf16 * xg = x + g * n_group;
    float x0 = __bfloat162float(xg[0]), s = 0, s2 = 0;
    for (int64_t i = c0 + threadIdx.x; i < c1; i += GN_THREADS) {
        float d = __bfloat162float(xg[i]) - x0;
        s += d;
        s2 += d * d;
    }
    double ds = s, ds2 = s2;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        ds += __shfl_xor_sync(0xffffffffu, ds, o);
        ds2 += __shfl_xor_sync(0xffffffffu, ds2, o);
    }
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) red[0][w] = ds, red[1][w] = ds2;
    __syncthreads();
    if (threadIdx.x == 0) {
        double a = 0, b = 0;
        for (int k = 0; k < GN_THREADS / 32; k++) a += red[0][k], b += red[1][k];
        part[(g * nchunk + blockIdx.x) * 2]     = a;
        part[(g * nchunk + blockIdx.x) * 2 + 1] = b;
        if (blockIdx.x == 0) x0s[g] = x0;  // kept apart: y may alias x, so the apply pass must not re-read x₀
    }
}

// Reduces the group's partials (every block redoes this small sum), then normalises one chunk (+ affine, SiLU).
__global__ void __launch_bounds__(GN_THREADS) gn_apply_kernel(bf16 * y, const bf16 * x, int64_t n_group, int64_t HW, int64_t cg, int64_t G,
                                                              int64_t chunk, int nchunk, const double * part, const float * x0s,
                                                              const bf16 * w, const bf16 * b, float eps, int silu) {
    __shared__ double red[2][GN_THREADS / 32];
    __shared__ float stat[2];
    int64_t g = blockIdx.y, gi = g % G;
    double a = 0, bb = 0;
    for (int k = threadIdx.x; k < nchunk; k += GN_THREADS) a += part[(g * nchunk + k) * 2], bb += part[(g * nchunk + k) * 2 + 1];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        bb += __shfl_xor_sync(0xffffffffu, bb, o);
    }
    int wi = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) red[0][wi] = a, red[1][wi] = bb;
    __syncthreads();
    const bf16 * xg = x + g * n_group;
    bf16 * yg = y + g * n_group;
    if (threadIdx.x == 0) {
        double s = 0, s2 = 0;
        for (int k = 0; k < GN_THREADS / 32; k++) s += red[0][k], s2 += red[1][k];
        double n = (double)n_group, m = s / n, var = s2 / n - m * m;
        if (var < 0) var = 0;
        stat[0] = (float)(m + (double)x0s[g]);
        stat[1] = (float)(1.0 / sqrt(var + (double)eps));
    }
    __syncthreads();
    float mean = stat[0], rstd = stat[1];
    int64_t c0 = (int64_t)blockIdx.x * chunk, c1 = c0 + chunk < n_group ? c0 + chunk : n_group;
    for (int64_t i = c0 + threadIdx.x; i < c1; i += GN_THREADS) {
        int64_t ch = gi * cg + i / HW;
        float t = (__bfloat162float(xg[i]) - mean) * rstd;
        if (w) t *= __bfloat162float(w[ch]);
        if (b) t += __bfloat162float(b[ch]);
        if (silu) t = t / (1.0f + __expf(-t));
        yg[i] = __float2bfloat16_rn(t);
    }
}

// Statistics pass, then the normalising pass, over chunks of each group.
void group_norm_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t C, int64_t HW, int64_t G, const bf16 * w,
                     const bf16 * b, float eps, int silu) {
    if (B * C * HW <= 0) return;
    if (G <= 0 || C % G != 0 || B * G >= GN_GROUPS_MAX) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "group_norm: %lld channels in %lld groups (batch %lld) not supported", (long long)C,
                  (long long)G, (long long)B);
        return;
    }
    int64_t cg = C / G, n_group = cg * HW, chunk = 8192;
    // the partials buffer: GN_GROUPS_MAX x₀ values (as floats) at its end, chunk pairs before them
    int64_t max_chunks = (GN_PARTIALS - GN_GROUPS_MAX) / (B * G);
    float * x0s = (float *)(c->gn_part + 2 * (GN_PARTIALS - GN_GROUPS_MAX));
    if (max_chunks < 1) max_chunks = 1;
    if ((n_group + chunk - 1) / chunk > max_chunks) chunk = (n_group + max_chunks - 1) / max_chunks;
    int nchunk = (int)((n_group + chunk - 1) / chunk);
    dim3 grid((unsigned)nchunk, (unsigned)(B * G));
    gn_stats_kernel<<<grid, GN_THREADS, 0, c->stream>>>(x, n_group, chunk, nchunk, c->gn_part, x0s);
    LAUNCHED(c, "gn_stats_kernel");
    gn_apply_kernel<<<grid, GN_THREADS, 0, c->stream>>>(y, x, n_group, HW, cg, G, chunk, nchunk, c->gn_part, x0s, w, b, eps, silu);
    LAUNCHED(c, "gn_apply_kernel");
}
