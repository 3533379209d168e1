/*
 * elementwise.cu — activations, gated activation, gating + residual, add, layout ops (patchify, position table,
 * un-patchify, upsampling, transpose), bias fills and the dtype conversions of transfers and weight uploads.
 *
 * Parallelisation: grid-stride loops, one thread per element, or per 8 consecutive bf16 elements (one 16-byte
 * load/store) on the vector path, taken when the length and every pointer allow it (multiples of 8 elements,
 * 16-byte alignment); otherwise the scalar path. Arithmetic is f32; each output is rounded to bf16 once.
 * The transpose stages 32×32 tiles in shared memory (padded by one element against bank conflicts) so both the
 * reads and the writes are coalesced. No other kernel here uses shared memory.
 */
#include <math.h>

#include "backend/cuda/cuda-internal.h"

#define EW_THREADS 256
#define GR_THREADS 64   // gate_residual_vec_kernel, add_pos_embed_kernel: threads per block along a row (1536 columns: 3 blocks of 64)

// ---- activation functions (f32) -------------------------------------------------------------------------------------

// One activation of enum act_kind, in f32.
__device__ __forceinline__ float act_f(float u, int kind) {
    switch (kind) {
        case ACT_GELU_TANH: return 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
        case ACT_GELU_ERF: return 0.5f * u * (1.0f + erff(u * 0.7071067811865476f));
        case ACT_QUICK_GELU: return u / (1.0f + __expf(-1.702f * u));
        default: return u / (1.0f + __expf(-u));
    }
}

// 8 bf16 ↔ 8 f32 through one 16-byte word.
__device__ __forceinline__ void load8(const bf16 * p, float v[8]) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 * h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 f = __bfloat1622float2(h[i]);
        v[2 * i] = f.x, v[2 * i + 1] = f.y;
    }
}

// 8 f32 → 8 bf16 (round to nearest even) in one 16-byte store.
__device__ __forceinline__ void store8(bf16 * p, const float v[8]) {
    uint4 u;
    __nv_bfloat162 * h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    *(uint4 *)p = u;
}

// ---- conversions ------------------------------------------------------------------------------------------------------

// y = bf16(x), round to nearest even (NaN stays NaN).
__global__ void convert_f32_to_bf16_kernel(bf16 * y, const float * x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

// y = f32(x), exact.
__global__ void convert_bf16_to_f32_kernel(float * y, const bf16 * x, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __bfloat162float(x[i]);
}

// float8 e4m3fn → f32, exact (as dtype.h).
__device__ __forceinline__ float f8e4m3_f(uint8_t v) {
    uint32_t s = (v & 0x80u) ? 1u : 0u, e = (v >> 3) & 0xfu, m = v & 0x7u;
    float r;
    if (e == 0xf && m == 0x7) r = __int_as_float(0x7fc00000);
    else if (e == 0) r = (float)m * 0.001953125f;  // m · 2^-9
    else r = __int_as_float((int)(((e + 120u) << 23) | (m << 20)));
    return s ? -r : r;
}

// Weight conversion: raw stored elements of type t → bf16.
__global__ void convert_weight_kernel(bf16 * y, const void * x, int t, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float v;
        if (t == DT_F32) v = ((const float *)x)[i];
        else if (t == DT_F16) v = __half2float(((const __half *)x)[i]);
        else v = f8e4m3_f(((const uint8_t *)x)[i]);
        y[i] = __float2bfloat16_rn(v);
    }
}

// Launches convert_f32_to_bf16_kernel.
void convert_f32_to_bf16_cuda(struct cuda_backend * c, bf16 * y, const float * x, int64_t n) {
    if (n <= 0) return;
    convert_f32_to_bf16_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, n);
    LAUNCHED(c, "convert_f32_to_bf16_kernel");
}

// Launches convert_bf16_to_f32_kernel.
void convert_bf16_to_f32_cuda(struct cuda_backend * c, float * y, const bf16 * x, int64_t n) {
    if (n <= 0) return;
    convert_bf16_to_f32_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, n);
    LAUNCHED(c, "convert_bf16_to_f32_kernel");
}

// Launches convert_weight_kernel.
void convert_weight_cuda(struct cuda_backend * c, bf16 * y, const void * x, enum dtype t, int64_t n) {
    if (n <= 0) return;
    convert_weight_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, (int)t, n);
    LAUNCHED(c, "convert_weight_kernel");
}

// ---- activations ------------------------------------------------------------------------------------------------------

// y = act(x), 8 elements per thread (n8 groups of 8).
template <int K> __global__ void act_vec_kernel(bf16 * y, const bf16 * x, int64_t n8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        float v[8];
        load8(x + 8 * i, v);
#pragma unroll
        for (int k = 0; k < 8; k++) v[k] = act_f(v[k], K);
        store8(y + 8 * i, v);
    }
}

// y = act(x), one element per thread.
__global__ void act_kernel(bf16 * y, const bf16 * x, int64_t n, int kind) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(act_f(__bfloat162float(x[i]), kind));
}

// Activation: the 8-wide kernel when size and alignment allow, else the scalar one.
void act_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t n, int kind) {
    if (n <= 0) return;
    if (n % 8 == 0 && aligned_to(x, 16) && aligned_to(y, 16)) {
        int64_t n8 = n / 8;
        unsigned g = grid_for(n8, EW_THREADS);
        switch (kind) {
            case ACT_GELU_TANH: act_vec_kernel<ACT_GELU_TANH><<<g, EW_THREADS, 0, c->stream>>>(y, x, n8); break;
            case ACT_GELU_ERF: act_vec_kernel<ACT_GELU_ERF><<<g, EW_THREADS, 0, c->stream>>>(y, x, n8); break;
            case ACT_QUICK_GELU: act_vec_kernel<ACT_QUICK_GELU><<<g, EW_THREADS, 0, c->stream>>>(y, x, n8); break;
            default: act_vec_kernel<ACT_SILU><<<g, EW_THREADS, 0, c->stream>>>(y, x, n8); break;
        }
        LAUNCHED(c, "act_vec_kernel");
        return;
    }
    act_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, n, kind);
    LAUNCHED(c, "act_kernel");
}

// y[r, j] = act(x[r, j]) · x[r, F + j].
__global__ void gated_act_kernel(bf16 * y, const bf16 * x, int64_t rows, int64_t F, int kind) {
    int64_t n = rows * F;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / F, j = i - r * F;
        const bf16 * xr = x + r * 2 * F;
        y[i] = __float2bfloat16_rn(act_f(__bfloat162float(xr[j]), kind) * __bfloat162float(xr[F + j]));
    }
}

// Launches gated_act_kernel.
void gated_act_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t rows, int64_t F, int kind) {
    if (rows * F <= 0) return;
    gated_act_kernel<<<grid_for(rows * F, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, rows, F, kind);
    LAUNCHED(c, "gated_act_kernel");
}

// ---- gating + residual ------------------------------------------------------------------------------------------------

// x[b, t, i] += gate[b·ms + i] · y[b, t, i] (gate NULL: 1), 8 elements per thread: blockIdx.x picks the thread's
// 8-column chunk of a row, blockIdx.y the rows (grid-stride), so nothing is divided per element (with a flat index the
// two 64-bit divisions per chunk made the 1024² MMDiT's calls instruction-bound).
__global__ void gate_residual_vec_kernel(bf16 * x, const bf16 * y, const bf16 * gate, int rows, int T, int64_t D, int64_t ms) {
    const int64_t col = 8 * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (col >= D) return;
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int64_t e = (int64_t)row * D + col;
        float a[8], b[8], g[8];
        load8(x + e, a);
        load8(y + e, b);
        if (gate) load8(gate + (int64_t)(row / T) * ms + col, g);
#pragma unroll
        for (int k = 0; k < 8; k++) a[k] += (gate ? g[k] : 1.0f) * b[k];
        store8(x + e, a);
    }
}

// The same, one element per thread.
__global__ void gate_residual_kernel(bf16 * x, const bf16 * y, const bf16 * gate, int64_t T, int64_t D, int64_t ms, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = i / D, col = i - row * D;
        float g = gate ? __bfloat162float(gate[(row / T) * ms + col]) : 1.0f;
        x[i] = __float2bfloat16_rn(__bfloat162float(x[i]) + g * __bfloat162float(y[i]));
    }
}

// Gate + residual: the 8-wide kernel when widths and alignment allow, else the scalar one.
void gate_residual_cuda(struct cuda_backend * c, bf16 * x, const bf16 * y, const bf16 * gate, int64_t B, int64_t T, int64_t D,
                        int64_t mod_stride) {
    int64_t n = B * T * D;
    if (n <= 0) return;
    int vec = D % 8 == 0 && aligned_to(x, 16) && aligned_to(y, 16) && (!gate || (aligned_to(gate, 16) && mod_stride % 8 == 0)) &&
              B * T <= 0x7fffffff;  // rows and T as int in the kernel
    if (vec) {
        const int64_t rows = B * T;
        dim3 grid((unsigned)((D / 8 + GR_THREADS - 1) / GR_THREADS), (unsigned)(rows < 65535 ? rows : 65535));
        gate_residual_vec_kernel<<<grid, GR_THREADS, 0, c->stream>>>(x, y, gate, (int)rows, (int)T, D, mod_stride);
        LAUNCHED(c, "gate_residual_vec_kernel");
    } else {
        gate_residual_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(x, y, gate, T, D, mod_stride, n);
        LAUNCHED(c, "gate_residual_kernel");
    }
}

// ---- layout -------------------------------------------------------------------------------------------------------------

// cols[(b, py, px), (c, i, j)] = x[b, c, py·p + i, px·p + j]; one thread per output element.
__global__ void patchify_kernel(bf16 * cols, const bf16 * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p) {
    int64_t gh = H / p, gw = W / p, K = C * p * p, n = B * gh * gw * K;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t k = o % K, tok = o / K;
        int64_t px = tok % gw, py = (tok / gw) % gh, b = tok / (gw * gh);
        int64_t j = k % p, i = (k / p) % p, ch = k / (p * p);
        cols[o] = x[((b * C + ch) * H + py * p + i) * W + px * p + j];
    }
}

// Launches patchify_kernel.
void patchify_cuda(struct cuda_backend * c, bf16 * cols, const bf16 * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p) {
    int64_t n = B * (H / p) * (W / p) * C * p * p;
    if (n <= 0) return;
    patchify_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(cols, x, B, C, H, W, p);
    LAUNCHED(c, "patchify_kernel");
}

// tok[r, :] += pos[(top + py)·grid + left + px, :] for token row r = (b, py, px): blocks of GR_THREADS threads along a
// row (8 columns each with VEC, else 1) and rows along y, so the table row is found once per row, not per element (the
// per-element 64-bit divisions took 104 µs for SD3-Medium's 1024² tokens on an H200).
template <bool VEC>
__global__ void add_pos_embed_kernel(bf16 * tok, const bf16 * pos, int rows, int gh, int gw, int64_t grid, int64_t D) {
    const int64_t top = (grid - gh) / 2, left = (grid - gw) / 2, col = (VEC ? 8 : 1) * ((int64_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (col >= D) return;
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int t = row % (gh * gw), py = t / gw, px = t % gw;
        bf16 * tr = tok + (int64_t)row * D + col;
        const bf16 * pr = pos + ((top + py) * grid + left + px) * D + col;
        if (VEC) {
            float a[8], b[8];
            load8(tr, a);
            load8(pr, b);
#pragma unroll
            for (int k = 0; k < 8; k++) a[k] += b[k];
            store8(tr, a);
        } else {
            *tr = __float2bfloat16_rn(__bfloat162float(*tr) + __bfloat162float(*pr));
        }
    }
}

// Launches add_pos_embed_kernel: the 8-wide form when D and the pointers allow.
void add_pos_embed_cuda(struct cuda_backend * c, bf16 * tok, const bf16 * pos, int64_t B, int64_t gh, int64_t gw, int64_t grid,
                        int64_t D) {
    const int64_t rows = B * gh * gw;
    if (rows <= 0 || D <= 0) return;
    if (rows > 0x7fffffff || gh * gw > 0x7fffffff) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "add_pos_embed: %lld token rows exceed the kernel's int indexing", (long long)rows);
        return;
    }
    const bool vec = D % 8 == 0 && aligned_to(tok, 16) && aligned_to(pos, 16);
    const int64_t per = vec ? D / 8 : D;
    dim3 g((unsigned)((per + GR_THREADS - 1) / GR_THREADS), (unsigned)(rows < 65535 ? rows : 65535));
    if (vec) add_pos_embed_kernel<true><<<g, GR_THREADS, 0, c->stream>>>(tok, pos, (int)rows, (int)gh, (int)gw, grid, D);
    else add_pos_embed_kernel<false><<<g, GR_THREADS, 0, c->stream>>>(tok, pos, (int)rows, (int)gh, (int)gw, grid, D);
    LAUNCHED(c, "add_pos_embed_kernel");
}

// y[b, c, py·p + i, px·p + j] = tok[b, (py, px), (i, j, c)]; one thread per output element.
__global__ void unpatchify_kernel(bf16 * y, const bf16 * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p) {
    int64_t H = gh * p, W = gw * p, n = B * C * H * W;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t xx = o % W, yy = (o / W) % H, ch = (o / (W * H)) % C, b = o / (W * H * C);
        int64_t py = yy / p, i = yy % p, px = xx / p, j = xx % p;
        y[o] = tok[((b * gh + py) * gw + px) * p * p * C + (i * p + j) * C + ch];
    }
}

// Launches unpatchify_kernel.
void unpatchify_cuda(struct cuda_backend * c, bf16 * y, const bf16 * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p) {
    int64_t n = B * C * gh * p * gw * p;
    if (n <= 0) return;
    unpatchify_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, tok, B, C, gh, gw, p);
    LAUNCHED(c, "unpatchify_kernel");
}

// Nearest ×2: y[pl, i, j] = x[pl, i/2, j/2]; one thread per output element.
__global__ void upsample2x_kernel(bf16 * y, const bf16 * x, int64_t planes, int64_t H, int64_t W) {
    int64_t n = planes * 4 * H * W;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t j = o % (2 * W), i = (o / (2 * W)) % (2 * H), pl = o / (4 * H * W);
        y[o] = x[(pl * H + i / 2) * W + j / 2];
    }
}

// Launches upsample2x_kernel.
void upsample2x_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    int64_t n = B * C * 4 * H * W;
    if (n <= 0) return;
    upsample2x_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, x, B * C, H, W);
    LAUNCHED(c, "upsample2x_kernel");
}

// y[b, c, r] = x[b, r, c]: a 32×32 tile per block through shared memory (block 32×8, each thread 4 rows).
__global__ void transpose_kernel(bf16 * y, const bf16 * x, int64_t R, int64_t C) {
    __shared__ bf16 tile[32][33];
    int64_t b = blockIdx.z, r0 = (int64_t)blockIdx.y * 32, c0 = (int64_t)blockIdx.x * 32;
    const bf16 * xb = x + b * R * C;
    bf16 * yb = y + b * R * C;
    for (int k = threadIdx.y; k < 32; k += 8) {
        int64_t r = r0 + k, cc = c0 + threadIdx.x;
        if (r < R && cc < C) tile[k][threadIdx.x] = xb[r * C + cc];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < 32; k += 8) {
        int64_t cc = c0 + k, r = r0 + threadIdx.x;
        if (r < R && cc < C) yb[cc * R + r] = tile[threadIdx.x][k];
    }
}

// Launches transpose_kernel on a (column tiles, row tiles, batch) grid.
void transpose_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t B, int64_t R, int64_t C) {
    if (B * R * C <= 0) return;
    if (B > 65535 || (R + 31) / 32 > 65535) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "transpose: %lld × %lld rows exceed the grid", (long long)B, (long long)R);
        return;
    }
    dim3 grid((unsigned)((C + 31) / 32), (unsigned)((R + 31) / 32), (unsigned)B), block(32, 8);
    transpose_kernel<<<grid, block, 0, c->stream>>>(y, x, R, C);
    LAUNCHED(c, "transpose_kernel");
}

// ---- bias ---------------------------------------------------------------------------------------------------------------

// y[r, j] = bias[j] (0 when bias is NULL): the C operand of a GEMM with beta = 1.
__global__ void bias_rows_kernel(bf16 * y, const bf16 * bias, int64_t rows, int64_t N) {
    int64_t n = rows * N;
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x)
        y[o] = bias ? bias[o % N] : __float2bfloat16_rn(0.0f);
}

// Launches bias_rows_kernel.
void bias_rows_cuda(struct cuda_backend * c, bf16 * y, const bf16 * bias, int64_t rows, int64_t N) {
    if (rows * N <= 0) return;
    bias_rows_kernel<<<grid_for(rows * N, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, bias, rows, N);
    LAUNCHED(c, "bias_rows_kernel");
}

// y[b, c, p] += bias[c].
__global__ void bias_channels_kernel(bf16 * y, const bf16 * bias, int64_t C, int64_t HW, int64_t n) {
    for (int64_t o = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; o < n; o += (int64_t)gridDim.x * blockDim.x) {
        int64_t ch = (o / HW) % C;
        y[o] = __float2bfloat16_rn(__bfloat162float(y[o]) + __bfloat162float(bias[ch]));
    }
}

// Launches bias_channels_kernel (nothing without a bias).
void bias_channels_cuda(struct cuda_backend * c, bf16 * y, const bf16 * bias, int64_t B, int64_t C, int64_t HW) {
    int64_t n = B * C * HW;
    if (n <= 0 || !bias) return;
    bias_channels_kernel<<<grid_for(n, EW_THREADS), EW_THREADS, 0, c->stream>>>(y, bias, C, HW, n);
    LAUNCHED(c, "bias_channels_kernel");
}
