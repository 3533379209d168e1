/*
 * plot.c — `sd3q plot` (see plot.h): activation range across σ per layer kind, post-GELU shift trajectories,
 * per-channel range profiles with outlier channels marked, a layer × step heat map of absmax, histograms, and an
 * index.html with captions and the most extreme layers. The C side computes every number and writes plain-text data
 * plus one gnuplot script per figure into a private staging folder; one gnuplot process then draws them all. Strings that reach a script
 * (layer names) are filtered to characters that cannot start a gnuplot substitution; strings that reach the HTML are
 * escaped; the page links only to files beside it.
 */
#include "quant/plot.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "quant/actconfig.h"
#include "quant/statsfile.h"

#define MAX_KINDS     16
#define MAX_FIGS      48         // 2 per kind + 5
#define N_STREAMS     3
#define TOP_ROWS      8          // rows of each table in index.html
#define OUTLIER_RATIO 2.5        // the rule without a config: channel range > 2.5 × the median range
#define HIST_GROUP    8          // histogram bins merged per drawn bar (2048 → 256)
#define GEN_MARK      "<meta name=\"generator\" content=\"sd3q plot\">"
#define APT_HINT      "install it with: apt-get install gnuplot-nox"

static const char * const stream_names[N_STREAMS] = {"img", "txt", "other"};

// Line colours by block: dark blue → purple → orange (no pale end, so every line stays visible on white).
static const char * const PALETTE_LINES = "set palette defined (0 '#0d0887', 1 '#6a00a8', 2 '#b12a90', 3 '#e16462', 4 '#fca636')\n";
// Heat-map colours (viridis).
static const char * const PALETTE_HEAT =
    "set palette defined (0 '#440154', 1 '#3b528b', 2 '#21918c', 3 '#5ec962', 4 '#fde725')\n";

// ---- text buffers -----------------------------------------------------------------------------------------------------

struct sbuf {
    char * p;
    size_t n, cap;
    int    oom;
};

// Appends printf-style text (an allocation failure is remembered and reported when the buffer is used).
static void sb_printf(struct sbuf * b, const char * fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf * b, const char * fmt, ...) {
    while (!b->oom) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->p ? b->p + b->n : NULL, room, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->n <= (size_t)k) cap *= 2;
        char * q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = cap;
    }
}

// Frees a buffer and empties it.
static void sb_free(struct sbuf * b) {
    free(b->p);
    memset(b, 0, sizeof(*b));
}

// Appends a number for a data file: "NaN" for anything not finite (gnuplot skips it).
static void sb_num(struct sbuf * b, double v) {
    if (isfinite(v)) sb_printf(b, " %.7g", v);
    else sb_printf(b, " NaN");
}

// Appends a positive number for a log axis, NaN otherwise.
static void sb_pos(struct sbuf * b, double v) { sb_num(b, v > 0 ? v : NAN); }

// Appends text as a gnuplot single-quoted string, keeping only characters that cannot start a substitution.
static void sb_gpstr(struct sbuf * b, const char * s) {
    sb_printf(b, "'");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '\'') sb_printf(b, "''");
        else if (ch >= 0x80 || isalnum(ch) || (ch && strchr(" .,:;+-_=()[]/|%#<>*!?&~^", ch))) sb_printf(b, "%c", ch);
        else sb_printf(b, "?");
    }
    sb_printf(b, "'");
}

// Appends text escaped for HTML.
static void sb_html(struct sbuf * b, const char * s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_printf(b, "&amp;"); break;
        case '<': sb_printf(b, "&lt;"); break;
        case '>': sb_printf(b, "&gt;"); break;
        case '"': sb_printf(b, "&quot;"); break;
        case '\'': sb_printf(b, "&#39;"); break;
        default: sb_printf(b, "%c", *s);
        }
    }
}

// ---- what is known about each layer ------------------------------------------------------------------------------------

struct linfo {
    int    block, stream, kind;   // parsed from "mm<block>.<img|txt>.<kind>"; block −1 and stream "other" otherwise
    double peak_absmax, peak_sigma, peak_p999;
    double orat;                  // widest channel range / median range at the representative step (NaN: no data)
    int    n_out;                 // outlier channels there
    int    cfg_l;                 // the config's layer of the same name, or −1
    double shift_max, shift_move; // post-GELU: max |shift|; the largest movement of one channel's shift across σ
    double tail;                  // absmax / p99.9 at the representative step
};

enum { SEC_RANGE, SEC_SHIFT, SEC_CHANNELS, SEC_HEAT, SEC_HIST, N_SECTIONS };

struct plot_ctx {
    const struct stats_table * t;
    const struct actcfg *      cfg;
    const char *               cfg_name;
    struct linfo *             li;
    char                       kinds[MAX_KINDS][48], slugs[MAX_KINDS][48];
    int                        n_kinds, n_blocks;
    int                        rep;        // the representative step (per-channel figures, histograms)
    double                     xmax;       // σ axis from xmax down to 0
    char *                     stage;      // private staging folder
    char *                     gnuplot;    // absolute path of the program
    const char *               term;       // "pngcairo", or "png" when gnuplot lacks cairo
    struct plot_figure         figs[MAX_FIGS];  // drawn by one gnuplot run at the end, one script each
    int                        n_figs;
    struct sbuf                html[N_SECTIONS];  // figure blocks of index.html, by section
    struct sd3q_errbuf *       e;
};

// Splits a layer name into block, stream and kind ("mm3.img.mlp.fc2" → 3, img, "mlp.fc2").
static void parse_layer(const char * name, int * block, int * stream, char * kind, size_t kn) {
    *block = -1, *stream = 2;
    snprintf(kind, kn, "other");
    if (strncmp(name, "mm", 2) != 0 || !isdigit((unsigned char)name[2])) return;
    char * end;
    long b = strtol(name + 2, &end, 10);
    if (*end != '.' || b < 0 || b > 100000) return;
    for (int s = 0; s < 2; s++)
        if (strncmp(end + 1, stream_names[s], 3) == 0 && end[4] == '.' && end[5]) {
            *block = (int)b, *stream = s;
            snprintf(kind, kn, "%s", end + 5);
            return;
        }
}

// Ascending order of doubles (qsort).
static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// Marks the outlier channels of layer l at step s (config factors > 1, else the 2.5 × median-range rule); returns
// how many, and the widest range / median range in *ratio (NaN when the cell is empty). mask may be NULL.
static int outliers(const struct plot_ctx * c, int l, int s, unsigned char * mask, double * ratio) {
    const struct stats_cell * cell = stats_at(c->t, s, l);
    int64_t C = c->t->layers[l].C, nf = 0;
    *ratio = NAN;
    if (mask) memset(mask, 0, (size_t)C);
    if (!cell->n_batches || !cell->avg_min || !cell->avg_max) return 0;
    double * srt = malloc(sizeof(double) * (size_t)C);
    if (!srt) return 0;
    double mx = -INFINITY;
    for (int64_t k = 0; k < C; k++) {
        double r = (double)cell->avg_max[k] - (double)cell->avg_min[k];
        if (isfinite(r)) srt[nf++] = r, mx = fmax(mx, r);
    }
    double med = NAN;
    if (nf) {
        qsort(srt, (size_t)nf, sizeof(double), cmp_double);
        med = nf % 2 ? srt[nf / 2] : 0.5 * (srt[nf / 2 - 1] + srt[nf / 2]);
    }
    free(srt);
    if (nf && med > 1e-12) *ratio = mx / med;
    int n = 0, cl = c->li[l].cfg_l, cg = c->cfg ? actcfg_group_for_sigma(c->cfg, c->t->steps[s].sigma) : -1;
    for (int64_t k = 0; k < C; k++) {
        int o;
        if (c->cfg && cl >= 0) o = actcfg_at(c->cfg, cl, cg)->factor[k] > 1;
        else {
            double r = (double)cell->avg_max[k] - (double)cell->avg_min[k];
            o = med > 1e-12 && r > OUTLIER_RATIO * med;
        }
        if (mask) mask[k] = (unsigned char)o;
        n += o;
    }
    return n;
}

// Fills the per-layer summary: kind, peaks, outlier ratio, shift movement, tail ratio.
static enum sd3q_status layer_info(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    c->li = calloc((size_t)t->n_layers, sizeof(*c->li));
    if (!c->li) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int l = 0; l < t->n_layers; l++) {
        struct linfo * li = &c->li[l];
        char kind[48];
        parse_layer(t->layers[l].name, &li->block, &li->stream, kind, sizeof kind);
        int k = 0;
        while (k < c->n_kinds && strcmp(c->kinds[k], kind) != 0) k++;
        if (k == c->n_kinds) {
            if (c->n_kinds == MAX_KINDS) {  // too many kinds: the rest share the last figure
                k = MAX_KINDS - 1;
                snprintf(c->kinds[k], sizeof c->kinds[k], "other");
            } else {
                snprintf(c->kinds[k], sizeof c->kinds[k], "%s", kind);
                c->n_kinds++;
            }
        }
        li->kind = k;
        if (li->block + 1 > c->n_blocks) c->n_blocks = li->block + 1;
        li->cfg_l = -1;
        if (c->cfg)
            for (int q = 0; q < c->cfg->n_layers; q++)
                if (strcmp(c->cfg->layers[q].name, t->layers[l].name) == 0) li->cfg_l = q;
        li->peak_absmax = li->peak_sigma = li->peak_p999 = NAN;
        for (int s = 0; s < t->n_steps; s++) {
            const struct stats_cell * cell = stats_at(t, s, l);
            if (cell->n_batches && (!(li->peak_absmax >= cell->absmax))) {
                li->peak_absmax = cell->absmax, li->peak_sigma = t->steps[s].sigma, li->peak_p999 = cell->p999;
            }
        }
        li->n_out = outliers(c, l, c->rep, NULL, &li->orat);
        const struct stats_cell * rc = stats_at(t, c->rep, l);
        li->tail = rc->n_batches && rc->p999 > 0 ? rc->absmax / rc->p999 : NAN;
        li->shift_max = li->shift_move = NAN;
        if (t->layers[l].post_gelu) {
            int64_t C = t->layers[l].C;
            float * lo = malloc(sizeof(float) * (size_t)C), * hi = malloc(sizeof(float) * (size_t)C);
            if (!lo || !hi) {
                free(lo), free(hi);
                return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
            }
            int n = 0;
            for (int s = 0; s < t->n_steps; s++) {
                const float * sh = stats_at(t, s, l)->shift;
                if (!stats_at(t, s, l)->n_batches || !sh) continue;
                for (int64_t q = 0; q < C; q++) {
                    lo[q] = n ? fminf(lo[q], sh[q]) : sh[q], hi[q] = n ? fmaxf(hi[q], sh[q]) : sh[q];
                    if (isfinite(sh[q])) li->shift_max = isnan(li->shift_max) ? fabs(sh[q]) : fmax(li->shift_max, fabs(sh[q]));
                }
                n++;
            }
            for (int64_t q = 0; n && q < C; q++) {
                double mv = (double)hi[q] - (double)lo[q];
                if (isfinite(mv)) li->shift_move = isnan(li->shift_move) ? mv : fmax(li->shift_move, mv);
            }
            free(lo), free(hi);
        }
    }
    for (int k = 0; k < c->n_kinds; k++) {  // file-name form of each kind, unique
        char * s = c->slugs[k];
        snprintf(s, sizeof c->slugs[k], "%s", c->kinds[k]);
        for (char * p = s; *p; p++)
            if (!isalnum((unsigned char)*p)) *p = '-';
        for (int q = 0; q < k; q++)
            if (strcmp(c->slugs[q], s) == 0) {
                char tmp[48];
                snprintf(tmp, sizeof tmp, "%.30s-%d", s, k);
                snprintf(s, sizeof c->slugs[k], "%s", tmp);
            }
    }
    return SD3Q_OK;
}

// Indices of the (at most) n largest finite values of v[0..len), largest first; returns how many.
static int top_n(const double * v, int len, int n, int * out) {
    int m = 0;
    for (int i = 0; i < len; i++) {
        if (!isfinite(v[i])) continue;
        int j = m < n ? m++ : n;
        if (j == n && !(v[i] > v[out[n - 1]])) continue;
        if (j == n) j = n - 1;
        while (j > 0 && v[i] > v[out[j - 1]]) out[j] = out[j - 1], j--;
        out[j] = i;
    }
    return m;
}

// ---- staging, files and gnuplot -----------------------------------------------------------------------------------------

char * plot_find_gnuplot(const char * name) {
    if (!name || !*name) name = "gnuplot";
    char buf[PATH_MAX];
    if (strchr(name, '/')) return access(name, X_OK) == 0 && path_is_file(name) ? realpath(name, NULL) : NULL;
    const char * path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    while (*path) {
        const char * colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        if (n && n + strlen(name) + 2 < sizeof buf) {
            snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
            if (access(buf, X_OK) == 0 && path_is_file(buf)) return realpath(buf, NULL);
        }
        path += n + (colon != NULL);
    }
    return NULL;
}

// Writes a buffer to NAME inside the staging folder.
static enum sd3q_status stage_write(struct plot_ctx * c, const char * name, const struct sbuf * b) {
    if (b->oom) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    char * path = path_join(c->stage, name);
    if (!path) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    FILE * f = fopen(path, "wb");
    enum sd3q_status st = SD3Q_OK;
    if (!f || (b->n && fwrite(b->p, 1, b->n, f) != b->n) || fclose(f) != 0) {
        st = err_set(c->e, SD3Q_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        if (f) fclose(f);
    }
    free(path);
    return st;
}

// Runs gnuplot on n scripts in order inside the staging folder (output to gnuplot.log); it stops at the first error,
// and the message then quotes the end of the log, which names the script and line.
static enum sd3q_status run_gnuplot(struct plot_ctx * c, char * const * scripts, int n_scripts, const char * what) {
    char * argv[MAX_FIGS + 4] = {"gnuplot", "-d"};
    for (int i = 0; i < n_scripts && i < MAX_FIGS; i++) argv[2 + i] = scripts[i];
    pid_t pid = fork();
    if (pid < 0) return err_set(c->e, SD3Q_ERR_IO, "cannot start gnuplot: %s", strerror(errno));
    if (pid == 0) {  // child: only async-signal-safe calls
        int nul = open("/dev/null", O_RDONLY);
        if (chdir(c->stage) != 0 || nul < 0) _exit(126);
        int fd = open("gnuplot.log", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(126);
        execv(c->gnuplot, argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return err_set(c->e, SD3Q_ERR_IO, "waiting for gnuplot: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return SD3Q_OK;
    char * log = NULL, * lp = path_join(c->stage, "gnuplot.log");
    size_t n = 0;
    struct sd3q_errbuf ignore;
    if (lp) read_file(lp, 1 << 20, &log, &n, &ignore);
    free(lp);
    const char * tail = log ? log : "";
    while (n && isspace((unsigned char)tail[n - 1])) n--;
    if (log) log[n] = 0;
    if (n > 480) {  // the end of the log names the failing line: keep it, from a line start
        tail += n - 480;
        const char * nl = strchr(tail, '\n');
        if (nl && nl[1]) tail = nl + 1;
    }
    char how[64];
    if (WIFEXITED(status)) snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    else snprintf(how, sizeof how, "signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    enum sd3q_status st = err_set(c->e, SD3Q_ERR_IO, "gnuplot (%s) failed on %s (%s)%s%s", c->gnuplot, what, how, *tail ? ": " : "", tail);
    free(log);
    return st;
}

// Starts a figure script: terminal, output, fonts, grid.
static void gp_begin(struct sbuf * g, const struct plot_ctx * c, const char * png, int w, int h) {
    sb_printf(g, "reset session\n");  // the scripts run in one gnuplot process: nothing carries over
    if (strcmp(c->term, "pngcairo") == 0)
        sb_printf(g, "set terminal pngcairo size %d,%d noenhanced font 'Sans,11' linewidth 1.2\n", w, h);
    else
        sb_printf(g, "set terminal png size %d,%d noenhanced font 'DejaVuSans,10'\n", w, h);
    sb_printf(g, "set encoding utf8\nset output '%s'\nset grid lc rgb '#e0e0e0'\nset border lc rgb '#404040'\n", png);
    sb_printf(g, "set key opaque box lc rgb '#c0c0c0' samplen 3 font ',10'\n");
}

// The σ axis (1 → 0, sampling order) and, with a config, its timestep-group boundaries and names.
static void gp_sigma_axis(struct sbuf * g, const struct plot_ctx * c) {
    sb_printf(g, "set xrange [%.4g:0]\nset xlabel 'noise level σ  (sampling runs from σ = %.3g to 0 →)'\n", c->xmax, c->xmax);
    if (!c->cfg) return;
    double hi = c->xmax;
    for (int g2 = 0; g2 < c->cfg->n_groups; g2++) {
        double lo = g2 + 1 < c->cfg->n_groups ? c->cfg->groups[g2].sigma_lo : 0;
        if (lo > c->xmax) lo = c->xmax;
        if (g2 + 1 < c->cfg->n_groups && lo > 0)
            sb_printf(g, "set arrow from %.6g, graph 0 to %.6g, graph 1 nohead dt 3 lw 1.5 lc rgb '#606060' back\n", lo, lo);
        if (hi - lo > 0.015 * c->xmax)
            sb_printf(g, "set label 'G%d' at %.6g, graph 0.03 center font ',9' tc rgb '#606060'\n", g2 + 1, 0.5 * (hi + lo));
        hi = lo;
    }
}

// Prepares one figure: writes BASE.dat (if data) and BASE.gp, and records the figure and its caption (gnuplot runs once,
// on every script, when all are written).
static enum sd3q_status draw(struct plot_ctx * c, const char * base, struct sbuf * data, struct sbuf * script, int section,
                             const char * title, const char * caption_html) {
    char name[128];
    enum sd3q_status st = SD3Q_OK;
    if (data) {
        snprintf(name, sizeof name, "%s.dat", base);
        st = stage_write(c, name, data);
    }
    snprintf(name, sizeof name, "%s.gp", base);
    if (st == SD3Q_OK) st = stage_write(c, name, script);
    if (st != SD3Q_OK) return st;
    if (c->n_figs == MAX_FIGS) return err_set(c->e, SD3Q_ERR_UNSUPPORTED, "more than %d figures", MAX_FIGS);
    struct plot_figure * f = &c->figs[c->n_figs++];
    snprintf(name, sizeof name, "%s.png", base);
    snprintf(f->file, sizeof f->file, "%s", name);
    snprintf(f->title, sizeof f->title, "%s", title);
    struct sbuf * h = &c->html[section];
    sb_printf(h, "<figure id=\"%s\">\n<a href=\"%s\"><img src=\"%s\" alt=\"", base, name, name);
    sb_html(h, title);
    sb_printf(h, "\"></a>\n<figcaption><b>");
    sb_html(h, title);
    sb_printf(h, ".</b> %s</figcaption>\n</figure>\n", caption_html);
    return h->oom ? err_set(c->e, SD3Q_ERR_OOM, "out of memory") : SD3Q_OK;
}

// "σ = 0.512 (step 14)" of step s.
static void step_label(const struct plot_ctx * c, int s, char * buf, size_t n) {
    snprintf(buf, n, "σ = %.3f (step %d)", c->t->steps[s].sigma, c->t->steps[s].index);
}

// ---- figure 1: range across σ per layer kind -------------------------------------------------------------------------

// absmax and p99.9 of |x| versus σ for every layer of kind k, one panel per stream, one line per block.
static enum sd3q_status fig_range(struct plot_ctx * c, int k) {
    const struct stats_table * t = c->t;
    struct sbuf d = {0}, g = {0};
    int * blk = malloc(sizeof(int) * (size_t)t->n_layers);
    int first[N_STREAMS] = {0}, count[N_STREAMS] = {0}, idx = 0, panels = 0;
    if (!blk) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int sm = 0; sm < N_STREAMS; sm++) {
        first[sm] = idx;
        for (int l = 0; l < t->n_layers; l++) {
            if (c->li[l].kind != k || c->li[l].stream != sm || !(c->li[l].peak_absmax > 0)) continue;
            for (int s = 0; s < t->n_steps; s++) {
                const struct stats_cell * cell = stats_at(t, s, l);
                if (!cell->n_batches) continue;
                sb_num(&d, t->steps[s].sigma);
                sb_pos(&d, cell->absmax);
                sb_pos(&d, cell->p999);
                sb_printf(&d, "\n");
            }
            sb_printf(&d, "\n\n");
            blk[idx++] = c->li[l].block < 0 ? 0 : c->li[l].block;
            count[sm]++;
        }
        panels += count[sm] > 0;
    }
    enum sd3q_status st = SD3Q_OK;
    if (!panels) goto done;
    char base[80], png[96], title[160];
    snprintf(base, sizeof base, "range-%s", c->slugs[k]);
    snprintf(png, sizeof png, "%s.png", base);
    snprintf(title, sizeof title, "%s: activation range across σ", c->kinds[k]);
    gp_begin(&g, c, png, panels == 1 ? 1000 : 1600, 620);
    sb_printf(&g, "%sset cbrange [0:%d]\nset cblabel 'block'\nset cbtics 1 font ',9'\n", PALETTE_LINES, c->n_blocks > 1 ? c->n_blocks - 1 : 1);
    if (c->n_blocks > 12) sb_printf(&g, "set cbtics %d\n", (c->n_blocks + 7) / 8);
    sb_printf(&g, "set logscale y\nset ylabel '|x|  (activation value, log scale)'\nunset key\n");
    gp_sigma_axis(&g, c);
    sb_printf(&g, "set multiplot layout 1,%d title ", panels);
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\n");
    for (int sm = 0; sm < N_STREAMS; sm++) {
        if (!count[sm]) continue;
        char pt[128];
        snprintf(pt, sizeof pt, "%s stream, %d layer%s: solid = absmax of |x|, dashed = p99.9 of |x|", stream_names[sm], count[sm],
                 count[sm] == 1 ? "" : "s");
        sb_printf(&g, "set title ");
        sb_gpstr(&g, pt);
        sb_printf(&g, "\narray B%d[%d] = [", sm, count[sm]);
        for (int i = 0; i < count[sm]; i++) sb_printf(&g, "%s%d", i ? "," : "", blk[first[sm] + i]);
        sb_printf(&g, "]\nplot for [i=1:%d] '%s.dat' index (%d+i-1) u 1:2 w lp pt 7 ps 0.45 lw 1.6 lc palette cb B%d[i] notitle, \\\n"
                      "     for [i=1:%d] '%s.dat' index (%d+i-1) u 1:3 w l dt 2 lw 1 lc palette cb B%d[i] notitle\n",
                  count[sm], base, first[sm], sm, count[sm], base, first[sm], sm);
    }
    sb_printf(&g, "unset multiplot\n");
    char cap[1200];
    snprintf(cap, sizeof cap,
             "One line per <code>%s</code> layer, coloured by block (dark = first block, orange = last); solid: absmax of |x| over "
             "the step's calibration images, dashed: its 99.9th percentile. σ runs as sampling does, from pure noise (left) "
             "to the clean image (right). A wide gap between the solid and dashed line of a layer means a few extreme values "
             "set its range (clipping to a percentile is cheap there); a line that climbs or falls along σ is a layer whose "
             "range depends on the timestep%s.",
             c->kinds[k], c->cfg ? "; dotted verticals are the config's timestep-group boundaries (G1, G2, …)" : "");
    st = draw(c, base, &d, &g, SEC_RANGE, title, cap);
done:
    free(blk);
    sb_free(&d), sb_free(&g);
    return st;
}

// ---- figure 2: post-GELU shift trajectories ---------------------------------------------------------------------------

// Mean |shift| over channels versus σ for every post-GELU layer (panels by stream, colour by block).
static enum sd3q_status fig_shift_mean(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    struct sbuf d = {0}, g = {0};
    int * blk = malloc(sizeof(int) * (size_t)t->n_layers);
    int first[N_STREAMS] = {0}, count[N_STREAMS] = {0}, idx = 0, panels = 0;
    if (!blk) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int sm = 0; sm < N_STREAMS; sm++) {
        first[sm] = idx;
        for (int l = 0; l < t->n_layers; l++) {
            if (c->li[l].stream != sm || !isfinite(c->li[l].shift_max)) continue;
            for (int s = 0; s < t->n_steps; s++) {
                const struct stats_cell * cell = stats_at(t, s, l);
                if (!cell->n_batches || !cell->shift) continue;
                double m = 0;
                int64_t n = 0;
                for (int64_t q = 0; q < t->layers[l].C; q++)
                    if (isfinite(cell->shift[q])) m += fabs(cell->shift[q]), n++;
                sb_num(&d, t->steps[s].sigma);
                sb_num(&d, n ? m / (double)n : NAN);
                sb_printf(&d, "\n");
            }
            sb_printf(&d, "\n\n");
            blk[idx++] = c->li[l].block < 0 ? 0 : c->li[l].block;
            count[sm]++;
        }
        panels += count[sm] > 0;
    }
    enum sd3q_status st = SD3Q_OK;
    if (!panels) goto done;
    const char * base = "shift-mean", * title = "Post-GELU shift: mean |shift| over channels across σ";
    gp_begin(&g, c, "shift-mean.png", panels == 1 ? 1000 : 1600, 560);
    sb_printf(&g, "%sset cbrange [0:%d]\nset cblabel 'block'\nset cbtics 1 font ',9'\n", PALETTE_LINES, c->n_blocks > 1 ? c->n_blocks - 1 : 1);
    if (c->n_blocks > 12) sb_printf(&g, "set cbtics %d\n", (c->n_blocks + 7) / 8);
    sb_printf(&g, "set ylabel 'mean over channels of |shift|  (activation value)'\nunset key\n");
    gp_sigma_axis(&g, c);
    sb_printf(&g, "set multiplot layout 1,%d title ", panels);
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\n");
    for (int sm = 0; sm < N_STREAMS; sm++) {
        if (!count[sm]) continue;
        sb_printf(&g, "set title '%s stream: %d post-GELU layer%s (colour = block)'\narray B%d[%d] = [", stream_names[sm], count[sm],
                  count[sm] == 1 ? "" : "s", sm, count[sm]);
        for (int i = 0; i < count[sm]; i++) sb_printf(&g, "%s%d", i ? "," : "", blk[first[sm] + i]);
        sb_printf(&g, "]\nplot for [i=1:%d] '%s.dat' index (%d+i-1) u 1:2 w lp pt 7 ps 0.45 lw 1.6 lc palette cb B%d[i]\n", count[sm], base,
                  first[sm], sm);
    }
    sb_printf(&g, "unset multiplot\n");
    char cap[900];
    snprintf(cap, sizeof cap,
             "The inputs of the MLP's second Linear (fc2) follow a GELU, so they are skewed and their per-channel centre "
             "moves with σ. The shift subtracted before quantizing is a momentum average (0.95, over steps in sampling "
             "order) of each channel's centre (avg min + avg max)/2. One line per layer: the mean over channels of |shift| "
             "at each step. A line that keeps moving late in sampling means one shift for all timesteps would be stale%s.",
             c->cfg ? "; the config computes one shift per timestep group (dotted verticals)" : "");
    st = draw(c, base, &d, &g, SEC_SHIFT, title, cap);
done:
    free(blk);
    sb_free(&d), sb_free(&g);
    return st;
}

// The shift trajectories of the channels that move most, for the (at most) four post-GELU layers that move most.
static enum sd3q_status fig_shift_channels(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    enum { NL = 4, NCH = 5 };
    double * mv = malloc(sizeof(double) * (size_t)t->n_layers);
    if (!mv) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int l = 0; l < t->n_layers; l++) mv[l] = c->li[l].shift_move > 0 ? c->li[l].shift_move : NAN;
    int lay[NL], nl = top_n(mv, t->n_layers, NL, lay);
    free(mv);
    if (!nl) return SD3Q_OK;
    struct sbuf d = {0}, g = {0};
    int chans[NL][NCH], nch[NL], idx = 0;
    enum sd3q_status st = SD3Q_OK;
    for (int i = 0; i < nl && st == SD3Q_OK; i++) {
        int l = lay[i];
        int64_t C = t->layers[l].C;
        double * lo = malloc(sizeof(double) * (size_t)C), * hi = malloc(sizeof(double) * (size_t)C);
        if (!lo || !hi) {
            free(lo), free(hi);
            st = err_set(c->e, SD3Q_ERR_OOM, "out of memory");
            break;
        }
        for (int64_t q = 0; q < C; q++) lo[q] = INFINITY, hi[q] = -INFINITY;
        for (int s = 0; s < t->n_steps; s++) {
            const float * sh = stats_at(t, s, l)->shift;
            if (!stats_at(t, s, l)->n_batches || !sh) continue;
            for (int64_t q = 0; q < C; q++)
                if (isfinite(sh[q])) lo[q] = fmin(lo[q], sh[q]), hi[q] = fmax(hi[q], sh[q]);
        }
        for (int64_t q = 0; q < C; q++) hi[q] -= lo[q];  // movement (NaN/−∞ where never finite: skipped by top_n)
        nch[i] = top_n(hi, C > INT_MAX ? INT_MAX : (int)C, NCH, chans[i]);
        free(lo), free(hi);
        for (int j = 0; j < nch[i]; j++) {
            int q = chans[i][j];
            for (int s = 0; s < t->n_steps; s++) {
                const struct stats_cell * cell = stats_at(t, s, l);
                if (!cell->n_batches || !cell->shift) continue;
                sb_num(&d, t->steps[s].sigma);
                sb_num(&d, cell->shift[q]);
                sb_num(&d, 0.5 * ((double)cell->avg_min[q] + (double)cell->avg_max[q]));
                sb_printf(&d, "\n");
            }
            sb_printf(&d, "\n\n");
        }
    }
    if (st != SD3Q_OK) goto done;
    const char * base = "shift-channels", * title = "Post-GELU shift: the channels that move most";
    int cols = nl == 1 ? 1 : 2, rows = (nl + 1) / 2;
    gp_begin(&g, c, "shift-channels.png", cols == 1 ? 1000 : 1600, 80 + 480 * rows);
    sb_printf(&g, "set ylabel 'shift  (activation value)'\nset key outside right top vertical\n");
    gp_sigma_axis(&g, c);
    sb_printf(&g, "set multiplot layout %d,%d title ", rows, cols);
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\n");
    for (int i = 0; i < nl; i++) {
        char pt[160];
        snprintf(pt, sizeof pt, "%s: a channel's shift moves up to %.3g", t->layers[lay[i]].name, c->li[lay[i]].shift_move);
        sb_printf(&g, "set title ");
        sb_gpstr(&g, pt);
        sb_printf(&g, "\narray CH%d[%d] = [", i, nch[i]);
        for (int j = 0; j < nch[i]; j++) sb_printf(&g, "%s%d", j ? "," : "", chans[i][j]);
        sb_printf(&g, "]\nplot for [j=1:%d] '%s.dat' index (%d+j-1) u 1:2 w l lw 2 lc j t sprintf('ch %%d', CH%d[j]), \\\n"
                      "     for [j=1:%d] '%s.dat' index (%d+j-1) u 1:3 w p pt 7 ps 0.6 lc j notitle, \\\n"
                      "     NaN w p pt 7 ps 0.6 lc rgb 'black' t 'step centre (min+max)/2'\n",
                  nch[i], base, idx, i, nch[i], base, idx);
        idx += nch[i];
    }
    sb_printf(&g, "unset multiplot\n");
    st = draw(c, base, &d, &g, SEC_SHIFT, title,
              "For the post-GELU layers whose shift moves most across σ, the channels that move most. Lines: the shift "
              "(momentum-0.95 trajectory over steps in sampling order); dots of the same colour: that step's own centre "
              "(avg min + avg max)/2. The distance between a dot and its line is what a shift computed on earlier steps "
              "misses at that step.");
done:
    sb_free(&d), sb_free(&g);
    return st;
}

// ---- figure 3: per-channel range profiles ------------------------------------------------------------------------------

// For kind k, per stream, the layer with the widest outlier ratio: every channel's AvgMinMax and running range at the
// representative step, outlier channels in red (the largest labelled with their index).
static enum sd3q_status fig_channels(struct plot_ctx * c, int k) {
    const struct stats_table * t = c->t;
    const int s = c->rep;
    int pick[N_STREAMS], panels = 0;
    for (int sm = 0; sm < N_STREAMS; sm++) {
        pick[sm] = -1;
        for (int l = 0; l < t->n_layers; l++)
            if (c->li[l].kind == k && c->li[l].stream == sm && isfinite(c->li[l].orat) &&
                (pick[sm] < 0 || c->li[l].orat > c->li[pick[sm]].orat))
                pick[sm] = l;
        panels += pick[sm] >= 0;
    }
    if (!panels) return SD3Q_OK;
    struct sbuf d = {0}, g = {0};
    char base[80], png[96], title[160], sl[64];
    snprintf(base, sizeof base, "channels-%s", c->slugs[k]);
    snprintf(png, sizeof png, "%s.png", base);
    step_label(c, s, sl, sizeof sl);
    snprintf(title, sizeof title, "%s: per-channel range at %s", c->kinds[k], sl);
    gp_begin(&g, c, png, 1600, 80 + 440 * panels);
    sb_printf(&g, "set xlabel 'input channel'\nset ylabel 'x  (activation value)'\nset key outside right top vertical\n");
    sb_printf(&g, "set multiplot layout %d,1 title ", panels);
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\n");
    enum sd3q_status st = SD3Q_OK;
    int idx = 0;
    for (int sm = 0; sm < N_STREAMS && st == SD3Q_OK; sm++) {
        int l = pick[sm];
        if (l < 0) continue;
        int64_t C = t->layers[l].C;
        const struct stats_cell * cell = stats_at(t, s, l);
        unsigned char * mask = malloc((size_t)C);
        double * rng = malloc(sizeof(double) * (size_t)C);
        if (!mask || !rng) {
            free(mask), free(rng);
            st = err_set(c->e, SD3Q_ERR_OOM, "out of memory");
            break;
        }
        double ratio;
        int n_out = outliers(c, l, s, mask, &ratio);
        for (int64_t q = 0; q < C; q++) {
            sb_printf(&d, "%lld", (long long)q);
            sb_num(&d, cell->avg_min[q]);
            sb_num(&d, cell->avg_max[q]);
            sb_num(&d, cell->run_min[q]);
            sb_num(&d, cell->run_max[q]);
            sb_num(&d, cell->shift ? cell->shift[q] : NAN);
            sb_printf(&d, "\n");
            rng[q] = mask[q] ? (double)cell->avg_max[q] - (double)cell->avg_min[q] : NAN;
        }
        sb_printf(&d, "\n\n");
        sb_printf(&d, "NaN NaN NaN\n");  // never an empty data set: gnuplot would not count it in `index`
        for (int64_t q = 0; q < C; q++)
            if (mask[q]) {
                sb_printf(&d, "%lld", (long long)q);
                sb_num(&d, cell->avg_min[q]);
                sb_num(&d, cell->avg_max[q]);
                sb_printf(&d, "\n");
            }
        sb_printf(&d, "\n\n");
        int lab[6], nlab = top_n(rng, C > INT_MAX ? INT_MAX : (int)C, 6, lab);
        sb_printf(&d, "NaN NaN 0\n");
        for (int j = 0; j < nlab; j++) {
            sb_printf(&d, "%d", lab[j]);
            sb_num(&d, cell->avg_max[lab[j]]);
            sb_printf(&d, " %d\n", lab[j]);
        }
        sb_printf(&d, "\n\n");
        free(mask), free(rng);
        char pt[400], rule[128];
        if (c->cfg && c->li[l].cfg_l >= 0) snprintf(rule, sizeof rule, "config group G%d", actcfg_group_for_sigma(c->cfg, t->steps[s].sigma) + 1);
        else snprintf(rule, sizeof rule, "range > %.1f × median", OUTLIER_RATIO);
        snprintf(pt, sizeof pt, "%s: %d outlier channel%s (%s); widest range %.3g × the median", t->layers[l].name, n_out, n_out == 1 ? "" : "s",
                 rule, ratio);
        sb_printf(&g, "set title ");
        sb_gpstr(&g, pt);
        sb_printf(&g, "\nset xrange [-0.5:%g]\n", (double)C - 0.5);
        sb_printf(&g, "plot '%s.dat' index %d u 1:4:5 w filledcurves fc rgb '#cfdcec' t 'running min … max', \\\n"
                      "     '%s.dat' index %d u 1:2:3 w filledcurves fc rgb '#3b6ea8' t 'avg min … avg max (AvgMinMax)'",
                  base, idx, base, idx);
        if (cell->shift) sb_printf(&g, ", \\\n     '%s.dat' index %d u 1:6 w l lw 1.2 lc rgb '#ff9f1c' t 'shift (momentum centre)'", base, idx);
        if (n_out)
            sb_printf(&g, ", \\\n     '%s.dat' index %d u 1:2:(0):($3-$2) w vectors nohead lw 2.5 lc rgb '#d62728' t 'outlier channels (%d)', \\\n"
                          "     '%s.dat' index %d u 1:2:(stringcolumn(3)) w labels offset 0,0.8 font ',9' tc rgb '#d62728' notitle",
                      base, idx + 1, n_out, base, idx + 2);
        sb_printf(&g, "\n");
        idx += 3;
    }
    sb_printf(&g, "unset multiplot\n");
    if (st == SD3Q_OK) {
        char cap[1200];
        snprintf(cap, sizeof cap,
                 "For each stream, the <code>%s</code> layer whose widest channel is furthest above the median channel range, at "
                 "the representative step (%s). Dark band: per channel, the average over calibration images of the "
                 "per-image minimum and maximum (AvgMinMax, what calibration clips to); light band: the running minimum and "
                 "maximum; orange line (post-GELU layers): the shift at that step. Red bars: outlier channels — %s; the largest are "
                 "labelled with their index. A per-tensor "
                 "quantization step is set by the red channels, so every other channel gets only a few levels unless they "
                 "are divided out.",
                 c->kinds[k], sl,
                 c->cfg ? "channels whose divisor in the config is above 1 (the group serving this σ)"
                        : "channels whose range (avg max − avg min) exceeds 2.5 × the median range (no --config given)");
        st = draw(c, base, &d, &g, SEC_CHANNELS, title, cap);
    }
    sb_free(&d), sb_free(&g);
    return st;
}

// ---- figure 4: layer × step heat map of absmax ------------------------------------------------------------------------

// absmax of every (layer, step) cell, layers in model order top to bottom, steps in sampling order, log colours.
static enum sd3q_status fig_heatmap(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    const int T = t->n_steps, L = t->n_layers;
    double lo = INFINITY, hi = 0;
    struct sbuf d = {0}, g = {0};
    for (int s = 0; s < T; s++) {
        for (int l = 0; l < L; l++) {
            const struct stats_cell * cell = stats_at(t, s, l);
            double v = cell->n_batches && cell->absmax > 0 && isfinite(cell->absmax) ? cell->absmax : NAN;
            if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
            sb_printf(&d, "%d %d", s, l);
            sb_num(&d, v);
            sb_printf(&d, "\n");
        }
        sb_printf(&d, "\n");
    }
    if (!(hi > 0)) {
        sb_free(&d);
        return SD3Q_OK;
    }
    if (!(hi > lo * 1.01)) lo = hi / 2;
    const char * title = "absmax of |x| per layer and step";
    int rowpx = L <= 64 ? 16 : L <= 200 ? 6 : 3, w = 520 + 34 * (T < 40 ? T : 40), h = 200 + rowpx * L;
    gp_begin(&g, c, "absmax-heatmap.png", w < 1000 ? 1000 : w, h < 520 ? 520 : h > 3000 ? 3000 : h);
    sb_printf(&g, "%sset logscale cb\nset cbrange [%.6g:%.6g]\nset format cb '%%g'\nset cblabel 'absmax of |x|  (activation value, log scale)'\n",
              PALETTE_HEAT, lo, hi);
    sb_printf(&g, "set title ");
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\nunset key\nunset grid\nset tics out nomirror\n");
    sb_printf(&g, "set xrange [-0.5:%g]\nset yrange [%g:-0.5]\n", T - 0.5, L - 0.5);
    sb_printf(&g, "set xlabel 'denoising step, labelled by σ  (sampling order →)'\nset ylabel 'layer  (model order)'\n");
    int every = T <= 40 ? 1 : (T + 39) / 40;
    sb_printf(&g, "set xtics rotate by 60 right font ',9' (");
    for (int s = 0, n = 0; s < T; s += every, n++) sb_printf(&g, "%s'%.3f' %d", n ? ", " : "", t->steps[s].sigma, s);
    sb_printf(&g, ")\n");
    if (L <= 64) {
        sb_printf(&g, "set ytics font ',8' (");
        for (int l = 0; l < L; l++) {
            sb_printf(&g, "%s", l ? ", " : "");
            sb_gpstr(&g, t->layers[l].name);
            sb_printf(&g, " %d", l);
        }
        sb_printf(&g, ")\n");
    } else {  // one label per block, white lines between blocks
        sb_printf(&g, "set ytics font ',9' (");
        int prev = -2, n = 0, step = c->n_blocks > 40 ? (c->n_blocks + 39) / 40 : 1;
        for (int l = 0; l < L; l++) {
            int b = c->li[l].block;
            if (b == prev) continue;
            if (l > 0) sb_printf(&g, "%s'' %d 1", n++ ? ", " : "", l);  // minor tic at each block start
            if (b >= 0 && b % step == 0) sb_printf(&g, "%s'mm%d' %d", n++ ? ", " : "", b, l);
            prev = b;
        }
        sb_printf(&g, ")\n");
        prev = c->li[0].block;
        for (int l = 1; l < L; l++)
            if (c->li[l].block != prev) {
                sb_printf(&g, "set arrow from -0.5,%g to %g,%g nohead lc rgb '#ffffff' lw 0.8 front\n", l - 0.5, T - 0.5, l - 0.5);
                prev = c->li[l].block;
            }
    }
    sb_printf(&g, "plot 'absmax-heatmap.dat' u 1:2:3 w image\n");
    enum sd3q_status st = draw(c, "absmax-heatmap", &d, &g, SEC_HEAT, title,
                               "Rows: every quantizable Linear's input, in the order the model computes them (block by block; "
                               "within a block q|k|v, projection, fc1, fc2, image stream before text stream). Columns: the collected "
                               "denoising steps from pure noise (left) to the clean image (right). Colour: absmax of |x| at that "
                               "step, on a log scale, so a factor of ten is the same colour distance everywhere. Bright rows are "
                               "the layers an 8-bit per-tensor range serves worst; a row whose colour changes along the steps "
                               "needs timestep-dependent ranges. Blank cells: no statistics.");
    sb_free(&d), sb_free(&g);
    return st;
}

// ---- figure 5: histograms ------------------------------------------------------------------------------------------------

// Signed histograms at the first, the representative and the last step for the (at most) four heaviest-tailed layers.
static enum sd3q_status fig_hist(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    enum { NL = 4 };
    double * tail = malloc(sizeof(double) * (size_t)t->n_layers);
    if (!tail) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int l = 0; l < t->n_layers; l++) tail[l] = c->li[l].tail;
    int lay[NL], nl = top_n(tail, t->n_layers, NL, lay);
    free(tail);
    if (!nl) return SD3Q_OK;
    struct sbuf d = {0}, g = {0};
    const char * base = "hist", * title = "Histograms of the heaviest-tailed layers";
    int cols = nl == 1 ? 1 : 2, rows = (nl + 1) / 2, idx = 0;
    gp_begin(&g, c, "hist.png", cols == 1 ? 1000 : 1600, 80 + 460 * rows);
    sb_printf(&g, "set logscale y\nset format y '%%g'\nset xlabel 'x  (activation value)'\nset ylabel 'density  (per unit of x, log scale)'\n"
                  "set key top right\n");
    sb_printf(&g, "set multiplot layout %d,%d title ", rows, cols);
    sb_gpstr(&g, title);
    sb_printf(&g, " font ',14'\n");
    for (int i = 0; i < nl; i++) {
        int l = lay[i], steps[3], ns = 0;
        int cand[3] = {-1, c->rep, -1};
        for (int s = 0; s < t->n_steps; s++)
            if (stats_at(t, s, l)->n_batches && stats_at(t, s, l)->hist) {
                if (cand[0] < 0) cand[0] = s;
                cand[2] = s;
            }
        for (int j = 0; j < 3; j++) {
            int s = cand[j], dup = 0;
            for (int q = 0; q < ns; q++) dup |= steps[q] == s;
            if (s >= 0 && !dup && stats_at(t, s, l)->n_batches && stats_at(t, s, l)->hist) steps[ns++] = s;
        }
        for (int j = 0; j < ns; j++) {  // sampling order
            for (int q = j + 1; q < ns; q++)
                if (steps[q] < steps[j]) {
                    int x = steps[q];
                    steps[q] = steps[j], steps[j] = x;
                }
        }
        char pt[200];
        snprintf(pt, sizeof pt, "%s: absmax / p99.9 of |x| = %.3g at σ = %.3f", t->layers[l].name, c->li[l].tail, t->steps[c->rep].sigma);
        sb_printf(&g, "set title ");
        sb_gpstr(&g, pt);
        sb_printf(&g, "\nunset arrow\n");
        const struct stats_cell * rc = stats_at(t, c->rep, l);
        if (rc->p999 > 0)
            sb_printf(&g, "set arrow from %.6g, graph 0 to %.6g, graph 1 nohead dt 2 lc rgb '#606060'\n"
                          "set arrow from %.6g, graph 0 to %.6g, graph 1 nohead dt 2 lc rgb '#606060'\n",
                      -rc->p999, -rc->p999, rc->p999, rc->p999);
        sb_printf(&g, "plot ");
        for (int j = 0; j < ns; j++) {
            const struct stats_cell * cell = stats_at(t, steps[j], l);
            double tot = 0;
            for (int b = 0; b < ACT_HIST_BINS; b++) tot += cell->hist[b] > 0 ? cell->hist[b] : 0;
            int b0 = 0, b1 = ACT_HIST_BINS / HIST_GROUP - 1;
            double grp[ACT_HIST_BINS / HIST_GROUP];
            for (int q = 0; q <= b1; q++) {
                grp[q] = 0;
                for (int b = 0; b < HIST_GROUP; b++) grp[q] += cell->hist[q * HIST_GROUP + b] > 0 ? cell->hist[q * HIST_GROUP + b] : 0;
            }
            while (b0 < b1 && grp[b0] == 0) b0++;
            while (b1 > b0 && grp[b1] == 0) b1--;
            double w = HIST_GROUP * cell->hist_w;
            for (int q = b0; q <= b1; q++) {
                sb_num(&d, cell->hist_lo + (q + 0.5) * w);
                sb_pos(&d, tot > 0 ? grp[q] / (tot * w) : NAN);
                sb_printf(&d, "\n");
            }
            sb_printf(&d, "\n\n");
            char lt[96];
            step_label(c, steps[j], lt, sizeof lt);
            sb_printf(&g, "%s'%s.dat' index %d u 1:2 w histeps lw 1.6 lc %d t ", j ? ", " : "", base, idx++, j + 1);
            sb_gpstr(&g, lt);
        }
        if (rc->p999 > 0) sb_printf(&g, ", NaN w l dt 2 lc rgb '#606060' t '± p99.9 at σ = %.3f'", t->steps[c->rep].sigma);
        sb_printf(&g, "\n");
    }
    sb_printf(&g, "unset multiplot\n");
    enum sd3q_status st = draw(c, base, &d, &g, SEC_HIST, title,
                               "The layers with the largest ratio absmax / p99.9 of |x| at the representative step: their extreme "
                               "values lie far beyond the bulk. Each curve is the signed histogram of the inputs at one step (first, "
                               "representative, last), normalised to a density; dashed verticals: ± the 99.9th percentile of |x|. "
                               "Everything outside them is the last 0.1 % of values that an absmax clip still spends levels on.");
    sb_free(&d), sb_free(&g);
    return st;
}

// ---- index.html --------------------------------------------------------------------------------------------------------

// Appends one "most extreme" table: the top rows of v, with the column headers and cells that fmt_row writes.
static void html_table(struct plot_ctx * c, struct sbuf * h, const char * caption, const char * head, const double * v, int which) {
    int top[TOP_ROWS], n = top_n(v, c->t->n_layers, TOP_ROWS, top);
    sb_printf(h, "<h3>%s</h3>\n", caption);
    if (!n) {
        sb_printf(h, "<p>No layer has this statistic.</p>\n");
        return;
    }
    sb_printf(h, "<table>\n<tr><th>layer</th>%s</tr>\n", head);
    for (int i = 0; i < n; i++) {
        const struct linfo * li = &c->li[top[i]];
        sb_printf(h, "<tr><td><code>");
        sb_html(h, c->t->layers[top[i]].name);
        sb_printf(h, "</code></td>");
        if (which == 0) sb_printf(h, "<td>%.4g</td><td>%.3f</td><td>%.4g</td>", li->peak_absmax, li->peak_sigma, li->peak_p999);
        else if (which == 1) sb_printf(h, "<td>%.3g×</td><td>%d</td><td>%lld</td>", li->orat, li->n_out, (long long)c->t->layers[top[i]].C);
        else sb_printf(h, "<td>%.4g</td><td>%.4g</td>", li->shift_max, li->shift_move);
        sb_printf(h, "</tr>\n");
    }
    sb_printf(h, "</table>\n");
}

// Writes index.html into the staging folder: summary, extremes, then every figure with its caption.
static enum sd3q_status write_index(struct plot_ctx * c) {
    const struct stats_table * t = c->t;
    struct sbuf h = {0};
    sb_printf(&h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n%s\n<title>sd3q plot: activation statistics</title>\n",
              GEN_MARK);
    sb_printf(&h, "<style>\nbody{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em;color:#222;line-height:1.45}\n"
                  "img{max-width:100%%;border:1px solid #ddd}\nfigure{margin:1.2em 0 2.5em 0}\nfigcaption{max-width:75em}\n"
                  "table{border-collapse:collapse;margin:0.3em 0 1em 0}\ntd,th{border:1px solid #ccc;padding:2px 10px;text-align:right}\n"
                  "td:first-child,th:first-child{text-align:left}\nnav a{margin-right:1em}\n</style>\n</head>\n<body>\n");
    sb_printf(&h, "<h1>Activation statistics</h1>\n<p>");
    if (t->model[0]) {
        sb_printf(&h, "Model <code>");
        sb_html(&h, t->model);
        sb_printf(&h, "</code>; ");
    }
    char sl[64];
    step_label(c, c->rep, sl, sizeof sl);
    sb_printf(&h, "%d layers; %d collected steps from σ = %.3f to %.3f (calibration run of %d steps, %d images). Per-channel "
                  "figures and histograms show the representative step %s. ",
              t->n_layers, t->n_steps, t->steps[0].sigma, t->steps[t->n_steps - 1].sigma, t->calib_steps, t->calib_images, sl);
    if (c->cfg) {
        sb_printf(&h, "Timestep groups and outlier channels from the config <code>");
        sb_html(&h, c->cfg_name);
        sb_printf(&h, "</code> (%d groups).", c->cfg->n_groups);
    } else {
        sb_printf(&h, "No config given: outlier channels are those whose range exceeds %.1f × the median range.", OUTLIER_RATIO);
    }
    sb_printf(&h, "</p>\n<nav><a href=\"#extremes\">most extreme layers</a><a href=\"#sec-range\">range across σ</a>"
                  "<a href=\"#sec-shift\">post-GELU shift</a><a href=\"#sec-channels\">per-channel ranges</a>"
                  "<a href=\"#sec-heatmap\">heat map</a><a href=\"#sec-hist\">histograms</a></nav>\n");
    sb_printf(&h, "<h2 id=\"extremes\">Most extreme layers</h2>\n");
    double * v = malloc(sizeof(double) * (size_t)t->n_layers);
    if (!v) {
        sb_free(&h);
        return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    }
    for (int l = 0; l < t->n_layers; l++) v[l] = c->li[l].peak_absmax;
    html_table(c, &h, "Largest absmax of |x| (over all steps)", "<th>absmax</th><th>at σ</th><th>p99.9 there</th>", v, 0);
    for (int l = 0; l < t->n_layers; l++) v[l] = c->li[l].orat;
    char cap[160];
    snprintf(cap, sizeof cap, "Largest outlier ratio (widest channel range / median range, at σ = %.3f)", t->steps[c->rep].sigma);
    html_table(c, &h, cap, "<th>ratio</th><th>outlier channels</th><th>channels</th>", v, 1);
    for (int l = 0; l < t->n_layers; l++) v[l] = c->li[l].shift_max;
    html_table(c, &h, "Largest post-GELU shift", "<th>max |shift|</th><th>largest movement of a channel's shift across σ</th>", v, 2);
    free(v);
    static const char * const sec_id[N_SECTIONS] = {"sec-range", "sec-shift", "sec-channels", "sec-heatmap", "sec-hist"};
    static const char * const sec_title[N_SECTIONS] = {"Activation range across σ", "Post-GELU shift trajectories",
                                                       "Per-channel range profiles", "Layer × step heat map of absmax", "Histograms"};
    for (int sct = 0; sct < N_SECTIONS; sct++) {
        sb_printf(&h, "<h2 id=\"%s\">%s</h2>\n", sec_id[sct], sec_title[sct]);
        if (c->html[sct].n) sb_printf(&h, "%.*s", (int)c->html[sct].n, c->html[sct].p);
        else sb_printf(&h, "<p>Nothing to show: %s.</p>\n", sct == SEC_SHIFT ? "these statistics have no post-GELU layer with a shift" : "no data");
        if (c->html[sct].oom) h.oom = 1;
    }
    sb_printf(&h, "</body>\n</html>\n");
    enum sd3q_status st = stage_write(c, "index.html", &h);
    sb_free(&h);
    return st;
}

// ---- the output folder ---------------------------------------------------------------------------------------------

// 1 if NAME is a file sd3q plot leaves in its output.
static int is_output_name(const char * name) {
    size_t n = strlen(name);
    return strcmp(name, "index.html") == 0 || (n > 4 && strcmp(name + n - 4, ".png") == 0);
}

// An existing OUT may be replaced only when it is empty or an earlier plot: index.html with our marker and nothing
// but PNGs beside it.
static enum sd3q_status check_out(const char * out, int * exists, struct sd3q_errbuf * e) {
    struct stat sb;
    *exists = 0;
    if (lstat(out, &sb) != 0) {
        if (errno == ENOENT) return SD3Q_OK;
        return err_set(e, SD3Q_ERR_IO, "%s: %s", out, strerror(errno));
    }
    if (S_ISLNK(sb.st_mode)) return err_set(e, SD3Q_ERR_INVALID_ARG, "%s is a symbolic link; give the folder it points to", out);
    if (!S_ISDIR(sb.st_mode)) return err_set(e, SD3Q_ERR_INVALID_ARG, "%s exists and is not a folder", out);
    *exists = 1;
    DIR * dir = opendir(out);
    if (!dir) return err_set(e, SD3Q_ERR_IO, "%s: %s", out, strerror(errno));
    int n = 0, ours = 0;
    const char * foreign = NULL;
    char fname[256];
    struct dirent * de;
    while ((de = readdir(dir)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        n++;
        if (!is_output_name(de->d_name) && !foreign) snprintf(fname, sizeof fname, "%s", de->d_name), foreign = fname;
    }
    closedir(dir);
    if (n == 0) return SD3Q_OK;
    char * idx = path_join(out, "index.html"), * text = NULL;
    size_t len;
    struct sd3q_errbuf ignore;
    if (idx && read_file(idx, 1 << 24, &text, &len, &ignore) == SD3Q_OK) ours = strstr(text, GEN_MARK) != NULL;
    free(idx), free(text);
    if (foreign) return err_set(e, SD3Q_ERR_INVALID_ARG, "%s holds %s, which sd3q plot did not write; choose an empty or new --out", out, foreign);
    if (!ours) return err_set(e, SD3Q_ERR_INVALID_ARG, "%s is not empty and holds no index.html written by sd3q plot; choose an empty or new --out", out);
    return SD3Q_OK;
}

// Removes the plain files of a folder this module created or checked (no recursion), then the folder.
static void remove_folder(const char * path) {
    DIR * dir = opendir(path);
    if (dir) {
        struct dirent * de;
        while ((de = readdir(dir)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char * f = path_join(path, de->d_name);
            if (f) unlink(f);
            free(f);
        }
        closedir(dir);
    }
    rmdir(path);
}

// Removes the staging folder's data files, scripts and log: only the PNGs and index.html remain.
static void strip_stage(const char * stage) {
    DIR * dir = opendir(stage);
    if (!dir) return;
    struct dirent * de;
    while ((de = readdir(dir)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || is_output_name(de->d_name)) continue;
        char * f = path_join(stage, de->d_name);
        if (f) unlink(f);
        free(f);
    }
    closedir(dir);
}

// Puts the finished staging folder in place of OUT (an earlier plot there is removed afterwards).
static enum sd3q_status publish(const char * stage, const char * out, int exists, struct sd3q_errbuf * e) {
    mode_t um = umask(0);
    umask(um);
    chmod(stage, 0777 & ~um);
    if (!exists) {
        if (rename(stage, out) != 0) return err_set(e, SD3Q_ERR_IO, "cannot move %s to %s: %s", stage, out, strerror(errno));
        return SD3Q_OK;
    }
    size_t n = strlen(out) + 16;
    char * old = malloc(n);
    if (!old) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    snprintf(old, n, "%s.old.XXXXXX", out);
    if (!mkdtemp(old) || rename(out, old) != 0) {
        enum sd3q_status st = err_set(e, SD3Q_ERR_IO, "cannot move the earlier %s aside: %s", out, strerror(errno));
        free(old);
        return st;
    }
    if (rename(stage, out) != 0) {
        enum sd3q_status st = err_set(e, SD3Q_ERR_IO, "cannot move %s to %s: %s", stage, out, strerror(errno));
        rename(old, out);  // put the earlier plot back
        free(old);
        return st;
    }
    remove_folder(old);
    free(old);
    return SD3Q_OK;
}

// ---- the command -------------------------------------------------------------------------------------------------------

// Checks the config against the statistics: shared layers must agree on channel counts, and some must be shared.
static enum sd3q_status check_config(const struct actcfg * cfg, const struct stats_table * t, const char * path, struct sd3q_errbuf * e) {
    int shared = 0;
    for (int l = 0; l < t->n_layers; l++)
        for (int q = 0; q < cfg->n_layers; q++)
            if (strcmp(cfg->layers[q].name, t->layers[l].name) == 0) {
                if (cfg->layers[q].C != t->layers[l].C)
                    return err_set(e, SD3Q_ERR_FORMAT, "%s: layer %s has %lld channels, the statistics have %lld", path, t->layers[l].name,
                                   (long long)cfg->layers[q].C, (long long)t->layers[l].C);
                shared++;
            }
    if (!shared) return err_set(e, SD3Q_ERR_FORMAT, "%s: no layer of this config is in the statistics (a config of another model?)", path);
    return SD3Q_OK;
}

// Picks the representative step and the σ axis, then draws every figure and writes index.html into the stage.
static enum sd3q_status draw_all(struct plot_ctx * c, double sigma) {
    const struct stats_table * t = c->t;
    c->rep = t->n_steps / 2;
    if (sigma >= 0)
        for (int s = 0; s < t->n_steps; s++)
            if (fabs(t->steps[s].sigma - sigma) < fabs(t->steps[c->rep].sigma - sigma)) c->rep = s;
    c->xmax = t->steps[0].sigma > 1 ? t->steps[0].sigma : 1.0;
    TRY(layer_info(c));
    // the terminal: cairo when this gnuplot has it (Debian's gnuplot-nox does), else libgd's png
    struct sbuf probe = {0};
    sb_printf(&probe, "set terminal pngcairo\n");
    enum sd3q_status st = stage_write(c, "probe.gp", &probe);
    char * probe_arg[] = {"probe.gp"};
    if (st == SD3Q_OK && run_gnuplot(c, probe_arg, 1, "a test of its pngcairo terminal") == SD3Q_OK) c->term = "pngcairo";
    else if (st == SD3Q_OK) {
        probe.n = 0;
        sb_printf(&probe, "set terminal png\n");
        if ((st = stage_write(c, "probe.gp", &probe)) == SD3Q_OK && (st = run_gnuplot(c, probe_arg, 1, "a test of its png terminal")) == SD3Q_OK)
            c->term = "png";
        else if (st != SD3Q_OK)
            err_prefix(c->e, "this gnuplot can write neither pngcairo nor png (%s)", APT_HINT);
    }
    sb_free(&probe);
    for (int k = 0; k < c->n_kinds && st == SD3Q_OK; k++) st = fig_range(c, k);
    if (st == SD3Q_OK) st = fig_shift_mean(c);
    if (st == SD3Q_OK) st = fig_shift_channels(c);
    for (int k = 0; k < c->n_kinds && st == SD3Q_OK; k++) st = fig_channels(c, k);
    if (st == SD3Q_OK) st = fig_heatmap(c);
    if (st == SD3Q_OK) st = fig_hist(c);
    if (st == SD3Q_OK) st = write_index(c);
    if (st != SD3Q_OK) return st;
    // one gnuplot process draws every figure (its start-up, fonts included, costs more than most figures)
    char * scripts[MAX_FIGS];
    char (*names)[132] = calloc(MAX_FIGS, sizeof *names);
    if (!names) return err_set(c->e, SD3Q_ERR_OOM, "out of memory");
    for (int i = 0; i < c->n_figs; i++) {
        size_t n = strlen(c->figs[i].file);
        snprintf(names[i], sizeof names[i], "%.*s.gp", (int)(n - 4), c->figs[i].file);  // "x.png" → "x.gp"
        scripts[i] = names[i];
    }
    if (c->n_figs) st = run_gnuplot(c, scripts, c->n_figs, "the figures");
    free(names);
    for (int i = 0; i < c->n_figs && st == SD3Q_OK; i++) {
        char * png = path_join(c->stage, c->figs[i].file);
        if (!png || !path_is_file(png))
            st = err_set(c->e, SD3Q_ERR_IO, "gnuplot (%s) reported success but wrote no %s", c->gnuplot, c->figs[i].file);
        free(png);
    }
    return st;
}

enum sd3q_status quant_plot(const struct plot_params * p, struct plot_result * r, struct sd3q_errbuf * e) {
    if (r) memset(r, 0, sizeof(*r));
    if (!p->stats_dir || !p->out_dir || !*p->out_dir) return err_set(e, SD3Q_ERR_INVALID_ARG, "plot: a statistics folder and an output folder are needed");
    struct stats_table t;
    struct actcfg cfg;
    struct plot_ctx c = {.t = &t, .e = e};
    int have_cfg = 0, exists = 0;
    char * out = NULL;
    TRY(stats_read(p->stats_dir, &t, e));
    enum sd3q_status st = SD3Q_OK;
    if (t.n_steps < 1) {
        st = err_set(e, SD3Q_ERR_FORMAT, "%s/stats.json lists no collected step: nothing to plot", p->stats_dir);
        goto done;
    }
    if (p->config) {
        if ((st = actcfg_read(p->config, &cfg, e)) != SD3Q_OK) goto done;
        have_cfg = 1;
        if ((st = check_config(&cfg, &t, p->config, e)) != SD3Q_OK) goto done;
        c.cfg = &cfg;
        const char * slash = strrchr(p->config, '/');
        c.cfg_name = slash ? slash + 1 : p->config;
    }
    c.gnuplot = plot_find_gnuplot(p->gnuplot);
    if (!c.gnuplot) {
        st = err_set(e, SD3Q_ERR_MISSING, "gnuplot%s%s not found%s; sd3q plot draws with gnuplot (no X needed): %s", p->gnuplot ? " " : "",
                     p->gnuplot ? p->gnuplot : "", p->gnuplot && strchr(p->gnuplot, '/') ? "" : " on PATH", APT_HINT);
        goto done;
    }
    out = strdup(p->out_dir);
    if (!out) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    for (size_t n = strlen(out); n > 1 && out[n - 1] == '/'; n--) out[n - 1] = 0;
    if ((st = check_out(out, &exists, e)) != SD3Q_OK) goto done;
    size_t n = strlen(out) + 16;
    if (!(c.stage = malloc(n))) {
        st = err_set(e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    snprintf(c.stage, n, "%s.tmp.XXXXXX", out);
    if (!mkdtemp(c.stage)) {
        st = err_set(e, SD3Q_ERR_IO, "cannot create a folder beside %s: %s", out, strerror(errno));
        free(c.stage);
        c.stage = NULL;
        goto done;
    }
    st = draw_all(&c, p->sigma);
    if (st == SD3Q_OK) {
        strip_stage(c.stage);
        st = publish(c.stage, out, exists, e);
    }
    if (st != SD3Q_OK) remove_folder(c.stage);  // nothing partial stays behind
done:
    for (int i = 0; i < N_SECTIONS; i++) sb_free(&c.html[i]);
    free(c.li), free(c.stage), free(c.gnuplot), free(out);
    if (have_cfg) actcfg_free(&cfg);
    stats_free(&t);
    if (st == SD3Q_OK && r) {
        r->n_figures = c.n_figs;
        memcpy(r->figures, c.figs, sizeof(c.figs[0]) * (size_t)c.n_figs);
    }
    return st;
}
