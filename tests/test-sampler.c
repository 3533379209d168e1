/*
 * test-sampler.c — the flow-matching schedule and the CFG Euler sampler.
 *
 *   sd3q_schedule   every (steps, shift) case of tests/golden/schedule.json (diffusers' float32 sigmas): exact float
 *                   equality required (the maximum ulp distance is printed); timesteps = float32(σ)·1000 exact; the
 *                   float64 formula of the spec (shifted linspace) within 3e-8; the spec's 28-step values
 *                   σ_1 = 0.987381, σ_27 = 0.008929 to 6 decimals; bad arguments
 *   sampling        tests/golden/sampler/ (3-step CFG run of mmdit/sd3_single_f16): the latent after every step and
 *                   the final latent within rel. L2 1e-5, on the optimised and the reference backend; abort from the
 *                   progress callback; cfg = 1 and cfg = 4.5 against the Euler/CFG update composed here from
 *                   sd3q_session_mmdit calls (README: v = v_u + w·(v_c − v_u), x ← x + (σ_{i+1} − σ_i)·v)
 *   bad arguments   steps 0 / too many, shift ≤ 0 / NaN, cfg with no uncond, NULL conditioning tensors, mismatched
 *                   context lengths, latents beyond the session's plan or not a multiple of the patch, session limits
 *                   — each SD3Q_ERR_INVALID_ARG with a message
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "io/safetensors.h"
#include "model/scheduler.h"
#include "model/session.h"
#include "testutil.h"

#define TOL 1e-5
#define GOLDEN SD3Q_SOURCE_DIR "/tests/golden"

static uint32_t fbits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

// Distance in ulps between two finite floats of the same sign.
static int64_t ulp_diff(float a, float b) {
    int64_t x = fbits(a), y = fbits(b);
    return x > y ? x - y : y - x;
}

// ---- schedule ----------------------------------------------------------------------------------------------------------

static void test_schedule(void) {
    printf("== schedule vs tests/golden/schedule.json (diffusers float32 values)\n");
    cJSON * j;
    struct sd3q_errbuf e;
    enum sd3q_status st = json_load(GOLDEN "/schedule.json", &j, &e);
    CHECKF(st == SD3Q_OK, "%s", e.msg);
    if (st != SD3Q_OK) return;
    const cJSON * cases = cJSON_GetObjectItemCaseSensitive(j, "schedules"), * c;
    int ncase = 0;
    int64_t worst_all = 0;
    cJSON_ArrayForEach(c, cases) {
        int steps = cJSON_GetObjectItemCaseSensitive(c, "steps")->valueint;
        double shift = cJSON_GetObjectItemCaseSensitive(c, "shift")->valuedouble;
        const cJSON * sg = cJSON_GetObjectItemCaseSensitive(c, "sigmas"), * ts = cJSON_GetObjectItemCaseSensitive(c, "timesteps");
        CHECK(cJSON_GetArraySize(sg) == steps + 1 && cJSON_GetArraySize(ts) == steps);
        float * s = malloc(sizeof(float) * (size_t)(steps + 2));
        s[steps + 1] = 12345.0f;
        st = sd3q_schedule(steps, (float)shift, s);
        CHECKF(st == SD3Q_OK, "sd3q_schedule(%d, %g) = %d", steps, shift, st);
        int64_t worst = 0;
        int n_exact = 0, t_bad = 0;
        double spec_worst = 0;
        // the spec's float64 formula: t = linspace(1000·σmax, 1000·σmin, steps), σ = shift·(t/1000)/(1 + (shift−1)·t/1000)
        double smax = shift * 1.0 / (1 + (shift - 1) * 1.0), smin = shift * 0.001 / (1 + (shift - 1) * 0.001);
        for (int i = 0; i <= steps; i++) {
            float want = (float)cJSON_GetArrayItem(sg, i)->valuedouble;
            int64_t u = ulp_diff(s[i], want);
            if (u > worst) worst = u;
            n_exact += u == 0;
            if (i < steps) {
                float tw = (float)cJSON_GetArrayItem(ts, i)->valuedouble;
                t_bad += fbits(sched_timestep(s[i])) != fbits(tw);
                double t = steps > 1 ? 1000 * smax + (1000 * smin - 1000 * smax) * i / (steps - 1) : 1000 * smax;
                double sig = shift * (t / 1000) / (1 + (shift - 1) * (t / 1000));
                spec_worst = fmax(spec_worst, fabs(s[i] - sig));
            }
        }
        CHECKF(s[steps] == 0.0f && s[steps + 1] == 12345.0f, "steps %d: last sigma %g / wrote past the end", steps, s[steps]);
        CHECKF(worst == 0, "steps %d shift %g: sigmas differ from diffusers by up to %lld ulp", steps, shift, (long long)worst);
        CHECKF(t_bad == 0, "steps %d shift %g: %d timesteps differ from float32(σ)·1000", steps, shift, t_bad);
        CHECKF(spec_worst <= 3e-8, "steps %d shift %g: %.2e from the float64 formula", steps, shift, spec_worst);
        printf("steps %2d shift %.1f: %d/%d sigmas bit-equal to diffusers (max %lld ulp), timesteps exact: %s, |σ − float64 formula| ≤ %.1e\n",
               steps, shift, n_exact, steps + 1, (long long)worst, t_bad ? "NO" : "yes", spec_worst);
        for (int i = 1; i < steps; i++) CHECK(s[i] < s[i - 1]);
        free(s);
        ncase++;
        if (worst > worst_all) worst_all = worst;
    }
    CHECKF(ncase >= 6, "only %d schedules in the fixture", ncase);
    printf("schedule: %d cases, exact float equality required and %s (max %lld ulp)\n", ncase, worst_all ? "NOT met" : "met",
           (long long)worst_all);
    cJSON_Delete(j);

    // the spec's 28-step vector
    float s28[29];
    CHECK(sd3q_schedule(28, 3.0f, s28) == SD3Q_OK);
    CHECKF(fabs(s28[1] - 0.987381) < 5e-7 && fabs(s28[27] - 0.008929) < 5e-7, "σ_1 = %.6f, σ_27 = %.6f", s28[1], s28[27]);
    CHECK(s28[0] == 1.0f && s28[28] == 0.0f);
    printf("28 steps, shift 3: σ_1 = %.6f, σ_27 = %.6f\n", s28[1], s28[27]);
    // shift 1 is the plain linspace from 1 to 1/1000
    float s4[5];
    CHECK(sd3q_schedule(4, 1.0f, s4) == SD3Q_OK);
    CHECK(s4[0] == 1.0f && fabsf(s4[1] - 0.667f) < 1e-6f && fabsf(s4[2] - 0.334f) < 1e-6f && fabsf(s4[3] - 0.001f) < 1e-7f);

    // bad arguments
    float buf[8];
    CHECK(sd3q_schedule(0, 3.0f, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(-1, 3.0f, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(SCHED_MAX_STEPS + 1, 3.0f, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(4, 0.0f, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(4, -3.0f, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(4, NAN, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(4, INFINITY, buf) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_schedule(4, 3.0f, NULL) == SD3Q_ERR_INVALID_ARG);
}

// ---- sampler ------------------------------------------------------------------------------------------------------------

struct golden {
    struct st_file io;
    float *        noise, * cc, * cp, * uc, * up, * sigmas, * final, * step[3];
    int64_t        ctx_len;
    int            steps;
    double         shift, guidance;
    struct sd3q_model * m;
};

static float * rd(struct st_file * f, const char * name, int nd, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    int64_t want[4] = {d0, d1, d2, d3};
    struct sd3q_errbuf e;
    float * p = st_read_f32(f, name, nd, want, &e);
    if (!p) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    return p;
}

static void load_golden(struct golden * g) {
    memset(g, 0, sizeof *g);
    cJSON * cfg;
    struct sd3q_errbuf e;
    if (json_load(GOLDEN "/sampler/config.json", &cfg, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    int64_t steps;
    CHECK(json_get_int(cfg, "steps", 0, 0, 1, 100, &steps, "config.json", &e) == SD3Q_OK);
    CHECK(json_get_num(cfg, "shift", NAN, &g->shift, "config.json", &e) == SD3Q_OK);
    CHECK(json_get_num(cfg, "guidance", NAN, &g->guidance, "config.json", &e) == SD3Q_OK);
    g->steps = (int)steps;
    char model[1024];
    snprintf(model, sizeof model, "%s/sampler/%s/model.safetensors", GOLDEN, json_get_str(cfg, "model"));
    const cJSON * order = cJSON_GetObjectItemCaseSensitive(cfg, "batch_order");
    CHECK(cJSON_GetArraySize(order) == 2 && strcmp(cJSON_GetArrayItem(order, 0)->valuestring, "uncond") == 0);
    cJSON_Delete(cfg);
    printf("sampler fixture: %d steps, shift %g, guidance %g, model %s\n", g->steps, g->shift, g->guidance, model);
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = model;
    char err[1024];
    if (sd3q_model_load(&mp, &g->m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
    if (st_open(GOLDEN "/sampler/io.safetensors", &g->io, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
    g->noise = rd(&g->io, "noise", 4, 1, 16, 8, 8);
    g->cc = rd(&g->io, "cond_context", 3, 1, -1, 48, 0);
    g->ctx_len = st_find(&g->io, "cond_context")->shape[1];
    g->cp = rd(&g->io, "cond_pooled", 2, 1, 40, 0, 0);
    g->uc = rd(&g->io, "uncond_context", 3, 1, g->ctx_len, 48, 0);
    g->up = rd(&g->io, "uncond_pooled", 2, 1, 40, 0, 0);
    g->sigmas = rd(&g->io, "sigmas", 1, g->steps + 1, 0, 0, 0);
    g->final = rd(&g->io, "latents", 4, 1, 16, 8, 8);
    for (int i = 0; i < 3 && i < g->steps; i++) {
        char n[32];
        snprintf(n, sizeof n, "latents_step%d", i);
        g->step[i] = rd(&g->io, n, 4, 1, 16, 8, 8);
    }
}

static void free_golden(struct golden * g) {
    free(g->noise), free(g->cc), free(g->cp), free(g->uc), free(g->up), free(g->sigmas), free(g->final);
    for (int i = 0; i < 3; i++) free(g->step[i]);
    st_close(&g->io);
    sd3q_model_free(g->m);
}

struct progress_ctx {
    const struct golden * g;
    const float *         latents;
    const char *          label;
    int                   calls, last_done, abort_at;
};

// Compares the latent after each step with the fixture (the callback runs after the step's update).
static int on_progress(void * ud, int done, int total) {
    struct progress_ctx * p = ud;
    p->calls++;
    CHECKF(done == p->last_done + 1 && total == p->g->steps, "progress(%d, %d) after %d", done, total, p->last_done);
    p->last_done = done;
    if (done >= 1 && done <= 3 && p->g->step[done - 1]) {
        char l[128];
        snprintf(l, sizeof l, "%s latents after step %d", p->label, done);
        check_tensor(l, p->latents, p->g->step[done - 1], 16 * 8 * 8, TOL);
    }
    return p->abort_at && done == p->abort_at;
}

static struct sd3q_session * make_session(const struct sd3q_model * m, int ref, int max_batch) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = 2, sp.max_batch = max_batch, sp.max_latent_h = 8, sp.max_latent_w = 8, sp.max_context = 16;
    struct sd3q_session * s = NULL;
    char err[1024];
    enum sd3q_status st = session_create(m, &sp, ref, &s, err, sizeof err);
    if (st != SD3Q_OK) {
        fprintf(stderr, "session: %s\n", err);
        exit(1);
    }
    return s;
}

static void test_sampler_golden(struct golden * g) {
    printf("== sampler vs tests/golden/sampler\n");
    float sig[16];
    CHECK(sd3q_schedule(g->steps, (float)g->shift, sig) == SD3Q_OK);
    int sbad = 0;
    for (int i = 0; i <= g->steps; i++) sbad += fbits(sig[i]) != fbits(g->sigmas[i]);
    CHECKF(sbad == 0, "%d sigmas differ from the fixture's", sbad);
    struct sd3q_cond cond = {(int)g->ctx_len, g->cc, g->cp}, unc = {(int)g->ctx_len, g->uc, g->up};
    for (int ref = 0; ref < 2; ref++) {
        struct sd3q_session * s = make_session(g->m, ref, 2);
        float lat[16 * 8 * 8];
        memcpy(lat, g->noise, sizeof lat);
        struct progress_ctx pc = {g, lat, ref ? "[ref]" : "[cpu]", 0, 0, 0};
        sd3q_session_set_progress(s, on_progress, &pc);
        enum sd3q_status st = sd3q_session_sample(s, 8, 8, g->steps, (float)g->shift, (float)g->guidance, &cond, &unc, lat);
        CHECKF(st == SD3Q_OK, "sample: %s", sd3q_session_last_error(s));
        CHECK(pc.calls == g->steps);
        char l[64];
        snprintf(l, sizeof l, "%s final latents", ref ? "[ref]" : "[cpu]");
        check_tensor(l, lat, g->final, 16 * 8 * 8, TOL);
        CHECK(strcmp(sd3q_session_last_error(s), "") == 0);

        // abort after step 2: the latent is the fixture's step-1 latent (index 1), status ABORTED with a message
        memcpy(lat, g->noise, sizeof lat);
        struct progress_ctx pa = {g, lat, ref ? "[ref] (abort run)" : "[cpu] (abort run)", 0, 0, 2};
        sd3q_session_set_progress(s, on_progress, &pa);
        st = sd3q_session_sample(s, 8, 8, g->steps, (float)g->shift, (float)g->guidance, &cond, &unc, lat);
        CHECKF(st == SD3Q_ERR_ABORTED && strstr(sd3q_session_last_error(s), "2"), "abort: %d %s", st, sd3q_session_last_error(s));
        CHECK(pa.calls == 2);
        CHECK(rel_l2(lat, g->step[1], 16 * 8 * 8) <= TOL);
        printf("%s abort at step 2 -> %s: %s\n", ref ? "[ref]" : "[cpu]", sd3q_status_str(st), sd3q_session_last_error(s));
        // the session is reusable after an abort
        sd3q_session_set_progress(s, NULL, NULL);
        memcpy(lat, g->noise, sizeof lat);
        st = sd3q_session_sample(s, 8, 8, g->steps, (float)g->shift, (float)g->guidance, &cond, &unc, lat);
        CHECK(st == SD3Q_OK && rel_l2(lat, g->final, 16 * 8 * 8) <= TOL);
        sd3q_session_free(s);
    }
}

// Euler with CFG composed from single forward passes, as the fixture's README writes it.
static void manual_euler(struct sd3q_session * s, const struct golden * g, int steps, float shift, float w, float * lat) {
    float sig[64];
    sd3q_schedule(steps, shift, sig);
    int B = w != 1.0f ? 2 : 1;
    int64_t nl = 16 * 8 * 8, nc = g->ctx_len * 48;
    float * x = malloc(sizeof(float) * (size_t)(B * nl)), * ctx = malloc(sizeof(float) * (size_t)(B * nc));
    float * pooled = malloc(sizeof(float) * (size_t)(B * 40)), * v = malloc(sizeof(float) * (size_t)(B * nl));
    // batch order [uncond, cond]
    memcpy(ctx, B == 2 ? g->uc : g->cc, sizeof(float) * (size_t)nc);
    memcpy(pooled, B == 2 ? g->up : g->cp, sizeof(float) * 40);
    if (B == 2) {
        memcpy(ctx + nc, g->cc, sizeof(float) * (size_t)nc);
        memcpy(pooled + 40, g->cp, sizeof(float) * 40);
    }
    for (int i = 0; i < steps; i++) {
        float t[2] = {sig[i] * 1000.0f, sig[i] * 1000.0f};
        for (int b = 0; b < B; b++) memcpy(x + b * nl, lat, sizeof(float) * (size_t)nl);
        enum sd3q_status st = sd3q_session_mmdit(s, B, 8, 8, x, (int)g->ctx_len, ctx, pooled, t, v);
        CHECKF(st == SD3Q_OK, "forward: %s", sd3q_session_last_error(s));
        for (int64_t k = 0; k < nl; k++) {
            float vk = B == 2 ? v[k] + w * (v[nl + k] - v[k]) : v[k];
            lat[k] = lat[k] + (sig[i + 1] - sig[i]) * vk;
        }
    }
    free(x), free(ctx), free(pooled), free(v);
}

static void test_sampler_composed(struct golden * g) {
    printf("== sampler vs Euler/CFG composed from forward passes\n");
    struct sd3q_session * s = make_session(g->m, 0, 2);
    struct sd3q_cond cond = {(int)g->ctx_len, g->cc, g->cp}, unc = {(int)g->ctx_len, g->uc, g->up};
    float a[1024], b[1024];
    struct { int steps; float shift, cfg; } cases[] = {{4, 3.0f, 1.0f}, {5, 2.0f, 7.0f}, {1, 3.0f, 0.0f}, {2, 1.0f, 4.5f}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memcpy(a, g->noise, sizeof a), memcpy(b, g->noise, sizeof b);
        // cfg = 1 runs the conditional pass only, and needs no unconditional input
        enum sd3q_status st = sd3q_session_sample(s, 8, 8, cases[i].steps, cases[i].shift, cases[i].cfg, &cond,
                                                  cases[i].cfg == 1.0f ? NULL : &unc, a);
        CHECKF(st == SD3Q_OK, "sample: %s", sd3q_session_last_error(s));
        manual_euler(s, g, cases[i].steps, cases[i].shift, cases[i].cfg, b);
        char l[96];
        snprintf(l, sizeof l, "steps %d shift %g cfg %g vs composed", cases[i].steps, cases[i].shift, cases[i].cfg);
        check_tensor(l, a, b, 1024, 1e-6);
    }
    sd3q_session_free(s);
}

// ---- bad arguments ------------------------------------------------------------------------------------------------------

static void expect_invalid(struct sd3q_session * s, enum sd3q_status st, const char * label, const char * needle) {
    const char * msg = sd3q_session_last_error(s);
    int ok = st == SD3Q_ERR_INVALID_ARG && msg[0] && (!needle || strstr(msg, needle));
    printf("%-40s %-18s %s -> %s\n", label, sd3q_status_str(st), ok ? "OK" : "NOT OK", msg);
    CHECKF(ok, "%s: status %d, message \"%s\" (want INVALID_ARG mentioning '%s')", label, st, msg, needle ? needle : "");
}

static void test_bad_args(struct golden * g) {
    printf("== bad arguments\n");
    struct sd3q_session * s = make_session(g->m, 0, 2);
    struct sd3q_cond cond = {(int)g->ctx_len, g->cc, g->cp}, unc = {(int)g->ctx_len, g->uc, g->up};
    float lat[1024];
    memcpy(lat, g->noise, sizeof lat);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 0, 3.0f, 4.5f, &cond, &unc, lat), "steps 0", "steps");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, -5, 3.0f, 4.5f, &cond, &unc, lat), "steps -5", "steps");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, SCHED_MAX_STEPS + 1, 3.0f, 4.5f, &cond, &unc, lat), "steps 10001", "steps");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 0.0f, 4.5f, &cond, &unc, lat), "shift 0", "shift");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, -1.0f, 4.5f, &cond, &unc, lat), "shift -1", "shift");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, NAN, 4.5f, &cond, &unc, lat), "shift NaN", "shift");
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, &cond, NULL, lat), "cfg 4.5 without uncond", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, NULL, &unc, lat), "no cond", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, &cond, &unc, NULL), "no latents", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, NAN, &cond, &unc, lat), "cfg NaN", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, -1.0f, &cond, &unc, lat), "cfg -1", "guidance");
    struct sd3q_cond nctx = {(int)g->ctx_len, NULL, g->cp}, npool = {(int)g->ctx_len, g->cc, NULL};
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, &nctx, &unc, lat), "cond.context NULL", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, &cond, &npool, lat), "uncond.pooled NULL", NULL);
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 1.0f, &npool, NULL, lat), "cfg 1, cond.pooled NULL", NULL);
    struct sd3q_cond shorter = {(int)g->ctx_len - 1, g->uc, g->up};
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 4.5f, &cond, &shorter, lat), "cond/uncond lengths differ", "differ");
    struct sd3q_cond zero = {0, g->cc, g->cp};
    expect_invalid(s, sd3q_session_sample(s, 8, 8, 3, 3.0f, 1.0f, &zero, NULL, lat), "0 context tokens", "context");
    expect_invalid(s, sd3q_session_sample(s, 16, 8, 3, 3.0f, 4.5f, &cond, &unc, lat), "latent above the plan", "exceeds");
    expect_invalid(s, sd3q_session_sample(s, 7, 8, 3, 3.0f, 4.5f, &cond, &unc, lat), "odd latent height", "patch");
    expect_invalid(s, sd3q_session_sample(s, 0, 8, 3, 3.0f, 4.5f, &cond, &unc, lat), "zero latent height", "patch");
    CHECKF(memcmp(lat, g->noise, sizeof lat) == 0, "a rejected call modified the latents");
    CHECK(sd3q_session_sample(NULL, 8, 8, 3, 3.0f, 4.5f, &cond, &unc, lat) == SD3Q_ERR_INVALID_ARG);

    // single forward passes
    float out[2048], t[2] = {500, 500};
    float x[2048];
    memcpy(x, g->noise, sizeof lat), memcpy(x + 1024, g->noise, sizeof lat);
    expect_invalid(s, sd3q_session_mmdit(s, 3, 8, 8, x, 7, g->cc, g->cp, t, out), "forward batch 3 > plan 2", "exceeds");
    expect_invalid(s, sd3q_session_mmdit(s, 0, 8, 8, x, 7, g->cc, g->cp, t, out), "forward batch 0", "batch");
    expect_invalid(s, sd3q_session_mmdit(s, 1, 8, 8, x, 17, g->cc, g->cp, t, out), "forward context 17 > plan 16", "exceeds");
    expect_invalid(s, sd3q_session_mmdit(s, 1, 8, 5, x, 7, g->cc, g->cp, t, out), "forward odd width", "patch");
    expect_invalid(s, sd3q_session_mmdit(s, 1, 8, 8, NULL, 7, g->cc, g->cp, t, out), "forward NULL x", "NULL");
    expect_invalid(s, sd3q_session_mmdit(s, 1, 8, 8, x, 7, g->cc, g->cp, t, NULL), "forward NULL out", "NULL");
    CHECK(sd3q_session_mmdit(NULL, 1, 8, 8, x, 7, g->cc, g->cp, t, out) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_session_mmdit(s, 1, 8, 8, x, 7, g->cc, g->cp, t, out) == SD3Q_OK && strcmp(sd3q_session_last_error(s), "") == 0);
    CHECK(sd3q_session_arena_bytes(s) > 0);
    sd3q_session_free(s);

    // a latent larger than the position table (12 patches of 2 = 24) is refused when the session is planned for it
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = 1, sp.max_batch = 1, sp.max_latent_h = 32, sp.max_latent_w = 8, sp.max_context = 8;
    char err[1024];
    if (sd3q_session_init(g->m, &sp, &s, err, sizeof err) == SD3Q_OK) {
        float * big = calloc(16 * 32 * 8, sizeof(float)), * bo = calloc(16 * 32 * 8, sizeof(float));
        expect_invalid(s, sd3q_session_mmdit(s, 1, 26, 8, big, 7, g->cc, g->cp, t, bo), "latent 26 rows > table 24", "position table");
        free(big), free(bo);
        sd3q_session_free(s);
    } else {
        CHECKF(0, "session for 32×8: %s", err);
    }

    // session limits
    struct { const char * label; int b, h, w, c, th; } lim[] = {
        {"max_batch 0", 0, 8, 8, 8, 1},   {"max_batch 65", 65, 8, 8, 8, 1}, {"max_latent_h 0", 1, 0, 8, 8, 1},
        {"max_latent_w 4097", 1, 8, 4097, 8, 1}, {"max_context 0", 1, 8, 8, 0, 1}, {"n_threads -1", 1, 8, 8, 8, -1},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
        sp = sd3q_session_default_params();
        sp.device = SD3Q_DEVICE_CPU, sp.max_batch = lim[i].b, sp.max_latent_h = lim[i].h, sp.max_latent_w = lim[i].w;
        sp.max_context = lim[i].c, sp.n_threads = lim[i].th;
        s = (struct sd3q_session *)1;
        enum sd3q_status st = sd3q_session_init(g->m, &sp, &s, err, sizeof err);
        CHECKF(st == SD3Q_ERR_INVALID_ARG && s == NULL && err[0], "%s: status %d, message '%s'", lim[i].label, st, err);
        printf("%-40s %-18s -> %s\n", lim[i].label, sd3q_status_str(st), err);
    }
    CHECK(sd3q_session_init(NULL, &sp, &s, err, sizeof err) == SD3Q_ERR_INVALID_ARG);
    sd3q_session_free(NULL);
    CHECK(strcmp(sd3q_session_last_error(NULL), "") == 0);
    sp = sd3q_session_default_params();
    CHECK(sp.device == SD3Q_DEVICE_AUTO && sp.max_batch == 2 && sp.max_latent_h == 128 && sp.max_latent_w == 128 && sp.max_context == 333 &&
          sp.n_threads == 0);
}

int main(void) {
    test_schedule();
    struct golden g;
    load_golden(&g);
    test_sampler_golden(&g);
    test_sampler_composed(&g);
    test_bad_args(&g);
    free_golden(&g);
    return test_finish("test-sampler");
}
