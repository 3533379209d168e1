/*
 * json.c — see json.h.
 */
#include "io/json.h"

#include <math.h>
#include <stdlib.h>

#include "io/fileutil.h"

enum sd3q_status json_load(const char * path, cJSON ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    char * buf;
    size_t n;
    TRY(read_file(path, JSON_MAX_FILE, &buf, &n, e));
    const char * end = NULL;
    cJSON * j = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    if (!j) {
        long off = end ? (long)(end - buf) : -1;
        free(buf);
        return err_set(e, SD3Q_ERR_FORMAT, "%s: invalid JSON near byte %ld", path, off);
    }
    free(buf);
    *out = j;
    return SD3Q_OK;
}

enum sd3q_status json_get_int(const cJSON * o, const char * key, int def_ok, int64_t def, int64_t lo, int64_t hi,
                              int64_t * v, const char * path, struct sd3q_errbuf * e) {
    const cJSON * it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) {
        if (!def_ok) return err_set(e, SD3Q_ERR_FORMAT, "%s: field \"%s\" is missing", path, key);
        *v = def;
        return SD3Q_OK;
    }
    double d = cJSON_IsNumber(it) ? it->valuedouble : NAN;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: field \"%s\" must be an integer in [%lld, %lld]", path, key, (long long)lo,
                       (long long)hi);
    *v = (int64_t)d;
    return SD3Q_OK;
}

enum sd3q_status json_get_num(const cJSON * o, const char * key, double def, double * v, const char * path,
                              struct sd3q_errbuf * e) {
    const cJSON * it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!it || cJSON_IsNull(it)) {
        *v = def;
        return SD3Q_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: field \"%s\" must be a finite number", path, key);
    *v = it->valuedouble;
    return SD3Q_OK;
}

enum sd3q_status json_need_num(const cJSON * o, const char * key, double * v, const char * where, struct sd3q_errbuf * e) {
    const cJSON * it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: field \"%s\" is missing or not a finite number", where, key);
    *v = it->valuedouble;
    return SD3Q_OK;
}

const char * json_get_str(const cJSON * o, const char * key) {
    const cJSON * it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}
