/*
 * expect.h — the expected-tensor table of a component, and its validation against a checkpoint.
 *
 * Model code lists every tensor it needs under its canonical (original-checkpoint) name with the exact shape, and
 * where it comes from in the file: by default the same name, whole; for diffusers files, up to three source
 * tensors, each a row range, concatenated along dim 0 (fused q|k|v, swapped adaLN halves). expect_resolve then
 * checks, in this order: every tensor of the component is known (or ignorable), shapes match exactly, dtypes are
 * float types and consistent, and every required tensor is present — listing all missing names.
 */
#ifndef SD3Q_IO_EXPECT_H
#define SD3Q_IO_EXPECT_H

#include "core/weights.h"
#include "io/checkpoint.h"

struct expect_src {
    char    name[WT_NAME_MAX];  // name in the component (prefix stripped)
    int64_t file_rows;          // dim 0 of the file tensor (the other dims equal the canonical ones)
    int64_t row0, rows;         // the rows taken from it
};

struct expect {
    struct wt *       dst;
    int               ndim;
    int64_t           shape[4];
    int               optional;      // absent is fine (dst stays empty)
    int               squeeze_ok;    // a file shape with extra trailing 1-dims is accepted (1×1 conv ↔ Linear)
    int               nsrc;
    int               default_src;   // 1 while src[0] is the implicit "same name, whole" source
    struct expect_src src[WT_MAX_PARTS];
    int               found[WT_MAX_PARTS];
};

struct expect_table {
    int             n, cap;
    struct expect * e;
    int             oom;
};

// Adds an entry whose single source has the canonical name itself. Shape dims follow ndim (1–4). Returns the entry.
struct expect * expect_add(struct expect_table * t, struct wt * dst, const char * canon, int ndim, int64_t d0, int64_t d1,
                           int64_t d2, int64_t d3);

// Replaces the sources of an entry: adds source `name` (file dim-0 size file_rows) contributing rows [row0, row0+rows).
void expect_src(struct expect * x, const char * name, int64_t file_rows, int64_t row0, int64_t rows);

// Validates and fills every dst. `ignore` is a NULL-terminated list of name suffixes that may be present and are
// skipped (e.g. "position_ids"). With allow_extra, unknown tensors are warned about instead of rejected.
enum sd3q_status expect_resolve(struct expect_table * t, const struct ckpt_component * comp, const char * const * ignore,
                                int allow_extra, struct sd3q_errbuf * e);

// After a successful resolve: gives the entries the weight ids id0, id0+1, … and returns their element count.
int64_t expect_number(struct expect_table * t, int id0);

// Frees the table.
void expect_free(struct expect_table * t);

#endif
