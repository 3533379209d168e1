/*
 * clip.c — the CLIP text transformer (both SD3 towers): configuration, expected tensors, host-side embedding gather,
 * and the forward pass, exactly as transformers' CLIPTextModelWithProjection computes it in float32
 * (../shared/research/sd3_arch_spec.md §4.1–4.2, pitfalls 16–17).
 *
 * Layer: x ← x + out_proj(MHA_causal(LN1(x))); x ← x + fc2(act(fc1(LN2(x)))). Both checkpoint layouts use the
 * Hugging Face key names (the single file only adds a prefix, stripped by the checkpoint code); q/k/v are fused into
 * one three-part weight so the backend's fused attention layout applies. The forward pass keeps the penultimate
 * states in the caller's buffer and runs the last layer out of place (only its end-token row is needed, for the
 * pooled vector; the whole last layer is still computed so the numbers are those of transformers).
 */
#include "model/clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/expect.h"
#include "io/json.h"

#define CLIP_HEAD_DIM 64
#define CLIP_PFX      "text_model."

// ---- configuration --------------------------------------------------------------------------------------------------

// Number of consecutive layer indices "text_model.encoder.layers.{i}." present (0 when none).
static int count_layers(const struct ckpt_component * c) {
    const char * bp = CLIP_PFX "encoder.layers.";
    size_t bl = strlen(bp);
    int maxl = -1;
    for (int i = 0; i < c->n; i++) {
        if (strncmp(c->t[i].name, bp, bl) != 0) continue;
        char * end;
        long v = strtol(c->t[i].name + bl, &end, 10);
        if (end != c->t[i].name + bl && *end == '.' && v >= 0 && v > maxl) maxl = v < CLIP_MAX_LAYERS ? (int)v : CLIP_MAX_LAYERS;
    }
    return maxl + 1;
}

// Infers the configuration from tensor shapes (what a single file allows: heads = W/64, activation from the role).
static enum sd3q_status infer_config(const struct ckpt_component * c, enum clip_role role, struct clip_config * cfg,
                                     struct sd3q_errbuf * e) {
    memset(cfg, 0, sizeof *cfg);
    const struct st_tensor * te = comp_find(c, CLIP_PFX "embeddings.token_embedding.weight");
    const struct st_tensor * pe = comp_find(c, CLIP_PFX "embeddings.position_embedding.weight");
    const struct st_tensor * f1 = comp_find(c, CLIP_PFX "encoder.layers.0.mlp.fc1.weight");
    const struct st_tensor * pj = comp_find(c, "text_projection.weight");
    const char * miss = !te ? CLIP_PFX "embeddings.token_embedding.weight"
                      : !pe ? CLIP_PFX "embeddings.position_embedding.weight"
                      : !f1 ? CLIP_PFX "encoder.layers.0.mlp.fc1.weight"
                      : (role == CLIP_ROLE_G && !pj) ? "text_projection.weight" : NULL;
    if (miss) return err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' missing (needed to infer the CLIP configuration)", c->origin, miss);
    if (te->ndim != 2 || pe->ndim != 2 || f1->ndim != 2 || (role == CLIP_ROLE_G && pj->ndim != 2))
        return err_set(e, SD3Q_ERR_SHAPE, "%s: CLIP embeddings, fc1 and text_projection must be 2-D", c->origin);
    cfg->width    = (int)te->shape[1];
    cfg->vocab    = (int)te->shape[0];
    cfg->n_pos    = (int)pe->shape[0];
    cfg->mlp      = (int)f1->shape[0];
    cfg->layers   = count_layers(c);
    cfg->head_dim = CLIP_HEAD_DIM;
    cfg->heads    = cfg->width / CLIP_HEAD_DIM;
    cfg->proj_dim = role == CLIP_ROLE_G ? (int)pj->shape[0] : 0;
    cfg->act      = role == CLIP_ROLE_G ? ACT_GELU_ERF : ACT_QUICK_GELU;
    cfg->ln_eps   = 1e-5f;
    cfg->eos_token_id = 2;
    if (cfg->layers > CLIP_MAX_LAYERS - 1)
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: more than %d CLIP layers", c->origin, CLIP_MAX_LAYERS - 1);
    return SD3Q_OK;
}

// Maps transformers' hidden_act names to the backend's activations.
static int act_from_name(const char * s, enum act_kind * k) {
    if (strcmp(s, "quick_gelu") == 0) *k = ACT_QUICK_GELU;
    else if (strcmp(s, "gelu") == 0) *k = ACT_GELU_ERF;
    else if (strcmp(s, "gelu_new") == 0 || strcmp(s, "gelu_pytorch_tanh") == 0) *k = ACT_GELU_TANH;
    else if (strcmp(s, "silu") == 0 || strcmp(s, "swish") == 0) *k = ACT_SILU;
    else return -1;
    return 0;
}

// Reads text_encoder*/config.json (CLIPTextConfig) and cross-checks it with the shapes.
static enum sd3q_status apply_config_json(const char * path, struct clip_config * cfg, struct sd3q_errbuf * e) {
    cJSON * j;
    TRY(json_load(path, &j, e));
    enum sd3q_status st = SD3Q_OK;
    int64_t hs, nl, nh, is, mpe, vs, eos;
    double eps;
    if ((st = json_get_int(j, "hidden_size", 1, cfg->width, 1, 1 << 20, &hs, path, e)) ||
        (st = json_get_int(j, "num_hidden_layers", 1, cfg->layers, 1, CLIP_MAX_LAYERS - 1, &nl, path, e)) ||
        (st = json_get_int(j, "num_attention_heads", 1, cfg->heads, 1, 4096, &nh, path, e)) ||
        (st = json_get_int(j, "intermediate_size", 1, cfg->mlp, 1, 1 << 22, &is, path, e)) ||
        (st = json_get_int(j, "max_position_embeddings", 1, cfg->n_pos, 1, 1 << 20, &mpe, path, e)) ||
        (st = json_get_int(j, "vocab_size", 1, cfg->vocab, 1, 1 << 26, &vs, path, e)) ||
        (st = json_get_int(j, "eos_token_id", 1, 2, -1, INT32_MAX, &eos, path, e)) ||
        (st = json_get_num(j, "layer_norm_eps", 1e-5, &eps, path, e)))
        goto done;
    struct { const char * field; int64_t cfgv, shape; } chk[] = {
        {"hidden_size", hs, cfg->width},          {"num_hidden_layers", nl, cfg->layers},
        {"intermediate_size", is, cfg->mlp},      {"max_position_embeddings", mpe, cfg->n_pos},
        {"vocab_size", vs, cfg->vocab},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].cfgv != chk[i].shape) {
            st = err_set(e, SD3Q_ERR_SHAPE, "%s: %s is %lld but the weights say %lld", path, chk[i].field, (long long)chk[i].cfgv,
                         (long long)chk[i].shape);
            goto done;
        }
    if (hs % nh != 0) {
        st = err_set(e, SD3Q_ERR_SHAPE, "%s: hidden_size %lld is not a multiple of num_attention_heads %lld", path, (long long)hs,
                     (long long)nh);
        goto done;
    }
    if (!(eps > 0.0 && eps < 1.0)) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: layer_norm_eps %g out of range (0, 1)", path, eps);
        goto done;
    }
    const char * act = json_get_str(j, "hidden_act");
    if (act && act_from_name(act, &cfg->act) != 0) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (quick_gelu, gelu, gelu_new)", path, act);
        goto done;
    }
    cfg->heads        = (int)nh;
    cfg->head_dim     = (int)(hs / nh);
    cfg->ln_eps       = (float)eps;
    cfg->eos_token_id = (int32_t)eos;
done:
    cJSON_Delete(j);
    return st;
}

// Validates a configuration's internal consistency.
static enum sd3q_status check_config(const struct clip_config * c, const char * origin, struct sd3q_errbuf * e) {
    if (c->layers < 1) return err_set(e, SD3Q_ERR_MISSING, "%s: no CLIP layers found (text_model.encoder.layers.0.*)", origin);
    if (c->width < 1 || c->heads < 1 || c->width % c->heads != 0 || c->head_dim * c->heads != c->width)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: CLIP width %d is not a multiple of %d heads", origin, c->width, c->heads);
    if (c->mlp < 1 || c->vocab < 1 || c->n_pos < 1)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: implausible CLIP configuration (mlp %d, vocab %d, positions %d)", origin, c->mlp,
                       c->vocab, c->n_pos);
    return SD3Q_OK;
}

// ---- expected tensors -----------------------------------------------------------------------------------------------

// A Linear with weight [rows, cols] and bias [rows] whose rows come from nsrc file tensors names[i] (rows/nsrc each).
static void add_linear(struct expect_table * t, struct wt * w, struct wt * b, const char * canon, int64_t rows, int64_t cols,
                       int nsrc, const char * const * names) {
    char n[WT_NAME_MAX], d[WT_NAME_MAX];
    const char * sfx[2] = {"weight", "bias"};
    struct wt * dst[2] = {w, b};
    for (int k = 0; k < 2; k++) {
        if (!dst[k]) continue;
        snprintf(n, sizeof n, "%s.%s", canon, sfx[k]);
        struct expect * x = k == 0 ? expect_add(t, dst[k], n, 2, rows, cols, 0, 0) : expect_add(t, dst[k], n, 1, rows, 0, 0, 0);
        if (nsrc <= 1 && names == NULL) continue;
        for (int i = 0; i < nsrc; i++) {
            snprintf(d, sizeof d, "%s.%s", names[i], sfx[k]);
            expect_src(x, d, rows / nsrc, 0, rows / nsrc);
        }
    }
}

// A LayerNorm's weight and bias [W].
static void add_norm(struct expect_table * t, struct wt * w, struct wt * b, const char * canon, int64_t W) {
    char n[WT_NAME_MAX];
    snprintf(n, sizeof n, "%s.weight", canon);
    expect_add(t, w, n, 1, W, 0, 0, 0);
    snprintf(n, sizeof n, "%s.bias", canon);
    expect_add(t, b, n, 1, W, 0, 0, 0);
}

// Lists every tensor the configuration needs.
static void build_expect(struct clip * m, struct expect_table * t) {
    const struct clip_config * c = &m->cfg;
    int64_t W = c->width, F = c->mlp;
    expect_add(t, &m->tok_emb, CLIP_PFX "embeddings.token_embedding.weight", 2, c->vocab, W, 0, 0);
    expect_add(t, &m->pos_emb, CLIP_PFX "embeddings.position_embedding.weight", 2, c->n_pos, W, 0, 0);
    add_norm(t, &m->fln_w, &m->fln_b, CLIP_PFX "final_layer_norm", W);
    if (m->role == CLIP_ROLE_G) expect_add(t, &m->proj, "text_projection.weight", 2, c->proj_dim, W, 0, 0);
    for (int i = 0; i < c->layers; i++) {
        struct clip_layer * l = &m->layers[i];
        char p[48], cn[80], q[80], k[80], v[80];  // short enough for "<name>.weight" to fit WT_NAME_MAX
        snprintf(p, sizeof p, CLIP_PFX "encoder.layers.%d.", i);
        snprintf(cn, sizeof cn, "%slayer_norm1", p);
        add_norm(t, &l->ln1_w, &l->ln1_b, cn, W);
        snprintf(cn, sizeof cn, "%sself_attn.qkv_proj", p);  // canonical name of the fused weight (not in any file)
        snprintf(q, sizeof q, "%sself_attn.q_proj", p);
        snprintf(k, sizeof k, "%sself_attn.k_proj", p);
        snprintf(v, sizeof v, "%sself_attn.v_proj", p);
        const char * qkv[3] = {q, k, v};
        add_linear(t, &l->qkv_w, &l->qkv_b, cn, 3 * W, W, 3, qkv);
        snprintf(cn, sizeof cn, "%sself_attn.out_proj", p);
        add_linear(t, &l->out_w, &l->out_b, cn, W, W, 1, NULL);
        snprintf(cn, sizeof cn, "%slayer_norm2", p);
        add_norm(t, &l->ln2_w, &l->ln2_b, cn, W);
        snprintf(cn, sizeof cn, "%smlp.fc1", p);
        add_linear(t, &l->fc1_w, &l->fc1_b, cn, F, W, 1, NULL);
        snprintf(cn, sizeof cn, "%smlp.fc2", p);
        add_linear(t, &l->fc2_w, &l->fc2_b, cn, W, F, 1, NULL);
    }
}

enum sd3q_status clip_load(const struct ckpt_component * comp, enum clip_role role, int allow_extra, int32_t id_base,
                           struct clip ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    struct clip * m = calloc(1, sizeof(*m));
    if (!m) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    m->role = role;
    struct expect_table t = {0};
    enum sd3q_status st = infer_config(comp, role, &m->cfg, e);
    if (st == SD3Q_OK && comp->config_path) st = apply_config_json(comp->config_path, &m->cfg, e);
    if (st == SD3Q_OK) st = check_config(&m->cfg, comp->origin, e);
    if (st != SD3Q_OK) goto fail;
    m->layers = calloc((size_t)m->cfg.layers, sizeof(*m->layers));
    if (!m->layers) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto fail;
    }
    build_expect(m, &t);
    // aux tensors of HF checkpoints; CLIP-L's projection is the identity in SD3's files and is not used (spec §4.1)
    static const char * const ignore_g[] = {"position_ids", "logit_scale", NULL};
    static const char * const ignore_l[] = {"position_ids", "logit_scale", "text_projection.weight", NULL};
    st = expect_resolve(&t, comp, role == CLIP_ROLE_G ? ignore_g : ignore_l, allow_extra, e);
    if (st != SD3Q_OK) goto fail;
    m->n_tensors = t.n;
    m->n_params = expect_number(&t, id_base);
    expect_free(&t);
    *out = m;
    return SD3Q_OK;
fail:
    expect_free(&t);
    clip_free(m);
    return st;
}

void clip_free(struct clip * m) {
    if (!m) return;
    free(m->layers);
    free(m);
}

void clip_for_each_weight(const struct clip * m, void (*fn)(void * ud, const struct wt * w), void * ud) {
    fn(ud, &m->fln_w);
    fn(ud, &m->fln_b);
    if (wt_present(&m->proj)) fn(ud, &m->proj);
    for (int i = 0; i < m->cfg.layers; i++) {
        const struct clip_layer * l = &m->layers[i];
        const struct wt * w[] = {&l->ln1_w, &l->ln1_b, &l->qkv_w, &l->qkv_b, &l->out_w, &l->out_b,
                                 &l->ln2_w, &l->ln2_b, &l->fc1_w, &l->fc1_b, &l->fc2_w, &l->fc2_b};
        for (size_t k = 0; k < sizeof w / sizeof w[0]; k++) fn(ud, w[k]);
    }
}

int clip_pooled_dim(const struct clip * m) { return wt_present(&m->proj) ? m->cfg.proj_dim : m->cfg.width; }

int clip_pool_index(const struct clip * m, const int32_t * ids, int L) {
    int best = 0;
    if (m->cfg.eos_token_id == 2) {  // transformers' legacy rule: argmax, first maximum
        for (int i = 1; i < L; i++)
            if (ids[i] > ids[best]) best = i;
        return best;
    }
    for (int i = 0; i < L; i++)
        if (ids[i] == m->cfg.eos_token_id) return i;
    return 0;
}

enum sd3q_status clip_embed(const struct clip * m, const int32_t * ids, int L, float * out, struct sd3q_errbuf * e) {
    const int64_t W = m->cfg.width;
    if (L < 1 || L > m->cfg.n_pos)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "CLIP sequence of %d tokens: the position table has %d rows", L, m->cfg.n_pos);
    for (int t = 0; t < L; t++)
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab)
            return err_set(e, SD3Q_ERR_INVALID_ARG, "token id %d at position %d is outside the CLIP vocabulary (%d rows)", ids[t], t,
                           m->cfg.vocab);
    const int esz = dtype_size(m->tok_emb.type);
    float tmp[1024];
    for (int t = 0; t < L; t++) {
        float * row = out + t * W;
        wt_rows_to_f32(&m->pos_emb, t, 1, row);
        // token + position, in float32 as transformers adds them (the token table has a single part)
        const uint8_t * src = m->tok_emb.part[0].data + (size_t)ids[t] * W * esz;
        for (int64_t c0 = 0; c0 < W; c0 += 1024) {
            int64_t n = W - c0 < 1024 ? W - c0 : 1024;
            dtype_to_f32(m->tok_emb.type, src + c0 * esz, tmp, n);
            for (int64_t c = 0; c < n; c++) row[c0 + c] = tmp[c] + row[c0 + c];
        }
    }
    return SD3Q_OK;
}

// ---- forward --------------------------------------------------------------------------------------------------------

// Takes a buffer of n activations from the arena (a planning bug if it does not fit: the arena was measured).
static void * take(struct arena * ar, size_t esz, int64_t n) {
    void * p = arena_alloc(ar, (size_t)n * esz);
    SD3Q_ASSERT(p);
    return p;
}

void clip_forward(const struct clip * m, struct backend * bk, struct arena * ar, const struct clip_io * io) {
    const struct clip_config * c = &m->cfg;
    const int64_t L = io->L, W = c->width, F = c->mlp;
    const size_t esz = bk ? bk->ops->act_size(bk) : 4;
    const struct backend_ops * o = bk ? bk->ops : NULL;
    size_t mark = arena_mark(ar);
    void * h   = take(ar, esz, L * W);      // [L, W] LayerNorm output, attention projection, fc2 output
    void * qkv = take(ar, esz, L * 3 * W);  // [L, 3W] fused q|k|v
    void * att = take(ar, esz, L * W);      // [L, W] attention output
    void * mlp = take(ar, esz, L * F);      // [L, F]
    void * x2  = take(ar, esz, L * W);      // [L, W] the last layer's residual stream
    void * row = wt_present(&m->proj) ? take(ar, esz, W) : NULL;  // [1, W] pooled row before the projection
    if (!bk) {
        arena_rewind(ar, mark);
        return;
    }
    SD3Q_ASSERT(L >= 1 && L <= c->n_pos && io->eos >= 0 && io->eos < L);
    const struct attn_opts causal = {1, NULL};
    const float scale = (float)(1.0 / sqrt((double)c->head_dim));
    for (int i = 0; i < c->layers; i++) {
        const struct clip_layer * l = &m->layers[i];
        const int last = i == c->layers - 1;
        void * x = last ? x2 : io->x;  // the stream this layer writes; it reads io->x
        o->layernorm(bk, h, io->x, L, W, &l->ln1_w, &l->ln1_b, c->ln_eps);
        o->linear(bk, qkv, h, L, &l->qkv_w, &l->qkv_b);                      // [L, 3W]
        struct attn_seg seg = {qkv, att, L};
        o->attention(bk, &seg, 1, 1, c->heads, c->head_dim, scale, &causal);  // [L, W]
        if (last) {  // x2 = out_proj(att) + x: the sum transformers forms (addition commutes exactly)
            o->linear(bk, x2, att, L, &l->out_w, &l->out_b);
            o->add(bk, x2, io->x, L * W);
        } else {
            o->linear(bk, h, att, L, &l->out_w, &l->out_b);
            o->add(bk, x, h, L * W);
        }
        o->layernorm(bk, h, x, L, W, &l->ln2_w, &l->ln2_b, c->ln_eps);
        o->linear(bk, mlp, h, L, &l->fc1_w, &l->fc1_b);                      // [L, F]
        o->act(bk, mlp, mlp, L * F, c->act);
        o->linear(bk, h, mlp, L, &l->fc2_w, &l->fc2_b);                      // [L, W]
        o->add(bk, x, h, L * W);
    }
    // pooled: the final LayerNorm of the end-token row, then the projection (CLIP-G)
    const void * eos_row = (const uint8_t *)x2 + (size_t)io->eos * W * esz;
    if (row) {
        o->layernorm(bk, row, eos_row, 1, W, &m->fln_w, &m->fln_b, c->ln_eps);
        o->linear(bk, io->pooled, row, 1, &m->proj, NULL);                   // [1, proj_dim]
    } else {
        o->layernorm(bk, io->pooled, eos_row, 1, W, &m->fln_w, &m->fln_b, c->ln_eps);  // [1, W]
    }
    if (io->last) o->layernorm(bk, io->last, x2, L, W, &m->fln_w, &m->fln_b, c->ln_eps);  // [L, W]
    arena_rewind(ar, mark);
}
