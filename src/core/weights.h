/*
 * weights.h — a model weight as the model code sees it: a canonical name, a shape, and one to three row ranges of
 * memory-mapped file tensors that together form the tensor (concatenated along dim 0).
 *
 * Why parts: diffusers checkpoints store q, k and v as three tensors where the original file fuses them, and store
 * some adaLN Linears with their two halves swapped. Keeping row-range views avoids copying weights at load time
 * (the mmap stays the only copy); the backends gather the parts when they convert or upload.
 */
#ifndef SD3Q_CORE_WEIGHTS_H
#define SD3Q_CORE_WEIGHTS_H

#include <stdint.h>

#include "core/dtype.h"

#define WT_MAX_PARTS 3
#define WT_NAME_MAX  112

struct wpart {
    const uint8_t * data;   // first byte of the first row of this part (inside the mapping; any alignment)
    int64_t         rows;   // rows (dim-0 entries) this part contributes
};

struct wt {
    char         name[WT_NAME_MAX];  // canonical (original-checkpoint) name, e.g. "joint_blocks.0.x_block.attn.qkv.weight"
    enum dtype   type;               // storage type, same for all parts
    int          ndim;               // 1..4 (0 = absent)
    int64_t      shape[4];           // canonical shape, PyTorch order
    int64_t      row_elems;          // elements per dim-0 row (product of shape[1..])
    int          nparts;
    struct wpart part[WT_MAX_PARTS];
    int32_t      id;                 // index in the model's weight table (backends key device copies by it)
};

// 1 when the weight is present.
static inline int wt_present(const struct wt * w) { return w->ndim > 0; }

// Element count.
static inline int64_t wt_numel(const struct wt * w) { return w->ndim > 0 ? w->shape[0] * w->row_elems : 0; }

// Converts rows [r0, r0+n) of a weight to float32 into dst (n·row_elems floats), gathering across parts.
void wt_rows_to_f32(const struct wt * w, int64_t r0, int64_t n, float * dst);

// Pointer to row r when the weight is F32, single-part and 4-byte aligned (usable in place); else NULL.
const float * wt_f32_rows(const struct wt * w, int64_t r);

#endif
