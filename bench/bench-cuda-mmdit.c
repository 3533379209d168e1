/*
 * bench-cuda-mmdit.c — the MMDiT of SD3-Medium's shape on the CUDA backend: one classifier-free-guidance denoising
 * step (batch 2, 333 text tokens) at 512² and 1024², attention and each Linear shape of the step alone, and a whole 28-step
 * 1024² sampling run. Random F16 weights are written once to a safetensors file (in parallel) and loaded by the
 * normal loader, as bench-mmdit.c does for the CPU.
 *
 * Times are CUDA events around each forward pass (median of --reps after --warmup passes); FLOPs are counted from
 * the shapes (every Linear 2·M·N·K, attention 4·B·heads·64·queries·keys); TFLOP/s = FLOPs / median time. Peak device
 * memory comes from the backend's allocation accounting and cudaMemGetInfo. The output ends with "RESULT" lines
 * (key=value) that tools/bench/run_gpu_bench.sh collects next to PyTorch's.
 *
 * Usage: bench-cuda-mmdit [--weights FILE] [--res 512,1024] [--reps 20] [--warmup 3] [--steps 28] [--no-profile]
 *                         [--step-only]   (the step and the default attention alone: no variant sweep, no Linear table)
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "io/fileutil.h"
#include "io/safetensors.h"
#include "model/session.h"
#include "sd3q.h"
#include "common.h"

#ifndef SD3Q_HAVE_CUDA
// Without a CUDA build there is nothing to run.
int main(void) {
    fprintf(stderr, "bench-cuda-mmdit: built without CUDA\n");
    return 77;
}
#else
#include "backend/cuda/cuda-backend.h"


// ---- random SD3-Medium-shaped weights --------------------------------------------------------------------------------

// Writes an SD3-Medium-shaped MMDiT (original single-file names) with random F16 weights.
static int make_weights(const char * path) {
    struct bw_file * f = bw_new();
    bw_add_mmdit(f, DT_F16);
    int r = bw_write(f, path);
    bw_free(f);
    return r;
}

// ---- FLOP count ----------------------------------------------------------------------------------------------------------

struct flops {
    double linear, attn;
};

// FLOPs of one forward pass: every Linear 2·M·N·K, the joint attention 4·B·heads·HD·queries·keys per block.
static struct flops count_flops(const struct sd3q_mmdit_info * f, int64_t B, int64_t lat, int64_t L) {
    int64_t D = f->hidden, N = (lat / f->patch) * (lat / f->patch), p2 = (int64_t)f->patch * f->patch, F = f->mlp_hidden;
    struct flops r = {0, 0};
    r.linear += 2.0 * B * (256.0 * D + (double)D * D) + 2.0 * B * ((double)f->pooled_dim * D + (double)D * D);  // t, y embedders
    r.linear += 2.0 * B * N * (double)f->in_channels * p2 * D + 2.0 * B * L * (double)f->context_dim * D;       // x, context
    for (int i = 0; i < f->depth; i++) {
        int last = i == f->depth - 1;
        r.linear += 2.0 * B * D * (double)(6 * D + (last ? 2 : 6) * D);                                          // adaLN
        r.linear += 2.0 * B * N * (double)D * (3 * D + D + 2 * F);                                                // image stream
        r.linear += last ? 2.0 * B * L * (double)D * 3 * D : 2.0 * B * L * (double)D * (3 * D + D + 2 * F);       // text stream
        r.attn += 4.0 * B * (double)D * (double)(N + (last ? 0 : L)) * (double)(N + L);
    }
    r.linear += 2.0 * B * D * 2.0 * D + 2.0 * B * N * (double)D * p2 * f->out_channels;                         // final layer
    return r;
}

// ---- timing helpers ------------------------------------------------------------------------------------------------------

// qsort order for doubles.
static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Median of n values (sorts them).
static double median(double * v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// xorshift uniform in [-1, 1).
static float frand(uint64_t * s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (float)((*s * 0x2545f4914f6cdd1dull) >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
}

// n uniform values in ±scale from a seed (malloc'd).
static float * rand_host(int64_t n, float scale, uint64_t seed) {
    float * x = malloc(sizeof(float) * (size_t)n);
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n; i++) x[i] = scale * frand(&s);
    return x;
}

// Times `reps` forward passes at one resolution on session s; returns the median milliseconds.
static double time_forward(struct sd3q_session * s, const struct mmdit * m, int lat, int L, int warmup, int reps, double * best) {
    const struct mmdit_config * c = &m->cfg;
    struct backend * bk = s->bk;
    size_t esz = bk->ops->act_size(bk), mark = arena_mark(&s->ar);
    struct mmdit_io io = {2, lat, lat, L, NULL, NULL, NULL, NULL, NULL};
    int64_t nx = 2LL * c->in_ch * lat * lat, nc = 2LL * L * c->ctx_dim, np = 2LL * c->pooled_dim;
    io.x       = arena_alloc(&s->ar, esz * (size_t)nx);
    io.context = arena_alloc(&s->ar, esz * (size_t)nc);
    io.pooled  = arena_alloc(&s->ar, esz * (size_t)np);
    io.tfreq   = arena_alloc(&s->ar, esz * 2 * MMDIT_FREQ_DIM);
    io.out     = arena_alloc(&s->ar, esz * (size_t)nx);
    SD3Q_ASSERT(io.x && io.context && io.pooled && io.tfreq && io.out);
    float * hx = rand_host(nx, 1.0f, 1), * hc = rand_host(nc, 1.0f, 2), * hp = rand_host(np, 1.0f, 3), tf[2 * MMDIT_FREQ_DIM];
    mmdit_timestep_embedding(800.0f, tf);
    mmdit_timestep_embedding(800.0f, tf + MMDIT_FREQ_DIM);
    bk->ops->upload(bk, (void *)io.x, hx, nx);
    bk->ops->upload(bk, (void *)io.context, hc, nc);
    bk->ops->upload(bk, (void *)io.pooled, hp, np);
    bk->ops->upload(bk, (void *)io.tfreq, tf, 2 * MMDIT_FREQ_DIM);
    for (int i = 0; i < warmup; i++) mmdit_forward(m, bk, &s->ar, &io, NULL);
    double * t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        backend_cuda_mark(bk, 0);
        mmdit_forward(m, bk, &s->ar, &io, NULL);
        backend_cuda_mark(bk, 1);
        t[i] = backend_cuda_elapsed_ms(bk, 0, 1);
    }
    float probe[4];
    if (bk->ops->download(bk, probe, io.out, 4) != SD3Q_OK) fprintf(stderr, "forward failed: %s\n", sd3q_session_last_error(s));
    *best = t[0];
    for (int i = 1; i < reps; i++)
        if (t[i] < *best) *best = t[i];
    double med = median(t, reps);
    printf("   output probe %+.4f %+.4f %+.4f %+.4f (finite: %s)\n", probe[0], probe[1], probe[2], probe[3],
           isfinite(probe[0] + probe[1] + probe[2] + probe[3]) ? "yes" : "NO");
    free(t);
    free(hx);
    free(hc);
    free(hp);
    arena_rewind(&s->ar, mark);
    return med;
}

// Joint attention of one block alone (image + text segments), SD3-Medium heads; returns the median ms.
static double time_attention(struct backend * bk, int64_t N, int64_t L, int reps) {
    int64_t B = 2, NH = 24, HD = 64, D = NH * HD;
    void * qi = bk->ops->arena_alloc(bk, (size_t)(B * N * 3 * D) * 2), * qt = bk->ops->arena_alloc(bk, (size_t)(B * L * 3 * D) * 2);
    void * oi = bk->ops->arena_alloc(bk, (size_t)(B * N * D) * 2), * ot = bk->ops->arena_alloc(bk, (size_t)(B * L * D) * 2);
    float * h = rand_host(B * N * 3 * D, 2.0f, 7);
    bk->ops->upload(bk, qi, h, B * N * 3 * D);
    bk->ops->upload(bk, qt, h, B * L * 3 * D);
    struct attn_seg seg[2] = {{qi, oi, N}, {qt, ot, L}};
    for (int i = 0; i < 3; i++) bk->ops->attention(bk, seg, 2, B, NH, HD, 0.125f, NULL);
    double * t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        backend_cuda_mark(bk, 2);
        bk->ops->attention(bk, seg, 2, B, NH, HD, 0.125f, NULL);
        backend_cuda_mark(bk, 3);
        t[i] = backend_cuda_elapsed_ms(bk, 2, 3);
    }
    double med = median(t, reps);
    free(t);
    free(h);
    bk->ops->arena_free(bk, qi);
    bk->ops->arena_free(bk, qt);
    bk->ops->arena_free(bk, oi);
    bk->ops->arena_free(bk, ot);
    return med;
}

// One Linear (+ the GELU fused into its epilogue when gelu) of M rows with the weights w, b alone: median ms per call,
// GEMM_INNER calls back to back per timing, so no host gap sits between the events (as in torch_bounds.py's graphs).
#define GEMM_INNER 10
static double time_gemm(struct backend * bk, const struct wt * w, const struct wt * b, int64_t M, int gelu, int reps) {
    int64_t K = w->row_elems, N = w->shape[0];
    void * x = bk->ops->arena_alloc(bk, (size_t)(M * K) * 2), * y = bk->ops->arena_alloc(bk, (size_t)(M * N) * 2);
    float * h = rand_host(M * K, 1.0f, 9);
    bk->ops->upload(bk, x, h, M * K);
    double * t = malloc(sizeof(double) * (size_t)reps);
    for (int i = -3; i < reps; i++) {  // 3 warm-up passes (the first tunes the shape's algorithm)
        backend_cuda_mark(bk, 4);
        for (int r = 0; r < GEMM_INNER; r++) {
            bk->ops->linear(bk, y, x, M, w, b);
            if (gelu) bk->ops->act(bk, y, y, M * N, ACT_GELU_TANH);
        }
        backend_cuda_mark(bk, 5);
        if (i >= 0) t[i] = backend_cuda_elapsed_ms(bk, 4, 5) / GEMM_INNER;
    }
    double med = median(t, reps);
    free(t);
    free(h);
    bk->ops->arena_free(bk, x);
    bk->ops->arena_free(bk, y);
    return med;
}

// The Linear shapes of one 1024² CFG step alone (image stream M = 2·N rows, text stream M = 2·ctx), TFLOP/s each and
// the time they take in a step (24 blocks; the last block's text stream has no proj/MLP).
static void gemm_table(struct backend * bk, const struct mmdit * m, int64_t N, int ctx, int reps) {
    const struct mmdit_stream * st[2] = {&m->blocks[0].img, &m->blocks[0].txt};
    const char * sn[2] = {"image", "text"};
    double total = 0;
    printf("   Linear shapes alone (1024² step; %d calls back to back per timing):\n", GEMM_INNER);
    for (int k = 0; k < 2; k++) {
        int64_t M = k ? 2LL * ctx : 2 * N;
        struct {
            const char * name;
            const struct wt * w, * b;
            int gelu;
        } g[4] = {{"qkv", &st[k]->qkv_w, &st[k]->qkv_b, 0}, {"proj", &st[k]->proj_w, &st[k]->proj_b, 0},
                  {"fc1+GELU", &st[k]->fc1_w, &st[k]->fc1_b, 1}, {"fc2", &st[k]->fc2_w, &st[k]->fc2_b, 0}};
        for (int i = 0; i < 4; i++) {
            double ms = time_gemm(bk, g[i].w, g[i].b, M, g[i].gelu, reps);
            double fl = 2.0 * M * (double)g[i].w->shape[0] * (double)g[i].w->row_elems, tf = fl / (ms * 1e-3) / 1e12;
            int calls = k && i ? 23 : 24;
            total += calls * ms;
            printf("     %-6s %-9s M=%-5lld K=%-5lld N=%-5lld %.4f ms  %6.1f TFLOP/s  × %d = %.2f ms\n", sn[k], g[i].name, (long long)M,
                   (long long)g[i].w->row_elems, (long long)g[i].w->shape[0], ms, tf, calls, calls * ms);
            printf("RESULT gemm=%s_%s M=%lld ms=%.4f tflops=%.1f\n", sn[k], g[i].name, (long long)M, ms, tf);
        }
    }
    printf("     these shapes, all blocks: %.2f ms\n", total);
}

// See the top of the file.
int main(int argc, char ** argv) {
    const char * weights = "/tmp/sd3q-bench-sd3m-f16.safetensors";
    int res[8] = {512, 1024}, nres = 2, reps = 20, warmup = 3, steps = 28, ctx = 333, profile = 1, gen_only = 0, step_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--res") && i + 1 < argc) nres = bench_parse_list(argv[++i], res, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--warmup") && i + 1 < argc) warmup = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-profile")) profile = 0;
        else if (!strcmp(argv[i], "--step-only")) step_only = 1;  // e.g. under a profiler: the steps without the sweeps
        else if (!strcmp(argv[i], "--gen-only")) gen_only = 1;  // write/load the weights and count FLOPs (no GPU needed)
        else {
            fprintf(stderr, "usage: bench-cuda-mmdit [--weights FILE] [--res 512,1024] [--reps 20] [--warmup 3] [--steps 28] [--no-profile] "
                            "[--step-only]\n");
            return !strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!gen_only && !backend_cuda_available()) {
        fprintf(stderr, "bench-cuda-mmdit: no usable CUDA GPU\n");
        return 77;
    }
    if (!path_is_file(weights) && make_weights(weights) != 0) return 1;
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = weights;
    struct sd3q_model * model;
    char err[1024];
    double t0 = bench_now();
    if (sd3q_model_load(&mp, &model, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct sd3q_mmdit_info info;
    sd3q_model_mmdit_info(model, &info);
    const struct mmdit * m = model->mmdit;
    printf("loaded %.3f G parameters (depth %d, D %d) in %.2f s\n", (double)info.n_params / 1e9, info.depth, info.hidden, bench_now() - t0);
    if (gen_only) {
        for (int r = 0; r < nres; r++) {
            struct flops f = count_flops(&info, 2, res[r] / 8, ctx);
            printf("%d²: FLOPs per CFG step %.4f T (linear %.4f T, attention %.4f T)\n", res[r], (f.linear + f.attn) / 1e12, f.linear / 1e12,
                   f.attn / 1e12);
        }
        sd3q_model_free(model);
        return 0;
    }

    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CUDA;
    sp.max_batch = 2, sp.max_latent_h = 128, sp.max_latent_w = 128, sp.max_context = ctx;
    struct sd3q_session * s;
    t0 = bench_now();
    if (sd3q_session_init(model, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "session: %s\n", err);
        return 1;
    }
    char dev[256] = "?";
    backend_cuda_device_name(s->bk, dev, sizeof dev);
    printf("device %s; session init (weights converted to bf16 and uploaded) %.2f s; arena %.1f MiB\n", dev, bench_now() - t0,
           (double)sd3q_session_arena_bytes(s) / 1048576.0);
    bench_cuda_mem("after init", s->bk);
    printf("RESULT device=\"%s\"\n", dev);
    int fa = backend_cuda_set_attention_variant(s->bk, -1);
    int fs = backend_cuda_attention_variant_for(s->bk, BACKEND_CUDA_FA_AUTO_SPLIT - 1);
    int fl = backend_cuda_attention_variant_for(s->bk, BACKEND_CUDA_FA_AUTO_SPLIT);
    if (fa != BACKEND_CUDA_FA_AUTO) printf("flash attention: variant %d (forced by $SD3Q_CUDA_FA)\n", fa);
    else if (fs != fl) printf("flash attention: auto (%d below %d tokens, else %d)\n", fs, BACKEND_CUDA_FA_AUTO_SPLIT, fl);
    else printf("flash attention: auto (variant %d)\n", fs);

    for (int r = 0; r < nres; r++) {
        int lat = res[r] / 8;
        if (lat > 128) continue;
        struct flops f = count_flops(&info, 2, lat, ctx);
        double best, ms = time_forward(s, m, lat, ctx, warmup, reps, &best);
        double tf = (f.linear + f.attn) / (ms * 1e-3) / 1e12;
        int64_t N = (int64_t)(lat / 2) * (lat / 2);
        double af = 4.0 * 2 * 1536 * (double)(N + ctx) * (double)(N + ctx);
        int v0 = backend_cuda_set_attention_variant(s->bk, -1);  // BACKEND_CUDA_FA_AUTO unless $SD3Q_CUDA_FA forces one
        int vdef = backend_cuda_attention_variant_for(s->bk, N + ctx), vbest = vdef;  // what the step above ran
        double ams = 1e30;
        for (int v = 0; v < backend_cuda_attention_variants(); v++) {  // every flash variant alone (--step-only: the default)
            if (step_only && v != vdef) continue;
            backend_cuda_set_attention_variant(s->bk, v);
            if (backend_cuda_set_attention_variant(s->bk, -1) != v) continue;  // not available on this device/build
            double t = time_attention(s->bk, N, ctx, reps);
            printf("   attention variant %d: %.3f ms, %.1f TFLOP/s\n", v, t, af / (t * 1e-3) / 1e12);
            printf("RESULT res=%d attn_variant=%d attn_ms=%.4f attn_tflops=%.1f\n", res[r], v, t, af / (t * 1e-3) / 1e12);
            if (t < ams) ams = t, vbest = v;
        }
        if (vbest != vdef) {  // the whole step with the fastest variant too
            backend_cuda_set_attention_variant(s->bk, vbest);
            double b2, ms2 = time_forward(s, m, lat, ctx, 1, reps, &b2);
            printf("   step with attention variant %d: median %.2f ms (best %.2f)\n", vbest, ms2, b2);
            printf("RESULT res=%d variant=%d step_ms=%.3f best_ms=%.3f tflops=%.1f\n", res[r], vbest, ms2, b2,
                   (f.linear + f.attn) / (ms2 * 1e-3) / 1e12);
        }
        backend_cuda_set_attention_variant(s->bk, v0);  // back to the default (automatic again if it was)
        printf("\n== %d² CFG step (batch 2, %lld image + %d text tokens, attention variant %d%s): median %.2f ms (best %.2f, %d reps)\n",
               res[r], (long long)N, ctx, vdef, v0 == BACKEND_CUDA_FA_AUTO ? " auto" : "", ms, best, reps);
        printf("   FLOPs per step %.3f T (linear %.3f T, attention %.3f T) → %.1f TFLOP/s\n", (f.linear + f.attn) / 1e12, f.linear / 1e12,
               f.attn / 1e12, tf);
        printf("   one block's joint attention alone: %.3f ms, %.1f TFLOP/s\n", ams, af / (ams * 1e-3) / 1e12);
        printf("RESULT res=%d step_ms=%.3f best_ms=%.3f tflops=%.1f flops_T=%.4f attn_ms=%.4f attn_tflops=%.1f\n", res[r], ms, best, tf,
               (f.linear + f.attn) / 1e12, ams, af / (ams * 1e-3) / 1e12);
        if (lat == 128 && !step_only) gemm_table(s->bk, m, N, ctx, reps);
        bench_cuda_mem("after the timed passes", s->bk);
    }

    // a whole 28-step 1024² image (latents only: host clock, uploads and the CFG/Euler update included)
    if (steps > 0) {
        int lat = 128;
        int64_t nl = 16LL * lat * lat;
        float * lt = rand_host(nl, 1.0f, 11), * c0 = rand_host((int64_t)ctx * info.context_dim, 1.0f, 12);
        float * c1 = rand_host((int64_t)ctx * info.context_dim, 1.0f, 13), * p0 = rand_host(info.pooled_dim, 1.0f, 14);
        float * p1 = rand_host(info.pooled_dim, 1.0f, 15);
        struct sd3q_cond cond = {ctx, c1, p1}, unc = {ctx, c0, p0};
        double ts = bench_now();
        enum sd3q_status st = sd3q_session_sample(s, lat, lat, steps, 3.0f, 7.0f, &cond, &unc, lt);
        double dt = bench_now() - ts;
        if (st != SD3Q_OK) fprintf(stderr, "sample: %s\n", sd3q_session_last_error(s));
        printf("\n== %d-step 1024² sampling (CFG 7, batch 2 per step): %.3f s (%.2f ms per step)\n", steps, dt, 1e3 * dt / steps);
        printf("RESULT sample_steps=%d sample_s=%.3f\n", steps, dt);
        free(lt), free(c0), free(c1), free(p0), free(p1);
    }
    struct cuda_mem_info mi;
    backend_cuda_mem_info(s->bk, &mi);
    bench_cuda_mem("end (peak = whole run)", s->bk);
    printf("RESULT weights_mib=%.1f backend_peak_mib=%.1f device_used_mib=%.1f\n", mi.weights_now / 1048576.0, mi.backend_peak / 1048576.0,
           mi.device_used / 1048576.0);
    s->bk->ops->release(s->bk, SD3Q_COMP_MMDIT);
    bench_cuda_mem("after release(MMDiT)", s->bk);
    sd3q_session_free(s);

    if (profile) {  // per-op breakdown at 1024² (each op synchronised: the sum exceeds the step time)
        sp.profile = 1;
        if (sd3q_session_init(model, &sp, &s, err, sizeof err) == SD3Q_OK) {
            double best;
            time_forward(s, m, 128, ctx, 1, 1, &best);
            sd3q_session_profile(s, 1, NULL, 0);
            time_forward(s, m, 128, ctx, 0, 1, &best);
            char prof[4096];
            sd3q_session_profile(s, 1, prof, sizeof prof);
            printf("\n== per-op profile, one 1024² CFG step, ops synchronised one by one (so GELU runs unfused here)\n%s", prof);
            sd3q_session_free(s);
        }
    }
    sd3q_model_free(model);
    return 0;
}
#endif
