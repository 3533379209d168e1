/*
 * bench-t5.c — SD3's text encoders at full size on the CPU: a T5-XXL encode of 256 tokens (4096 wide, 24 blocks,
 * 64 heads, d_ff 10240, 32128 embedding rows: 4.76 B parameters) and a CLIP-G encode of 77 tokens (1280 wide,
 * 32 layers), with random weights written once to safetensors files under /tmp (F16; with --f8 also a T5 whose
 * Linear weights are F8_E4M3, like sd3_medium_incl_clips_t5xxlfp8) and memory-mapped by the normal loader.
 *
 * Reports per (encoder, dtype, threads): seconds per encode and GFLOP/s, and the memory that shows the weights are not
 * copied: RssAnon (our allocations: arena, backend scratch, staging) against RssFile (pages of the mapped file) after
 * each pass, VmHWM (peak RSS), and RssFile after sd3q_model_release_pages. A float32 copy of T5-XXL would be 19 GB of
 * RssAnon.
 *
 * Usage: bench-t5 [--dir /tmp] [--threads 1,2] [--tokens 256] [--f8] [--skip-t5] [--skip-clip] [--reps 1]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "io/fileutil.h"
#include "model/clip.h"
#include "model/session.h"
#include "model/t5.h"
#include "model/text.h"
#include "sd3q.h"
#include "common.h"


// CPU seconds of the whole process (all threads): a contention-robust cost next to the wall time.
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}


static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

// xorshift64*: fast, fine for benchmark weights.
static uint64_t rnd_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}


// ---- random weights (bench/weights.c streams them to disk: the T5 file is 9.5 GB) --------------------------------------

// T5-XXL's tensors (original single-file names); Linear weights in `lin` (F16 or F8_E4M3).
static int make_t5(const char * path, enum dtype lin) {
    struct bw_file * f = bw_new();
    bw_add_t5(f, lin);
    int r = bw_write(f, path);
    bw_free(f);
    return r;
}

// CLIP-G's tensors (bigG/14 text tower, F16).
static int make_clip_g(const char * path) {
    struct bw_file * f = bw_new();
    bw_add_clip(f, "text_encoders.clip_g.transformer.", 1280, 32, 5120, 1);
    int r = bw_write(f, path);
    bw_free(f);
    return r;
}

// Prints the memory line after a pass.
static void mem_line(const char * when) {
    printf("   %-28s RssAnon %8.1f MiB   RssFile %8.1f MiB   VmHWM %8.1f MiB\n", when, proc_status_mib("RssAnon"), proc_status_mib("RssFile"),
           proc_status_mib("VmHWM"));
}

// Loads a model from split component files (either may be NULL).
static struct sd3q_model * load(const char * t5, const char * clip_g) {
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.t5xxl_path  = t5;
    mp.clip_g_path = clip_g;
    struct sd3q_model * m = NULL;
    char err[1024];
    double t0 = bench_now();
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    printf("loaded %s in %.3f s; RssAnon %.1f MiB, RssFile %.1f MiB (the weights stay in the mapping)\n", t5 ? t5 : clip_g, bench_now() - t0,
           proc_status_mib("RssAnon"), proc_status_mib("RssFile"));
    return m;
}

// A CPU session for the text encoders with room for `t5_tokens` T5 tokens.
static struct sd3q_session * session(const struct sd3q_model * m, int threads, int t5_tokens) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = threads, sp.max_batch = 1, sp.max_latent_h = 2, sp.max_latent_w = 2;
    sp.max_context = 77 + t5_tokens;
    sp.profile     = 1;
    struct sd3q_session * s = NULL;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) fprintf(stderr, "%s\n", err);
    return s;
}

// T5-XXL: encodes `L` random tokens per thread count.
static int bench_t5(const char * path, const char * label, const int * thr, int nthr, int L, int reps) {
    struct sd3q_model * m = load(path, NULL);
    if (!m) return 1;
    const struct t5_config * c = &m->t5->cfg;
    const double D = c->d_model, I = c->inner, F = c->d_ff;
    const double flops = c->layers * (2.0 * L * D * 3 * I + 4.0 * L * L * I + 2.0 * L * I * D + 2.0 * L * D * 2 * F + 2.0 * L * F * D);
    printf("T5 %s: %.3f G parameters (a float32 copy would be %.1f GiB), %d tokens → %.1f GFLOP per encode\n", label,
           (double)m->t5->n_params / 1e9, (double)m->t5->n_params * 4 / (1 << 30), L, flops / 1e9);
    int32_t * ids = malloc(sizeof(int32_t) * (size_t)L);
    float * out = malloc(sizeof(float) * (size_t)L * c->d_model);
    for (int i = 0; i < L; i++) ids[i] = i < L / 2 ? (int32_t)(rnd_u64() % 32000) : 0;  // half prompt, half <pad>
    int cold = 1;
    for (int k = 0; k < nthr; k++) {
        struct sd3q_session * s = session(m, thr[k], L);
        if (!s) return 1;
        printf("== T5 %s, %d token(s), %d thread(s): arena %.1f MiB\n", label, L, thr[k], (double)sd3q_session_arena_bytes(s) / (1 << 20));
        const int passes = reps + cold;  // the first pass of the run faults the mapped weights in
        for (int r = 0; r < passes; r++) {
            double t0 = bench_now(), c0 = cpu_now();
            if (text_encode_t5(s, ids, L, out) != SD3Q_OK) {
                fprintf(stderr, "%s\n", sd3q_session_last_error(s));
                return 1;
            }
            double dt = bench_now() - t0, dc = cpu_now() - c0;
            double sum = 0;
            for (int64_t i = 0; i < (int64_t)L * c->d_model; i++) sum += fabs((double)out[i]);
            printf("   %s pass: %7.2f s  %7.1f GFLOP/s   (CPU time %.2f s = %.1f GFLOP per CPU-second; mean |out| %.3f)\n",
                   cold ? "cold (page faults)" : "warm", dt, flops / dt / 1e9, dc, flops / dc / 1e9, sum / ((double)L * c->d_model));
            mem_line(cold ? "after the cold pass:" : "after the pass:");
            char prof[4096];
            sd3q_session_profile(s, 1, prof, sizeof prof);
            if (!cold) printf("%s", prof);
            cold = 0;
        }
        sd3q_session_free(s);
    }
    sd3q_model_release_pages(m, SD3Q_COMP_T5);
    mem_line("after release_pages(T5):");
    free(ids);
    free(out);
    sd3q_model_free(m);
    return 0;
}

// CLIP-G: encodes 77 random tokens per thread count.
static int bench_clip_g(const char * path, const int * thr, int nthr, int reps) {
    struct sd3q_model * m = load(NULL, path);
    if (!m) return 1;
    const struct clip_config * c = &m->clip_g->cfg;
    const double L = 77, W = c->width, F = c->mlp;
    const double flops = c->layers * (2 * L * W * 3 * W + 4 * L * L * W + 2 * L * W * W + 4 * L * W * F) + 2 * W * c->proj_dim;
    printf("CLIP-G: %.3f G parameters, 77 tokens → %.1f GFLOP per encode\n", (double)m->clip_g->n_params / 1e9, flops / 1e9);
    int32_t ids[77];
    ids[0] = 49406;
    for (int i = 1; i < 77; i++) ids[i] = i < 20 ? (int32_t)(rnd_u64() % 49000) : i == 20 ? 49407 : 0;
    float * pen = malloc(sizeof(float) * 77 * c->width), pooled[4096];
    int cold = 1;
    for (int k = 0; k < nthr; k++) {
        struct sd3q_session * s = session(m, thr[k], 0);
        if (!s) return 1;
        const int passes = reps + cold;
        for (int r = 0; r < passes; r++) {
            double t0 = bench_now(), c0 = cpu_now();
            if (text_encode_clip(s, 1, ids, pen, pooled, NULL) != SD3Q_OK) {
                fprintf(stderr, "%s\n", sd3q_session_last_error(s));
                return 1;
            }
            double dt = bench_now() - t0, dc = cpu_now() - c0;
            printf("== CLIP-G, 77 tokens, %d thread(s), %s pass: %.3f s  %.1f GFLOP/s (CPU time %.2f s)\n", thr[k], cold ? "cold" : "warm",
                   dt, flops / dt / 1e9, dc);
            cold = 0;
        }
        mem_line("after the passes:");
        sd3q_session_free(s);
    }
    free(pen);
    sd3q_model_free(m);
    return 0;
}

int main(int argc, char ** argv) {
    const char * dir = "/tmp";
    int thr[8] = {1, 2}, nthr = 2, L = 256, f8 = 0, skip_t5 = 0, skip_clip = 0, reps = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);  // progress lines appear as they happen when redirected
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nthr = bench_parse_list(argv[++i], thr, 8);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f8")) f8 = 1;
        else if (!strcmp(argv[i], "--skip-t5")) skip_t5 = 1;
        else if (!strcmp(argv[i], "--skip-clip")) skip_clip = 1;
        else {
            fprintf(stderr, "usage: bench-t5 [--dir /tmp] [--threads 1,2] [--tokens 256] [--f8] [--skip-t5] [--skip-clip] [--reps 1]\n");
            return 2;
        }
    }
    if (L < 1 || L > 4096 || reps < 1) {
        fprintf(stderr, "bench-t5: --tokens must be in [1, 4096] and --reps at least 1\n");
        return 2;
    }
    char t5f16[1024], t5f8[1024], clipg[1024];
    snprintf(t5f16, sizeof t5f16, "%s/sd3q-bench-t5xxl-f16.safetensors", dir);
    snprintf(t5f8, sizeof t5f8, "%s/sd3q-bench-t5xxl-f8.safetensors", dir);
    snprintf(clipg, sizeof clipg, "%s/sd3q-bench-clipg-f16.safetensors", dir);
    if (!skip_clip) {
        if (!path_is_file(clipg) && make_clip_g(clipg) != 0) return 1;
        if (bench_clip_g(clipg, thr, nthr, reps) != 0) return 1;
    }
    if (!skip_t5) {
        if (!path_is_file(t5f16) && make_t5(t5f16, DT_F16) != 0) return 1;
        if (bench_t5(t5f16, "F16", thr, nthr, L, reps) != 0) return 1;
        if (f8) {
            if (!path_is_file(t5f8) && make_t5(t5f8, DT_F8_E4M3) != 0) return 1;
            if (bench_t5(t5f8, "F8_E4M3", thr, nthr, L, reps) != 0) return 1;
        }
    }
    printf("peak RSS (VmHWM) %.0f MiB — includes the mapped weight pages the passes touched\n", proc_status_mib("VmHWM"));
    return 0;
}
