/*
 * test-actconfig.c — the activation-quantization config on synthetic statistics with a known answer: HTG finds
 * planted timestep regimes; clip ranges, steps and zero points follow their definitions (zp = qmin − round(lo/step));
 * outlier channels get integer divisors; σ lookup serves step counts other than the calibration's; the files round
 * trip; fake quantization is exact on grid points; malformed files are rejected with clear messages.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "model/scheduler.h"
#include "quant/actconfig.h"
#include "testutil.h"

#define NT 12
#define NC 16

// A table of 2 layers × NT steps: three regimes (steps 0–3, 4–7, 8–11) with different centres and magnitudes; layer 1
// is post-GELU with one outlier channel (ch 3, range ×10).
static void make_table(struct stats_table * t) {
    memset(t, 0, sizeof(*t));
    t->n_steps = NT, t->n_layers = 2;
    t->steps = calloc(NT, sizeof(*t->steps));
    t->layers = calloc(2, sizeof(*t->layers));
    t->cells = calloc(2 * NT, sizeof(*t->cells));
    snprintf(t->layers[0].name, sizeof t->layers[0].name, "mm0.img.attn.qkv");
    snprintf(t->layers[1].name, sizeof t->layers[1].name, "mm0.img.mlp.fc2");
    t->layers[0].C = t->layers[1].C = NC;
    t->layers[1].post_gelu = 1;
    float sig[NT + 1];
    sd3q_schedule(NT, 3.0f, sig);
    for (int s = 0; s < NT; s++) {
        t->steps[s] = (struct stats_step){s, sig[s], sig[s] * 1000};
        int regime = s / 4;
        for (int l = 0; l < 2; l++) {
            struct stats_cell * c = stats_at(t, s, l);
            c->n_batches = 4, c->n_values = 400;
            c->run_min = malloc(sizeof(float) * NC), c->run_max = malloc(sizeof(float) * NC);
            c->avg_min = malloc(sizeof(float) * NC), c->avg_max = malloc(sizeof(float) * NC);
            float centre = l == 0 ? 0.0f : 0.5f + regime, half = 1.0f + 2.0f * regime + 0.01f * (s % 4);
            double amax = 0;
            for (int k = 0; k < NC; k++) {
                float hk = half * (l == 1 && k == 3 ? 10.0f : 1.0f);
                c->avg_min[k] = centre - hk, c->avg_max[k] = centre + hk;
                c->run_min[k] = centre - 1.2f * hk, c->run_max[k] = centre + 1.2f * hk;
                amax = fmax(amax, fabs(centre) + 1.2 * hk);
            }
            c->absmax = amax, c->p999 = 0.8 * amax, c->p9999 = 0.9 * amax, c->p99 = 0.5 * amax;
            c->min = -amax, c->max = amax;
        }
    }
}

int main(void) {
    struct stats_table t;
    make_table(&t);
    struct sd3q_errbuf e;
    // HTG recovers the three planted regimes
    int labels[NT];
    actcfg_htg(&t, 3, labels);
    int want[NT] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2};
    CHECKF(memcmp(labels, want, sizeof want) == 0, "HTG labels %d%d%d%d %d%d%d%d %d%d%d%d", labels[0], labels[1], labels[2], labels[3],
           labels[4], labels[5], labels[6], labels[7], labels[8], labels[9], labels[10], labels[11]);

    struct actcfg cfg;
    CHECK(actcfg_build(&t, 3, CLIP_ABSMAX, 0, 6, 10, 5, 8, &cfg, &e) == SD3Q_OK);
    CHECK(cfg.n_groups == 3);
    for (int g = 0; g < cfg.n_groups; g++) {
        // symmetric layer: clip = ±max absmax of the group's steps, step = α/127, zp = 0
        const struct actcfg_entry * a = actcfg_at(&cfg, 0, g);
        double alpha = 0;
        for (int s = cfg.groups[g].first; s <= cfg.groups[g].last; s++) alpha = fmax(alpha, stats_at(&t, s, 0)->absmax);
        CHECK(a->symmetric && a->zero_point == 0 && a->bits == 8);
        CHECK(fabs(a->clip_hi - alpha) < 1e-5 * alpha && fabs(a->step - alpha / 127) < 1e-6 * alpha && a->n_outliers == 0);
        // post-GELU: shift = momentum average of the centres (all equal here), outlier ch 3 divided, zp formula
        const struct actcfg_entry * b = actcfg_at(&cfg, 1, g);
        CHECK(!b->symmetric && b->shift && fabs(b->shift[0] - (0.5f + g)) < 1e-5);
        CHECKF(b->n_outliers == 1 && b->factor[3] >= 9 && b->factor[3] <= 11, "outliers %d, factor %d", b->n_outliers, b->factor[3]);
        CHECK(b->zero_point == -128 - (int)rintf(b->clip_lo * (1.0f / b->step)));
        CHECK(b->zero_point >= -128 && b->zero_point <= 127);  // zero is representable
        CHECK(fabs(b->step - (b->clip_hi - b->clip_lo) / 255) < 1e-6 * (b->clip_hi - b->clip_lo));
        // fake quantization: the ends of the range come back within half a step; beyond them it saturates
        float xs[3 * NC];
        for (int k = 0; k < NC; k++)
            xs[k] = b->clip_lo + b->shift[k], xs[NC + k] = b->clip_hi + b->shift[k], xs[2 * NC + k] = 5 * b->clip_hi + b->shift[k];
        actcfg_fake_quant(b, xs, 3, NC);
        float tol = 0.5f * b->step * 1.001f;
        CHECK(fabsf(xs[0] - (b->clip_lo + b->shift[0])) <= tol && fabsf(xs[NC] - (b->clip_hi + b->shift[0])) <= tol);
        CHECK(fabsf(xs[2 * NC] - (b->clip_hi + b->shift[0])) <= tol);
    }
    // σ intervals are ordered and contiguous; a 28- or 50-step run maps every σ to the group that holds it
    for (int g = 0; g + 1 < cfg.n_groups; g++) CHECK(cfg.groups[g].sigma_lo == cfg.groups[g + 1].sigma_hi);
    for (int s = 0; s < NT; s++) CHECK(actcfg_group_for_sigma(&cfg, t.steps[s].sigma) == want[s]);
    int steps_alt[] = {28, 50, 5};
    for (int i = 0; i < 3; i++) {
        float sig[51];
        sd3q_schedule(steps_alt[i], 3.0f, sig);
        int prev = 0;
        for (int s = 0; s < steps_alt[i]; s++) {
            int g = actcfg_group_for_sigma(&cfg, sig[s]);
            CHECK(g >= prev && g < cfg.n_groups);  // monotone along the trajectory
            CHECK(sig[s] > cfg.groups[g].sigma_lo || g == cfg.n_groups - 1);
            CHECK(sig[s] <= cfg.groups[g].sigma_hi || g == 0);
            prev = g;
        }
        CHECK(actcfg_group_for_sigma(&cfg, sig[0]) == 0 && actcfg_group_for_sigma(&cfg, sig[steps_alt[i] - 1]) == cfg.n_groups - 1);
    }

    // files round trip
    char dir[] = "/tmp/sd3q-test-actconfig-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char * path = path_join(dir, "quant_config.json");
    CHECK(actcfg_write(&cfg, path, &e) == SD3Q_OK);
    struct actcfg back;
    CHECKF(actcfg_read(path, &back, &e) == SD3Q_OK, "%s", e.msg);
    CHECK(back.n_groups == cfg.n_groups && back.n_layers == 2);
    for (int l = 0; l < 2; l++)
        for (int g = 0; g < cfg.n_groups; g++) {
            const struct actcfg_entry * a = actcfg_at(&cfg, l, g), * b = actcfg_at(&back, l, g);
            CHECK(a->bits == b->bits && a->zero_point == b->zero_point && a->step == b->step && a->clip_lo == b->clip_lo &&
                  a->n_outliers == b->n_outliers);
            if (a->shift) CHECK(b->shift && memcmp(a->shift, b->shift, sizeof(float) * NC) == 0);
            CHECK(memcmp(a->factor, b->factor, sizeof(int32_t) * NC) == 0);
        }
    actcfg_free(&back);
    // multitier: small magnitudes get fewer bits
    struct actcfg mt;
    CHECK(actcfg_build(&t, 3, CLIP_ABSMAX, 1, 6, 10, 5, 8, &mt, &e) == SD3Q_OK);
    CHECK(actcfg_at(&mt, 0, 0)->bits == 4 && actcfg_at(&mt, 0, 2)->bits == 6);
    actcfg_free(&mt);

    // malformed files
    struct { const char * json; const char * needle; } bad[] = {
        {"{", "invalid JSON"},
        {"{\"format\": \"other\"}", "format"},
        {"{\"format\": \"sd3q-act-quant-config\", \"version\": 99}", "version 99"},
        {"{\"format\": \"sd3q-act-quant-config\", \"version\": 1, \"vectors\": \"../x\"}", "vectors"},
    };
    char * bp = path_join(dir, "bad.json");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(write_file_atomic(bp, bad[i].json, strlen(bad[i].json), &e) == SD3Q_OK);
        struct actcfg x;
        enum sd3q_status st = actcfg_read(bp, &x, &e);
        CHECKF(st != SD3Q_OK && strstr(e.msg, bad[i].needle), "case %zu: %s", i, e.msg);
    }
    // a config whose step is zero
    char * text;
    size_t n;
    CHECK(read_file(path, 1 << 20, &text, &n, &e) == SD3Q_OK);
    char * p = strstr(text, "\"step\":");
    if (p) {
        memcpy(p, "\"step\":0 ,", 10);
        char * cp = path_join(dir, "zero.json");
        write_file_atomic(cp, text, n, &e);
        struct actcfg x;
        CHECK(actcfg_read(cp, &x, &e) != SD3Q_OK);
        unlink(cp);
        free(cp);
    }
    free(text);
    unlink(bp);
    free(bp);
    char * vp = path_join(dir, "quant_config.safetensors");
    unlink(path), unlink(vp), rmdir(dir);
    free(vp);
    free(path);
    actcfg_free(&cfg);
    for (int i = 0; i < 2 * NT; i++) {
        free(t.cells[i].run_min), free(t.cells[i].run_max), free(t.cells[i].avg_min), free(t.cells[i].avg_max);
        t.cells[i].run_min = t.cells[i].run_max = t.cells[i].avg_min = t.cells[i].avg_max = NULL;
    }
    stats_free(&t);
    return test_finish("test-actconfig");
}
