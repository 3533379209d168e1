/*
 * vae-api.c — the VAE's side of the model and session objects (loading, describing, planning) and its public entry
 * points: sd3q_model_vae_factors, sd3q_session_vae_decode and sd3q_session_vae_encode with tiling.
 *
 * Tiling. The session plans the VAE for one tile of th × tw latent pixels, th = min(vae_tile, max_latent_h) (64 by
 * default: a 512² image), and one image at a time. A larger latent is cut along each axis into the fewest tiles of
 * that size whose overlap is at least a quarter tile, spread evenly (128 latent rows with 64-row tiles: starts 0, 32,
 * 64). Each tile is decoded on its own; in an overlap the two tiles are blended with complementary linear ramps
 * across the whole overlap (weight (p + ½)/L rising in the later tile, falling in the earlier one), weights
 * multiplied across the two axes and normalised, so there is no seam and the tile borders (where zero padding differs
 * from the full image) carry almost no weight. Encoding tiles the image the same way and blends the moments (mean and
 * log-variance) in latent space before the clamp. GroupNorm statistics and the mid attention see one tile only, so a
 * tiled result is close to, not equal to, a one-piece decode (tests/test-vae-golden.c measures it).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/clip.h"
#include "model/session.h"
#include "model/t5.h"
#include "model/vae.h"
#include "model/vae-api.h"

#define VAE_TILE_DEFAULT 64    // latent pixels per tile side (512² images)
#define VAE_MAX_SIDE     4096  // largest latent side accepted (32768-pixel images)

// ---- model ------------------------------------------------------------------------------------------------------------

enum sd3q_status vae_model_load(struct sd3q_model * m, int allow_extra, struct sd3q_errbuf * e) {
    const struct ckpt_component * c = &m->ck.comp[SD3Q_COMP_VAE];
    if (!c->present) return SD3Q_OK;
    // weight ids continue after the MMDiT's and the text encoders'
    int32_t id = (m->mmdit ? m->mmdit->n_tensors : 0) + (m->clip_l ? m->clip_l->n_tensors : 0) +
                 (m->clip_g ? m->clip_g->n_tensors : 0) + (m->t5 ? m->t5->n_tensors : 0);
    return vae_load(c, allow_extra, id, &m->vae, e);
}

void vae_model_free(struct sd3q_model * m) {
    vae_free(m->vae);
    m->vae = NULL;
}

size_t vae_describe(const struct sd3q_model * m, char * buf, size_t size) {
    if (buf && size) buf[0] = '\0';
    if (!m->vae) return 0;
    const struct vae_config * c = &m->vae->cfg;
    char chs[96] = "";
    for (int i = 0; i < c->levels; i++) snprintf(chs + strlen(chs), sizeof chs - strlen(chs), "%s%d", i ? ", " : "", c->ch[i]);
    int n = snprintf(buf, size,
                     "        %s%s, channels [%s], %d ResNets per level (decoder %d), latent channels %d, factor %d, groups %d, "
                     "mid attention %s, scaling %g, shift %g\n",
                     c->has_encoder ? "encoder" : "", c->has_encoder && c->has_decoder ? " + decoder" : c->has_decoder ? "decoder" : "",
                     chs, c->layers, c->layers + 1, c->z_ch, vae_factor(m->vae), c->groups, c->mid_attn ? "yes" : "no",
                     (double)c->scaling, (double)c->shift);
    return n > 0 ? (size_t)n : 0;
}

enum sd3q_status sd3q_model_vae_factors(const struct sd3q_model * m, float * scaling, float * shift) {
    if (!m) return SD3Q_ERR_INVALID_ARG;
    if (!m->vae) return SD3Q_ERR_MISSING;
    if (scaling) *scaling = m->vae->cfg.scaling;
    if (shift) *shift = m->vae->cfg.shift;
    return SD3Q_OK;
}

enum sd3q_status sd3q_model_vae_info(const struct sd3q_model * m, struct sd3q_vae_info * info) {
    if (!m || !info) return SD3Q_ERR_INVALID_ARG;
    if (!m->vae) return SD3Q_ERR_MISSING;
    const struct vae_config * c = &m->vae->cfg;
    memset(info, 0, sizeof *info);
    info->latent_channels = c->z_ch;
    info->factor          = vae_factor(m->vae);
    info->has_encoder     = c->has_encoder;
    info->has_decoder     = c->has_decoder;
    info->scaling         = c->scaling;
    info->shift           = c->shift;
    return SD3Q_OK;
}

// ---- session planning ------------------------------------------------------------------------------------------------

// The tile a session plans for: min(vae_tile or the default, the planned maximum latent).
static void tile_of(const struct sd3q_session_params * p, int * th, int * tw) {
    int t = p->vae_tile > 0 ? p->vae_tile : VAE_TILE_DEFAULT;
    *th = p->max_latent_h < t ? p->max_latent_h : t;
    *tw = p->max_latent_w < t ? p->max_latent_w : t;
}

struct dims {
    int64_t * max_k, * max_n;
};

static void track_dims(void * ud, const struct wt * w) {
    struct dims * d = ud;
    if (w->ndim < 2) return;
    if (w->row_elems > *d->max_k) *d->max_k = w->row_elems;
    if (w->shape[0] > *d->max_n) *d->max_n = w->shape[0];
}

void vae_plan_backend(const struct sd3q_model * m, const struct sd3q_session_params * p, int64_t * max_k, int64_t * max_n,
                      int64_t * max_tokens) {
    if (!m->vae) return;
    struct dims d = {max_k, max_n};
    vae_for_each_weight(m->vae, track_dims, &d);
    int th, tw;
    tile_of(p, &th, &tw);
    if (m->vae->cfg.mid_attn && (int64_t)th * tw > *max_tokens) *max_tokens = (int64_t)th * tw;
}

// Host staging floats: one tile's latent (2z channels) and its image.
static int64_t host_floats(const struct vae * v, int th, int tw) {
    int64_t f = vae_factor(v);
    return (2 * (int64_t)v->cfg.z_ch + 3 * f * f) * th * tw;
}

// Takes the decode buffers (latent in, image out) of one tile from the arena.
static void take_dec(struct sd3q_session * s, int th, int tw, void ** z, void ** img) {
    size_t esz = s->bk->ops->act_size(s->bk);
    int64_t f = vae_factor(s->model->vae);
    *z   = arena_alloc(&s->ar, esz * (size_t)s->model->vae->cfg.z_ch * th * tw);
    *img = arena_alloc(&s->ar, esz * (size_t)(3 * f * f) * th * tw);
    SD3Q_ASSERT(*z && *img);
}

// Takes the encode buffers (image in, moments out) of one tile from the arena.
static void take_enc(struct sd3q_session * s, int th, int tw, void ** img, void ** mom) {
    size_t esz = s->bk->ops->act_size(s->bk);
    int64_t f = vae_factor(s->model->vae);
    *img = arena_alloc(&s->ar, esz * (size_t)(3 * f * f) * th * tw);
    *mom = arena_alloc(&s->ar, esz * (size_t)(2 * s->model->vae->cfg.z_ch) * th * tw);
    SD3Q_ASSERT(*img && *mom);
}

enum sd3q_status vae_plan_session(struct sd3q_session * s, size_t * bytes, struct sd3q_errbuf * e) {
    const struct vae * v = s->model->vae;
    if (!v) return SD3Q_OK;
    int th, tw;
    tile_of(&s->p, &th, &tw);
    arena_init_measure(&s->ar, 64);
    void * a, * b;
    const int64_t f = vae_factor(v);
    if (v->cfg.has_decoder) {
        size_t mark = arena_mark(&s->ar);
        take_dec(s, th, tw, &a, &b);
        vae_decode_forward(v, NULL, &s->ar, th, tw, a, b, NULL);
        arena_rewind(&s->ar, mark);
    }
    if (v->cfg.has_encoder) {
        size_t mark = arena_mark(&s->ar);
        take_enc(s, th, tw, &a, &b);
        vae_encode_forward(v, NULL, &s->ar, (int)(f * th), (int)(f * tw), a, b, NULL);
        arena_rewind(&s->ar, mark);
    }
    if (s->ar.peak > *bytes) *bytes = s->ar.peak;
    s->vae_th   = th;
    s->vae_tw   = tw;
    s->host_vae = malloc(sizeof(float) * (size_t)host_floats(v, th, tw));
    if (!s->host_vae)
        return err_set(e, SD3Q_ERR_OOM, "out of memory for the VAE staging buffer (%.1f MiB)", (double)host_floats(v, th, tw) * 4 / (1 << 20));
    return SD3Q_OK;
}

void vae_session_free(struct sd3q_session * s) {
    free(s->host_vae);
    s->host_vae = NULL;
}

// vae_for_each_weight with the signature session_prepare_weights takes.
static void vae_weights(const void * v, void (*fn)(void * ud, const struct wt * w), void * ud) { vae_for_each_weight(v, fn, ud); }

// Gives the VAE's weights to the backend once (residency group SD3Q_COMP_VAE), for backends that keep copies.
static enum sd3q_status prepare_vae(struct sd3q_session * s) {
    if (!s->bk->ops->prepare || s->vae_prepared) return SD3Q_OK;
    struct sd3q_errbuf e = {{0}};  // (session_prepare_weights reads s->err while writing e)
    enum sd3q_status st = session_prepare_weights(s, SD3Q_COMP_VAE, vae_weights, s->model->vae, &e);
    if (st != SD3Q_OK) return err_set(&s->err, st, "%s", e.msg);
    s->vae_prepared = 1;
    return SD3Q_OK;
}

void vae_release_device(struct sd3q_session * s) {
    if (!s || !s->bk || !s->bk->ops->release || !s->vae_prepared) return;
    s->bk->ops->release(s->bk, SD3Q_COMP_VAE);
    s->vae_prepared = 0;
}

// ---- tiles ------------------------------------------------------------------------------------------------------------

// The tiles along one axis of n latent pixels: cnt tiles of len pixels.
struct axis {
    int n, len, cnt;
};

static struct axis axis_make(int n, int t) {
    struct axis a = {n, n, 1};
    if (n <= t) return a;
    int ov = t / 4, stride = t - ov > 0 ? t - ov : 1;
    a.len = t;
    a.cnt = (n - ov + stride - 1) / stride;
    if (a.cnt < 2) a.cnt = 2;
    return a;
}

// First latent pixel of tile i (evenly spread, the last tile ends at n).
static int axis_start(const struct axis * a, int i) {
    if (a->cnt == 1) return 0;
    return (int)(((int64_t)i * (a->n - a->len) * 2 + (a->cnt - 1)) / (2 * (int64_t)(a->cnt - 1)));
}

// Blend weight of tile i at position p of an axis measured in units of 1/f latent pixel (f = 8 for image pixels).
static float axis_weight(const struct axis * a, int i, int64_t p, int f) {
    int64_t s = (int64_t)f * axis_start(a, i), e = s + (int64_t)f * a->len;
    double w = 1.0;
    if (i > 0) {
        int64_t pe = (int64_t)f * axis_start(a, i - 1) + (int64_t)f * a->len;  // end of the previous tile
        if (p < pe && pe > s) w = fmin(w, ((double)(p - s) + 0.5) / (double)(pe - s));
    }
    if (i + 1 < a->cnt) {
        int64_t ns = (int64_t)f * axis_start(a, i + 1);  // start of the next tile
        if (p >= ns && e > ns) w = fmin(w, ((double)(e - p) - 0.5) / (double)(e - ns));
    }
    return (float)w;
}

// Sum of the weights of every tile covering position p.
static float axis_norm(const struct axis * a, int64_t p, int f) {
    float sum = 0.0f;
    for (int i = 0; i < a->cnt; i++) {
        int64_t s = (int64_t)f * axis_start(a, i);
        if (p >= s && p < s + (int64_t)f * a->len) sum += axis_weight(a, i, p, f);
    }
    return sum;
}

// dst[c, H, W] += w(y)·w(x)·src[c, th, tw] over the tile at (y0, x0) of a C-channel plane set; f: units per latent px.
static void blend_add(float * dst, const float * src, int64_t C, int64_t H, int64_t W, const struct axis * ay, int iy,
                      const struct axis * ax, int ix, int f) {
    int64_t y0 = (int64_t)f * axis_start(ay, iy), x0 = (int64_t)f * axis_start(ax, ix);
    int64_t th = (int64_t)f * ay->len, tw = (int64_t)f * ax->len;
    for (int64_t y = 0; y < th; y++) {
        float wy = axis_weight(ay, iy, y0 + y, f);
        for (int64_t x = 0; x < tw; x++) {
            float wgt = wy * axis_weight(ax, ix, x0 + x, f);
            for (int64_t c = 0; c < C; c++) dst[(c * H + y0 + y) * W + x0 + x] += wgt * src[(c * th + y) * tw + x];
        }
    }
}

// Divides a blended C-channel plane set by the summed weights.
static void blend_normalise(float * dst, int64_t C, int64_t H, int64_t W, const struct axis * ay, const struct axis * ax, int f) {
    for (int64_t y = 0; y < H; y++) {
        float ny = axis_norm(ay, y, f);
        for (int64_t x = 0; x < W; x++) {
            float inv = 1.0f / (ny * axis_norm(ax, x, f));
            for (int64_t c = 0; c < C; c++) dst[(c * H + y) * W + x] *= inv;
        }
    }
}

// Copies the crop [c, y0:y0+th, x0:x0+tw] of src [C, H, W] into dst [C, th, tw].
static void crop(float * dst, const float * src, int64_t C, int64_t H, int64_t W, int64_t y0, int64_t x0, int64_t th, int64_t tw) {
    for (int64_t c = 0; c < C; c++)
        for (int64_t y = 0; y < th; y++) memcpy(dst + (c * th + y) * tw, src + (c * H + y0 + y) * W + x0, sizeof(float) * (size_t)tw);
}

// ---- public entry points ------------------------------------------------------------------------------------------------

// Checks a VAE request: the model part exists and the sizes are sane (for the encoder, H and W are image pixels).
static enum sd3q_status check_vae(struct sd3q_session * s, int decoder, int n, int h, int w) {
    const struct vae * v = s->model->vae;
    if (!v) return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no VAE (first_stage_model.* or vae/ weights)");
    if (decoder && !v->cfg.has_decoder) return err_set(&s->err, SD3Q_ERR_MISSING, "the model's VAE has no decoder weights");
    if (!decoder && !v->cfg.has_encoder) return err_set(&s->err, SD3Q_ERR_MISSING, "the model's VAE has no encoder weights");
    if (!s->host_vae) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "the session was created without VAE planning");
    if (n < 1 || n > 4096) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "batch %d out of range [1, 4096]", n);
    const int f = vae_factor(v);
    if (!decoder) {
        if (h < f || w < f || h % f || w % f)
            return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "image size %d×%d: width and height must be positive multiples of %d", w, h, f);
        h /= f, w /= f;
    }
    if (h < 1 || w < 1 || h > VAE_MAX_SIDE || w > VAE_MAX_SIDE)
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "latent size %d×%d out of range [1, %d]", w, h, VAE_MAX_SIDE);
    return SD3Q_OK;
}

enum sd3q_status sd3q_session_vae_decode(struct sd3q_session * s, int n, int h, int w, const float * latents, float * image) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    if (!latents || !image) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_vae_decode: NULL buffer");
    TRY(check_vae(s, 1, n, h, w));
    TRY(prepare_vae(s));
    const struct vae * v = s->model->vae;
    const struct backend_ops * o = s->bk->ops;
    const int f = vae_factor(v);
    const int64_t C = v->cfg.z_ch, H = (int64_t)f * h, W = (int64_t)f * w;
    struct axis ay = axis_make(h, s->vae_th), ax = axis_make(w, s->vae_tw);
    const int64_t th = ay.len, tw = ax.len;
    const int tiled = ay.cnt > 1 || ax.cnt > 1;
    float * hz = s->host_vae, * himg = s->host_vae + 2 * C * th * tw;
    size_t mark = arena_mark(&s->ar);
    void * dz, * dimg;
    take_dec(s, (int)th, (int)tw, &dz, &dimg);
    const struct mmdit_hook * hook = s->hook.fn ? &s->hook : NULL;
    enum sd3q_status st = SD3Q_OK;
    for (int b = 0; b < n && st == SD3Q_OK; b++) {
        const float * zb = latents + (size_t)b * C * h * w;
        float * ib = image + (size_t)b * 3 * H * W;
        if (!tiled) {
            if ((st = o->upload(s->bk, dz, zb, C * h * w)) != SD3Q_OK) break;
            vae_decode_forward(v, s->bk, &s->ar, h, w, dz, dimg, hook);
            st = o->download(s->bk, ib, dimg, 3 * H * W);
            continue;
        }
        memset(ib, 0, sizeof(float) * (size_t)(3 * H * W));
        for (int iy = 0; iy < ay.cnt && st == SD3Q_OK; iy++)
            for (int ix = 0; ix < ax.cnt && st == SD3Q_OK; ix++) {
                crop(hz, zb, C, h, w, axis_start(&ay, iy), axis_start(&ax, ix), th, tw);
                if ((st = o->upload(s->bk, dz, hz, C * th * tw)) != SD3Q_OK) break;
                vae_decode_forward(v, s->bk, &s->ar, (int)th, (int)tw, dz, dimg, NULL);
                if ((st = o->download(s->bk, himg, dimg, 3 * f * f * th * tw)) != SD3Q_OK) break;
                blend_add(ib, himg, 3, H, W, &ay, iy, &ax, ix, f);
            }
        if (st == SD3Q_OK) blend_normalise(ib, 3, H, W, &ay, &ax, f);
    }
    arena_rewind(&s->ar, mark);
    return st;
}

enum sd3q_status sd3q_session_vae_encode(struct sd3q_session * s, int n, int H, int W, const float * image, float * mean, float * logvar) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    if (!image || !mean) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_vae_encode: NULL buffer");
    TRY(check_vae(s, 0, n, H, W));
    TRY(prepare_vae(s));
    const struct vae * v = s->model->vae;
    const struct backend_ops * o = s->bk->ops;
    const int f = vae_factor(v);
    const int64_t Z = v->cfg.z_ch, h = H / f, w = W / f;
    struct axis ay = axis_make((int)h, s->vae_th), ax = axis_make((int)w, s->vae_tw);
    const int64_t th = ay.len, tw = ax.len;
    float * hm = s->host_vae, * himg = s->host_vae + 2 * Z * th * tw;
    size_t mark = arena_mark(&s->ar);
    void * dimg, * dmom;
    take_enc(s, (int)th, (int)tw, &dimg, &dmom);
    const struct mmdit_hook * hook = s->hook.fn ? &s->hook : NULL;
    enum sd3q_status st = SD3Q_OK;
    for (int b = 0; b < n && st == SD3Q_OK; b++) {
        const float * ib = image + (size_t)b * 3 * H * W;
        float * mb = mean + (size_t)b * Z * h * w, * lb = logvar ? logvar + (size_t)b * Z * h * w : NULL;
        if (ay.cnt == 1 && ax.cnt == 1) {
            if ((st = o->upload(s->bk, dimg, ib, 3 * (int64_t)H * W)) != SD3Q_OK) break;
            vae_encode_forward(v, s->bk, &s->ar, H, W, dimg, dmom, hook);
            if ((st = o->download(s->bk, hm, dmom, 2 * Z * h * w)) != SD3Q_OK) break;
            memcpy(mb, hm, sizeof(float) * (size_t)(Z * h * w));
            if (lb) memcpy(lb, hm + Z * h * w, sizeof(float) * (size_t)(Z * h * w));
        } else {
            memset(mb, 0, sizeof(float) * (size_t)(Z * h * w));
            if (lb) memset(lb, 0, sizeof(float) * (size_t)(Z * h * w));
            for (int iy = 0; iy < ay.cnt && st == SD3Q_OK; iy++)
                for (int ix = 0; ix < ax.cnt && st == SD3Q_OK; ix++) {
                    crop(himg, ib, 3, H, W, (int64_t)f * axis_start(&ay, iy), (int64_t)f * axis_start(&ax, ix), f * th, f * tw);
                    if ((st = o->upload(s->bk, dimg, himg, 3 * f * f * th * tw)) != SD3Q_OK) break;
                    vae_encode_forward(v, s->bk, &s->ar, (int)(f * th), (int)(f * tw), dimg, dmom, NULL);
                    if ((st = o->download(s->bk, hm, dmom, 2 * Z * th * tw)) != SD3Q_OK) break;
                    blend_add(mb, hm, Z, h, w, &ay, iy, &ax, ix, 1);
                    if (lb) blend_add(lb, hm + Z * th * tw, Z, h, w, &ay, iy, &ax, ix, 1);
                }
            if (st != SD3Q_OK) break;
            blend_normalise(mb, Z, h, w, &ay, &ax, 1);
            if (lb) blend_normalise(lb, Z, h, w, &ay, &ax, 1);
        }
        if (lb)
            for (int64_t i = 0; i < Z * h * w; i++) lb[i] = lb[i] < -30.0f ? -30.0f : lb[i] > 20.0f ? 20.0f : lb[i];
    }
    arena_rewind(&s->ar, mark);
    return st;
}
