/*
 * actstats.h — statistics of the activations entering a quantizable Linear, accumulated over forward passes.
 *
 * One accumulator holds one (layer, denoising step) cell. Each forward pass ("batch": one image's CFG pair at one
 * step) contributes a [rows, C] f32 matrix. The accumulator keeps, per channel, the running extremes (run_min/run_max)
 * and the average of the per-batch extremes (avg_min/avg_max: TaQ-DiT's AvgMinMax; two quantities, two names — the
 * seed project's defect 11), the tensor's absolute maximum, mean and standard deviation, a signed histogram whose range
 * grows with the data by exact bin merging (never a fixed clip: defect 10), and a histogram of |x| over logarithmic
 * bins (1/64 of an octave) from which percentiles of |x| are read to about 1 % relative accuracy.
 */
#ifndef SD3Q_QUANT_ACTSTATS_H
#define SD3Q_QUANT_ACTSTATS_H

#include <stdint.h>

#define ACT_HIST_BINS 2048                     // signed histogram
#define ACT_LOG_SUB   64                       // log bins per octave of |x|
#define ACT_LOG_BINS  (256 * ACT_LOG_SUB)      // every f32 exponent × ACT_LOG_SUB mantissa slices

struct act_stats {
    int64_t    C;           // channels (the Linear's input features)
    int64_t    n_batches;   // forward passes observed
    int64_t    n_values;    // elements observed
    float *    run_min;     // [C] minimum over every value seen
    float *    run_max;     // [C]
    double *   sum_bmin;    // [C] Σ over batches of the batch's per-channel minimum (avg_min = sum_bmin / n_batches)
    double *   sum_bmax;    // [C]
    float      absmax;      // max |x|
    double     sum, sumsq;  // for mean and standard deviation
    double     hist_lo, hist_w;        // signed histogram: bin i covers [hist_lo + i·hist_w, hist_lo + (i+1)·hist_w)
    uint64_t * hist;        // [ACT_HIST_BINS]
    uint64_t * loghist;     // [ACT_LOG_BINS] counts of |x| by (biased exponent, top 6 mantissa bits); bin 0 = zeros
    float *    bmin, * bmax;// [C] scratch for the current batch's extremes
};

// Allocates an empty accumulator for C channels; returns 0, or -1 when out of memory.
int act_stats_init(struct act_stats * s, int64_t C);

// Frees it.
void act_stats_free(struct act_stats * s);

// Adds one batch x [rows, C].
void act_stats_add(struct act_stats * s, const float * x, int64_t rows);

// Merges `src` into `dst` (same C): extremes, sums, histograms (the signed one is rebinned to cover both ranges).
void act_stats_merge(struct act_stats * dst, const struct act_stats * src);

// The q-quantile (0 ≤ q ≤ 1) of |x| from the log histogram (geometric interpolation inside the bin).
double act_stats_abs_quantile(const struct act_stats * s, double q);

// avg_min / avg_max of channel c.
static inline double act_stats_avg_min(const struct act_stats * s, int64_t c) { return s->n_batches ? s->sum_bmin[c] / (double)s->n_batches : 0; }
static inline double act_stats_avg_max(const struct act_stats * s, int64_t c) { return s->n_batches ? s->sum_bmax[c] / (double)s->n_batches : 0; }

// Mean and standard deviation of all values.
double act_stats_mean(const struct act_stats * s);
double act_stats_std(const struct act_stats * s);

#endif
