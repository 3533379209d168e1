/*
 * adherence.c — the prompt-adherence checker of the tiny model's coloured-shapes domain, a C port of
 * tools/train_tiny/adherence.py (the same thresholds, the same algorithm; see docs/TINY_MODEL.md "Adherence checker"
 * and tests/test-adherence.c, which checks that both give the same verdicts on the same images).
 *
 * Steps: parse the caption; background = nearest palette colour to the per-channel median of the 2-pixel border ring;
 * foreground = pixels farther than FG_DIST from it, 8-connected components, each cut at half its contrast (its 90th
 * percentile distance); objects = components of that mask with area ≥ MIN_AREA; per object the nearest palette colour
 * of its interior mean, a size class from its longer bounding-box side, a shape from the fill of its bbox's 3×3 cells;
 * position = nearest anchor to the mean centroid; count = number of objects. Lengths scale with H/128.
 */
#include "quant/adherence.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CANVAS     128.0
#define BORDER     2
#define FG_DIST    48.0
#define OBJ_PCT    90.0
#define HALF_COVER 0.5
#define MIN_AREA   24.0
#define SPLIT_SMALL  19.0
#define SPLIT_MEDIUM 26.0

static const char * const colour_names[] = {"red", "orange", "yellow", "green", "blue", "purple", "white", "black", "gray"};
static const double colour_rgb[][3] = {{220, 30, 30},   {255, 140, 0},  {250, 230, 40},  {30, 160, 50}, {30, 70, 220},
                                       {140, 40, 180},  {245, 245, 245}, {20, 20, 20},   {128, 128, 128}};
#define N_OBJ_COLOURS 8  // objects use the first 8; backgrounds all 9
#define N_BG_COLOURS  9
static const char * const shape_names[] = {"circle", "square", "triangle", "star", "cross"};
static const char * const shape_plural[] = {"circles", "squares", "triangles", "stars", "crosses"};
static const double shape_proto[5][9] = {
    {0.55, 0.97, 0.55, 0.97, 1.00, 0.97, 0.55, 0.97, 0.55},  // circle
    {1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00},  // square
    {0.00, 0.51, 0.00, 0.25, 1.00, 0.25, 0.75, 1.00, 0.75},  // triangle
    {0.00, 0.48, 0.00, 0.58, 1.00, 0.58, 0.30, 0.63, 0.30},  // star
    {0.00, 1.00, 0.00, 1.00, 1.00, 1.00, 0.00, 1.00, 0.00},  // cross
};
static const char * const size_names[] = {"small", "medium", "large"};
static const char * const pos_names[] = {"top left", "top right", "bottom left", "bottom right", "center"};
static const double pos_anchor[][2] = {{38, 38}, {90, 38}, {38, 90}, {90, 90}, {64, 64}};

const char * const adherence_attr_names[ADH_ATTRS] = {"background", "count", "colour", "shape", "size", "position"};

// Index of `word` at the start of *p among names (longest match first), advancing *p past it and one space.
static int take_word(const char ** p, const char * const * names, int n) {
    int best = -1;
    size_t bl = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(names[i]);
        if (l > bl && strncmp(*p, names[i], l) == 0 && ((*p)[l] == ' ' || (*p)[l] == '\0')) best = i, bl = l;
    }
    if (best >= 0) *p += bl + ((*p)[bl] == ' ');
    return best;
}

// Expects a literal phrase followed by a space (or the end).
static int take_lit(const char ** p, const char * lit) {
    size_t l = strlen(lit);
    if (strncmp(*p, lit, l) != 0 || ((*p)[l] != ' ' && (*p)[l] != '\0')) return 0;
    *p += l + ((*p)[l] == ' ');
    return 1;
}

int adherence_parse_caption(const char * caption, struct adherence_result * r) {
    char buf[512];
    size_t k = 0;
    int space = 1;
    for (const char * c = caption; *c && k + 1 < sizeof buf; c++) {  // lower-case, collapse whitespace
        if (isspace((unsigned char)*c)) {
            if (!space) buf[k++] = ' ';
            space = 1;
        } else {
            buf[k++] = (char)tolower((unsigned char)*c);
            space = 0;
        }
    }
    while (k > 0 && buf[k - 1] == ' ') k--;
    buf[k] = '\0';
    memset(r, 0, sizeof(*r));
    const char * p = buf;
    static const char * const counts[] = {"a", "an", "one", "two", "three"};
    static const int count_val[] = {1, 1, 1, 2, 3};
    int c = take_word(&p, counts, 5);
    if (c < 0) return -1;
    r->want_count = count_val[c];
    if ((r->want_size = take_word(&p, size_names, 3)) < 0) return -1;
    if ((r->want_colour = take_word(&p, colour_names, N_OBJ_COLOURS)) < 0) return -1;
    const char * all_shapes[10];
    for (int i = 0; i < 5; i++) all_shapes[i] = shape_names[i], all_shapes[5 + i] = shape_plural[i];
    int s = take_word(&p, all_shapes, 10);
    if (s < 0) return -1;
    r->want_shape = s % 5;
    if (!take_lit(&p, "in") || !take_lit(&p, "the")) return -1;
    if ((r->want_position = take_word(&p, pos_names, 5)) < 0) return -1;
    if (!take_lit(&p, "on") || (!take_lit(&p, "a") && !take_lit(&p, "an"))) return -1;
    if ((r->want_background = take_word(&p, colour_names, N_BG_COLOURS)) < 0) return -1;
    if (!take_lit(&p, "background") || *p) return -1;
    return 0;
}

// Nearest palette entry (squared RGB distance; first on ties).
static int nearest(const double * rgb, int n) {
    int best = 0;
    double bd = INFINITY;
    for (int i = 0; i < n; i++) {
        double d = 0;
        for (int c = 0; c < 3; c++) d += (colour_rgb[i][c] - rgb[c]) * (colour_rgb[i][c] - rgb[c]);
        if (d < bd) bd = d, best = i;
    }
    return best;
}

static int cmp_double(const void * a, const void * b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// numpy's median of n values (sorts in place).
static double median(double * v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// numpy's percentile (linear interpolation) of n values (sorts in place).
static double percentile(double * v, int n, double q) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    double pos = q / 100.0 * (n - 1);
    int i = (int)floor(pos);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (pos - i) * (v[i + 1] - v[i]);
}

static int uf_find(int * parent, int a) {
    while (parent[a] != a) a = parent[a] = parent[parent[a]];
    return a;
}

// 8-connected components of mask [H, W]: labels 1..n (0 = background); returns n, or -1 when out of memory.
static int label8(const uint8_t * mask, int W, int H, int * labels) {
    int * parent = malloc(sizeof(int) * ((size_t)W * H + 1));
    if (!parent) return -1;
    int next = 1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int i = y * W + x;
            labels[i] = 0;
            if (!mask[i]) continue;
            int nb[4] = {x > 0 ? labels[i - 1] : 0, y > 0 && x > 0 ? labels[i - W - 1] : 0, y > 0 ? labels[i - W] : 0,
                         y > 0 && x + 1 < W ? labels[i - W + 1] : 0};
            int l = 0;
            for (int k = 0; k < 4; k++)
                if (nb[k]) {
                    int r = uf_find(parent, nb[k]);
                    if (!l) l = r;
                    else if (r != l) {
                        int a = r < l ? r : l, b = r < l ? l : r;
                        parent[b] = a;
                        l = a;
                    }
                }
            if (!l) {
                parent[next] = next;
                l = next++;
            }
            labels[i] = l;
        }
    // compact to 1..n in first-seen (raster) order
    int * map = calloc((size_t)next + 1, sizeof(int));
    if (!map) {
        free(parent);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < W * H; i++)
        if (labels[i]) {
            int r = uf_find(parent, labels[i]);
            if (!map[r]) map[r] = ++n;
            labels[i] = map[r];
        }
    free(map);
    free(parent);
    return n;
}

int adherence_check(const uint8_t * rgb, int W, int H, const char * caption, struct adherence_result * r) {
    if (adherence_parse_caption(caption, r) != 0) return -1;
    if (W < 2 * BORDER + 1 || H < 2 * BORDER + 1) return -1;
    const double k = H / CANVAS, min_area = MIN_AREA * k * k;
    int64_t np = (int64_t)W * H;
    double * dist = malloc(sizeof(double) * (size_t)np), * tmp = malloc(sizeof(double) * (size_t)np);
    int * lab = malloc(sizeof(int) * (size_t)np), * lab2 = malloc(sizeof(int) * (size_t)np);
    uint8_t * mask = calloc((size_t)np, 1);
    int rc = -1;
    if (!dist || !tmp || !lab || !lab2 || !mask) goto done;
    // background reference: per-channel median of the border ring
    double bg[3];
    for (int c = 0; c < 3; c++) {
        int n = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if (y < BORDER || y >= H - BORDER || x < BORDER || x >= W - BORDER) tmp[n++] = rgb[((int64_t)y * W + x) * 3 + c];
        bg[c] = median(tmp, n);
    }
    r->got_background = nearest(bg, N_BG_COLOURS);
    for (int64_t i = 0; i < np; i++) {
        double d = 0;
        for (int c = 0; c < 3; c++) d += ((double)rgb[i * 3 + c] - bg[c]) * ((double)rgb[i * 3 + c] - bg[c]);
        dist[i] = sqrt(d);
        mask[i] = dist[i] > FG_DIST;
    }
    // pass 1: coarse components, each cut at half its contrast
    int n0 = label8(mask, W, H, lab);
    if (n0 < 0) goto done;
    memset(mask, 0, (size_t)np);
    for (int l = 1; l <= n0; l++) {
        int n = 0;
        for (int64_t i = 0; i < np; i++)
            if (lab[i] == l) tmp[n++] = dist[i];
        if (n < min_area) continue;
        double dobj = percentile(tmp, n, OBJ_PCT);
        for (int64_t i = 0; i < np; i++)
            if (lab[i] == l && dist[i] >= HALF_COVER * dobj) mask[i] = 1;
    }
    // pass 2: objects
    int n1 = label8(mask, W, H, lab2);
    if (n1 < 0) goto done;
    double cx = 0, cy = 0;
    int nobj = 0;
    r->got_count = 0;
    r->all_colour = r->all_shape = r->all_size = 1;
    for (int l = 1; l <= n1; l++) {
        int area = 0, x0 = W, x1 = -1, y0 = H, y1 = -1;
        double sx = 0, sy = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                if (lab2[y * W + x] == l) {
                    area++, sx += x, sy += y;
                    x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1, y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1;
                }
        if (area < min_area) continue;
        int w = x1 - x0 + 1, h = y1 - y0 + 1;
        // interior: pixels whose existing 4-neighbours are all in the component (as numpy's shifted ANDs)
        double acc[3] = {0, 0, 0};
        int ninner = 0;
        for (int pass = 0; pass < 2 && !ninner; pass++)
            for (int y = y0; y <= y1; y++)
                for (int x = x0; x <= x1; x++) {
                    int i = y * W + x;
                    if (lab2[i] != l) continue;
                    int in = pass == 1 || ((y == 0 || lab2[i - W] == l) && (y == H - 1 || lab2[i + W] == l) && (x == 0 || lab2[i - 1] == l) &&
                                           (x == W - 1 || lab2[i + 1] == l));
                    if (!in) continue;
                    for (int c = 0; c < 3; c++) acc[c] += rgb[(int64_t)i * 3 + c];
                    ninner++;
                }
        for (int c = 0; c < 3; c++) acc[c] /= ninner;
        int colour = nearest(acc, N_OBJ_COLOURS);
        // shape from the fill of the bbox's 3×3 cells
        double fill[9] = {0}, cnt[9] = {0};
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                int cr = (int)(3 * (y + 0.5) / h), cc = (int)(3 * (x + 0.5) / w);
                cr = cr > 2 ? 2 : cr, cc = cc > 2 ? 2 : cc;
                cnt[cr * 3 + cc] += 1;
                fill[cr * 3 + cc] += lab2[(y0 + y) * W + x0 + x] == l;
            }
        int shape = 0;
        double bd = INFINITY;
        for (int s = 0; s < 5; s++) {
            double d = 0;
            for (int q = 0; q < 9; q++) {
                double f = cnt[q] > 0 ? fill[q] / cnt[q] : 0.0;
                d += (f - shape_proto[s][q]) * (f - shape_proto[s][q]);
            }
            if (d < bd) bd = d, shape = s;
        }
        double ext = (w > h ? w : h) / k;
        int size = ext < SPLIT_SMALL ? 0 : ext < SPLIT_MEDIUM ? 1 : 2;
        r->all_colour &= colour == r->want_colour;
        r->all_shape &= shape == r->want_shape;
        r->all_size &= size == r->want_size;
        if (nobj < ADH_MAX_OBJECTS) r->obj_colour[nobj] = colour, r->obj_shape[nobj] = shape, r->obj_size[nobj] = size;
        cx += sx / area + 0.5, cy += sy / area + 0.5;
        nobj++;
    }
    r->got_count = nobj;
    r->got_position = -1;
    if (nobj) {
        cx /= nobj * k, cy /= nobj * k;
        double bd = INFINITY;
        for (int i = 0; i < 5; i++) {
            double d = (pos_anchor[i][0] - cx) * (pos_anchor[i][0] - cx) + (pos_anchor[i][1] - cy) * (pos_anchor[i][1] - cy);
            if (d < bd) bd = d, r->got_position = i;
        }
    }
    r->attr_ok[ADH_BACKGROUND] = r->got_background == r->want_background;
    r->attr_ok[ADH_COUNT] = nobj == r->want_count;
    r->attr_ok[ADH_COLOUR] = nobj > 0 && r->all_colour;
    r->attr_ok[ADH_SHAPE] = nobj > 0 && r->all_shape;
    r->attr_ok[ADH_SIZE] = nobj > 0 && r->all_size;
    r->attr_ok[ADH_POSITION] = nobj > 0 && r->got_position == r->want_position;
    r->ok = 1;
    for (int a = 0; a < ADH_ATTRS; a++) r->ok &= r->attr_ok[a];
    rc = 0;
done:
    free(dist), free(tmp), free(lab), free(lab2), free(mask);
    return rc;
}
