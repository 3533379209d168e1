/*
 * cmd-core.c — `sd3q inspect`, `sd3q mmdit` and `sd3q schedule`: the checkpoint and denoiser contract of the CLI
 * (documented in README.md; tests/cli-*.sh rely on it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "io/safetensors.h"

// ---- inspect ----------------------------------------------------------------------------------------------------------

int cmd_inspect(int argc, char ** argv) {
    struct model_opts mo;
    int tensors = 0;
    struct opt opts[MODEL_OPTS_N + 1];
    model_opts_add(&mo, opts);
    opts[MODEL_OPTS_N] = (struct opt){"--tensors", OPT_FLAG, &tensors, "list every tensor", 0, 0, 0, 0};
    const char * pos[1];
    int npos;
    int r = args_parse(argc, argv, 2, "inspect", "List what a checkpoint holds: the components found and where, the inferred hyper-parameters,\n"
                                                 "tensor counts and dtypes; with --tensors every tensor with its dtype and shape.",
                       opts, MODEL_OPTS_N + 1, pos, 1, &npos, "[PATH]");
    if (r) return r == 1 ? 0 : 2;
    if (npos) mo.model = pos[0];
    struct sd3q_model * m = model_opts_load(&mo, "inspect");
    if (!m) return 1;
    size_t n = sd3q_model_describe(m, tensors, NULL, 0);
    char * buf = malloc(n + 1);
    if (!buf) {
        sd3q_model_free(m);
        fprintf(stderr, "sd3q inspect: out of memory\n");
        return 1;
    }
    sd3q_model_describe(m, tensors, buf, n + 1);
    fputs(buf, stdout);
    free(buf);
    sd3q_model_free(m);
    return 0;
}

// ---- mmdit ------------------------------------------------------------------------------------------------------------

int cmd_mmdit(int argc, char ** argv) {
    struct model_opts mo;
    const char * in_path = NULL, * out_path = NULL;
    struct opt opts[MODEL_OPTS_N + 2];
    model_opts_add(&mo, opts);
    opts[MODEL_OPTS_N]     = (struct opt){"--input", OPT_STR, &in_path, "safetensors with x [B,C,H,W], context [B,L,Dctx], pooled [B,Dpool], timestep [B]", 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 1] = (struct opt){"--output", OPT_STR, &out_path, "safetensors to write with out [B,C,H,W] (F32)", 0, 0, 1, 0};
    int r = args_parse(argc, argv, 2, "mmdit", "Run one forward pass of the diffusion transformer. timestep is the value the model receives (1000·σ).",
                       opts, MODEL_OPTS_N + 2, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    struct sd3q_model * m = model_opts_load(&mo, "mmdit");
    if (!m) return 1;
    int rc = 1;
    struct st_file in = {0};
    struct sd3q_session * s = NULL;
    float * x = NULL, * ctx = NULL, * pooled = NULL, * t = NULL, * out = NULL;
    struct sd3q_errbuf e = {{0}};
    struct sd3q_mmdit_info info;
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK) {
        fprintf(stderr, "sd3q mmdit: the model has no MMDiT (diffusion_model / transformer) weights\n");
        goto done;
    }
    if (st_open(in_path, &in, &e) != SD3Q_OK) goto fail;
    int64_t xs[4] = {-1, info.in_channels, -1, -1}, cs[3] = {-1, -1, info.context_dim}, ps[2] = {-1, info.pooled_dim}, ts[1] = {-1};
    if (!(x = st_read_f32(&in, "x", 4, xs, &e)) || !(ctx = st_read_f32(&in, "context", 3, cs, &e)) ||
        !(pooled = st_read_f32(&in, "pooled", 2, ps, &e)) || !(t = st_read_f32(&in, "timestep", 1, ts, &e)))
        goto fail;
    if (cs[0] != xs[0] || ps[0] != xs[0] || ts[0] != xs[0]) {
        fprintf(stderr, "sd3q mmdit: %s: batch sizes differ: x %lld, context %lld, pooled %lld, timestep %lld\n", in_path,
                (long long)xs[0], (long long)cs[0], (long long)ps[0], (long long)ts[0]);
        goto done;
    }
    if (xs[0] > 64 || xs[2] > 4096 || xs[3] > 4096 || cs[1] > 65536) {
        fprintf(stderr, "sd3q mmdit: %s: input too large (batch ≤ 64, latent ≤ 4096², context ≤ 65536 tokens)\n", in_path);
        goto done;
    }
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "mmdit", &sp)) != 0) goto done;
    rc = 1;
    sp.max_batch    = (int32_t)xs[0];
    sp.max_latent_h = (int32_t)xs[2];
    sp.max_latent_w = (int32_t)xs[3];
    sp.max_context  = (int32_t)cs[1];
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q mmdit: %s\n", err);
        goto done;
    }
    int64_t n_out = xs[0] * info.out_channels * xs[2] * xs[3];
    out = malloc(sizeof(float) * (size_t)n_out);
    if (!out) {
        fprintf(stderr, "sd3q mmdit: out of memory\n");
        goto done;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sd3q_session_mmdit(s, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, out) != SD3Q_OK) {
        fprintf(stderr, "sd3q mmdit: %s\n", sd3q_session_last_error(s));
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int64_t os[4] = {xs[0], info.out_channels, xs[2], xs[3]};
    struct st_wtensor wt = {"out", DT_F32, 4, os, out};
    if (st_write(out_path, &wt, 1, NULL, 0, &e) != SD3Q_OK) goto fail;
    fprintf(stderr, "sd3q mmdit: batch %lld, latent %lld×%lld, %lld context tokens: %.3f s\n", (long long)xs[0], (long long)xs[2],
            (long long)xs[3], (long long)cs[1], (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sd3q mmdit: %s\n", e.msg);
done:
    free(x);
    free(ctx);
    free(pooled);
    free(t);
    free(out);
    st_close(&in);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}

// ---- schedule -------------------------------------------------------------------------------------------------------

int cmd_schedule(int argc, char ** argv) {
    int64_t steps = 28;
    double shift = 3.0;
    struct opt opts[] = {
        {"--steps", OPT_INT, &steps, "number of denoising steps (default 28)", 1, 10000, 0, 0},
        {"--shift", OPT_FLOAT, &shift, "time shift (default 3.0)", 1e-3, 1e3, 0, 0},
    };
    int r = args_parse(argc, argv, 2, "schedule", "Print the flow-matching schedule as JSON: N+1 sigmas ending in 0 and the N timesteps (1000·σ)\n"
                                                  "the model receives, as diffusers' FlowMatchEulerDiscreteScheduler computes them.",
                       opts, 2, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    float * sig = malloc(sizeof(float) * (size_t)(steps + 1));
    if (!sig || sd3q_schedule((int)steps, (float)shift, sig) != SD3Q_OK) {
        free(sig);
        fprintf(stderr, "sd3q schedule: invalid arguments\n");
        return 1;
    }
    printf("{\"sigmas\": [");
    for (int i = 0; i <= steps; i++) printf(i ? ", %.9g" : "%.9g", (double)sig[i]);
    printf("], \"timesteps\": [");
    for (int i = 0; i < steps; i++) printf(i ? ", %.9g" : "%.9g", (double)(sig[i] * 1000.0f));
    printf("]}\n");
    free(sig);
    return 0;
}
