/*
 * evalq.c — fake-quantized generation and its comparison with full precision (see evalq.h).
 *
 * The MMDiT hook's `modify` callback quantizes each Linear input in place before the Linear runs; the sampler's step
 * observer tells it the current σ so that a static config's timestep group is looked up by σ (any step count).
 */
#include "quant/evalq.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "io/png.h"
#include "model/session.h"
#include "quant/metrics.h"

struct fq_ctx {
    const struct evalq_scheme * sc;
    float                       sigma;
    int                         group;
    int                         missing;  // Linear inputs the config does not list
    int                         mismatch; // listed with another channel count: a config for another model
};

// Sampler observer: remember the step's σ and its group.
static void on_step(void * ud, int k, float sigma, float timestep, const float * x) {
    struct fq_ctx * f = ud;
    f->sigma = sigma;
    if (f->sc->kind == EVALQ_STATIC) f->group = actcfg_group_for_sigma(f->sc->cfg, sigma);
}

// Dynamic per-token fake quantization of one row.
static void fq_row_dynamic(float * x, int64_t C, int bits, int asym) {
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t k = 0; k < C; k++) lo = fminf(lo, x[k]), hi = fmaxf(hi, x[k]);
    if (asym) {
        lo = fminf(lo, 0), hi = fmaxf(hi, 0);
        float step = (hi - lo) / (float)((1 << bits) - 1);
        if (!(step > 0)) return;
        int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
        float zp = (float)qmin - rintf(lo / step);
        for (int64_t k = 0; k < C; k++) {
            float q = fminf(fmaxf(rintf(x[k] / step) + zp, (float)qmin), (float)qmax);
            x[k] = (q - zp) * step;
        }
    } else {
        float a = fmaxf(-lo, hi), qmax = (float)((1 << (bits - 1)) - 1), step = a / qmax;
        if (!(step > 0)) return;
        for (int64_t k = 0; k < C; k++) x[k] = fminf(fmaxf(rintf(x[k] / step), -qmax), qmax) * step;
    }
}

// The MMDiT hook: quantize a Linear input with the scheme.
static void on_linear_input(void * ud, const char * name, void * data, int64_t batch, int64_t rows, int64_t cols) {
    struct fq_ctx * f = ud;
    float * x = data;
    size_t ln = strlen(name);
    int post_gelu = ln > 8 && strcmp(name + ln - 8, ".mlp.fc2") == 0;
    if (f->sc->kind == EVALQ_DYNAMIC) {
        for (int64_t r = 0; r < batch * rows; r++) fq_row_dynamic(x + r * cols, cols, f->sc->bits, post_gelu);
        return;
    }
    const struct actcfg * c = f->sc->cfg;
    for (int l = 0; l < c->n_layers; l++)
        if (strcmp(c->layers[l].name, name) == 0) {
            if (c->layers[l].C == cols) actcfg_fake_quant(actcfg_at(c, l, f->group), x, batch * rows, cols);
            else f->mismatch++;
            return;
        }
    f->missing++;
}

enum sd3q_status quant_evaluate(struct sd3q_session * s, const struct evalq_params * p, struct evalq_scheme * schemes, int n_schemes,
                                struct sd3q_errbuf * e) {
    const struct sd3q_model * m = s->model;
    struct sd3q_mmdit_info info;
    if (n_schemes < 1 || schemes[0].kind != EVALQ_FP) return err_set(e, SD3Q_ERR_INVALID_ARG, "the first scheme must be full precision");
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK || !sd3q_model_has(m, SD3Q_COMP_VAE))
        return err_set(e, SD3Q_ERR_MISSING, "evaluation needs a model with an MMDiT, text encoders and a VAE");
    int h = p->height / 8, w = p->width / 8, C = info.in_channels, L = sd3q_model_context_len(m, p->t5_len);
    int64_t nl = (int64_t)C * h * w, D = sd3q_model_context_dim(m), P = sd3q_model_pooled_dim(m), npx = (int64_t)p->width * p->height;
    if (L <= 0) return err_set(e, SD3Q_ERR_MISSING, "the model cannot encode prompts (text encoders or tokenizers missing)");
    float * ctx = malloc(sizeof(float) * (size_t)(L * D)), * nctx = malloc(sizeof(float) * (size_t)(L * D));
    float * pooled = malloc(sizeof(float) * (size_t)P), * npooled = malloc(sizeof(float) * (size_t)P);
    float * lat = malloc(sizeof(float) * (size_t)nl), * img = malloc(sizeof(float) * 3 * (size_t)npx);
    uint8_t * ref = malloc(3 * (size_t)npx), * rgb = malloc(3 * (size_t)npx);
    enum sd3q_status st = SD3Q_OK;
    if (!ctx || !nctx || !pooled || !npooled || !lat || !img || !ref || !rgb) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (int k = 0; k < n_schemes; k++) schemes[k].psnr = schemes[k].ssim = schemes[k].adherence = 0, schemes[k].n_inf = 0;
    if (p->out_dir) mkdir(p->out_dir, 0755);
    float scale, vshift;
    sd3q_model_vae_factors(m, &scale, &vshift);
    if ((st = sd3q_session_encode_prompt(s, "", p->t5_len, nctx, npooled)) != SD3Q_OK) {
        st = err_set(e, st, "%s", sd3q_session_last_error(s));
        goto done;
    }
    for (int i = 0; i < p->n; i++) {
        if ((st = sd3q_session_encode_prompt(s, p->prompts[i], p->t5_len, ctx, pooled)) != SD3Q_OK) {
            st = err_set(e, st, "%s", sd3q_session_last_error(s));
            goto done;
        }
        struct sd3q_cond cond = {L, ctx, pooled}, uncond = {L, nctx, npooled};
        for (int k = 0; k < n_schemes; k++) {
            struct evalq_scheme * sc = &schemes[k];
            struct fq_ctx fq = {sc, 1.0f, 0, 0, 0};
            sd3q_randn_torch((uint64_t)(p->seed + i), lat, nl);
            s->hook = (struct mmdit_hook){&fq, NULL, sc->kind == EVALQ_FP ? NULL : on_linear_input};
            st = session_sample(s, h, w, p->steps, (float)p->shift, (float)p->cfg, &cond, &uncond, lat, on_step, &fq);
            s->hook = (struct mmdit_hook){0};
            if (st != SD3Q_OK) {
                st = err_set(e, st, "%s", sd3q_session_last_error(s));
                goto done;
            }
            if (fq.mismatch) {
                st = err_set(e, SD3Q_ERR_SHAPE, "scheme %s: the config's channel counts do not match this model's Linear inputs (a config "
                                                "made for another model?)", sc->name);
                goto done;
            }
            if (fq.missing) fprintf(stderr, "sd3q: warning: scheme %s: %d Linear inputs not in the config stayed unquantized\n", sc->name, fq.missing);
            for (int64_t q = 0; q < nl; q++) lat[q] = lat[q] / scale + vshift;
            if ((st = sd3q_session_vae_decode(s, 1, h, w, lat, img)) != SD3Q_OK) {
                st = err_set(e, st, "%s", sd3q_session_last_error(s));
                goto done;
            }
            image_to_rgb8(img, p->width, p->height, k == 0 ? ref : rgb);
            const uint8_t * cur = k == 0 ? ref : rgb;
            if (k > 0) {
                double ps = metric_psnr(ref, rgb, p->width, p->height);
                if (isinf(ps)) sc->n_inf++;
                else sc->psnr += ps;
                sc->ssim += metric_ssim(ref, rgb, p->width, p->height);
            }
            if (p->adherent) sc->adherence += p->adherent(cur, p->width, p->height, p->prompts[i]);
            if (p->out_dir) {
                char name[512];
                snprintf(name, sizeof name, "%s/%s_%04d.png", p->out_dir, sc->name, i);
                struct pngio_params pp = {p->prompts[i], "", (uint64_t)(p->seed + i), p->steps, p->cfg, p->shift, p->width, p->height, sc->name, NULL};
                if ((st = pngio_write_image(name, cur, p->width, p->height, &pp, e)) != SD3Q_OK) goto done;
            }
            if (p->progress) p->progress(p->progress_ud, i * n_schemes + k + 1, p->n * n_schemes);
        }
    }
    for (int k = 0; k < n_schemes; k++) {
        struct evalq_scheme * sc = &schemes[k];
        int finite = p->n - sc->n_inf;
        sc->psnr = k == 0 ? INFINITY : (finite > 0 ? sc->psnr / finite : INFINITY);
        sc->ssim = k == 0 ? 1.0 : sc->ssim / p->n;
        sc->adherence = p->adherent ? sc->adherence / p->n : NAN;
    }
done:
    free(ctx), free(nctx), free(pooled), free(npooled), free(lat), free(img), free(ref), free(rgb);
    return st;
}
