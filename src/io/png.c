/*
 * png.c — see png.h. libpng reports errors by longjmp: every libpng call sits behind a setjmp in the function that
 * owns the resources, the error callback copies libpng's message into a context, and the function returns a status
 * naming the file. Variables changed after setjmp and used after the jump are volatile.
 */
#include "io/png.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"

// ---- libpng plumbing ----------------------------------------------------------------------------------------------------

struct pngio_ctx {
    char msg[256];
    char warn[160];  // the first warning, which often says why the error came (e.g. "Image width exceeds user limit")
};

static void on_error(png_structp png, png_const_charp msg) {
    struct pngio_ctx * c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s%s%s%s", msg ? msg : "libpng error", c->warn[0] ? " (" : "", c->warn, c->warn[0] ? ")" : "");
    png_longjmp(png, 1);
}

// Keeps the first warning; warnings alone are benign (e.g. a bad CRC in an ancillary chunk, which libpng skips).
static void on_warning(png_structp png, png_const_charp msg) {
    struct pngio_ctx * c = png_get_error_ptr(png);
    if (c && !c->warn[0] && msg) snprintf(c->warn, sizeof c->warn, "%s", msg);
}

// ---- parameters text ------------------------------------------------------------------------------------------------------

struct sbuf {
    char * p;
    size_t size, len;
};

static void sb_put(struct sbuf * b, const char * s, size_t n) {
    for (size_t i = 0; i < n; i++, b->len++)
        if (b->len + 1 < b->size) b->p[b->len] = s[i];
    if (b->size) b->p[b->len < b->size ? b->len : b->size - 1] = '\0';
}

static void sb_str(struct sbuf * b, const char * s) { sb_put(b, s, strlen(s)); }

// Appends a value, JSON-quoted when it contains ',', ':', '"' or a line break (the parameters format's rule).
static void sb_value(struct sbuf * b, const char * v) {
    if (!strpbrk(v, ",:\"\n\r")) {
        sb_str(b, v);
        return;
    }
    sb_put(b, "\"", 1);
    for (const unsigned char * s = (const unsigned char *)v; *s; s++) {
        char esc[8];
        if (*s == '"' || *s == '\\') snprintf(esc, sizeof esc, "\\%c", *s);
        else if (*s == '\n') snprintf(esc, sizeof esc, "\\n");
        else if (*s == '\r') snprintf(esc, sizeof esc, "\\r");
        else if (*s == '\t') snprintf(esc, sizeof esc, "\\t");
        else if (*s < 0x20) snprintf(esc, sizeof esc, "\\u%04x", *s);
        else {
            sb_put(b, (const char *)s, 1);
            continue;
        }
        sb_str(b, esc);
    }
    sb_put(b, "\"", 1);
}

size_t pngio_format_parameters(const struct pngio_params * p, char * buf, size_t size) {
    struct sbuf b = {buf, size, 0};
    if (buf && size) buf[0] = '\0';
    if (!p) return 0;
    char num[64];
    sb_str(&b, p->prompt ? p->prompt : "");
    if (p->negative_prompt && p->negative_prompt[0]) {
        sb_str(&b, "\nNegative prompt: ");
        sb_str(&b, p->negative_prompt);
    }
    snprintf(num, sizeof num, "\nSteps: %d, Sampler: ", p->steps);
    sb_str(&b, num);
    sb_value(&b, p->sampler ? p->sampler : "Euler");
    snprintf(num, sizeof num, ", CFG scale: %g, Seed: %llu, Size: %dx%d", p->guidance, (unsigned long long)p->seed, p->width, p->height);
    sb_str(&b, num);
    if (p->model && p->model[0]) {
        sb_str(&b, ", Model: ");
        sb_value(&b, p->model);
    }
    snprintf(num, sizeof num, ", Shift: %g, Version: sd3q %s", p->shift, sd3q_version());
    sb_str(&b, num);
    return b.len;
}

// ---- writing ----------------------------------------------------------------------------------------------------------------

// 1 when a keyword is valid for a PNG text chunk: 1–79 printable Latin-1 characters, no leading/trailing/double space.
static int key_ok(const char * k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c < 32 || (c > 126 && c < 161) || (c == ' ' && k[i + 1] == ' ')) return 0;
    }
    return 1;
}

static int is_ascii(const char * s) {
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

enum sd3q_status pngio_write_rgb8(const char * path, const uint8_t * rgb, int width, int height, const struct pngio_text * text, int n_text,
                                struct sd3q_errbuf * e) {
    if (!path || !rgb || (n_text > 0 && !text) || n_text < 0) return err_set(e, SD3Q_ERR_INVALID_ARG, "pngio_write_rgb8: invalid arguments");
    if (width < 1 || height < 1 || width > PNGIO_MAX_SIDE || height > PNGIO_MAX_SIDE)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "%s: image size %d×%d out of range [1, %d]", path, width, height, PNGIO_MAX_SIDE);
    for (int i = 0; i < n_text; i++)
        if (!text[i].key || !key_ok(text[i].key) || !text[i].value)
            return err_set(e, SD3Q_ERR_INVALID_ARG, "%s: invalid PNG text keyword '%s'", path, text[i].key ? text[i].key : "(null)");
    struct atomic_file af;
    TRY(atomic_file_open(&af, path, e));
    struct pngio_ctx ctx = {"", ""};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_text * volatile tx = calloc((size_t)(n_text > 0 ? n_text : 1), sizeof(png_text));
    if (!png || !info || !tx) {
        png_destroy_write_struct(&png, &info);
        free(tx);
        atomic_file_abort(&af);
        return err_set(e, SD3Q_ERR_OOM, "%s: out of memory", path);
    }
    if (setjmp(png_jmpbuf(png))) {
        int errn = errno;
        png_destroy_write_struct(&png, &info);
        free(tx);
        atomic_file_abort(&af);
        return err_set(e, SD3Q_ERR_IO, "%s: cannot write the PNG: %s%s%s", path, ctx.msg, errn ? ": " : "", errn ? strerror(errn) : "");
    }
    png_init_io(png, af.fp);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < n_text; i++) {
        int ascii      = is_ascii(text[i].value);
        tx[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        tx[i].key         = (png_charp)text[i].key;
        tx[i].text        = (png_charp)text[i].value;
        tx[i].text_length = ascii ? strlen(text[i].value) : 0;
        tx[i].itxt_length = ascii ? 0 : strlen(text[i].value);
    }
    if (n_text > 0) png_set_text(png, info, tx, n_text);
    errno = 0;
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(rgb + (size_t)y * (size_t)width * 3));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(tx);
    enum sd3q_status st = atomic_file_commit(&af, e);
    atomic_file_abort(&af);
    return st;
}

enum sd3q_status pngio_write_image(const char * path, const uint8_t * rgb, int width, int height, const struct pngio_params * p,
                                 struct sd3q_errbuf * e) {
    if (!p) return pngio_write_rgb8(path, rgb, width, height, NULL, 0, e);
    char seed[32], steps[16], cfg[32], shift[32], sz[32], soft[64];
    size_t n = pngio_format_parameters(p, NULL, 0);
    char * params = malloc(n + 1);
    if (!params) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    pngio_format_parameters(p, params, n + 1);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)p->seed);
    snprintf(steps, sizeof steps, "%d", p->steps);
    snprintf(cfg, sizeof cfg, "%g", p->guidance);
    snprintf(shift, sizeof shift, "%g", p->shift);
    snprintf(sz, sizeof sz, "%dx%d", p->width, p->height);
    snprintf(soft, sizeof soft, "sd3q %s", sd3q_version());
    struct pngio_text kv[11];
    int k = 0;
    kv[k++] = (struct pngio_text){"parameters", params};
    if (p->prompt) kv[k++] = (struct pngio_text){"prompt", p->prompt};
    if (p->negative_prompt) kv[k++] = (struct pngio_text){"negative_prompt", p->negative_prompt};
    kv[k++] = (struct pngio_text){"seed", seed};
    kv[k++] = (struct pngio_text){"steps", steps};
    kv[k++] = (struct pngio_text){"guidance", cfg};
    kv[k++] = (struct pngio_text){"shift", shift};
    kv[k++] = (struct pngio_text){"size", sz};
    if (p->model) kv[k++] = (struct pngio_text){"model", p->model};
    kv[k++] = (struct pngio_text){"Software", soft};
    enum sd3q_status st = pngio_write_rgb8(path, rgb, width, height, kv, k, e);
    free(params);
    return st;
}

// ---- reading ----------------------------------------------------------------------------------------------------------------

void rgb_image_free(struct rgb_image * img) {
    if (!img) return;
    for (int i = 0; i < img->n_text; i++) {
        if (img->keys) free(img->keys[i]);
        if (img->values) free(img->values[i]);
    }
    free(img->keys);
    free(img->values);
    free(img->rgb);
    memset(img, 0, sizeof(*img));
}

const char * rgb_image_text(const struct rgb_image * img, const char * key) {
    for (int i = 0; img && i < img->n_text; i++)
        if (strcmp(img->keys[i], key) == 0) return img->values[i];
    return NULL;
}

// Copies the text chunks libpng collected; returns 0, or -1 when out of memory.
static int copy_text(png_structp png, png_infop info, struct rgb_image * img) {
    png_textp t = NULL;
    int n = 0;
    png_get_text(png, info, &t, &n);
    if (n <= 0) return 0;
    img->keys   = calloc((size_t)n, sizeof(char *));
    img->values = calloc((size_t)n, sizeof(char *));
    if (!img->keys || !img->values) return -1;
    for (int i = 0; i < n; i++) {
        size_t len = t[i].compression >= PNG_ITXT_COMPRESSION_NONE ? t[i].itxt_length : t[i].text_length;
        img->keys[i]   = strdup(t[i].key ? t[i].key : "");
        img->values[i] = malloc(len + 1);
        img->n_text    = i + 1;
        if (!img->keys[i] || !img->values[i]) return -1;
        if (len) memcpy(img->values[i], t[i].text, len);
        img->values[i][len] = '\0';
    }
    return 0;
}

enum sd3q_status pngio_read(const char * path, struct rgb_image * img, struct sd3q_errbuf * e) {
    memset(img, 0, sizeof(*img));
    if (path_is_dir(path)) return err_set(e, SD3Q_ERR_IO, "%s: is a folder, not a PNG file", path);
    FILE * f = fopen(path, "rb");
    if (!f) return err_set(e, SD3Q_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char sig[8];
    size_t got = fread(sig, 1, sizeof sig, f);
    if (got != sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        fclose(f);
        return err_set(e, SD3Q_ERR_FORMAT, "%s: not a PNG file (%s)", path, got != sizeof sig ? "shorter than the 8-byte signature" : "bad signature");
    }
    struct pngio_ctx ctx = {"", ""};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        return err_set(e, SD3Q_ERR_OOM, "%s: out of memory", path);
    }
    uint8_t * volatile rgb = NULL;
    png_bytep * volatile rows = NULL;
    volatile int oom = 0;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        fclose(f);
        free(rows);
        free(rgb);
        rgb_image_free(img);
        if (oom) return err_set(e, SD3Q_ERR_OOM, "%s: out of memory", path);
        return err_set(e, SD3Q_ERR_FORMAT, "%s: invalid PNG: %s", path, ctx.msg);
    }
    png_init_io(png, f);
    png_set_sig_bytes(png, (int)sizeof sig);
    png_set_user_limits(png, PNGIO_MAX_SIDE, PNGIO_MAX_SIDE);
    png_set_chunk_cache_max(png, PNGIO_MAX_CHUNKS);
    png_set_chunk_malloc_max(png, 8u << 20);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, ctype = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, NULL, NULL, NULL);
    // everything to 8-bit RGB: palettes expanded, gray replicated, low bit depths expanded, 16 bits scaled, alpha dropped
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_scale_16(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * 3)
        png_error(png, "unsupported pixel format after conversion");
    rgb  = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!rgb || !rows) {
        oom = 1;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = rgb + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, info);
    if (copy_text(png, info, img) != 0) {
        oom = 1;
        png_error(png, "out of memory");
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    free(rows);
    img->width  = (int)w;
    img->height = (int)h;
    img->rgb    = rgb;
    return SD3Q_OK;
}

// ---- conversions ------------------------------------------------------------------------------------------------------------

void image_to_rgb8(const float * chw, int width, int height, uint8_t * rgb) {
    const size_t plane = (size_t)width * height;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) {
            float t = chw[c * plane + p] / 2.0f;
            t = t + 0.5f;
            if (!(t > 0.0f)) t = 0.0f;  // also NaN
            if (t > 1.0f) t = 1.0f;
            float v = t * 255.0f;
            rgb[p * 3 + c] = (uint8_t)rintf(v);  // ties to even, as numpy's round
        }
}

void rgb8_to_image(const uint8_t * rgb, int width, int height, float * chw) {
    const size_t plane = (size_t)width * height;
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) {
            float v = (float)rgb[p * 3 + c] / 255.0f;
            v = 2.0f * v;
            chw[c * plane + p] = v - 1.0f;
        }
}
