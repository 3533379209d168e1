/*
 * calibfile.c — the calibration manifest (see calibfile.h): written atomically, read back with every field checked.
 */
#include "quant/calibfile.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "io/json.h"
#include "io/safetensors.h"

void calib_prompt_file(int id, char * buf, size_t n) { snprintf(buf, n, "prompts/p%04d.safetensors", id); }
void calib_latents_file(int id, char * buf, size_t n) { snprintf(buf, n, "latents/%04d.safetensors", id); }
void calib_image_file(int id, char * buf, size_t n) { snprintf(buf, n, "images/%04d.png", id); }

enum sd3q_status calib_write(const char * dir, const struct calib_manifest * m, struct sd3q_errbuf * e) {
    cJSON * j = cJSON_CreateObject();
    if (!j) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    cJSON_AddStringToObject(j, "format", CALIB_FORMAT);
    cJSON_AddNumberToObject(j, "version", CALIB_VERSION);
    const struct calib_settings * s = &m->set;
    cJSON * o = cJSON_AddObjectToObject(j, "settings");
    cJSON_AddStringToObject(o, "model", s->model);
    cJSON_AddStringToObject(o, "prompts_file", s->prompts_file);
    cJSON_AddStringToObject(o, "negative_prompt", s->negative);
    cJSON_AddNumberToObject(o, "steps", s->steps);
    cJSON_AddNumberToObject(o, "cfg", s->cfg);
    cJSON_AddNumberToObject(o, "shift", s->shift);
    cJSON_AddNumberToObject(o, "width", s->width);
    cJSON_AddNumberToObject(o, "height", s->height);
    cJSON_AddNumberToObject(o, "t5_max_length", s->t5_max_length);
    cJSON_AddNumberToObject(o, "num_images", s->num_images);
    cJSON_AddNumberToObject(o, "latent_channels", s->latent_channels);
    cJSON_AddNumberToObject(o, "seed", (double)s->seed);
    cJSON_AddStringToObject(j, "negative_file", "prompts/negative.safetensors");
    cJSON * ps = cJSON_AddArrayToObject(j, "prompts");
    for (int i = 0; i < m->n_prompts; i++) {
        cJSON * p = cJSON_CreateObject();
        char fn[64];
        calib_prompt_file(i, fn, sizeof fn);
        cJSON_AddNumberToObject(p, "id", i);
        cJSON_AddStringToObject(p, "text", m->prompts[i].text);
        cJSON_AddStringToObject(p, "file", fn);
        cJSON_AddItemToArray(ps, p);
    }
    cJSON * is = cJSON_AddArrayToObject(j, "images");
    for (int i = 0; i < m->n_images; i++) {
        cJSON * p = cJSON_CreateObject();
        char fl[64], fi[64];
        calib_latents_file(i, fl, sizeof fl);
        calib_image_file(i, fi, sizeof fi);
        cJSON_AddNumberToObject(p, "id", m->images[i].id);
        cJSON_AddNumberToObject(p, "prompt", m->images[i].prompt);
        cJSON_AddNumberToObject(p, "seed", (double)m->images[i].seed);
        cJSON_AddStringToObject(p, "latents", fl);
        cJSON_AddStringToObject(p, "image", fi);
        cJSON_AddItemToArray(is, p);
    }
    cJSON_AddNumberToObject(j, "n_completed", m->n_images);
    char * text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    char * path = path_join(dir, "manifest.json");
    enum sd3q_status st = path ? write_file_atomic(path, text, strlen(text), e) : err_set(e, SD3Q_ERR_OOM, "out of memory");
    free(path);
    free(text);
    return st;
}

// Copies a string field into a fixed buffer; missing or too long is an error naming the field.
static enum sd3q_status get_strf(const cJSON * o, const char * k, char * buf, size_t n, const char * where, struct sd3q_errbuf * e) {
    const char * v = json_get_str(o, k);
    if (!v || strlen(v) >= n) return err_set(e, SD3Q_ERR_FORMAT, "%s: \"%s\" is missing, not a string or too long", where, k);
    snprintf(buf, n, "%s", v);
    return SD3Q_OK;
}

enum sd3q_status calib_read(const char * dir, struct calib_manifest * m, struct sd3q_errbuf * e) {
    memset(m, 0, sizeof(*m));
    char * path = path_join(dir, "manifest.json");
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    cJSON * j = NULL;
    enum sd3q_status st = json_load(path, &j, e);
    if (st != SD3Q_OK) goto done;
    const char * fmt = json_get_str(j, "format");
    int64_t v, steps, w, h, t5, n, ch, seed;
    double cfg, shift;
    if (!fmt || strcmp(fmt, CALIB_FORMAT) != 0) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"format\" must be \"%s\"", path, CALIB_FORMAT);
        goto done;
    }
    if ((st = json_get_int(j, "version", 0, 0, 0, 1000, &v, path, e))) goto done;
    if (v != CALIB_VERSION) {
        st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: version %lld, this sd3q reads version %d", path, (long long)v, CALIB_VERSION);
        goto done;
    }
    const cJSON * s = cJSON_GetObjectItemCaseSensitive(j, "settings");
    if (!cJSON_IsObject(s)) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"settings\" is missing", path);
        goto done;
    }
    if ((st = get_strf(s, "model", m->set.model, sizeof m->set.model, path, e)) ||
        (st = get_strf(s, "prompts_file", m->set.prompts_file, sizeof m->set.prompts_file, path, e)) ||
        (st = get_strf(s, "negative_prompt", m->set.negative, sizeof m->set.negative, path, e)) ||
        (st = json_get_int(s, "steps", 0, 0, 1, 10000, &steps, path, e)) || (st = json_get_int(s, "width", 0, 0, 16, 16384, &w, path, e)) ||
        (st = json_get_int(s, "height", 0, 0, 16, 16384, &h, path, e)) ||
        (st = json_get_int(s, "t5_max_length", 0, 0, 1, 4096, &t5, path, e)) ||
        (st = json_get_int(s, "num_images", 0, 0, 1, 10000000, &n, path, e)) ||
        (st = json_get_int(s, "latent_channels", 0, 0, 1, 4096, &ch, path, e)) ||
        (st = json_get_int(s, "seed", 0, 0, 0, 9007199254740991LL, &seed, path, e)) ||
        (st = json_get_num(s, "cfg", -1, &cfg, path, e)) || (st = json_get_num(s, "shift", -1, &shift, path, e)))
        goto done;
    if (cfg < 0 || shift <= 0) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: settings.cfg and settings.shift are required (cfg ≥ 0, shift > 0)", path);
        goto done;
    }
    m->set.steps = (int)steps, m->set.width = (int)w, m->set.height = (int)h, m->set.t5_max_length = (int)t5;
    m->set.num_images = (int)n, m->set.latent_channels = (int)ch, m->set.seed = seed, m->set.cfg = cfg, m->set.shift = shift;
    const cJSON * ps = cJSON_GetObjectItemCaseSensitive(j, "prompts"), * is = cJSON_GetObjectItemCaseSensitive(j, "images");
    if (!cJSON_IsArray(ps) || !cJSON_IsArray(is) || cJSON_GetArraySize(ps) < 1) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"prompts\" (non-empty) and \"images\" must be arrays", path);
        goto done;
    }
    m->n_prompts = cJSON_GetArraySize(ps);
    m->prompts = calloc((size_t)m->n_prompts, sizeof(*m->prompts));
    m->images = calloc((size_t)cJSON_GetArraySize(is) + 1, sizeof(*m->images));
    if (!m->prompts || !m->images) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (int i = 0; i < m->n_prompts; i++) {
        const cJSON * p = cJSON_GetArrayItem(ps, i);
        const char * t = json_get_str(p, "text");
        int64_t id;
        if ((st = json_get_int(p, "id", 0, 0, 0, 100000000, &id, path, e))) goto done;
        if (!t || id != i) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: prompts[%d] needs \"text\" and \"id\": %d", path, i, i);
            goto done;
        }
        m->prompts[i].id = i;
        if (!(m->prompts[i].text = strdup(t))) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
    }
    int ni = cJSON_GetArraySize(is);
    for (int i = 0; i < ni; i++) {
        const cJSON * p = cJSON_GetArrayItem(is, i);
        int64_t id, pr, sd;
        if ((st = json_get_int(p, "id", 0, 0, 0, 100000000, &id, path, e)) || (st = json_get_int(p, "prompt", 0, 0, 0, m->n_prompts - 1, &pr, path, e)) ||
            (st = json_get_int(p, "seed", 0, 0, 0, 9007199254740991LL, &sd, path, e)))
            goto done;
        if (id != i) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: images[%d].id is %lld, expected %d (images are stored in order)", path, i, (long long)id, i);
            goto done;
        }
        m->images[i] = (struct calib_image){(int)id, (int)pr, sd};
    }
    m->n_images = ni;
done:
    cJSON_Delete(j);
    free(path);
    if (st != SD3Q_OK) calib_free(m);
    return st;
}

void calib_free(struct calib_manifest * m) {
    for (int i = 0; i < m->n_prompts && m->prompts; i++) free(m->prompts[i].text);
    free(m->prompts);
    free(m->images);
    memset(m, 0, sizeof(*m));
}

enum sd3q_status calib_write_embeds(const char * dir, const char * rel, const float * ctx, int64_t L, int64_t D, const float * pooled,
                                    int64_t P, struct sd3q_errbuf * e) {
    char * path = path_join(dir, rel);
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    int64_t cs[3] = {1, L, D}, ps[2] = {1, P};
    struct st_wtensor t[2] = {{"context", DT_F32, 3, cs, ctx}, {"pooled", DT_F32, 2, ps, pooled}};
    enum sd3q_status st = st_write(path, t, 2, NULL, 0, e);
    free(path);
    return st;
}

enum sd3q_status calib_read_embeds(const char * dir, const char * rel, int64_t L, int64_t D, int64_t P, float ** ctx, float ** pooled,
                                   struct sd3q_errbuf * e) {
    *ctx = *pooled = NULL;
    char * path = path_join(dir, rel);
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    struct st_file f;
    enum sd3q_status st = st_open(path, &f, e);
    free(path);
    if (st != SD3Q_OK) return st;
    int64_t cs[3] = {1, L, D}, ps[2] = {1, P};
    *ctx = st_read_f32(&f, "context", 3, cs, e);
    *pooled = *ctx ? st_read_f32(&f, "pooled", 2, ps, e) : NULL;
    st_close(&f);
    if (*ctx && *pooled) return SD3Q_OK;
    free(*ctx);
    *ctx = NULL;
    return SD3Q_ERR_FORMAT;  // st_read_f32 described it
}
