/*
 * mmdit.c — the SD3 / SD3.5 diffusion transformer: configuration, expected tensors in both naming schemes, and the
 * forward pass, exactly as diffusers' SD3Transformer2DModel computes it (../shared/research/sd3_arch_spec.md §2).
 *
 * Not a graph engine: one function runs the ops in order against the backend interface, and the same function,
 * given a measuring arena, is the planning pass that sizes the session's activation memory.
 */
#include "model/mmdit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/expect.h"
#include "io/json.h"

#define LN_EPS  1e-6f
#define QK_EPS  1e-6f

// ---- configuration --------------------------------------------------------------------------------------------------

// Shape of the first tensor found among two names (original, diffusers); NULL when neither exists.
static const struct st_tensor * find2(const struct ckpt_component * c, const char * orig, const char * diff) {
    return comp_find(c, c->naming == NAMING_DIFFUSERS ? diff : orig);
}

// Infers the hyper-parameters from tensor shapes (spec §2.1: the reference derives everything from the checkpoint).
static enum sd3q_status infer_config(const struct ckpt_component * c, struct mmdit_config * cfg, struct sd3q_errbuf * e) {
    memset(cfg, 0, sizeof(*cfg));
    int dif = c->naming == NAMING_DIFFUSERS;
    const struct st_tensor * xe = find2(c, "x_embedder.proj.weight", "pos_embed.proj.weight");
    const struct st_tensor * pe = find2(c, "pos_embed", "pos_embed.pos_embed");
    const struct st_tensor * ce = find2(c, "context_embedder.weight", "context_embedder.weight");
    const struct st_tensor * ye = find2(c, "y_embedder.mlp.0.weight", "time_text_embed.text_embedder.linear_1.weight");
    const struct st_tensor * fl = find2(c, "final_layer.linear.weight", "proj_out.weight");
    const struct st_tensor * f1 = find2(c, "joint_blocks.0.x_block.mlp.fc1.weight", "transformer_blocks.0.ff.net.0.proj.weight");
    const char * miss = !xe ? (dif ? "pos_embed.proj.weight" : "x_embedder.proj.weight")
                      : !pe ? (dif ? "pos_embed.pos_embed" : "pos_embed")
                      : !ce ? "context_embedder.weight"
                      : !ye ? (dif ? "time_text_embed.text_embedder.linear_1.weight" : "y_embedder.mlp.0.weight")
                      : !fl ? (dif ? "proj_out.weight" : "final_layer.linear.weight")
                      : !f1 ? (dif ? "transformer_blocks.0.ff.net.0.proj.weight" : "joint_blocks.0.x_block.mlp.fc1.weight")
                            : NULL;
    if (miss) return err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' missing (needed to infer the MMDiT configuration)", c->origin, miss);
    if (xe->ndim != 4 || xe->shape[2] != xe->shape[3] || xe->shape[2] < 1)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: patch embedding weight must be [D, C, p, p]", c->origin);
    cfg->D        = (int)xe->shape[0];
    cfg->in_ch    = (int)xe->shape[1];
    cfg->patch    = (int)xe->shape[2];
    cfg->head_dim = 64;
    if (pe->ndim != 3 || pe->shape[0] != 1) return err_set(e, SD3Q_ERR_SHAPE, "%s: pos_embed must be [1, grid², D]", c->origin);
    int64_t g = (int64_t)llround(sqrt((double)pe->shape[1]));
    if (g * g != pe->shape[1]) return err_set(e, SD3Q_ERR_SHAPE, "%s: pos_embed has %lld positions, not a square grid", c->origin, (long long)pe->shape[1]);
    cfg->pos_grid   = (int)g;
    cfg->ctx_dim    = ce->ndim == 2 ? (int)ce->shape[1] : 0;
    cfg->pooled_dim = ye->ndim == 2 ? (int)ye->shape[1] : 0;
    cfg->mlp_hidden = f1->ndim == 2 ? (int)f1->shape[0] : 0;
    int64_t pp = (int64_t)cfg->patch * cfg->patch;
    cfg->out_ch = (fl->ndim == 2 && fl->shape[0] % pp == 0) ? (int)(fl->shape[0] / pp) : 0;
    // depth = number of block indices present
    const char * bp = dif ? "transformer_blocks." : "joint_blocks.";
    size_t bl = strlen(bp);
    int maxb = -1;
    for (int i = 0; i < c->n; i++) {
        if (strncmp(c->t[i].name, bp, bl) != 0) continue;
        char * end;
        long v = strtol(c->t[i].name + bl, &end, 10);
        if (end != c->t[i].name + bl && *end == '.' && v >= 0 && v < MMDIT_MAX_DEPTH && v > maxb) maxb = (int)v;
        if (v >= MMDIT_MAX_DEPTH) return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: block index %ld exceeds the supported depth %d", c->origin, v, MMDIT_MAX_DEPTH);
    }
    cfg->depth = maxb + 1;
    const struct st_tensor * lq = find2(c, "joint_blocks.0.x_block.attn.ln_q.weight", "transformer_blocks.0.attn.norm_q.weight");
    cfg->qk_norm = lq != NULL;
    if (lq && lq->ndim == 1) cfg->head_dim = (int)lq->shape[0];
    for (int i = 0; i < cfg->depth; i++) {
        char n[128];
        snprintf(n, sizeof n, dif ? "transformer_blocks.%d.attn2.to_q.weight" : "joint_blocks.%d.x_block.attn2.qkv.weight", i);
        if (comp_find(c, n)) {
            cfg->dual[i] = 1;
            cfg->n_dual++;
        }
    }
    return SD3Q_OK;
}

// Validates a configuration's internal consistency.
static enum sd3q_status check_config(const struct mmdit_config * cfg, const char * origin, struct sd3q_errbuf * e) {
    if (cfg->depth < 1) return err_set(e, SD3Q_ERR_MISSING, "%s: no joint blocks found", origin);
    if (cfg->D < 1 || cfg->head_dim < 1 || cfg->D % cfg->head_dim != 0)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: hidden width %d is not a multiple of the head width %d", origin, cfg->D, cfg->head_dim);
    if (cfg->patch < 1 || cfg->patch > 8 || cfg->in_ch < 1 || cfg->out_ch < 1 || cfg->ctx_dim < 1 || cfg->pooled_dim < 1 ||
        cfg->mlp_hidden < 1 || cfg->pos_grid < 1)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: implausible MMDiT configuration (patch %d, channels %d/%d, context %d, pooled %d, mlp %d, grid %d)",
                       origin, cfg->patch, cfg->in_ch, cfg->out_ch, cfg->ctx_dim, cfg->pooled_dim, cfg->mlp_hidden, cfg->pos_grid);
    return SD3Q_OK;
}

// Reads diffusers' transformer/config.json and cross-checks it with the inferred configuration.
static enum sd3q_status apply_config_json(const char * path, struct mmdit_config * cfg, struct sd3q_errbuf * e) {
    cJSON * j;
    TRY(json_load(path, &j, e));
    enum sd3q_status st = SD3Q_OK;
    int64_t layers, hd, heads, jad, ppd, inc, outc, ps, pms, ss;
    if ((st = json_get_int(j, "num_layers", 1, cfg->depth, 1, MMDIT_MAX_DEPTH, &layers, path, e)) ||
        (st = json_get_int(j, "attention_head_dim", 1, cfg->head_dim, 1, 4096, &hd, path, e)) ||
        (st = json_get_int(j, "num_attention_heads", 1, cfg->D / (cfg->head_dim ? cfg->head_dim : 1), 1, 4096, &heads, path, e)) ||
        (st = json_get_int(j, "joint_attention_dim", 1, cfg->ctx_dim, 1, 1 << 20, &jad, path, e)) ||
        (st = json_get_int(j, "pooled_projection_dim", 1, cfg->pooled_dim, 1, 1 << 20, &ppd, path, e)) ||
        (st = json_get_int(j, "in_channels", 1, cfg->in_ch, 1, 4096, &inc, path, e)) ||
        (st = json_get_int(j, "out_channels", 1, cfg->out_ch, 1, 4096, &outc, path, e)) ||
        (st = json_get_int(j, "patch_size", 1, cfg->patch, 1, 8, &ps, path, e)) ||
        (st = json_get_int(j, "pos_embed_max_size", 1, cfg->pos_grid, 1, 1 << 16, &pms, path, e)) ||
        (st = json_get_int(j, "sample_size", 1, 0, 0, 1 << 16, &ss, path, e)))
        goto done;
    struct { const char * field; int64_t cfgv, shape; } chk[] = {
        {"num_layers", layers, cfg->depth},         {"num_attention_heads × attention_head_dim", heads * hd, cfg->D},
        {"joint_attention_dim", jad, cfg->ctx_dim}, {"pooled_projection_dim", ppd, cfg->pooled_dim},
        {"in_channels", inc, cfg->in_ch},           {"out_channels", outc, cfg->out_ch},
        {"patch_size", ps, cfg->patch},             {"pos_embed_max_size", pms, cfg->pos_grid},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].cfgv != chk[i].shape) {
            st = err_set(e, SD3Q_ERR_SHAPE, "%s: %s is %lld but the weights say %lld", path, chk[i].field, (long long)chk[i].cfgv,
                         (long long)chk[i].shape);
            goto done;
        }
    cfg->head_dim    = (int)hd;
    cfg->heads       = (int)heads;
    cfg->sample_size = (int)ss;
    const cJSON * qk = cJSON_GetObjectItemCaseSensitive(j, "qk_norm");
    if (qk && !cJSON_IsNull(qk)) {
        const char * v = cJSON_IsString(qk) ? qk->valuestring : "";
        if (strcmp(v, "rms_norm") != 0) {
            st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: qk_norm \"%s\" is not supported (expected \"rms_norm\" or null)", path, v);
            goto done;
        }
        if (!cfg->qk_norm) {
            st = err_set(e, SD3Q_ERR_MISSING, "%s: qk_norm is rms_norm but the weights have no attn.norm_q", path);
            goto done;
        }
    } else if (cfg->qk_norm) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: qk_norm is null but the weights have attn.norm_q tensors", path);
        goto done;
    }
    const cJSON * dl = cJSON_GetObjectItemCaseSensitive(j, "dual_attention_layers");
    if (cJSON_IsArray(dl)) {
        int n = 0;
        const cJSON * it;
        cJSON_ArrayForEach(it, dl) {
            // a whole number in [0, depth) before the cast (0.5 must not truncate to block 0; 1e300 must not overflow)
            double dv = cJSON_IsNumber(it) ? it->valuedouble : -1.0;
            int64_t v = (dv >= 0.0 && dv < (double)cfg->depth && dv == floor(dv)) ? (int64_t)dv : -1;
            if (v < 0 || v >= cfg->depth || !cfg->dual[v]) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: dual_attention_layers lists %g, but that block has no attn2 weights", path, dv);
                goto done;
            }
            n++;
        }
        if (n != cfg->n_dual) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: dual_attention_layers lists %d blocks but %d have attn2 weights", path, n, cfg->n_dual);
            goto done;
        }
    }
done:
    cJSON_Delete(j);
    return st;
}

// ---- expected tensors -----------------------------------------------------------------------------------------------

// A Linear (weight [rows, cols] and bias [rows]) under canonical prefix `canon`; for diffusers files its rows come
// from `nsrc` tensors dnames[i] (dims drows[i]); swap: one diffusers tensor whose two halves are (scale, shift).
static void add_linear(struct expect_table * t, struct wt * w, struct wt * b, enum naming nm, const char * canon, int64_t rows,
                       int64_t cols, int nsrc, const char * const * dnames, int swap) {
    char n[WT_NAME_MAX], d[WT_NAME_MAX];
    const char * sfx[2] = {"weight", "bias"};
    struct wt * dst[2] = {w, b};
    for (int k = 0; k < 2; k++) {
        if (!dst[k]) continue;
        snprintf(n, sizeof n, "%s.%s", canon, sfx[k]);
        struct expect * x = k == 0 ? expect_add(t, dst[k], n, 2, rows, cols, 0, 0) : expect_add(t, dst[k], n, 1, rows, 0, 0, 0);
        if (nm != NAMING_DIFFUSERS) continue;
        if (swap) {
            snprintf(d, sizeof d, "%s.%s", dnames[0], sfx[k]);
            expect_src(x, d, rows, rows / 2, rows / 2);  // canonical first half (shift) = diffusers second half
            expect_src(x, d, rows, 0, rows / 2);
        } else {
            int64_t part = rows / nsrc;
            for (int i = 0; i < nsrc; i++) {
                snprintf(d, sizeof d, "%s.%s", dnames[i], sfx[k]);
                expect_src(x, d, part, 0, part);
            }
        }
    }
}

// A 1-D weight (qk-norm scale) with a diffusers alias.
static void add_vec(struct expect_table * t, struct wt * w, enum naming nm, const char * canon, const char * dname, int64_t n) {
    struct expect * x = expect_add(t, w, canon, 1, n, 0, 0, 0);
    if (nm == NAMING_DIFFUSERS) expect_src(x, dname, n, 0, n);
}

// Lists every tensor the configuration needs.
static void build_expect(struct mmdit * m, enum naming nm, struct expect_table * t) {
    const struct mmdit_config * c = &m->cfg;
    int64_t D = c->D, p = c->patch, HD = c->head_dim;
    int dif = nm == NAMING_DIFFUSERS;
    struct expect * x = expect_add(t, &m->pos_embed, "pos_embed", 3, 1, (int64_t)c->pos_grid * c->pos_grid, D, 0);
    if (dif) expect_src(x, "pos_embed.pos_embed", 1, 0, 1);
    x = expect_add(t, &m->xproj_w, "x_embedder.proj.weight", 4, D, c->in_ch, p, p);
    if (dif) expect_src(x, "pos_embed.proj.weight", D, 0, D);
    x = expect_add(t, &m->xproj_b, "x_embedder.proj.bias", 1, D, 0, 0, 0);
    if (dif) expect_src(x, "pos_embed.proj.bias", D, 0, D);
    const char * n1[1];
    n1[0] = "time_text_embed.timestep_embedder.linear_1";
    add_linear(t, &m->t1_w, &m->t1_b, nm, "t_embedder.mlp.0", D, MMDIT_FREQ_DIM, 1, n1, 0);
    n1[0] = "time_text_embed.timestep_embedder.linear_2";
    add_linear(t, &m->t2_w, &m->t2_b, nm, "t_embedder.mlp.2", D, D, 1, n1, 0);
    n1[0] = "time_text_embed.text_embedder.linear_1";
    add_linear(t, &m->y1_w, &m->y1_b, nm, "y_embedder.mlp.0", D, c->pooled_dim, 1, n1, 0);
    n1[0] = "time_text_embed.text_embedder.linear_2";
    add_linear(t, &m->y2_w, &m->y2_b, nm, "y_embedder.mlp.2", D, D, 1, n1, 0);
    n1[0] = "context_embedder";
    add_linear(t, &m->ctx_w, &m->ctx_b, nm, "context_embedder", D, c->ctx_dim, 1, n1, 0);
    n1[0] = "norm_out.linear";
    add_linear(t, &m->fmod_w, &m->fmod_b, nm, "final_layer.adaLN_modulation.1", 2 * D, D, 1, n1, 1);
    n1[0] = "proj_out";
    add_linear(t, &m->fin_w, &m->fin_b, nm, "final_layer.linear", p * p * c->out_ch, D, 1, n1, 0);

    for (int i = 0; i < c->depth; i++) {
        struct mmdit_block * b = &m->blocks[i];
        int last = i == c->depth - 1;
        char cn[WT_NAME_MAX], d0[WT_NAME_MAX], d1[WT_NAME_MAX], d2[WT_NAME_MAX];
        const char * dn[3] = {d0, d1, d2};
        for (int s = 0; s < 2; s++) {
            struct mmdit_stream * st = s == 0 ? &b->img : &b->txt;
            const char * on = s == 0 ? "x_block" : "context_block";
            st->pre_only = s == 1 && last;
            st->nmod = st->pre_only ? 2 : (s == 0 && c->dual[i] ? 9 : 6);
            snprintf(cn, sizeof cn, "joint_blocks.%d.%s.adaLN_modulation.1", i, on);
            snprintf(d0, sizeof d0, "transformer_blocks.%d.%s.linear", i, s == 0 ? "norm1" : "norm1_context");
            add_linear(t, &st->mod_w, &st->mod_b, nm, cn, st->nmod * D, D, 1, dn, st->pre_only);
            snprintf(cn, sizeof cn, "joint_blocks.%d.%s.attn.qkv", i, on);
            snprintf(d0, sizeof d0, "transformer_blocks.%d.attn.%s", i, s == 0 ? "to_q" : "add_q_proj");
            snprintf(d1, sizeof d1, "transformer_blocks.%d.attn.%s", i, s == 0 ? "to_k" : "add_k_proj");
            snprintf(d2, sizeof d2, "transformer_blocks.%d.attn.%s", i, s == 0 ? "to_v" : "add_v_proj");
            add_linear(t, &st->qkv_w, &st->qkv_b, nm, cn, 3 * D, D, 3, dn, 0);
            if (c->qk_norm) {
                snprintf(cn, sizeof cn, "joint_blocks.%d.%s.attn.ln_q.weight", i, on);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn.%s.weight", i, s == 0 ? "norm_q" : "norm_added_q");
                add_vec(t, &st->ln_q, nm, cn, d0, HD);
                snprintf(cn, sizeof cn, "joint_blocks.%d.%s.attn.ln_k.weight", i, on);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn.%s.weight", i, s == 0 ? "norm_k" : "norm_added_k");
                add_vec(t, &st->ln_k, nm, cn, d0, HD);
            }
            if (st->pre_only) continue;
            snprintf(cn, sizeof cn, "joint_blocks.%d.%s.attn.proj", i, on);
            snprintf(d0, sizeof d0, "transformer_blocks.%d.attn.%s", i, s == 0 ? "to_out.0" : "to_add_out");
            add_linear(t, &st->proj_w, &st->proj_b, nm, cn, D, D, 1, dn, 0);
            snprintf(cn, sizeof cn, "joint_blocks.%d.%s.mlp.fc1", i, on);
            snprintf(d0, sizeof d0, "transformer_blocks.%d.%s.net.0.proj", i, s == 0 ? "ff" : "ff_context");
            add_linear(t, &st->fc1_w, &st->fc1_b, nm, cn, c->mlp_hidden, D, 1, dn, 0);
            snprintf(cn, sizeof cn, "joint_blocks.%d.%s.mlp.fc2", i, on);
            snprintf(d0, sizeof d0, "transformer_blocks.%d.%s.net.2", i, s == 0 ? "ff" : "ff_context");
            add_linear(t, &st->fc2_w, &st->fc2_b, nm, cn, D, c->mlp_hidden, 1, dn, 0);
            if (s == 0 && c->dual[i]) {
                snprintf(cn, sizeof cn, "joint_blocks.%d.x_block.attn2.qkv", i);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn2.to_q", i);
                snprintf(d1, sizeof d1, "transformer_blocks.%d.attn2.to_k", i);
                snprintf(d2, sizeof d2, "transformer_blocks.%d.attn2.to_v", i);
                add_linear(t, &st->qkv2_w, &st->qkv2_b, nm, cn, 3 * D, D, 3, dn, 0);
                snprintf(cn, sizeof cn, "joint_blocks.%d.x_block.attn2.proj", i);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn2.to_out.0", i);
                add_linear(t, &st->proj2_w, &st->proj2_b, nm, cn, D, D, 1, dn, 0);
                snprintf(cn, sizeof cn, "joint_blocks.%d.x_block.attn2.ln_q.weight", i);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn2.norm_q.weight", i);
                add_vec(t, &st->ln_q2, nm, cn, d0, HD);
                snprintf(cn, sizeof cn, "joint_blocks.%d.x_block.attn2.ln_k.weight", i);
                snprintf(d0, sizeof d0, "transformer_blocks.%d.attn2.norm_k.weight", i);
                add_vec(t, &st->ln_k2, nm, cn, d0, HD);
            }
        }
    }
}

enum sd3q_status mmdit_load(const struct ckpt_component * comp, int allow_extra, struct mmdit ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    struct mmdit * m = calloc(1, sizeof(*m));
    if (!m) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    struct expect_table t = {0};
    enum sd3q_status st = infer_config(comp, &m->cfg, e);
    if (st == SD3Q_OK && comp->config_path) st = apply_config_json(comp->config_path, &m->cfg, e);
    if (st == SD3Q_OK) {
        m->cfg.heads = m->cfg.D / (m->cfg.head_dim ? m->cfg.head_dim : 1);
        st = check_config(&m->cfg, comp->origin, e);
    }
    if (st != SD3Q_OK) goto fail;
    m->blocks = calloc((size_t)m->cfg.depth, sizeof(*m->blocks));
    if (!m->blocks) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto fail;
    }
    build_expect(m, comp->naming, &t);
    static const char * const ignore[] = {NULL};
    st = expect_resolve(&t, comp, ignore, allow_extra, e);
    if (st != SD3Q_OK) goto fail;
    m->n_tensors = t.n;
    m->n_params = expect_number(&t, 0);
    expect_free(&t);
    *out = m;
    return SD3Q_OK;
fail:
    expect_free(&t);
    mmdit_free(m);
    return st;
}

void mmdit_free(struct mmdit * m) {
    if (!m) return;
    free(m->blocks);
    free(m);
}

void mmdit_for_each_weight(const struct mmdit * m, void (*fn)(void * ud, const struct wt * w), void * ud) {
    const struct wt * g[] = {&m->pos_embed, &m->xproj_w, &m->xproj_b, &m->t1_w, &m->t1_b, &m->t2_w, &m->t2_b, &m->y1_w, &m->y1_b,
                             &m->y2_w,      &m->y2_b,    &m->ctx_w,   &m->ctx_b, &m->fmod_w, &m->fmod_b, &m->fin_w, &m->fin_b};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) fn(ud, g[i]);
    for (int i = 0; i < m->cfg.depth; i++)
        for (int s = 0; s < 2; s++) {
            const struct mmdit_stream * st = s ? &m->blocks[i].txt : &m->blocks[i].img;
            const struct wt * w[] = {&st->mod_w, &st->mod_b, &st->qkv_w,  &st->qkv_b,  &st->ln_q,  &st->ln_k,    &st->proj_w,
                                     &st->proj_b, &st->fc1_w, &st->fc1_b, &st->fc2_w,  &st->fc2_b, &st->qkv2_w, &st->qkv2_b,
                                     &st->ln_q2, &st->ln_k2, &st->proj2_w, &st->proj2_b};
            for (size_t k = 0; k < sizeof w / sizeof w[0]; k++)
                if (wt_present(w[k])) fn(ud, w[k]);
        }
}

// ---- forward ------------------------------------------------------------------------------------------------------------

void mmdit_timestep_embedding(float t, float * out) {
    // diffusers get_timestep_embedding in float32: exponent = float32(-ln 10000) · i / half, freq = exp(exponent),
    // a = t · freq (a float32 product), then [sin a, cos a] flipped to [cos, sin]. exp is correctly rounded here
    // (torch's is 1 ulp off in a few entries, a 1e-6 effect) and cos/sin are evaluated in double: at t = 1000 a
    // float32 cosf would add errors of ~1e-5 that the model amplifies.
    const int half = MMDIT_FREQ_DIM / 2;
    const float nl = (float)-log(10000.0);
    for (int i = 0; i < half; i++) {
        float ex = nl * (float)i / (float)half;
        float f  = (float)exp((double)ex);
        float a  = t * f;
        out[i]        = (float)cos((double)a);
        out[half + i] = (float)sin((double)a);
    }
}

enum sd3q_status mmdit_check_sizes(const struct mmdit * m, int B, int h, int w, int L, struct sd3q_errbuf * e) {
    const struct mmdit_config * c = &m->cfg;
    if (B < 1) return err_set(e, SD3Q_ERR_INVALID_ARG, "batch must be at least 1 (got %d)", B);
    if (h < c->patch || w < c->patch || h % c->patch || w % c->patch)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "latent size %d×%d must be a positive multiple of the patch size %d", h, w, c->patch);
    if (h / c->patch > c->pos_grid || w / c->patch > c->pos_grid)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "latent size %d×%d exceeds the position table (%d×%d patches of %d)", h, w, c->pos_grid,
                       c->pos_grid, c->patch);
    if (L < 1) return err_set(e, SD3Q_ERR_INVALID_ARG, "context must have at least 1 token (got %d)", L);
    return SD3Q_OK;
}

// Calls the hook if set.
static void observe(const struct mmdit_hook * hk, const char * name, const void * p, int64_t B, int64_t rows, int64_t cols) {
    if (hk && hk->fn) hk->fn(hk->ud, name, p, B, rows, cols);
}

// Calls the hook on a Linear's input: observe, then let it modify the input in place.
static void linear_input(const struct mmdit_hook * hk, const char * name, void * p, int64_t B, int64_t rows, int64_t cols) {
    if (!hk) return;
    if (hk->fn) hk->fn(hk->ud, name, p, B, rows, cols);
    if (hk->modify) hk->modify(hk->ud, name, p, B, rows, cols);
}

// Takes a buffer of n activations from the arena (a planning bug if it does not fit: the arena was measured).
static void * take(struct arena * ar, size_t esz, int64_t n) {
    void * p = arena_alloc(ar, (size_t)n * esz);
    SD3Q_ASSERT(p);
    return p;
}

// Element offset helper for backend pointers of element size esz.
static void * at(const void * p, size_t esz, int64_t i) { return (uint8_t *)p + (size_t)i * esz; }

// x += gate ⊙ y, then h = LN(x) · (1 + scale) + shift: one op where the backend fuses the two (one pass over x).
static void gate_then_ln(const struct backend_ops * o, struct backend * bk, void * h, void * x, const void * y, const void * gate,
                         int64_t gs, int64_t B, int64_t T, int64_t D, const void * shift, const void * scale, int64_t ms) {
    if (o->gate_ln_modulate) {
        o->gate_ln_modulate(bk, h, x, y, gate, gs, B, T, D, shift, scale, ms, LN_EPS);
    } else {
        o->gate_residual(bk, x, y, gate, B, T, D, gs);
        o->ln_modulate(bk, h, x, B, T, D, shift, scale, ms, LN_EPS);
    }
}

void mmdit_forward(const struct mmdit * m, struct backend * bk, struct arena * ar, const struct mmdit_io * io,
                   const struct mmdit_hook * hook) {
    const struct mmdit_config * c = &m->cfg;
    const int64_t B = io->B, D = c->D, p = c->patch, gh = io->h / p, gw = io->w / p, N = gh * gw, L = io->L;
    const int64_t HD = c->head_dim, NH = c->heads, F = c->mlp_hidden;
    const size_t esz = bk ? bk->ops->act_size(bk) : 4;
    const struct backend_ops * o = bk ? bk->ops : NULL;
    size_t mark = arena_mark(ar);

    // activations for the whole pass, taken once
    void * hb   = take(ar, esz, B * D);             // [B, D] embedder hidden
    void * cvec = take(ar, esz, B * D);             // [B, D] conditioning c = t_emb + y_emb
    void * sc   = take(ar, esz, B * D);             // [B, D] SiLU(c)
    void * mods[2 * MMDIT_MAX_DEPTH];               // per block and stream: [B, nmod·D]
    void * fmod = take(ar, esz, B * 2 * D);         // [B, 2D] final layer (shift, scale)
    void * cols = take(ar, esz, B * N * c->in_ch * p * p);  // [B·N, C·p·p]
    void * img  = take(ar, esz, B * N * D);         // [B, N, D] image stream
    void * txt  = take(ar, esz, B * L * D);         // [B, L, D] text stream
    void * himg = take(ar, esz, B * N * D);         // [B, N, D] modulated LN / projection output
    void * htxt = take(ar, esz, B * L * D);         // [B, L, D]
    void * qimg = take(ar, esz, B * N * 3 * D);     // [B, N, 3D] fused q|k|v
    void * qtxt = take(ar, esz, B * L * (F > 3 * D ? F : 3 * D));  // [B, L, 3D] q|k|v, then [B, L, F] the text MLP's hidden
    void * aimg = take(ar, esz, B * N * D);         // [B, N, D] attention output / fc2 output
    void * atxt = take(ar, esz, B * L * D);         // [B, L, D]
    void * mlp  = take(ar, esz, B * N * F);         // [B, N, F] the image MLP's hidden
    void * fin  = take(ar, esz, B * N * p * p * c->out_ch);  // [B·N, p·p·out]
    void * h2 = NULL, * q2 = NULL, * a2 = NULL;
    if (c->n_dual) {
        h2 = take(ar, esz, B * N * D);              // [B, N, D] second modulation of LN(x)
        q2 = take(ar, esz, B * N * 3 * D);          // [B, N, 3D]
        a2 = take(ar, esz, B * N * D);              // [B, N, D]
    }
    for (int i = 0; i < c->depth; i++) {
        mods[2 * i]     = take(ar, esz, B * m->blocks[i].img.nmod * D);
        mods[2 * i + 1] = take(ar, esz, B * m->blocks[i].txt.nmod * D);
    }
    if (!bk) {  // planning pass: the allocations above are the measurement
        arena_rewind(ar, mark);
        return;
    }

    // Two queues where the backend has them (CUDA): the text stream's ops go to the side queue, beside the image
    // stream's on the main one (the text stream's 333-token Linears do not fill a GPU, nor does one modulation product of
    // two rows). The streams share SiLU(c) and the joint attention, which runs on the main queue after a JOIN and
    // before a FORK; each stream keeps its own buffers (hence the text MLP's hidden in qtxt, dead between the
    // attention and the next block's q|k|v).
    const int lanes = o && o->lane;
#define LANE(op)                      \
    do {                              \
        if (lanes) o->lane(bk, (op)); \
    } while (0)

    // conditioning vector and every modulation vector of this step
    o->linear(bk, hb, io->tfreq, B, &m->t1_w, &m->t1_b);
    o->act(bk, hb, hb, B * D, ACT_SILU);
    o->linear(bk, cvec, hb, B, &m->t2_w, &m->t2_b);
    o->linear(bk, hb, io->pooled, B, &m->y1_w, &m->y1_b);
    o->act(bk, hb, hb, B * D, ACT_SILU);
    o->linear(bk, sc, hb, B, &m->y2_w, &m->y2_b);
    o->add(bk, cvec, sc, B * D);
    observe(hook, "c", cvec, B, 1, D);
    o->act(bk, sc, cvec, B * D, ACT_SILU);
    LANE(BACKEND_LANE_FORK);  // the text stream starts from SiLU(c): its modulation vectors beside the image stream's
    for (int i = 0; i < c->depth; i++) {
        o->linear(bk, mods[2 * i], sc, B, &m->blocks[i].img.mod_w, &m->blocks[i].img.mod_b);
        LANE(BACKEND_LANE_SIDE);
        o->linear(bk, mods[2 * i + 1], sc, B, &m->blocks[i].txt.mod_w, &m->blocks[i].txt.mod_b);
        LANE(BACKEND_LANE_MAIN);
    }
    o->linear(bk, fmod, sc, B, &m->fmod_w, &m->fmod_b);

    // embeddings
    o->patchify(bk, cols, io->x, B, c->in_ch, io->h, io->w, p);
    o->linear(bk, img, cols, B * N, &m->xproj_w, &m->xproj_b);
    o->add_pos_embed(bk, img, &m->pos_embed, B, gh, gw, c->pos_grid, D);
    observe(hook, "x_tokens", img, B, N, D);
    LANE(BACKEND_LANE_SIDE);
    o->linear(bk, txt, io->context, B * L, &m->ctx_w, &m->ctx_b);
    observe(hook, "ctx_tokens", txt, B, L, D);
    LANE(BACKEND_LANE_MAIN);

    char nm[64];
    int ln_done[2] = {0, 0};  // stream s's next modulated LN (this block's first, or the final layer's) is already in its h
    for (int i = 0; i < c->depth; i++) {
        const struct mmdit_block * blk = &m->blocks[i];
        const int dual = c->dual[i], pre = blk->txt.pre_only;
        void * mi = mods[2 * i], * mt = mods[2 * i + 1];
        const int64_t si = blk->img.nmod * D, stx = blk->txt.nmod * D;  // modulation row strides
        // pre-attention: modulated LN (unless the previous block's last gate made it) and q|k|v of both streams
        if (!ln_done[0]) o->ln_modulate(bk, himg, img, B, N, D, mi, at(mi, esz, D), si, LN_EPS);
        LANE(BACKEND_LANE_SIDE);
        if (!ln_done[1]) o->ln_modulate(bk, htxt, txt, B, L, D, mt, at(mt, esz, D), stx, LN_EPS);
        LANE(BACKEND_LANE_MAIN);
        ln_done[0] = ln_done[1] = 0;
        snprintf(nm, sizeof nm, "mm%d.img.attn.qkv", i);
        linear_input(hook, nm, himg, B, N, D);
        o->linear(bk, qimg, himg, B * N, &blk->img.qkv_w, &blk->img.qkv_b);
        LANE(BACKEND_LANE_SIDE);
        snprintf(nm, sizeof nm, "mm%d.txt.attn.qkv", i);
        linear_input(hook, nm, htxt, B, L, D);
        o->linear(bk, qtxt, htxt, B * L, &blk->txt.qkv_w, &blk->txt.qkv_b);
        LANE(BACKEND_LANE_MAIN);
        if (c->qk_norm) {
            o->rmsnorm_heads(bk, qimg, B * N, D, 0, HD, &blk->img.ln_q, QK_EPS);
            o->rmsnorm_heads(bk, qimg, B * N, D, D, HD, &blk->img.ln_k, QK_EPS);
            LANE(BACKEND_LANE_SIDE);
            o->rmsnorm_heads(bk, qtxt, B * L, D, 0, HD, &blk->txt.ln_q, QK_EPS);
            o->rmsnorm_heads(bk, qtxt, B * L, D, D, HD, &blk->txt.ln_k, QK_EPS);
            LANE(BACKEND_LANE_MAIN);
        }
        if (dual) {  // MMDiT-X: the same LN(x) with the second modulation feeds an image-only attention
            o->ln_modulate(bk, h2, img, B, N, D, at(mi, esz, 6 * D), at(mi, esz, 7 * D), si, LN_EPS);
            snprintf(nm, sizeof nm, "mm%d.img.attn2.qkv", i);
            linear_input(hook, nm, h2, B, N, D);
            o->linear(bk, q2, h2, B * N, &blk->img.qkv2_w, &blk->img.qkv2_b);
            o->rmsnorm_heads(bk, q2, B * N, D, 0, HD, &blk->img.ln_q2, QK_EPS);
            o->rmsnorm_heads(bk, q2, B * N, D, D, HD, &blk->img.ln_k2, QK_EPS);
        }
        // joint attention over [image, text]; the last block's text output is never used
        LANE(BACKEND_LANE_JOIN);
        struct attn_seg seg[2] = {{qimg, aimg, N}, {qtxt, pre ? NULL : atxt, L}};
        o->attention(bk, seg, 2, B, NH, HD, 1.0f / sqrtf((float)HD), NULL);
        LANE(BACKEND_LANE_FORK);
        if (dual) {
            struct attn_seg s2 = {q2, a2, N};
            o->attention(bk, &s2, 1, B, NH, HD, 1.0f / sqrtf((float)HD), NULL);
        }
        // post-attention: projection, gated residual, modulated MLP, gated residual — per stream
        for (int s = 0; s < 2; s++) {
            const struct mmdit_stream * st = s ? &blk->txt : &blk->img;
            if (st->pre_only) continue;
            void * x = s ? txt : img, * h = s ? htxt : himg, * a = s ? atxt : aimg, * mo = s ? mt : mi, * hid = s ? qtxt : mlp;
            int64_t Tn = s ? L : N, ms = st->nmod * D;
            const char * sn = s ? "txt" : "img";
            LANE(s ? BACKEND_LANE_SIDE : BACKEND_LANE_MAIN);
            snprintf(nm, sizeof nm, "mm%d.%s.attn.proj", i, sn);
            linear_input(hook, nm, a, B, Tn, D);
            o->linear(bk, h, a, B * Tn, &st->proj_w, &st->proj_b);
            if (s == 0 && dual) {
                o->gate_residual(bk, x, h, at(mo, esz, 2 * D), B, Tn, D, ms);
                snprintf(nm, sizeof nm, "mm%d.img.attn2.proj", i);
                linear_input(hook, nm, a2, B, N, D);
                o->linear(bk, h, a2, B * N, &st->proj2_w, &st->proj2_b);
                gate_then_ln(o, bk, h, x, h, at(mo, esz, 8 * D), ms, B, N, D, at(mo, esz, 3 * D), at(mo, esz, 4 * D), ms);
            } else {
                gate_then_ln(o, bk, h, x, h, at(mo, esz, 2 * D), ms, B, Tn, D, at(mo, esz, 3 * D), at(mo, esz, 4 * D), ms);
            }
            snprintf(nm, sizeof nm, "mm%d.%s.mlp.fc1", i, sn);
            linear_input(hook, nm, h, B, Tn, D);
            o->linear(bk, hid, h, B * Tn, &st->fc1_w, &st->fc1_b);
            o->act(bk, hid, hid, B * Tn * F, ACT_GELU_TANH);
            snprintf(nm, sizeof nm, "mm%d.%s.mlp.fc2", i, sn);
            linear_input(hook, nm, hid, B, Tn, F);
            o->linear(bk, a, hid, B * Tn, &st->fc2_w, &st->fc2_b);
            // the last gate, with the stream's next modulated LN when there is one: the next block's first, or (image)
            // the final layer's
            if (i + 1 < c->depth) {
                const struct mmdit_stream * nx = s ? &m->blocks[i + 1].txt : &m->blocks[i + 1].img;
                void * nmods = mods[2 * (i + 1) + s];
                gate_then_ln(o, bk, h, x, a, at(mo, esz, 5 * D), ms, B, Tn, D, nmods, at(nmods, esz, D), nx->nmod * D);
                ln_done[s] = 1;
            } else if (s == 0) {
                gate_then_ln(o, bk, h, x, a, at(mo, esz, 5 * D), ms, B, Tn, D, fmod, at(fmod, esz, D), 2 * D);
                ln_done[0] = 1;
            } else {
                o->gate_residual(bk, x, a, at(mo, esz, 5 * D), B, Tn, D, ms);
            }
        }
        LANE(BACKEND_LANE_MAIN);
        snprintf(nm, sizeof nm, "block%d.img", i);
        observe(hook, nm, img, B, N, D);
        if (!pre) {
            snprintf(nm, sizeof nm, "block%d.txt", i);
            observe(hook, nm, txt, B, L, D);
        }
    }

    LANE(BACKEND_LANE_JOIN);  // the side queue's last work is done before the pass ends
#undef LANE

    // final adaLN layer (its LN made with the last block's gate unless that block had no image MLP) and un-patchify
    if (!ln_done[0]) o->ln_modulate(bk, himg, img, B, N, D, fmod, at(fmod, esz, D), 2 * D, LN_EPS);
    o->linear(bk, fin, himg, B * N, &m->fin_w, &m->fin_b);
    observe(hook, "final_tokens", fin, B, N, p * p * c->out_ch);
    o->unpatchify(bk, io->out, fin, B, c->out_ch, gh, gw, p);
    arena_rewind(ar, mark);
}
