/*
 * statsfile.c — reading and writing activation statistics (see statsfile.h). JSON through cJSON, vectors through our
 * safetensors writer/reader; every field read back is validated (versions, finite numbers, channel counts).
 */
#include "quant/statsfile.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "io/json.h"
#include "io/safetensors.h"

static const char * const vec_names[] = {"run_min", "run_max", "avg_min", "avg_max", "shift", "hist"};

// Pointer to vector k of a cell (k indexes vec_names).
static float ** cell_vec(struct stats_cell * c, int k) {
    float ** v[] = {&c->run_min, &c->run_max, &c->avg_min, &c->avg_max, &c->shift, &c->hist};
    return v[k];
}

enum sd3q_status stats_cell_from_acc(struct stats_cell * c, const struct act_stats * a, const float * shift, struct sd3q_errbuf * e) {
    memset(c, 0, sizeof(*c));
    c->n_batches = a->n_batches;
    c->n_values  = a->n_values;
    c->absmax    = a->absmax;
    c->mean      = act_stats_mean(a);
    c->std       = act_stats_std(a);
    c->p99       = act_stats_abs_quantile(a, 0.99);
    c->p999      = act_stats_abs_quantile(a, 0.999);
    c->p9999     = act_stats_abs_quantile(a, 0.9999);
    c->hist_lo   = a->hist_lo;
    c->hist_w    = a->hist_w;
    size_t n = (size_t)a->C;
    c->run_min = malloc(sizeof(float) * n);
    c->run_max = malloc(sizeof(float) * n);
    c->avg_min = malloc(sizeof(float) * n);
    c->avg_max = malloc(sizeof(float) * n);
    c->hist    = malloc(sizeof(float) * ACT_HIST_BINS);
    if (shift) c->shift = malloc(sizeof(float) * n);
    if (!c->run_min || !c->run_max || !c->avg_min || !c->avg_max || !c->hist || (shift && !c->shift))
        return err_set(e, SD3Q_ERR_OOM, "out of memory for statistics");
    double mn = INFINITY, mx = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        c->run_min[i] = a->run_min[i];
        c->run_max[i] = a->run_max[i];
        c->avg_min[i] = (float)act_stats_avg_min(a, (int64_t)i);
        c->avg_max[i] = (float)act_stats_avg_max(a, (int64_t)i);
        if (shift) c->shift[i] = shift[i];
        mn = fmin(mn, a->run_min[i]);
        mx = fmax(mx, a->run_max[i]);
    }
    c->min = mn;
    c->max = mx;
    for (int i = 0; i < ACT_HIST_BINS; i++) c->hist[i] = (float)a->hist[i];
    return SD3Q_OK;
}

// File name of a step's vectors.
static void step_file(const struct stats_step * st, char * buf, size_t n) { snprintf(buf, n, "step_%03d.safetensors", st->index); }

enum sd3q_status stats_write_step(const struct stats_table * t, int s, const char * dir, struct sd3q_errbuf * e) {
    int cap = t->n_layers * 6, n = 0;
    struct st_wtensor * w = calloc((size_t)cap, sizeof(*w));
    int64_t * shapes = calloc((size_t)cap, sizeof(int64_t));
    char (*names)[96] = calloc((size_t)cap, sizeof(*names));
    enum sd3q_status st = SD3Q_OK;
    if (!w || !shapes || !names) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (int l = 0; l < t->n_layers; l++) {
        struct stats_cell * c = stats_at(t, s, l);
        if (!c->n_batches) continue;
        for (int k = 0; k < 6; k++) {
            float * v = *cell_vec(c, k);
            if (!v) continue;
            snprintf(names[n], sizeof names[n], "%s.%s", t->layers[l].name, vec_names[k]);
            shapes[n] = k == 5 ? ACT_HIST_BINS : t->layers[l].C;
            w[n] = (struct st_wtensor){names[n], DT_F32, 1, &shapes[n], v};
            n++;
        }
    }
    char fn[64];
    step_file(&t->steps[s], fn, sizeof fn);
    char * path = path_join(dir, fn);
    if (!path) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    const char * meta[] = {"format", STATS_FORMAT};
    st = st_write(path, w, n, meta, 1, e);
    free(path);
done:
    free(w);
    free(shapes);
    free(names);
    return st;
}

enum sd3q_status stats_write_index(const struct stats_table * t, const char * dir, struct sd3q_errbuf * e) {
    cJSON * j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", STATS_FORMAT);
    cJSON_AddNumberToObject(j, "version", STATS_VERSION);
    cJSON_AddStringToObject(j, "model", t->model);
    cJSON_AddNumberToObject(j, "calib_steps", t->calib_steps);
    cJSON_AddNumberToObject(j, "calib_images", t->calib_images);
    cJSON_AddNumberToObject(j, "hist_bins", ACT_HIST_BINS);
    cJSON_AddNumberToObject(j, "shift_momentum", 0.95);
    cJSON * layers = cJSON_AddArrayToObject(j, "layers");
    for (int l = 0; l < t->n_layers; l++) {
        cJSON * o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->layers[l].name);
        cJSON_AddNumberToObject(o, "channels", (double)t->layers[l].C);
        cJSON_AddBoolToObject(o, "post_gelu", t->layers[l].post_gelu);
        cJSON_AddItemToArray(layers, o);
    }
    cJSON * steps = cJSON_AddArrayToObject(j, "steps");
    for (int s = 0; s < t->n_steps; s++) {
        int any = 0;
        for (int l = 0; l < t->n_layers && !any; l++) any = stats_at(t, s, l)->n_batches > 0;
        if (!any) continue;
        cJSON * o = cJSON_CreateObject();
        char fn[64];
        step_file(&t->steps[s], fn, sizeof fn);
        cJSON_AddNumberToObject(o, "index", t->steps[s].index);
        cJSON_AddNumberToObject(o, "sigma", t->steps[s].sigma);
        cJSON_AddNumberToObject(o, "timestep", t->steps[s].timestep);
        cJSON_AddStringToObject(o, "file", fn);
        cJSON * cells = cJSON_AddObjectToObject(o, "cells");
        for (int l = 0; l < t->n_layers; l++) {
            const struct stats_cell * c = stats_at(t, s, l);
            if (!c->n_batches) continue;
            cJSON * x = cJSON_AddObjectToObject(cells, t->layers[l].name);
            const char * k[] = {"absmax", "min", "max", "mean", "std", "p99", "p999", "p9999", "hist_lo", "hist_w"};
            double v[] = {c->absmax, c->min, c->max, c->mean, c->std, c->p99, c->p999, c->p9999, c->hist_lo, c->hist_w};
            cJSON_AddNumberToObject(x, "n_batches", (double)c->n_batches);
            cJSON_AddNumberToObject(x, "n_values", (double)c->n_values);
            for (int i = 0; i < 10; i++) cJSON_AddNumberToObject(x, k[i], v[i]);
        }
        cJSON_AddItemToArray(steps, o);
    }
    char * text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    char * path = path_join(dir, "stats.json");
    enum sd3q_status st = path ? write_file_atomic(path, text, strlen(text), e) : err_set(e, SD3Q_ERR_OOM, "out of memory");
    free(path);
    free(text);
    return st;
}

enum sd3q_status stats_read(const char * dir, struct stats_table * t, struct sd3q_errbuf * e) {
    memset(t, 0, sizeof(*t));
    char * path = path_join(dir, "stats.json");
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    cJSON * j = NULL;
    enum sd3q_status st = json_load(path, &j, e);
    if (st != SD3Q_OK) goto done;
    const char * fmt = json_get_str(j, "format");
    int64_t ver = 0, cs = 0, ci = 0;
    if (!fmt || strcmp(fmt, STATS_FORMAT) != 0) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"format\" is %s%s%s, expected \"%s\"", path, fmt ? "\"" : "", fmt ? fmt : "missing",
                     fmt ? "\"" : "", STATS_FORMAT);
        goto done;
    }
    if ((st = json_get_int(j, "version", 0, 0, 0, 1000, &ver, path, e)) != SD3Q_OK) goto done;
    if (ver != STATS_VERSION) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: version %lld, this sd3q reads version %d", path, (long long)ver, STATS_VERSION);
        goto done;
    }
    if ((st = json_get_int(j, "calib_steps", 1, 0, 0, 100000, &cs, path, e)) != SD3Q_OK ||
        (st = json_get_int(j, "calib_images", 1, 0, 0, 100000000, &ci, path, e)) != SD3Q_OK)
        goto done;
    t->calib_steps = (int)cs, t->calib_images = (int)ci;
    snprintf(t->model, sizeof t->model, "%s", json_get_str(j, "model") ? json_get_str(j, "model") : "");
    const cJSON * layers = cJSON_GetObjectItemCaseSensitive(j, "layers"), * steps = cJSON_GetObjectItemCaseSensitive(j, "steps");
    if (!cJSON_IsArray(layers) || !cJSON_IsArray(steps) || cJSON_GetArraySize(layers) < 1 || cJSON_GetArraySize(layers) > 100000 ||
        cJSON_GetArraySize(steps) > 100000) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"layers\" and \"steps\" must be non-empty arrays", path);
        goto done;
    }
    t->n_layers = cJSON_GetArraySize(layers);
    t->n_steps  = cJSON_GetArraySize(steps);
    t->layers   = calloc((size_t)t->n_layers, sizeof(*t->layers));
    t->steps    = calloc((size_t)(t->n_steps ? t->n_steps : 1), sizeof(*t->steps));
    t->cells    = calloc((size_t)t->n_layers * (size_t)(t->n_steps ? t->n_steps : 1), sizeof(*t->cells));
    if (!t->layers || !t->steps || !t->cells) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    int l = 0;
    const cJSON * it;
    cJSON_ArrayForEach(it, layers) {
        const char * nm = json_get_str(it, "name");
        int64_t C;
        if (!nm || strlen(nm) >= sizeof t->layers[l].name || strchr(nm, '/')) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: layers[%d].name is missing or invalid", path, l);
            goto done;
        }
        if ((st = json_get_int(it, "channels", 0, 0, 1, 1 << 20, &C, path, e)) != SD3Q_OK) goto done;
        snprintf(t->layers[l].name, sizeof t->layers[l].name, "%s", nm);
        t->layers[l].C = C;
        t->layers[l].post_gelu = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "post_gelu"));
        l++;
    }
    int s = 0;
    cJSON_ArrayForEach(it, steps) {
        char where[256];
        snprintf(where, sizeof where, "%s: steps[%d]", path, s);
        double idx, sig, ts;
        if ((st = json_need_num(it, "index", &idx, where, e)) || (st = json_need_num(it, "sigma", &sig, where, e)) || (st = json_need_num(it, "timestep", &ts, where, e)))
            goto done;
        if (idx < 0 || idx > 100000 || idx != floor(idx) || sig < 0 || sig > 1.5) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: index %g / sigma %g out of range", where, idx, sig);
            goto done;
        }
        if (s > 0 && sig > t->steps[s - 1].sigma) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: steps must be in sampling order (σ descending): %g after %g", where, sig, t->steps[s - 1].sigma);
            goto done;
        }
        t->steps[s] = (struct stats_step){(int)idx, (float)sig, (float)ts};
        char fn[64], expect[64];
        step_file(&t->steps[s], expect, sizeof expect);
        const char * f = json_get_str(it, "file");
        if (!f || strcmp(f, expect) != 0) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"file\" must be \"%s\" (a relative name)", where, expect);
            goto done;
        }
        snprintf(fn, sizeof fn, "%s", f);
        char * vp = path_join(dir, fn);
        struct st_file vf;
        if (!vp) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
        st = st_open(vp, &vf, e);
        free(vp);
        if (st != SD3Q_OK) goto done;
        const cJSON * cells = cJSON_GetObjectItemCaseSensitive(it, "cells");
        for (int li = 0; li < t->n_layers && st == SD3Q_OK; li++) {
            const cJSON * x = cJSON_GetObjectItemCaseSensitive(cells, t->layers[li].name);
            if (!x) continue;
            struct stats_cell * c = stats_at(t, s, li);
            double v[12];
            const char * k[] = {"n_batches", "n_values", "absmax", "min", "max", "mean", "std", "p99", "p999", "p9999", "hist_lo", "hist_w"};
            char w2[400];
            snprintf(w2, sizeof w2, "%s.cells.%s", where, t->layers[li].name);
            for (int q = 0; q < 12 && st == SD3Q_OK; q++) st = json_need_num(x, k[q], &v[q], w2, e);
            if (st != SD3Q_OK) break;
            if (v[0] < 1 || v[1] < 1 || v[11] <= 0) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: counts and hist_w must be positive", w2);
                break;
            }
            c->n_batches = (int64_t)v[0], c->n_values = (int64_t)v[1], c->absmax = v[2], c->min = v[3], c->max = v[4];
            c->mean = v[5], c->std = v[6], c->p99 = v[7], c->p999 = v[8], c->p9999 = v[9], c->hist_lo = v[10], c->hist_w = v[11];
            for (int q = 0; q < 6 && st == SD3Q_OK; q++) {
                char tn[128];
                snprintf(tn, sizeof tn, "%s.%s", t->layers[li].name, vec_names[q]);
                if (q == 4 && !t->layers[li].post_gelu) continue;
                int64_t want[1] = {q == 5 ? ACT_HIST_BINS : t->layers[li].C};
                float * vec = st_read_f32(&vf, tn, 1, want, e);
                if (!vec) st = SD3Q_ERR_FORMAT;  // st_read_f32 described it
                *cell_vec(c, q) = vec;
            }
        }
        st_close(&vf);
        if (st != SD3Q_OK) goto done;
        s++;
    }
done:
    cJSON_Delete(j);
    free(path);
    if (st != SD3Q_OK) stats_free(t);
    return st;
}

void stats_free(struct stats_table * t) {
    if (t->cells)
        for (int64_t i = 0; i < (int64_t)t->n_steps * t->n_layers; i++)
            for (int k = 0; k < 6; k++) free(*cell_vec(&t->cells[i], k));
    free(t->cells);
    free(t->layers);
    free(t->steps);
    memset(t, 0, sizeof(*t));
}
