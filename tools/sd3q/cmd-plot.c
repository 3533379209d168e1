/*
 * cmd-plot.c — `sd3q plot`: figures of activation statistics (range across σ, post-GELU shifts, per-channel ranges with
 * outliers, a layer × step heat map of absmax, histograms) and an index.html showing them; drawn by gnuplot
 * (src/quant/plot.c, docs/QUANT.md "Plots").
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "quant/plot.h"

// `sd3q plot`: parses the options and draws (quant_plot); prints each figure written.
int cmd_plot(int argc, char ** argv) {
    const char * stats = NULL, * out = NULL, * config = NULL, * gnuplot = NULL;
    double sigma = -1;
    struct opt opts[] = {
        {"--stats", OPT_STR, &stats, "statistics folder written by collect-activations", 0, 0, 1, 0},
        {"--out", OPT_STR, &out, "folder for the PNGs and index.html (default STATS/plots; an earlier plot there is replaced)", 0, 0, 0, 0},
        {"--config", OPT_STR, &config, "config written by analyze: mark its timestep groups and outlier channels", 0, 0, 0, 0},
        {"--sigma", OPT_FLOAT, &sigma, "σ of the step the per-channel figures show (default: the middle collected step)", 0, 1.5, 0, 0},
        {"--gnuplot", OPT_STR, &gnuplot, "the gnuplot program (default: gnuplot on PATH)", 0, 0, 0, 0},
    };
    int r = args_parse(argc, argv, 2, "plot",
                       "Draw activation statistics as PNG figures plus an index.html that shows them all: per layer kind, absmax\n"
                       "and p99.9 of |x| across σ; post-GELU shift trajectories; per-channel ranges with outlier channels marked;\n"
                       "a layer × step heat map of absmax; histograms of the heaviest-tailed layers (docs/QUANT.md, \"Plots\").\n"
                       "Needs gnuplot (Debian: apt-get install gnuplot-nox). A failure leaves no partial output.",
                       opts, sizeof opts / sizeof opts[0], NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    char outbuf[4096];
    if (!out) {
        snprintf(outbuf, sizeof outbuf, "%s/plots", stats);
        out = outbuf;
    }
    struct plot_params p = {stats, out, config, gnuplot, sigma};
    struct plot_result res;
    struct sd3q_errbuf e;
    if (quant_plot(&p, &res, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q plot: %s\n", e.msg);
        return 1;
    }
    for (int i = 0; i < res.n_figures; i++) printf("%s/%s  %s\n", out, res.figures[i].file, res.figures[i].title);
    printf("%s/index.html  (%d figures)\n", out, res.n_figures);
    return 0;
}
