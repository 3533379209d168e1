/*
 * attention.cu — multi-head softmax attention over 1–3 segments of fused q|k|v rows (joint attention: image and
 * text tokens attend to both, without concatenating them), with causal and additive-bias options.
 *
 * Fast path (head width 64, the MMDiT, CLIP and T5): a flash-attention kernel, online softmax, no L×L matrix.
 * One block owns BM query rows of one (batch, head); each of its warps owns MT·16 rows (MT m16 tiles). The block walks
 * the key tiles (BN keys) of every segment in order; K and V tiles go through a 3-deep cp.async ring in shared
 * memory (zero-filled past a segment's end), so one barrier per tile suffices, rows stored with a 16-byte-chunk XOR
 * swizzle (chunk ^ row%8) so the ldmatrix reads are free of bank conflicts. Q fragments are loaded once into
 * registers; S = Q·Kᵀ and O += P·V use mma.sync m16n8k16 (bf16 in, f32 accumulate); P goes from the S accumulators
 * straight into A fragments (the accumulator layout of two n8 tiles is the A layout of one k16 step). Softmax
 * statistics (running max in log2 units, partial sums) are f32 per row, reduced across the 4 lanes that share a row;
 * without a bias the scale is folded into the exponent (one FFMA + EX2 per score). Masking (segment tail, causal,
 * bias) is applied only to tiles that need it. The output tile is staged in the Q buffer and written with 16-byte
 * stores. Variants (warps, MT, BN) are instantiated below and chosen per backend (backend_cuda_set_attention_variant).
 *
 * Hopper path (sm_90a builds on cc 9.0 devices): the same algorithm with the products on wgmma (see the kernel), and a
 * second wgmma kernel that overlaps the softmax of one key tile with the tensor-core products of its neighbours
 * (flash_attn_wgmma_ovl_kernel, variants 7–11), and a third in which two warpgroups take turns on the tensor cores,
 * the K/V stages published by mbarriers instead of a block-wide barrier per key tile (flash_attn_wgmma_pp_kernel,
 * variant 12). The first two also come with TMA loads (variants 13–18): one thread copies each K/V tile through a
 * tensor map per segment (fa_params.kv: [B][n][3·D] bf16, 64-column boxes with the 128-byte swizzle, rows past the
 * segment's end zero-filled) and arms the stage's mbarrier, which everyone waits on before the block barrier. The
 * default, 18, also keeps Q in registers as the A operand of S = Q·Kᵀ.
 *
 * General path (any head width, e.g. the VAE's 512, or misaligned buffers): per (batch, query segment, chunk of QB
 * query rows): cuBLAS computes the scaled scores of all heads for the chunk against every key segment into f32
 * scratch [NH, QB, L], a row kernel applies bias/causal and the softmax (f32, one block per row) into bf16
 * probabilities, cuBLAS multiplies them with V into f32 [NH, QB, HD], and a last kernel writes the bf16 output.
 * The scratch holds QB rows of scores, never L×L.
 */
#include <cuda.h>  // CUtensorMap (the driver function is fetched through the runtime: no libcuda link)
#include <math.h>

#include "backend/cuda/cuda-internal.h"

#define FA_HD      64
#define FA_SEG     3
#define LOG2E      1.4426950408889634f

struct fa_params {
    const bf16 * qkv[FA_SEG];
    bf16 *       out[FA_SEG];
    int          n[FA_SEG];
    int          nseg;
    int          qt0[FA_SEG + 1];  // first query tile of each segment (prefix sums of ⌈n/BM⌉)
    int          kt0[FA_SEG + 1];  // first key tile of each segment (prefix sums of ⌈n/BN⌉)
    int          koff[FA_SEG];     // first key of each segment in the concatenation
    int          L;                // keys in all segments
    int64_t      D;                // NH·64; rows are 3·D apart
    float        sl2;              // scale·log2(e)
    int          causal;
    const bf16 * bias;             // [NH, L, L] or NULL
    CUtensorMap  kv[FA_SEG];       // TMA variants: segment s's qkv as [B][n][3·D] bf16, boxes of BN rows × 64 columns
};

// ---- PTX helpers -------------------------------------------------------------------------------------------------------

// 16-byte asynchronous copy global → shared; zero-fills the destination when !valid.
__device__ __forceinline__ void cp_async16(void * smem, const void * gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Four 8×8 b16 matrices from shared memory (lane l gives the address of row l%8 of matrix l/8).
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void * smem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

// The same, each matrix transposed.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void * smem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

// c[16×8] += a[16×16] · b[16×8], bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats → one register of two bf16 (lo in the low half).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

// Offset (elements) of 16-byte chunk ch of row r in a swizzled [rows][64] bf16 tile.
__device__ __forceinline__ int swz(int r, int ch) { return r * FA_HD + ((ch ^ (r & 7)) << 3); }

// Issues the cp.async loads of key tile t (BN K and V rows of one (batch, head)) into sk / sv.
template <int BN, int NTHR>
__device__ __forceinline__ void load_kv(const fa_params & p, bf16 * sk, bf16 * sv, int t, int b, int h, int tid) {
    int s = 0;
    while (s + 1 < p.nseg && t >= p.kt0[s + 1]) s++;
    const int j0 = (t - p.kt0[s]) * BN, n = p.n[s];
    const int64_t ld = 3 * p.D;
    const bf16 * base = p.qkv[s] + (int64_t)b * n * ld + p.D + h * FA_HD;
#pragma unroll
    for (int i = tid; i < BN * 8; i += NTHR) {
        const int r = i >> 3, ch = i & 7, key = j0 + r;
        const bool ok = key < n;
        const bf16 * src = base + (int64_t)(ok ? key : 0) * ld + ch * 8;
        cp_async16(sk + swz(r, ch), src, ok);
        cp_async16(sv + swz(r, ch), src + p.D, ok);
    }
}

// Shared memory of one flash variant: Q tile, then NS K tiles, then NS V tiles (NS = FA_STAGES but for the overlapped kernel).
#define FA_STAGES 3
template <int WARPS, int MT, int BN, int NS = FA_STAGES> constexpr int fa_smem_bytes() {
    return (WARPS * MT * 16 + 2 * NS * BN) * FA_HD * 2;
}

// ---- pieces shared by the flash kernels ---------------------------------------------------------------------------------

// The query tile of this block (blockIdx.x counts the tiles of all query segments): its segment's output (NULL when
// that segment's output is not wanted), Q rows of this (batch, head), row count and first row.
struct fa_qtile {
    bf16 *       out;
    const bf16 * qbase;
    int          nq, q0;
};

template <int BM> __device__ __forceinline__ fa_qtile fa_query_tile(const fa_params & p, int b, int h) {
    int qs = 0;
    while (qs + 1 < p.nseg && (int)blockIdx.x >= p.qt0[qs + 1]) qs++;
    fa_qtile q;
    q.out   = p.out[qs];
    q.nq    = p.n[qs];
    q.q0    = ((int)blockIdx.x - p.qt0[qs]) * BM;
    q.qbase = p.qkv[qs] + (int64_t)b * q.nq * (3 * p.D) + h * FA_HD;
    return q;
}

// Issues the cp.async loads of the Q tile (BM rows of this block's (batch, head); zero past the segment's end), one
// commit group.
template <int BM, int NTHR>
__device__ __forceinline__ void fa_load_q(const fa_params & p, const fa_qtile & q, bf16 * sQ, int tid) {
    const int64_t ld = 3 * p.D;
    for (int i = tid; i < BM * 8; i += NTHR) {
        const int r = i >> 3, ch = i & 7, row = q.q0 + r;
        const bool ok = row < q.nq;
        cp_async16(sQ + swz(r, ch), q.qbase + (int64_t)(ok ? row : 0) * ld + ch * 8, ok);
    }
    cp_async_commit();
}

// Issues the loads of the Q tile (one commit group) and of the first PRE key tiles (one group each, into stages 0..PRE−1).
template <int BM, int BN, int NTHR, int PRE = FA_STAGES - 1>
__device__ __forceinline__ void fa_prologue(const fa_params & p, const fa_qtile & q, bf16 * sQ, bf16 * sK, bf16 * sV, int T, int b,
                                            int h, int tid) {
    fa_load_q<BM, NTHR>(p, q, sQ, tid);
#pragma unroll
    for (int st = 0; st < PRE; st++) {
        if (st < T) load_kv<BN, NTHR>(p, sK + st * BN * FA_HD, sV + st * BN * FA_HD, st, b, h, tid);
        cp_async_commit();
    }
}

// Key tile t: valid keys in it (< BN at a segment's end) and the index of its first key among all L keys.
struct fa_ktile {
    int kvalid, kglob;
};

template <int BN> __device__ __forceinline__ fa_ktile fa_key_tile(const fa_params & p, int t) {
    int sg = 0;
    while (sg + 1 < p.nseg && t >= p.kt0[sg + 1]) sg++;
    const int j0 = (t - p.kt0[sg]) * BN;
    return {p.n[sg] - j0, p.koff[sg] + j0};
}

// fa_key_tile kept up to date along the key loop (tile t = 0, 1, …) instead of searched per tile: the segment's key
// count and first key in registers, re-read only when the loop enters the next segment.
struct fa_kcursor {
    int sg, tend, n, koff, j0;  // segment of the current tile, first tile of the next segment, the segment's n and koff, first key
};

// The cursor at tile 0.
__device__ __forceinline__ fa_kcursor fa_kcursor_start(const fa_params & p) { return {0, p.kt0[1], p.n[0], p.koff[0], 0}; }

// Moves the cursor from tile t to tile t + 1.
template <int BN> __device__ __forceinline__ void fa_kcursor_next(const fa_params & p, fa_kcursor & k, int t) {
    k.j0 += BN;
    if (t + 1 == k.tend && k.sg + 1 < p.nseg) {
        k.sg++;
        k.tend = p.kt0[k.sg + 1], k.n = p.n[k.sg], k.koff = p.koff[k.sg], k.j0 = 0;
    }
}

// Masks (segment tail, causal) and the bias on one m16 tile of scores (accumulator layout; this thread's rows are
// qrow0 and qrow0 + 8 of the segment). The parameters come by value: read through a reference to the kernel's
// parameter block, nvcc schedules the loads differently and the measured mma.sync kernel changes (254 → 237 registers).
template <int NT>
__device__ __forceinline__ void fa_mask(float (&s)[NT][4], const bf16 * bias, int causal, float sl2, int L, int kvalid, int kglob,
                                        int qrow0, int nq, int h, int lane) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int col = nt * 8 + 2 * (lane & 3) + (e & 1), qrow = qrow0 + ((e >> 1) << 3);
            float v = s[nt][e];
            if (bias) v = v * sl2 + (qrow < nq ? __bfloat162float(bias[((int64_t)h * L + qrow) * L + kglob + col]) * LOG2E : 0.0f);
            if (col >= kvalid || (causal && kglob + col > qrow)) v = -INFINITY;
            s[nt][e] = v;
        }
}

// The max of this thread's row hh (0: its first row, 1: the row 8 below) of an m16 × 8·NT score tile, reduced over
// the 4 lanes that share the row.
template <int NT> __device__ __forceinline__ float fa_row_max(const float (&s)[NT][4], int hh) {
    float m = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) m = fmaxf(m, fmaxf(s[nt][2 * hh], s[nt][2 * hh + 1]));
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
    return fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
}

// P = 2^(s·esc − muse) in place for this thread's row hh of the tile; returns l plus the row's new partial sum.
template <int NT> __device__ __forceinline__ float fa_row_exp(float (&s)[NT][4], int hh, float esc, float muse, float l) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const float p0 = exp2f(fmaf(s[nt][2 * hh], esc, -muse)), p1 = exp2f(fmaf(s[nt][2 * hh + 1], esc, -muse));
        s[nt][2 * hh] = p0;
        s[nt][2 * hh + 1] = p1;
        l += p0 + p1;
    }
    return l;
}

// The online softmax's conditional rescaling (fa_softmax_lazy): a row's stored max moves only when the tile exceeds it
// by more than this (log2 units).
#ifndef FA_SLACK
#define FA_SLACK 8.0f
#endif

// fa_softmax with conditional rescaling (FlashAttention-4's): the max is raised (and O and the sums rescaled) only when
// a row of the warp would exceed its stored max by more than FA_SLACK; otherwise the exponents keep the stale max, so
// P ≤ 2^FA_SLACK, which neither the f32 sums nor P in bf16 mind, and the final division by the sum is exact as before.
// After the first key tiles the maxima rarely move that much, so most tiles skip O's 32 multiplies and two
// exponentials per thread, about a tenth of a 64-key tile's instructions.
template <int NT>
__device__ __forceinline__ void fa_softmax_lazy(float (&s)[NT][4], float (&o)[8][4], float (&mrow)[2], float (&lrow)[2], float esc) {
    const float mx[2] = {fa_row_max<NT>(s, 0) * esc, fa_row_max<NT>(s, 1) * esc};
    if (__any_sync(0xffffffffu, mx[0] > mrow[0] + FA_SLACK || mx[1] > mrow[1] + FA_SLACK)) {  // −∞ + slack is −∞
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float mnew = fmaxf(mrow[hh], mx[hh]), corr = exp2f(mrow[hh] - (mnew == -INFINITY ? 0.0f : mnew));
            mrow[hh] = mnew;
            lrow[hh] *= corr;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                o[nt][2 * hh] *= corr;
                o[nt][2 * hh + 1] *= corr;
            }
        }
    }
#pragma unroll
    for (int hh = 0; hh < 2; hh++) lrow[hh] = fa_row_exp<NT>(s, hh, esc, mrow[hh] == -INFINITY ? 0.0f : mrow[hh], lrow[hh]);
}

// Online softmax of one m16 tile: running max per row (log2 units), rescale O and the partial sums, S becomes
// P = 2^(s·esc − max). Every tile rescales, one row at a time, the order the mma.sync kernels were tuned with (the
// wgmma kernel uses fa_softmax_lazy).
template <int NT>
__device__ __forceinline__ void fa_softmax(float (&s)[NT][4], float (&o)[8][4], float (&mrow)[2], float (&lrow)[2], float esc) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const float mx = fa_row_max<NT>(s, hh);
        const float mnew = fmaxf(mrow[hh], mx * esc), muse = mnew == -INFINITY ? 0.0f : mnew;
        const float corr = exp2f(mrow[hh] - muse);
        mrow[hh] = mnew;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            o[nt][2 * hh] *= corr;
            o[nt][2 * hh + 1] *= corr;
        }
        lrow[hh] = fa_row_exp<NT>(s, hh, esc, muse, lrow[hh] * corr);
    }
}


// Normalises one m16 tile of O and stages it as bf16 in the (swizzled) Q buffer; r0 = this thread's first row there.
__device__ __forceinline__ void fa_stage_out(bf16 * sQ, const float (&o)[8][4], const float (&lrow)[2], int r0, int lane) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float l = lrow[hh];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        const int r = r0 + hh * 8;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
            *(uint32_t *)(sQ + swz(r, nt) + 2 * (lane & 3)) = pack_bf16(o[nt][2 * hh] * inv, o[nt][2 * hh + 1] * inv);
    }
}

// Writes the staged BM-row output tile with 16-byte stores (rows past the segment's end are skipped).
template <int BM, int NTHR>
__device__ __forceinline__ void fa_store_out(const fa_params & p, const fa_qtile & q, const bf16 * sQ, int b, int h, int tid) {
    bf16 * obase = q.out + (int64_t)b * q.nq * p.D + h * FA_HD;
    for (int i = tid; i < BM * 8; i += NTHR) {
        const int r = i >> 3, ch = i & 7, row = q.q0 + r;
        if (row < q.nq) *(uint4 *)(obase + (int64_t)row * p.D + ch * 8) = *(const uint4 *)(sQ + swz(r, ch));
    }
}

// ---- flash kernel ---------------------------------------------------------------------------------------------------------

// One block: BM = WARPS·MT·16 query rows of one (query tile, head, batch); each warp owns MT·16 rows; key tiles of BN
// keys in a FA_STAGES-deep cp.async ring (one barrier per tile). See the top of the file.
// QREG: Q fragments live in registers for the whole block (else they are re-read from shared memory per tile).
template <int WARPS, int MT, int BN, int MINB, bool QREG>
__global__ void __launch_bounds__(WARPS * 32, MINB) flash_attn_kernel(const fa_params p) {
    constexpr int BM = WARPS * MT * 16, NTHR = WARPS * 32, NT = BN / 8;
    extern __shared__ __align__(128) bf16 smem[];
    bf16 * sQ = smem, * sK = smem + BM * FA_HD, * sV = sK + FA_STAGES * BN * FA_HD;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int h = blockIdx.y, b = blockIdx.z;
    const fa_qtile q = fa_query_tile<BM>(p, b, h);
    if (!q.out) return;
    const int nq = q.nq, q0 = q.q0, T = p.kt0[p.nseg];
    fa_prologue<BM, BN, NTHR>(p, q, sQ, sK, sV, T, b, h, tid);
    cp_async_wait<FA_STAGES - 1>();  // Q has landed
    __syncthreads();

    uint32_t qf[QREG ? MT : 1][4][4];
    if (QREG)
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int ks = 0; ks < 4; ks++) {
                const int r = warp * MT * 16 + mt * 16 + (lane & 15);
                ldmatrix_x4(qf[QREG ? mt : 0][ks], sQ + swz(r, ks * 2 + (lane >> 4)));
            }
    float o[MT][8][4], mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[mt][nt][e] = 0.0f;
        mrow[mt][0] = mrow[mt][1] = -INFINITY;
        lrow[mt][0] = lrow[mt][1] = 0.0f;
    }
    // without a bias, scores stay unscaled until the exponent: 2^(s·sl2 − m·sl2) is one FFMA + EX2 per score
    const float esc = p.bias ? 1.0f : p.sl2;

    for (int t = 0; t < T; t++) {
        cp_async_wait<FA_STAGES - 2>();  // tile t has landed (this thread's copies) ...
        __syncthreads();                 // ... everyone's, and every warp is done with tile t − 1
        if (t + FA_STAGES - 1 < T) {
            const int nb = (t + FA_STAGES - 1) % FA_STAGES;
            load_kv<BN, NTHR>(p, sK + nb * BN * FA_HD, sV + nb * BN * FA_HD, t + FA_STAGES - 1, b, h, tid);
        }
        cp_async_commit();
        const bf16 * ksm = sK + (t % FA_STAGES) * BN * FA_HD, * vsm = sV + (t % FA_STAGES) * BN * FA_HD;

        // S = Q·Kᵀ for this warp's MT·16 rows × BN keys
        float s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[mt][nt][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < 4; ks++) {
            uint32_t qt[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (QREG) {
#pragma unroll
                    for (int e = 0; e < 4; e++) qt[mt][e] = qf[QREG ? mt : 0][ks][e];
                } else {
                    ldmatrix_x4(qt[mt], sQ + swz(warp * MT * 16 + mt * 16 + (lane & 15), ks * 2 + (lane >> 4)));
                }
            }
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t kf[4];
                const int r = np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(kf, ksm + swz(r, ks * 2 + ((lane >> 3) & 1)));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(s[mt][2 * np], qt[mt], kf[0], kf[1]);
                    mma_bf16(s[mt][2 * np + 1], qt[mt], kf[2], kf[3]);
                }
            }
        }

        // masks (segment tail, causal) and the bias, only on the tiles that need them
        const fa_ktile kt = fa_key_tile<BN>(p, t);
        const int kvalid = kt.kvalid, kglob = kt.kglob;
        if (kvalid < BN || p.causal || p.bias)
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
                fa_mask<NT>(s[mt], p.bias, p.causal, p.sl2, p.L, kvalid, kglob, q0 + warp * MT * 16 + mt * 16 + (lane >> 2), nq, h, lane);

#pragma unroll
        for (int mt = 0; mt < MT; mt++) fa_softmax<NT>(s[mt], o[mt], mrow[mt], lrow[mt], esc);

        // O += P·V
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                pa[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                pa[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                pa[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < 4; dp++) {
                uint32_t vf[4];
                const int r = kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3);
                ldmatrix_x4_trans(vf, vsm + swz(r, dp * 2 + (lane >> 4)));
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(o[mt][2 * dp], pa[mt], vf[0], vf[1]);
                    mma_bf16(o[mt][2 * dp + 1], pa[mt], vf[2], vf[3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    // normalise, stage the bf16 tile in sQ (each warp reads and writes only its own rows of it), 16-byte stores
#pragma unroll
    for (int mt = 0; mt < MT; mt++) fa_stage_out(sQ, o[mt], lrow[mt], warp * MT * 16 + mt * 16 + (lane >> 2), lane);
    __syncthreads();
    fa_store_out<BM, NTHR>(p, q, sQ, b, h, tid);
}

// ---- Hopper flash kernel (wgmma) ---------------------------------------------------------------------------------------
//
// The same algorithm as flash_attn_kernel, with the products on the warpgroup MMA of sm_90a: each warpgroup (4 warps)
// owns 64 query rows; S = Q·Kᵀ is wgmma.m64nBNk16 with Q and K read from shared memory through descriptors, and O += P·V
// is wgmma.m64n64k16 with P from registers (the S accumulator layout converted to bf16 pairs is the A-fragment layout)
// and V read N-major (transposed by the unit). The tiles keep the mma.sync kernel's shared-memory layout: rows of 64
// bf16 = 128 bytes, 16-byte chunk c of row r stored at chunk c ^ (r % 8), which is exactly the 128-byte swizzle of the
// wgmma descriptors when every tile starts on a 1024-byte boundary. Loads stay cp.async (3-stage ring); a proxy fence
// makes them visible to the tensor cores. Compiled only for sm_90a; the host offers these variants on cc 9.0 alone.
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define SD3Q_WGMMA_DEVICE 1

// Shared-memory matrix descriptor of a [rows][64] bf16 tile with the 128-byte swizzle: 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t wg_desc(const void * smem) {
    const uint64_t a = (uint64_t)__cvta_generic_to_shared(smem);
    return ((a & 0x3FFFF) >> 4) | (1ull << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed wgmma groups are still pending (groups complete in order).
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// Orders this thread's completed generic-proxy writes to shared memory (cp.async) before later async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// Initialises an mbarrier (shared-memory address a) expecting n arrivals per phase.
__device__ __forceinline__ void mbar_init(uint32_t a, int n) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(a), "r"(n) : "memory");
}

// One arrival (release semantics) on an mbarrier.
__device__ __forceinline__ void mbar_arrive(uint32_t a) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(a) : "memory");
}

// An arrival on an mbarrier made when all of this thread's earlier cp.async have completed (counts against the
// expected arrivals: .noinc).
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t a) {
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(a) : "memory");
}

// Waits (acquire semantics) until the phase of parity par of an mbarrier has completed.
__device__ __forceinline__ void mbar_wait(uint32_t a, uint32_t par) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(a), "r"(par)
                     : "memory");
    } while (!done);
}

// Announces tx bytes that the async proxy (TMA) will complete on an mbarrier, with this thread's arrival.
__device__ __forceinline__ void mbar_expect_tx(uint32_t a, uint32_t tx) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(a), "r"(tx) : "memory");
}

// Makes initialised mbarriers visible to the async proxy (TMA completes transactions on them).
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }

// TMA: copies the box at coordinates (c0, c1, c2) of the tensor map into shared memory at dst, completing its bytes on
// the mbarrier at bar. The map must live in parameter (__grid_constant__), constant or global memory.
__device__ __forceinline__ void tma_load_3d(void * dst, const CUtensorMap * map, int c0, int c1, int c2, uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
                 ::"r"((uint32_t)__cvta_generic_to_shared(dst)), "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
}


// d[64×64] (f32, the m64n64 accumulator fragment) {=, +=} A[64×16] · B[16×64]: A and B K-major in shared memory.
__device__ __forceinline__ void wg_ss_n64(float * d, uint64_t da, uint64_t db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db), "r"(accumulate));
}

// d[64×128] (f32, the m64n128 accumulator fragment) {=, +=} A[64×16] · B[16×128]: A and B K-major in shared memory.
__device__ __forceinline__ void wg_ss_n128(float * d, uint64_t da, uint64_t db, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db), "r"(accumulate));
}

// d[64×64] = A[64×16] · B[16×64] (K-major in shared memory), d written only: S needs no zeroing and its old values stay
// dead (with "+f" they would be kept alive until the next product, 64 registers more at 128 keys while P·V is issued).
__device__ __forceinline__ void wg_ss_n64_z(float * d, uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31])
                 : "l"(da), "l"(db), "r"(0));
}

// d[64×128] = A[64×16] · B[16×128] (K-major in shared memory), d written only: S needs no zeroing and its old values stay
// dead (with "+f" they would be kept alive until the next product, 64 registers more at 128 keys while P·V is issued).
__device__ __forceinline__ void wg_ss_n128_z(float * d, uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]), "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
                 : "l"(da), "l"(db), "r"(0));
}

// d[64×64] {=, +=} A[64×16] · B[16×64]: A in registers (the mma.sync A-fragment layout), B in shared memory N-major
// (TB = 1: V in P·V) or K-major (TB = 0: K in S = Q·Kᵀ).
template <int TB> __device__ __forceinline__ void wg_rs_n64(float * d, const uint32_t a[4], uint64_t db, int accumulate = 1) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(TB));
}

// S = Q·Kᵀ as wg_scores with Q from registers (qa: this warp's A fragments of the 4 k16 steps), so that the tensor
// cores read only K from shared memory: with both operands there, each m64n64k16 step reads 4 KiB in the 32 cycles it
// takes at the peak rate, all of an SM's 128 bytes per cycle of shared-memory bandwidth.
template <int BN> __device__ __forceinline__ void wg_scores_rs(float * s, const uint32_t (&qa)[4][4], const bf16 * k) {
    static_assert(BN == 64, "64-key tiles only");
    const uint64_t dk = wg_desc(k);
#pragma unroll
    for (int ks = 0; ks < 4; ks++) wg_rs_n64<0>(s, qa[ks], dk + 2 * ks, ks > 0);
}

// S (64 rows × BN keys of this warpgroup) = Q·Kᵀ over the head width (4 k16 steps, 32 bytes apart in a swizzled row).
template <int BN> __device__ __forceinline__ void wg_scores(float * s, const bf16 * q, const bf16 * k) {
    const uint64_t dq = wg_desc(q), dk = wg_desc(k);
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        if (BN == 64) wg_ss_n64(s, dq + 2 * ks, dk + 2 * ks, ks > 0);
        else wg_ss_n128(s, dq + 2 * ks, dk + 2 * ks, ks > 0);
    }
}

// wg_scores with the first k16 step writing S without reading it (wg_ss_n*_z).
template <int BN> __device__ __forceinline__ void wg_scores_z(float * s, const bf16 * q, const bf16 * k) {
    const uint64_t dq = wg_desc(q), dk = wg_desc(k);
    if (BN == 64) wg_ss_n64_z(s, dq, dk);
    else wg_ss_n128_z(s, dq, dk);
#pragma unroll
    for (int ks = 1; ks < 4; ks++) {
        if (BN == 64) wg_ss_n64(s, dq + 2 * ks, dk + 2 * ks, 1);
        else wg_ss_n128(s, dq + 2 * ks, dk + 2 * ks, 1);
    }
}
#endif

#if defined(SD3Q_WGMMA_DEVICE)
// Zeroes a warpgroup thread's O accumulator (one m64 row slice: 8 n8 tiles) and starts its online-softmax state.
__device__ __forceinline__ void fa_wg_acc_init(float (&o)[8][4], float (&mrow)[2], float (&lrow)[2]) {
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[nt][e] = 0.0f;
    mrow[0] = mrow[1] = -INFINITY;
    lrow[0] = lrow[1] = 0.0f;
}

// Epilogue of the wgmma kernels: normalise O, stage each warpgroup's 64 rows as bf16 in sQ, then 16-byte stores.
template <int BM, int NTHR>
__device__ __forceinline__ void fa_wg_finish(const fa_params & p, const fa_qtile & q, bf16 * sQ, const float (&o)[8][4],
                                             const float (&lrow)[2], int rbase, int b, int h, int tid) {
    fa_stage_out(sQ, o, lrow, rbase, tid & 31);
    __syncthreads();
    fa_store_out<BM, NTHR>(p, q, sQ, b, h, tid);
}
#endif

#if defined(SD3Q_WGMMA_DEVICE)
// Issues the TMA loads of key tile t (BN K rows and BN V rows of one (batch, head), zero past the segment's end) into
// sk / sv with the 128-byte swizzle (the layout of swz and the descriptors), and arms the stage's mbarrier for their bytes.
template <int BN>
__device__ __forceinline__ void fa_tma_kv(const fa_params & p, int t, bf16 * sk, bf16 * sv, uint32_t bar, int b, int h) {
    int s = 0;
    while (s + 1 < p.nseg && t >= p.kt0[s + 1]) s++;
    const int j0 = (t - p.kt0[s]) * BN, col = (int)p.D + h * FA_HD;
    mbar_expect_tx(bar, 2 * BN * FA_HD * (int)sizeof(bf16));
    tma_load_3d(sk, &p.kv[s], col, j0, b, bar);
    tma_load_3d(sv, &p.kv[s], col + (int)p.D, j0, b, bar);
}

// Issues the TMA loads of key tile u into its stage, u % NS.
template <int BN, int NS>
__device__ __forceinline__ void fa_tma_tile(const fa_params & p, int u, bf16 * sK, bf16 * sV, uint32_t bar, int b, int h) {
    const int st = u % NS;
    fa_tma_kv<BN>(p, u, sK + st * BN * FA_HD, sV + st * BN * FA_HD, bar + st * 8, b, h);
}

// The TMA variants' start: thread 0 initialises the NS "full" mbarriers, everyone loads Q (cp.async) and waits for it,
// then thread 0 issues key tiles 0 .. PRE − 1.
template <int BM, int BN, int NTHR, int NS, int PRE>
__device__ __forceinline__ void fa_tma_prologue(const fa_params & p, const fa_qtile & q, bf16 * sQ, bf16 * sK, bf16 * sV, uint32_t bar,
                                                int T, int b, int h, int tid) {
    if (tid == 0) {
        for (int st = 0; st < NS; st++) mbar_init(bar + st * 8, 1);
        fence_mbar_init();
    }
    fa_load_q<BM, NTHR>(p, q, sQ, tid);
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // Q landed for everyone; the mbarriers are initialised
    static_assert(PRE < NS, "tile u < NS goes to stage u");
    if (tid == 0)
        for (int u = 0; u < PRE && u < T; u++) fa_tma_kv<BN>(p, u, sK + u * BN * FA_HD, sV + u * BN * FA_HD, bar + u * 8, b, h);
}
#endif

// One block: WG warpgroups × 64 query rows of one (query tile, head, batch); key tiles of BN keys in an NS-stage ring.
// TMA: the K/V tiles are loaded by one thread through the tensor maps (fa_tma_kv) and published by one mbarrier per
// stage, instead of cp.async copies issued by every thread (≈ 240 of the ≈ 690 instructions per warp and key tile at
// 1024², which the softmax's warps then cannot issue).
// QRS (64-key tiles): Q is loaded once into registers as the A operand of S = Q·Kᵀ (wg_scores_rs) instead of being read
// from shared memory by every S product.
template <int WG, int BN, int MINB, bool TMA, int NS, bool QRS = false>
__global__ void __launch_bounds__(WG * 128, MINB) flash_attn_wgmma_kernel(const __grid_constant__ fa_params p) {
#if defined(SD3Q_WGMMA_DEVICE)
    constexpr int BM = WG * 64, NTHR = WG * 128, NT = BN / 8;
    static_assert(TMA || NS == FA_STAGES, "the cp.async ring has FA_STAGES stages");
    extern __shared__ __align__(1024) bf16 smem_wg[];
    bf16 * sQ = smem_wg, * sK = smem_wg + BM * FA_HD, * sV = sK + NS * BN * FA_HD;
    const uint32_t bar = (uint32_t)__cvta_generic_to_shared(sV + NS * BN * FA_HD);  // TMA: NS "full" mbarriers
    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int h = blockIdx.y, b = blockIdx.z;
    if (tid == 0 && (__cvta_generic_to_shared(smem_wg) & 1023)) __trap();  // the descriptors' swizzle needs 1024-byte tiles
    const fa_qtile q = fa_query_tile<BM>(p, b, h);
    if (!q.out) return;
    const int nq = q.nq, q0 = q.q0, T = p.kt0[p.nseg];
    if (TMA) fa_tma_prologue<BM, BN, NTHR, NS, NS - 1>(p, q, sQ, sK, sV, bar, T, b, h, tid);
    else fa_prologue<BM, BN, NTHR>(p, q, sQ, sK, sV, T, b, h, tid);
    const bf16 * qwg = sQ + wg * 64 * FA_HD;  // this warpgroup's 64 rows (8 KiB: stays 1024-byte aligned)
    uint32_t qa[QRS ? 4 : 1][4];              // QRS: this warp's 16 Q rows as A fragments, k16 step ks
    uint32_t sink = 0;
    if (QRS)
#pragma unroll
        for (int ks = 0; ks < 4; ks++) ldmatrix_x4(qa[QRS ? ks : 0], sQ + swz(wg * 64 + warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
    float o[8][4], mrow[2], lrow[2];
    fa_wg_acc_init(o, mrow, lrow);
    const float esc = p.bias ? 1.0f : p.sl2;
    const int rbase = wg * 64 + warp * 16 + (lane >> 2);  // this thread's rows in the tile: rbase, rbase + 8

    fa_kcursor kc = fa_kcursor_start(p);
    for (int t = 0; t < T; t++) {
        if (TMA) {
            mbar_wait(bar + (t % NS) * 8, (t / NS) & 1);  // tile t landed (use t / NS of its stage) ...
            __syncthreads();  // ... and every warpgroup is done with tile t − 1, whose stage the next load refills
            if (tid == 0 && t + NS - 1 < T) fa_tma_tile<BN, NS>(p, t + NS - 1, sK, sV, bar, b, h);
        } else {
            cp_async_wait<FA_STAGES - 2>();  // tile t (and Q) landed for this thread's copies ...
            fence_proxy_async();             // ... visible to the tensor cores ...
            __syncthreads();                 // ... for everyone's copies; every warpgroup is done with tile t − 1
            if (t + FA_STAGES - 1 < T) {
                const int nb = (t + FA_STAGES - 1) % FA_STAGES;
                load_kv<BN, NTHR>(p, sK + nb * BN * FA_HD, sV + nb * BN * FA_HD, t + FA_STAGES - 1, b, h, tid);
            }
            cp_async_commit();
        }
        const bf16 * ksm = sK + (t % NS) * BN * FA_HD, * vsm = sV + (t % NS) * BN * FA_HD;

        float s[NT][4];
        wg_fence();
        if constexpr (QRS) wg_scores_rs<BN>(&s[0][0], qa, ksm);
        else wg_scores<BN>(&s[0][0], qwg, ksm);
        wg_commit();
        wg_wait0();

        const int kvalid = kc.n - kc.j0, kglob = kc.koff + kc.j0;
        fa_kcursor_next<BN>(p, kc, t);
        if (kvalid < BN || p.causal || p.bias) fa_mask<NT>(s, p.bias, p.causal, p.sl2, p.L, kvalid, kglob, q0 + rbase, nq, h, lane);
        fa_softmax_lazy<NT>(s, o, mrow, lrow, esc);

        // O += P·V: k16 step kk takes keys 16kk.. (two n8 tiles of S); V rows of those keys start 2048 bytes apart
        uint32_t pa[NT / 2][4];
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) {
            pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
        const uint64_t dv = wg_desc(vsm);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < NT / 2; kk++) wg_rs_n64<1>(&o[0][0], pa[kk], dv + (uint64_t)kk * (2048 >> 4));
        wg_commit();
        wg_wait0();
        // ptxas (CUDA 13.0) otherwise gives P the registers of qa once the last S wgmma reading them is issued, so every
        // tile after the first multiplied K by P (test-cuda-ops-gpu caught it); a use of qa after P·V keeps them live
        // (4 LOP3 per tile; the test at the end never traps: L > 0)
        if constexpr (QRS)
#pragma unroll
            for (int ks = 0; ks < 4; ks++) sink ^= qa[ks][0] ^ qa[ks][1] ^ qa[ks][2] ^ qa[ks][3];
    }
    if (!TMA) cp_async_wait<0>();
    if (QRS && sink == 0x7fc00001u && p.L < 0) __trap();

    fa_wg_finish<BM, NTHR>(p, q, sQ, o, lrow, rbase, b, h, tid);
#else
    (void)p;
    __trap();  // not built for sm_90a: the host never launches it
#endif
}

// ---- Hopper flash kernel with the softmax overlapped (wgmma, FlashAttention-3's intra-warpgroup pipelining) ------------
//
// flash_attn_wgmma_kernel waits for each product before the softmax, so inside a warpgroup the tensor cores and the
// softmax never work at the same time. This kernel keeps two S accumulator sets: at key tile t it issues
// S(t+1) = Q·K(t+1)ᵀ, runs the softmax of S(t) while the tensor cores compute S(t+1), and issues O += P(t)·V(t)
// without waiting for it (tile t + 1 does). The softmax writes P to registers of its own, never into an S set; the
// masks change S(t) in place, but only once S(t) has landed. Two orderings (OVPV):
//   false: tile t waits for S(t) and for P(t−1)·V(t−1) before its softmax, which overlaps S(t+1);
//   true:  tile t waits for S(t) alone; its softmax also overlaps P(t−1)·V(t−1), which still reads the P registers,
//          so the exponentials go back into S(t) (f32, in place) and become P (bf16) once that product has completed,
//          as in FlashAttention-3. (A second P register set instead did not work: ptxas gave both sets the same
//          registers and moved the wait for P(t−1)·V(t−1) in front of the softmax.) Needs no more registers, but at
//          128 keys the S sets, O and P leave too few for the wait to sit after the exponentials (spills), so only
//          64-key tiles use it.
// The key loop is unrolled by two so the S sets swap by compile-time indexing. ptxas (CUDA 13.0) serialised all
// of the kernel's wgmmas (C7515) when S(t+1) was issued under a run-time condition (t + 1 < T), and again with the last
// tile peeled off but an empty commit group standing in for its S, so the first and the last tile are separate
// instantiations (FIRST, LAST) with constant wait counts and no empty groups.
// Loads: the cp.async ring has NS = FA_OVL_STAGES stages, one barrier per tile as before. When tile t + NS − 2 starts
// loading (tile t), tiles t − 1 (V still read by P(t−1)·V(t−1)), t and t + 1 are in use, so 4 is the least that works;
// the fifth stage keeps the loads two tiles ahead, like the other kernels' 3-stage ring.
#define FA_OVL_STAGES 5

#if defined(SD3Q_WGMMA_DEVICE)
// First half of the online softmax of this thread's two rows of an m64 tile (S only read): the new running maxima, the
// exponent offsets muse and the factors corr that rescale O and the partial sums (fa_softmax's arithmetic).
template <int NT>
__device__ __forceinline__ void fa_ovl_max(const float (&s)[NT][4], float (&mrow)[2], float (&muse)[2], float (&corr)[2], float esc) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        const float mx = fa_row_max<NT>(s, hh);
        const float mnew = fmaxf(mrow[hh], mx * esc), mu = mnew == -INFINITY ? 0.0f : mnew;
        corr[hh] = exp2f(mrow[hh] - mu);
        mrow[hh] = mnew;
        muse[hh] = mu;
    }
}

// Second half: P = 2^(s·esc − muse) and the partial sums rescaled by corr plus this tile's (summed in f32 before
// rounding, like fa_softmax). P goes as bf16 straight into the A fragments of the P·V wgmma (k16 step kk = n8 tiles 2kk
// and 2kk + 1), or with INPLACE as f32 back into s (fa_ovl_pack converts it later).
template <int NT, bool INPLACE>
__device__ __forceinline__ void fa_ovl_exp(float (&s)[NT][4], uint32_t (&pa)[NT / 2][4], float (&lrow)[2], const float (&muse)[2],
                                           const float (&corr)[2], float esc) {
#pragma unroll
    for (int hh = 0; hh < 2; hh++) {
        float l = lrow[hh] * corr[hh];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const float p0 = exp2f(fmaf(s[nt][2 * hh], esc, -muse[hh])), p1 = exp2f(fmaf(s[nt][2 * hh + 1], esc, -muse[hh]));
            l += p0 + p1;
            if (INPLACE) {
                s[nt][2 * hh]     = p0;
                s[nt][2 * hh + 1] = p1;
            } else {
                pa[nt >> 1][((nt & 1) << 1) + hh] = pack_bf16(p0, p1);
            }
        }
        lrow[hh] = l;
    }
}

// P (f32, left in s by fa_ovl_exp<NT, true>) → the bf16 A fragments of the P·V wgmma.
template <int NT> __device__ __forceinline__ void fa_ovl_pack(const float (&s)[NT][4], uint32_t (&pa)[NT / 2][4]) {
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        pa[nt >> 1][(nt & 1) << 1]       = pack_bf16(s[nt][0], s[nt][1]);
        pa[nt >> 1][((nt & 1) << 1) + 1] = pack_bf16(s[nt][2], s[nt][3]);
    }
}

// Key tile t of flash_attn_wgmma_ovl_kernel. On entry this warpgroup's pending wgmma groups are, oldest first, S(t)
// into sc and (unless FIRST) O += P(t−1)·V(t−1); it issues S(t+1) into sn (unless LAST), runs the softmax of S(t) into
// pa and issues O += P(t)·V(t).
template <int BN, int NS, int NTHR, bool OVPV, bool TMA, bool FIRST, bool LAST>
__device__ __forceinline__ void fa_ovl_tile(const fa_params & p, int t, int T, float (&sc)[BN / 8][4], float (&sn)[BN / 8][4],
                                            uint32_t (&pa)[BN / 16][4], float (&o)[8][4], float (&mrow)[2], float (&lrow)[2], bf16 * sK,
                                            bf16 * sV, uint32_t bar, float esc, int q0, int nq, int rbase, int b, int h, int tid,
                                            int lane) {
    constexpr int NT = BN / 8, WG = NTHR / 128;
    if (!LAST) {
        if (TMA) {
            mbar_wait(bar + ((t + 1) % NS) * 8, ((t + 1) / NS) & 1);  // tile t + 1 landed ...
            __syncthreads();  // ... and stage (t − 2) % NS is free (as below)
            if (tid == 0 && t + NS - 2 < T) fa_tma_tile<BN, NS>(p, t + NS - 2, sK, sV, bar, b, h);
        } else {
            cp_async_wait<NS - 4>();  // tile t + 1 landed for this thread's copies (the NS − 4 newer groups may still fly) ...
            fence_proxy_async();      // ... visible to the tensor cores ...
            __syncthreads();          // ... for everyone's; every warpgroup has also completed S(t−1) and P(t−2)·V(t−2) (its
                                      // waits in tile t − 1), so stage (t − 2) % NS is free for tile t + NS − 2
            if (t + NS - 2 < T) {
                const int nb = (t + NS - 2) % NS;
                // an opaque copy of tid: without it load_kv's per-thread offsets are hoisted out of the key loop and held
                // in registers through the softmax, where the two S sets leave none to spare (spills at 128 keys)
                int ltid = tid;
                asm volatile("" : "+r"(ltid));
                load_kv<BN, NTHR>(p, sK + nb * BN * FA_HD, sV + nb * BN * FA_HD, t + NS - 2, b, h, ltid);
            }
            cp_async_commit();
        }
        // this warpgroup's Q rows (the Q tile lies just below the K ring), recomputed from %tid.x per tile for the same
        // reason: a descriptor kept live across the loop is what spilled
        unsigned tx;
        asm volatile("mov.u32 %0, %%tid.x;" : "=r"(tx));
        const bf16 * qwg = sK - (WG - (int)(tx >> 7)) * 64 * FA_HD;
        wg_fence();  // sn was read by the softmax of tile t − 1
        wg_scores_z<BN>(&sn[0][0], qwg, sK + ((t + 1) % NS) * BN * FA_HD);
        wg_commit();
    }
    if (OVPV) wg_wait<!FIRST + !LAST>();  // S(t) has landed; P(t−1)·V(t−1) and S(t+1) may still run
    else wg_wait<!LAST>();                // S(t) and P(t−1)·V(t−1) have landed (pa and O are free); S(t+1) may still run

    const fa_ktile kt = fa_key_tile<BN>(p, t);
    if (kt.kvalid < BN || p.causal || p.bias) fa_mask<NT>(sc, p.bias, p.causal, p.sl2, p.L, kt.kvalid, kt.kglob, q0 + rbase, nq, h, lane);
    float muse[2], corr[2];
    fa_ovl_max<NT>(sc, mrow, muse, corr, esc);
    fa_ovl_exp<NT, OVPV>(sc, pa, lrow, muse, corr, esc);
    if (OVPV) {
        // P(t−1)·V(t−1) done: pa and O are free. ptxas moves a plain wait_group to the top of its basic block, in front
        // of the softmax, which would undo the overlap; a branch on the softmax's result keeps it after. Both arms are
        // correct (lrow ≥ 0 unless the scores hold NaNs, and then the other arm waits for everything).
        if (!FIRST) {
            if (lrow[0] >= 0.0f) wg_wait<!LAST>();
            else wg_wait<0>();
        }
        fa_ovl_pack<NT>(sc, pa);
    }
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
    }

    // O += P·V: k16 step kk takes keys 16kk.. ; V rows of those keys start 2048 bytes apart
    const uint64_t dv = wg_desc(sV + (t % NS) * BN * FA_HD);
    wg_fence();  // O and pa were written above
#pragma unroll
    for (int kk = 0; kk < NT / 2; kk++) wg_rs_n64<1>(&o[0][0], pa[kk], dv + (uint64_t)kk * (2048 >> 4));
    wg_commit();
}
#endif

// One block: WG warpgroups × 64 query rows of one (query tile, head, batch); key tiles of BN keys in an NS-stage ring;
// OVPV: the softmax also overlaps the previous tile's P·V (see above).
template <int WG, int BN, int MINB, bool OVPV, int NS, bool TMA>
__global__ void __launch_bounds__(WG * 128, MINB) flash_attn_wgmma_ovl_kernel(const __grid_constant__ fa_params p) {
#if defined(SD3Q_WGMMA_DEVICE)
    static_assert(NS >= 4, "tiles t − 1 .. t + 1 are in use while tile t + NS − 2 loads");
    constexpr int BM = WG * 64, NTHR = WG * 128, NT = BN / 8;
    extern __shared__ __align__(1024) bf16 smem_wg[];
    bf16 * sQ = smem_wg, * sK = smem_wg + BM * FA_HD, * sV = sK + NS * BN * FA_HD;
    const uint32_t bar = (uint32_t)__cvta_generic_to_shared(sV + NS * BN * FA_HD);  // TMA: NS "full" mbarriers
    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int h = blockIdx.y, b = blockIdx.z;
    if (tid == 0 && (__cvta_generic_to_shared(smem_wg) & 1023)) __trap();  // the descriptors' swizzle needs 1024-byte tiles
    const fa_qtile q = fa_query_tile<BM>(p, b, h);
    if (!q.out) return;
    const int T = p.kt0[p.nseg];
    if (TMA) fa_tma_prologue<BM, BN, NTHR, NS, NS - 2>(p, q, sQ, sK, sV, bar, T, b, h, tid);
    else fa_prologue<BM, BN, NTHR, NS - 2>(p, q, sQ, sK, sV, T, b, h, tid);
    float o[8][4], mrow[2], lrow[2];
    fa_wg_acc_init(o, mrow, lrow);
    const float esc = p.bias ? 1.0f : p.sl2;
    const int rbase = wg * 64 + warp * 16 + (lane >> 2);  // this thread's rows in the tile: rbase, rbase + 8

    if (TMA) {
        mbar_wait(bar, 0);  // tile 0 landed (Q did in the prologue)
    } else {
        cp_async_wait<NS - 3>();  // Q and tile 0 landed (tiles 1 .. NS − 3 may still fly)
        fence_proxy_async();
    }
    __syncthreads();
    float sA[NT][4], sB[NT][4];
    uint32_t pa[NT / 2][4];
    wg_fence();
    wg_scores_z<BN>(&sA[0][0], sQ + wg * 64 * FA_HD, sK);
    wg_commit();
    // unrolled by two: even tiles score into sA, odd ones into sB; the first and the last tile are peeled off (no P·V
    // before the first, no S after the last)
#define FA_OVL_TILE(FIRST, LAST, tt, SC, SN) \
    fa_ovl_tile<BN, NS, NTHR, OVPV, TMA, FIRST, LAST>(p, tt, T, SC, SN, pa, o, mrow, lrow, sK, sV, bar, esc, q.q0, q.nq, rbase, b, h, tid, \
                                                      lane)
    if (T == 1) {
        FA_OVL_TILE(true, true, 0, sA, sB);
    } else {
        FA_OVL_TILE(true, false, 0, sA, sB);
        int t = 1;
        for (; t + 2 < T; t += 2) {
            FA_OVL_TILE(false, false, t, sB, sA);
            FA_OVL_TILE(false, false, t + 1, sA, sB);
        }
        if (t + 1 < T) {
            FA_OVL_TILE(false, false, t, sB, sA);
            FA_OVL_TILE(false, true, t + 1, sA, sB);
        } else {
            FA_OVL_TILE(false, true, t, sB, sA);
        }
    }
#undef FA_OVL_TILE
    wg_wait<0>();
    if (!TMA) cp_async_wait<0>();

    fa_wg_finish<BM, NTHR>(p, q, sQ, o, lrow, rbase, b, h, tid);
#else
    (void)p;
    __trap();  // not built for sm_90a: the host never launches it
#endif
}

// ---- Hopper flash kernel, inter-warpgroup ping-pong (wgmma, FlashAttention-3's warp specialisation) ------------------
//
// In the two kernels above one block-wide barrier per key tile publishes each K/V stage, so all warpgroups of a block
// run their softmax at the same time and then all wait for the tensor cores. Here nothing in the key loop synchronises
// the whole block:
//   * K/V tiles go through an NS-stage ring with cp.async, every stage published by a "full" mbarrier (count 256:
//     each thread arrives through cp.async.mbarrier.arrive.noinc once its own copies of the stage have landed) and
//     freed by an "empty" one (count 8: one arrival per warp, once that warp's wgmmas reading the stage have completed).
//     Use k of a stage (tile t = k·NS + stage) completes phase k of both, so "full" is waited on with parity k & 1 and
//     "empty" (for the use before) with parity (k − 1) & 1.
//   * the loads are issued by the two warpgroups themselves, half a tile each, NS − 3 tiles ahead: right after its turn
//     for tile t (while S(t) is computed) a warpgroup loads tile t + NS − 3 into the stage of tile t − 3, which both
//     warpgroups released during tile t − 2; the turns guarantee that the other warpgroup is past that point (its turn
//     for tile t − 1 came before ours for tile t), so the "empty" wait does not block. Issued there, the copies are a
//     whole tile old when the next tile's proxy fence runs, as in the other kernels. (A producer warp, 288 threads,
//     leaves ptxas 168 registers per thread — three warps share a scheduler's 64 KiB — and spilled at 128 keys;
//     FlashAttention-3 hands registers over with setmaxnreg, not done here.)
//   * the two warpgroups (64 query rows each) take turns on the tensor cores through named barriers 1 (WG0's)
//     and 2 (WG1's), 256 threads each: a warpgroup syncs on its own barrier, issues S(t) = Q·K(t)ᵀ together with
//     O += P(t−1)·V(t−1), arrives on the other's barrier and runs the softmax of S(t) while the other warpgroup issues.
//     WG1 arrives once on barrier 1 at the start so that WG0 goes first; both take T + 1 turns (T tiles and the last
//     P·V) and WG1 skips its arrival after the last one, so every barrier instance gets exactly 256 threads.
// cp.async writes go through the generic proxy and wgmma reads through the async proxy; the writes are observed by
// each consumer thread through the "full" mbarrier (acquire), so that thread fences (fence.proxy.async) before issuing.
// Within a warpgroup the softmax of S(t) also overlaps P(t−1)·V(t−1) (FlashAttention-3's order), so the exponentials go
// into S in place and become P once that product has completed, as in variants 9–11. The first tile (no P·V before
// it) is peeled off: ptxas serialises wgmmas issued under a run-time condition (C7515).
#define FA_PP_STAGES 6

#if defined(SD3Q_WGMMA_DEVICE)
// Named barrier id over n threads: wait until all n have arrived or synced.
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// Named barrier id over n threads: arrive without waiting.
__device__ __forceinline__ void named_arrive(int id, int n) { asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }

// Issues O += P·V for one key tile (P in registers, V of the tile at vsm; k16 step kk takes V rows 16kk.., 2048 bytes apart).
template <int BN> __device__ __forceinline__ void fa_pp_pv(float (&o)[8][4], const uint32_t (&pa)[BN / 16][4], const bf16 * vsm) {
    const uint64_t dv = wg_desc(vsm);
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) wg_rs_n64<1>(&o[0][0], pa[kk], dv + (uint64_t)kk * (2048 >> 4));
    wg_commit();
}

// Issues this thread's share of the loads of key tile t (< T) of flash_attn_wgmma_pp_kernel into stage t % NS, once both
// warpgroups have released that stage's previous tile, and its arrival on the stage's "full" mbarrier.
template <int BN, int NS>
__device__ __forceinline__ void fa_pp_load(const fa_params & p, int t, bf16 * sK, bf16 * sV, uint32_t bar, int b, int h, int tid) {
    const int st = t % NS;
    if (t >= NS) mbar_wait(bar + (NS + st) * 8, ((t / NS) - 1) & 1);
    load_kv<BN, 256>(p, sK + st * BN * FA_HD, sV + st * BN * FA_HD, t, b, h, tid);
    mbar_arrive_cp_async(bar + st * 8);
}

// Key tile t of flash_attn_wgmma_pp_kernel for one warpgroup. On entry pa holds P(t−1) and O is rescaled for
// it (unless FIRST). In this warpgroup's turn it issues S(t) and O += P(t−1)·V(t−1) and hands the turn over; then the
// loads of tile t + NS − 3, the softmax of S(t), the wait for P(t−1)·V(t−1), the release of stage (t − 1) % NS, P(t)
// into pa and O rescaled for it. bar: the "full" mbarriers, the "empty" ones 8·NS bytes above.
template <int BN, int NS, bool FIRST>
__device__ __forceinline__ void fa_pp_tile(const fa_params & p, int t, float (&s)[BN / 8][4], uint32_t (&pa)[BN / 16][4], float (&o)[8][4],
                                           float (&mrow)[2], float (&lrow)[2], const bf16 * qwg, bf16 * sK, bf16 * sV,
                                           uint32_t bar, float esc, int q0, int nq, int rbase, int T, int b, int h, int tid, int mine,
                                           int other) {
    constexpr int NT = BN / 8;
    mbar_wait(bar + (t % NS) * 8, (t / NS) & 1);  // tile t has landed (everyone's copies) ...
    fence_proxy_async();                           // ... and is visible to this thread's wgmmas
    named_sync(mine, 256);                         // our turn on the tensor cores
    wg_fence();                                    // s, pa and O were written by the previous tile's softmax
    wg_scores_z<BN>(&s[0][0], qwg, sK + (t % NS) * BN * FA_HD);
    wg_commit();
    if (!FIRST) fa_pp_pv<BN>(o, pa, sV + ((t - 1) % NS) * BN * FA_HD);
    named_arrive(other, 256);  // the other warpgroup's turn, while this one waits for S(t) and runs its softmax
    if (t + NS - 3 < T) fa_pp_load<BN, NS>(p, t + NS - 3, sK, sV, bar, b, h, tid);  // into the stage of tile t − 3
    wg_wait<FIRST ? 0 : 1>();  // S(t) has landed; P(t−1)·V(t−1) may still run
    const int lane = tid & 31;

    const fa_ktile kt = fa_key_tile<BN>(p, t);
    if (kt.kvalid < BN || p.causal || p.bias) fa_mask<NT>(s, p.bias, p.causal, p.sl2, p.L, kt.kvalid, kt.kglob, q0 + rbase, nq, h, lane);
    float muse[2], corr[2];
    fa_ovl_max<NT>(s, mrow, muse, corr, esc);
    fa_ovl_exp<NT, true>(s, pa, lrow, muse, corr, esc);
    if (!FIRST) {
        // P(t−1)·V(t−1) done: pa, O and stage (t − 1) % NS are free. A plain wait_group is moved by ptxas to the top of
        // its basic block, in front of the softmax (see fa_ovl_tile); the branch on the softmax's result keeps it after.
        // The arms differ (a PTX comment) so that the front end does not merge them into one unconditional wait.
        if (lrow[0] >= 0.0f) wg_wait<0>();
        else asm volatile("wgmma.wait_group.sync.aligned 0; // NaN scores\n" ::: "memory");
        if (lane == 0) mbar_arrive(bar + (NS + (t - 1) % NS) * 8);  // one arrival per warp: its wgmmas are done
    }
    fa_ovl_pack<NT>(s, pa);
#pragma unroll
    for (int nt = 0; nt < 8; nt++) {
        o[nt][0] *= corr[0];
        o[nt][1] *= corr[0];
        o[nt][2] *= corr[1];
        o[nt][3] *= corr[1];
    }
}
#endif

// One block: 128 query rows (two warpgroups in ping-pong) of one (query tile, head, batch); key tiles of BN keys in an
// NS-stage ring published by mbarriers (see above).
template <int BN, int NS>
__global__ void __launch_bounds__(256, 1) flash_attn_wgmma_pp_kernel(const fa_params p) {
#if defined(SD3Q_WGMMA_DEVICE)
    static_assert(NS >= 4, "tile t + NS − 3 loads into the stage of tile t − 3");
    constexpr int BM = 128, NT = BN / 8;
    extern __shared__ __align__(1024) bf16 smem_wg[];
    bf16 * sQ = smem_wg, * sK = smem_wg + BM * FA_HD, * sV = sK + NS * BN * FA_HD;
    const uint32_t bar = (uint32_t)__cvta_generic_to_shared(sV + NS * BN * FA_HD);  // NS "full" mbarriers, NS "empty" ones
    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int h = blockIdx.y, b = blockIdx.z;
    if (tid == 0 && (__cvta_generic_to_shared(smem_wg) & 1023)) __trap();  // the descriptors' swizzle needs 1024-byte tiles
    const fa_qtile q = fa_query_tile<BM>(p, b, h);
    if (!q.out) return;
    const int T = p.kt0[p.nseg];
    if (tid == 0)
        for (int st = 0; st < NS; st++) {
            mbar_init(bar + st * 8, 256);       // full: every thread's copies
            mbar_init(bar + (NS + st) * 8, 8);  // empty: every warp's wgmmas
        }
    __syncthreads();  // the mbarriers are initialised before anyone arrives on them
    fa_prologue<BM, BN, 256, 0>(p, q, sQ, sK, sV, T, b, h, tid);  // Q (one commit group)
    for (int t = 0; t < NS - 3 && t < T; t++) fa_pp_load<BN, NS>(p, t, sK, sV, bar, b, h, tid);  // tiles 0 .. NS − 4; tile t loads t + NS − 3
    cp_async_wait<0>();  // Q has landed (the key tiles are tracked by their mbarriers, not by commit groups) ...
    fence_proxy_async();
    __syncthreads();     // ... for everyone's copies; no block-wide barrier after this one but at the output

    const int mine = 1 + wg, other = 2 - wg;  // named barriers 1 (WG0's turn) and 2 (WG1's)
    const bf16 * qwg = sQ + wg * 64 * FA_HD;
    float o[8][4], mrow[2], lrow[2], s[NT][4];
    uint32_t pa[NT / 2][4];
    fa_wg_acc_init(o, mrow, lrow);
    const float esc = p.bias ? 1.0f : p.sl2;
    const int rbase = wg * 64 + warp * 16 + (lane >> 2);  // this thread's rows in the tile: rbase, rbase + 8

    if (wg == 1) named_arrive(1, 256);  // WG0 takes the first turn
    fa_pp_tile<BN, NS, true>(p, 0, s, pa, o, mrow, lrow, qwg, sK, sV, bar, esc, q.q0, q.nq, rbase, T, b, h, tid, mine, other);
    for (int t = 1; t < T; t++)
        fa_pp_tile<BN, NS, false>(p, t, s, pa, o, mrow, lrow, qwg, sK, sV, bar, esc, q.q0, q.nq, rbase, T, b, h, tid, mine, other);
    // the last turn: P(T−1)·V(T−1); WG0 still hands the turn over (WG1 syncs T + 1 times), WG1 does not (WG0 is done)
    named_sync(mine, 256);
    wg_fence();
    fa_pp_pv<BN>(o, pa, sV + ((T - 1) % NS) * BN * FA_HD);
    if (wg == 0) named_arrive(other, 256);
    wg_wait<0>();

    fa_wg_finish<BM, 256>(p, q, sQ, o, lrow, rbase, b, h, tid);
#else
    (void)p;
    __trap();  // not built for sm_90a: the host never launches it
#endif
}

// The flash variants (warps, m16 tiles per warp, keys per tile, blocks per SM): backend_cuda_set_attention_variant.
struct fa_variant {
    void (*kernel)(const fa_params);
    int warps, mt, bn, smem;
    int sm90a;  // wgmma kernel: offered only where the build has sm_90a code and the device is cc 9.0
    int tma;    // loads K/V through tensor maps (fa_params.kv)
};

#define FA_V(W, M, N, B, Q) {flash_attn_kernel<W, M, N, B, Q>, W, M, N, fa_smem_bytes<W, M, N>(), 0, 0}
#define FA_W(G, N, B)       {flash_attn_wgmma_kernel<G, N, B, false, FA_STAGES>, 4 * (G), 1, N, fa_smem_bytes<4 * (G), 1, N>(), 1, 0}
// TMA variants: NS mbarriers of 8 bytes after the tiles
#define FA_WT(G, N, B, NS) \
    {flash_attn_wgmma_kernel<G, N, B, true, NS>, 4 * (G), 1, N, fa_smem_bytes<4 * (G), 1, N, NS>() + 8 * (NS), 1, 1}
// TMA variants with Q in registers (QRS)
#define FA_WQ(G, N, B, NS) \
    {flash_attn_wgmma_kernel<G, N, B, true, NS, true>, 4 * (G), 1, N, fa_smem_bytes<4 * (G), 1, N, NS>() + 8 * (NS), 1, 1}
#define FA_O(G, N, B, OV, T) \
    {flash_attn_wgmma_ovl_kernel<G, N, B, OV, FA_OVL_STAGES, T>, 4 * (G), 1, N,                  \
     fa_smem_bytes<4 * (G), 1, N, FA_OVL_STAGES>() + ((T) ? 8 * FA_OVL_STAGES : 0), 1, T}
// the ping-pong kernel (two warpgroups): 2·NS mbarriers of 8 bytes after the tiles
#define FA_P(N) {flash_attn_wgmma_pp_kernel<N, FA_PP_STAGES>, 8, 1, N, fa_smem_bytes<8, 1, N, FA_PP_STAGES>() + 16 * FA_PP_STAGES, 1, 0}
// Measured on an H100 (docs/PERF.md): among the mma.sync kernels 0 is the fastest in the whole step (2 is within ±4%
// of it alone at 1024² and 9% slower at 512²; 8 warps × 16 rows, 64-query tiles and a software-pipelined 16-row kernel
// were 5–30% slower). Of the wgmma kernels 6 is the fastest at 1024² (alone 0.715 ms against 0.755 for 4 and 0.859 for
// 0) and 4 at 512² (0.086 ms against 0.090 for 6; the whole CFG step 10.41 ms against 10.70 with 6, in the same run).
// Between the two (fourth session, one H100, attention alone): 4 is as fast as 6 at 1933 joint tokens (640²) and
// faster at 2269 and 2637 (704², 768²: 0.238 / 0.294 ms against 0.242 / 0.304), 6 faster at 3469 (896²: 0.720 against
// 0.754). None of the overlapped variants 7–12 wins at any measured length. Sixth session: the TMA loads (13–17) took
// 17–19 % off each tiling (the cp.async address arithmetic of every thread was a third of the key loop's instructions),
// and 14 (4 with TMA) is the fastest at 512², 768² and 1024² (0.069 / 0.231 / 0.587–0.595 ms against 0.084 / 0.287 /
// 0.713–0.719 for the best cp.async variant; 17, its 4-stage twin, ties), so by default (BACKEND_CUDA_FA_AUTO)
// cuda_attention_pick takes 14 on both sides of FA_SPLIT_L (the split stays, for a tiling that wins only on one side).
// Tried with TMA and not kept (1024², same runs): the overlapped kernel at 64-key tiles, 2 blocks per SM (ptxas
// serialises its wgmmas for lack of registers, C7512; 0.617 and 0.690 ms), and with 1 block (0.766); 192 × 64
// (0.742); 64 queries × 64 keys, 3 blocks per SM (0.612); the softmax's row sums on the tensor cores as P times a
// column of ones, which saves 32 FADDs per thread and tile (0.564 against 0.554: the adds are not what limits); no
// block barrier in the key loop (each stage freed by an "empty" mbarrier on which every warp arrives, so the
// warpgroups drift apart): as 17 0.580 ms, with 5 stages 0.574, against 0.562 for 14 in the same run — but the
// 3-warpgroup 128-key tiling (16) went from 0.703 to 0.587, so the lockstep does cost the wider blocks.
// Seventh session (H200, attention alone at 1024², docs/PERF.md): Q in registers (18) took 0.557–0.558 ms to 0.544–0.546
// against 14 in four alternating runs (0.066 against 0.069 ms at 512²), so 18 is the default now. With Q in registers
// too, other block shapes stay behind: 4 warpgroups × 64 keys, 1 block per SM, 0.744–0.753 ms (3 or 4 stages), and
// 1 warpgroup, 3 blocks per SM, 4 stages, 0.618–0.620; and the overlapped kernel (TMA) at 32-key tiles, where its two
// S sets fit 2 blocks per SM without serialised wgmmas: 0.772 ms with P·V overlapped too, 0.725 without, 0.963 with 3
// warpgroups at 1 block per SM, against 0.540 for 18 (per-tile costs dominate at 32 keys). Tried and not kept:
// the ping-pong kernel with TMA loads (0.737 ms at 128-key tiles; 0.688 / 0.676 at 64-key tiles, 2 blocks per SM,
// 5 / 4 stages, against 0.560 for 14); a quarter, half or all of the exponentials computed on the FMA pipe with a
// polynomial (FlashAttention-4's; 0.594, 0.638, 0.775); and, as a bound, no exponential at all (0.516 ms: the MUFU's
// work costs 8 %). Packed bf16x2 / f16x2 ex2 compile to two MUFU operations on sm_90a (no gain). Time follows the
// number of half-waves of blocks (0.513 ms at 22 heads, 0.556 at 23 and 24, 0.597 at 25 and 26), so the 24 heads
// at 1024² lose about 2 % to the last one.
// $SD3Q_CUDA_FA or backend_cuda_set_attention_variant force one variant for every length.
static const fa_variant fa_variants[FA_VARIANTS] = {
    FA_V(4, 2, 64, 2, true),    // 0: 128 queries, 4 warps × 32 rows, 64-key tiles
    FA_V(4, 1, 128, 3, true),   // 1: 64 queries, 4 warps × 16 rows, 128-key tiles
    FA_V(4, 2, 128, 1, false),  // 2: 128 queries, 4 warps × 32 rows, 128-key tiles, Q re-read from shared memory
    FA_W(1, 128, 2),            // 3: wgmma, 64 queries (1 warpgroup), 128-key tiles, 2 blocks per SM
    FA_W(2, 64, 2),             // 4: wgmma, 128 queries (2 warpgroups), 64-key tiles, 2 blocks per SM
    FA_W(2, 128, 1),            // 5: wgmma, 128 queries, 128-key tiles
    FA_W(3, 128, 1),            // 6: wgmma, 192 queries (3 warpgroups), 128-key tiles
    // the wgmma kernel with the softmax overlapped (flash_attn_wgmma_ovl_kernel; never chosen by length: on an H100 none
    // beat 4 or 6, docs/PERF.md):
    FA_O(2, 128, 1, false, 0),  // 7: 128 queries (2 warpgroups), 128-key tiles, softmax ‖ S of the next tile
    FA_O(2, 64, 1, false, 0),   // 8: 128 queries, 64-key tiles, softmax ‖ S of the next tile
    FA_O(2, 64, 1, true, 0),    // 9: 128 queries, 64-key tiles, softmax ‖ S of the next tile and the previous P·V
    FA_O(3, 64, 1, true, 0),    // 10: 192 queries (3 warpgroups), 64-key tiles, as 9
    FA_O(1, 64, 2, true, 0),    // 11: 64 queries (1 warpgroup), 64-key tiles, as 9, 2 blocks per SM
    // two warpgroups in ping-pong, K/V stages published by mbarriers (flash_attn_wgmma_pp_kernel; never chosen by
    // length: on an H200 slower than 6, docs/PERF.md):
    FA_P(128),                  // 12: 128 queries, 128-key tiles, one warpgroup's softmax ‖ the other's products
    // K/V through TMA (one thread issues both tiles, one mbarrier per stage) instead of cp.async by every thread:
    FA_WT(3, 128, 1, 3),        // 13: as 6
    FA_WT(2, 64, 2, 3),         // 14: as 4
    FA_O(2, 128, 1, false, 1),  // 15: as 7
    FA_WT(3, 128, 1, 4),        // 16: as 6, 4 stages
    FA_WT(2, 64, 2, 4),         // 17: as 14, 4 stages
    FA_WQ(2, 64, 2, 3),         // 18: 14 with Q in registers (QRS): the default on cc 9.0
};

// Whether variant v can run on this backend's device (the wgmma ones need sm_90a code and a cc 9.0 device).
int cuda_attention_variant_ok(const struct cuda_backend * c, int v) {
    if (v < 0 || v >= FA_VARIANTS) return 0;
#if defined(SD3Q_CUDA_SM90A)
    return !fa_variants[v].sm90a || c->cc == 90;
#else
    (void)c;
    return !fa_variants[v].sm90a;
#endif
}

// The variant for a joint length of L tokens: the forced one, else by length where the wgmma kernels run (today the
// same TMA variant on both sides of the split), else the mma.sync default.
int cuda_attention_pick(const struct cuda_backend * c, int64_t L) {
    if (c->fa_variant != BACKEND_CUDA_FA_AUTO) return c->fa_variant;
    if (!cuda_attention_variant_ok(c, FA_DEFAULT_SM90)) return FA_DEFAULT;
    return L < FA_SPLIT_L ? FA_SHORT_SM90 : FA_DEFAULT_SM90;
}

// ---- general path ---------------------------------------------------------------------------------------------------------

#define GA_WS_BYTES ((size_t)64 << 20)
#define GA_THREADS  256

// Row (h, i) of the chunk: bias/causal on the f32 scores, softmax in f32, bf16 probabilities.
__global__ void __launch_bounds__(GA_THREADS) softmax_rows_kernel(bf16 * P, const float * S, int64_t L, int64_t QB, int64_t nq, int64_t i0,
                                                                   int causal, const bf16 * bias) {
    __shared__ float red[32];
    int64_t row = blockIdx.x, h = row / nq, i = row % nq;
    const float * s = S + (h * QB + i) * L;
    bf16 * pr = P + (h * QB + i) * L;
    const bf16 * br = bias ? bias + (h * L + i0 + i) * L : NULL;
    int64_t lim = causal ? i0 + i + 1 : L;  // keys visible to this query
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < lim; j += GA_THREADS) mx = fmaxf(mx, s[j] + (br ? __bfloat162float(br[j]) : 0.0f));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) red[w] = mx;
    __syncthreads();
    mx = l < GA_THREADS / 32 ? red[l] : -INFINITY;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    if (mx == -INFINITY) mx = 0.0f;
    float sum = 0;
    for (int64_t j = threadIdx.x; j < lim; j += GA_THREADS) sum += __expf(s[j] + (br ? __bfloat162float(br[j]) : 0.0f) - mx);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __syncthreads();
    if (l == 0) red[w] = sum;
    __syncthreads();
    sum = l < GA_THREADS / 32 ? red[l] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = sum > 0 ? 1.0f / sum : 0.0f;
    for (int64_t j = threadIdx.x; j < L; j += GA_THREADS)
        pr[j] = __float2bfloat16_rn(j < lim ? __expf(s[j] + (br ? __bfloat162float(br[j]) : 0.0f) - mx) * inv : 0.0f);
}

// out[b, i0 + i, h·HD + c] = O[h, i, c] (bf16).
__global__ void attn_out_kernel(bf16 * out, const float * O, int64_t NH, int64_t HD, int64_t QB, int64_t nq, int64_t D) {
    int64_t n = NH * nq * HD;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = e % HD, i = (e / HD) % nq, h = e / (HD * nq);
        out[i * D + h * HD + c] = __float2bfloat16_rn(O[(h * QB + i) * HD + c]);
    }
}

// The general path (see the top of the file).
static void attention_general(struct cuda_backend * c, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD,
                              float scale, int causal, const bf16 * bias) {
    int64_t D = NH * HD, L = 0;
    for (int s = 0; s < nseg; s++) L += seg[s].n;
    size_t per_row = (size_t)NH * ((size_t)L * 6 + (size_t)HD * 4);
    size_t want = per_row * 64 > GA_WS_BYTES ? per_row * 64 : GA_WS_BYTES;
    if (c->attn_ws_bytes < want) {
        cuda_free_mem(c, c->attn_ws, c->attn_ws_bytes);
        c->attn_ws_bytes = 0;
        c->attn_ws = cuda_alloc(c, want, "attention score rows");
        if (!c->attn_ws) return;
        c->attn_ws_bytes = want;
    }
    int64_t QB = (int64_t)(c->attn_ws_bytes / per_row);
    if (QB > 1024) QB = 1024;
    float * S = (float *)c->attn_ws;
    bf16 * P = (bf16 *)(S + NH * QB * L);
    float * O = (float *)(P + NH * QB * L);
    for (int64_t b = 0; b < B && c->st == SD3Q_OK; b++)
        for (int qs = 0; qs < nseg; qs++) {
            if (!seg[qs].out) continue;
            int64_t nqs = seg[qs].n;
            for (int64_t i0 = 0; i0 < nqs && c->st == SD3Q_OK; i0 += QB) {
                int64_t nq = nqs - i0 < QB ? nqs - i0 : QB, off = 0;
                const bf16 * Q = (const bf16 *)seg[qs].qkv + (b * nqs + i0) * 3 * D;
                for (int ks = 0; ks < nseg; ks++) {
                    const bf16 * K = (const bf16 *)seg[ks].qkv + b * seg[ks].n * 3 * D + D;
                    gemm_batched_cuda(c, 1, 0, seg[ks].n, nq, HD, scale, K, 3 * D, HD, Q, 3 * D, HD, 0.0f, S + off, 1, L, QB * L, NH);
                    off += seg[ks].n;
                }
                softmax_rows_kernel<<<(unsigned)(NH * nq), GA_THREADS, 0, c->stream>>>(P, S, L, QB, nq, i0, causal, bias);
                if (!LAUNCHED(c, "softmax_rows_kernel")) return;
                off = 0;
                for (int ks = 0; ks < nseg; ks++) {
                    const bf16 * V = (const bf16 *)seg[ks].qkv + b * seg[ks].n * 3 * D + 2 * D;
                    gemm_batched_cuda(c, 0, 0, HD, nq, seg[ks].n, 1.0f, V, 3 * D, HD, P + off, L, QB * L, ks ? 1.0f : 0.0f, O, 1, HD,
                                      QB * HD, NH);
                    off += seg[ks].n;
                }
                bf16 * out = (bf16 *)seg[qs].out + (b * nqs + i0) * D;
                attn_out_kernel<<<grid_for(NH * nq * HD, 256), 256, 0, c->stream>>>(out, O, NH, HD, QB, nq, D);
                if (!LAUNCHED(c, "attn_out_kernel")) return;
            }
        }
}

typedef CUresult (*tmap_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *, const cuuint64_t *,
                                   const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// The driver's cuTensorMapEncodeTiled, fetched once through the runtime (the library links cudart only), or NULL.
static tmap_encode_fn tmap_encode(struct cuda_backend * c) {
    static tmap_encode_fn fn;
    static int tried;
    if (!tried) {
        void * f = NULL;
        cudaDriverEntryPointQueryResult q;
        if (CU(c, cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q)) &&
            q == cudaDriverEntryPointSuccess)
            fn = (tmap_encode_fn)f;
        tried = 1;
    }
    return fn;
}

// Tensor map of one segment's fused q|k|v rows for the TMA variants: [B][n][3·D] bf16 (dimension 0 innermost), boxes of
// bn rows × 64 columns with the 128-byte swizzle; rows past n read as zeros. 0 on failure (recorded on c).
static int fa_tensor_map(struct cuda_backend * c, CUtensorMap * map, const bf16 * qkv, int64_t n, int64_t B, int64_t D, int bn) {
    tmap_encode_fn enc = tmap_encode(c);
    if (!enc) {
        cuda_fail(c, SD3Q_ERR_DEVICE, "attention: cuTensorMapEncodeTiled is not available from this driver");
        return 0;
    }
    const cuuint64_t dim[3] = {(cuuint64_t)(3 * D), (cuuint64_t)n, (cuuint64_t)B};
    const cuuint64_t stride[2] = {(cuuint64_t)(3 * D) * sizeof(bf16), (cuuint64_t)(n * 3 * D) * sizeof(bf16)};
    const cuuint32_t box[3] = {FA_HD, (cuuint32_t)bn, 1}, estride[3] = {1, 1, 1};
    CUresult r = enc(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)qkv, dim, stride, box, estride, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        cuda_fail(c, SD3Q_ERR_DEVICE, "attention: cuTensorMapEncodeTiled failed (CUresult %d) for a [%lld, %lld, %lld] segment", (int)r,
                  (long long)B, (long long)n, (long long)(3 * D));
        return 0;
    }
    return 1;
}

// Chooses the flash kernel (head width 64, aligned buffers) or the general path, and launches it.
void attention_cuda(struct cuda_backend * c, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale,
                    int causal, const bf16 * bias) {
    if (nseg < 1 || nseg > FA_SEG || ((causal || bias) && nseg != 1)) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "attention: %d segments (causal %d, bias %d) not supported", nseg, causal, bias != NULL);
        return;
    }
    int64_t L = 0;
    int flash = HD == FA_HD && NH <= 65535 && B <= 65535;
    for (int s = 0; s < nseg; s++) {
        L += seg[s].n;
        flash = flash && aligned_to(seg[s].qkv, 16) && (!seg[s].out || aligned_to(seg[s].out, 16));
    }
    if (B <= 0 || NH <= 0 || L <= 0) return;
    if (!flash || L >= (1 << 30) || c->attn_general) {
        attention_general(c, seg, nseg, B, NH, HD, scale, causal, bias);
        return;
    }
    int var = cuda_attention_pick(c, L);  // one variant for the tile counts, the shared-memory attribute and the launch
    const fa_variant & v = fa_variants[var];
    int bm = v.warps * v.mt * 16;
    fa_params p;
    memset(&p, 0, sizeof p);
    p.nseg = nseg;
    int koff = 0;
    for (int s = 0; s < nseg; s++) {
        p.qkv[s]    = (const bf16 *)seg[s].qkv;
        p.out[s]    = (bf16 *)seg[s].out;
        p.n[s]      = (int)seg[s].n;
        p.koff[s]   = koff;
        koff += (int)seg[s].n;
        p.qt0[s + 1] = p.qt0[s] + (int)((seg[s].n + bm - 1) / bm);
        p.kt0[s + 1] = p.kt0[s] + (int)((seg[s].n + v.bn - 1) / v.bn);
    }
    p.L      = (int)L;
    p.D      = NH * HD;
    p.sl2    = scale * LOG2E;
    p.causal = causal;
    p.bias   = bias;
    for (int s = 0; v.tma && s < nseg; s++)
        if (!fa_tensor_map(c, &p.kv[s], p.qkv[s], seg[s].n, B, p.D, v.bn)) return;
    if (!(c->fa_attr_set & (1u << var))) {
        if (!CU(c, cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem))) return;
        c->fa_attr_set |= 1u << var;
    }
    dim3 grid((unsigned)p.qt0[nseg], (unsigned)NH, (unsigned)B);
    v.kernel<<<grid, v.warps * 32, v.smem, c->stream>>>(p);
    LAUNCHED(c, "flash_attn_kernel");
}
