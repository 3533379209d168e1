/*
 * test-cuda-mmdit-gpu.c — the whole model code on the CUDA backend (bf16 storage, f32 accumulation) against the
 * golden fixtures and the CPU f32 path:
 *   1. the four golden MMDiT cases (tests/golden/mmdit/): the output velocity against the fixture's `out` and
 *      against the CPU backend; intermediates are printed (not judged: they are inputs of later layers);
 *   2. Euler sampling with CFG on a tiny MMDiT: final latents GPU vs CPU (PSNR);
 *   3. the tiny pipeline (tests/golden/pipeline/: CLIP-L, CLIP-G, T5, MMDiT, VAE): prompt → image on the GPU vs the
 *      CPU (PSNR ≥ 35 dB) and vs the fixture's image; sd3q_session_generate with low_memory leaves no weight copy on
 *      the device and gives the image of a resident session; a profiled session (every op timed) gives it too, and its
 *      table shows the fused gate + LN op.
 *
 * Error measure (the "relative error per output"): e_i = |gpu_i − ref_i| / max_j |ref_j|; the bounds are
 * max_i e_i ≤ 1e-2 and mean_i e_i ≤ 3e-3. PSNR = 10·log10(range² / MSE) with range = max(ref) − min(ref).
 * Exits 77 without a GPU (or without a CUDA build).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/session.h"
#include "testutil.h"

#ifndef SD3Q_HAVE_CUDA
// Without a CUDA build there is nothing to test.
int main(void) {
    printf("test-cuda-mmdit-gpu: built without CUDA, skipped\n");
    return 77;
}
#else

#include "backend/cuda/cuda-backend.h"

#define E_MAX  1e-2
#define E_MEAN 3e-3
#define PSNR_MIN 35.0

// Prints e_max, e_mean and rel L2 of got vs ref; when judge, counts a failure above the bounds or on non-finite.
static void compare(const char * label, const float * got, const float * ref, int64_t n, int judge) {
    double maxref = 0, emax = 0, esum = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) bad = 1;
        double e = fabs((double)got[i] - ref[i]) / (maxref > 0 ? maxref : 1);
        esum += e;
        if (e > emax) emax = e;
    }
    double emean = n ? esum / (double)n : 0;
    int ok = !bad && emax <= E_MAX && emean <= E_MEAN;
    printf("  %-46s n=%-7lld e_max=%.2e e_mean=%.2e rel_l2=%.2e %s\n", label, (long long)n, emax, emean, rel_l2(got, ref, n),
           !judge ? "(info)" : ok ? "OK" : "FAIL");
    if (judge && !ok) g_failures++;
}

// PSNR of got against ref over the reference's range.
static double psnr(const float * got, const float * ref, int64_t n) {
    double lo = 1e30, hi = -1e30, se = 0;
    for (int64_t i = 0; i < n; i++) {
        if (ref[i] < lo) lo = ref[i];
        if (ref[i] > hi) hi = ref[i];
        double d = (double)got[i] - ref[i];
        se += isfinite(d) ? d * d : 1e30;
    }
    double mse = se / (double)n, range = hi - lo;
    return mse > 0 ? 10.0 * log10(range * range / mse) : 200.0;
}

struct hook_ctx {
    struct sd3q_session ** s;
    const struct st_file * io;
    const char *           label;
};

// Downloads an observed activation and compares it with the fixture's (informational).
static void on_tensor(void * ud, const char * name, const void * data, int64_t batch, int64_t rows, int64_t cols) {
    struct hook_ctx * h = ud;
    const struct st_tensor * t = st_find(h->io, name);
    int64_t n = batch * rows * cols;
    if (!t || t->numel != n) return;
    float * ref = malloc(sizeof(float) * (size_t)n), * got = malloc(sizeof(float) * (size_t)n);
    dtype_to_f32(t->type, t->data, ref, n);
    struct backend * bk = (*h->s)->bk;
    if (bk->ops->download(bk, got, data, n) == SD3Q_OK) {
        char label[160];
        snprintf(label, sizeof label, "%s %s", h->label, name);
        compare(label, got, ref, n, 0);
    }
    free(ref);
    free(got);
}

struct wcheck {
    struct backend * bk;
    int64_t          n, bad, weights;
};

// One weight's device copy against its stored values rounded to bf16: must be identical.
static void check_weight(void * ud, const struct wt * w) {
    struct wcheck * k = ud;
    int64_t n = wt_numel(w);
    float * ref = malloc(sizeof(float) * (size_t)n), * got = malloc(sizeof(float) * (size_t)n);
    wt_rows_to_f32(w, 0, w->shape[0], ref);
    const void * d = backend_cuda_weight(k->bk, w);
    int64_t bad = n;
    if (d && k->bk->ops->download(k->bk, got, d, n) == SD3Q_OK) {
        bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float r = bf16_to_f32(f32_to_bf16(ref[i]));
            if (memcmp(&r, &got[i], sizeof r) != 0) bad++;
        }
    }
    if (bad) printf("    weight %s (%s, %d part(s)): %lld of %lld values differ\n", w->name, dtype_name(w->type), w->nparts, (long long)bad, (long long)n);
    k->n += n, k->bad += bad, k->weights++;
    free(ref);
    free(got);
}

// A session on `dev` planned for the given maxima.
static struct sd3q_session * open_session(const struct sd3q_model * m, enum sd3q_device dev, int B, int h, int w, int L) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = dev;
    sp.max_batch = B, sp.max_latent_h = h, sp.max_latent_w = w, sp.max_context = L;
    sp.n_threads = 4;
    struct sd3q_session * s = NULL;
    char err[1024];
    enum sd3q_status st = sd3q_session_init(m, &sp, &s, err, sizeof err);
    CHECKF(st == SD3Q_OK, "session (%s): %s", dev == SD3Q_DEVICE_CUDA ? "cuda" : "cpu", err);
    return s;
}

// One golden MMDiT case: weight copies, output vs fixture and vs CPU, determinism.
static void golden_case(const char * dir, const char * model_rel) {
    char mpath[1100], iopath[1100], err[1024];
    snprintf(mpath, sizeof mpath, "%s/%s", dir, model_rel);
    snprintf(iopath, sizeof iopath, "%s/io.safetensors", dir);
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = mpath;
    struct sd3q_model * m = NULL;
    enum sd3q_status st = sd3q_model_load(&mp, &m, err, sizeof err);
    CHECKF(st == SD3Q_OK, "load %s: %s", mpath, err);
    if (st != SD3Q_OK) return;
    struct st_file io;
    struct sd3q_errbuf e;
    if (st_open(iopath, &io, &e) != SD3Q_OK) {
        CHECKF(0, "%s", e.msg);
        sd3q_model_free(m);
        return;
    }
    int64_t xs[4] = {-1, 16, -1, -1}, cs[3] = {-1, -1, -1}, ps[2] = {-1, -1}, ts[1] = {-1}, os[4] = {-1, -1, -1, -1};
    float * x = st_read_f32(&io, "x", 4, xs, &e), * ctx = st_read_f32(&io, "context", 3, cs, &e);
    float * pooled = st_read_f32(&io, "pooled", 2, ps, &e), * t = st_read_f32(&io, "timestep", 1, ts, &e);
    float * ref = st_read_f32(&io, "out", 4, os, &e);
    SD3Q_ASSERT(x && ctx && pooled && t && ref);
    int64_t n = os[0] * os[1] * os[2] * os[3];
    float * gpu = malloc(sizeof(float) * (size_t)n), * cpu = malloc(sizeof(float) * (size_t)n);
    const char * name = strrchr(dir, '/') + 1;
    printf("[%s]\n", name);
    struct sd3q_session * sc = open_session(m, SD3Q_DEVICE_CPU, (int)xs[0], (int)xs[2], (int)xs[3], (int)cs[1]);
    struct sd3q_session * sg = open_session(m, SD3Q_DEVICE_CUDA, (int)xs[0], (int)xs[2], (int)xs[3], (int)cs[1]);
    if (sg) {  // every weight's device copy = its stored values rounded to bf16
        struct wcheck k = {sg->bk, 0, 0, 0};
        mmdit_for_each_weight(m->mmdit, check_weight, &k);
        printf("  device weight copies: %lld weights, %lld values, %lld differ from bf16(stored) %s\n", (long long)k.weights, (long long)k.n,
               (long long)k.bad, k.bad ? "FAIL" : "OK");
        CHECK(k.bad == 0);
    }
    if (sc && sg) {
        st = sd3q_session_mmdit(sc, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, cpu);
        CHECKF(st == SD3Q_OK, "cpu forward: %s", sd3q_session_last_error(sc));
        struct hook_ctx hc = {&sg, &io, "gpu"};
        sg->hook = (struct mmdit_hook){.ud = &hc, .fn = on_tensor};
        for (int64_t i = 0; i < n; i++) gpu[i] = 1e30f;  // poison: every element must come back
        st = sd3q_session_mmdit(sg, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, gpu);
        CHECKF(st == SD3Q_OK, "gpu forward: %s", sd3q_session_last_error(sg));
        sg->hook = (struct mmdit_hook){0};
        if (st == SD3Q_OK) {
            compare("gpu out vs golden", gpu, ref, n, 1);
            compare("gpu out vs cpu f32", gpu, cpu, n, 1);
            compare("cpu out vs golden (sanity)", cpu, ref, n, 1);
            // a second call on the same session must give the same result (no state leaks between passes)
            float * again = malloc(sizeof(float) * (size_t)n);
            st = sd3q_session_mmdit(sg, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, again);
            CHECKF(st == SD3Q_OK && memcmp(again, gpu, sizeof(float) * (size_t)n) == 0, "second gpu pass differs from the first");
            free(again);
        }
    }
    sd3q_session_free(sc);
    sd3q_session_free(sg);
    free(gpu);
    free(cpu);
    free(x);
    free(ctx);
    free(pooled);
    free(t);
    free(ref);
    st_close(&io);
    sd3q_model_free(m);
}

// Euler + CFG sampling on the tiny SD3 MMDiT: GPU latents vs CPU latents.
static void sampling(void) {
    char mpath[1100], iopath[1100], err[1024];
    snprintf(mpath, sizeof mpath, "%s/tests/golden/mmdit/sd3_single_f16/model.safetensors", SD3Q_SOURCE_DIR);
    snprintf(iopath, sizeof iopath, "%s/tests/golden/mmdit/sd3_single_f16/io.safetensors", SD3Q_SOURCE_DIR);
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = mpath;
    struct sd3q_model * m = NULL;
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        CHECKF(0, "load: %s", err);
        return;
    }
    struct st_file io;
    struct sd3q_errbuf e;
    SD3Q_ASSERT(st_open(iopath, &io, &e) == SD3Q_OK);
    int64_t xs[4] = {-1, 16, -1, -1}, cs[3] = {-1, -1, -1}, ps[2] = {-1, -1};
    float * x = st_read_f32(&io, "x", 4, xs, &e), * ctx = st_read_f32(&io, "context", 3, cs, &e);
    float * pooled = st_read_f32(&io, "pooled", 2, ps, &e);
    SD3Q_ASSERT(x && ctx && pooled && xs[0] == 2);
    int h = (int)xs[2], w = (int)xs[3], L = (int)cs[1];
    int64_t nl = 16LL * h * w;
    struct sd3q_cond cond = {L, ctx + cs[1] * cs[2], pooled + ps[1]}, unc = {L, ctx, pooled};
    float * lat[2];
    printf("[sampling: tiny SD3 MMDiT, 8 steps, CFG 5]\n");
    for (int d = 0; d < 2; d++) {
        lat[d] = malloc(sizeof(float) * (size_t)nl);
        memcpy(lat[d], x, sizeof(float) * (size_t)nl);
        struct sd3q_session * s = open_session(m, d ? SD3Q_DEVICE_CUDA : SD3Q_DEVICE_CPU, 2, h, w, L);
        if (!s) continue;
        enum sd3q_status st = sd3q_session_sample(s, h, w, 8, 3.0f, 5.0f, &cond, &unc, lat[d]);
        CHECKF(st == SD3Q_OK, "sample (%s): %s", d ? "cuda" : "cpu", sd3q_session_last_error(s));
        sd3q_session_free(s);
    }
    double p = psnr(lat[1], lat[0], nl);
    printf("  final latents gpu vs cpu: PSNR %.1f dB (≥ %.0f)\n", p, PSNR_MIN);
    compare("final latents gpu vs cpu", lat[1], lat[0], nl, 0);
    CHECKF(p >= PSNR_MIN, "latent PSNR %.1f dB", p);
    free(lat[0]);
    free(lat[1]);
    free(x);
    free(ctx);
    free(pooled);
    st_close(&io);
    sd3q_model_free(m);
}

// The tiny pipeline prompt → image on one device; returns the image [3, 64, 64] or NULL.
static float * pipeline_image(const struct sd3q_model * m, enum sd3q_device dev, const float * noise, int lat, int steps, float shift,
                              float cfg, const char * prompt, const char * negative) {
    int L = sd3q_model_context_len(m, 77), D = sd3q_model_context_dim(m), P = sd3q_model_pooled_dim(m);
    struct sd3q_session * s = open_session(m, dev, 2, lat, lat, L);
    if (!s) return NULL;
    float * ctx = malloc(sizeof(float) * (size_t)(2 * L * D)), * pooled = malloc(sizeof(float) * (size_t)(2 * P));
    float * z = malloc(sizeof(float) * (size_t)(16 * lat * lat)), * img = malloc(sizeof(float) * (size_t)(3 * 64 * lat * lat));
    enum sd3q_status st = sd3q_session_encode_prompt(s, prompt, 77, ctx, pooled);
    if (st == SD3Q_OK) st = sd3q_session_encode_prompt(s, negative, 77, ctx + (size_t)L * D, pooled + P);
    memcpy(z, noise, sizeof(float) * (size_t)(16 * lat * lat));
    struct sd3q_cond cond = {L, ctx, pooled}, unc = {L, ctx + (size_t)L * D, pooled + P};
    if (st == SD3Q_OK) st = sd3q_session_sample(s, lat, lat, steps, shift, cfg, &cond, &unc, z);
    float sc = 1, sh = 0;
    if (st == SD3Q_OK) st = sd3q_model_vae_factors(m, &sc, &sh);
    for (int64_t i = 0; i < 16LL * lat * lat; i++) z[i] = z[i] / sc + sh;
    if (st == SD3Q_OK) st = sd3q_session_vae_decode(s, 1, lat, lat, z, img);
    CHECKF(st == SD3Q_OK, "pipeline (%s): %s", dev == SD3Q_DEVICE_CUDA ? "cuda" : "cpu", sd3q_session_last_error(s));
    sd3q_session_free(s);
    free(ctx);
    free(pooled);
    free(z);
    if (st != SD3Q_OK) {
        free(img);
        return NULL;
    }
    return img;
}

// sd3q_session_generate on the GPU with sessions of residency policy low_memory; returns the image or NULL, and the
// bytes of weight copies the backend holds afterwards in *weights_after. profile: the session times every op (a
// wrapped backend), and its table must show the fused gate + LN op that the CUDA backend offers.
static float * generate_image(const struct sd3q_model * m, int low_memory, int profile, const float * noise, int lat,
                              const char * prompt, const char * negative, size_t * weights_after) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CUDA, sp.low_memory = low_memory, sp.profile = profile, sp.n_threads = 4;
    sp.max_batch = 2, sp.max_latent_h = lat, sp.max_latent_w = lat, sp.max_context = sd3q_model_context_len(m, 77);
    struct sd3q_session * s = NULL;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        CHECKF(0, "session (low_memory %d): %s", low_memory, err);
        return NULL;
    }
    struct sd3q_gen_params gp = sd3q_gen_default_params();
    gp.prompt = prompt, gp.negative_prompt = negative, gp.width = gp.height = 8 * lat, gp.steps = 4, gp.t5_len = 77;
    gp.cfg = 5.0f, gp.shift = 3.0f, gp.init_noise = noise;
    float * img = malloc(sizeof(float) * (size_t)(3 * 64 * lat * lat));
    enum sd3q_status st = img ? sd3q_session_generate(s, &gp, img, NULL, NULL) : SD3Q_ERR_OOM;
    CHECKF(st == SD3Q_OK, "generate (low_memory %d): %s", low_memory, sd3q_session_last_error(s));
    struct cuda_mem_info mi = {0};
    if (profile) {  // the session's backend is the profiling wrapper
        char prof[2048];
        sd3q_session_profile(s, 1, prof, sizeof prof);
        CHECKF(strstr(prof, "linear") && strstr(prof, "attention") && strstr(prof, "gate_ln_modulate"), "profile table:\n%s", prof);
    } else {
        SD3Q_ASSERT(backend_cuda_mem_info(s->bk, &mi) == 0);
    }
    *weights_after = mi.weights_now;
    sd3q_session_free(s);
    if (st != SD3Q_OK) {
        free(img);
        return NULL;
    }
    return img;
}

// The tiny pipeline on both devices, compared as images.
static void pipeline(void) {
    char mpath[1100], iopath[1100], err[1024];
    snprintf(mpath, sizeof mpath, "%s/tests/golden/pipeline", SD3Q_SOURCE_DIR);
    snprintf(iopath, sizeof iopath, "%s/tests/golden/pipeline/io.safetensors", SD3Q_SOURCE_DIR);
    printf("[pipeline: tiny SD3, prompt → 64×64 image, 4 steps, CFG 5]\n");
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = mpath;
    struct sd3q_model * m = NULL;
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        CHECKF(0, "load %s: %s", mpath, err);
        return;
    }
    struct st_file io;
    struct sd3q_errbuf e;
    SD3Q_ASSERT(st_open(iopath, &io, &e) == SD3Q_OK);
    int64_t ns[4] = {1, 16, -1, -1}, is[4] = {1, 3, -1, -1};
    float * noise = st_read_f32(&io, "noise", 4, ns, &e), * gold = st_read_f32(&io, "image", 4, is, &e);
    SD3Q_ASSERT(noise && gold);
    const char * prompt = "a photo of an astronaut riding a horse on the moon, 4k", * negative = "blurry, low quality";
    float * cpu = pipeline_image(m, SD3Q_DEVICE_CPU, noise, (int)ns[2], 4, 3.0f, 5.0f, prompt, negative);
    float * gpu = pipeline_image(m, SD3Q_DEVICE_CUDA, noise, (int)ns[2], 4, 3.0f, 5.0f, prompt, negative);
    int64_t n = 3 * is[2] * is[3];
    if (cpu && gpu) {
        double p = psnr(gpu, cpu, n), pg = psnr(gpu, gold, n), pc = psnr(cpu, gold, n);
        printf("  image gpu vs cpu: PSNR %.1f dB (≥ %.0f); gpu vs golden %.1f dB; cpu vs golden %.1f dB\n", p, PSNR_MIN, pg, pc);
        compare("image gpu vs cpu", gpu, cpu, n, 0);
        CHECKF(p >= PSNR_MIN, "image PSNR %.1f dB", p);
    }
    // residency: a low_memory session ends generate holding no weights, a resident one holds them all
    size_t w_low = 1, w_res = 0;
    float * low = generate_image(m, 1, 0, noise, (int)ns[2], prompt, negative, &w_low);
    float * res = generate_image(m, 0, 0, noise, (int)ns[2], prompt, negative, &w_res);
    if (low && res) {
        double p = psnr(low, res, n);
        printf("  generate low_memory vs resident: PSNR %.1f dB; weight copies held afterwards %zu vs %zu bytes\n", p, w_low, w_res);
        CHECKF(w_low == 0, "low_memory session still holds %zu bytes of weight copies", w_low);
        CHECKF(w_res > 0, "resident session holds no weight copies");
        CHECKF(p >= PSNR_MIN, "low_memory image PSNR %.1f dB", p);
    }
    // per-op profiling: the same image (its Linears run without the fused GELU epilogue: bf16 rounding differs)
    size_t w_prof = 0;
    float * prof = generate_image(m, 0, 1, noise, (int)ns[2], prompt, negative, &w_prof);
    if (prof && res) {
        double p = psnr(prof, res, n);
        printf("  generate profiled vs resident: PSNR %.1f dB\n", p);
        CHECKF(p >= PSNR_MIN, "profiled image PSNR %.1f dB", p);
    }
    free(prof);
    free(low);
    free(res);
    free(cpu);
    free(gpu);
    free(noise);
    free(gold);
    st_close(&io);
    sd3q_model_free(m);
}

// Usage: test-cuda-mmdit-gpu [--only golden|sampling|pipeline]
int main(int argc, char ** argv) {
    if (!backend_cuda_available()) {
        printf("test-cuda-mmdit-gpu: no usable CUDA GPU, skipped\n");
        return 77;
    }
    const char * only = argc > 2 && !strcmp(argv[1], "--only") ? argv[2] : NULL;
    const char * root = SD3Q_SOURCE_DIR "/tests/golden/mmdit";
    struct { const char * name, * model; } cases[] = {
        {"sd3_single_f16", "model.safetensors"},
        {"sd3_diffusers_f32_nonsquare", "."},
        {"sd35l_bf16", "model.safetensors"},
        {"sd35m_diffusers_bf16", "."},
    };
    if (!only || !strcmp(only, "golden"))
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char dir[512];
            snprintf(dir, sizeof dir, "%s/%s", root, cases[i].name);
            golden_case(dir, cases[i].model);
            fflush(stdout);
        }
    if (!only || !strcmp(only, "sampling")) sampling();
    fflush(stdout);
    if (!only || !strcmp(only, "pipeline")) pipeline();
    return test_finish("test-cuda-mmdit-gpu");
}
#endif
