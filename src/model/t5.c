/*
 * t5.c — the T5 v1.1 encoder: configuration, expected tensors, the relative-position bias, and the forward pass,
 * exactly as transformers' T5EncoderModel computes it in float32 (../shared/research/sd3_arch_spec.md §4.3).
 *
 * Block: x ← x + o(Attn(RMSNorm₀(x))); x ← x + wo(act(wi_0·h) ⊙ (wi_1·h)) with h = RMSNorm₁(x); after the last block a
 * final RMSNorm. Attention has no 1/√d scaling; its bias comes from block 0's bucket table and is added in every
 * block; there is no padding mask (SD3 pads with <pad> and attends to the pads). Embeddings are not scaled.
 * Weights stay in the checkpoint mapping (F16, BF16, F32 or F8_E4M3); the backend converts them chunk by chunk, so
 * T5-XXL's 4.7 B parameters never exist as float32.
 */
#include "model/t5.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/expect.h"
#include "io/json.h"

#define T5_BLK "encoder.block."

// ---- configuration --------------------------------------------------------------------------------------------------

// Number of block indices "encoder.block.{i}." present.
static int count_blocks(const struct ckpt_component * c) {
    size_t bl = strlen(T5_BLK);
    int maxb = -1;
    for (int i = 0; i < c->n; i++) {
        if (strncmp(c->t[i].name, T5_BLK, bl) != 0) continue;
        char * end;
        long v = strtol(c->t[i].name + bl, &end, 10);
        if (end != c->t[i].name + bl && *end == '.' && v >= 0 && v > maxb) maxb = v < T5_MAX_LAYERS ? (int)v : T5_MAX_LAYERS;
    }
    return maxb + 1;
}

// Infers the configuration from tensor shapes.
static enum sd3q_status infer_config(const struct ckpt_component * c, struct t5_config * cfg, struct sd3q_errbuf * e) {
    memset(cfg, 0, sizeof *cfg);
    const struct st_tensor * em = comp_find(c, "shared.weight");
    if (!em) em = comp_find(c, "encoder.embed_tokens.weight");
    const struct st_tensor * rb = comp_find(c, T5_BLK "0.layer.0.SelfAttention.relative_attention_bias.weight");
    const struct st_tensor * q  = comp_find(c, T5_BLK "0.layer.0.SelfAttention.q.weight");
    const struct st_tensor * w0 = comp_find(c, T5_BLK "0.layer.1.DenseReluDense.wi_0.weight");
    if (!w0 && comp_find(c, T5_BLK "0.layer.1.DenseReluDense.wi.weight"))
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: a T5 with a non-gated feed-forward (DenseReluDense.wi) is not supported; "
                                                "SD3 uses T5 v1.1 (wi_0, wi_1)", c->origin);
    const char * miss = !em ? "shared.weight (or encoder.embed_tokens.weight)"
                      : !rb ? T5_BLK "0.layer.0.SelfAttention.relative_attention_bias.weight"
                      : !q  ? T5_BLK "0.layer.0.SelfAttention.q.weight"
                      : !w0 ? T5_BLK "0.layer.1.DenseReluDense.wi_0.weight" : NULL;
    if (miss) return err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' missing (needed to infer the T5 configuration)", c->origin, miss);
    if (em->ndim != 2 || rb->ndim != 2 || q->ndim != 2 || w0->ndim != 2)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: T5 embedding, relative_attention_bias, q and wi_0 must be 2-D", c->origin);
    cfg->d_model      = (int)em->shape[1];
    cfg->vocab        = (int)em->shape[0];
    cfg->num_buckets  = (int)rb->shape[0];
    cfg->heads        = (int)rb->shape[1];
    cfg->inner        = (int)q->shape[0];
    cfg->d_kv         = cfg->heads > 0 ? cfg->inner / cfg->heads : 0;
    cfg->d_ff         = (int)w0->shape[0];
    cfg->layers       = count_blocks(c);
    cfg->max_distance = 128;
    cfg->eps          = 1e-6f;
    cfg->act          = ACT_GELU_TANH;
    if (cfg->layers > T5_MAX_LAYERS - 1) return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: more than %d T5 blocks", c->origin, T5_MAX_LAYERS - 1);
    return SD3Q_OK;
}

// Reads text_encoder_3/config.json (T5Config) and cross-checks it with the shapes.
static enum sd3q_status apply_config_json(const char * path, struct t5_config * cfg, struct sd3q_errbuf * e) {
    cJSON * j;
    TRY(json_load(path, &j, e));
    enum sd3q_status st = SD3Q_OK;
    int64_t dm, dkv, dff, nl, nh, nb, md, vs;
    double eps;
    if ((st = json_get_int(j, "d_model", 1, cfg->d_model, 1, 1 << 20, &dm, path, e)) ||
        (st = json_get_int(j, "d_kv", 1, cfg->d_kv, 1, 1 << 16, &dkv, path, e)) ||
        (st = json_get_int(j, "d_ff", 1, cfg->d_ff, 1, 1 << 22, &dff, path, e)) ||
        (st = json_get_int(j, "num_layers", 1, cfg->layers, 1, T5_MAX_LAYERS - 1, &nl, path, e)) ||
        (st = json_get_int(j, "num_heads", 1, cfg->heads, 1, 4096, &nh, path, e)) ||
        (st = json_get_int(j, "relative_attention_num_buckets", 1, cfg->num_buckets, 2, 1 << 16, &nb, path, e)) ||
        (st = json_get_int(j, "relative_attention_max_distance", 1, 128, 1, 1 << 30, &md, path, e)) ||
        (st = json_get_int(j, "vocab_size", 1, cfg->vocab, 1, 1 << 26, &vs, path, e)) ||
        (st = json_get_num(j, "layer_norm_epsilon", 1e-6, &eps, path, e)))
        goto done;
    struct { const char * field; int64_t cfgv, shape; } chk[] = {
        {"d_model", dm, cfg->d_model},   {"num_heads × d_kv", nh * dkv, cfg->inner}, {"num_heads", nh, cfg->heads},
        {"d_ff", dff, cfg->d_ff},        {"num_layers", nl, cfg->layers},
        {"relative_attention_num_buckets", nb, cfg->num_buckets},                    {"vocab_size", vs, cfg->vocab},
    };
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++)
        if (chk[i].cfgv != chk[i].shape) {
            st = err_set(e, SD3Q_ERR_SHAPE, "%s: %s is %lld but the weights say %lld", path, chk[i].field, (long long)chk[i].cfgv,
                         (long long)chk[i].shape);
            goto done;
        }
    if (!(eps > 0.0 && eps < 1.0)) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: layer_norm_epsilon %g out of range (0, 1)", path, eps);
        goto done;
    }
    // transformers: feed_forward_proj "gated-gelu" means dense_act_fn "gelu_new" (the tanh approximation)
    const char * ffp = json_get_str(j, "feed_forward_proj");
    const char * act = json_get_str(j, "dense_act_fn");
    if (ffp && strncmp(ffp, "gated-", 6) != 0) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: feed_forward_proj \"%s\" is not supported (SD3's T5 v1.1 is \"gated-gelu\")", path, ffp);
        goto done;
    }
    if (!act) act = ffp ? ffp + 6 : "gelu_new";
    if (ffp && strcmp(ffp, "gated-gelu") == 0 && strcmp(act, "gelu") == 0) act = "gelu_new";
    if (strcmp(act, "gelu_new") == 0 || strcmp(act, "gelu_pytorch_tanh") == 0) cfg->act = ACT_GELU_TANH;
    else if (strcmp(act, "gelu") == 0) cfg->act = ACT_GELU_ERF;
    else if (strcmp(act, "silu") == 0) cfg->act = ACT_SILU;
    else {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: dense_act_fn \"%s\" is not supported (gelu_new, gelu, silu)", path, act);
        goto done;
    }
    cfg->d_kv         = (int)dkv;
    cfg->max_distance = (int)md;
    cfg->eps          = (float)eps;
done:
    cJSON_Delete(j);
    return st;
}

// Validates a configuration's internal consistency.
static enum sd3q_status check_config(const struct t5_config * c, const char * origin, struct sd3q_errbuf * e) {
    if (c->layers < 1) return err_set(e, SD3Q_ERR_MISSING, "%s: no T5 blocks found (encoder.block.0.*)", origin);
    if (c->heads < 1 || c->d_kv < 1 || c->heads * c->d_kv != c->inner)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: q has %d rows, not a multiple of the %d heads of the bias table", origin, c->inner, c->heads);
    if (c->num_buckets < 4 || c->max_distance <= c->num_buckets / 4)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: %d relative-position buckets with max distance %d: need at least 4 buckets and a "
                       "distance above num_buckets/4", origin, c->num_buckets, c->max_distance);
    if (c->d_model < 1 || c->d_ff < 1 || c->vocab < 1)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: implausible T5 configuration (d_model %d, d_ff %d, vocab %d)", origin, c->d_model,
                       c->d_ff, c->vocab);
    return SD3Q_OK;
}

// ---- expected tensors -----------------------------------------------------------------------------------------------

// Lists every tensor the configuration needs.
static void build_expect(struct t5 * m, struct expect_table * t) {
    const struct t5_config * c = &m->cfg;
    const int64_t D = c->d_model, I = c->inner, F = c->d_ff;
    expect_add(t, &m->emb_shared, "shared.weight", 2, c->vocab, D, 0, 0)->optional = 1;
    expect_add(t, &m->emb_enc, "encoder.embed_tokens.weight", 2, c->vocab, D, 0, 0)->optional = 1;
    expect_add(t, &m->rel_bias, T5_BLK "0.layer.0.SelfAttention.relative_attention_bias.weight", 2, c->num_buckets, c->heads, 0, 0);
    expect_add(t, &m->fln, "encoder.final_layer_norm.weight", 1, D, 0, 0, 0);
    for (int i = 0; i < c->layers; i++) {
        struct t5_layer * l = &m->layers[i];
        char n[WT_NAME_MAX], s[WT_NAME_MAX];
        snprintf(n, sizeof n, T5_BLK "%d.layer.0.layer_norm.weight", i);
        expect_add(t, &l->ln0, n, 1, D, 0, 0, 0);
        snprintf(n, sizeof n, T5_BLK "%d.layer.0.SelfAttention.qkv.weight", i);  // canonical fused name (in no file)
        struct expect * x = expect_add(t, &l->qkv, n, 2, 3 * I, D, 0, 0);
        for (int k = 0; k < 3; k++) {
            snprintf(s, sizeof s, T5_BLK "%d.layer.0.SelfAttention.%c.weight", i, "qkv"[k]);
            expect_src(x, s, I, 0, I);
        }
        snprintf(n, sizeof n, T5_BLK "%d.layer.0.SelfAttention.o.weight", i);
        expect_add(t, &l->o, n, 2, D, I, 0, 0);
        snprintf(n, sizeof n, T5_BLK "%d.layer.1.layer_norm.weight", i);
        expect_add(t, &l->ln1, n, 1, D, 0, 0, 0);
        snprintf(n, sizeof n, T5_BLK "%d.layer.1.DenseReluDense.wi.weight", i);  // canonical fused name: wi_0 | wi_1
        x = expect_add(t, &l->wi, n, 2, 2 * F, D, 0, 0);
        for (int k = 0; k < 2; k++) {
            snprintf(s, sizeof s, T5_BLK "%d.layer.1.DenseReluDense.wi_%d.weight", i, k);
            expect_src(x, s, F, 0, F);
        }
        snprintf(n, sizeof n, T5_BLK "%d.layer.1.DenseReluDense.wo.weight", i);
        expect_add(t, &l->wo, n, 2, D, F, 0, 0);
    }
}

enum sd3q_status t5_load(const struct ckpt_component * comp, int allow_extra, int32_t id_base, struct t5 ** out,
                         struct sd3q_errbuf * e) {
    *out = NULL;
    struct t5 * m = calloc(1, sizeof(*m));
    if (!m) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    struct expect_table t = {0};
    enum sd3q_status st = infer_config(comp, &m->cfg, e);
    if (st == SD3Q_OK && comp->config_path) st = apply_config_json(comp->config_path, &m->cfg, e);
    if (st == SD3Q_OK) st = check_config(&m->cfg, comp->origin, e);
    if (st != SD3Q_OK) goto fail;
    m->layers = calloc((size_t)m->cfg.layers, sizeof(*m->layers));
    if (!m->layers) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto fail;
    }
    build_expect(m, &t);
    static const char * const ignore[] = {NULL};
    st = expect_resolve(&t, comp, ignore, allow_extra, e);
    if (st != SD3Q_OK) goto fail;
    // tied embeddings: either name, shared.weight preferred (what stable-diffusion.cpp and diffusers load)
    m->emb = wt_present(&m->emb_shared) ? m->emb_shared : m->emb_enc;
    if (!wt_present(&m->emb)) {
        st = err_set(e, SD3Q_ERR_MISSING, "%s: tensor 'shared.weight' (or 'encoder.embed_tokens.weight') missing", comp->origin);
        goto fail;
    }
    m->n_tensors = t.n;
    m->n_params = expect_number(&t, id_base);
    m->emb.id = wt_present(&m->emb_shared) ? m->emb_shared.id : m->emb_enc.id;
    if (wt_present(&m->emb_shared) && wt_present(&m->emb_enc)) m->n_params -= wt_numel(&m->emb_enc);  // one table, stored twice
    expect_free(&t);
    *out = m;
    return SD3Q_OK;
fail:
    expect_free(&t);
    t5_free(m);
    return st;
}

void t5_free(struct t5 * m) {
    if (!m) return;
    free(m->layers);
    free(m);
}

void t5_for_each_weight(const struct t5 * m, void (*fn)(void * ud, const struct wt * w), void * ud) {
    fn(ud, &m->fln);
    for (int i = 0; i < m->cfg.layers; i++) {
        const struct t5_layer * l = &m->layers[i];
        const struct wt * w[] = {&l->ln0, &l->qkv, &l->o, &l->ln1, &l->wi, &l->wo};
        for (size_t k = 0; k < sizeof w / sizeof w[0]; k++) fn(ud, w[k]);
    }
}

// ---- host-side inputs -----------------------------------------------------------------------------------------------

int t5_bucket(int rel, int num_buckets, int max_distance) {
    // transformers' _relative_position_bucket (bidirectional): half the buckets per direction, key after query in
    // the upper half; exact buckets below max_exact, logarithmic ones above, the log ratio in float32 as torch does
    int half = num_buckets / 2, bucket = rel > 0 ? half : 0, n = rel < 0 ? -rel : rel, max_exact = half / 2;
    if (n < max_exact) return bucket + n;
    float lr = logf((float)n / (float)max_exact) / (float)log((double)max_distance / (double)max_exact);
    float v  = lr * (float)(half - max_exact);
    int large = max_exact + (int)v;  // .to(long): truncation
    return bucket + (large < half - 1 ? large : half - 1);
}

enum sd3q_status t5_embed(const struct t5 * m, const int32_t * ids, int L, float * out, struct sd3q_errbuf * e) {
    const int64_t D = m->cfg.d_model;
    for (int t = 0; t < L; t++) {
        if (ids[t] < 0 || ids[t] >= m->cfg.vocab)
            return err_set(e, SD3Q_ERR_INVALID_ARG, "token id %d at position %d is outside the T5 vocabulary (%d rows)", ids[t], t,
                           m->cfg.vocab);
        wt_rows_to_f32(&m->emb, ids[t], 1, out + t * D);  // [D]
    }
    return SD3Q_OK;
}

// One entry of the bias table: table[bucket][h].
static float table_at(const struct t5 * m, int bucket, int h) {
    float v;
    const int esz = dtype_size(m->rel_bias.type);
    dtype_to_f32(m->rel_bias.type, m->rel_bias.part[0].data + ((size_t)bucket * m->cfg.heads + h) * esz, &v, 1);
    return v;
}

void t5_bias_head(const struct t5 * m, int h, int L, float * out) {
    // bias[i][j] depends on j − i only: row 0 holds every r ≥ 0, row L−1 every r ≤ 0; the other rows are pieces of
    // those two, copied in place
    const struct t5_config * c = &m->cfg;
    float * r0 = out, * rl = out + (size_t)(L - 1) * L;
    for (int j = 0; j < L; j++) r0[j] = table_at(m, t5_bucket(j, c->num_buckets, c->max_distance), h);          // r = j
    for (int j = 0; j < L; j++) rl[j] = table_at(m, t5_bucket(j - (L - 1), c->num_buckets, c->max_distance), h);  // r = j − L + 1
    for (int i = 1; i < L - 1; i++) {
        float * row = out + (size_t)i * L;
        memcpy(row, rl + (L - 1 - i), sizeof(float) * (size_t)i);     // j < i: r = j − i → rl[j − i + L − 1]
        memcpy(row + i, r0, sizeof(float) * (size_t)(L - i));         // j ≥ i: r = j − i → r0[j − i]
    }
}

// ---- forward --------------------------------------------------------------------------------------------------------

// Takes a buffer of n activations from the arena (a planning bug if it does not fit: the arena was measured).
static void * take(struct arena * ar, size_t esz, int64_t n) {
    void * p = arena_alloc(ar, (size_t)n * esz);
    SD3Q_ASSERT(p);
    return p;
}

void t5_forward(const struct t5 * m, struct backend * bk, struct arena * ar, const struct t5_io * io) {
    const struct t5_config * c = &m->cfg;
    const int64_t L = io->L, D = c->d_model, I = c->inner, F = c->d_ff;
    const size_t esz = bk ? bk->ops->act_size(bk) : 4;
    const struct backend_ops * o = bk ? bk->ops : NULL;
    size_t mark = arena_mark(ar);
    void * h   = take(ar, esz, L * D);      // [L, D] RMSNorm output, then o / wo outputs
    void * qkv = take(ar, esz, L * 3 * I);  // [L, 3·inner] fused q|k|v
    void * att = take(ar, esz, L * I);      // [L, inner]
    void * ff  = take(ar, esz, L * 2 * F);  // [L, 2F] wi_0 | wi_1 outputs
    void * g   = take(ar, esz, L * F);      // [L, F] gated activation
    if (!bk) {
        arena_rewind(ar, mark);
        return;
    }
    const struct attn_opts opt = {0, io->bias};
    for (int i = 0; i < c->layers; i++) {
        const struct t5_layer * l = &m->layers[i];
        o->rmsnorm(bk, h, io->x, L, D, &l->ln0, c->eps);
        o->linear(bk, qkv, h, L, &l->qkv, NULL);                              // [L, 3·inner]
        struct attn_seg seg = {qkv, att, L};
        o->attention(bk, &seg, 1, 1, c->heads, c->d_kv, 1.0f, &opt);          // [L, inner], no 1/√d
        o->linear(bk, h, att, L, &l->o, NULL);                                // [L, D]
        o->add(bk, io->x, h, L * D);
        o->rmsnorm(bk, h, io->x, L, D, &l->ln1, c->eps);
        o->linear(bk, ff, h, L, &l->wi, NULL);                                // [L, 2F]
        o->gated_act(bk, g, ff, L, F, c->act);                                // [L, F] act(wi_0·h) ⊙ wi_1·h
        o->linear(bk, h, g, L, &l->wo, NULL);                                 // [L, D]
        o->add(bk, io->x, h, L * D);
    }
    o->rmsnorm(bk, io->out, io->x, L, D, &m->fln, c->eps);                   // [L, D]
    arena_rewind(ar, mark);
}
