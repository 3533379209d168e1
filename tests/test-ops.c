/*
 * test-ops.c — every op of the optimised CPU backend (backend_cpu_create, ref = 0) against the scalar reference
 * backend (ref = 1, i.e. ops-ref.c), on fresh random inputs each run (the seed is printed; SD3Q_TEST_SEED replays),
 * and the kernel tables (cpu_kernels_generic / avx2 / avx512, each one this CPU supports) against the reference
 * formulas.
 *
 * Ops: linear, ln_modulate, rmsnorm_heads, attention (1 and 2 segments, a NULL output segment, causal mask,
 * additive bias), gelu_tanh, silu, add, gate_residual, act (4 kinds), gated_act, layernorm, rmsnorm, group_norm
 * (± SiLU, ± affine), conv2d, upsample2x, transpose, upload/download/arena; patchify, unpatchify and add_pos_embed
 * (shared by both backends) against index formulas written here; a few reference ops against first principles.
 * Sizes include 1, 3, 17, 33, 127, 130, 257 and non-multiples of the tiles (linear chunks of 64…512 rows chosen
 * per call from the thread count — LIN_CHUNK, LIN_MIN —, attention blocks of ATTN_QB = 128 queries, im2col tiles
 * of CONV_TILE = 256 pixels); weights in F32 (aligned and at odd addresses), F16, BF16 and F8_E4M3, in 1, 2 or 3
 * parts (struct wt built by hand on our own buffers); batch > 1. Outputs are poisoned with NaN before each op (an
 * unwritten element fails the comparison) and followed by a guard region that must stay untouched. The op suite
 * runs once per supported kernel table (SD3Q_CPU_KERNELS selects it) with 3 threads, and once with 1 thread.
 *
 * Tolerance: relative L2 ≤ 1e-5 for every op — for sums (linear, conv2d, gate_residual) plus 2.5e-7 of the norm
 * of the same sum over absolute values, which only matters for outputs that cancel to nearly zero — except activations (gelu_tanh, silu, act, gated_act): per element
 * |got − ref| ≤ 1e-6·max(1, |u|) (and rel. L2 ≤ 1e-5 from 17 elements on), because u − u/(e^{2a}+1) and u·σ(u)
 * cancel for negative u, so a near-zero output carries an error relative to u, not to itself. Kernel bounds are
 * stated where they are checked.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu-kernels.h"
#include "backend/cpu/ops-ref.h"
#include "testutil.h"

#define TOL 1e-5

#define MAX_K      4096
#define MAX_N      4096
#define MAX_TOKENS 1100
#define GUARD      67

static const char * g_tag = "";  // kernel table / thread count of the current run, for labels

// ---- helpers -----------------------------------------------------------------------------------------------------------

static struct backend * make_backend(int ref, int threads) {
    struct backend_plan plan = {threads, MAX_K, MAX_N, MAX_TOKENS, ref};
    struct backend * bk = NULL;
    struct sd3q_errbuf e;
    if (backend_cpu_create(&plan, &bk, &e) != SD3Q_OK) {
        fprintf(stderr, "backend_cpu_create: %s\n", e.msg);
        exit(1);
    }
    return bk;
}

static void bk_sync(struct backend * bk) {
    if (bk->ops->sync) bk->ops->sync(bk);
}

// n floats followed by GUARD guard values; poisoned with NaN.
static float * out_buf(int64_t n) {
    float * p = malloc(sizeof(float) * (size_t)(n + GUARD));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    for (int64_t i = 0; i < GUARD; i++) p[n + i] = 1e30f;
    return p;
}

static int guard_ok(const float * p, int64_t n) {
    for (int64_t i = 0; i < GUARD; i++)
        if (p[n + i] != 1e30f) return 0;
    return 1;
}

static float * randn(int64_t n, float scale) {
    float * p = malloc(sizeof(float) * (size_t)(n ? n : 1));
    fill_randn(p, n, scale);
    return p;
}

// Compares and checks both guards.
static void compare(const char * what, const float * got, const float * ref, int64_t n) {
    char label[200];
    snprintf(label, sizeof label, "[%s] %s", g_tag, what);
    check_tensor(label, got, ref, n, TOL);
    CHECKF(guard_ok(got, n), "%s: wrote past the output", label);
    CHECKF(guard_ok(ref, n), "%s: reference wrote past the output", label);
}

// Sums (linear, conv2d, gate_residual): ‖got − ref‖ ≤ 1e-5·‖ref‖ + 2.5e-7·‖mag‖, where mag is the same sum taken
// over absolute values (Σ|w·x| + |b|). The second term (about 4 float32 ulps of the terms' magnitude) only matters
// when a result cancels to nearly zero — a one-element output w·x + b ≈ 0 — where a relative norm of the result
// alone measures nothing but that cancellation.
static void compare_sum(const char * what, const float * got, const float * ref, const float * mag, int64_t n) {
    char label[200];
    snprintf(label, sizeof label, "[%s] %s", g_tag, what);
    double num = 0, den = 0, dm = 0, maxd = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)ref[i];
        finite &= isfinite(got[i]) != 0;
        num += d * d, den += (double)ref[i] * ref[i], dm += (double)mag[i] * mag[i];
        maxd = fmax(maxd, fabs(d));
    }
    double err = sqrt(num), bound = TOL * sqrt(den) + 2.5e-7 * sqrt(dm);
    int ok = finite && err <= bound && guard_ok(got, n) && guard_ok(ref, n);
    printf("%-40s n=%-9lld maxabs=%.3e rel=%.3e bound(rel)=%.3e %s\n", label, (long long)n, maxd, den > 0 ? err / sqrt(den) : err,
           den > 0 ? bound / sqrt(den) : bound, ok ? "OK" : "NOT OK");
    CHECKF(ok, "%s: error %.3e above %.3e (or not finite, or wrote past the output)", label, err, bound);
}

// Activations: per element |got − ref| ≤ 1e-6·max(1, |u|) for input u (u − u/(e^{2a}+1) and u·σ(u) cancel for
// negative u, so the error of a near-zero output is relative to u, not to the output), and rel. L2 ≤ 1e-5 over
// arrays of 17 or more elements (for one or three elements that are all near zero a relative norm says nothing).
static void compare_act(const char * what, const float * got, const float * ref, const float * u, int64_t n) {
    char label[200];
    snprintf(label, sizeof label, "[%s] %s", g_tag, what);
    int64_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)ref[i]) / fmax(1.0, fabs((double)u[i]));
        if (!(e <= 1e-6)) bad++;
        worst = isnan(e) ? INFINITY : fmax(worst, e);
    }
    double rel = rel_l2(got, ref, n);
    int ok = bad == 0 && (n < 17 || rel <= TOL) && guard_ok(got, n);
    printf("%-40s n=%-9lld worst |err|/max(1,|u|)=%.2e rel=%.3e %s\n", label, (long long)n, worst, rel, ok ? "OK" : "NOT OK");
    CHECKF(ok, "%s: %lld elements beyond 1e-6·max(1,|u|), rel %.3e", label, (long long)bad, rel);
}

// Rows for normalisation tests: N(0, scale²) values plus `offset`, each row redrawn until its standard deviation is at
// least scale/2. A float32 LayerNorm loses |mean|/std·2^-24 of relative accuracy to the subtraction x − mean; rows of
// two or three nearly equal values would make that arbitrarily large (ill-conditioned input, not an op error).
static float * norm_rows(int64_t rows, int64_t D, float scale, float offset) {
    float * x = malloc(sizeof(float) * (size_t)(rows * D > 0 ? rows * D : 1));
    for (int64_t r = 0; r < rows; r++) {
        float * row = x + r * D;
        for (;;) {
            fill_randn(row, D, scale);
            double m = 0, v = 0;
            for (int64_t i = 0; i < D; i++) m += row[i];
            m /= (double)D;
            for (int64_t i = 0; i < D; i++) v += (row[i] - m) * (row[i] - m);
            if (D < 2 || sqrt(v / (double)D) >= 0.5 * scale) break;
        }
        for (int64_t i = 0; i < D; i++) row[i] += offset;
    }
    return x;
}

// ---- hand-built weights -------------------------------------------------------------------------------------------------

struct hw {
    struct wt w;
    uint8_t * mem[WT_MAX_PARTS];  // what to free
};

// A random [N, K] (ndim 2) or [N] (ndim 1) weight of type t split into nparts row ranges (each in its own
// allocation, at an odd byte offset when `odd`).
static void make_weight(struct hw * h, enum dtype t, int ndim, int64_t N, int64_t K, int nparts, int odd, float scale) {
    memset(h, 0, sizeof *h);
    struct wt * w = &h->w;
    snprintf(w->name, sizeof w->name, "test.weight");
    w->type = t;
    w->ndim = ndim;
    w->shape[0] = N;
    w->shape[1] = ndim > 1 ? K : 0;
    w->row_elems = ndim > 1 ? K : 1;
    w->nparts = nparts;
    int64_t left = N;
    for (int p = 0; p < nparts; p++) {
        int64_t rows = p == nparts - 1 ? left : (left > 0 ? 1 + (int64_t)rand_below((uint32_t)left) : 0);
        if (rows > left) rows = left;
        if (p < nparts - 1 && rows == left && left > 1) rows = left - 1;  // leave something for the later parts
        left -= rows;
        int64_t n = rows * w->row_elems;
        int esz = dtype_size(t);
        h->mem[p] = malloc((size_t)(n * esz + 8));
        uint8_t * d = h->mem[p] + (odd ? 1 + (p % 3) : 0);
        for (int64_t i = 0; i < n; i++) {
            float v;
            fill_randn(&v, 1, scale);
            if (t == DT_F32) memcpy(d + 4 * i, &v, 4);
            else if (t == DT_F16) { uint16_t x = f32_to_f16(v); memcpy(d + 2 * i, &x, 2); }
            else if (t == DT_BF16) { uint16_t x = f32_to_bf16(v); memcpy(d + 2 * i, &x, 2); }
            else {  // F8_E4M3: exponents 3..9 (values 2^-4 … 2^2·1.875), random sign and mantissa, never NaN
                uint32_t r = rand_below(1u << 16);
                d[i] = (uint8_t)(((r & 1) << 7) | ((3 + (r >> 1) % 7) << 3) | ((r >> 4) & 7));
            }
        }
        w->part[p].data = d;
        w->part[p].rows = rows;
    }
}

static void free_weight(struct hw * h) {
    for (int p = 0; p < WT_MAX_PARTS; p++) free(h->mem[p]);
}

// A copy of a weight with every element's sign cleared (|w|, same dtype and parts), for the magnitude of a sum.
static void abs_weight(const struct hw * src, struct hw * dst) {
    *dst = *src;
    memset(dst->mem, 0, sizeof dst->mem);
    if (!wt_present(&src->w)) return;
    int esz = dtype_size(src->w.type);
    for (int p = 0; p < src->w.nparts; p++) {
        size_t n = (size_t)(src->w.part[p].rows * src->w.row_elems * esz);
        dst->mem[p] = malloc(n + 1);
        memcpy(dst->mem[p], src->w.part[p].data, n);
        for (size_t i = (size_t)esz - 1; i < n; i += (size_t)esz) dst->mem[p][i] &= 0x7f;  // little-endian: sign in the last byte
        dst->w.part[p].data = dst->mem[p];
    }
}

static float * abs_copy(const float * x, int64_t n) {
    float * a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
    return a;
}

// ---- linear -----------------------------------------------------------------------------------------------------------

static void one_linear(struct backend * opt, struct backend * ref, int64_t M, int64_t N, int64_t K, enum dtype t, int nparts, int odd,
                       int bias_kind) {
    struct hw w, b;
    make_weight(&w, t, 2, N, K, nparts, odd, 1.0f / sqrtf((float)K));
    // bias: 0 none (NULL), 1 F32 single part, 2 F16 in 2 parts, 3 absent weight (ndim 0)
    memset(&b, 0, sizeof b);
    const struct wt * bp = NULL;
    if (bias_kind == 1) make_weight(&b, DT_F32, 1, N, 1, 1, 0, 1.0f);
    if (bias_kind == 2) make_weight(&b, DT_F16, 1, N, 1, N > 1 ? 2 : 1, 1, 1.0f);
    if (bias_kind) bp = &b.w;
    float * x = randn(M * K, 1.0f);
    float * y = out_buf(M * N), * yr = out_buf(M * N);
    opt->ops->linear(opt, y, x, M, &w.w, bp);
    bk_sync(opt);
    ref->ops->linear(ref, yr, x, M, &w.w, bp);
    struct hw wa, ba;
    abs_weight(&w, &wa), abs_weight(&b, &ba);
    float * xa = abs_copy(x, M * K), * mag = out_buf(M * N);
    ref->ops->linear(ref, mag, xa, M, &wa.w, bp ? &ba.w : NULL);
    char what[160];
    snprintf(what, sizeof what, "linear M=%lld N=%lld K=%lld %s×%d%s bias%d", (long long)M, (long long)N, (long long)K, dtype_name(t), nparts,
             odd ? " odd-addr" : "", bias_kind);
    compare_sum(what, y, yr, mag, M * N);
    free(x), free(y), free(yr), free(xa), free(mag);
    free_weight(&w), free_weight(&b), free_weight(&wa), free_weight(&ba);
}

static void test_linear(struct backend * opt, struct backend * ref, int quick) {
    static const int64_t Ms[] = {1, 3, 17, 33, 130};
    static const int64_t Ns[] = {1, 3, 17, 127, 130, 257, 1100};
    static const int64_t Ks[] = {1, 3, 17, 33, 130, 257};
    static const enum dtype types[] = {DT_F32, DT_F16, DT_BF16, DT_F8_E4M3};
    int k = 0;
    for (int ti = 0; ti < 4; ti++)
        for (int parts = 1; parts <= 3; parts++)
            for (int odd = 0; odd < (types[ti] == DT_F32 ? 2 : 1); odd++) {
                int reps = quick ? 2 : 6;
                for (int r = 0; r < reps; r++, k++) {
                    int64_t M = Ms[(k * 7 + r) % 5], N = Ns[(k * 3 + r * 5) % 7], K = Ks[(k * 5 + r) % 6];
                    if (M * N * K > 3000000) M = 3;  // keep the double-precision reference quick
                    one_linear(opt, ref, M, N, K, types[ti], parts, odd, (k + r) % 4);
                }
            }
    // one large output so that tasks of the largest chunk size (512 rows) and a ragged last chunk occur
    one_linear(opt, ref, 3, 3100, 17, DT_F16, 3, 0, 2);
    one_linear(opt, ref, 2, 4096, 5, DT_F32, 1, 0, 1);
    one_linear(opt, ref, 2, 1, 4096, DT_BF16, 1, 0, 1);
}

// ---- row ops -----------------------------------------------------------------------------------------------------------

static void test_ln_modulate(struct backend * opt, struct backend * ref) {
    static const int64_t Bs[] = {1, 2, 3}, Ts[] = {1, 17, 65, 130}, Ds[] = {1, 3, 33, 128, 257};
    for (int i = 0; i < 12; i++) {
        int64_t B = Bs[i % 3], T = Ts[(i / 3) % 4], D = Ds[i % 5], stride = 6 * D + (i % 2);
        float * x = norm_rows(B * T, D, 2.0f, 3.0f);  // a mean far from zero
        float * mod = randn(B * stride, 0.5f);
        float * y = out_buf(B * T * D), * yr = out_buf(B * T * D);
        const float * shift = mod + D, * scale = mod + 4 * D;
        opt->ops->ln_modulate(opt, y, x, B, T, D, shift, scale, stride, 1e-6f);
        bk_sync(opt);
        ref->ops->ln_modulate(ref, yr, x, B, T, D, shift, scale, stride, 1e-6f);
        char what[128];
        snprintf(what, sizeof what, "ln_modulate B=%lld T=%lld D=%lld stride=%lld", (long long)B, (long long)T, (long long)D, (long long)stride);
        compare(what, y, yr, B * T * D);
        free(x), free(mod), free(y), free(yr);
    }
}

static void test_rmsnorm(struct backend * opt, struct backend * ref) {
    static const int64_t rows_[] = {1, 3, 17, 130}, HDs[] = {1, 3, 17, 64, 128}, NHs[] = {1, 2, 3};
    static const enum dtype types[] = {DT_F32, DT_F16, DT_BF16};
    for (int i = 0; i < 15; i++) {
        int64_t rows = rows_[i % 4], HD = HDs[i % 5], NH = NHs[i % 3], D = NH * HD, off = (i % 2) ? D : 0;
        struct hw w;
        make_weight(&w, types[i % 3], 1, HD, 1, 1 + i % 2, i % 2, 1.0f);
        float * qkv = randn(rows * 3 * D, 1.5f);
        float * a = malloc(sizeof(float) * (size_t)(rows * 3 * D + GUARD)), * b = malloc(sizeof(float) * (size_t)(rows * 3 * D + GUARD));
        memcpy(a, qkv, sizeof(float) * (size_t)(rows * 3 * D));
        memcpy(b, qkv, sizeof(float) * (size_t)(rows * 3 * D));
        for (int g = 0; g < GUARD; g++) a[rows * 3 * D + g] = b[rows * 3 * D + g] = 1e30f;
        opt->ops->rmsnorm_heads(opt, a, rows, D, off, HD, &w.w, 1e-6f);
        bk_sync(opt);
        ref->ops->rmsnorm_heads(ref, b, rows, D, off, HD, &w.w, 1e-6f);
        char what[128];
        snprintf(what, sizeof what, "rmsnorm_heads rows=%lld NH=%lld HD=%lld %s %s", (long long)rows, (long long)NH, (long long)HD,
                 off ? "k" : "q", dtype_name(w.w.type));
        compare(what, a, b, rows * 3 * D);
        // the other two thirds of every row are untouched, bit for bit
        int touched = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < 3 * D; c++)
                if ((c < off || c >= off + D) && memcmp(&a[r * 3 * D + c], &qkv[r * 3 * D + c], 4) != 0) touched++;
        CHECKF(touched == 0, "%s: %d elements outside the normalised part changed", what, touched);
        free(qkv), free(a), free(b);
        free_weight(&w);
    }
}

// ---- attention ---------------------------------------------------------------------------------------------------------

static void one_attention(struct backend * opt, struct backend * ref, int64_t B, int64_t NH, int64_t HD, int nseg, const int64_t * n,
                          const int * has_out, float logit_scale) {
    int64_t D = NH * HD;
    float * qkv[2], * o[2], * orf[2];
    struct attn_seg so[2], sr[2];
    for (int s = 0; s < nseg; s++) {
        qkv[s] = randn(B * n[s] * 3 * D, logit_scale);
        o[s] = has_out[s] ? out_buf(B * n[s] * D) : NULL;
        orf[s] = has_out[s] ? out_buf(B * n[s] * D) : NULL;
        so[s] = (struct attn_seg){qkv[s], o[s], n[s]};
        sr[s] = (struct attn_seg){qkv[s], orf[s], n[s]};
    }
    float scale = 1.0f / sqrtf((float)HD);
    opt->ops->attention(opt, so, nseg, B, NH, HD, scale, NULL);
    bk_sync(opt);
    ref->ops->attention(ref, sr, nseg, B, NH, HD, scale, NULL);
    for (int s = 0; s < nseg; s++) {
        if (has_out[s]) {
            char what[160];
            snprintf(what, sizeof what, "attention B=%lld NH=%lld HD=%lld segs=%d n=[%lld%s%lld] x%g out%d", (long long)B, (long long)NH,
                     (long long)HD, nseg, (long long)n[0], nseg > 1 ? "," : "", nseg > 1 ? (long long)n[1] : 0LL, logit_scale, s);
            compare(what, o[s], orf[s], B * n[s] * D);
        }
        free(qkv[s]), free(o[s]), free(orf[s]);
    }
}

static void test_attention(struct backend * opt, struct backend * ref) {
    const int both[2] = {1, 1}, first[2] = {1, 0}, second[2] = {0, 1};
    struct { int64_t B, NH, HD; int nseg; int64_t n[2]; const int * out; float ls; } cases[] = {
        {1, 1, 64, 1, {1, 0}, both, 1},      {1, 2, 64, 1, {3, 0}, both, 1},      {2, 1, 17, 1, {63, 0}, both, 1},
        {1, 1, 3, 1, {64, 0}, both, 1},      {3, 2, 64, 1, {65, 0}, both, 1},     {1, 3, 1, 1, {130, 0}, both, 1},
        {2, 2, 64, 2, {127, 3}, both, 1},    {1, 2, 64, 2, {1, 257}, both, 1},    {2, 1, 33, 2, {64, 64}, both, 1},
        {2, 2, 64, 2, {130, 7}, first, 1},   {1, 2, 17, 2, {17, 65}, second, 1},  {2, 2, 64, 2, {16, 7}, both, 4},
        {1, 1, 128, 2, {129, 1}, both, 2},   {1, 1, 64, 2, {600, 333}, first, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        one_attention(opt, ref, cases[i].B, cases[i].NH, cases[i].HD, cases[i].nseg, cases[i].n, cases[i].out, cases[i].ls);
}

// ---- elementwise ---------------------------------------------------------------------------------------------------------

static void test_elementwise(struct backend * opt, struct backend * ref) {
    static const int64_t sizes[] = {1, 3, 17, 257, 16384, 16385, 40000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t n = sizes[i];
        char what[96];
        float * x = randn(n, 3.0f);
        static const float edge[] = {0.0f, -0.0f, 20.0f, -20.0f, 100.0f, -100.0f, 1e-20f, -1e-20f, 5.0f, -5.0f};
        for (int k = 0; k < 10 && k < n; k++) x[(k * 7919) % n] = edge[k];
        // gelu (in place)
        float * a = out_buf(n), * b = out_buf(n);
        memcpy(a, x, sizeof(float) * (size_t)n), memcpy(b, x, sizeof(float) * (size_t)n);
        opt->ops->gelu_tanh(opt, a, n);
        bk_sync(opt);
        ref->ops->gelu_tanh(ref, b, n);
        snprintf(what, sizeof what, "gelu_tanh n=%lld", (long long)n);
        compare_act(what, a, b, x, n);
        // silu, out of place and in place
        free(a), free(b);
        a = out_buf(n), b = out_buf(n);
        opt->ops->silu(opt, a, x, n);
        bk_sync(opt);
        ref->ops->silu(ref, b, x, n);
        snprintf(what, sizeof what, "silu n=%lld", (long long)n);
        compare_act(what, a, b, x, n);
        float * c = out_buf(n);
        memcpy(c, x, sizeof(float) * (size_t)n);
        opt->ops->silu(opt, c, c, n);
        bk_sync(opt);
        snprintf(what, sizeof what, "silu in place n=%lld", (long long)n);
        compare_act(what, c, b, x, n);
        // add
        float * y0 = randn(n, 1.0f);
        memcpy(a, y0, sizeof(float) * (size_t)n), memcpy(b, y0, sizeof(float) * (size_t)n);
        opt->ops->add(opt, a, x, n);
        bk_sync(opt);
        ref->ops->add(ref, b, x, n);
        snprintf(what, sizeof what, "add n=%lld", (long long)n);
        compare(what, a, b, n);
        free(a), free(b), free(c), free(x), free(y0);
    }
    // gate_residual with a gate (rows mod_stride apart) and without
    static const int64_t Bs[] = {1, 2, 3}, Ts[] = {1, 17, 65, 130}, Ds[] = {1, 3, 33, 128, 257};
    for (int i = 0; i < 10; i++) {
        int64_t B = Bs[i % 3], T = Ts[i % 4], D = Ds[i % 5], stride = 6 * D + 1, n = B * T * D;
        float * x0 = randn(n, 1.0f), * y = randn(n, 1.0f), * g = randn(B * stride, 1.0f);
        float * a = out_buf(n), * b = out_buf(n);
        memcpy(a, x0, sizeof(float) * (size_t)n), memcpy(b, x0, sizeof(float) * (size_t)n);
        const float * gate = (i % 3 == 2) ? NULL : g + 2 * D;
        opt->ops->gate_residual(opt, a, y, gate, B, T, D, stride);
        bk_sync(opt);
        ref->ops->gate_residual(ref, b, y, gate, B, T, D, stride);
        char what[128];
        snprintf(what, sizeof what, "gate_residual B=%lld T=%lld D=%lld %s", (long long)B, (long long)T, (long long)D, gate ? "gated" : "plain");
        float * mag = malloc(sizeof(float) * (size_t)n);
        for (int64_t q = 0; q < n; q++) mag[q] = fabsf(x0[q]) + fabsf((gate ? gate[(q / (T * D)) * stride + q % D] : 1.0f) * y[q]);
        compare_sum(what, a, b, mag, n);
        free(mag);
        free(x0), free(y), free(g), free(a), free(b);
    }
}

// ---- attention options: causal mask and additive bias (single segment) -------------------------------------------------

static void test_attention_opts(struct backend * opt, struct backend * ref) {
    struct { int64_t B, NH, HD, n; int causal, bias; } cases[] = {
        {1, 1, 64, 1, 1, 0},   {2, 2, 64, 3, 1, 0},   {1, 3, 17, 127, 1, 0}, {2, 1, 64, 128, 1, 0}, {1, 2, 64, 129, 1, 0},
        {1, 2, 33, 300, 1, 0}, {2, 2, 64, 77, 0, 1},  {1, 3, 17, 129, 0, 1}, {2, 2, 64, 130, 1, 1}, {1, 1, 1, 5, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t B = cases[i].B, NH = cases[i].NH, HD = cases[i].HD, n = cases[i].n, D = NH * HD;
        float * qkv = randn(B * n * 3 * D, 1.0f), * bias = cases[i].bias ? randn(NH * n * n, 2.0f) : NULL;
        float * o = out_buf(B * n * D), * r = out_buf(B * n * D);
        struct attn_seg so = {qkv, o, n}, sr = {qkv, r, n};
        struct attn_opts ao = {cases[i].causal, bias};
        float scale = 1.0f / sqrtf((float)HD);
        opt->ops->attention(opt, &so, 1, B, NH, HD, scale, &ao);
        bk_sync(opt);
        ref->ops->attention(ref, &sr, 1, B, NH, HD, scale, &ao);
        char what[160];
        snprintf(what, sizeof what, "attention B=%lld NH=%lld HD=%lld n=%lld%s%s", (long long)B, (long long)NH, (long long)HD, (long long)n,
                 cases[i].causal ? " causal" : "", cases[i].bias ? " bias" : "");
        compare(what, o, r, B * n * D);
        if (cases[i].causal && !cases[i].bias) {  // first principles: query 0 sees only key 0, so its output is v_0
            int bad = 0;
            for (int64_t b = 0; b < B; b++)
                for (int64_t c = 0; c < D; c++) bad += fabsf(o[b * n * D + c] - qkv[b * n * 3 * D + 2 * D + c]) > 1e-6f;
            CHECKF(bad == 0, "%s: query 0 does not return v_0 (%d wrong)", what, bad);
        }
        free(qkv), free(bias), free(o), free(r);
    }
}

// ---- activations, norms, image ops of the text encoders and the VAE --------------------------------------------------------

static const char * act_name(int k) { return (const char *[]){"gelu_tanh", "gelu_erf", "quick_gelu", "silu"}[k]; }

static void test_act_ops(struct backend * opt, struct backend * ref) {
    static const int64_t sizes[] = {1, 3, 17, 257, 16385, 40000};
    for (int k = 0; k < ACT_COUNT; k++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i += (k == 0 ? 1 : 2)) {
            int64_t n = sizes[i];
            float * x = randn(n, 3.0f), * a = out_buf(n), * b = out_buf(n);
            if (n > 4) x[0] = -30.0f, x[1] = 30.0f, x[2] = 0.0f, x[3] = -1e-20f;
            opt->ops->act(opt, a, x, n, (enum act_kind)k);
            bk_sync(opt);
            ref->ops->act(ref, b, x, n, (enum act_kind)k);
            char what[96];
            snprintf(what, sizeof what, "act %s n=%lld", act_name(k), (long long)n);
            compare_act(what, a, b, x, n);
            memcpy(a, x, sizeof(float) * (size_t)n);  // in place
            opt->ops->act(opt, a, a, n, (enum act_kind)k);
            bk_sync(opt);
            snprintf(what, sizeof what, "act %s n=%lld in place", act_name(k), (long long)n);
            compare_act(what, a, b, x, n);
            free(x), free(a), free(b);
        }
    static const int64_t rows_[] = {1, 3, 17}, Fs[] = {1, 3, 257, 1000};
    for (int i = 0; i < 8; i++) {
        int64_t rows = rows_[i % 3], F = Fs[i % 4];
        int k = i % ACT_COUNT;
        float * x = randn(rows * 2 * F, 2.0f), * a = out_buf(rows * F), * b = out_buf(rows * F);
        opt->ops->gated_act(opt, a, x, rows, F, (enum act_kind)k);
        bk_sync(opt);
        ref->ops->gated_act(ref, b, x, rows, F, (enum act_kind)k);
        char what[96];
        snprintf(what, sizeof what, "gated_act %s rows=%lld F=%lld", act_name(k), (long long)rows, (long long)F);
        float * sc = malloc(sizeof(float) * (size_t)(rows * F));  // error scale: max(1,|u|)·max(1,|gate|)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < F; j++)
                sc[r * F + j] = fmaxf(1.0f, fabsf(x[r * 2 * F + j])) * fmaxf(1.0f, fabsf(x[r * 2 * F + F + j]));
        compare_act(what, a, b, sc, rows * F);
        free(sc);
        free(x), free(a), free(b);
    }
}

static void test_norm_ops(struct backend * opt, struct backend * ref) {
    static const int64_t rows_[] = {1, 17, 33}, Ds[] = {1, 3, 257, 1000};
    static const enum dtype types[] = {DT_F32, DT_F16, DT_BF16};
    for (int i = 0; i < 12; i++) {
        int64_t rows = rows_[i % 3], D = Ds[i % 4];
        struct hw w, b;
        memset(&w, 0, sizeof w), memset(&b, 0, sizeof b);
        int wk = i % 4;  // 0: no affine, 1: weight only, 2: bias only, 3: both
        if (wk & 1) make_weight(&w, types[i % 3], 1, D, 1, D > 2 ? 1 + i % 3 : 1, i % 2, 1.0f);
        if (wk & 2) make_weight(&b, types[(i + 1) % 3], 1, D, 1, 1, 0, 1.0f);
        float * x = norm_rows(rows, D, 2.0f, 4.0f), * a = out_buf(rows * D), * r = out_buf(rows * D);
        // absent parameters are passed both as NULL and as an absent (ndim 0) weight
        const struct wt * wp = (wk & 1) ? &w.w : (i % 2 ? NULL : &w.w), * bp = (wk & 2) ? &b.w : (i % 2 ? &b.w : NULL);
        opt->ops->layernorm(opt, a, x, rows, D, wp, bp, 1e-5f);
        bk_sync(opt);
        ref->ops->layernorm(ref, r, x, rows, D, wp, bp, 1e-5f);
        char what[128];
        snprintf(what, sizeof what, "layernorm rows=%lld D=%lld %s%s", (long long)rows, (long long)D, (wk & 1) ? "w" : "", (wk & 2) ? "b" : "");
        compare(what, a, r, rows * D);
        free(a), free(r);
        // RMSNorm (T5): weight required
        struct hw rw;
        make_weight(&rw, types[(i + 2) % 3], 1, D, 1, 1 + (i % 2), i % 2, 1.0f);
        a = out_buf(rows * D), r = out_buf(rows * D);
        opt->ops->rmsnorm(opt, a, x, rows, D, &rw.w, 1e-6f);
        bk_sync(opt);
        ref->ops->rmsnorm(ref, r, x, rows, D, &rw.w, 1e-6f);
        snprintf(what, sizeof what, "rmsnorm rows=%lld D=%lld %s", (long long)rows, (long long)D, dtype_name(rw.w.type));
        compare(what, a, r, rows * D);
        free(x), free(a), free(r);
        free_weight(&w), free_weight(&b), free_weight(&rw);
    }
    // GroupNorm (+ SiLU), groups dividing C
    struct { int64_t B, C, HW, G; int silu, affine; } gn[] = {
        {1, 32, 64, 8, 0, 1}, {2, 6, 17, 3, 1, 1}, {1, 4, 1, 1, 1, 0}, {3, 130, 5, 13, 0, 1}, {1, 64, 300, 32, 1, 1}, {2, 9, 7, 9, 0, 0},
    };
    for (size_t i = 0; i < sizeof gn / sizeof gn[0]; i++) {
        int64_t B = gn[i].B, C = gn[i].C, HW = gn[i].HW, n = B * C * HW;
        struct hw w, b;
        memset(&w, 0, sizeof w), memset(&b, 0, sizeof b);
        if (gn[i].affine) {
            make_weight(&w, types[i % 3], 1, C, 1, 1, i % 2, 1.0f);
            make_weight(&b, DT_F32, 1, C, 1, C > 2 ? 2 : 1, 0, 1.0f);
        }
        float * x = randn(n, 3.0f), * a = out_buf(n), * r = out_buf(n);
        opt->ops->group_norm(opt, a, x, B, C, HW, gn[i].G, gn[i].affine ? &w.w : NULL, gn[i].affine ? &b.w : NULL, 1e-6f, gn[i].silu);
        bk_sync(opt);
        ref->ops->group_norm(ref, r, x, B, C, HW, gn[i].G, gn[i].affine ? &w.w : NULL, gn[i].affine ? &b.w : NULL, 1e-6f, gn[i].silu);
        char what[128];
        snprintf(what, sizeof what, "group_norm B=%lld C=%lld HW=%lld G=%lld%s%s", (long long)B, (long long)C, (long long)HW, (long long)gn[i].G,
                 gn[i].silu ? " +silu" : "", gn[i].affine ? "" : " no-affine");
        compare(what, a, r, n);
        free(x), free(a), free(r);
        free_weight(&w), free_weight(&b);
    }
}

static void test_conv(struct backend * opt, struct backend * ref) {
    struct { int64_t B, Cin, H, W, Cout, kh, kw; int stride, pt, pl, pb, pr; enum dtype t; int parts, odd, bias; } cv[] = {
        {1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 1, DT_F32, 1, 0, 1},      // VAE-style 3×3, same padding
        {2, 5, 17, 13, 7, 3, 3, 2, 0, 0, 1, 1, DT_F16, 2, 0, 1},    // downsample: stride 2, pad right/bottom only
        {1, 16, 20, 20, 33, 1, 1, 1, 0, 0, 0, 0, DT_BF16, 1, 0, 0}, // 1×1, 400 pixels: two im2col tiles
        {1, 4, 3, 5, 130, 3, 3, 1, 1, 1, 1, 1, DT_F8_E4M3, 3, 0, 1},
        {2, 8, 33, 17, 9, 3, 3, 1, 1, 1, 1, 1, DT_F32, 3, 1, 1},    // 561 pixels: ragged last tile; parts at odd addresses
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, DT_F32, 1, 1, 1},
        {1, 2, 6, 7, 3, 2, 3, 2, 1, 0, 0, 2, DT_F16, 1, 1, 0},      // non-square kernel, asymmetric padding
        {1, 64, 16, 16, 1100, 1, 1, 1, 0, 0, 0, 0, DT_F16, 2, 0, 1},// many output channels: several channel chunks
    };
    for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
        int64_t K = cv[i].Cin * cv[i].kh * cv[i].kw;
        struct hw w, b;
        memset(&b, 0, sizeof b);
        make_weight(&w, cv[i].t, 2, cv[i].Cout, K, cv[i].parts, cv[i].odd, 1.0f / sqrtf((float)K));
        if (cv[i].kh * cv[i].kw > 1 || i % 2) {  // as stored: [Cout, Cin, kh, kw] (1×1 convs also as [Cout, Cin])
            w.w.ndim = 4, w.w.shape[1] = cv[i].Cin, w.w.shape[2] = cv[i].kh, w.w.shape[3] = cv[i].kw;
        }
        if (cv[i].bias) make_weight(&b, DT_F32, 1, cv[i].Cout, 1, 1, 0, 1.0f);
        int64_t Ho = (cv[i].H + cv[i].pt + cv[i].pb - cv[i].kh) / cv[i].stride + 1, Wo = (cv[i].W + cv[i].pl + cv[i].pr - cv[i].kw) / cv[i].stride + 1;
        int64_t nin = cv[i].B * cv[i].Cin * cv[i].H * cv[i].W, nout = cv[i].B * cv[i].Cout * Ho * Wo;
        float * x = randn(nin, 1.0f), * a = out_buf(nout), * r = out_buf(nout);
        opt->ops->conv2d(opt, a, x, cv[i].B, cv[i].Cin, cv[i].H, cv[i].W, &w.w, cv[i].bias ? &b.w : NULL, cv[i].stride, cv[i].pt, cv[i].pl,
                         cv[i].pb, cv[i].pr);
        bk_sync(opt);
        ref->ops->conv2d(ref, r, x, cv[i].B, cv[i].Cin, cv[i].H, cv[i].W, &w.w, cv[i].bias ? &b.w : NULL, cv[i].stride, cv[i].pt, cv[i].pl,
                         cv[i].pb, cv[i].pr);
        struct hw wa, ba;
        abs_weight(&w, &wa), abs_weight(&b, &ba);
        float * xa = abs_copy(x, nin), * mag = out_buf(nout);
        ref->ops->conv2d(ref, mag, xa, cv[i].B, cv[i].Cin, cv[i].H, cv[i].W, &wa.w, cv[i].bias ? &ba.w : NULL, cv[i].stride, cv[i].pt, cv[i].pl,
                         cv[i].pb, cv[i].pr);
        char what[200];
        snprintf(what, sizeof what, "conv2d B=%lld %lld→%lld %lldx%lld k%lldx%lld s%d pad(%d,%d,%d,%d) %s×%d%s", (long long)cv[i].B,
                 (long long)cv[i].Cin, (long long)cv[i].Cout, (long long)cv[i].H, (long long)cv[i].W, (long long)cv[i].kh, (long long)cv[i].kw,
                 cv[i].stride, cv[i].pt, cv[i].pl, cv[i].pb, cv[i].pr, dtype_name(cv[i].t), cv[i].parts, cv[i].bias ? " bias" : "");
        compare_sum(what, a, r, mag, nout);
        free(x), free(a), free(r), free(xa), free(mag);
        free_weight(&w), free_weight(&b), free_weight(&wa), free_weight(&ba);
    }
    // first principles: a 1×1 identity convolution returns its input; a 3×3 all-ones kernel with zero padding sums
    // the 3×3 neighbourhood
    enum { C = 3, H = 4, W = 5 };
    float I[C * C] = {0}, ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, x[C * H * W], y[C * H * W];
    for (int i = 0; i < C; i++) I[i * C + i] = 1;
    fill_randn(x, C * H * W, 1);
    struct wt wi = {.name = "I", .type = DT_F32, .ndim = 4, .shape = {C, C, 1, 1}, .row_elems = C, .nparts = 1, .part = {{(const uint8_t *)I, C}}};
    opt->ops->conv2d(opt, y, x, 1, C, H, W, &wi, NULL, 1, 0, 0, 0, 0);
    bk_sync(opt);
    CHECKF(memcmp(x, y, sizeof x) == 0, "conv2d with a 1×1 identity kernel changed its input");
    struct wt wo = {.name = "ones", .type = DT_F32, .ndim = 4, .shape = {1, 1, 3, 3}, .row_elems = 9, .nparts = 1, .part = {{(const uint8_t *)ones, 1}}};
    float y1[H * W];
    opt->ops->conv2d(opt, y1, x, 1, 1, H, W, &wo, NULL, 1, 1, 1, 1, 1);
    bk_sync(opt);
    int bad = 0;
    for (int r = 0; r < H; r++)
        for (int c = 0; c < W; c++) {
            double s = 0;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++)
                    if (r + dy >= 0 && r + dy < H && c + dx >= 0 && c + dx < W) s += x[(r + dy) * W + c + dx];
            bad += fabs(y1[r * W + c] - s) > 1e-5;
        }
    CHECKF(bad == 0, "conv2d with a 3×3 box kernel: %d wrong sums", bad);
}

static void test_image_layout(struct backend * opt, struct backend * ref) {
    static const int64_t up[][4] = {{1, 1, 1, 1}, {2, 3, 5, 7}, {1, 4, 16, 16}, {3, 2, 1, 9}};
    for (int i = 0; i < 4; i++) {
        int64_t B = up[i][0], C = up[i][1], H = up[i][2], W = up[i][3], no = B * C * 4 * H * W;
        float * x = randn(B * C * H * W, 1.0f), * a = out_buf(no), * r = out_buf(no);
        opt->ops->upsample2x(opt, a, x, B, C, H, W);
        bk_sync(opt);
        ref->ops->upsample2x(ref, r, x, B, C, H, W);
        int bad = 0;
        for (int64_t p = 0; p < B * C; p++)
            for (int64_t yy = 0; yy < 2 * H; yy++)
                for (int64_t xx = 0; xx < 2 * W; xx++)
                    bad += a[(p * 2 * H + yy) * 2 * W + xx] != x[(p * H + yy / 2) * W + xx / 2];
        char what[96];
        snprintf(what, sizeof what, "upsample2x B=%lld C=%lld %lldx%lld", (long long)B, (long long)C, (long long)H, (long long)W);
        CHECKF(bad == 0, "%s: %d elements differ from x[y/2, x/2]", what, bad);
        compare(what, a, r, no);
        free(x), free(a), free(r);
    }
    static const int64_t tr[][3] = {{1, 1, 1}, {2, 3, 5}, {1, 33, 65}, {3, 64, 31}, {1, 100, 1}};
    for (int i = 0; i < 5; i++) {
        int64_t B = tr[i][0], R = tr[i][1], C = tr[i][2], n = B * R * C;
        float * x = randn(n, 1.0f), * a = out_buf(n), * r = out_buf(n);
        opt->ops->transpose(opt, a, x, B, R, C);
        bk_sync(opt);
        ref->ops->transpose(ref, r, x, B, R, C);
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t rr = 0; rr < R; rr++)
                for (int64_t c = 0; c < C; c++) bad += a[(b * C + c) * R + rr] != x[(b * R + rr) * C + c];
        char what[96];
        snprintf(what, sizeof what, "transpose B=%lld R=%lld C=%lld", (long long)B, (long long)R, (long long)C);
        CHECKF(bad == 0, "%s: %d elements differ from x[b, r, c]", what, bad);
        compare(what, a, r, n);
        free(x), free(a), free(r);
    }
}

// ---- layout ops against index formulas ------------------------------------------------------------------------------------

static void test_layout(struct backend * opt) {
    static const int64_t cfg[][5] = {{1, 16, 8, 8, 2}, {2, 3, 6, 10, 2}, {1, 1, 3, 3, 1}, {3, 5, 9, 6, 3}};
    for (int c = 0; c < 4; c++) {
        int64_t B = cfg[c][0], C = cfg[c][1], H = cfg[c][2], W = cfg[c][3], p = cfg[c][4], gh = H / p, gw = W / p, K = C * p * p;
        int64_t n = B * C * H * W;
        float * x = randn(n, 1.0f);
        float * cols = out_buf(B * gh * gw * K);
        opt->ops->patchify(opt, cols, x, B, C, H, W, p);
        bk_sync(opt);
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t py = 0; py < gh; py++)
                for (int64_t px = 0; px < gw; px++)
                    for (int64_t ch = 0; ch < C; ch++)
                        for (int64_t i = 0; i < p; i++)
                            for (int64_t j = 0; j < p; j++) {
                                // token (b, py, px), column (c, i, j) ← x[b, c, py·p + i, px·p + j]
                                float want = x[((b * C + ch) * H + py * p + i) * W + px * p + j];
                                float got = cols[((b * gh + py) * gw + px) * K + (ch * p + i) * p + j];
                                bad += memcmp(&want, &got, 4) != 0;
                            }
        CHECKF(bad == 0 && guard_ok(cols, B * gh * gw * K), "patchify B=%lld C=%lld H=%lld W=%lld p=%lld: %d wrong", (long long)B, (long long)C,
               (long long)H, (long long)W, (long long)p, bad);
        // unpatchify of tokens in (i, j, c) order
        float * tok = randn(B * gh * gw * K, 1.0f);
        float * y = out_buf(n);
        opt->ops->unpatchify(opt, y, tok, B, C, gh, gw, p);
        bk_sync(opt);
        bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t ch = 0; ch < C; ch++)
                for (int64_t r = 0; r < H; r++)
                    for (int64_t q = 0; q < W; q++) {
                        int64_t py = r / p, i = r % p, px = q / p, j = q % p;
                        float want = tok[((b * gh + py) * gw + px) * K + (i * p + j) * C + ch];
                        bad += memcmp(&want, &y[((b * C + ch) * H + r) * W + q], 4) != 0;
                    }
        CHECKF(bad == 0 && guard_ok(y, n), "unpatchify B=%lld C=%lld gh=%lld gw=%lld p=%lld: %d wrong", (long long)B, (long long)C, (long long)gh,
               (long long)gw, (long long)p, bad);
        free(x), free(cols), free(tok), free(y);
    }
    // add_pos_embed: table [1, grid², D] (one part, as the model stores it; F32/F16/BF16, odd addresses too);
    // centre crop top = (grid − gh)/2, left = (grid − gw)/2
    static const int64_t pc[][4] = {{12, 4, 4, 8}, {12, 3, 5, 7}, {5, 5, 5, 3}, {7, 1, 6, 2}, {9, 2, 3, 130}};
    static const enum dtype pt[] = {DT_F32, DT_F16, DT_BF16};
    for (int c = 0; c < 5; c++) {
        int64_t grid = pc[c][0], gh = pc[c][1], gw = pc[c][2], D = pc[c][3], B = 1 + c % 3;
        struct hw pos;
        make_weight(&pos, pt[c % 3], 2, grid * grid, D, 1, c % 2, 1.0f);
        struct wt w3 = pos.w;  // viewed as [1, grid², D]: one row of grid²·D elements
        w3.ndim = 3, w3.shape[0] = 1, w3.shape[1] = grid * grid, w3.shape[2] = D, w3.row_elems = grid * grid * D, w3.part[0].rows = 1;
        const struct wt * use = &w3;
        float * table = malloc(sizeof(float) * (size_t)(grid * grid * D));
        wt_rows_to_f32(&pos.w, 0, grid * grid, table);
        float * t0 = randn(B * gh * gw * D, 1.0f), * t = out_buf(B * gh * gw * D);
        memcpy(t, t0, sizeof(float) * (size_t)(B * gh * gw * D));
        opt->ops->add_pos_embed(opt, t, use, B, gh, gw, grid, D);
        bk_sync(opt);
        int64_t top = (grid - gh) / 2, left = (grid - gw) / 2;
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t py = 0; py < gh; py++)
                for (int64_t px = 0; px < gw; px++)
                    for (int64_t d = 0; d < D; d++) {
                        int64_t k = ((b * gh + py) * gw + px) * D + d;
                        float want = t0[k] + table[((top + py) * grid + left + px) * D + d];
                        bad += memcmp(&want, &t[k], 4) != 0;
                    }
        CHECKF(bad == 0 && guard_ok(t, B * gh * gw * D), "add_pos_embed grid=%lld gh=%lld gw=%lld D=%lld (%s, %d parts): %d wrong",
               (long long)grid, (long long)gh, (long long)gw, (long long)D, dtype_name(pos.w.type), pos.w.nparts, bad);
        free(table), free(t0), free(t);
        free_weight(&pos);
    }
    printf("[%s] patchify / unpatchify / add_pos_embed match the index formulas\n", g_tag);
}

// ---- the reference ops against first principles (so that a bug shared by both backends still shows) ---------------------

static void test_ref_first_principles(struct backend * ref) {
    // linear with an identity weight and a bias: y = x + b
    enum { K = 5 };
    float I[K * K] = {0}, bias[K], x[3 * K], y[3 * K];
    for (int i = 0; i < K; i++) I[i * K + i] = 1, bias[i] = (float)i - 2;
    fill_randn(x, 3 * K, 1);
    struct wt w = {.name = "I", .type = DT_F32, .ndim = 2, .shape = {K, K}, .row_elems = K, .nparts = 1, .part = {{(const uint8_t *)I, K}}};
    struct wt bw = {.name = "b", .type = DT_F32, .ndim = 1, .shape = {K}, .row_elems = 1, .nparts = 1, .part = {{(const uint8_t *)bias, K}}};
    ref->ops->linear(ref, y, x, 3, &w, &bw);
    int bad = 0;
    for (int i = 0; i < 3 * K; i++) bad += y[i] != x[i] + bias[i % K];
    CHECKF(bad == 0, "reference linear with identity weight: %d wrong", bad);
    // attention with one key: the output is its value; with identical keys: the mean of the values
    enum { D = 4, N = 3 };
    float qkv[N * 3 * D], out[N * D];
    fill_randn(qkv, N * 3 * D, 1);
    for (int t = 0; t < N; t++)
        for (int c = 0; c < D; c++) qkv[t * 3 * D + D + c] = 0.25f * (float)c;  // same key for every token
    struct attn_seg s = {qkv, out, N};
    ref->ops->attention(ref, &s, 1, 1, 1, D, 0.5f, NULL);
    bad = 0;
    for (int c = 0; c < D; c++) {
        double mean = 0;
        for (int t = 0; t < N; t++) mean += qkv[t * 3 * D + 2 * D + c] / (double)N;
        for (int t = 0; t < N; t++) bad += fabs(out[t * D + c] - mean) > 1e-6;
    }
    CHECKF(bad == 0, "reference attention with identical keys is not the mean of the values (%d wrong)", bad);
    struct attn_seg s1 = {qkv, out, 1};
    ref->ops->attention(ref, &s1, 1, 1, 1, D, 0.5f, NULL);
    CHECK(memcmp(out, qkv + 2 * D, sizeof(float) * D) == 0);
    // gelu(0) = 0, gelu(1) = 0.8411920 (tanh approximation), silu(1) = 1/(1 + e^-1)
    float g[2] = {0.0f, 1.0f}, sv[1] = {1.0f};
    ref->ops->gelu_tanh(ref, g, 2);
    CHECKF(g[0] == 0.0f && fabs(g[1] - 0.8411920f) < 1e-6, "gelu_tanh(1) = %.7f", g[1]);
    ref->ops->silu(ref, sv, sv, 1);
    CHECKF(fabs(sv[0] - 0.7310586f) < 1e-6, "silu(1) = %.7f", sv[0]);
    // LN of [1, 2, 3, 4] with zero modulation: (x − 2.5)/sqrt(1.25 + eps)
    float lx[4] = {1, 2, 3, 4}, ly[4], zero[4] = {0};
    ref->ops->ln_modulate(ref, ly, lx, 1, 1, 4, zero, zero, 0, 0.0f);
    for (int i = 0; i < 4; i++) CHECKF(fabs(ly[i] - (lx[i] - 2.5) / sqrt(1.25)) < 1e-6, "ln [%d] = %f", i, ly[i]);
}

// ---- kernel tables against the formulas --------------------------------------------------------------------------------

static int same_value(float got, double want) { return isnan(want) ? isnan(got) : (double)got == want; }

static void test_kernels(const struct cpu_kernels * k) {
    printf("== kernel table %s\n", k->name);
    // to_f32: every f16 and bf16 pattern, every f8 value, F32 copies — from an odd address
    uint8_t * raw = malloc(2 * 65536 + 1);
    float * out = malloc(sizeof(float) * (65536 + 1));
    for (int t = 0; t < 2; t++) {
        for (uint32_t h = 0; h < 65536; h++) memcpy(raw + 1 + 2 * h, &(uint16_t){(uint16_t)h}, 2);
        out[65536] = 1e30f;
        k->to_f32(t ? DT_BF16 : DT_F16, raw + 1, out, 65536);
        int bad = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            double want = t ? bf16_formula((uint16_t)h) : f16_formula((uint16_t)h);
            if (!same_value(out[h], want) && bad++ < 3) fprintf(stderr, "%s to_f32(%s 0x%04x) = %g, want %g\n", k->name, t ? "BF16" : "F16", h, out[h], want);
        }
        CHECKF(bad == 0 && out[65536] == 1e30f, "%s: to_f32(%s): %d of 65536 wrong", k->name, t ? "BF16" : "F16", bad);
    }
    for (int v = 0; v < 256; v++) raw[1 + v] = (uint8_t)v;
    out[256] = 1e30f;
    k->to_f32(DT_F8_E4M3, raw + 1, out, 256);
    int bad = 0;
    for (int v = 0; v < 256; v++) bad += !same_value(out[v], f8_formula((uint8_t)v));
    CHECKF(bad == 0 && out[256] == 1e30f, "%s: to_f32(F8_E4M3): %d of 256 wrong", k->name, bad);
    float src[37];
    fill_randn(src, 37, 10.0f);
    memcpy(raw + 3, src, sizeof src);
    k->to_f32(DT_F32, raw + 3, out, 37);
    CHECKF(memcmp(out, src, sizeof src) == 0, "%s: to_f32(F32) from an odd address", k->name);
    for (int n = 0; n < 40; n++) {  // every short length (vector tails)
        for (int i = 0; i <= n; i++) out[i] = 1e30f;
        k->to_f32(DT_F16, raw + 1 + 2 * 15360, out, n);  // 0x3c00.. = 1.0 upward
        int ok = out[n] == 1e30f;
        for (int i = 0; i < n; i++) ok &= out[i] == (float)f16_formula((uint16_t)(15360 + i));
        CHECKF(ok, "%s: to_f32(F16) with n = %d", k->name, n);
    }
    free(raw);
    free(out);
    printf("  to_f32: all F16 / BF16 / F8_E4M3 patterns and F32 copies exact\n");

    // gelu_tanh and silu against the double formulas. Bound per element: |got − ref| ≤ 1e-6·max(1, |u|) (a few float
    // ulps of the inputs: u − u/(e^{2a}+1) cancels for negative u, so the error is relative to u, not to the result).
    enum { NE = 4099 };
    float * x = malloc(sizeof(float) * (NE + 1)), * y = malloc(sizeof(float) * (NE + 1));
    double * r = malloc(sizeof(double) * NE);
    fill_randn(x, NE, 4.0f);
    static const float edge[] = {0.0f, -0.0f, 1e-20f, -1e-20f, 10.0f, -10.0f, 30.0f, -30.0f, 100.0f, -100.0f, 1e20f, -1e20f, 88.0f, -88.0f};
    for (int i = 0; i < (int)(sizeof edge / sizeof edge[0]); i++) x[i * 13] = edge[i];
    for (int pass = 0; pass < 2; pass++) {
        int nbad = 0;
        double worst = 0;
        memcpy(y, x, sizeof(float) * NE);
        y[NE] = 1e30f;
        if (pass == 0) k->gelu_tanh(y, NE);
        else {
            for (int i = 0; i < NE; i++) y[i] = NAN;
            k->silu(y, x, NE);
        }
        for (int i = 0; i < NE; i++) {
            double u = x[i];
            r[i] = pass == 0 ? 0.5 * u * (1.0 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u))) : u / (1.0 + exp(-u));
            double err = fabs((double)y[i] - r[i]) / fmax(1.0, fabs(u));
            if (!(err <= 1e-6)) nbad++;
            if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
        }
        float * rf = malloc(sizeof(float) * NE);
        for (int i = 0; i < NE; i++) rf[i] = (float)r[i];
        char label[64];
        snprintf(label, sizeof label, "%s %s vs formula", k->name, pass ? "silu" : "gelu_tanh");
        check_tensor(label, y, rf, NE, TOL);
        free(rf);
        CHECKF(nbad == 0 && y[NE] == 1e30f, "%s: %d elements beyond 1e-6·max(1,|u|) (worst %.2e)", label, nbad, worst);
        printf("  %s: worst |err|/max(1,|u|) = %.2e\n", pass ? "silu" : "gelu_tanh", worst);
    }

    // exp_shifted: elementwise |got − e^{d}| ≤ (4 + |d|)·2^-24·e^{d} + 1e-37 with d = x − max in double: a few ulp of
    // exp itself plus the rounding of the float subtraction x − max (relative error |d|·2^-24 after exp; the clamp at
    // −87.3 gives ~1e-38 instead of a smaller number). The sum is a float accumulation of up to 4099 terms: within
    // 1e-5 relative of the double sum.
    static const int ns[] = {1, 3, 17, 64, 257, 1000, 4099};
    double worst = 0;
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        fill_randn(x, n, 3.0f);
        if (n > 5) x[n / 2] = -200.0f;  // far below the max
        memcpy(y, x, sizeof(float) * (size_t)n);
        y[n] = 1e30f;
        float s = k->exp_shifted(y, n);
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++) mx = fmax(mx, x[i]);
        int nb = 0;
        for (int i = 0; i < n; i++) {
            double d = (double)x[i] - mx, e = exp(d);
            sum += e;
            double lim = (4.0 + fabs(d)) * ldexp(1.0, -24) * e + 1e-37;
            nb += !(fabs((double)y[i] - e) <= lim);
            if (e > 1e-30) worst = fmax(worst, fabs((double)y[i] - e) / (e * ldexp(1.0, -24)) - fabs(d));
        }
        CHECKF(nb == 0 && y[n] == 1e30f, "%s: exp_shifted n=%d: %d elements wrong", k->name, n, nb);
        CHECKF(fabs(s - sum) <= 1e-5 * sum, "%s: exp_shifted n=%d: sum %.9g, double sum %.9g", k->name, n, s, sum);
    }
    printf("  exp_shifted: worst error %.2f ulp beyond the argument rounding (bound 4)\n", worst);

    // ln_row: plain, modulated, affine (w, b, both) against the double formula; rel L2 ≤ 1e-5 per row
    static const int Ds[] = {1, 3, 17, 64, 128, 257, 1000};
    for (size_t t = 0; t < sizeof Ds / sizeof Ds[0]; t++) {
        int D = Ds[t];
        float * xr = norm_rows(1, D, 2.0f, 5.0f), * sh = randn(D, 1.0f), * sc = randn(D, 0.5f), * w = randn(D, 1.0f), * b = randn(D, 1.0f);
        double mu = 0, var = 0;
        for (int i = 0; i < D; i++) mu += xr[i];
        mu /= D;
        for (int i = 0; i < D; i++) var += (xr[i] - mu) * (xr[i] - mu);
        double rs = 1.0 / sqrt(var / D + 1e-6);
        for (int mode = 0; mode < 5; mode++) {  // 0 plain, 1 modulated, 2 w, 3 b, 4 w+b
            float * yo = out_buf(D), * rr = malloc(sizeof(float) * (size_t)D);
            const float * W = (mode == 2 || mode == 4) ? w : NULL, * Bv = (mode == 3 || mode == 4) ? b : NULL;
            k->ln_row(yo, xr, D, mode == 1 ? sh : NULL, mode == 1 ? sc : NULL, W, Bv, 1e-6f);
            for (int i = 0; i < D; i++) {
                double n0 = (xr[i] - mu) * rs;
                double v = mode == 1 ? n0 * (1.0 + sc[i]) + sh[i] : n0 * (W ? W[i] : 1.0) + (Bv ? Bv[i] : 0.0);
                rr[i] = (float)v;
            }
            char label[96];
            snprintf(label, sizeof label, "%s ln_row D=%d %s", k->name, D, (const char *[]){"plain", "modulated", "w", "b", "w+b"}[mode]);
            double rel = rel_l2(yo, rr, D);
            int fin = 1;
            for (int i = 0; i < D; i++) fin &= isfinite(yo[i]);
            CHECKF(fin && rel <= TOL && guard_ok(yo, D), "%s: rel %.2e", label, rel);
            free(yo), free(rr);
        }
        free(xr), free(sh), free(sc), free(w), free(b);
    }
    printf("  ln_row: plain / modulated / affine within 1e-5\n");

    // axpy_gate: |got − (y + g·x)| ≤ 2^-23·(|y| + |g·x|) per element (one or two roundings, FMA allowed)
    for (int n = 1; n < 300; n += 37) {
        float * y0 = randn(n, 1.0f), * xx = randn(n, 1.0f), * g = randn(n, 1.0f), * yy = out_buf(n);
        for (int gated = 0; gated < 2; gated++) {
            memcpy(yy, y0, sizeof(float) * (size_t)n);
            k->axpy_gate(yy, xx, gated ? g : NULL, n);
            int nb = 0;
            for (int i = 0; i < n; i++) {
                double gx = (gated ? (double)g[i] : 1.0) * xx[i], want = (double)y0[i] + gx;
                nb += !(fabs(yy[i] - want) <= ldexp(1.0, -23) * (fabs(y0[i]) + fabs(gx)));
            }
            CHECKF(nb == 0 && guard_ok(yy, n), "%s: axpy_gate n=%d %s: %d wrong", k->name, n, gated ? "gated" : "plain", nb);
        }
        free(y0), free(xx), free(g), free(yy);
    }
    printf("  axpy_gate: within one rounding\n");

    // act: the four activations (optionally times a gate g, and in place) against double formulas; bound per
    // element |got − ref| ≤ 1e-6·max(1, |u|)·max(1, |g|) (erf-GELU: A&S 7.1.26, |erf error| ≤ 1.5e-7)
    for (int kind = 0; kind < ACT_COUNT; kind++)
        for (int gated = 0; gated < 3; gated++) {  // 0 plain, 1 gated, 2 in place
            float * g = randn(NE, 1.0f);
            for (int i = 0; i < NE; i++) y[i] = NAN;
            y[NE] = 1e30f;
            if (gated == 2) {
                memcpy(y, x, sizeof(float) * NE);
                k->act(y, y, NULL, NE, kind);
            } else {
                k->act(y, x, gated ? g : NULL, NE, kind);
            }
            int nb = 0;
            double worst2 = 0;
            for (int i = 0; i < NE; i++) {
                double u = x[i], v;
                if (kind == ACT_GELU_TANH) v = 0.5 * u * (1.0 + tanh(0.7978845608028654 * (u + 0.044715 * u * u * u)));
                else if (kind == ACT_GELU_ERF) v = 0.5 * u * (1.0 + erf(u / sqrt(2.0)));
                else if (kind == ACT_QUICK_GELU) v = u / (1.0 + exp(-1.702 * u));
                else v = u / (1.0 + exp(-u));
                double gg = gated == 1 ? g[i] : 1.0;
                double err = fabs((double)y[i] - v * gg) / (fmax(1.0, fabs(u)) * fmax(1.0, fabs(gg)));
                if (!(err <= 1e-6)) nb++;
                worst2 = isnan(err) ? INFINITY : fmax(worst2, err);
            }
            CHECKF(nb == 0 && y[NE] == 1e30f, "%s: act %s %s: %d elements wrong (worst %.2e)", k->name, act_name(kind),
                   (const char *[]){"plain", "gated", "in place"}[gated], nb, worst2);
            if (gated == 0) printf("  act %s: worst |err|/max(1,|u|) = %.2e\n", act_name(kind), worst2);
            free(g);
        }
    free(x), free(y), free(r);
}

// ---- driver -------------------------------------------------------------------------------------------------------------

static void run_ops(int threads, int quick) {
    struct backend * opt = make_backend(0, threads), * ref = make_backend(1, 1);
    CHECK(strcmp(opt->ops->name, "cpu") == 0 && strcmp(ref->ops->name, "cpu-ref") == 0);
    CHECK(opt->ops->act_size(opt) == 4);
    test_linear(opt, ref, quick);
    test_ln_modulate(opt, ref);
    test_rmsnorm(opt, ref);
    test_attention(opt, ref);
    test_elementwise(opt, ref);
    test_layout(opt);
    test_attention_opts(opt, ref);
    test_act_ops(opt, ref);
    test_norm_ops(opt, ref);
    test_conv(opt, ref);
    test_image_layout(opt, ref);
    // upload / download / arena
    float v[5] = {1, 2, 3, 4, 5}, w[5];
    float * dev = opt->ops->arena_alloc(opt, 20);
    CHECK(dev && ((uintptr_t)dev % 64) == 0);
    CHECK(opt->ops->upload(opt, dev, v, 5) == SD3Q_OK && opt->ops->download(opt, w, dev, 5) == SD3Q_OK && memcmp(v, w, sizeof v) == 0);
    opt->ops->arena_free(opt, dev);
    opt->ops->free(opt);
    ref->ops->free(ref);
}

int main(void) {
    const struct cpu_kernels * tables[] = {&cpu_kernels_generic, &cpu_kernels_avx2, &cpu_kernels_avx512};
    const char * names[] = {"generic", "avx2", "avx512"};
    const char * saved = getenv("SD3Q_CPU_KERNELS");
    int n_run = 0;
    for (int i = 0; i < 3; i++) {
        if (!cpu_kernels_supported(tables[i])) {
            printf("== kernel table %s: not supported by this CPU (or not compiled in), skipped\n", names[i]);
            continue;
        }
        n_run++;
        test_kernels(tables[i]);
        // the whole op suite with this table forced
        setenv("SD3Q_CPU_KERNELS", names[i], 1);
        CHECKF(cpu_kernels_best() == tables[i], "SD3Q_CPU_KERNELS=%s does not select that table", names[i]);
        char tag[32];
        snprintf(tag, sizeof tag, "%s, 3 threads", names[i]);
        g_tag = tag;
        run_ops(3, i != 0);
    }
    CHECK(n_run >= 1);
    if (saved) setenv("SD3Q_CPU_KERNELS", saved, 1);
    else unsetenv("SD3Q_CPU_KERNELS");
    // best table, one thread
    g_tag = "best, 1 thread";
    run_ops(1, 1);
    struct backend * ref = make_backend(1, 1);
    test_ref_first_principles(ref);
    ref->ops->free(ref);
    printf("kernel tables tested: %d (best: %s)\n", n_run, cpu_kernels_best()->name);
    return test_finish("test-ops");
}
