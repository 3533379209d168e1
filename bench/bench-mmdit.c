/*
 * bench-mmdit.c — one classifier-free-guidance denoising step (MMDiT forward, batch 2) of SD3-Medium's shape on the
 * CPU, with random F16 weights written once to a safetensors file and then memory-mapped by the normal loader.
 *
 * Reports: load time and resident memory right after loading (the mmap must not copy the 4 GB of weights), seconds
 * per step and achieved GFLOP/s per (resolution, threads), a per-op breakdown, the activation arena and the
 * attention scratch against the size of a full L×L score matrix, and the peak RSS of the run.
 *
 * Usage: bench-mmdit [--weights FILE] [--res 512,1024] [--threads 1,2] [--ctx 333] [--reps 1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "core/dtype.h"
#include "io/fileutil.h"
#include "io/safetensors.h"
#include "sd3q.h"
#include "common.h"



static uint64_t rng_state = 0x2545f4914f6cdd1dull;

// xorshift64*: fast, fine for benchmark inputs.
static float rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
    return (float)((r >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

// Writes an SD3-Medium-shaped MMDiT (original single-file names) with random F16 weights.
static int make_weights(const char * path) {
    struct bw_file * f = bw_new();
    bw_add_mmdit(f, DT_F16);
    int r = bw_write(f, path);
    bw_free(f);
    return r;
}

int main(int argc, char ** argv) {
    const char * weights = "/tmp/sd3q-bench-sd3m-f16.safetensors";
    int res[8] = {512, 1024}, nres = 2, thr[8] = {1, 2}, nthr = 2, ctx = 333, reps = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--res") && i + 1 < argc) nres = bench_parse_list(argv[++i], res, 8);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nthr = bench_parse_list(argv[++i], thr, 8);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-mmdit [--weights FILE] [--res 512,1024] [--threads 1,2] [--ctx 333] [--reps 1]\n");
            return 2;
        }
    }
    if (!path_is_file(weights) && make_weights(weights) != 0) return 1;

    double rss0 = proc_status_mib("VmRSS");
    double t0 = bench_now();
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = weights;
    struct sd3q_model * m;
    char err[1024];
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct sd3q_mmdit_info info;
    sd3q_model_mmdit_info(m, &info);
    printf("loaded %.3f G parameters in %.3f s; RSS %.0f → %.0f MiB (anon %.0f MiB, file %.0f MiB): weights stay in the mapping\n",
           (double)info.n_params / 1e9, bench_now() - t0, rss0, proc_status_mib("VmRSS"), proc_status_mib("RssAnon"), proc_status_mib("RssFile"));

    for (int r = 0; r < nres; r++) {
        int lat = res[r] / 8;
        int64_t nl = 2LL * 16 * lat * lat, nc = 2LL * ctx * info.context_dim;
        float * x = malloc(sizeof(float) * (size_t)nl), * c = malloc(sizeof(float) * (size_t)nc);
        float * p = malloc(sizeof(float) * 2 * (size_t)info.pooled_dim), * out = malloc(sizeof(float) * (size_t)nl);
        float t[2] = {800.0f, 800.0f};
        for (int64_t i = 0; i < nl; i++) x[i] = rnd();
        for (int64_t i = 0; i < nc; i++) c[i] = rnd();
        for (int i = 0; i < 2 * info.pooled_dim; i++) p[i] = rnd();
        for (int k = 0; k < nthr; k++) {
            struct sd3q_session_params sp = sd3q_session_default_params();
            sp.device = SD3Q_DEVICE_CPU;
            sp.n_threads = thr[k];
            sp.max_batch = 2, sp.max_latent_h = lat, sp.max_latent_w = lat, sp.max_context = ctx;
            sp.profile = 1;
            struct sd3q_session * s;
            if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            if (r == 0 && k == 0) {  // fault the mapped weights in once, outside the timings
                double tw = bench_now();
                sd3q_session_mmdit(s, 2, lat, lat, x, ctx, c, p, t, out);
                printf("warm-up pass (page faults on the mapping): %.1f s\n", bench_now() - tw);
                sd3q_session_profile(s, 1, NULL, 0);
            }
            double best = 1e30;
            for (int rep = 0; rep < reps; rep++) {
                double ts = bench_now();
                if (sd3q_session_mmdit(s, 2, lat, lat, x, ctx, c, p, t, out) != SD3Q_OK) {
                    fprintf(stderr, "%s\n", sd3q_session_last_error(s));
                    return 1;
                }
                double dt = bench_now() - ts;
                if (dt < best) best = dt;
            }
            char prof[4096];
            sd3q_session_profile(s, 1, prof, sizeof prof);
            int64_t L = (int64_t)lat / 2 * (lat / 2) + ctx;
            printf("\n== %d² (latent %d², %lld tokens), CFG batch 2, %d thread(s): %.2f s per step (best of %d)\n", res[r], lat,
                   (long long)L, thr[k], best, reps);
            printf("   activation arena %.1f MiB; attention scratch per thread %.1f MiB vs %.1f MiB for all heads' L×L scores\n",
                   (double)sd3q_session_arena_bytes(s) / (1 << 20), 64.0 * (double)L * 4 / (1 << 20),
                   2.0 * info.heads * (double)L * (double)L * 4 / (1 << 20));
            printf("%s", prof);
            sd3q_session_free(s);
        }
        free(x);
        free(c);
        free(p);
        free(out);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\npeak RSS %.0f MiB (includes the mapped weights the pass touched)\n", (double)ru.ru_maxrss / 1024.0);
    sd3q_model_free(m);
    return 0;
}
