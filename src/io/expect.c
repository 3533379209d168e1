/*
 * expect.c — see expect.h. The checks follow whisper.cpp's loader order (unknown, shape, type, missing).
 */
#include "io/expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"

struct expect * expect_add(struct expect_table * t, struct wt * dst, const char * canon, int ndim, int64_t d0, int64_t d1,
                           int64_t d2, int64_t d3) {
    static struct expect dummy;
    if (t->n == t->cap) {
        int nc = t->cap ? 2 * t->cap : 256;
        struct expect * ne = realloc(t->e, sizeof(*ne) * (size_t)nc);
        if (!ne) {
            t->oom = 1;
            return &dummy;
        }
        t->e   = ne;
        t->cap = nc;
    }
    struct expect * x = &t->e[t->n++];
    memset(x, 0, sizeof(*x));
    x->dst  = dst;
    x->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < 4; i++) x->shape[i] = i < ndim ? d[i] : 1;
    memset(dst, 0, sizeof(*dst));
    snprintf(dst->name, sizeof dst->name, "%s", canon);
    snprintf(x->src[0].name, sizeof x->src[0].name, "%s", canon);
    x->src[0].file_rows = x->shape[0];
    x->src[0].rows      = x->shape[0];
    x->nsrc             = 1;
    x->default_src      = 1;
    return x;
}

void expect_src(struct expect * x, const char * name, int64_t file_rows, int64_t row0, int64_t rows) {
    if (x->default_src) {  // the default source is replaced by the first explicit one
        x->nsrc        = 0;
        x->default_src = 0;
    }
    if (x->nsrc >= WT_MAX_PARTS) return;
    struct expect_src * s = &x->src[x->nsrc++];
    snprintf(s->name, sizeof s->name, "%s", name);
    s->file_rows = file_rows;
    s->row0      = row0;
    s->rows      = rows;
}

// Lookup entry for a source name.
struct src_ref {
    const char * name;
    int          entry, src;
};

static int cmp_src_ref(const void * a, const void * b) { return strcmp(((const struct src_ref *)a)->name, ((const struct src_ref *)b)->name); }

// Compares a file shape with the expected one (dim 0 = file_rows), allowing trailing 1-dims when squeeze_ok.
static int shape_matches(const struct expect * x, const struct expect_src * s, const struct st_tensor * t) {
    int64_t want[4];
    for (int i = 0; i < x->ndim; i++) want[i] = x->shape[i];
    want[0] = s->file_rows;
    int n = t->ndim;
    if (x->squeeze_ok)
        while (n > x->ndim && t->shape[n - 1] == 1) n--;
    if (n != x->ndim) return 0;
    for (int i = 0; i < n; i++)
        if (t->shape[i] != want[i]) return 0;
    return 1;
}

static int has_suffix(const char * s, const char * suf) {
    size_t ls = strlen(s), lf = strlen(suf);
    return ls >= lf && strcmp(s + ls - lf, suf) == 0;
}

enum sd3q_status expect_resolve(struct expect_table * t, const struct ckpt_component * comp, const char * const * ignore,
                                int allow_extra, struct sd3q_errbuf * e) {
    if (t->oom) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    int nref = 0;
    for (int i = 0; i < t->n; i++) nref += t->e[i].nsrc;
    struct src_ref * refs = malloc(sizeof(*refs) * (size_t)(nref ? nref : 1));
    if (!refs) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    int k = 0;
    for (int i = 0; i < t->n; i++)
        for (int j = 0; j < t->e[i].nsrc; j++) refs[k++] = (struct src_ref){t->e[i].src[j].name, i, j};
    qsort(refs, (size_t)nref, sizeof(*refs), cmp_src_ref);
    enum sd3q_status st = SD3Q_OK;

    // 1. every tensor known; 2. shapes; 3. dtypes
    int n_unknown = 0;
    for (int i = 0; i < comp->n; i++) {
        struct src_ref key = {comp->t[i].name, 0, 0};
        struct src_ref * r = bsearch(&key, refs, (size_t)nref, sizeof(*refs), cmp_src_ref);
        const struct st_tensor * ft = comp->t[i].t;
        if (!r) {
            int ign = 0;
            for (int g = 0; ignore && ignore[g] && !ign; g++) ign = has_suffix(comp->t[i].name, ignore[g]);
            if (ign) continue;
            if (!allow_extra) {
                st = err_set(e, SD3Q_ERR_FORMAT, "%s: unexpected tensor '%s' (not part of this architecture; pass --allow-extra to ignore)",
                             comp->origin, comp->t[i].name);
                goto cleanup;
            }
            if (n_unknown++ < 5) fprintf(stderr, "sd3q: warning: %s: ignoring unknown tensor '%s'\n", comp->origin, comp->t[i].name);
            continue;
        }
        // one file tensor may feed several parts (the two swapped halves of a diffusers adaLN Linear)
        while (r > refs && strcmp(r[-1].name, comp->t[i].name) == 0) r--;
        for (; r < refs + nref && strcmp(r->name, comp->t[i].name) == 0; r++) {
            struct expect * x = &t->e[r->entry];
            struct expect_src * s = &x->src[r->src];
            if (!shape_matches(x, s, ft)) {
                char got[128], want[128];
                int64_t w[4];
                for (int d = 0; d < x->ndim; d++) w[d] = x->shape[d];
                w[0] = s->file_rows;
                shape_str(ft->shape, ft->ndim, got, sizeof got);
                shape_str(w, x->ndim, want, sizeof want);
                st = err_set(e, SD3Q_ERR_SHAPE, "%s: tensor '%s' has shape %s, expected %s", comp->origin, comp->t[i].name, got, want);
                goto cleanup;
            }
            if (!dtype_is_float(ft->type)) {
                st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32, F16, BF16 or F8_E4M3", comp->origin,
                             comp->t[i].name, dtype_name(ft->type));
                goto cleanup;
            }
            x->found[r->src] = i + 1;
        }
    }
    if (n_unknown > 5) fprintf(stderr, "sd3q: warning: %s: %d unknown tensors ignored in all\n", comp->origin, n_unknown);

    // 4. every required tensor present (list them all), then fill the weights
    char missing[700] = "";
    int n_missing = 0;
    for (int i = 0; i < t->n; i++) {
        struct expect * x = &t->e[i];
        int have = 0;
        for (int j = 0; j < x->nsrc; j++) have += x->found[j] != 0;
        if (have == 0 && x->optional) continue;
        if (have < x->nsrc) {
            for (int j = 0; j < x->nsrc; j++) {
                if (x->found[j]) continue;
                if (n_missing < 8) {
                    size_t l = strlen(missing);
                    snprintf(missing + l, sizeof missing - l, "%s'%s'", n_missing ? ", " : "", x->src[j].name);
                }
                n_missing++;
            }
            continue;
        }
        struct wt * w = x->dst;
        w->ndim = x->ndim;
        for (int d = 0; d < 4; d++) w->shape[d] = d < x->ndim ? x->shape[d] : 0;
        w->row_elems = 1;
        for (int d = 1; d < x->ndim; d++) w->row_elems *= x->shape[d];
        w->nparts = x->nsrc;
        for (int j = 0; j < x->nsrc; j++) {
            const struct st_tensor * ft = comp->t[x->found[j] - 1].t;
            if (j == 0) w->type = ft->type;
            else if (ft->type != w->type) {
                st = err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: tensor '%s' is %s but '%s' is %s; the parts of '%s' must share a dtype",
                             comp->origin, x->src[0].name, dtype_name(w->type), x->src[j].name, dtype_name(ft->type), w->name);
                goto cleanup;
            }
            w->part[j].data = ft->data + x->src[j].row0 * w->row_elems * dtype_size(ft->type);
            w->part[j].rows = x->src[j].rows;
        }
    }
    if (n_missing)
        st = err_set(e, SD3Q_ERR_MISSING, "%s: %d tensor(s) missing: %s%s", comp->origin, n_missing, missing, n_missing > 8 ? ", ..." : "");
cleanup:
    free(refs);
    return st;
}

void expect_free(struct expect_table * t) {
    free(t->e);
    memset(t, 0, sizeof(*t));
}

// Gives the resolved weights consecutive ids (the backends key device copies by them) and counts their elements.
int64_t expect_number(struct expect_table * t, int id0) {
    int64_t n = 0;
    for (int i = 0; i < t->n; i++) {
        t->e[i].dst->id = id0 + i;
        n += wt_numel(t->e[i].dst);
    }
    return n;
}
