/*
 * plot.h — `sd3q plot`: figures of activation statistics for a researcher (docs/QUANT.md, "Plots"). The numbers are
 * prepared here; gnuplot (Debian's gnuplot-nox, found on PATH at run time) draws the PNGs from the data files and
 * scripts this module writes. Everything is built in a temporary sibling folder of the output, which replaces the
 * output only when every figure and index.html exist: a failure leaves no partial output.
 */
#ifndef SD3Q_QUANT_PLOT_H
#define SD3Q_QUANT_PLOT_H

#include "core/status.h"

struct plot_params {
    const char * stats_dir;   // written by `sd3q collect-activations`
    const char * out_dir;     // created or replaced (an existing folder must hold only an earlier plot's files)
    const char * config;      // optional `sd3q analyze` config: timestep groups and outlier channels come from it
    const char * gnuplot;     // program name or path; NULL = "gnuplot" on PATH
    double       sigma;       // σ of the step shown in the per-channel figures; < 0 = the middle collected step
};

// One figure written.
struct plot_figure {
    char file[128];            // relative to out_dir
    char title[160];
};

struct plot_result {
    int                n_figures;
    struct plot_figure figures[48];   // in the order index.html shows them
};

// Writes the figures and OUT/index.html. SD3Q_ERR_MISSING when gnuplot is not found (the message gives the
// apt-get line); SD3Q_ERR_FORMAT / _IO for a malformed statistics folder or config, or when gnuplot fails.
enum sd3q_status quant_plot(const struct plot_params * p, struct plot_result * r, struct sd3q_errbuf * e);

// The executable gnuplot would run as (a malloc'd path), or NULL when it is not found.
char * plot_find_gnuplot(const char * name);

#endif
