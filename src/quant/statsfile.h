/*
 * statsfile.h — activation statistics on disk (`sd3q collect-activations` writes them, `analyze` and `plot` read
 * them) and in memory as a (step × layer) table. Format in docs/FORMATS.md ("Activation statistics").
 *
 *   DIR/stats.json                 versioned index: steps (σ, timestep), layers (name, channels, post-GELU), per-cell
 *                                  scalars; only relative file names
 *   DIR/step_NNN.safetensors       per-cell vectors: "<layer>.run_min", ".run_max", ".avg_min", ".avg_max", ".hist",
 *                                  and ".shift" for post-GELU layers
 */
#ifndef SD3Q_QUANT_STATSFILE_H
#define SD3Q_QUANT_STATSFILE_H

#include <stdint.h>

#include "core/status.h"
#include "quant/actstats.h"

#define STATS_FORMAT  "sd3q-activation-stats"
#define STATS_VERSION 1

// One (step, layer) cell as stored: the scalars and the per-channel vectors.
struct stats_cell {
    int64_t  n_batches, n_values;
    double   absmax, min, max, mean, std, p99, p999, p9999;
    double   hist_lo, hist_w;   // signed histogram grid
    float *  run_min, * run_max, * avg_min, * avg_max;  // [C]
    float *  shift;             // [C] post-GELU layers: momentum (0.95) average over steps of (min+max)/2, else NULL
    float *  hist;              // [ACT_HIST_BINS] counts
};

struct stats_layer {
    char    name[64];           // e.g. "mm3.img.mlp.fc2"
    int64_t C;
    int     post_gelu;          // fc2 inputs
};

struct stats_step {
    int   index;                // denoising step index in the calibration run
    float sigma, timestep;
};

struct stats_table {
    int                  n_steps, n_layers;
    struct stats_step *  steps;   // sorted by σ descending (sampling order)
    struct stats_layer * layers;
    struct stats_cell *  cells;   // [n_steps × n_layers], row-major by step; cells with n_batches == 0 are empty
    int                  calib_steps;      // steps of the calibration run
    int                  calib_images;     // images replayed
    char                 model[1024];      // model path as given at collection time (informational)
};

// The cell of (step s, layer l).
static inline struct stats_cell * stats_at(const struct stats_table * t, int s, int l) { return &t->cells[(int64_t)s * t->n_layers + l]; }

// Fills a stored cell from an accumulator (vectors are copied; the shift is given separately, may be NULL).
enum sd3q_status stats_cell_from_acc(struct stats_cell * c, const struct act_stats * a, const float * shift, struct sd3q_errbuf * e);

// Writes step `s` of the table to DIR/step_NNN.safetensors (atomic).
enum sd3q_status stats_write_step(const struct stats_table * t, int s, const char * dir, struct sd3q_errbuf * e);

// Writes DIR/stats.json (atomic) for every step written so far.
enum sd3q_status stats_write_index(const struct stats_table * t, const char * dir, struct sd3q_errbuf * e);

// Reads DIR/stats.json and every step file it lists; validates versions, names, channel counts and vector shapes.
enum sd3q_status stats_read(const char * dir, struct stats_table * t, struct sd3q_errbuf * e);

// Frees everything the table owns.
void stats_free(struct stats_table * t);

#endif
