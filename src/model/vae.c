/*
 * vae.c — SD3's autoencoder: configuration (config.json cross-checked with tensor shapes, or inferred from them),
 * the expected tensors in both namings, and the encoder/decoder forward passes, as diffusers' AutoencoderKL
 * computes them (spec §6): ResNets of GroupNorm+SiLU+3×3 conv, a mid block with one single-head attention over all
 * pixels, nearest-neighbour ×2 upsampling, stride-2 downsampling padded on the right and bottom only.
 *
 * The forward functions run one image; like mmdit_forward they double as the planning pass (bk == NULL with a
 * measuring arena). Activations stay NCHW; the mid attention transposes to token-major rows and back.
 */
#include "model/vae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/expect.h"
#include "io/json.h"

// ---- configuration --------------------------------------------------------------------------------------------------

// Counts the distinct leading indices n of names "<pre>n." in a component (0 when none); -1 when an index is absurd.
static int count_index(const struct ckpt_component * c, const char * pre) {
    size_t pl = strlen(pre);
    int maxi = -1;
    for (int i = 0; i < c->n; i++) {
        if (strncmp(c->t[i].name, pre, pl) != 0) continue;
        char * end;
        long v = strtol(c->t[i].name + pl, &end, 10);
        if (end == c->t[i].name + pl || *end != '.') continue;
        if (v < 0 || v >= 64) return -1;
        if (v > maxi) maxi = (int)v;
    }
    return maxi + 1;
}

// Shape dim d of tensor `name`, or -1 when absent or of another rank.
static int64_t dim_of(const struct ckpt_component * c, const char * name, int ndim, int d) {
    const struct st_tensor * t = comp_find(c, name);
    return (t && t->ndim == ndim) ? t->shape[d] : -1;
}

// Names of the first ResNet conv of a level in both namings (encoder level i; decoder original level L).
static void level_conv1(const struct ckpt_component * c, int dec, int levels, int i, int j, char * buf, size_t n) {
    if (c->naming == NAMING_DIFFUSERS)
        snprintf(buf, n, dec ? "decoder.up_blocks.%d.resnets.%d.conv1.weight" : "encoder.down_blocks.%d.resnets.%d.conv1.weight",
                 dec ? levels - 1 - i : i, j);
    else snprintf(buf, n, dec ? "decoder.up.%d.block.%d.conv1.weight" : "encoder.down.%d.block.%d.conv1.weight", i, j);
}

// Infers the configuration from tensor shapes.
static enum sd3q_status infer_config(const struct ckpt_component * c, struct vae_config * cfg, struct sd3q_errbuf * e) {
    memset(cfg, 0, sizeof(*cfg));
    const int dif = c->naming == NAMING_DIFFUSERS;
    static const char * const quant[] = {"quant_conv.weight", "post_quant_conv.weight"};
    for (int k = 0; k < 2; k++)
        if (comp_find(c, quant[k]))
            return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: the VAE has '%s' (an SD1/SDXL-style autoencoder?); SD3's VAE has no quant_conv/post_quant_conv",
                           c->origin, quant[k]);
    cfg->has_encoder = comp_find(c, "encoder.conv_in.weight") != NULL;
    cfg->has_decoder = comp_find(c, "decoder.conv_in.weight") != NULL;
    if (!cfg->has_encoder && !cfg->has_decoder)
        return err_set(e, SD3Q_ERR_MISSING, "%s: neither 'encoder.conv_in.weight' nor 'decoder.conv_in.weight' found", c->origin);
    int le = cfg->has_encoder ? count_index(c, dif ? "encoder.down_blocks." : "encoder.down.") : 0;
    int ld = cfg->has_decoder ? count_index(c, dif ? "decoder.up_blocks." : "decoder.up.") : 0;
    if (le < 0 || ld < 0 || (cfg->has_encoder && le < 1) || (cfg->has_decoder && ld < 1) || le > VAE_MAX_LEVELS || ld > VAE_MAX_LEVELS ||
        (cfg->has_encoder && cfg->has_decoder && le != ld))
        return err_set(e, SD3Q_ERR_SHAPE, "%s: cannot determine the VAE's resolution levels (encoder %d, decoder %d; at most %d)", c->origin,
                       le, ld, VAE_MAX_LEVELS);
    cfg->levels = cfg->has_encoder ? le : ld;
    char n[128];
    // layers per block: ResNets of level 0 (encoder) or of the full-resolution decoder level minus one
    int lpe = 0, lpd = 0;
    if (cfg->has_encoder) {
        snprintf(n, sizeof n, dif ? "encoder.down_blocks.0.resnets." : "encoder.down.0.block.");
        lpe = count_index(c, n);
    }
    if (cfg->has_decoder) {
        snprintf(n, sizeof n, dif ? "decoder.up_blocks.%d.resnets." : "decoder.up.0.block.", cfg->levels - 1);
        lpd = count_index(c, n) - 1;
    }
    if ((cfg->has_encoder && (lpe < 1 || lpe > VAE_MAX_LAYERS)) || (cfg->has_decoder && (lpd < 1 || lpd > VAE_MAX_LAYERS)) ||
        (cfg->has_encoder && cfg->has_decoder && lpe != lpd))
        return err_set(e, SD3Q_ERR_SHAPE, "%s: cannot determine layers_per_block (encoder %d, decoder %d ResNets + 1)", c->origin, lpe, lpd);
    cfg->layers = cfg->has_encoder ? lpe : lpd;
    for (int i = 0; i < cfg->levels; i++) {
        int64_t ce = -1, cd = -1;
        if (cfg->has_encoder) {
            level_conv1(c, 0, cfg->levels, i, 0, n, sizeof n);
            ce = dim_of(c, n, 4, 0);
            if (ce < 1) return err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' missing or not 4-D (needed to infer the VAE configuration)", c->origin, n);
        }
        if (cfg->has_decoder) {
            level_conv1(c, 1, cfg->levels, i, 0, n, sizeof n);
            cd = dim_of(c, n, 4, 0);
            if (cd < 1) return err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' missing or not 4-D (needed to infer the VAE configuration)", c->origin, n);
        }
        if (ce > 0 && cd > 0 && ce != cd)
            return err_set(e, SD3Q_ERR_SHAPE, "%s: level %d has %lld channels in the encoder but %lld in the decoder", c->origin, i,
                           (long long)ce, (long long)cd);
        cfg->ch[i] = (int)(ce > 0 ? ce : cd);
        if (cfg->ch[i] > 1 << 16) return err_set(e, SD3Q_ERR_SHAPE, "%s: implausible VAE width %d", c->origin, cfg->ch[i]);
    }
    int64_t zd = cfg->has_decoder ? dim_of(c, "decoder.conv_in.weight", 4, 1) : -1;
    int64_t ze = cfg->has_encoder ? dim_of(c, "encoder.conv_out.weight", 4, 0) : -1;
    if (ze > 0 && ze % 2) return err_set(e, SD3Q_ERR_SHAPE, "%s: encoder.conv_out has %lld output channels, expected 2 × latent channels", c->origin, (long long)ze);
    if (ze > 0) ze /= 2;
    if ((cfg->has_decoder && zd < 1) || (cfg->has_encoder && ze < 1) || (zd > 0 && ze > 0 && zd != ze) || (zd > 4096 || ze > 4096))
        return err_set(e, SD3Q_ERR_SHAPE, "%s: inconsistent latent channels (decoder.conv_in %lld, encoder.conv_out %lld / 2)", c->origin,
                       (long long)zd, (long long)ze);
    cfg->z_ch     = (int)(zd > 0 ? zd : ze);
    cfg->mid_attn = comp_find(c, cfg->has_decoder ? (dif ? "decoder.mid_block.attentions.0.to_q.weight" : "decoder.mid.attn_1.q.weight")
                                                  : (dif ? "encoder.mid_block.attentions.0.to_q.weight" : "encoder.mid.attn_1.q.weight")) != NULL;
    cfg->groups   = 32;
    // SD3 / SD3.5's factors when nothing says otherwise (single files carry no config)
    cfg->scaling  = cfg->z_ch == 16 ? 1.5305f : 1.0f;
    cfg->shift    = cfg->z_ch == 16 ? 0.0609f : 0.0f;
    return SD3Q_OK;
}

// Validates a configuration's internal consistency (groups divide every width, sizes plausible).
static enum sd3q_status check_config(const struct vae_config * cfg, const char * origin, struct sd3q_errbuf * e) {
    if (cfg->groups < 1) return err_set(e, SD3Q_ERR_FORMAT, "%s: norm_num_groups must be positive (got %d)", origin, cfg->groups);
    for (int i = 0; i < cfg->levels; i++)
        if (cfg->ch[i] % cfg->groups)
            return err_set(e, SD3Q_ERR_SHAPE, "%s: %d GroupNorm groups do not divide the %d channels of level %d", origin, cfg->groups,
                           cfg->ch[i], i);
    if (!(cfg->scaling > 0.0f) || !isfinite(cfg->shift))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: scaling_factor must be positive and shift_factor finite (got %g, %g)", origin,
                       (double)cfg->scaling, (double)cfg->shift);
    return SD3Q_OK;
}

// 1 when a JSON boolean field is present and true.
static int json_true(const cJSON * j, const char * key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, key)); }

// Checks that every entry of a string-array field (if present) equals `want`.
static enum sd3q_status check_block_types(const cJSON * j, const char * key, const char * want, const char * path, struct sd3q_errbuf * e) {
    const cJSON * a = cJSON_GetObjectItemCaseSensitive(j, key), * it;
    if (!a || cJSON_IsNull(a)) return SD3Q_OK;
    if (!cJSON_IsArray(a)) return err_set(e, SD3Q_ERR_FORMAT, "%s: \"%s\" must be an array", path, key);
    cJSON_ArrayForEach(it, a) {
        if (!cJSON_IsString(it) || strcmp(it->valuestring, want) != 0)
            return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: \"%s\" lists \"%s\"; only %s is supported", path, key,
                           cJSON_IsString(it) ? it->valuestring : "?", want);
    }
    return SD3Q_OK;
}

// Reads diffusers' vae/config.json and cross-checks it with the inferred configuration.
static enum sd3q_status apply_config_json(const char * path, struct vae_config * cfg, struct sd3q_errbuf * e) {
    cJSON * j;
    TRY(json_load(path, &j, e));
    enum sd3q_status st = SD3Q_OK;
    int64_t lpb, lat, groups, inc, outc, ss;
    double sf, sh;
    static const char * const unsup[] = {"use_quant_conv", "use_post_quant_conv"};
    for (int k = 0; k < 2; k++)
        if (json_true(j, unsup[k])) {
            st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: \"%s\" is true; SD3's VAE has no quant_conv/post_quant_conv (set it false)", path, unsup[k]);
            goto done;
        }
    const char * act = json_get_str(j, "act_fn");
    if (act && strcmp(act, "silu") != 0) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: act_fn \"%s\" is not supported (expected \"silu\")", path, act);
        goto done;
    }
    const cJSON * ma = cJSON_GetObjectItemCaseSensitive(j, "mid_block_add_attention");
    if (cJSON_IsBool(ma) && cJSON_IsTrue(ma) != cfg->mid_attn) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: mid_block_add_attention is %s but the weights %s mid-block attention", path,
                     cJSON_IsTrue(ma) ? "true" : "false", cfg->mid_attn ? "have" : "have no");
        goto done;
    }
    if ((st = check_block_types(j, "down_block_types", "DownEncoderBlock2D", path, e)) ||
        (st = check_block_types(j, "up_block_types", "UpDecoderBlock2D", path, e)) ||
        (st = json_get_int(j, "layers_per_block", 1, cfg->layers, 1, VAE_MAX_LAYERS, &lpb, path, e)) ||
        (st = json_get_int(j, "latent_channels", 1, cfg->z_ch, 1, 4096, &lat, path, e)) ||
        (st = json_get_int(j, "norm_num_groups", 1, 32, 1, 1 << 16, &groups, path, e)) ||
        (st = json_get_int(j, "in_channels", 1, 3, 1, 64, &inc, path, e)) ||
        (st = json_get_int(j, "out_channels", 1, 3, 1, 64, &outc, path, e)) ||
        (st = json_get_int(j, "sample_size", 1, 0, 0, 1 << 20, &ss, path, e)) ||
        (st = json_get_num(j, "scaling_factor", cfg->scaling, &sf, path, e)) ||
        (st = json_get_num(j, "shift_factor", 0.0, &sh, path, e)))
        goto done;
    if (lpb != cfg->layers || lat != cfg->z_ch) {
        st = err_set(e, SD3Q_ERR_SHAPE, "%s: %s is %lld but the weights say %d", path, lpb != cfg->layers ? "layers_per_block" : "latent_channels",
                     (long long)(lpb != cfg->layers ? lpb : lat), lpb != cfg->layers ? cfg->layers : cfg->z_ch);
        goto done;
    }
    if (inc != 3 || outc != 3) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: in_channels/out_channels are %lld/%lld; only RGB (3) images are supported", path,
                     (long long)inc, (long long)outc);
        goto done;
    }
    const cJSON * boc = cJSON_GetObjectItemCaseSensitive(j, "block_out_channels");
    if (boc && !cJSON_IsNull(boc)) {
        int k = 0;
        const cJSON * it;
        int ok = cJSON_IsArray(boc) && cJSON_GetArraySize(boc) == cfg->levels;
        if (ok) cJSON_ArrayForEach(it, boc) ok = ok && cJSON_IsNumber(it) && it->valuedouble == (double)cfg->ch[k++];
        if (!ok) {
            char want[128] = "";
            for (int i = 0; i < cfg->levels; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", i ? ", " : "", cfg->ch[i]);
            st = err_set(e, SD3Q_ERR_SHAPE, "%s: block_out_channels does not match the weights, which have [%s]", path, want);
            goto done;
        }
    }
    cfg->groups      = (int)groups;
    cfg->sample_size = (int)ss;
    cfg->scaling     = (float)sf;
    cfg->shift       = (float)sh;
done:
    cJSON_Delete(j);
    return st;
}

// ---- expected tensors ---------------------------------------------------------------------------------------------------

// Builds the names of one module in both namings and adds its tensors.
struct names {
    struct expect_table * t;
    int                   dif;
};

// Adds "<cp>.weight"/"<cp>.bias" (canonical) sourced from "<dp>.…" in diffusers files. Weight dims as given (k = 0: 1-D).
static void add_wb(struct names * nm, struct wt * w, struct wt * b, const char * cp, const char * dp, int64_t cout, int64_t cin, int k,
                   int squeeze) {
    char cn[WT_NAME_MAX], dn[WT_NAME_MAX];
    snprintf(cn, sizeof cn, "%s.weight", cp);
    struct expect * x = k > 0 ? expect_add(nm->t, w, cn, 4, cout, cin, k, k)
                      : cin > 0 ? expect_add(nm->t, w, cn, 2, cout, cin, 0, 0)
                                : expect_add(nm->t, w, cn, 1, cout, 0, 0, 0);
    x->squeeze_ok = squeeze;
    if (nm->dif) {
        snprintf(dn, sizeof dn, "%s.weight", dp);
        expect_src(x, dn, cout, 0, cout);
    }
    snprintf(cn, sizeof cn, "%s.bias", cp);
    x = expect_add(nm->t, b, cn, 1, cout, 0, 0, 0);
    if (nm->dif) {
        snprintf(dn, sizeof dn, "%s.bias", dp);
        expect_src(x, dn, cout, 0, cout);
    }
}

static void add_norm(struct names * nm, struct wt * w, struct wt * b, const char * cp, const char * dp, int64_t c) {
    add_wb(nm, w, b, cp, dp, c, 0, 0, 0);
}

static void add_conv(struct names * nm, struct wt * w, struct wt * b, const char * cp, const char * dp, int64_t cout, int64_t cin, int k) {
    add_wb(nm, w, b, cp, dp, cout, cin, k, 0);
}

// A ResNet: norm1, conv1, norm2, conv2 and nin_shortcut (diffusers conv_shortcut) when the width changes.
static void add_resnet(struct names * nm, struct vae_resnet * r, const char * cp, const char * dp, int cin, int cout) {
    char c[80], d[80];
    r->cin  = cin;
    r->cout = cout;
    static const char * const part[4] = {"norm1", "conv1", "norm2", "conv2"};
    for (int k = 0; k < 4; k++) {
        snprintf(c, sizeof c, "%s.%s", cp, part[k]);
        snprintf(d, sizeof d, "%s.%s", dp, part[k]);
        if (k == 0) add_norm(nm, &r->n1_w, &r->n1_b, c, d, cin);
        if (k == 1) add_conv(nm, &r->c1_w, &r->c1_b, c, d, cout, cin, 3);
        if (k == 2) add_norm(nm, &r->n2_w, &r->n2_b, c, d, cout);
        if (k == 3) add_conv(nm, &r->c2_w, &r->c2_b, c, d, cout, cout, 3);
    }
    if (cin != cout) {
        snprintf(c, sizeof c, "%s.nin_shortcut", cp);
        snprintf(d, sizeof d, "%s.conv_shortcut", dp);
        add_conv(nm, &r->sk_w, &r->sk_b, c, d, cout, cin, 1);
    }
}

// The mid attention: norm, fused q|k|v (three 1×1 convs or Linears), proj_out.
static void add_attn(struct names * nm, struct vae_attn * a, const char * cp, const char * dp, int C) {
    char c[80], d[80];
    snprintf(c, sizeof c, "%s.norm", cp);
    snprintf(d, sizeof d, "%s.group_norm", dp);
    add_norm(nm, &a->n_w, &a->n_b, c, d, C);
    static const char * const on[3] = {"q", "k", "v"}, * const dn[3] = {"to_q", "to_k", "to_v"};
    snprintf(c, sizeof c, "%s.qkv.weight", cp);
    struct expect * xw = expect_add(nm->t, &a->qkv_w, c, 2, 3 * (int64_t)C, C, 0, 0);
    xw->squeeze_ok = 1;
    snprintf(c, sizeof c, "%s.qkv.bias", cp);
    struct expect * xb = expect_add(nm->t, &a->qkv_b, c, 1, 3 * (int64_t)C, 0, 0, 0);
    for (int k = 0; k < 3; k++) {
        if (nm->dif) snprintf(d, sizeof d, "%s.%s.weight", dp, dn[k]);
        else snprintf(d, sizeof d, "%s.%s.weight", cp, on[k]);
        expect_src(xw, d, C, 0, C);
        if (nm->dif) snprintf(d, sizeof d, "%s.%s.bias", dp, dn[k]);
        else snprintf(d, sizeof d, "%s.%s.bias", cp, on[k]);
        expect_src(xb, d, C, 0, C);
    }
    snprintf(c, sizeof c, "%s.proj_out", cp);
    snprintf(d, sizeof d, "%s.to_out.0", dp);
    add_wb(nm, &a->proj_w, &a->proj_b, c, d, C, C, 0, 1);
}

// Mid block: ResNet, attention, ResNet at width C; `side` is "encoder" or "decoder".
static void add_mid(struct names * nm, struct vae_mid * m, const char * side, int C, int attn) {
    char c[64], d[64];
    snprintf(c, sizeof c, "%s.mid.block_1", side);
    snprintf(d, sizeof d, "%s.mid_block.resnets.0", side);
    add_resnet(nm, &m->r1, c, d, C, C);
    if (attn) {
        snprintf(c, sizeof c, "%s.mid.attn_1", side);
        snprintf(d, sizeof d, "%s.mid_block.attentions.0", side);
        add_attn(nm, &m->at, c, d, C);
    }
    snprintf(c, sizeof c, "%s.mid.block_2", side);
    snprintf(d, sizeof d, "%s.mid_block.resnets.1", side);
    add_resnet(nm, &m->r2, c, d, C, C);
}

static void build_expect(struct vae * v, enum naming naming, struct expect_table * t) {
    const struct vae_config * c = &v->cfg;
    struct names nm = {t, naming == NAMING_DIFFUSERS};
    char cp[64], dp[64];
    const int top = c->ch[c->levels - 1];
    if (c->has_encoder) {
        add_conv(&nm, &v->e_in_w, &v->e_in_b, "encoder.conv_in", "encoder.conv_in", c->ch[0], 3, 3);
        int cin = c->ch[0];
        for (int i = 0; i < c->levels; i++) {
            for (int j = 0; j < c->layers; j++) {
                snprintf(cp, sizeof cp, "encoder.down.%d.block.%d", i, j);
                snprintf(dp, sizeof dp, "encoder.down_blocks.%d.resnets.%d", i, j);
                add_resnet(&nm, &v->enc[i].res[j], cp, dp, j == 0 ? cin : c->ch[i], c->ch[i]);
            }
            cin = c->ch[i];
            if (i != c->levels - 1) {
                snprintf(cp, sizeof cp, "encoder.down.%d.downsample.conv", i);
                snprintf(dp, sizeof dp, "encoder.down_blocks.%d.downsamplers.0.conv", i);
                add_conv(&nm, &v->enc[i].rs_w, &v->enc[i].rs_b, cp, dp, c->ch[i], c->ch[i], 3);
            }
        }
        add_mid(&nm, &v->e_mid, "encoder", top, c->mid_attn);
        add_norm(&nm, &v->e_no_w, &v->e_no_b, "encoder.norm_out", "encoder.conv_norm_out", top);
        add_conv(&nm, &v->e_out_w, &v->e_out_b, "encoder.conv_out", "encoder.conv_out", 2 * (int64_t)c->z_ch, top, 3);
    }
    if (c->has_decoder) {
        add_conv(&nm, &v->d_in_w, &v->d_in_b, "decoder.conv_in", "decoder.conv_in", top, c->z_ch, 3);
        add_mid(&nm, &v->d_mid, "decoder", top, c->mid_attn);
        int cin = top;
        for (int L = c->levels - 1; L >= 0; L--) {
            int di = c->levels - 1 - L;
            for (int j = 0; j <= c->layers; j++) {
                snprintf(cp, sizeof cp, "decoder.up.%d.block.%d", L, j);
                snprintf(dp, sizeof dp, "decoder.up_blocks.%d.resnets.%d", di, j);
                add_resnet(&nm, &v->dec[L].res[j], cp, dp, j == 0 ? cin : c->ch[L], c->ch[L]);
            }
            cin = c->ch[L];
            if (L != 0) {
                snprintf(cp, sizeof cp, "decoder.up.%d.upsample.conv", L);
                snprintf(dp, sizeof dp, "decoder.up_blocks.%d.upsamplers.0.conv", di);
                add_conv(&nm, &v->dec[L].rs_w, &v->dec[L].rs_b, cp, dp, c->ch[L], c->ch[L], 3);
            }
        }
        add_norm(&nm, &v->d_no_w, &v->d_no_b, "decoder.norm_out", "decoder.conv_norm_out", c->ch[0]);
        add_conv(&nm, &v->d_out_w, &v->d_out_b, "decoder.conv_out", "decoder.conv_out", 3, c->ch[0], 3);
    }
}

enum sd3q_status vae_load(const struct ckpt_component * comp, int allow_extra, int32_t id0, struct vae ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    struct vae * v = calloc(1, sizeof(*v));
    if (!v) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    struct expect_table t = {0};
    enum sd3q_status st = infer_config(comp, &v->cfg, e);
    if (st == SD3Q_OK && comp->config_path) st = apply_config_json(comp->config_path, &v->cfg, e);
    if (st == SD3Q_OK) st = check_config(&v->cfg, comp->config_path ? comp->config_path : comp->origin, e);
    if (st != SD3Q_OK) goto fail;
    build_expect(v, comp->naming, &t);
    static const char * const ignore[] = {NULL};
    if ((st = expect_resolve(&t, comp, ignore, allow_extra, e)) != SD3Q_OK) goto fail;
    v->n_tensors = t.n;
    v->n_params = expect_number(&t, id0);
    expect_free(&t);
    *out = v;
    return SD3Q_OK;
fail:
    expect_free(&t);
    vae_free(v);
    return st;
}

void vae_free(struct vae * v) { free(v); }

// Calls fn for the weights of a ResNet / mid block / level.
static void each_resnet(const struct vae_resnet * r, void (*fn)(void *, const struct wt *), void * ud) {
    const struct wt * w[] = {&r->n1_w, &r->n1_b, &r->c1_w, &r->c1_b, &r->n2_w, &r->n2_b, &r->c2_w, &r->c2_b, &r->sk_w, &r->sk_b};
    for (size_t k = 0; k < sizeof w / sizeof w[0]; k++)
        if (wt_present(w[k])) fn(ud, w[k]);
}

static void each_mid(const struct vae_mid * m, void (*fn)(void *, const struct wt *), void * ud) {
    each_resnet(&m->r1, fn, ud);
    const struct wt * w[] = {&m->at.n_w, &m->at.n_b, &m->at.qkv_w, &m->at.qkv_b, &m->at.proj_w, &m->at.proj_b};
    for (size_t k = 0; k < sizeof w / sizeof w[0]; k++)
        if (wt_present(w[k])) fn(ud, w[k]);
    each_resnet(&m->r2, fn, ud);
}

void vae_for_each_weight(const struct vae * v, void (*fn)(void * ud, const struct wt * w), void * ud) {
    const struct vae_config * c = &v->cfg;
    const struct wt * g[] = {&v->e_in_w, &v->e_in_b, &v->e_no_w, &v->e_no_b, &v->e_out_w, &v->e_out_b,
                             &v->d_in_w, &v->d_in_b, &v->d_no_w, &v->d_no_b, &v->d_out_w, &v->d_out_b};
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++)
        if (wt_present(g[k])) fn(ud, g[k]);
    for (int i = 0; i < c->levels; i++)
        for (int s = 0; s < 2; s++) {
            const struct vae_level * l = s ? &v->dec[i] : &v->enc[i];
            for (int j = 0; j <= c->layers; j++) each_resnet(&l->res[j], fn, ud);
            if (wt_present(&l->rs_w)) fn(ud, &l->rs_w);
            if (wt_present(&l->rs_b)) fn(ud, &l->rs_b);
        }
    if (c->has_encoder) each_mid(&v->e_mid, fn, ud);
    if (c->has_decoder) each_mid(&v->d_mid, fn, ud);
}

// ---- forward ------------------------------------------------------------------------------------------------------------

// The three working buffers of a pass (each `cap` elements); x is the current activation.
struct vbufs {
    void *       x, * t1, * t2;
    void *       qkv;   // [N, 3C] mid attention
    size_t       esz;
    int64_t      cap;
    struct backend * bk;
    const struct backend_ops * o;
};

static void swap(void ** a, void ** b) {
    void * t = *a;
    *a = *b;
    *b = t;
}

// Calls the hook if set.
static void observe(const struct mmdit_hook * hk, const char * name, const void * p, int64_t C, int64_t HW) {
    if (hk && hk->fn) hk->fn(hk->ud, name, p, 1, C, HW);
}

// ResNet on x [cin, H, W] → x [cout, H, W]: h = conv2(SiLU(GN(conv1(SiLU(GN(x)))))); x = shortcut(x) + h.
static void resnet(struct vbufs * b, const struct vae_resnet * r, int64_t G, int64_t H, int64_t W) {
    struct backend * bk = b->bk;
    const int64_t HW = H * W;
    SD3Q_ASSERT(r->cin * HW <= b->cap && r->cout * HW <= b->cap);
    b->o->group_norm(bk, b->t1, b->x, 1, r->cin, HW, G, &r->n1_w, &r->n1_b, VAE_EPS, 1);
    b->o->conv2d(bk, b->t2, b->t1, 1, r->cin, H, W, &r->c1_w, &r->c1_b, 1, 1, 1, 1, 1);
    b->o->group_norm(bk, b->t1, b->t2, 1, r->cout, HW, G, &r->n2_w, &r->n2_b, VAE_EPS, 1);
    b->o->conv2d(bk, b->t2, b->t1, 1, r->cout, H, W, &r->c2_w, &r->c2_b, 1, 1, 1, 1, 1);
    if (wt_present(&r->sk_w)) {
        b->o->conv2d(bk, b->t1, b->x, 1, r->cin, H, W, &r->sk_w, &r->sk_b, 1, 0, 0, 0, 0);
        swap(&b->x, &b->t1);
    }
    b->o->add(bk, b->x, b->t2, r->cout * HW);
}

// Mid attention on x [C, N]: x += proj(softmax(q·kᵀ/√C)·v) with q|k|v = Linear(GN(x)) over pixel tokens.
static void attention(struct vbufs * b, const struct vae_attn * a, int64_t C, int64_t G, int64_t N) {
    struct backend * bk = b->bk;
    const struct backend_ops * o = b->o;
    o->group_norm(bk, b->t1, b->x, 1, C, N, G, &a->n_w, &a->n_b, VAE_EPS, 0);
    o->transpose(bk, b->t2, b->t1, 1, C, N);               // [C, N] → [N, C]
    o->linear(bk, b->qkv, b->t2, N, &a->qkv_w, &a->qkv_b);  // [N, 3C]
    struct attn_seg seg = {b->qkv, b->t1, N};                // → t1 [N, C]
    o->attention(bk, &seg, 1, 1, 1, C, 1.0f / sqrtf((float)C), NULL);
    o->linear(bk, b->t2, b->t1, N, &a->proj_w, &a->proj_b);  // [N, C]
    o->transpose(bk, b->t1, b->t2, 1, N, C);               // → [C, N]
    o->add(bk, b->x, b->t1, C * N);
}

static void mid_block(struct vbufs * b, const struct vae_mid * m, int64_t C, int64_t G, int64_t H, int64_t W, int attn) {
    resnet(b, &m->r1, G, H, W);
    if (attn) attention(b, &m->at, C, G, H * W);
    resnet(b, &m->r2, G, H, W);
}

// Largest activation (elements) of a decode at latent h×w, walking the same stages as the forward pass.
static int64_t decode_cap(const struct vae_config * c, int64_t h, int64_t w) {
    int64_t cap = (int64_t)c->ch[c->levels - 1] * h * w, cin = c->ch[c->levels - 1];
    for (int L = c->levels - 1; L >= 0; L--) {
        int64_t a = (cin > c->ch[L] ? cin : c->ch[L]) * h * w;
        if (a > cap) cap = a;
        cin = c->ch[L];
        if (L != 0) {
            h *= 2, w *= 2;
            if (cin * h * w > cap) cap = cin * h * w;
        }
    }
    return cap;
}

// Largest activation of an encode of an H×W image.
static int64_t encode_cap(const struct vae_config * c, int64_t H, int64_t W) {
    int64_t cap = 0, cin = c->ch[0];
    for (int i = 0; i < c->levels; i++) {
        int64_t a = (cin > c->ch[i] ? cin : c->ch[i]) * H * W;
        if (a > cap) cap = a;
        cin = c->ch[i];
        if (i != c->levels - 1) H /= 2, W /= 2;
    }
    return cap;
}

// Takes the working buffers from the arena.
static void take_bufs(struct vbufs * b, struct backend * bk, struct arena * ar, int64_t cap, int64_t qkv) {
    b->bk  = bk;
    b->o   = bk ? bk->ops : NULL;
    b->esz = bk ? bk->ops->act_size(bk) : 4;
    b->cap = cap;
    b->x   = arena_alloc(ar, (size_t)cap * b->esz);
    b->t1  = arena_alloc(ar, (size_t)cap * b->esz);
    b->t2  = arena_alloc(ar, (size_t)cap * b->esz);
    b->qkv = qkv ? arena_alloc(ar, (size_t)qkv * b->esz) : NULL;
    SD3Q_ASSERT(b->x && b->t1 && b->t2 && (b->qkv || !qkv));
}

void vae_decode_forward(const struct vae * v, struct backend * bk, struct arena * ar, int h, int w, const void * z, void * img,
                        const struct mmdit_hook * hook) {
    const struct vae_config * c = &v->cfg;
    const int64_t G = c->groups, top = c->ch[c->levels - 1];
    size_t mark = arena_mark(ar);
    struct vbufs b;
    take_bufs(&b, bk, ar, decode_cap(c, h, w), c->mid_attn ? 3 * top * h * w : 0);
    if (!bk) {  // planning pass
        arena_rewind(ar, mark);
        return;
    }
    const struct backend_ops * o = bk->ops;
    int64_t H = h, W = w;
    o->conv2d(bk, b.x, z, 1, c->z_ch, H, W, &v->d_in_w, &v->d_in_b, 1, 1, 1, 1, 1);
    observe(hook, "dec.conv_in", b.x, top, H * W);
    mid_block(&b, &v->d_mid, top, G, H, W, c->mid_attn);
    observe(hook, "dec.mid", b.x, top, H * W);
    char nm[32];
    for (int L = c->levels - 1; L >= 0; L--) {
        for (int j = 0; j <= c->layers; j++) resnet(&b, &v->dec[L].res[j], G, H, W);
        if (L != 0) {
            o->upsample2x(bk, b.t1, b.x, 1, c->ch[L], H, W);
            H *= 2, W *= 2;
            o->conv2d(bk, b.x, b.t1, 1, c->ch[L], H, W, &v->dec[L].rs_w, &v->dec[L].rs_b, 1, 1, 1, 1, 1);
        }
        snprintf(nm, sizeof nm, "dec.up.%d", L);
        observe(hook, nm, b.x, c->ch[L], H * W);
    }
    o->group_norm(bk, b.t1, b.x, 1, c->ch[0], H * W, G, &v->d_no_w, &v->d_no_b, VAE_EPS, 1);
    o->conv2d(bk, img, b.t1, 1, c->ch[0], H, W, &v->d_out_w, &v->d_out_b, 1, 1, 1, 1, 1);
    arena_rewind(ar, mark);
}

void vae_encode_forward(const struct vae * v, struct backend * bk, struct arena * ar, int Hi, int Wi, const void * img, void * moments,
                        const struct mmdit_hook * hook) {
    const struct vae_config * c = &v->cfg;
    const int64_t G = c->groups, top = c->ch[c->levels - 1], f = vae_factor(v);
    size_t mark = arena_mark(ar);
    struct vbufs b;
    take_bufs(&b, bk, ar, encode_cap(c, Hi, Wi), c->mid_attn ? 3 * top * (Hi / f) * (Wi / f) : 0);
    if (!bk) {
        arena_rewind(ar, mark);
        return;
    }
    const struct backend_ops * o = bk->ops;
    int64_t H = Hi, W = Wi;
    o->conv2d(bk, b.x, img, 1, 3, H, W, &v->e_in_w, &v->e_in_b, 1, 1, 1, 1, 1);
    char nm[32];
    for (int i = 0; i < c->levels; i++) {
        for (int j = 0; j < c->layers; j++) resnet(&b, &v->enc[i].res[j], G, H, W);
        if (i != c->levels - 1) {  // zero-pad right and bottom by one, 3×3 conv with stride 2
            o->conv2d(bk, b.t1, b.x, 1, c->ch[i], H, W, &v->enc[i].rs_w, &v->enc[i].rs_b, 2, 0, 0, 1, 1);
            swap(&b.x, &b.t1);
            H /= 2, W /= 2;
        }
        snprintf(nm, sizeof nm, "enc.down.%d", i);
        observe(hook, nm, b.x, c->ch[i], H * W);
    }
    mid_block(&b, &v->e_mid, top, G, H, W, c->mid_attn);
    observe(hook, "enc.mid", b.x, top, H * W);
    o->group_norm(bk, b.t1, b.x, 1, top, H * W, G, &v->e_no_w, &v->e_no_b, VAE_EPS, 1);
    o->conv2d(bk, moments, b.t1, 1, top, H, W, &v->e_out_w, &v->e_out_b, 1, 1, 1, 1, 1);
    arena_rewind(ar, mark);
}
