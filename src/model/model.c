/*
 * model.c — loading, describing and freeing the model object (public API in sd3q.h).
 */
#include "model/model.h"
#include "model/text.h"
#include "model/vae-api.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sd3q_model_params sd3q_model_default_params(void) {
    struct sd3q_model_params p;
    memset(&p, 0, sizeof p);
    return p;
}

enum sd3q_status sd3q_model_load(const struct sd3q_model_params * params, struct sd3q_model ** out, char * err, size_t err_size) {
    struct sd3q_errbuf e = {{0}};
    enum sd3q_status st = SD3Q_OK;
    if (out) *out = NULL;
    struct sd3q_model * m = NULL;
    if (!params || !out) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "sd3q_model_load: params and out must not be NULL");
        goto done;
    }
    m = calloc(1, sizeof(*m));
    if (!m) {
        st = err_set(&e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    if ((st = ckpt_open(params, &m->ck, &e)) != SD3Q_OK) goto done;
    if (m->ck.n_unknown && !params->allow_extra) {
        st = err_set(&e, SD3Q_ERR_FORMAT, "%s: %d tensor(s) belong to no SD3 component, e.g. '%s' (pass --allow-extra to ignore)",
                     m->ck.unknown_file, m->ck.n_unknown, m->ck.first_unknown);
        goto done;
    }
    if (m->ck.comp[SD3Q_COMP_MMDIT].present &&
        (st = mmdit_load(&m->ck.comp[SD3Q_COMP_MMDIT], params->allow_extra, &m->mmdit, &e)) != SD3Q_OK)
        goto done;
    if ((st = text_load(m, params, &e)) != SD3Q_OK) goto done;
    if ((st = vae_model_load(m, params->allow_extra, &e)) != SD3Q_OK) goto done;
    *out = m;
    m = NULL;
done:
    sd3q_model_free(m);
    if (err && err_size) snprintf(err, err_size, "%s", st == SD3Q_OK ? "" : e.msg);
    return st;
}

void sd3q_model_free(struct sd3q_model * m) {
    if (!m) return;
    mmdit_free(m->mmdit);
    text_free(m);
    vae_model_free(m);
    ckpt_close(&m->ck);
    free(m);
}

float sd3q_model_shift(const struct sd3q_model * m) { return m ? (float)m->ck.shift : (float)SD3Q_DEFAULT_SHIFT; }

int sd3q_model_has(const struct sd3q_model * m, enum sd3q_component c) {
    if (!m || c < 0 || c >= SD3Q_COMP_COUNT) return 0;
    if (c == SD3Q_COMP_MMDIT) return m->mmdit != NULL;
    return m->ck.comp[c].present;
}

enum sd3q_status sd3q_model_mmdit_info(const struct sd3q_model * m, struct sd3q_mmdit_info * info) {
    if (!m || !info) return SD3Q_ERR_INVALID_ARG;
    if (!m->mmdit) return SD3Q_ERR_MISSING;
    const struct mmdit_config * c = &m->mmdit->cfg;
    memset(info, 0, sizeof *info);
    info->depth        = c->depth;
    info->hidden       = c->D;
    info->heads        = c->heads;
    info->head_dim     = c->head_dim;
    info->patch        = c->patch;
    info->in_channels  = c->in_ch;
    info->out_channels = c->out_ch;
    info->pos_grid     = c->pos_grid;
    info->context_dim  = c->ctx_dim;
    info->pooled_dim   = c->pooled_dim;
    info->mlp_hidden   = c->mlp_hidden;
    info->qk_norm      = c->qk_norm;
    info->n_dual       = c->n_dual;
    for (int i = 0; i < c->depth; i++)
        if (c->dual[i]) {
            if (i < 32) info->dual_mask_lo |= (int32_t)(1u << i);
            else info->dual_mask_hi |= (int32_t)(1u << (i - 32));
        }
    info->sample_size = c->sample_size;
    info->n_params    = m->mmdit->n_params;
    return SD3Q_OK;
}

// Appends printf-formatted text to a describe buffer, tracking the full length.
struct sbuf {
    char * p;
    size_t size, len;
};

static void sb_printf(struct sbuf * b, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf * b, const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->len < b->size ? b->p + b->len : NULL, b->len < b->size ? b->size - b->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

size_t sd3q_model_describe(const struct sd3q_model * m, int tensors, char * buf, size_t size) {
    struct sbuf b = {buf, size, 0};
    if (buf && size) buf[0] = '\0';
    if (!m) return 0;
    static const char * const title[SD3Q_COMP_COUNT] = {"MMDiT", "CLIP-L", "CLIP-G", "T5-XXL", "VAE"};
    for (int k = 0; k < SD3Q_COMP_COUNT; k++) {
        const struct ckpt_component * c = &m->ck.comp[k];
        if (!c->present) {
            sb_printf(&b, "%-7s absent\n", title[k]);
            continue;
        }
        int64_t counts[DT_COUNT] = {0};
        int64_t params = 0;
        for (int i = 0; i < c->n; i++) {
            counts[c->t[i].t->type]++;
            params += c->t[i].t->numel;
        }
        sb_printf(&b, "%-7s %s\n        naming %s%s%s, %d tensors, %.2f M parameters, dtypes", title[k], c->origin,
                  c->naming == NAMING_DIFFUSERS ? "diffusers" : "original", c->config_path ? ", config " : "",
                  c->config_path ? c->config_path : "", c->n, (double)params / 1e6);
        for (int d = 0; d < DT_COUNT; d++)
            if (counts[d]) sb_printf(&b, " %s×%lld", dtype_name((enum dtype)d), (long long)counts[d]);
        sb_printf(&b, "\n");
        if (k == SD3Q_COMP_MMDIT && m->mmdit) {
            const struct mmdit_config * mc = &m->mmdit->cfg;
            sb_printf(&b, "        depth %d, hidden %d, heads %d×%d, patch %d, channels %d→%d, position grid %d×%d, context %d, "
                          "pooled %d, mlp %d, qk-norm %s, dual-attention blocks %d",
                      mc->depth, mc->D, mc->heads, mc->head_dim, mc->patch, mc->in_ch, mc->out_ch, mc->pos_grid, mc->pos_grid,
                      mc->ctx_dim, mc->pooled_dim, mc->mlp_hidden, mc->qk_norm ? "rms" : "none", mc->n_dual);
            if (mc->sample_size) sb_printf(&b, ", sample size %d", mc->sample_size);
            sb_printf(&b, "\n");
        }
        if (k >= SD3Q_COMP_CLIP_L && k <= SD3Q_COMP_T5) {
            char line[1024];
            text_describe(m, (enum sd3q_component)k, line, sizeof line);
            sb_printf(&b, "%s", line);
        }
        if (k == SD3Q_COMP_VAE) {
            char line[1024];
            vae_describe(m, line, sizeof line);
            sb_printf(&b, "%s", line);
        }
        if (tensors)
            for (int i = 0; i < c->n; i++) {
                const struct st_tensor * t = c->t[i].t;
                sb_printf(&b, "        %-70s %-7s [", c->t[i].name, dtype_name(t->type));
                for (int d = 0; d < t->ndim; d++) sb_printf(&b, d ? ", %lld" : "%lld", (long long)t->shape[d]);
                sb_printf(&b, "]\n");
            }
    }
    if (m->ck.scheduler) sb_printf(&b, "scheduler shift %g (%s)\n", m->ck.shift, m->ck.scheduler);
    for (int k = 0; k < 3; k++)
        if (m->ck.tokenizer[k]) sb_printf(&b, "tokenizer%s %s\n", k == 0 ? "  " : k == 1 ? "_2" : "_3", m->ck.tokenizer[k]);
    return b.len;
}
