/*
 * matmul.cu — dense products through NVIDIA's libraries: the Linear op (cuBLASLt, bf16 operands, f32 accumulation,
 * bias or bias+GELU-tanh fused into the epilogue) and a strided-batched GEMM helper (cuBLAS) for the general
 * attention path and the convolution.
 *
 * Parallelisation is the library's. What we own: the row-major → column-major mapping (y[M,N] = x[M,K]·W[N,K]ᵀ is
 * D(N×M) = op(A = W, transposed)·B(x) in column-major terms, so no operand is copied), and a per-backend cache of
 * cuBLASLt descriptors and the heuristic's chosen algorithm per (M, N, K, epilogue, operand alignment), so a step
 * makes no heuristic queries after the first; the heuristic's best few algorithms are timed on the real operands at a
 * shape's first use and the fastest is kept ($SD3Q_CUDA_NO_TUNE=1: the first, untimed). When cuBLASLt offers no algorithm (odd K or N, misaligned rows), the
 * Linear falls back to cublasGemmEx with the bias pre-filled as C (beta = 1) and a separate GELU pass.
 */
#include "backend/cuda/cuda-internal.h"

// Largest power of two (≤ 256) that divides the address.
static int align_class(const void * p) {
    uintptr_t a = (uintptr_t)p;
    int k = 256;
    while (k > 2 && (a & (uintptr_t)(k - 1))) k >>= 1;
    return k;
}

// Destroys one plan's descriptors.
static void plan_destroy(struct lt_plan * p) {
    if (p->desc) cublasLtMatmulDescDestroy(p->desc);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof(*p));
}

// Destroys every cached plan.
void lt_plans_free(struct cuda_backend * c) {
    for (int i = 0; i < c->nplans; i++) plan_destroy(&c->plans[i]);
    c->nplans = 0;
}

// Finds or builds the cuBLASLt plan of one Linear shape; bias is a representative bias pointer (alignment).
static struct lt_plan * plan_get(struct cuda_backend * c, int64_t M, int64_t N, int64_t K, int epi, int align, const void * bias) {
    for (int i = 0; i < c->nplans; i++) {
        struct lt_plan * p = &c->plans[i];
        if (p->M == M && p->N == N && p->K == K && p->epi == epi && p->align == align) return p;
    }
    struct lt_plan * p;
    if (c->nplans < LT_PLANS) p = &c->plans[c->nplans++];
    else {
        p = &c->plans[c->plan_next];
        c->plan_next = (c->plan_next + 1) % LT_PLANS;
        plan_destroy(p);
    }
    p->M = M, p->N = N, p->K = K, p->epi = epi, p->align = align, p->ok = 0;
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t e = epi == 0 ? CUBLASLT_EPILOGUE_DEFAULT
                         : epi == 1 ? CUBLASLT_EPILOGUE_BIAS
                         : epi == 2 ? CUBLASLT_EPILOGUE_GELU
                                    : CUBLASLT_EPILOGUE_GELU_BIAS;
    if (!CUBLAS(c, cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F)) ||
        !CUBLAS(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta)) ||
        !CUBLAS(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb)) ||
        !CUBLAS(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e)) ||
        !CUBLAS(c, cublasLtMatrixLayoutCreate(&p->la, CUDA_R_16BF, (uint64_t)K, (uint64_t)N, K)) ||
        !CUBLAS(c, cublasLtMatrixLayoutCreate(&p->lb, CUDA_R_16BF, (uint64_t)K, (uint64_t)M, K)) ||
        !CUBLAS(c, cublasLtMatrixLayoutCreate(&p->lc, CUDA_R_16BF, (uint64_t)N, (uint64_t)M, N)))
        return p;
    if (epi & 1) CUBLAS(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
    cublasLtMatmulPreference_t pref = NULL;
    uint64_t ws = LT_WORKSPACE;
    uint32_t al = (uint32_t)align;
    if (!CUBLAS(c, cublasLtMatmulPreferenceCreate(&pref))) return p;
    CUBLAS(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    CUBLAS(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al, sizeof al));
    CUBLAS(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al, sizeof al));
    CUBLAS(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al, sizeof al));
    CUBLAS(c, cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al, sizeof al));
    cublasLtMatmulHeuristicResult_t res[LT_CANDIDATES];
    int nres = 0;
    // "no algorithm" is an answer here, not an error: the caller falls back to cublasGemmEx
    cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(c->lt, p->desc, p->la, p->lb, p->lc, p->lc, pref, c->lt_cand, res, &nres);
    p->ncand = 0;
    for (int i = 0; hs == CUBLAS_STATUS_SUCCESS && i < nres; i++)
        if (res[i].state == CUBLAS_STATUS_SUCCESS) p->cand[p->ncand++] = res[i].algo;
    if (p->ncand > 0) {
        p->algo  = p->cand[0];
        p->ok    = 1;
        p->tuned = p->ncand == 1 || !c->tune;
    }
    cublasLtMatmulPreferenceDestroy(pref);
    return p;
}

// Times each candidate algorithm on the real operands (once per shape, at first use) and keeps the fastest. The
// output is recomputed from the same inputs each time, so the result is unchanged; a candidate that fails is skipped.
static void plan_tune(struct cuda_backend * c, struct lt_plan * p, const bf16 * W, const bf16 * x, bf16 * y) {
    const float one = 1.0f, zero = 0.0f;
    float best = 1e30f;
    int bi = 0;
    cudaEvent_t e0 = c->ev[CUDA_EVENTS - 2], e1 = c->ev[CUDA_EVENTS - 1];
    for (int i = 0; i < p->ncand && c->st == SD3Q_OK; i++) {
        if (cublasLtMatmul(c->lt, p->desc, &one, W, p->la, x, p->lb, &zero, y, p->lc, y, p->lc, &p->cand[i], c->lt_ws, LT_WORKSPACE,
                           c->stream) != CUBLAS_STATUS_SUCCESS)
            continue;  // warm-up; a candidate the library rejects at run time is not an error
        CU(c, cudaEventRecord(e0, c->stream));
        for (int r = 0; r < 3; r++)
            cublasLtMatmul(c->lt, p->desc, &one, W, p->la, x, p->lb, &zero, y, p->lc, y, p->lc, &p->cand[i], c->lt_ws, LT_WORKSPACE,
                           c->stream);
        CU(c, cudaEventRecord(e1, c->stream));
        float ms = 0;
        if (CU(c, cudaEventSynchronize(e1)) && CU(c, cudaEventElapsedTime(&ms, e0, e1)) && ms < best) best = ms, bi = i;
    }
    cudaGetLastError();
    p->algo  = p->cand[bi];
    p->tuned = 1;
}

// y = x·Wᵀ + b (+ GELU): cached cuBLASLt plan (tuned at first use), or the cublasGemmEx fallback.
void linear_cuda(struct cuda_backend * c, bf16 * y, const bf16 * x, int64_t M, const struct wt * w, const struct wt * b, int gelu) {
    int64_t N = w->shape[0], K = w->row_elems;
    if (M <= 0 || N <= 0) return;
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "linear: %lld × %lld × %lld is too large", (long long)M, (long long)N, (long long)K);
        return;
    }
    const bf16 * W = cuda_weight(c, w), * bias = b ? cuda_weight(c, b) : NULL;
    if (!W || (b && !bias)) return;
    int align = align_class(x), a2 = align_class(y), a3 = align_class(W);
    if (a2 < align) align = a2;
    if (a3 < align) align = a3;
    if (bias && align_class(bias) < align) align = align_class(bias);
    int epi = (bias ? 1 : 0) | (gelu ? 2 : 0);
    struct lt_plan * p = plan_get(c, M, N, K, epi, align, bias);
    const float one = 1.0f, zero = 0.0f;
    if (p->ok) {
        if (bias) CUBLAS(c, cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
        if (!p->tuned) plan_tune(c, p, W, x, y);
        CUBLAS(c, cublasLtMatmul(c->lt, p->desc, &one, W, p->la, x, p->lb, &zero, y, p->lc, y, p->lc, &p->algo, c->lt_ws, LT_WORKSPACE,
                                 c->stream));
        return;
    }
    if (bias) bias_rows_cuda(c, y, bias, M, N);
    CUBLAS(c, cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, W, CUDA_R_16BF, (int)K, x, CUDA_R_16BF,
                           (int)K, bias ? &one : &zero, y, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    if (gelu) act_cuda(c, y, y, M * N, ACT_GELU_TANH);
}

// Strided-batched column-major GEMM with f32 accumulation (cuBLAS).
void gemm_batched_cuda(struct cuda_backend * c, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const bf16 * A,
                       int64_t lda, int64_t sA, const bf16 * B, int64_t ldb, int64_t sB, float beta, void * C, int c_f32,
                       int64_t ldc, int64_t sC, int64_t batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    if (m > 0x7fffffff || n > 0x7fffffff || k > 0x7fffffff || lda > 0x7fffffff || ldb > 0x7fffffff || ldc > 0x7fffffff ||
        batch > 0x7fffffff) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "gemm: %lld × %lld × %lld is too large", (long long)m, (long long)n, (long long)k);
        return;
    }
    CUBLAS(c, cublasGemmStridedBatchedEx(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, (int)m, (int)n, (int)k,
                                         &alpha, A, CUDA_R_16BF, (int)lda, sA, B, CUDA_R_16BF, (int)ldb, sB, &beta, C,
                                         c_f32 ? CUDA_R_32F : CUDA_R_16BF, (int)ldc, sC, (int)batch, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT));
}
