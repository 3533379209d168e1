/*
 * calibrate.c — `sd3q calibrate`: runs the full-precision pipeline on calibration prompts and keeps, per image, the
 * latent entering every denoising step (with σ and timestep), the final latent and the PNG; prompt embeddings once per
 * prompt. The manifest is rewritten (atomically) after every image and every file is written atomically before it, so
 * a run killed at any point (even kill -9) resumes at the first incomplete image and produces byte-identical files.
 *
 * Prompt files: plain text (one prompt per line), TSV (`seed<TAB>prompt`) or CSV with a `prompt` column (optionally a
 * `seed` column). Image i uses prompt i mod P and seed = the file's seed for that prompt, else base seed + i (the seed
 * project's convention), drawing its noise as torch.randn with that seed.
 */
#include "quant/calibrate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "model/session.h"
#include "quant/calibfile.h"

#define MAX_PROMPT_FILE (64u << 20)

// ---- prompt files -----------------------------------------------------------------------------------------------------

// Splits one CSV line into fields (RFC 4180 quotes, "" for a quote); returns the count (≤ max) or -1 on a bad quote.
static int csv_fields(char * line, char ** f, int max) {
    int n = 0;
    char * p = line;
    for (;;) {
        if (n == max) return n;
        char * out = p, * start = p;
        if (*p == '"') {
            p++;
            start = out = p;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"') {
                    if (p[1] == '"') {
                        *out++ = '"';
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                *out++ = *p++;
            }
            if (*p && *p != ',') return -1;
        } else {
            while (*p && *p != ',') out++, p++;
        }
        char sep = *p;
        *out = '\0';
        f[n++] = start;
        if (sep != ',') return n;
        p++;
    }
}

// Reads a prompt file into prompts[] and seeds[] (-1: none). Returns the count via *n.
static enum sd3q_status read_prompts(const char * path, char *** prompts, int64_t ** seeds, int * n, struct sd3q_errbuf * e) {
    char * buf;
    size_t len;
    TRY(read_file(path, MAX_PROMPT_FILE, &buf, &len, e));
    int cap = 64, cnt = 0, csv = 0, col_p = 0, col_s = -1, lineno = 0;
    char ** ps = malloc(sizeof(char *) * (size_t)cap);
    int64_t * ss = malloc(sizeof(int64_t) * (size_t)cap);
    enum sd3q_status st = SD3Q_OK;
    if (!ps || !ss) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    size_t pl = strlen(path);
    csv = pl > 4 && strcmp(path + pl - 4, ".csv") == 0;
    char * save = NULL;
    for (char * line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = '\0';
        char * text = line;
        int64_t seed = -1;
        if (csv) {
            char * f[64];
            int nf = csv_fields(line, f, 64);
            if (nf < 0) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s:%d: unbalanced quotes", path, lineno);
                goto done;
            }
            if (lineno == 1) {  // header: find the prompt (and seed) columns
                col_p = -1;
                for (int i = 0; i < nf; i++) {
                    if (!strcmp(f[i], "prompt")) col_p = i;
                    if (!strcmp(f[i], "seed")) col_s = i;
                }
                if (col_p < 0) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s: the CSV header has no \"prompt\" column", path);
                    goto done;
                }
                continue;
            }
            if (col_p >= nf) continue;
            text = f[col_p];
            if (col_s >= 0 && col_s < nf && f[col_s][0]) {
                char * end;
                errno = 0;
                long long v = strtoll(f[col_s], &end, 10);
                if (errno || *end || v < 0) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s:%d: seed \"%s\" is not a non-negative integer", path, lineno, f[col_s]);
                    goto done;
                }
                seed = v;
            }
        } else {
            char * tab = strchr(line, '\t');
            if (tab) {  // TSV: seed<TAB>prompt
                *tab = '\0';
                char * end;
                errno = 0;
                long long v = strtoll(line, &end, 10);
                if (errno || *end || v < 0 || end == line) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s:%d: \"%s\" before the tab is not a seed (TSV lines are seed<TAB>prompt)", path,
                                 lineno, line);
                    goto done;
                }
                seed = v;
                text = tab + 1;
            }
        }
        while (*text == ' ') text++;
        if (!*text) continue;
        if (cnt == cap) {
            cap *= 2;
            char ** np = realloc(ps, sizeof(char *) * (size_t)cap);
            int64_t * ns = np ? realloc(ss, sizeof(int64_t) * (size_t)cap) : NULL;
            if (np) ps = np;
            if (ns) ss = ns;
            if (!np || !ns) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                goto done;
            }
        }
        if (!(ps[cnt] = strdup(text))) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
        ss[cnt++] = seed;
    }
    if (cnt == 0) st = err_set(e, SD3Q_ERR_FORMAT, "%s: no prompts found", path);
done:
    free(buf);
    if (st != SD3Q_OK) {
        for (int i = 0; ps && i < cnt; i++) free(ps[i]);
        free(ps);
        free(ss);
        return st;
    }
    *prompts = ps, *seeds = ss, *n = cnt;
    return SD3Q_OK;
}

// ---- the run ------------------------------------------------------------------------------------------------------------

struct capture {
    float * lat;    // [N+1, C, h, w]
    float * sig;    // [N+1]
    float * ts;     // [N]
    int64_t nl;
};

// Keeps the latent entering step k (and the final latent at k = N).
static void capture_step(void * ud, int k, float sigma, float timestep, const float * x) {
    struct capture * c = ud;
    float * slot = c->lat + (int64_t)k * c->nl;
    if (slot != x) memcpy(slot, x, sizeof(float) * (size_t)c->nl);
    c->sig[k] = sigma;
    if (timestep > 0 || sigma > 0) c->ts[k] = timestep;
}

// Compares the settings of a run with those of an existing manifest; describes the first difference.
static int settings_differ(const struct calib_settings * a, const struct calib_settings * b, char * why, size_t n) {
    if (a->steps != b->steps) return snprintf(why, n, "steps %d vs %d", a->steps, b->steps), 1;
    if (a->width != b->width || a->height != b->height) return snprintf(why, n, "size %dx%d vs %dx%d", a->width, a->height, b->width, b->height), 1;
    if (a->cfg != b->cfg) return snprintf(why, n, "cfg %g vs %g", a->cfg, b->cfg), 1;
    if (a->shift != b->shift) return snprintf(why, n, "shift %g vs %g", a->shift, b->shift), 1;
    if (a->seed != b->seed) return snprintf(why, n, "seed %lld vs %lld", (long long)a->seed, (long long)b->seed), 1;
    if (a->t5_max_length != b->t5_max_length) return snprintf(why, n, "t5 length %d vs %d", a->t5_max_length, b->t5_max_length), 1;
    if (strcmp(a->negative, b->negative)) return snprintf(why, n, "negative prompt differs"), 1;
    return 0;
}

enum sd3q_status quant_calibrate(struct sd3q_session * s, const struct calibrate_params * p, struct sd3q_errbuf * e) {
    char ** prompts = NULL;
    int64_t * seeds = NULL;
    int np = 0;
    struct calib_manifest man = {0};
    float * ctx = NULL, * pooled = NULL, * nctx = NULL, * npooled = NULL, * image = NULL;
    uint8_t * rgb = NULL;
    struct capture cap = {0};
    enum sd3q_status st = read_prompts(p->prompts_file, &prompts, &seeds, &np, e);
    if (st != SD3Q_OK) return st;
    const struct sd3q_model * m = s->model;
    struct sd3q_mmdit_info info;
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK || !sd3q_model_has(m, SD3Q_COMP_VAE)) {
        st = err_set(e, SD3Q_ERR_MISSING, "calibration needs a model with an MMDiT, text encoders and a VAE");
        goto done;
    }
    struct calib_settings set = {0};
    snprintf(set.model, sizeof set.model, "%s", p->model_label ? p->model_label : "");
    snprintf(set.prompts_file, sizeof set.prompts_file, "%s", p->prompts_file);
    snprintf(set.negative, sizeof set.negative, "%s", p->negative ? p->negative : "");
    set.steps = p->steps, set.width = p->size, set.height = p->size, set.t5_max_length = p->t5_len, set.num_images = p->num_images;
    set.latent_channels = info.in_channels, set.cfg = p->cfg, set.shift = p->shift, set.seed = p->seed;
    // existing run: resume (same settings), start over (--force), or refuse
    int exists = 0;
    {
        char * mp = path_join(p->out_dir, "manifest.json");
        exists = mp && path_is_file(mp);
        free(mp);
    }
    if (exists && !p->force) {
        if (!p->resume) {
            st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s already holds a calibration; pass --resume to continue it or --force to start over", p->out_dir);
            goto done;
        }
        if ((st = calib_read(p->out_dir, &man, e)) != SD3Q_OK) goto done;
        char why[256];
        if (settings_differ(&man.set, &set, why, sizeof why)) {
            st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s: cannot resume with different settings (%s); use --force to start over", p->out_dir, why);
            goto done;
        }
        if (man.n_prompts != np) {
            st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s: the prompt file now has %d prompts, the calibration %d", p->out_dir, np, man.n_prompts);
            goto done;
        }
        for (int i = 0; i < np; i++)
            if (strcmp(man.prompts[i].text, prompts[i]) != 0) {
                st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s: prompt %d changed since the calibration started", p->out_dir, i);
                goto done;
            }
        man.set.num_images = p->num_images;
    } else {
        man.set = set;
        man.n_prompts = np;
        man.prompts = calloc((size_t)np, sizeof(*man.prompts));
        if (!man.prompts) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
        for (int i = 0; i < np; i++) {
            man.prompts[i].id = i;
            if (!(man.prompts[i].text = strdup(prompts[i]))) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                goto done;
            }
        }
    }
    struct calib_image * ni = realloc(man.images, sizeof(*man.images) * (size_t)(p->num_images > 0 ? p->num_images : 1));
    if (!ni) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    man.images = ni;
    char sub[3][16] = {"prompts", "latents", "images"};
    mkdir(p->out_dir, 0755);
    for (int i = 0; i < 3; i++) {
        char * d = path_join(p->out_dir, sub[i]);
        if (d) mkdir(d, 0755);
        int ok = d && path_is_dir(d);
        free(d);
        if (!ok) {
            st = err_set(e, SD3Q_ERR_IO, "%s: cannot create the folder %s", p->out_dir, sub[i]);
            goto done;
        }
    }
    int h = p->size / 8, w = p->size / 8, C = info.in_channels;
    int64_t L = sd3q_model_context_len(m, p->t5_len), D = sd3q_model_context_dim(m), P = sd3q_model_pooled_dim(m), nl = (int64_t)C * h * w;
    if (L <= 0) {
        st = err_set(e, SD3Q_ERR_MISSING, "the model cannot encode prompts (text encoders or tokenizers missing)");
        goto done;
    }
    ctx = malloc(sizeof(float) * (size_t)(L * D));
    nctx = malloc(sizeof(float) * (size_t)(L * D));
    pooled = malloc(sizeof(float) * (size_t)P);
    npooled = malloc(sizeof(float) * (size_t)P);
    image = malloc(sizeof(float) * 3 * (size_t)p->size * (size_t)p->size);
    rgb = malloc(3 * (size_t)p->size * (size_t)p->size);
    cap.nl = nl;
    cap.lat = malloc(sizeof(float) * (size_t)((p->steps + 1) * nl));
    cap.sig = malloc(sizeof(float) * (size_t)(p->steps + 1));
    cap.ts = calloc((size_t)p->steps, sizeof(float));
    if (!ctx || !nctx || !pooled || !npooled || !image || !rgb || !cap.lat || !cap.sig || !cap.ts) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    // the negative prompt, once
    if ((st = sd3q_session_encode_prompt(s, set.negative, p->t5_len, nctx, npooled)) != SD3Q_OK) {
        st = err_set(e, st, "%s", sd3q_session_last_error(s));
        goto done;
    }
    if ((st = calib_write_embeds(p->out_dir, "prompts/negative.safetensors", nctx, L, D, npooled, P, e)) != SD3Q_OK) goto done;
    float scale, vshift;
    sd3q_model_vae_factors(m, &scale, &vshift);
    for (int i = man.n_images; i < p->num_images; i++) {
        int pr = i % np;
        int64_t seed = seeds[pr] >= 0 ? seeds[pr] : p->seed + i;
        char rel[64];
        // prompt embeddings once per prompt: encoded and stored the first time, read back afterwards
        calib_prompt_file(pr, rel, sizeof rel);
        char * pp = path_join(p->out_dir, rel);
        int have = pp && path_is_file(pp);
        free(pp);
        if (have) {
            float * c2 = NULL, * p2 = NULL;
            if ((st = calib_read_embeds(p->out_dir, rel, L, D, P, &c2, &p2, e)) != SD3Q_OK) {
                free(c2);
                goto done;
            }
            memcpy(ctx, c2, sizeof(float) * (size_t)(L * D));
            memcpy(pooled, p2, sizeof(float) * (size_t)P);
            free(c2), free(p2);
        } else {
            if ((st = sd3q_session_encode_prompt(s, prompts[pr], p->t5_len, ctx, pooled)) != SD3Q_OK) {
                st = err_set(e, st, "%s", sd3q_session_last_error(s));
                goto done;
            }
            if ((st = calib_write_embeds(p->out_dir, rel, ctx, L, D, pooled, P, e)) != SD3Q_OK) goto done;
        }
        // sample, keeping every step's latent
        sd3q_randn_torch((uint64_t)seed, cap.lat, nl);
        float * x = cap.lat + (int64_t)p->steps * nl;  // work buffer: the final slot
        memcpy(x, cap.lat, sizeof(float) * (size_t)nl);
        struct sd3q_cond cond = {(int)L, ctx, pooled}, uncond = {(int)L, nctx, npooled};
        if ((st = session_sample(s, h, w, p->steps, (float)p->shift, (float)p->cfg, &cond, &uncond, x, capture_step, &cap)) != SD3Q_OK) {
            st = err_set(e, st, "%s", sd3q_session_last_error(s));
            goto done;
        }
        int64_t ls[4] = {p->steps + 1, C, h, w}, ss[1] = {p->steps + 1}, ts[1] = {p->steps};
        struct st_wtensor t[3] = {{"latents", DT_F32, 4, ls, cap.lat}, {"sigmas", DT_F32, 1, ss, cap.sig}, {"timesteps", DT_F32, 1, ts, cap.ts}};
        calib_latents_file(i, rel, sizeof rel);
        char * lp = path_join(p->out_dir, rel);
        st = lp ? st_write(lp, t, 3, NULL, 0, e) : err_set(e, SD3Q_ERR_OOM, "out of memory");
        free(lp);
        if (st != SD3Q_OK) goto done;
        // decode and save the image
        float * z = image;  // reuse as the VAE-space latent first (it is larger)
        for (int64_t k = 0; k < nl; k++) z[k] = x[k] / scale + vshift;
        float * zc = malloc(sizeof(float) * (size_t)nl);
        if (!zc) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
        memcpy(zc, z, sizeof(float) * (size_t)nl);
        st = sd3q_session_vae_decode(s, 1, h, w, zc, image);
        free(zc);
        if (st != SD3Q_OK) {
            st = err_set(e, st, "%s", sd3q_session_last_error(s));
            goto done;
        }
        image_to_rgb8(image, p->size, p->size, rgb);
        struct pngio_params pp2 = {prompts[pr], set.negative, (uint64_t)seed, p->steps, p->cfg, p->shift, p->size, p->size, set.model, NULL};
        calib_image_file(i, rel, sizeof rel);
        char * ip = path_join(p->out_dir, rel);
        st = ip ? pngio_write_image(ip, rgb, p->size, p->size, &pp2, e) : err_set(e, SD3Q_ERR_OOM, "out of memory");
        free(ip);
        if (st != SD3Q_OK) goto done;
        // only now is the image complete: record it
        man.images[man.n_images++] = (struct calib_image){i, pr, seed};
        if ((st = calib_write(p->out_dir, &man, e)) != SD3Q_OK) goto done;
        if (p->progress) p->progress(p->progress_ud, i + 1, p->num_images);
    }
done:
    for (int i = 0; prompts && i < np; i++) free(prompts[i]);
    free(prompts), free(seeds), free(ctx), free(nctx), free(pooled), free(npooled), free(image), free(rgb);
    free(cap.lat), free(cap.sig), free(cap.ts);
    calib_free(&man);
    return st;
}
