/*
 * test-actstats.c — the activation-statistics accumulator against a brute-force computation over all values:
 * extremes, AvgMinMax, absmax, mean/std, the adaptive signed histogram (every value counted, in the bin the final
 * grid assigns it), percentiles of |x| against exact order statistics, and merging.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant/actstats.h"
#include "testutil.h"

static int cmp_float(const void * a, const void * b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

// Exact q-quantile of |x| by the same rank convention as act_stats_abs_quantile (first value reaching q·n).
static double exact_abs_quantile(const float * x, int64_t n, double q) {
    float * a = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
    qsort(a, (size_t)n, sizeof(float), cmp_float);
    int64_t k = (int64_t)ceil(q * (double)n) - 1;
    if (k < 0) k = 0;
    double v = a[k];
    free(a);
    return v;
}

int main(void) {
    const int64_t C = 37, rows = 53;
    const int nb = 6;
    float * all = malloc(sizeof(float) * (size_t)(C * rows * nb));
    struct act_stats s, part[2];
    CHECK(act_stats_init(&s, C) == 0);
    CHECK(act_stats_init(&part[0], C) == 0 && act_stats_init(&part[1], C) == 0);
    for (int b = 0; b < nb; b++) {
        float * x = all + b * rows * C;
        // later batches are wider and shifted, so the histogram must grow on both sides; channel 5 is an outlier
        fill_randn(x, rows * C, 1.0f + (float)b);
        for (int64_t r = 0; r < rows; r++) {
            x[r * C + 5] *= 30.0f;
            x[r * C + 11] += (b % 2 ? 40.0f : -25.0f);
        }
        act_stats_add(&s, x, rows);
        act_stats_add(&part[b % 2], x, rows);
    }
    int64_t n = C * rows * nb;
    CHECK(s.n_batches == nb && s.n_values == n);
    // extremes and AvgMinMax
    int bad = 0;
    for (int64_t c = 0; c < C; c++) {
        float mn = INFINITY, mx = -INFINITY;
        double smn = 0, smx = 0;
        for (int b = 0; b < nb; b++) {
            float bmn = INFINITY, bmx = -INFINITY;
            for (int64_t r = 0; r < rows; r++) {
                float v = all[(b * rows + r) * C + c];
                bmn = fminf(bmn, v);
                bmx = fmaxf(bmx, v);
            }
            mn = fminf(mn, bmn), mx = fmaxf(mx, bmx), smn += bmn, smx += bmx;
        }
        bad += s.run_min[c] != mn || s.run_max[c] != mx;
        bad += fabs(act_stats_avg_min(&s, c) - smn / nb) > 1e-9 * (1 + fabs(smn)) || fabs(act_stats_avg_max(&s, c) - smx / nb) > 1e-9 * (1 + fabs(smx));
    }
    CHECKF(bad == 0, "%d channel statistics differ from brute force", bad);
    float amax = 0;
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) {
        amax = fmaxf(amax, fabsf(all[i]));
        sum += all[i];
        sq += (double)all[i] * all[i];
    }
    CHECK(s.absmax == amax);
    CHECK(fabs(act_stats_mean(&s) - sum / n) < 1e-9 * (1 + fabs(sum / n)));
    CHECK(fabs(act_stats_std(&s) - sqrt(sq / n - (sum / n) * (sum / n))) < 1e-6);
    // histogram: complete, covering every value, each in its final-grid bin (boundary rounding may move a handful)
    uint64_t tot = 0, * ref = calloc(ACT_HIST_BINS, sizeof(uint64_t));
    for (int i = 0; i < ACT_HIST_BINS; i++) tot += s.hist[i];
    CHECK(tot == (uint64_t)n);
    int64_t outside = 0;
    for (int64_t i = 0; i < n; i++) {
        double f = ((double)all[i] - s.hist_lo) / s.hist_w;
        if (f < 0 || f >= ACT_HIST_BINS) outside++;
        int64_t b = (int64_t)f;
        b = b < 0 ? 0 : (b >= ACT_HIST_BINS ? ACT_HIST_BINS - 1 : b);
        ref[b]++;
    }
    CHECKF(outside == 0, "%lld values fall outside the histogram range", (long long)outside);
    int64_t moved = 0;
    for (int i = 0; i < ACT_HIST_BINS; i++) moved += llabs((long long)s.hist[i] - (long long)ref[i]);
    CHECKF(moved <= 4, "%lld counts differ from binning on the final grid", (long long)moved);
    // percentiles of |x|: log bins are 1/64 octave wide, so within ~1.1 % of the exact order statistic
    double qs[] = {0.5, 0.99, 0.999, 0.9999};
    for (int k = 0; k < 4; k++) {
        double got = act_stats_abs_quantile(&s, qs[k]), want = exact_abs_quantile(all, n, qs[k]);
        CHECKF(fabs(got - want) <= 0.012 * want, "quantile %g: got %g, exact %g", qs[k], got, want);
    }
    CHECK(act_stats_abs_quantile(&s, 1.0) <= amax * 1.0001 && act_stats_abs_quantile(&s, 1.0) >= amax * 0.98);
    // merging two halves gives the same statistics as one accumulator
    act_stats_merge(&part[0], &part[1]);
    CHECK(part[0].n_values == n && part[0].absmax == amax);
    bad = 0;
    for (int64_t c = 0; c < C; c++)
        bad += part[0].run_min[c] != s.run_min[c] || part[0].run_max[c] != s.run_max[c] ||
               fabs(part[0].sum_bmax[c] - s.sum_bmax[c]) > 1e-9 * (1 + fabs(s.sum_bmax[c]));
    CHECKF(bad == 0, "merged channel statistics differ in %d channels", bad);
    tot = 0;
    for (int i = 0; i < ACT_HIST_BINS; i++) tot += part[0].hist[i];
    CHECK(tot == (uint64_t)n);
    for (int k = 0; k < 4; k++)
        CHECK(act_stats_abs_quantile(&part[0], qs[k]) == act_stats_abs_quantile(&s, qs[k]));
    free(ref);
    free(all);
    act_stats_free(&s);
    act_stats_free(&part[0]);
    act_stats_free(&part[1]);
    return test_finish("test-actstats");
}
