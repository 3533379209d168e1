/*
 * safetensors.c — validated mmap reader and atomic writer (see safetensors.h).
 *
 * Not a general JSON library: the header is parsed with cJSON (Debian's libcjson) and then every field is checked
 * here. Rejections name the file, the tensor and expected versus got.
 */
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checked.h"
#include "io/fileutil.h"

// Reads a JSON number as a non-negative integer ≤ 2^53 (exactly representable); -1 if it is not one.
static int64_t json_uint(const cJSON * v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    return (int64_t)d;
}

static int cmp_name(const void * a, const void * b) {
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_begin(const void * a, const void * b) {
    const struct st_tensor * x = *(const struct st_tensor * const *)a;
    const struct st_tensor * y = *(const struct st_tensor * const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end < y->end ? -1 : x->end > y->end);
}

// Validates one tensor entry of the header and fills *t (name is set by the caller).
static enum sd3q_status parse_entry(const cJSON * item, uint64_t data_size, const char * label, struct st_tensor * t,
                                    struct sd3q_errbuf * e) {
    const char * nm = item->string;
    if (!cJSON_IsObject(item)) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': entry is not a JSON object", label, nm);
    const cJSON * dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON * sh = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON * of = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dt)) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': missing or non-string \"dtype\"", label, nm);
    if (dtype_parse(dt->valuestring, &t->type) != 0)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\" (expected one of F32, F16, BF16, F8_E4M3, I8, U8, I32, I64)",
                       label, nm, dt->valuestring);
    if (!cJSON_IsArray(sh)) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': missing or non-array \"shape\"", label, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > ST_MAX_DIMS)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d supported)", label, nm, nd, ST_MAX_DIMS);
    t->ndim = nd;
    int i = 0;
    const cJSON * d;
    cJSON_ArrayForEach(d, sh) {
        int64_t v = json_uint(d);
        if (v < 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, nm, i);
        t->shape[i++] = v;
    }
    if (!ck_numel(t->shape, nd, &t->numel))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': element count overflows", label, nm);
    uint64_t nbytes;
    if (!ck_mul_u64((uint64_t)t->numel, (uint64_t)dtype_size(t->type), &nbytes))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': byte size overflows", label, nm);
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be an array of 2 integers", label, nm);
    int64_t b = json_uint(cJSON_GetArrayItem(of, 0)), en = json_uint(cJSON_GetArrayItem(of, 1));
    if (b < 0 || en < 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': data_offsets are not non-negative integers", label, nm);
    if (b > en) return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': data_offsets begin %lld > end %lld", label, nm, (long long)b, (long long)en);
    if ((uint64_t)(en - b) != nbytes)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': data_offsets span %lld bytes, expected %llu for %s with %lld elements",
                       label, nm, (long long)(en - b), (unsigned long long)nbytes, dtype_name(t->type), (long long)t->numel);
    if ((uint64_t)en > data_size)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s': data ends at byte %lld, past the end of the data section (%llu bytes; file truncated?)",
                       label, nm, (long long)en, (unsigned long long)data_size);
    t->begin = (uint64_t)b;
    t->end   = (uint64_t)en;
    return SD3Q_OK;
}

// Parses and validates the header; on success f->t, f->n, f->meta are filled (caller frees via st_close).
static enum sd3q_status parse_header(struct st_file * f, const char * label, struct sd3q_errbuf * e) {
    if (f->size < 8) return err_set(e, SD3Q_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header (8-byte length)", label, f->size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | f->map[i];
    if (hlen > ST_MAX_HEADER) return err_set(e, SD3Q_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", label, (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > f->size - 8)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", label, (unsigned long long)hlen, f->size);
    if (hlen < 2) return err_set(e, SD3Q_ERR_FORMAT, "%s: header length %llu is too short for a JSON object", label, (unsigned long long)hlen);
    f->data_start = 8 + (size_t)hlen;
    uint64_t data_size = f->size - f->data_start;

    const char * hdr = (const char *)f->map + 8, * hend = NULL;
    cJSON * root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &hend, 0);
    if (!root) return err_set(e, SD3Q_ERR_FORMAT, "%s: header is not valid JSON", label);
    enum sd3q_status st = SD3Q_OK;
    struct st_tensor ** order = NULL;
    // only whitespace may follow the JSON value (writers pad with spaces); cJSON stops at the end of the value
    for (const char * p = hend ? hend : hdr + hlen; p < hdr + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: header is not valid JSON (unexpected bytes after the JSON object at header byte %lld)",
                         label, (long long)(p - hdr));
            goto cleanup;
        }
    if (!cJSON_IsObject(root)) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto cleanup;
    }
    int total = cJSON_GetArraySize(root);
    if (total > ST_MAX_TENSORS + 1) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: header lists %d entries (limit %d)", label, total, ST_MAX_TENSORS);
        goto cleanup;
    }
    f->t = calloc((size_t)(total > 0 ? total : 1), sizeof(struct st_tensor));
    if (!f->t) {
        st = err_set(e, SD3Q_ERR_OOM, "%s: out of memory for %d tensor entries", label, total);
        goto cleanup;
    }
    const cJSON * item;
    cJSON_ArrayForEach(item, root) {
        if (!item->string) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: header entry without a name", label);
            goto cleanup;
        }
        if (strcmp(item->string, "__metadata__") == 0) {
            if (f->meta) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: duplicate \"__metadata__\"", label);
                goto cleanup;
            }
            if (!cJSON_IsObject(item)) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"__metadata__\" is not an object of strings", label);
                goto cleanup;
            }
            int nm = cJSON_GetArraySize(item);
            f->meta = calloc((size_t)(nm > 0 ? nm : 1), sizeof(struct st_meta));
            if (!f->meta) {
                st = err_set(e, SD3Q_ERR_OOM, "%s: out of memory", label);
                goto cleanup;
            }
            const cJSON * kv;
            cJSON_ArrayForEach(kv, item) {
                if (!cJSON_IsString(kv) || !kv->string) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s: \"__metadata__\" value for '%s' is not a string", label, kv->string ? kv->string : "?");
                    goto cleanup;
                }
                struct st_meta * m = &f->meta[f->n_meta++];
                m->key   = strdup(kv->string);
                m->value = strdup(kv->valuestring);
                if (!m->key || !m->value) {
                    st = err_set(e, SD3Q_ERR_OOM, "%s: out of memory", label);
                    goto cleanup;
                }
            }
            continue;
        }
        if (item->string[0] == '\0') {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: tensor with an empty name", label);
            goto cleanup;
        }
        struct st_tensor * t = &f->t[f->n];
        st = parse_entry(item, data_size, label, t, e);
        if (st != SD3Q_OK) goto cleanup;
        t->name = strdup(item->string);
        if (!t->name) {
            st = err_set(e, SD3Q_ERR_OOM, "%s: out of memory", label);
            goto cleanup;
        }
        t->data = f->map + f->data_start + t->begin;
        f->n++;
    }
    qsort(f->t, (size_t)f->n, sizeof(struct st_tensor), cmp_name);
    for (int i = 1; i < f->n; i++) {
        if (strcmp(f->t[i - 1].name, f->t[i].name) == 0) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", label, f->t[i].name);
            goto cleanup;
        }
    }
    // overlap check on ranges sorted by start (empty tensors take no bytes and cannot overlap)
    order = malloc(sizeof(*order) * (size_t)(f->n > 0 ? f->n : 1));
    if (!order) {
        st = err_set(e, SD3Q_ERR_OOM, "%s: out of memory", label);
        goto cleanup;
    }
    int m = 0;
    for (int i = 0; i < f->n; i++)
        if (f->t[i].end > f->t[i].begin) order[m++] = &f->t[i];
    qsort(order, (size_t)m, sizeof(*order), cmp_begin);
    for (int i = 1; i < m; i++) {
        if (order[i]->begin < order[i - 1]->end) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", label, order[i - 1]->name,
                         (unsigned long long)order[i - 1]->begin, (unsigned long long)order[i - 1]->end, order[i]->name,
                         (unsigned long long)order[i]->begin, (unsigned long long)order[i]->end);
            goto cleanup;
        }
    }
    // the format forbids holes (they would let a file be two formats at once): the ranges must tile the data section
    uint64_t covered = 0;
    for (int i = 0; i < m && st == SD3Q_OK; i++) {
        if (order[i]->begin != covered)
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: data bytes [%llu, %llu) belong to no tensor (the next is '%s'); the data must be "
                         "entirely indexed", label, (unsigned long long)covered, (unsigned long long)order[i]->begin, order[i]->name);
        covered = order[i]->end;
    }
    if (st == SD3Q_OK && covered != data_size)
        st = err_set(e, SD3Q_ERR_FORMAT, "%s: data bytes [%llu, %llu) after the last tensor belong to no tensor; the data must be "
                     "entirely indexed", label, (unsigned long long)covered, (unsigned long long)data_size);
cleanup:
    free(order);
    cJSON_Delete(root);
    return st;
}

// Frees the index (not the mapping).
static void free_index(struct st_file * f) {
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    f->t = NULL;
    f->n = 0;
    f->meta = NULL;
    f->n_meta = 0;
}

enum sd3q_status st_parse(const uint8_t * buf, size_t size, const char * label, struct st_file * f, struct sd3q_errbuf * e) {
    memset(f, 0, sizeof(*f));
    f->map  = (uint8_t *)buf;
    f->size = size;
    f->path = strdup(label ? label : "<memory>");
    if (!f->path) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    enum sd3q_status st = parse_header(f, f->path, e);
    if (st != SD3Q_OK) st_close(f);
    return st;
}

enum sd3q_status st_open(const char * path, struct st_file * f, struct sd3q_errbuf * e) {
    memset(f, 0, sizeof(*f));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return err_set(e, errno == ENOENT ? SD3Q_ERR_MISSING : SD3Q_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return err_set(e, SD3Q_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return err_set(e, SD3Q_ERR_IO, "%s: file too large to map", path);
    }
    f->size = (size_t)sb.st_size;
    f->path = strdup(path);
    if (!f->path) {
        close(fd);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    if (f->size < 8) {
        close(fd);
        enum sd3q_status st = err_set(e, SD3Q_ERR_FORMAT, "%s: file is %zu bytes, too short for a safetensors header (8-byte length)", path, f->size);
        st_close(f);
        return st;
    }
    void * p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        enum sd3q_status st = err_set(e, SD3Q_ERR_IO, "%s: mmap failed: %s", path, strerror(errno));
        st_close(f);
        return st;
    }
    f->map    = p;
    f->mapped = 1;
    enum sd3q_status st = parse_header(f, path, e);
    if (st != SD3Q_OK) st_close(f);
    return st;
}

void st_close(struct st_file * f) {
    if (!f) return;
    free_index(f);
    if (f->mapped && f->map) munmap(f->map, f->size);
    free(f->path);
    memset(f, 0, sizeof(*f));
}

const struct st_tensor * st_find(const struct st_file * f, const char * name) {
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[mid].name, name);
        if (c == 0) return &f->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const char * st_meta_get(const struct st_file * f, const char * key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0) return f->meta[i].value;
    return NULL;
}

float * st_read_f32(const struct st_file * f, const char * name, int ndim, int64_t * want, struct sd3q_errbuf * e) {
    const struct st_tensor * t = st_find(f, name);
    if (!t) {
        err_set(e, SD3Q_ERR_MISSING, "%s: tensor '%s' not found", f->path, name);
        return NULL;
    }
    if (!dtype_is_float(t->type)) {
        err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected a float type", f->path, name, dtype_name(t->type));
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = want[i] < 0 || want[i] == t->shape[i];
    if (!ok) {
        char got[128], exp[128];
        shape_str(t->shape, t->ndim, got, sizeof got);
        shape_str(want, ndim, exp, sizeof exp);
        err_set(e, SD3Q_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", f->path, name, got, exp);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) want[i] = t->shape[i];
    float * out = malloc((size_t)(t->numel > 0 ? t->numel : 1) * sizeof(float));
    if (!out) {
        err_set(e, SD3Q_ERR_OOM, "%s: out of memory reading '%s'", f->path, name);
        return NULL;
    }
    dtype_to_f32(t->type, t->data, out, t->numel);
    return out;
}

// ---- writer -----------------------------------------------------------------------------------------------------

enum sd3q_status st_write(const char * path, const struct st_wtensor * t, int n, const char * const * meta, int n_meta,
                          struct sd3q_errbuf * e) {
    cJSON * root = cJSON_CreateObject();
    if (!root) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    enum sd3q_status st = SD3Q_OK;
    char * json = NULL;
    struct atomic_file af = {0};
    if (n_meta > 0) {
        cJSON * m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < n_meta; i++) cJSON_AddStringToObject(m, meta[2 * i], meta[2 * i + 1]);
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel;
        uint64_t nbytes;
        if (!ck_numel(t[i].shape, t[i].ndim, &numel) || !ck_mul_u64((uint64_t)numel, (uint64_t)dtype_size(t[i].type), &nbytes)) {
            st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s: tensor '%s': size overflows", path, t[i].name);
            goto cleanup;
        }
        if (!t[i].name || !strcmp(t[i].name, "__metadata__") || cJSON_GetObjectItemCaseSensitive(root, t[i].name)) {
            // a reader would see one tensor, or the metadata, where the caller meant two (quadratic, but n is small)
            st = err_set(e, SD3Q_ERR_INVALID_ARG, "%s: tensor %d: name '%s' is %s", path, i, t[i].name ? t[i].name : "(null)",
                         t[i].name && strcmp(t[i].name, "__metadata__") ? "used twice" : "reserved");
            goto cleanup;
        }
        cJSON * o = cJSON_AddObjectToObject(root, t[i].name);
        if (!o) {
            st = err_set(e, SD3Q_ERR_OOM, "out of memory");
            goto cleanup;
        }
        cJSON_AddStringToObject(o, "dtype", dtype_name(t[i].type));
        cJSON * sh = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < t[i].ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON * of = cJSON_AddArrayToObject(o, "data_offsets");
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(of, cJSON_CreateNumber((double)(off + nbytes)));
        off += nbytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto cleanup;
    }
    size_t jl = strlen(json);
    size_t padded = (jl + 7) & ~(size_t)7;  // keeps the data section 8-byte aligned
    st = atomic_file_open(&af, path, e);
    if (st != SD3Q_OK) goto cleanup;
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    if ((st = atomic_file_write(&af, hdr, 8, e)) != SD3Q_OK) goto cleanup;
    if ((st = atomic_file_write(&af, json, jl, e)) != SD3Q_OK) goto cleanup;
    if ((st = atomic_file_write(&af, spaces, padded - jl, e)) != SD3Q_OK) goto cleanup;
    for (int i = 0; i < n; i++) {
        int64_t numel = 0;
        ck_numel(t[i].shape, t[i].ndim, &numel);
        if ((st = atomic_file_write(&af, t[i].data, (size_t)numel * (size_t)dtype_size(t[i].type), e)) != SD3Q_OK) goto cleanup;
    }
    st = atomic_file_commit(&af, e);
cleanup:
    atomic_file_abort(&af);
    free(json);
    cJSON_Delete(root);
    return st;
}
