/*
 * actconfig.c — timestep grouping (HTG), the activation-quantization configuration, its file format and fake
 * quantization (see actconfig.h).
 *
 * Follows TaQ-DiT (arXiv 2411.14172): static 8-bit asymmetric activations for post-GELU inputs with a per-channel
 * shift ((min+max)/2, momentum 0.95 over timesteps) and integer outlier-channel divisors folded into the next
 * weights; and HTG (arXiv 2503.06930, Alg. 1) for contiguous timestep groups. Departures, all documented in
 * docs/QUANT.md: groups are global (one σ partition for every layer) so that a step needs one lookup; the shift's
 * momentum runs over the timesteps of each group in sampling order (not over images at a fixed step).
 */
#include "quant/actconfig.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "io/json.h"
#include "io/safetensors.h"

#define SHIFT_MOMENTUM 0.95

// ---- HTG ------------------------------------------------------------------------------------------------------------

// Clip statistic of a cell.
static double clip_stat(const struct stats_cell * c, enum act_clip clip) {
    return clip == CLIP_ABSMAX ? c->absmax : clip == CLIP_P999 ? c->p999 : c->p9999;
}

void actcfg_htg(const struct stats_table * t, int n_groups, int * labels) {
    int T = t->n_steps, L = t->n_layers;
    if (n_groups < 1) n_groups = 1;
    if (n_groups > T) n_groups = T;
    // features per step: per layer, centres / mean range (normalised), and log absmax
    int64_t F = 0;
    for (int l = 0; l < L; l++) F += t->layers[l].C + 1;
    double * feat = calloc((size_t)T * (size_t)F, sizeof(double));   // [T, F] cluster sums
    int * size = malloc(sizeof(int) * (size_t)T), * first = malloc(sizeof(int) * (size_t)T);
    SD3Q_ASSERT(feat && size && first);
    int64_t off = 0;
    for (int l = 0; l < L; l++) {
        int64_t C = t->layers[l].C;
        double r = 0;
        int n = 0;
        for (int s = 0; s < T; s++) {
            const struct stats_cell * c = stats_at(t, s, l);
            if (!c->n_batches) continue;
            for (int64_t k = 0; k < C; k++) r += (double)c->avg_max[k] - (double)c->avg_min[k];
            n++;
        }
        r = n ? r / ((double)n * (double)C) : 1.0;
        double wv = 1.0 / (r > 1e-12 ? r : 1e-12) / sqrt((double)C);  // each layer weighs about the same
        for (int s = 0; s < T; s++) {
            const struct stats_cell * c = stats_at(t, s, l);
            double * f = feat + (int64_t)s * F + off;
            if (!c->n_batches) continue;
            for (int64_t k = 0; k < C; k++) f[k] = 0.5 * ((double)c->avg_max[k] + (double)c->avg_min[k]) * wv;
            f[C] = log(c->absmax > 1e-12 ? c->absmax : 1e-12);
        }
        off += C + 1;
    }
    // clusters are runs [first[i], first[i+1]) in step order; merge the closest adjacent pair until n_groups remain
    int nc = T;
    for (int i = 0; i < T; i++) size[i] = 1, first[i] = i;
    while (nc > n_groups) {
        int best = -1;
        double bd = INFINITY;
        for (int i = 0; i + 1 < nc; i++) {
            const double * a = feat + (int64_t)i * F, * b = feat + (int64_t)(i + 1) * F;
            double d = 0;
            for (int64_t k = 0; k < F; k++) {
                double x = a[k] / size[i] - b[k] / size[i + 1];
                d += x * x;
            }
            if (d < bd) bd = d, best = i;  // first pair on ties
        }
        double * a = feat + (int64_t)best * F, * b = feat + (int64_t)(best + 1) * F;
        for (int64_t k = 0; k < F; k++) a[k] += b[k];
        size[best] += size[best + 1];
        memmove(feat + (int64_t)(best + 1) * F, feat + (int64_t)(best + 2) * F, sizeof(double) * (size_t)((nc - best - 2) * F));
        memmove(size + best + 1, size + best + 2, sizeof(int) * (size_t)(nc - best - 2));
        memmove(first + best + 1, first + best + 2, sizeof(int) * (size_t)(nc - best - 2));
        nc--;
    }
    for (int g = 0; g < nc; g++)
        for (int s = first[g]; s < first[g] + size[g]; s++) labels[s] = g;
    free(feat);
    free(size);
    free(first);
}

// ---- configuration ----------------------------------------------------------------------------------------------------

static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Bits for a clip magnitude under the multi-tier thresholds.
static int tier_bits(double alpha, double a4, double a6) { return alpha < a4 ? 4 : alpha < a6 ? 6 : 8; }

// Builds the entry of layer l over the group's steps [s0, s1].
static enum sd3q_status build_entry(const struct stats_table * t, int l, int s0, int s1, const struct actcfg * cfg,
                                    struct actcfg_entry * en, struct sd3q_errbuf * e) {
    const struct stats_layer * ly = &t->layers[l];
    int64_t C = ly->C;
    memset(en, 0, sizeof(*en));
    en->factor = malloc(sizeof(int32_t) * (size_t)C);
    double * lo = malloc(sizeof(double) * (size_t)C), * hi = malloc(sizeof(double) * (size_t)C);
    double * rlo = malloc(sizeof(double) * (size_t)C), * rhi = malloc(sizeof(double) * (size_t)C);
    double * range = malloc(sizeof(double) * (size_t)C), * srt = malloc(sizeof(double) * (size_t)C);
    if (ly->post_gelu) en->shift = malloc(sizeof(float) * (size_t)C);
    enum sd3q_status st = SD3Q_OK;
    if (!en->factor || !lo || !hi || !rlo || !rhi || !range || !srt || (ly->post_gelu && !en->shift)) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    // per-channel AvgMinMax and running extremes over the group; the post-GELU shift as a momentum average over the
    // group's steps in sampling order
    double alpha_raw = 0;
    int n = 0;
    for (int64_t k = 0; k < C; k++) lo[k] = rlo[k] = INFINITY, hi[k] = rhi[k] = -INFINITY;
    for (int s = s0; s <= s1; s++) {
        const struct stats_cell * c = stats_at(t, s, l);
        if (!c->n_batches) continue;
        for (int64_t k = 0; k < C; k++) {
            lo[k] = fmin(lo[k], c->avg_min[k]), hi[k] = fmax(hi[k], c->avg_max[k]);
            rlo[k] = fmin(rlo[k], c->run_min[k]), rhi[k] = fmax(rhi[k], c->run_max[k]);
            if (en->shift) {
                float centre = 0.5f * (c->avg_min[k] + c->avg_max[k]);
                en->shift[k] = n == 0 ? centre : (float)(SHIFT_MOMENTUM * en->shift[k] + (1 - SHIFT_MOMENTUM) * centre);
            }
        }
        alpha_raw = fmax(alpha_raw, clip_stat(c, cfg->clip));
        n++;
    }
    if (n == 0) {
        st = err_set(e, SD3Q_ERR_MISSING, "layer %s has no statistics for calibration steps %d–%d", ly->name, t->steps[s0].index,
                     t->steps[s1].index);
        goto done;
    }
    // outliers: channel range above outlier_ratio × the median range; divisor brings the channel's magnitude (after
    // the shift) within the normal channels' bound
    for (int64_t k = 0; k < C; k++) range[k] = srt[k] = hi[k] - lo[k];
    qsort(srt, (size_t)C, sizeof(double), cmp_double);
    double med = C % 2 ? srt[C / 2] : 0.5 * (srt[C / 2 - 1] + srt[C / 2]);
    double bound = 0;  // largest |x − shift| among normal channels (running extremes)
    for (int64_t k = 0; k < C; k++) {
        double s = en->shift ? en->shift[k] : 0;
        if (!(range[k] > cfg->outlier_ratio * med)) bound = fmax(bound, fmax(fabs(rlo[k] - s), fabs(rhi[k] - s)));
    }
    for (int64_t k = 0; k < C; k++) {
        double s = en->shift ? en->shift[k] : 0, m = fmax(fabs(rlo[k] - s), fabs(rhi[k] - s));
        int32_t f = 1;
        if (med > 1e-12 && range[k] > cfg->outlier_ratio * med && bound > 0) f = (int32_t)fmin(ceil(m / bound), 1 << 20);
        en->factor[k] = f < 1 ? 1 : f;
        en->n_outliers += en->factor[k] > 1;
    }
    // represented range
    int bits = 8;
    if (!ly->post_gelu) {
        double amax_div = 0;
        for (int64_t k = 0; k < C; k++) amax_div = fmax(amax_div, fmax(fabs(rlo[k]), fabs(rhi[k])) / en->factor[k]);
        double alpha = en->n_outliers ? fmin(alpha_raw, amax_div) : alpha_raw;
        if (!(alpha > 0)) alpha = 1e-6;
        if (cfg->multitier) bits = tier_bits(alpha, cfg->a4_threshold, cfg->a6_threshold);
        int qmax = (1 << (bits - 1)) - 1;
        en->symmetric = 1;
        en->clip_lo = (float)-alpha, en->clip_hi = (float)alpha;
        en->step = (float)(alpha / qmax);
        en->zero_point = 0;
    } else {
        double l0 = INFINITY, h0 = -INFINITY;
        for (int64_t k = 0; k < C; k++) {
            double s = en->shift[k];
            double a = cfg->clip == CLIP_ABSMAX ? rlo[k] : lo[k], b = cfg->clip == CLIP_ABSMAX ? rhi[k] : hi[k];
            l0 = fmin(l0, (a - s) / en->factor[k]);
            h0 = fmax(h0, (b - s) / en->factor[k]);
        }
        if (!(h0 > l0)) h0 = l0 + 1e-6;
        l0 = fmin(l0, 0.0), h0 = fmax(h0, 0.0);  // zero must be representable exactly
        if (cfg->multitier) bits = tier_bits(fmax(-l0, h0), cfg->a4_threshold_gelu, cfg->a6_threshold_gelu);
        int qmin = -(1 << (bits - 1));
        en->symmetric = 0;
        en->clip_lo = (float)l0, en->clip_hi = (float)h0;
        en->step = (float)((h0 - l0) / ((1 << bits) - 1));
        // zp = qmin − round(lo/step), rounded exactly as actcfg_fake_quant rounds, so lo quantizes to qmin
        en->zero_point = (int32_t)qmin - (int32_t)rintf(en->clip_lo * (1.0f / en->step));
    }
    en->bits = bits;
done:
    free(lo);
    free(hi);
    free(rlo);
    free(rhi);
    free(range);
    free(srt);
    return st;
}

enum sd3q_status actcfg_build(const struct stats_table * t, int n_groups, enum act_clip clip, int multitier, double a4,
                              double a6, double a4_gelu, double a6_gelu, struct actcfg * out, struct sd3q_errbuf * e) {
    memset(out, 0, sizeof(*out));
    if (t->n_steps < 1) return err_set(e, SD3Q_ERR_INVALID_ARG, "the statistics hold no steps");
    if (n_groups < 1 || n_groups > ACTCFG_MAX_GROUPS)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "--time-groups must be in [1, %d] (got %d)", ACTCFG_MAX_GROUPS, n_groups);
    if (n_groups > t->n_steps) n_groups = t->n_steps;
    out->clip = clip, out->multitier = multitier, out->outlier_ratio = 2.5;
    out->a4_threshold = a4, out->a6_threshold = a6, out->a4_threshold_gelu = a4_gelu, out->a6_threshold_gelu = a6_gelu;
    int * labels = malloc(sizeof(int) * (size_t)t->n_steps);
    out->layers = malloc(sizeof(*out->layers) * (size_t)t->n_layers);
    out->e = calloc((size_t)t->n_layers * (size_t)n_groups, sizeof(*out->e));
    if (!labels || !out->layers || !out->e) {
        free(labels);
        actcfg_free(out);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    memcpy(out->layers, t->layers, sizeof(*out->layers) * (size_t)t->n_layers);
    out->n_layers = t->n_layers;
    actcfg_htg(t, n_groups, labels);
    out->n_groups = labels[t->n_steps - 1] + 1;
    for (int g = 0, s = 0; g < out->n_groups; g++) {
        struct actcfg_group * gr = &out->groups[g];
        gr->first = s;
        while (s + 1 < t->n_steps && labels[s + 1] == g) s++;
        gr->last = s++;
        gr->sigma_hi = g == 0 ? t->steps[gr->first].sigma : out->groups[g - 1].sigma_lo;
        gr->sigma_lo = gr->last + 1 < t->n_steps ? 0.5f * (t->steps[gr->last].sigma + t->steps[gr->last + 1].sigma) : 0.0f;
    }
    free(labels);
    enum sd3q_status st = SD3Q_OK;
    for (int l = 0; l < t->n_layers && st == SD3Q_OK; l++)
        for (int g = 0; g < out->n_groups && st == SD3Q_OK; g++)
            st = build_entry(t, l, out->groups[g].first, out->groups[g].last, out, actcfg_at(out, l, g), e);
    if (st != SD3Q_OK) actcfg_free(out);
    return st;
}

int actcfg_group_for_sigma(const struct actcfg * c, float sigma) {
    for (int g = 0; g + 1 < c->n_groups; g++)
        if (sigma > c->groups[g].sigma_lo) return g;
    return c->n_groups - 1;
}

void actcfg_fake_quant(const struct actcfg_entry * en, float * x, int64_t rows, int64_t C) {
    int qmax = (1 << (en->bits - 1)) - 1, qmin = en->symmetric ? -qmax : -(1 << (en->bits - 1));
    float inv = 1.0f / en->step;
    for (int64_t r = 0; r < rows; r++) {
        float * xr = x + r * C;
        for (int64_t k = 0; k < C; k++) {
            float s = en->shift ? en->shift[k] : 0.0f, f = en->factor ? (float)en->factor[k] : 1.0f;
            float v = (xr[k] - s) / f;
            float q = rintf(v * inv) + (float)en->zero_point;
            q = q < (float)qmin ? (float)qmin : (q > (float)qmax ? (float)qmax : q);
            xr[k] = (q - (float)en->zero_point) * en->step * f + s;
        }
    }
}

// ---- files ------------------------------------------------------------------------------------------------------------

static const char * const clip_names[] = {"absmax", "p999", "p9999"};

// "<path without .json>.safetensors" (the vector file next to a config).
static char * vec_path(const char * path) {
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".json") == 0) n -= 5;
    char * p = malloc(n + 13);
    if (p) snprintf(p, n + 13, "%.*s.safetensors", (int)n, path);
    return p;
}

enum sd3q_status actcfg_write(const struct actcfg * c, const char * path, struct sd3q_errbuf * e) {
    char * vp = vec_path(path);
    int cap = 2 * c->n_layers * c->n_groups, n = 0;
    struct st_wtensor * w = calloc((size_t)cap + 1, sizeof(*w));
    int64_t * shp = calloc((size_t)cap + 1, sizeof(int64_t));
    char (*names)[96] = calloc((size_t)cap + 1, sizeof(*names));
    cJSON * j = cJSON_CreateObject();
    enum sd3q_status st = SD3Q_OK;
    char * text = NULL;
    if (!vp || !w || !shp || !names || !j) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    const char * base = strrchr(vp, '/');
    cJSON_AddStringToObject(j, "format", ACTCFG_FORMAT);
    cJSON_AddNumberToObject(j, "version", ACTCFG_VERSION);
    cJSON_AddStringToObject(j, "kind", c->multitier ? "multitier" : "w4a8");
    cJSON_AddStringToObject(j, "clip", clip_names[c->clip]);
    cJSON_AddNumberToObject(j, "outlier_ratio", c->outlier_ratio);
    cJSON_AddStringToObject(j, "vectors", base ? base + 1 : vp);
    if (c->multitier) {
        cJSON * th = cJSON_AddObjectToObject(j, "thresholds");
        cJSON_AddNumberToObject(th, "a4", c->a4_threshold);
        cJSON_AddNumberToObject(th, "a6", c->a6_threshold);
        cJSON_AddNumberToObject(th, "a4_post_gelu", c->a4_threshold_gelu);
        cJSON_AddNumberToObject(th, "a6_post_gelu", c->a6_threshold_gelu);
    }
    cJSON * groups = cJSON_AddArrayToObject(j, "groups");
    for (int g = 0; g < c->n_groups; g++) {
        cJSON * o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "sigma_hi", c->groups[g].sigma_hi);
        cJSON_AddNumberToObject(o, "sigma_lo", c->groups[g].sigma_lo);
        cJSON_AddNumberToObject(o, "first_step", c->groups[g].first);
        cJSON_AddNumberToObject(o, "last_step", c->groups[g].last);
        cJSON_AddItemToArray(groups, o);
    }
    cJSON * layers = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < c->n_layers; l++) {
        cJSON * o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", c->layers[l].name);
        cJSON_AddNumberToObject(o, "channels", (double)c->layers[l].C);
        cJSON_AddBoolToObject(o, "post_gelu", c->layers[l].post_gelu);
        cJSON * gs = cJSON_AddArrayToObject(o, "groups");
        for (int g = 0; g < c->n_groups; g++) {
            const struct actcfg_entry * en = actcfg_at(c, l, g);
            cJSON * x = cJSON_CreateObject();
            cJSON_AddNumberToObject(x, "bits", en->bits);
            cJSON_AddBoolToObject(x, "symmetric", en->symmetric);
            cJSON_AddNumberToObject(x, "clip_lo", en->clip_lo);
            cJSON_AddNumberToObject(x, "clip_hi", en->clip_hi);
            cJSON_AddNumberToObject(x, "step", en->step);
            cJSON_AddNumberToObject(x, "zero_point", en->zero_point);
            cJSON_AddNumberToObject(x, "outlier_channels", en->n_outliers);
            cJSON_AddItemToArray(gs, x);
            if (en->shift) {
                snprintf(names[n], sizeof names[n], "%s.g%d.shift", c->layers[l].name, g);
                shp[n] = c->layers[l].C;
                w[n] = (struct st_wtensor){names[n], DT_F32, 1, &shp[n], en->shift};
                n++;
            }
            if (en->n_outliers) {
                snprintf(names[n], sizeof names[n], "%s.g%d.factor", c->layers[l].name, g);
                shp[n] = c->layers[l].C;
                w[n] = (struct st_wtensor){names[n], DT_I32, 1, &shp[n], en->factor};
                n++;
            }
        }
        cJSON_AddItemToArray(layers, o);
    }
    const char * meta[] = {"format", ACTCFG_FORMAT};
    if ((st = st_write(vp, w, n, meta, 1, e)) != SD3Q_OK) goto done;
    text = cJSON_Print(j);
    st = text ? write_file_atomic(path, text, strlen(text), e) : err_set(e, SD3Q_ERR_OOM, "out of memory");
done:
    cJSON_Delete(j);
    free(text);
    free(vp);
    free(w);
    free(shp);
    free(names);
    return st;
}

enum sd3q_status actcfg_read(const char * path, struct actcfg * c, struct sd3q_errbuf * e) {
    memset(c, 0, sizeof(*c));
    cJSON * j = NULL;
    struct st_file vf = {0};
    char * vp = NULL;
    enum sd3q_status st = json_load(path, &j, e);
    if (st != SD3Q_OK) return st;
    const char * fmt = json_get_str(j, "format"), * clip = json_get_str(j, "clip"), * kind = json_get_str(j, "kind");
    const char * vecs = json_get_str(j, "vectors");
    int64_t ver = 0;
    if (!fmt || strcmp(fmt, ACTCFG_FORMAT) != 0) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"format\" must be \"%s\"", path, ACTCFG_FORMAT);
        goto done;
    }
    if ((st = json_get_int(j, "version", 0, 0, 0, 1000, &ver, path, e)) != SD3Q_OK) goto done;
    if (ver != ACTCFG_VERSION) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: version %lld, this sd3q reads version %d", path, (long long)ver, ACTCFG_VERSION);
        goto done;
    }
    c->clip = CLIP_ABSMAX;
    for (int i = 0; i < 3; i++)
        if (clip && strcmp(clip, clip_names[i]) == 0) c->clip = (enum act_clip)i;
    c->multitier = kind && strcmp(kind, "multitier") == 0;
    if (!vecs || strchr(vecs, '/') || strcmp(vecs, "..") == 0) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"vectors\" must name a file in the same folder", path);
        goto done;
    }
    const char * slash = strrchr(path, '/');
    if (slash) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
        vp = path_join(dir, vecs);
    } else {
        vp = strdup(vecs);
    }
    if (!vp || (st = st_open(vp, &vf, e)) != SD3Q_OK) {
        if (!vp) st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    const cJSON * groups = cJSON_GetObjectItemCaseSensitive(j, "groups"), * layers = cJSON_GetObjectItemCaseSensitive(j, "layers");
    int ng = cJSON_GetArraySize(groups), nl = cJSON_GetArraySize(layers);
    if (!cJSON_IsArray(groups) || !cJSON_IsArray(layers) || ng < 1 || ng > ACTCFG_MAX_GROUPS || nl < 1 || nl > 100000) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"groups\" (1–%d) and \"layers\" must be non-empty arrays", path, ACTCFG_MAX_GROUPS);
        goto done;
    }
    c->n_groups = ng, c->n_layers = nl, c->outlier_ratio = 2.5;
    for (int g = 0; g < ng; g++) {
        const cJSON * o = cJSON_GetArrayItem(groups, g);
        double hi = 0, lo = 0, f = 0, l = 0;
        char where[300];
        snprintf(where, sizeof where, "%s: groups[%d]", path, g);
        if ((st = json_need_num(o, "sigma_hi", &hi, where, e)) || (st = json_need_num(o, "sigma_lo", &lo, where, e)) ||
            (st = json_need_num(o, "first_step", &f, where, e)) || (st = json_need_num(o, "last_step", &l, where, e)))
            goto done;
        if (lo > hi || (g > 0 && hi > c->groups[g - 1].sigma_lo + 1e-6)) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: σ intervals must be ordered and not overlap (sigma_lo %g, sigma_hi %g)", where, lo, hi);
            goto done;
        }
        c->groups[g] = (struct actcfg_group){(float)hi, (float)lo, (int)f, (int)l};
    }
    c->layers = calloc((size_t)nl, sizeof(*c->layers));
    c->e = calloc((size_t)nl * (size_t)ng, sizeof(*c->e));
    if (!c->layers || !c->e) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (int l = 0; l < nl; l++) {
        const cJSON * o = cJSON_GetArrayItem(layers, l);
        char where[300];
        snprintf(where, sizeof where, "%s: layers[%d]", path, l);
        const char * nm = json_get_str(o, "name");
        int64_t C;
        if (!nm || strlen(nm) >= sizeof c->layers[l].name) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"name\" is missing or too long", where);
            goto done;
        }
        if ((st = json_get_int(o, "channels", 0, 0, 1, 1 << 20, &C, where, e)) != SD3Q_OK) goto done;
        snprintf(c->layers[l].name, sizeof c->layers[l].name, "%s", nm);
        c->layers[l].C = C;
        c->layers[l].post_gelu = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "post_gelu"));
        const cJSON * gs = cJSON_GetObjectItemCaseSensitive(o, "groups");
        if (!cJSON_IsArray(gs) || cJSON_GetArraySize(gs) != ng) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s (%s): \"groups\" must have %d entries", where, nm, ng);
            goto done;
        }
        for (int g = 0; g < ng; g++) {
            const cJSON * x = cJSON_GetArrayItem(gs, g);
            struct actcfg_entry * en = actcfg_at(c, l, g);
            double bits = 0, lo = 0, hi = 0, step = 0, zp = 0;
            if ((st = json_need_num(x, "bits", &bits, where, e)) || (st = json_need_num(x, "clip_lo", &lo, where, e)) ||
                (st = json_need_num(x, "clip_hi", &hi, where, e)) || (st = json_need_num(x, "step", &step, where, e)) ||
                (st = json_need_num(x, "zero_point", &zp, where, e)))
                goto done;
            if ((bits != 4 && bits != 6 && bits != 8) || !(step > 0) || lo > hi || fabs(zp) > 255) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s (%s) group %d: bits must be 4/6/8, step > 0, clip_lo ≤ clip_hi, |zero_point| ≤ 255",
                             where, nm, g);
                goto done;
            }
            en->bits = (int)bits, en->clip_lo = (float)lo, en->clip_hi = (float)hi, en->step = (float)step;
            en->zero_point = (int32_t)zp, en->symmetric = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(x, "symmetric"));
            char tn[128];
            int64_t want[1] = {C};
            snprintf(tn, sizeof tn, "%s.g%d.shift", nm, g);
            if (c->layers[l].post_gelu) {
                if (!(en->shift = st_read_f32(&vf, tn, 1, want, e))) {
                    st = SD3Q_ERR_FORMAT;
                    goto done;
                }
            }
            snprintf(tn, sizeof tn, "%s.g%d.factor", nm, g);
            const struct st_tensor * ft = st_find(&vf, tn);
            en->factor = malloc(sizeof(int32_t) * (size_t)C);
            if (!en->factor) {
                st = err_set(e, SD3Q_ERR_OOM, "out of memory");
                goto done;
            }
            for (int64_t k = 0; k < C; k++) en->factor[k] = 1;
            if (ft) {
                if (ft->type != DT_I32 || ft->ndim != 1 || ft->shape[0] != C) {
                    st = err_set(e, SD3Q_ERR_SHAPE, "%s: tensor '%s' must be I32 [%lld]", vp, tn, (long long)C);
                    goto done;
                }
                memcpy(en->factor, ft->data, sizeof(int32_t) * (size_t)C);
                for (int64_t k = 0; k < C; k++) {
                    if (en->factor[k] < 1 || en->factor[k] > (1 << 20)) {
                        st = err_set(e, SD3Q_ERR_FORMAT, "%s: '%s'[%lld] = %d, expected an integer ≥ 1", vp, tn, (long long)k, en->factor[k]);
                        goto done;
                    }
                    en->n_outliers += en->factor[k] > 1;
                }
            }
        }
    }
done:
    st_close(&vf);
    free(vp);
    cJSON_Delete(j);
    if (st != SD3Q_OK) actcfg_free(c);
    return st;
}

void actcfg_free(struct actcfg * c) {
    if (c->e)
        for (int64_t i = 0; i < (int64_t)c->n_layers * c->n_groups; i++) {
            free(c->e[i].shift);
            free(c->e[i].factor);
        }
    free(c->e);
    free(c->layers);
    memset(c, 0, sizeof(*c));
}
