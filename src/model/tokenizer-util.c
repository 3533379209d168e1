/*
 * tokenizer-util.c — helpers shared by the two tokenizers: an interned-string hash table, a growable code-point
 * buffer, UTF-8 decoding with replacement and gzip inflation from memory.
 *
 * The UTF-8 decoder follows CPython's decode("utf-8", "replace"): a maximal invalid subsequence (a lead byte and
 * the continuation bytes that were valid so far) becomes one U+FFFD, and decoding resumes at the offending byte.
 * Also the reading of special tokens from tokenizer_config.json / special_tokens_map.json, shared by both.
 * Nothing here knows about vocabularies; see tokenizer-bpe.c and tokenizer-unigram.c.
 */
#include "model/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>
#include <zlib.h>

#include "core/checked.h"
#include "io/fileutil.h"

// FNV-1a over the bytes; good enough for vocabulary strings and cheap.
static uint32_t hash_bytes(const char * s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}

int32_t tok_strtab_find(const struct tok_strtab * st, const char * s, size_t n) {
    if (st->nslots == 0) return -1;
    uint32_t mask = st->nslots - 1;
    for (uint32_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t id = st->slots[i];
        if (id < 0) return -1;
        if (st->len[id] == n && memcmp(st->bytes + st->off[id], s, n) == 0) return id;
    }
}

// Rebuilds the slot array with twice the slots (load factor stays under one half).
static int strtab_grow_slots(struct tok_strtab * st) {
    uint32_t nslots = st->nslots ? st->nslots * 2 : 1024;
    if (nslots < st->nslots) return -1;
    int32_t * slots = malloc((size_t)nslots * sizeof(*slots));
    if (!slots) return -1;
    memset(slots, 0xff, (size_t)nslots * sizeof(*slots));
    for (int32_t id = 0; id < st->count; id++) {
        uint32_t i = hash_bytes(st->bytes + st->off[id], st->len[id]) & (nslots - 1);
        while (slots[i] >= 0) i = (i + 1) & (nslots - 1);
        slots[i] = id;
    }
    free(st->slots);
    st->slots  = slots;
    st->nslots = nslots;
    return 0;
}

enum sd3q_status tok_strtab_intern(struct tok_strtab * st, const char * s, size_t n, int32_t * id,
                                   struct sd3q_errbuf * e) {
    int32_t found = tok_strtab_find(st, s, n);
    if (found >= 0) {
        *id = found;
        return SD3Q_OK;
    }
    size_t need;
    if (!ck_add_size(st->bytes_n, n, &need) || !ck_add_size(need, 1, &need) || need > UINT32_MAX ||
        st->count >= INT32_MAX / 2)
        return err_set(e, SD3Q_ERR_FORMAT, "string table: more than 4 GiB of strings or 2^30 strings");
    if (need > st->bytes_cap) {
        size_t cap = st->bytes_cap ? st->bytes_cap : 4096;
        while (cap < need) cap *= 2;
        char * p = realloc(st->bytes, cap);
        if (!p) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        st->bytes     = p;
        st->bytes_cap = cap;
    }
    if (st->count == st->cap) {
        int32_t    cap = st->cap ? st->cap * 2 : 1024;
        uint32_t * off = realloc(st->off, (size_t)cap * sizeof(*off));
        if (!off) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        st->off        = off;
        uint32_t * len = realloc(st->len, (size_t)cap * sizeof(*len));
        if (!len) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        st->len = len;
        st->cap = cap;
    }
    if ((size_t)(st->count + 1) * 2 > st->nslots && strtab_grow_slots(st) != 0)
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if (n) memcpy(st->bytes + st->bytes_n, s, n);
    st->bytes[st->bytes_n + n] = '\0';
    int32_t nid     = st->count++;
    st->off[nid]    = (uint32_t)st->bytes_n;
    st->len[nid]    = (uint32_t)n;
    st->bytes_n     = need;
    uint32_t mask   = st->nslots - 1;
    uint32_t i      = hash_bytes(s, n) & mask;
    while (st->slots[i] >= 0) i = (i + 1) & mask;
    st->slots[i] = nid;
    *id          = nid;
    return SD3Q_OK;
}

void tok_strtab_free(struct tok_strtab * st) {
    free(st->bytes);
    free(st->off);
    free(st->len);
    free(st->slots);
    memset(st, 0, sizeof(*st));
}

int tok_cps_reserve(struct tok_cps * b, size_t need) {
    if (need <= b->cap && b->p) return 0;  // always allocated, so that callers may memcpy zero code points
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 8) return -1;
        cap *= 2;
    }
    uint32_t * p = realloc(b->p, cap * sizeof(*p));
    if (!p) return -1;
    b->p   = p;
    b->cap = cap;
    return 0;
}

int tok_utf8_decode(const char * s, size_t n, struct tok_cps * b) {
    b->n = 0;
    if (tok_cps_reserve(b, n + 1) != 0) return -1;
    const uint8_t * u = (const uint8_t *)s;
    size_t          i = 0;
    while (i < n) {
        uint8_t c = u[i];
        if (c < 0x80) {
            b->p[b->n++] = c;
            i++;
            continue;
        }
        // Lead byte: how many continuation bytes, and the range allowed for the first one (no overlongs,
        // no surrogates, nothing above U+10FFFF).
        int      need = 0;
        uint8_t  lo = 0x80, hi = 0xBF;
        uint32_t cp = 0;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp   = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp   = c & 0x0F;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp   = c & 0x07;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else {
            b->p[b->n++] = 0xFFFD;
            i++;
            continue;
        }
        size_t j = i + 1;
        int    k = 0;
        for (; k < need && j < n; k++, j++) {
            uint8_t x = u[j];
            if (x < (k == 0 ? lo : 0x80) || x > (k == 0 ? hi : 0xBF)) break;
            cp = (cp << 6) | (x & 0x3F);
        }
        b->p[b->n++] = k == need ? cp : 0xFFFD;
        i            = j;
    }
    return 0;
}

int tok_utf8_put(uint32_t cp, char * out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

enum sd3q_status tok_gunzip(const void * data, size_t n, size_t cap, const char * name, char ** out, size_t * out_n,
                            struct sd3q_errbuf * e) {
    *out   = NULL;
    *out_n = 0;
    if (n > UINT32_MAX) return err_set(e, SD3Q_ERR_FORMAT, "%s: compressed file larger than 4 GiB", name);
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    // 15 + 32: zlib detects the gzip header itself.
    if (inflateInit2(&zs, 15 + 32) != Z_OK) return err_set(e, SD3Q_ERR_OOM, "%s: inflateInit failed", name);
    size_t size = 0, bufcap = n * 4 + 1024;
    if (bufcap > cap + 1) bufcap = cap + 1;
    char * buf = malloc(bufcap);
    if (!buf) {
        inflateEnd(&zs);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    zs.next_in  = (Bytef *)data;
    zs.avail_in = (uInt)n;
    int zr      = Z_OK;
    while (zr != Z_STREAM_END) {
        if (size + 1 >= bufcap) {
            if (bufcap >= cap + 1) {
                free(buf);
                inflateEnd(&zs);
                return err_set(e, SD3Q_ERR_FORMAT, "%s: decompressed size exceeds the cap of %zu bytes", name, cap);
            }
            size_t ncap = bufcap * 2 > cap + 1 ? cap + 1 : bufcap * 2;
            char * p    = realloc(buf, ncap);
            if (!p) {
                free(buf);
                inflateEnd(&zs);
                return err_set(e, SD3Q_ERR_OOM, "out of memory");
            }
            buf    = p;
            bufcap = ncap;
        }
        size_t room   = bufcap - 1 - size;
        zs.next_out   = (Bytef *)buf + size;
        zs.avail_out  = room > UINT32_MAX ? UINT32_MAX : (uInt)room;
        uInt before   = zs.avail_out;
        zr            = inflate(&zs, Z_NO_FLUSH);
        size         += before - zs.avail_out;
        if (zr == Z_STREAM_END) break;
        if (zr == Z_BUF_ERROR && zs.avail_in == 0) zr = Z_DATA_ERROR;  // input ended mid-stream
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            const char * why = zs.msg ? zs.msg : (zr == Z_DATA_ERROR ? "truncated or corrupt data" : "error");
            free(buf);
            inflateEnd(&zs);
            return err_set(e, SD3Q_ERR_FORMAT, "%s: gzip data is corrupt: %s (zlib code %d)", name, why, zr);
        }
    }
    inflateEnd(&zs);
    buf[size] = '\0';
    *out      = buf;
    *out_n    = size;
    return SD3Q_OK;
}

enum sd3q_status tok_json_parse(const struct tok_text * f, struct cJSON ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    if (!f->data) return SD3Q_OK;
    const char * end  = NULL;
    cJSON *      root = cJSON_ParseWithLengthOpts(f->data, f->n, &end, 0);
    if (!root) {
        size_t at = end && end >= f->data && end <= f->data + f->n ? (size_t)(end - f->data) : 0;
        return err_set(e, SD3Q_ERR_FORMAT, "%s: not valid JSON (parsing stopped at byte %zu of %zu)", f->name, at,
                       f->n);
    }
    *out = root;
    return SD3Q_OK;
}

const char * tok_json_type(const struct cJSON * v) {
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "an invalid value";
}

// One file's setting for `key`: 1 = found (string in *s, or null), 0 = absent.
static enum sd3q_status json_token_one(const cJSON * root, const char * name, const char * key, const char ** s,
                                       int * is_null, int * found, struct sd3q_errbuf * e) {
    *found = 0;
    if (!root) return SD3Q_OK;
    if (!cJSON_IsObject(root)) return err_set(e, SD3Q_ERR_FORMAT, "%s: expected a JSON object, got %s", name,
                                              tok_json_type(root));
    const cJSON * v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v) return SD3Q_OK;
    *found   = 1;
    *is_null = 0;
    if (cJSON_IsNull(v)) {
        *is_null = 1;
        *s       = NULL;
        return SD3Q_OK;
    }
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: expected a string or an object with a \"content\" string, got %s",
                       name, key, v ? tok_json_type(v) : "an object without \"content\"");
    *s = v->valuestring;
    return SD3Q_OK;
}

enum sd3q_status tok_json_token(const struct cJSON * cfg, const char * cfg_name, const struct cJSON * spec,
                                const char * spec_name, const char * key, char ** out, int * is_null,
                                struct sd3q_errbuf * e) {
    *out           = NULL;
    *is_null       = 0;
    const char * s = NULL;
    int          found, null_a = 0, null_b = 0, found_any = 0;
    TRY(json_token_one(cfg, cfg_name, key, &s, &null_a, &found, e));
    found_any |= found;
    const char * s2 = NULL;
    TRY(json_token_one(spec, spec_name, key, &s2, &null_b, &found, e));
    if (found) {
        s      = s2;
        null_a = null_b;
    }
    found_any |= found;
    if (!found_any) return SD3Q_OK;
    if (null_a || !s) {
        *is_null = 1;
        return SD3Q_OK;
    }
    *out = strdup(s);
    if (!*out) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    return SD3Q_OK;
}

enum sd3q_status tok_read_in(const char * dir, const char * name, size_t cap, int required, struct tok_text * f,
                             struct sd3q_errbuf * e) {
    char * path = name ? path_join(dir, name) : strdup(dir);
    if (!path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if (!path_is_file(path)) {
        enum sd3q_status st = required ? err_set(e, SD3Q_ERR_MISSING, "%s: no such file", path) : SD3Q_OK;
        free(path);
        return st;
    }
    char *           buf = NULL;
    size_t           n   = 0;
    enum sd3q_status st  = read_file(path, cap, &buf, &n, e);
    if (st != SD3Q_OK) {
        free(path);
        return st;
    }
    *f = (struct tok_text){buf, n, path};
    return SD3Q_OK;
}

int tok_json_model_is(const struct tok_text * f, const char * type) {
    cJSON * root = cJSON_ParseWithLength(f->data, f->n);
    if (!root) return 1;  // let the real parser report the error
    const cJSON * t  = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "model"), "type");
    int           ok = !cJSON_IsString(t) || strcmp(t->valuestring, type) == 0;
    cJSON_Delete(root);
    return ok;
}

void tok_drop_foreign_config(struct tok_text * cfg, struct tok_text * spec, const char * class_prefix) {
    if (!cfg->data) return;
    cJSON *       root = cJSON_ParseWithLength(cfg->data, cfg->n);
    const cJSON * cls  = cJSON_GetObjectItemCaseSensitive(root, "tokenizer_class");
    int           foreign = cJSON_IsString(cls) && strncmp(cls->valuestring, class_prefix, strlen(class_prefix)) != 0;
    cJSON_Delete(root);
    if (!foreign) return;
    struct tok_text * f[2] = {cfg, spec};
    for (int i = 0; i < 2; i++) {
        free((char *)f[i]->data);
        free((char *)f[i]->name);
        *f[i] = (struct tok_text){0};
    }
}
