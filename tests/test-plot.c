/*
 * test-plot.c — `sd3q plot` (src/quant/plot.c) on synthetic activation statistics written with the library's own
 * writer: every expected figure is a real PNG of a sensible size and index.html shows each with relative links only;
 * the planted outlier layer tops the outlier table; a config's groups are used; a second run replaces the first; a
 * folder holding other files is refused; a malformed statistics folder, a missing gnuplot and a gnuplot that fails
 * after drawing all fail with a clear message and leave no output and no temporary folder.
 *
 * Without gnuplot the drawing checks print SKIP (the missing-gnuplot error is still checked). The same program writes a
 * statistics folder for tests/cli-plot.sh:   test-plot --write-stats DIR [BLOCKS STEPS DIM]
 */
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "quant/actconfig.h"
#include "quant/plot.h"
#include "quant/statsfile.h"
#include "testutil.h"

#define OUTLIER_LAYER "mm1.img.mlp.fc1"

// tanh-approximation GELU, as the MMDiT applies it.
static float gelu(float x) { return 0.5f * x * (1.0f + tanhf(0.7978845608f * (x + 0.044715f * x * x * x))); }

// Writes a statistics folder shaped like SD3's: per block q|k|v, projection, fc1, fc2 (post-GELU, 4× wider) for the
// image and text streams (the last block's text stream has only q|k|v), ranges that grow with depth and as σ falls,
// one planted ×30 outlier channel in OUTLIER_LAYER and milder ones elsewhere, post-GELU centres that drift with σ.
static int write_stats(const char * dir, int blocks, int steps, int D) {
    static const char * const kinds[] = {"attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"};
    struct stats_table t;
    memset(&t, 0, sizeof t);
    int cap = blocks * 8;
    t.layers = calloc((size_t)cap, sizeof(*t.layers));
    t.steps = calloc((size_t)steps, sizeof(*t.steps));
    float sig[1024];
    if (!t.layers || !t.steps || steps > 1000) return 1;
    for (int b = 0; b < blocks; b++) {
        for (int s = 0; s < 2; s++) {  // q|k|v of both streams first, as the model computes them
            struct stats_layer * ly = &t.layers[t.n_layers++];
            snprintf(ly->name, sizeof ly->name, "mm%d.%s.attn.qkv", b, s ? "txt" : "img");
            ly->C = D;
        }
        for (int s = 0; s < 2; s++) {
            if (s == 1 && b == blocks - 1) continue;
            for (int k = 1; k < 4; k++) {
                struct stats_layer * ly = &t.layers[t.n_layers++];
                snprintf(ly->name, sizeof ly->name, "mm%d.%s.%s", b, s ? "txt" : "img", kinds[k]);
                ly->C = k == 3 ? 4 * D : D;
                ly->post_gelu = k == 3;
            }
        }
    }
    sd3q_schedule(steps, 3.0f, sig);
    t.n_steps = steps, t.calib_steps = steps, t.calib_images = 3;
    snprintf(t.model, sizeof t.model, "synthetic <test> & \"model\"");
    t.cells = calloc((size_t)t.n_layers * (size_t)steps, sizeof(*t.cells));
    float ** shift = calloc((size_t)t.n_layers, sizeof(float *));
    if (!t.cells || !shift) return 1;
    const int rows = 24, nb = 3;
    float * x = malloc(sizeof(float) * (size_t)rows * 4 * (size_t)D);
    if (!x) return 1;
    struct sd3q_errbuf e;
    for (int s = 0; s < steps; s++) {
        float sg = sig[s];
        t.steps[s] = (struct stats_step){s, sg, sg * 1000};
        for (int l = 0; l < t.n_layers; l++) {
            const struct stats_layer * ly = &t.layers[l];
            int blk = atoi(ly->name + 2), txt = strstr(ly->name, ".txt.") != NULL;
            int64_t C = ly->C;
            struct act_stats a;
            if (act_stats_init(&a, C) != 0) return 1;
            double mag = (1.0 + 0.4 * blk) * (txt ? 2.0 + sg : 1.0 + 2.0 * (1.0 - sg));
            for (int bi = 0; bi < nb; bi++) {
                fill_randn(x, rows * C, 1.0f);
                for (int r = 0; r < rows; r++)
                    for (int64_t k = 0; k < C; k++) {
                        float * v = &x[r * C + k];
                        if (ly->post_gelu) {
                            float m = (float)(0.6 * sin(0.37 * (double)k) + 1.5 * (1.0 - sg) * cos(0.11 * (double)k + blk));
                            *v = gelu(m + 1.2f * *v);
                        } else {
                            float sc = (float)mag * (k % 97 == 7 ? 3.0f : 1.0f);
                            if (strcmp(ly->name, OUTLIER_LAYER) == 0 && k == 5) sc *= 30.0f;
                            *v = sc * *v + 0.2f * (float)((k % 5) - 2);
                        }
                    }
                act_stats_add(&a, x, rows);
            }
            if (ly->post_gelu) {
                if (!shift[l] && !(shift[l] = malloc(sizeof(float) * (size_t)C))) return 1;
                for (int64_t k = 0; k < C; k++) {
                    float centre = (float)(0.5 * (act_stats_avg_min(&a, k) + act_stats_avg_max(&a, k)));
                    shift[l][k] = s == 0 ? centre : 0.95f * shift[l][k] + 0.05f * centre;
                }
            }
            if (stats_cell_from_acc(stats_at(&t, s, l), &a, ly->post_gelu ? shift[l] : NULL, &e) != SD3Q_OK) {
                fprintf(stderr, "%s\n", e.msg);
                return 1;
            }
            act_stats_free(&a);
        }
        if (stats_write_step(&t, s, dir, &e) != SD3Q_OK) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
    }
    int rc = stats_write_index(&t, dir, &e) == SD3Q_OK ? 0 : 1;
    if (rc) fprintf(stderr, "%s\n", e.msg);
    for (int l = 0; l < t.n_layers; l++) free(shift[l]);
    free(shift), free(x);
    stats_free(&t);
    return rc;
}

// 1 if PATH is a PNG (signature, IHDR) of at least min_w × min_h pixels and min_bytes bytes.
static int is_png(const char * path, int min_w, int min_h, long min_bytes) {
    FILE * f = fopen(path, "rb");
    unsigned char h[24];
    if (!f) return 0;
    int ok = fread(h, 1, 24, f) == 24 && memcmp(h, "\x89PNG\r\n\x1a\n", 8) == 0 && memcmp(h + 12, "IHDR", 4) == 0;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    unsigned w = (unsigned)h[16] << 24 | (unsigned)h[17] << 16 | (unsigned)h[18] << 8 | h[19];
    unsigned hh = (unsigned)h[20] << 24 | (unsigned)h[21] << 16 | (unsigned)h[22] << 8 | h[23];
    return ok && size >= min_bytes && (int)w >= min_w && (int)hh >= min_h;
}

// Entries of a folder whose names contain NEEDLE.
static int count_entries(const char * dir, const char * needle) {
    DIR * d = opendir(dir);
    int n = 0;
    struct dirent * de;
    if (!d) return -1;
    while ((de = readdir(d)) != NULL) n += strstr(de->d_name, needle) != NULL;
    closedir(d);
    return n;
}

// Reads a whole text file (NULL if absent).
static char * slurp(const char * path) {
    char * s = NULL;
    size_t n;
    struct sd3q_errbuf e;
    return read_file(path, 1 << 26, &s, &n, &e) == SD3Q_OK ? s : NULL;
}

// nftw callback: removes one entry.
static int rm_entry(const char * path, const struct stat * sb, int flag, struct FTW * ftw) { return remove(path); }

// Runs a plot expected to fail: the message must hold NEEDLE, and neither OUT nor a temporary folder may remain.
static void expect_fail(const char * what, struct plot_params * p, const char * work, const char * needle) {
    struct sd3q_errbuf e;
    struct plot_result r;
    enum sd3q_status st = quant_plot(p, &r, &e);
    CHECKF(st != SD3Q_OK, "%s: succeeded", what);
    if (st != SD3Q_OK) printf("%-34s → %s\n", what, e.msg);
    CHECKF(st == SD3Q_OK || strstr(e.msg, needle), "%s: message lacks '%s'", what, needle);
    CHECKF(!path_is_dir(p->out_dir), "%s: output folder exists", what);
    CHECKF(count_entries(work, ".tmp.") == 0 && count_entries(work, ".old.") == 0, "%s: temporary folder left", what);
}

int main(int argc, char ** argv) {
    if (argc >= 3 && strcmp(argv[1], "--write-stats") == 0) {
        int blocks = argc > 3 ? atoi(argv[3]) : 3, steps = argc > 4 ? atoi(argv[4]) : 6, dim = argc > 5 ? atoi(argv[5]) : 32;
        if (blocks < 2 || steps < 1 || dim < 8) return 2;
        mkdir(argv[2], 0755);
        return write_stats(argv[2], blocks, steps, dim);
    }
    char work[] = "/tmp/sd3q-test-plot-XXXXXX";
    CHECK(mkdtemp(work) != NULL);
    char stats[512], out[512], cfgp[560], path[700];
    snprintf(stats, sizeof stats, "%s/stats", work);
    snprintf(out, sizeof out, "%s/plots", work);
    snprintf(cfgp, sizeof cfgp, "%s/quant_config.json", stats);
    mkdir(stats, 0755);
    CHECK(write_stats(stats, 3, 6, 32) == 0);
    struct plot_params p = {stats, out, NULL, NULL, -1};
    struct plot_result r;
    struct sd3q_errbuf e;

    // no gnuplot: a clear message with the install line, and no output (checked with or without gnuplot installed)
    p.gnuplot = "/nonexistent/gnuplot";
    expect_fail("gnuplot missing", &p, work, "apt-get install gnuplot-nox");
    p.gnuplot = NULL;
    char * gp = plot_find_gnuplot(NULL);
    if (!gp) {
        printf("SKIP: gnuplot not found on PATH (apt-get install gnuplot-nox); only the missing-gnuplot error was checked\n");
        nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return test_finish("test-plot");
    }
    printf("gnuplot: %s\n", gp);

    // the figures and the page
    CHECKF(quant_plot(&p, &r, &e) == SD3Q_OK, "%s", e.msg);
    const char * want[] = {"range-attn-qkv.png", "range-attn-proj.png", "range-mlp-fc1.png", "range-mlp-fc2.png", "shift-mean.png",
                           "shift-channels.png", "channels-attn-qkv.png", "channels-attn-proj.png", "channels-mlp-fc1.png",
                           "channels-mlp-fc2.png", "absmax-heatmap.png", "hist.png"};
    int nw = (int)(sizeof want / sizeof want[0]);
    CHECKF(r.n_figures == nw, "%d figures, expected %d", r.n_figures, nw);
    snprintf(path, sizeof path, "%s/index.html", out);
    char * html = slurp(path);
    CHECK(html != NULL);
    for (int i = 0; i < nw; i++) {
        snprintf(path, sizeof path, "%s/%s", out, want[i]);
        CHECKF(is_png(path, 800, 500, 8000), "%s is not a PNG of at least 800×500 and 8 kB", want[i]);
        char ref[128];
        snprintf(ref, sizeof ref, "src=\"%s\"", want[i]);
        CHECKF(html && strstr(html, ref), "index.html does not show %s", want[i]);
    }
    for (int i = 0; i < r.n_figures; i++) printf("  %-26s %s\n", r.figures[i].file, r.figures[i].title);
    CHECK(count_entries(out, ".gp") == 0 && count_entries(out, ".dat") == 0 && count_entries(out, ".log") == 0);
    if (html) {
        CHECK(!strstr(html, "src=\"/") && !strstr(html, "href=\"/") && !strstr(html, "http") && !strstr(html, work));
        CHECK(strstr(html, "synthetic &lt;test&gt; &amp; &quot;model&quot;") != NULL);  // escaped
        const char * t = strstr(html, "Largest outlier ratio"), * code = t ? strstr(t, "<code>") : NULL;
        CHECKF(code && strncmp(code + 6, OUTLIER_LAYER "<", strlen(OUTLIER_LAYER) + 1) == 0, "the planted outlier layer %s is not first",
               OUTLIER_LAYER);
        CHECK(strstr(html, "exceeds 2.5") != NULL);
    }
    free(html);

    // with a config: its groups and outliers; a second run replaces the first
    struct stats_table t;
    struct actcfg cfg;
    CHECKF(stats_read(stats, &t, &e) == SD3Q_OK, "%s", e.msg);
    CHECK(actcfg_build(&t, 2, CLIP_ABSMAX, 0, 6, 10, 5, 8, &cfg, &e) == SD3Q_OK);
    CHECKF(actcfg_write(&cfg, cfgp, &e) == SD3Q_OK, "%s", e.msg);
    actcfg_free(&cfg);
    stats_free(&t);
    p.config = cfgp;
    p.sigma = 0.2;
    CHECKF(quant_plot(&p, &r, &e) == SD3Q_OK, "with config: %s", e.msg);
    CHECK(r.n_figures == nw);
    snprintf(path, sizeof path, "%s/index.html", out);
    html = slurp(path);
    CHECK(html && strstr(html, "quant_config.json") && strstr(html, "(2 groups)"));
    free(html);
    CHECK(count_entries(work, ".tmp.") == 0 && count_entries(work, ".old.") == 0);
    p.config = NULL, p.sigma = -1;

    // a folder holding something else is refused and left alone
    char other[600];
    snprintf(other, sizeof other, "%s/mine", work);
    mkdir(other, 0755);
    snprintf(path, sizeof path, "%s/notes.txt", other);
    CHECK(write_file_atomic(path, "x", 1, &e) == SD3Q_OK);
    p.out_dir = other;
    CHECK(quant_plot(&p, &r, &e) == SD3Q_ERR_INVALID_ARG && strstr(e.msg, "notes.txt"));
    CHECK(path_is_file(path) && count_entries(other, ".png") == 0);
    p.out_dir = out;

    // gnuplot failing after it drew the figures: no partial output, the earlier plot stays
    char fake[600];
    snprintf(fake, sizeof fake, "%s/fake-gnuplot", work);
    FILE * f = fopen(fake, "w");
    CHECK(f != NULL);
    if (f) {
        // draws everything, then fails when it was given the figures (the terminal probe passes)
        fprintf(f, "#!/bin/sh\n'%s' \"$@\" || exit 1\ncase \"$*\" in *channels-*) echo 'simulated failure' >&2; exit 1;; esac\n", gp);
        fclose(f);
        chmod(fake, 0755);
    }
    char out2[600];
    snprintf(out2, sizeof out2, "%s/plots2", work);
    p.out_dir = out2, p.gnuplot = fake;
    expect_fail("gnuplot fails after drawing", &p, work, "simulated failure");
    p.out_dir = out;
    CHECK(quant_plot(&p, &r, &e) != SD3Q_OK);
    snprintf(path, sizeof path, "%s/range-mlp-fc2.png", out);
    CHECK(is_png(path, 800, 500, 8000));  // the earlier plot is intact
    p.out_dir = out2, p.gnuplot = NULL;
    free(gp);

    // malformed statistics folders
    char bad[600];
    snprintf(bad, sizeof bad, "%s/bad", work);
    mkdir(bad, 0755);
    snprintf(path, sizeof path, "%s/stats.json", bad);
    CHECK(write_file_atomic(path, "{\"format\": \"sd3q-activation-stats\", \"version\": 1,", 49, &e) == SD3Q_OK);
    p.stats_dir = bad;
    expect_fail("truncated stats.json", &p, work, "stats.json");
    CHECK(write_file_atomic(path, "{\"format\": \"other\"}", 19, &e) == SD3Q_OK);
    expect_fail("foreign stats.json", &p, work, "format");
    p.stats_dir = "/nonexistent/stats";
    expect_fail("missing folder", &p, work, "/nonexistent/stats");
    p.stats_dir = stats;
    snprintf(path, sizeof path, "%s/step_003.safetensors", stats);
    char * keep = NULL;
    size_t n = 0;
    CHECK(read_file(path, 1 << 26, &keep, &n, &e) == SD3Q_OK);
    CHECK(write_file_atomic(path, keep, n / 2, &e) == SD3Q_OK);
    expect_fail("truncated step file", &p, work, "step_003");
    unlink(path);
    expect_fail("missing step file", &p, work, "step_003");
    free(keep);
    if (!g_failures) nftw(work, rm_entry, 16, FTW_DEPTH | FTW_PHYS);  // kept for inspection after a failure
    else printf("files kept in %s\n", work);
    return test_finish("test-plot");
}
