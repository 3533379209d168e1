/*
 * cmd-vae.c — `sd3q vae-decode` and `sd3q vae-encode`: the VAE alone, between safetensors latents and images
 * (documented in docs/FORMATS.md; tests/cli-vae.sh relies on it).
 *
 *   vae-decode --input IN.safetensors --output OUT.{safetensors,png}
 *       IN holds `latents` [B, C, h, w] (or is a file with that single tensor) in the VAE's own latent space (no
 *       scaling or shift: for the MMDiT's latents x apply z = x / scaling + shift first). OUT.safetensors receives
 *       `image` [B, 3, 8h, 8w] F32 in about [-1, 1], not clamped; OUT.png the 8-bit image(s) (clamped, rounded as
 *       diffusers). For B > 1 a PNG path containing "%d" gets the batch index there, otherwise "_0", "_1", … before
 *       the extension (out.png → out_0.png, out_1.png).
 *   vae-encode --input IN.{png,safetensors} --output OUT.safetensors
 *       IN is a PNG (any flavour, converted to 8-bit RGB, then to [-1, 1] as diffusers) or safetensors with `image`
 *       [B, 3, H, W] in [-1, 1] (or a single tensor); H and W multiples of 8. OUT receives `latents` (the posterior
 *       mean, VAE space), `logvar` (clamped to [-30, 20]) and `latents_scaled` = (latents − shift)·scaling (the
 *       MMDiT's latent space), all [B, C, H/8, W/8] F32, with scaling_factor/shift_factor in the metadata.
 * Outputs are written atomically; a failed command leaves no output and no temporary file behind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "io/fileutil.h"
#include "io/png.h"
#include "io/safetensors.h"

// 1 when `path` ends in `ext` (case-insensitive).
static int ends_with(const char * path, const char * ext) {
    size_t n = strlen(path), m = strlen(ext);
    return n >= m && strcasecmp(path + n - m, ext) == 0;
}

static double seconds_since(const struct timespec * t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

// Reads a 4-D float tensor named `name`, or the file's only tensor; want[] as st_read_f32 (filled in).
static float * read_4d(const struct st_file * f, const char * name, int64_t * want, struct sd3q_errbuf * e) {
    const char * use = name;
    if (!st_find(f, name) && f->n == 1) use = f->t[0].name;
    if (!st_find(f, use)) {
        err_set(e, SD3Q_ERR_MISSING, "%s: no tensor '%s' (and not a file with a single tensor; it has %d)", f->path, name, f->n);
        return NULL;
    }
    float * p = st_read_f32(f, use, 4, want, e);
    if (p && (want[0] < 1 || want[1] < 1 || want[2] < 1 || want[3] < 1)) {
        err_set(e, SD3Q_ERR_SHAPE, "%s: tensor '%s' is empty", f->path, use);
        free(p);
        return NULL;
    }
    return p;
}

// The PNG path of batch element b of n: "%d" replaced by b, else "_b" before the extension (n > 1 only).
static char * png_path(const char * out, int b, int n) {
    size_t len = strlen(out) + 24;
    char * p = malloc(len);
    if (!p) return NULL;
    const char * pct = strstr(out, "%d");
    if (pct) snprintf(p, len, "%.*s%d%s", (int)(pct - out), out, b, pct + 2);
    else if (n == 1) snprintf(p, len, "%s", out);
    else {
        size_t stem = strlen(out) - 4;  // ".png"
        snprintf(p, len, "%.*s_%d%s", (int)stem, out, b, out + stem);
    }
    return p;
}

// Checks that the folder of `path` exists, so a long decode does not end in "cannot create a file there".
static int output_folder_ok(const char * cmd, const char * path) {
    char * dir = strdup(path);
    if (!dir) return 0;
    char * slash = strrchr(dir, '/');
    if (slash) slash == dir ? (void)(slash[1] = '\0') : (void)(*slash = '\0');
    int ok = !slash || path_is_dir(dir);
    if (!ok) fprintf(stderr, "sd3q %s: %s: the output folder '%s' does not exist\n", cmd, path, dir);
    free(dir);
    return ok;
}

// A session for one image at a time of latent h×w.
static struct sd3q_session * open_session(const struct model_opts * mo, const char * cmd, struct sd3q_model * m, int64_t h, int64_t w,
                                          int64_t tile) {
    struct sd3q_session_params sp;
    if (model_opts_session(mo, cmd, &sp) != 0) return NULL;
    sp.max_batch    = 1;
    sp.max_latent_h = (int32_t)h;
    sp.max_latent_w = (int32_t)w;
    sp.max_context  = 1;
    sp.vae_tile     = (int32_t)tile;
    struct sd3q_session * s = NULL;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) fprintf(stderr, "sd3q %s: %s\n", cmd, err);
    return s;
}

// The VAE options added to the model options.
#define VAE_OPTS_N (MODEL_OPTS_N + 4)

static void vae_opts(struct opt * opts, struct model_opts * mo, const char ** in, const char ** out, const char ** tensor, int64_t * tile,
                     const char * in_help, const char * out_help, const char * tensor_help) {
    model_opts_add(mo, opts);
    opts[MODEL_OPTS_N]     = (struct opt){"--input", OPT_STR, in, in_help, 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 1] = (struct opt){"--output", OPT_STR, out, out_help, 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 2] = (struct opt){"--tensor", OPT_STR, tensor, tensor_help, 0, 0, 0, 0};
    opts[MODEL_OPTS_N + 3] = (struct opt){"--tile", OPT_INT, tile,
                                          "VAE tile side in latent pixels (default 64 = 512 px); larger latents are processed in "
                                          "overlapping tiles, a tile at least the latent size processes it in one piece",
                                          0, 4096, 0, 0};
}

// ---- vae-decode -------------------------------------------------------------------------------------------------------

int cmd_vae_decode(int argc, char ** argv) {
    struct model_opts mo;
    const char * in_path = NULL, * out_path = NULL, * tensor = "latents";
    int64_t tile = 0;
    struct opt opts[VAE_OPTS_N];
    vae_opts(opts, &mo, &in_path, &out_path, &tensor, &tile, "safetensors with latents [B, C, h, w] in the VAE's latent space",
             "OUT.safetensors (tensor image [B, 3, 8h, 8w], F32, unclamped) or OUT.png (B > 1: %d or _0, _1, … in the name)",
             "name of the input tensor (default latents; a file with one tensor needs none)");
    int r = args_parse(argc, argv, 2, "vae-decode",
                       "Decode latents with the model's VAE. The latents are in the VAE's own space: no scaling or shift is\n"
                       "applied (for the MMDiT's latents x, use z = x / scaling_factor + shift_factor; SD3: 1.5305, 0.0609).",
                       opts, VAE_OPTS_N, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    int to_png = ends_with(out_path, ".png");
    if (!to_png && !ends_with(out_path, ".safetensors")) {
        fprintf(stderr, "sd3q vae-decode: --output must end in .safetensors or .png (got '%s')\n", out_path);
        return 2;
    }
    char * first = png_path(out_path, 0, 2);  // the folder of the first output (a "%d" may sit in a folder name)
    int folder_ok = first && output_folder_ok("vae-decode", to_png ? first : out_path);
    free(first);
    if (!folder_ok) return 1;
    int rc = 1, n_written = 0;
    struct st_file in = {0};
    struct sd3q_errbuf e = {{0}};
    struct sd3q_model * m = NULL;
    struct sd3q_session * s = NULL;
    float * z = NULL, * img = NULL;
    uint8_t * rgb = NULL;
    char ** written = NULL;
    if (st_open(in_path, &in, &e) != SD3Q_OK) goto fail;
    int64_t zs[4] = {-1, -1, -1, -1};
    if (!(z = read_4d(&in, tensor, zs, &e))) goto fail;
    if (!(m = model_opts_load(&mo, "vae-decode"))) goto done;
    struct sd3q_vae_info vi;
    if (sd3q_model_vae_info(m, &vi) != SD3Q_OK || !vi.has_decoder) {
        fprintf(stderr, "sd3q vae-decode: the model has no VAE decoder (first_stage_model.decoder.* or vae/ weights)\n");
        goto done;
    }
    if (zs[1] != vi.latent_channels) {
        fprintf(stderr, "sd3q vae-decode: %s: the latents have %lld channels but the VAE expects %d\n", in_path, (long long)zs[1],
                vi.latent_channels);
        goto done;
    }
    if (zs[0] > 4096 || zs[2] > 4096 || zs[3] > 4096 || (to_png && (zs[2] * vi.factor > PNGIO_MAX_SIDE || zs[3] * vi.factor > PNGIO_MAX_SIDE))) {
        fprintf(stderr, "sd3q vae-decode: %s: latents %lld×%lld×%lld are too large\n", in_path, (long long)zs[0], (long long)zs[2],
                (long long)zs[3]);
        goto done;
    }
    if (!(s = open_session(&mo, "vae-decode", m, zs[2], zs[3], tile))) goto done;
    const int64_t B = zs[0], H = vi.factor * zs[2], W = vi.factor * zs[3], per = 3 * H * W;
    if (!(img = malloc(sizeof(float) * (size_t)(B * per)))) {
        fprintf(stderr, "sd3q vae-decode: out of memory for the %lld×%lld image\n", (long long)W, (long long)H);
        goto done;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    enum sd3q_status st = sd3q_session_vae_decode(s, (int)B, (int)zs[2], (int)zs[3], z, img);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q vae-decode: %s: %s\n", in_path, sd3q_session_last_error(s));
        goto done;
    }
    double secs = seconds_since(&t0);
    if (!to_png) {
        int64_t os[4] = {B, 3, H, W};
        struct st_wtensor wt = {"image", DT_F32, 4, os, img};
        const char * meta[] = {"format", "sd3q vae-decode: image in [-1, 1], not clamped"};
        if (st_write(out_path, &wt, 1, meta, 1, &e) != SD3Q_OK) goto fail;
    } else {
        rgb     = malloc((size_t)(H * W * 3));
        written = calloc((size_t)B, sizeof(char *));
        if (!rgb || !written) {
            fprintf(stderr, "sd3q vae-decode: out of memory\n");
            goto done;
        }
        char soft[64];
        snprintf(soft, sizeof soft, "sd3q %s", sd3q_version());
        struct pngio_text kv[2] = {{"Software", soft}, {"source", in_path}};
        for (int64_t b = 0; b < B; b++) {
            char * p = png_path(out_path, (int)b, (int)B);
            if (!p) goto done;
            image_to_rgb8(img + b * per, (int)W, (int)H, rgb);
            if (pngio_write_rgb8(p, rgb, (int)W, (int)H, kv, 2, &e) != SD3Q_OK) {
                free(p);
                goto fail;
            }
            written[n_written++] = p;
        }
    }
    fprintf(stderr, "sd3q vae-decode: %lld × %lld×%lld latent → %lld×%lld image: %.3f s\n", (long long)B, (long long)zs[2], (long long)zs[3],
            (long long)W, (long long)H, secs);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "sd3q vae-decode: %s\n", e.msg);
done:
    if (rc != 0)  // a PNG series is all or nothing
        for (int i = 0; i < n_written; i++) unlink(written[i]);
    for (int i = 0; i < n_written; i++) free(written[i]);
    free(written);
    free(rgb);
    free(img);
    free(z);
    st_close(&in);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}

// ---- vae-encode -------------------------------------------------------------------------------------------------------

int cmd_vae_encode(int argc, char ** argv) {
    struct model_opts mo;
    const char * in_path = NULL, * out_path = NULL, * tensor = "image";
    int64_t tile = 0;
    struct opt opts[VAE_OPTS_N];
    vae_opts(opts, &mo, &in_path, &out_path, &tensor, &tile, "IN.png, or IN.safetensors with image [B, 3, H, W] in [-1, 1]",
             "OUT.safetensors: latents (mean), logvar, latents_scaled [B, C, H/8, W/8]",
             "name of the input tensor of a safetensors input (default image)");
    int r = args_parse(argc, argv, 2, "vae-encode",
                       "Encode images with the model's VAE into its latent space: latents = the posterior mean (VAE space),\n"
                       "logvar, and latents_scaled = (latents - shift_factor) * scaling_factor (the MMDiT's space).\n"
                       "Width and height must be multiples of 8.",
                       opts, VAE_OPTS_N, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    if (!ends_with(out_path, ".safetensors")) {
        fprintf(stderr, "sd3q vae-encode: --output must end in .safetensors (got '%s')\n", out_path);
        return 2;
    }
    if (!output_folder_ok("vae-encode", out_path)) return 1;
    int rc = 1;
    struct st_file in = {0};
    struct rgb_image png = {0};
    struct sd3q_errbuf e = {{0}};
    struct sd3q_model * m = NULL;
    struct sd3q_session * s = NULL;
    float * img = NULL, * mean = NULL, * lv = NULL, * sc = NULL;
    int64_t is[4] = {-1, 3, -1, -1};
    if (ends_with(in_path, ".png")) {
        if (pngio_read(in_path, &png, &e) != SD3Q_OK) goto fail;
        is[0] = 1, is[2] = png.height, is[3] = png.width;
        if (!(img = malloc(sizeof(float) * (size_t)(3 * is[2] * is[3])))) goto oom;
        rgb8_to_image(png.rgb, png.width, png.height, img);
    } else {
        if (st_open(in_path, &in, &e) != SD3Q_OK) goto fail;
        if (!(img = read_4d(&in, tensor, is, &e))) goto fail;
    }
    if (!(m = model_opts_load(&mo, "vae-encode"))) goto done;
    struct sd3q_vae_info vi;
    if (sd3q_model_vae_info(m, &vi) != SD3Q_OK || !vi.has_encoder) {
        fprintf(stderr, "sd3q vae-encode: the model has no VAE encoder (first_stage_model.encoder.* or vae/ weights)\n");
        goto done;
    }
    const int64_t f = vi.factor;
    if (is[2] % f || is[3] % f) {
        fprintf(stderr, "sd3q vae-encode: %s: image size %lld×%lld: width and height must be multiples of %lld (crop or resize it)\n",
                in_path, (long long)is[3], (long long)is[2], (long long)f);
        goto done;
    }
    if (is[0] > 4096 || is[2] > f * 4096 || is[3] > f * 4096) {
        fprintf(stderr, "sd3q vae-encode: %s: input too large\n", in_path);
        goto done;
    }
    const float scaling = vi.scaling, shift = vi.shift;
    const int64_t B = is[0], h = is[2] / f, w = is[3] / f, C = vi.latent_channels;
    if (!(s = open_session(&mo, "vae-encode", m, h, w, tile))) goto done;
    const int64_t nl = B * C * h * w;
    mean = malloc(sizeof(float) * (size_t)nl), lv = malloc(sizeof(float) * (size_t)nl), sc = malloc(sizeof(float) * (size_t)nl);
    if (!mean || !lv || !sc) goto oom;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sd3q_session_vae_encode(s, (int)B, (int)is[2], (int)is[3], img, mean, lv) != SD3Q_OK) {
        fprintf(stderr, "sd3q vae-encode: %s: %s\n", in_path, sd3q_session_last_error(s));
        goto done;
    }
    double secs = seconds_since(&t0);
    for (int64_t i = 0; i < nl; i++) sc[i] = (mean[i] - shift) * scaling;
    int64_t os[4] = {B, C, h, w};
    struct st_wtensor wt[3] = {{"latents", DT_F32, 4, os, mean}, {"logvar", DT_F32, 4, os, lv}, {"latents_scaled", DT_F32, 4, os, sc}};
    char sf[32], sh[32];
    snprintf(sf, sizeof sf, "%.9g", (double)scaling);
    snprintf(sh, sizeof sh, "%.9g", (double)shift);
    const char * meta[] = {"format", "sd3q vae-encode: latents = posterior mean (VAE space), latents_scaled = (latents - shift) * scaling",
                           "scaling_factor", sf, "shift_factor", sh};
    if (st_write(out_path, wt, 3, meta, 3, &e) != SD3Q_OK) goto fail;
    fprintf(stderr, "sd3q vae-encode: %lld × %lld×%lld image → %lld×%lld latent: %.3f s\n", (long long)B, (long long)is[3], (long long)is[2],
            (long long)w, (long long)h, secs);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "sd3q vae-encode: out of memory\n");
    goto done;
fail:
    fprintf(stderr, "sd3q vae-encode: %s\n", e.msg);
done:
    free(img);
    free(mean);
    free(lv);
    free(sc);
    rgb_image_free(&png);
    st_close(&in);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}
