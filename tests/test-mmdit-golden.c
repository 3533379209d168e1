/*
 * test-mmdit-golden.c — the MMDiT forward pass against the PyTorch reference (tests/golden/mmdit/<case>/), for the
 * four tiny configurations (SD3 / SD3.5-Large-like qk-norm / SD3.5-Medium-like dual attention; F16, F32, BF16;
 * original single-file and diffusers layouts; square and non-square latents). Every intermediate the reference
 * saved is compared too, on both the optimised CPU backend and the scalar reference backend.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/session.h"
#include "testutil.h"

#define TOL 1e-5  // float64 reference rounded to f32; see tests/golden/README.md

static void run_case(const char * dir, const char * model_rel) {
    char mpath[1100], iopath[1100];
    snprintf(mpath, sizeof mpath, "%s/%s", dir, model_rel);
    snprintf(iopath, sizeof iopath, "%s/io.safetensors", dir);
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = mpath;
    struct sd3q_model * m = NULL;
    char err[1024];
    enum sd3q_status st = sd3q_model_load(&mp, &m, err, sizeof err);
    CHECKF(st == SD3Q_OK, "load %s: %s", mpath, err);
    if (st != SD3Q_OK) return;
    struct st_file io;
    struct sd3q_errbuf e;
    st = st_open(iopath, &io, &e);
    CHECKF(st == SD3Q_OK, "%s", e.msg);
    if (st != SD3Q_OK) {
        sd3q_model_free(m);
        return;
    }
    int64_t xs[4] = {-1, 16, -1, -1}, cs[3] = {-1, -1, -1}, ps[2] = {-1, -1}, ts[1] = {-1}, os[4] = {-1, -1, -1, -1};
    float * x = st_read_f32(&io, "x", 4, xs, &e), * ctx = st_read_f32(&io, "context", 3, cs, &e);
    float * pooled = st_read_f32(&io, "pooled", 2, ps, &e), * t = st_read_f32(&io, "timestep", 1, ts, &e);
    float * ref = st_read_f32(&io, "out", 4, os, &e);
    SD3Q_ASSERT(x && ctx && pooled && t && ref);
    int64_t n = os[0] * os[1] * os[2] * os[3];
    float * out = malloc(sizeof(float) * (size_t)n);
    for (int ref_ops = 0; ref_ops < 2; ref_ops++) {
        struct sd3q_session_params sp = sd3q_session_default_params();
        sp.max_batch = (int)xs[0], sp.max_latent_h = (int)xs[2], sp.max_latent_w = (int)xs[3], sp.max_context = (int)cs[1];
        sp.n_threads = 2;
        sp.device = SD3Q_DEVICE_CPU;  // f32 goldens and host-memory hooks
        struct sd3q_session * s;
        st = session_create(m, &sp, ref_ops, &s, err, sizeof err);
        CHECKF(st == SD3Q_OK, "session: %s", err);
        if (st != SD3Q_OK) continue;
        char label[160];
        snprintf(label, sizeof label, "%s[%s]", strrchr(dir, '/') + 1, ref_ops ? "ref" : "cpu");
        struct golden_hook hc = {&io, label, TOL, 0};
        s->hook = (struct mmdit_hook){.ud = &hc, .fn = golden_hook_on_tensor};
        for (int64_t i = 0; i < n; i++) out[i] = 1e30f;  // poison: every element must be written
        st = sd3q_session_mmdit(s, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, out);
        CHECKF(st == SD3Q_OK, "forward: %s", sd3q_session_last_error(s));
        char l2[200];
        snprintf(l2, sizeof l2, "%s out", label);
        check_tensor(l2, out, ref, n, TOL);
        CHECKF(hc.compared >= 6, "%s: only %d intermediates compared", label, hc.compared);
        sd3q_session_free(s);
    }
    free(out);
    free(x);
    free(ctx);
    free(pooled);
    free(t);
    free(ref);
    st_close(&io);
    sd3q_model_free(m);
}

int main(void) {
    const char * root = SD3Q_SOURCE_DIR "/tests/golden/mmdit";
    struct { const char * name, * model; } cases[] = {
        {"sd3_single_f16", "model.safetensors"},
        {"sd3_diffusers_f32_nonsquare", "."},
        {"sd35l_bf16", "model.safetensors"},
        {"sd35m_diffusers_bf16", "."},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", root, cases[i].name);
        run_case(dir, cases[i].model);
    }
    return test_finish("test-mmdit-golden");
}
