/*
 * weights.c — gathering rows of multi-part weights (see weights.h).
 */
#include "core/weights.h"

#include "core/status.h"

void wt_rows_to_f32(const struct wt * w, int64_t r0, int64_t n, float * dst) {
    SD3Q_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= w->shape[0]);
    int64_t esz = dtype_size(w->type);
    int64_t base = 0;
    for (int p = 0; p < w->nparts && n > 0; p++) {
        int64_t pr = w->part[p].rows;
        if (r0 < base + pr) {
            int64_t off  = r0 - base;
            int64_t take = pr - off < n ? pr - off : n;
            dtype_to_f32(w->type, w->part[p].data + off * w->row_elems * esz, dst, take * w->row_elems);
            dst += take * w->row_elems;
            r0 += take;
            n -= take;
        }
        base += pr;
    }
}

const float * wt_f32_rows(const struct wt * w, int64_t r) {
    if (w->type != DT_F32 || w->nparts != 1 || ((uintptr_t)w->part[0].data & 3u) != 0) return NULL;
    return (const float *)(w->part[0].data) + r * w->row_elems;
}
