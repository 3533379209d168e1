/*
 * bench-collect.c — the cost of activation-statistics collection: the same CFG forward pass (batch 2) timed without a
 * hook and with the collector's hook (every quantizable Linear's input accumulated: extremes, AvgMinMax, histograms,
 * |x| percentiles), side by side, alternating, best of N. The budget is 1.3× a plain pass.
 *
 * Usage: bench-collect [--model PATH (default models/tiny-sd3)] [--sd3m (SD3-Medium shapes, random weights)]
 *                      [--res 128] [--ctx 333] [--reps 5] [--threads 0]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/fileutil.h"
#include "model/session.h"
#include "quant/collect.h"
#include "sd3q.h"
#include "common.h"


int main(int argc, char ** argv) {
    const char * model = "models/tiny-sd3";
    int res = 128, ctx = 333, reps = 5, threads = 0, sd3m = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--sd3m")) sd3m = 1;
        else if (!strcmp(argv[i], "--res") && i + 1 < argc) res = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench-collect [--model PATH] [--sd3m] [--res N] [--ctx N] [--reps N] [--threads N]\n");
            return 2;
        }
    }
    if (sd3m) {
        model = "/tmp/sd3q-bench-sd3m-f16.safetensors";
        if (!path_is_file(model)) {
            struct bw_file * f = bw_new();
            bw_add_mmdit(f, DT_F16);
            int r = bw_write(f, model);
            bw_free(f);
            if (r) return 1;
        }
    }
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = model;
    struct sd3q_model * m;
    char err[1024];
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct sd3q_mmdit_info info;
    sd3q_model_mmdit_info(m, &info);
    int lat = res / 8;
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = threads, sp.max_batch = 2, sp.max_latent_h = sp.max_latent_w = lat, sp.max_context = ctx;
    struct sd3q_session * s;
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int64_t nl = 2LL * info.in_channels * lat * lat, nc = 2LL * ctx * info.context_dim;
    float * x = malloc(sizeof(float) * (size_t)nl), * c = malloc(sizeof(float) * (size_t)nc);
    float * p = malloc(sizeof(float) * 2 * (size_t)info.pooled_dim), * out = malloc(sizeof(float) * (size_t)nl), t[2] = {700, 700};
    uint64_t st = 88172645463325252ull;
    for (int64_t i = 0; i < nl; i++) st ^= st << 13, st ^= st >> 7, st ^= st << 17, x[i] = (float)(st % 2000) / 1000.0f - 1.0f;
    for (int64_t i = 0; i < nc; i++) st ^= st << 13, st ^= st >> 7, st ^= st << 17, c[i] = (float)(st % 2000) / 1000.0f - 1.0f;
    for (int i = 0; i < 2 * info.pooled_dim; i++) p[i] = 0.1f * (float)(i % 7);
    struct act_collector * col = act_collector_new();
    double best[2] = {1e30, 1e30};
    sd3q_session_mmdit(s, 2, lat, lat, x, ctx, c, p, t, out);  // warm-up (page faults, caches)
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 2; k++) {
            s->hook = k ? act_collector_hook(col) : (struct mmdit_hook){0};
            double t0 = bench_now();
            sd3q_session_mmdit(s, 2, lat, lat, x, ctx, c, p, t, out);
            double dt = bench_now() - t0;
            if (dt < best[k]) best[k] = dt;
        }
    s->hook = (struct mmdit_hook){0};
    printf("%s, %d² (latent %d², %d text tokens), CFG batch 2, threads %d: plain %.1f ms, with statistics %.1f ms: %.2f×\n", model, res,
           lat, ctx, threads, 1e3 * best[0], 1e3 * best[1], best[1] / best[0]);
    act_collector_free(col);
    free(x), free(c), free(p), free(out);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return 0;
}
