/*
 * collect.c — `sd3q collect-activations`: replays stored calibration latents through the MMDiT exactly as at
 * inference (CFG batch [negative, prompt] at the step's timestep) and accumulates statistics of the input of every
 * quantizable Linear, per denoising step (keyed by σ).
 *
 * Steps are the outer loop, so only one step's accumulators live at a time; each step is written out (atomically)
 * as soon as it is complete. The post-GELU shift is TaQ-DiT's momentum average ((min+max)/2, momentum 0.95) run over
 * the collected steps in sampling order (the seed project ran it over images at a fixed step: its defect 15).
 */
#include "quant/collect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/fileutil.h"
#include "io/safetensors.h"
#include "model/session.h"
#include "quant/actstats.h"
#include "quant/calibfile.h"
#include "quant/statsfile.h"

#define MAX_LAYERS 512

struct act_collector {
    int              n;
    char             names[MAX_LAYERS][64];
    int64_t          C[MAX_LAYERS];
    struct act_stats acc[MAX_LAYERS];
    int              oom;
};

// The MMDiT hook: every "mm…" activation (a Linear's input) goes into its layer's accumulator.
static void on_tensor(void * ud, const char * name, const void * data, int64_t batch, int64_t rows, int64_t cols) {
    struct act_collector * c = ud;
    if (strncmp(name, "mm", 2) != 0) return;
    int i = 0;
    while (i < c->n && strcmp(c->names[i], name) != 0) i++;
    if (i == c->n) {
        if (c->n == MAX_LAYERS || act_stats_init(&c->acc[i], cols) != 0) {
            c->oom = 1;
            return;
        }
        snprintf(c->names[i], sizeof c->names[i], "%s", name);
        c->C[i] = cols;
        c->n++;
    }
    act_stats_add(&c->acc[i], data, batch * rows);
}

struct act_collector * act_collector_new(void) { return calloc(1, sizeof(struct act_collector)); }

void act_collector_free(struct act_collector * c) {
    if (!c) return;
    for (int l = 0; l < c->n; l++) act_stats_free(&c->acc[l]);
    free(c);
}

struct mmdit_hook act_collector_hook(struct act_collector * c) { return (struct mmdit_hook){c, on_tensor, NULL}; }

enum sd3q_status quant_collect(struct sd3q_session * s, const struct collect_params * p, struct sd3q_errbuf * e) {
    struct calib_manifest man = {0};
    struct stats_table tab = {0};
    struct act_collector * col = act_collector_new();
    float * nctx = NULL, * npool = NULL, ** pctx = NULL, ** ppool = NULL, * x = NULL, * ctx2 = NULL, * pool2 = NULL, * vout = NULL;
    int * imgs = NULL;
    enum sd3q_status st = SD3Q_OK;
    if (!col) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if ((st = calib_read(p->calib_dir, &man, e)) != SD3Q_OK) goto done;
    if (man.n_images < 1) {
        st = err_set(e, SD3Q_ERR_MISSING, "%s: the calibration holds no completed image yet", p->calib_dir);
        goto done;
    }
    const struct mmdit * m = s->model->mmdit;
    if (!m) {
        st = err_set(e, SD3Q_ERR_MISSING, "the model has no MMDiT");
        goto done;
    }
    int N = man.set.steps, h = man.set.height / 8, w = man.set.width / 8, C = man.set.latent_channels;
    int64_t L = sd3q_model_context_len(s->model, man.set.t5_max_length), D = m->cfg.ctx_dim, P = m->cfg.pooled_dim, nl = (int64_t)C * h * w;
    if (L <= 0) L = 77 + man.set.t5_max_length;  // an MMDiT-only model: the stored embeddings decide (shape-checked below)
    if (C != m->cfg.in_ch) {
        st = err_set(e, SD3Q_ERR_SHAPE, "%s: calibration latents have %d channels, the model takes %d", p->calib_dir, C, m->cfg.in_ch);
        goto done;
    }
    int nimg = p->num_images > 0 && p->num_images < man.n_images ? p->num_images : man.n_images;
    int stride = p->stride > 0 ? p->stride : 1;
    imgs = malloc(sizeof(int) * (size_t)nimg);
    pctx = calloc((size_t)man.n_prompts, sizeof(float *));
    ppool = calloc((size_t)man.n_prompts, sizeof(float *));
    x = malloc(sizeof(float) * 2 * (size_t)nl);
    vout = malloc(sizeof(float) * 2 * (size_t)nl);
    ctx2 = malloc(sizeof(float) * 2 * (size_t)(L * D));
    pool2 = malloc(sizeof(float) * 2 * (size_t)P);
    if (!imgs || !pctx || !ppool || !x || !vout || !ctx2 || !pool2) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (int j = 0; j < nimg; j++) imgs[j] = (int)((int64_t)j * man.n_images / nimg);  // evenly spaced
    if ((st = calib_read_embeds(p->calib_dir, "prompts/negative.safetensors", L, D, P, &nctx, &npool, e)) != SD3Q_OK) goto done;
    for (int j = 0; j < nimg; j++) {
        int pr = man.images[imgs[j]].prompt;
        if (pctx[pr]) continue;
        char fn[64];
        calib_prompt_file(pr, fn, sizeof fn);
        if ((st = calib_read_embeds(p->calib_dir, fn, L, D, P, &pctx[pr], &ppool[pr], e)) != SD3Q_OK) goto done;
    }
    mkdir(p->out_dir, 0755);
    if (!path_is_dir(p->out_dir)) {
        st = err_set(e, SD3Q_ERR_IO, "%s: cannot create the output folder", p->out_dir);
        goto done;
    }
    char * idx = path_join(p->out_dir, "stats.json");
    int exists = idx && path_is_file(idx);
    free(idx);
    if (exists && !p->force) {
        st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s already holds statistics (stats.json); pass --force to overwrite", p->out_dir);
        goto done;
    }
    tab.n_steps = (N + stride - 1) / stride;
    tab.steps = calloc((size_t)tab.n_steps, sizeof(*tab.steps));
    tab.calib_steps = N, tab.calib_images = nimg;
    snprintf(tab.model, sizeof tab.model, "%s", man.set.model);
    if (!tab.steps) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    s->hook = act_collector_hook(col);
    float ** shift = NULL;  // per layer: the running post-GELU shift
    for (int si = 0; si < tab.n_steps && st == SD3Q_OK; si++) {
        int k = si * stride;
        for (int j = 0; j < nimg && st == SD3Q_OK; j++) {
            char fn[64];
            calib_latents_file(imgs[j], fn, sizeof fn);
            char * path = path_join(p->calib_dir, fn);
            struct st_file lf;
            if (!path) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                break;
            }
            st = st_open(path, &lf, e);
            free(path);
            if (st != SD3Q_OK) break;
            const struct st_tensor * lt = st_find(&lf, "latents"), * sg = st_find(&lf, "sigmas");
            if (!lt || !sg || lt->type != DT_F32 || sg->type != DT_F32 || lt->ndim != 4 || lt->shape[0] != N + 1 || lt->shape[1] != C ||
                lt->shape[2] != h || lt->shape[3] != w || sg->ndim != 1 || sg->shape[0] != N + 1) {
                st = err_set(e, SD3Q_ERR_SHAPE, "%s/%s: expected F32 latents [%d, %d, %d, %d] and sigmas [%d]", p->calib_dir, fn, N + 1, C, h, w, N + 1);
                st_close(&lf);
                break;
            }
            float sigma;
            memcpy(&sigma, sg->data + 4 * (size_t)k, 4);
            memcpy(x, lt->data + sizeof(float) * (size_t)(k * nl), sizeof(float) * (size_t)nl);
            memcpy(x + nl, x, sizeof(float) * (size_t)nl);
            st_close(&lf);
            tab.steps[si] = (struct stats_step){k, sigma, sigma * 1000.0f};
            // CFG batch as at inference: [negative, prompt]
            int pr = man.images[imgs[j]].prompt;
            memcpy(ctx2, nctx, sizeof(float) * (size_t)(L * D));
            memcpy(ctx2 + L * D, pctx[pr], sizeof(float) * (size_t)(L * D));
            memcpy(pool2, npool, sizeof(float) * (size_t)P);
            memcpy(pool2 + P, ppool[pr], sizeof(float) * (size_t)P);
            float t[2] = {sigma * 1000.0f, sigma * 1000.0f};
            if (sd3q_session_mmdit(s, 2, h, w, x, (int)L, ctx2, pool2, t, vout) != SD3Q_OK) {
                st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s", sd3q_session_last_error(s));
                break;
            }
            if (col->oom) st = err_set(e, SD3Q_ERR_OOM, "out of memory for activation statistics");
            if (p->progress) p->progress(p->progress_ud, si * nimg + j + 1, tab.n_steps * nimg);
        }
        if (st != SD3Q_OK) break;
        if (!tab.layers) {  // first step: the layer list is now known
            tab.n_layers = col->n;
            tab.layers = calloc((size_t)col->n, sizeof(*tab.layers));
            tab.cells = calloc((size_t)col->n * (size_t)tab.n_steps, sizeof(*tab.cells));
            shift = calloc((size_t)col->n, sizeof(float *));
            if (!tab.layers || !tab.cells || !shift) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                free(shift);
                break;
            }
            for (int l = 0; l < col->n; l++) {
                snprintf(tab.layers[l].name, sizeof tab.layers[l].name, "%s", col->names[l]);
                tab.layers[l].C = col->C[l];
                size_t ln = strlen(col->names[l]);
                tab.layers[l].post_gelu = ln > 8 && strcmp(col->names[l] + ln - 8, ".mlp.fc2") == 0;
            }
        }
        for (int l = 0; l < col->n && st == SD3Q_OK; l++) {
            struct act_stats * a = &col->acc[l];
            if (tab.layers[l].post_gelu) {
                if (!shift[l] && !(shift[l] = malloc(sizeof(float) * (size_t)a->C))) {
                    st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                    break;
                }
                for (int64_t c = 0; c < a->C; c++) {
                    float centre = (float)(0.5 * (act_stats_avg_min(a, c) + act_stats_avg_max(a, c)));
                    shift[l][c] = si == 0 ? centre : 0.95f * shift[l][c] + 0.05f * centre;
                }
            }
            st = stats_cell_from_acc(stats_at(&tab, si, l), a, tab.layers[l].post_gelu ? shift[l] : NULL, e);
            act_stats_free(a);
            if (act_stats_init(a, col->C[l]) != 0) st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        }
        if (st == SD3Q_OK) st = stats_write_step(&tab, si, p->out_dir, e);
        if (st == SD3Q_OK) st = stats_write_index(&tab, p->out_dir, e);
        for (int l = 0; l < tab.n_layers; l++) {  // the step is on disk: free its vectors, keep the scalars
            struct stats_cell * c = stats_at(&tab, si, l);
            free(c->run_min), free(c->run_max), free(c->avg_min), free(c->avg_max), free(c->shift), free(c->hist);
            c->run_min = c->run_max = c->avg_min = c->avg_max = c->shift = c->hist = NULL;
        }
    }
    if (shift)
        for (int l = 0; l < tab.n_layers; l++) free(shift[l]);
    free(shift);
done:
    s->hook = (struct mmdit_hook){0};
    act_collector_free(col);
    for (int i = 0; pctx && i < man.n_prompts; i++) free(pctx[i]), free(ppool[i]);
    free(pctx), free(ppool), free(nctx), free(npool), free(x), free(vout), free(ctx2), free(pool2), free(imgs);
    stats_free(&tab);
    calib_free(&man);
    return st;
}
