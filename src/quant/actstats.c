/*
 * actstats.c — the activation-statistics accumulator (see actstats.h).
 *
 * The signed histogram starts at the first batch's [min, max] and, whenever a value falls outside, doubles its bin
 * width (merging bin pairs exactly) towards the side that overflowed until the value fits: counts are never clipped
 * and never moved between bins inexactly. The |x| histogram needs no range at all: its bin is read off the float's
 * exponent and top mantissa bits, so every finite magnitude has a bin.
 */
#include "quant/actstats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int act_stats_init(struct act_stats * s, int64_t C) {
    memset(s, 0, sizeof(*s));
    s->C        = C;
    s->run_min  = malloc(sizeof(float) * (size_t)C);
    s->run_max  = malloc(sizeof(float) * (size_t)C);
    s->bmin     = malloc(sizeof(float) * (size_t)C);
    s->bmax     = malloc(sizeof(float) * (size_t)C);
    s->sum_bmin = calloc((size_t)C, sizeof(double));
    s->sum_bmax = calloc((size_t)C, sizeof(double));
    s->hist     = calloc(ACT_HIST_BINS, sizeof(uint64_t));
    s->loghist  = calloc(ACT_LOG_BINS, sizeof(uint64_t));
    if (!s->run_min || !s->run_max || !s->bmin || !s->bmax || !s->sum_bmin || !s->sum_bmax || !s->hist || !s->loghist) {
        act_stats_free(s);
        return -1;
    }
    for (int64_t c = 0; c < C; c++) {
        s->run_min[c] = INFINITY;
        s->run_max[c] = -INFINITY;
    }
    return 0;
}

void act_stats_free(struct act_stats * s) {
    free(s->run_min);
    free(s->run_max);
    free(s->bmin);
    free(s->bmax);
    free(s->sum_bmin);
    free(s->sum_bmax);
    free(s->hist);
    free(s->loghist);
    memset(s, 0, sizeof(*s));
}

// Log-histogram bin of |x|: biased exponent × 64 + top 6 mantissa bits (0 for ±0; NaN/inf land in the top bins).
static inline uint32_t log_bin(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0x7fffffffu;
    return u >> (23 - 6);
}

// Grows the signed histogram (bin width doubling, exact pair merges) until [lo, hi] fits.
static void hist_cover(struct act_stats * s, double lo, double hi) {
    while (lo < s->hist_lo || hi >= s->hist_lo + ACT_HIST_BINS * s->hist_w) {
        uint64_t * h = s->hist;
        if (lo < s->hist_lo) {  // grow to the left: old range becomes the upper half
            uint64_t tmp[ACT_HIST_BINS / 2];
            for (int i = 0; i < ACT_HIST_BINS / 2; i++) tmp[i] = h[2 * i] + h[2 * i + 1];
            memset(h, 0, sizeof(uint64_t) * ACT_HIST_BINS / 2);
            memcpy(h + ACT_HIST_BINS / 2, tmp, sizeof tmp);
            s->hist_lo -= ACT_HIST_BINS * s->hist_w;
        } else {  // grow to the right: old range becomes the lower half
            for (int i = 0; i < ACT_HIST_BINS / 2; i++) h[i] = h[2 * i] + h[2 * i + 1];
            memset(h + ACT_HIST_BINS / 2, 0, sizeof(uint64_t) * ACT_HIST_BINS / 2);
        }
        s->hist_w *= 2;
    }
}

void act_stats_add(struct act_stats * s, const float * x, int64_t rows) {
    const int64_t C = s->C;
    if (rows <= 0) return;
    for (int64_t c = 0; c < C; c++) {
        s->bmin[c] = INFINITY;
        s->bmax[c] = -INFINITY;
    }
    float amax = s->absmax, lo = INFINITY, hi = -INFINITY;
    double sum = 0, sumsq = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float * xr = x + r * C;
        for (int64_t c = 0; c < C; c++) {
            float v = xr[c];
            s->bmin[c] = v < s->bmin[c] ? v : s->bmin[c];
            s->bmax[c] = v > s->bmax[c] ? v : s->bmax[c];
            sum += v;
            sumsq += (double)v * v;
            s->loghist[log_bin(v)]++;
        }
    }
    for (int64_t c = 0; c < C; c++) {
        lo = s->bmin[c] < lo ? s->bmin[c] : lo;
        hi = s->bmax[c] > hi ? s->bmax[c] : hi;
        s->run_min[c] = s->bmin[c] < s->run_min[c] ? s->bmin[c] : s->run_min[c];
        s->run_max[c] = s->bmax[c] > s->run_max[c] ? s->bmax[c] : s->run_max[c];
        s->sum_bmin[c] += s->bmin[c];
        s->sum_bmax[c] += s->bmax[c];
    }
    amax = fmaxf(amax, fmaxf(fabsf(lo), fabsf(hi)));
    s->absmax = amax;
    s->sum += sum;
    s->sumsq += sumsq;
    // signed histogram: the first batch fixes the grid, later ones grow it as needed
    if (s->n_values == 0) {
        double span = (double)hi - (double)lo;
        if (!(span > 0)) span = fabs((double)hi) > 0 ? fabs((double)hi) * 1e-3 : 1e-6;
        s->hist_lo = (double)lo - 0.01 * span;
        s->hist_w  = 1.02 * span / ACT_HIST_BINS;
    }
    hist_cover(s, lo, hi);
    double inv = 1.0 / s->hist_w;
    for (int64_t i = 0; i < rows * C; i++) {
        int64_t b = (int64_t)(((double)x[i] - s->hist_lo) * inv);
        b = b < 0 ? 0 : (b >= ACT_HIST_BINS ? ACT_HIST_BINS - 1 : b);  // only rounding at the exact top edge
        s->hist[b]++;
    }
    s->n_batches++;
    s->n_values += rows * C;
}

void act_stats_merge(struct act_stats * dst, const struct act_stats * src) {
    if (src->n_values == 0) return;
    for (int64_t c = 0; c < dst->C; c++) {
        dst->run_min[c] = fminf(dst->run_min[c], src->run_min[c]);
        dst->run_max[c] = fmaxf(dst->run_max[c], src->run_max[c]);
        dst->sum_bmin[c] += src->sum_bmin[c];
        dst->sum_bmax[c] += src->sum_bmax[c];
    }
    dst->absmax = fmaxf(dst->absmax, src->absmax);
    dst->sum += src->sum;
    dst->sumsq += src->sumsq;
    for (int i = 0; i < ACT_LOG_BINS; i++) dst->loghist[i] += src->loghist[i];
    if (dst->n_values == 0) {
        dst->hist_lo = src->hist_lo;
        dst->hist_w  = src->hist_w;
        memcpy(dst->hist, src->hist, sizeof(uint64_t) * ACT_HIST_BINS);
    } else {
        // re-bin src's counts at their bin centres into dst's (grown) grid
        hist_cover(dst, src->hist_lo, src->hist_lo + ACT_HIST_BINS * src->hist_w * (1 - 1e-12));
        for (int i = 0; i < ACT_HIST_BINS; i++) {
            if (!src->hist[i]) continue;
            double centre = src->hist_lo + (i + 0.5) * src->hist_w;
            int64_t b = (int64_t)((centre - dst->hist_lo) / dst->hist_w);
            b = b < 0 ? 0 : (b >= ACT_HIST_BINS ? ACT_HIST_BINS - 1 : b);
            dst->hist[b] += src->hist[i];
        }
    }
    dst->n_batches += src->n_batches;
    dst->n_values += src->n_values;
}

double act_stats_abs_quantile(const struct act_stats * s, double q) {
    if (s->n_values == 0) return 0;
    double target = q * (double)s->n_values, cum = 0;
    for (int i = 0; i < ACT_LOG_BINS; i++) {
        if (!s->loghist[i]) continue;
        if (cum + (double)s->loghist[i] >= target) {
            // bin i covers [lo, lo·(1 + 1/64)) in magnitude (from its bit pattern); interpolate geometrically
            uint32_t ub = (uint32_t)i << (23 - 6), ue = (uint32_t)(i + 1) << (23 - 6);
            float lo, hi;
            memcpy(&lo, &ub, 4);
            memcpy(&hi, &ue, 4);
            if (i == 0) return 0;
            double f = (target - cum) / (double)s->loghist[i];
            double v = (double)lo * pow((double)hi / (double)lo, f);
            return v < s->absmax ? v : s->absmax;
        }
        cum += (double)s->loghist[i];
    }
    return s->absmax;
}

double act_stats_mean(const struct act_stats * s) { return s->n_values ? s->sum / (double)s->n_values : 0; }

double act_stats_std(const struct act_stats * s) {
    if (!s->n_values) return 0;
    double m = s->sum / (double)s->n_values, v = s->sumsq / (double)s->n_values - m * m;
    return v > 0 ? sqrt(v) : 0;
}
