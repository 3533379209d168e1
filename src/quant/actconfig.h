/*
 * actconfig.h — the W4A8 activation-quantization configuration: per layer and per timestep group, the clipping
 * range, the quantization step and zero point, the post-GELU shift, the outlier-channel multipliers; timestep groups
 * found by adjacency-constrained clustering (HTG) and keyed by σ intervals, so that a configuration calibrated at one
 * step count serves any other (the seed project's defect 2 looked steps up by index).
 *
 * Names say what a number is (the seed's defect 1 used "scale" for both a clip magnitude and a step):
 *   clip_lo, clip_hi   the represented range [clip_lo, clip_hi] of the (shifted, divided) activation
 *   step               the quantization step: q = clamp(round(x/step) + zero_point, qmin, qmax), x̂ = (q − zp)·step
 *   zero_point         0 for symmetric layers; zp = qmin − round(clip_lo/step) for asymmetric ones (defect 8)
 * File format in docs/FORMATS.md ("Activation quantization config").
 */
#ifndef SD3Q_QUANT_ACTCONFIG_H
#define SD3Q_QUANT_ACTCONFIG_H

#include <stdint.h>

#include "core/status.h"
#include "quant/statsfile.h"

#define ACTCFG_FORMAT  "sd3q-act-quant-config"
#define ACTCFG_VERSION 1
#define ACTCFG_MAX_GROUPS 64

enum act_clip { CLIP_ABSMAX = 0, CLIP_P999 = 1, CLIP_P9999 = 2 };

struct actcfg_group {
    float sigma_hi, sigma_lo;     // this group serves σ in (sigma_lo, sigma_hi]; the first group's sigma_hi is +∞ in
                                  // effect, the last group's sigma_lo is −∞
    int   first, last;            // calibration steps (table rows) it was built from
};

struct actcfg_entry {             // one (layer, group)
    int     bits;                 // 8, or 4/6/8 in a multi-tier config
    int     symmetric;
    float   clip_lo, clip_hi;
    float   step;
    int32_t zero_point;
    float * shift;                // [C] post-GELU layers (subtracted before quantizing, folded into the next bias)
    int32_t * factor;             // [C] integer divisors ≥ 1 (outlier channels > 1; folded into the next weights)
    int     n_outliers;
};

struct actcfg {
    int                   n_groups, n_layers;
    struct actcfg_group   groups[ACTCFG_MAX_GROUPS];
    struct stats_layer *  layers;        // copied from the statistics
    struct actcfg_entry * e;             // [n_layers × n_groups]
    enum act_clip         clip;
    int                   multitier;
    double                a4_threshold, a6_threshold, a4_threshold_gelu, a6_threshold_gelu;
    double                outlier_ratio; // channel range > outlier_ratio × median range → outlier (2.5)
};

// The entry of (layer l, group g).
static inline struct actcfg_entry * actcfg_at(const struct actcfg * c, int l, int g) { return &c->e[(int64_t)l * c->n_groups + g]; }

// Partitions the table's steps into n_groups contiguous groups by adjacency-constrained agglomerative clustering of
// per-step features (every layer's per-channel centre (avg_min+avg_max)/2 and log clip magnitude, normalised per
// layer): repeatedly merge the adjacent pair of clusters whose mean features are closest. labels[s] = group of step s.
void actcfg_htg(const struct stats_table * t, int n_groups, int * labels);

// Builds the configuration from statistics (see the header comment; thresholds used when multitier != 0).
enum sd3q_status actcfg_build(const struct stats_table * t, int n_groups, enum act_clip clip, int multitier, double a4,
                              double a6, double a4_gelu, double a6_gelu, struct actcfg * out, struct sd3q_errbuf * e);

// The group serving σ (any step count): the group whose (sigma_lo, sigma_hi] holds σ.
int actcfg_group_for_sigma(const struct actcfg * c, float sigma);

// Writes PATH (JSON) and PATH's vectors (shift, factors) to the sibling file "<PATH without .json>.safetensors";
// both atomic, the JSON names the vector file relatively.
enum sd3q_status actcfg_write(const struct actcfg * c, const char * path, struct sd3q_errbuf * e);

// Reads and validates a configuration written by actcfg_write.
enum sd3q_status actcfg_read(const char * path, struct actcfg * c, struct sd3q_errbuf * e);

// Frees it.
void actcfg_free(struct actcfg * c);

// Fake-quantizes x [rows, C] in place with an entry, as the deployed integer path computes it:
// v = (x − shift)/factor, q = clamp(round(v/step) + zero_point, qmin, qmax), x ← (q − zero_point)·step·factor + shift.
void actcfg_fake_quant(const struct actcfg_entry * en, float * x, int64_t rows, int64_t C);

#endif
