/*
 * png.h — images in and out: 8-bit RGB PNG through libpng (atomic writes with text chunks recording how an image was
 * made; reads that convert any PNG to 8-bit RGB and refuse hostile files), and the float ↔ uint8 conversions of
 * diffusers' VaeImageProcessor.
 *
 * Pixel layouts: PNG data is interleaved rows [H, W, 3] (uint8); model tensors are planar [3, H, W] (float32).
 */
#ifndef SD3Q_IO_PNG_H
#define SD3Q_IO_PNG_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define PNGIO_MAX_SIDE      16384             // largest width or height read or written
#define PNGIO_MAX_TEXT      (1u << 20)        // largest text chunk kept when reading (bytes)
#define PNGIO_MAX_CHUNKS    1000              // ancillary chunks allowed when reading

// One text chunk: keyword (1–79 printable Latin-1 characters) and a UTF-8 value (written as tEXt when ASCII, else iTXt).
struct pngio_text {
    const char * key;
    const char * value;
};

// How an image was generated, for its text chunks (strings may be NULL: omitted).
struct pngio_params {
    const char * prompt;
    const char * negative_prompt;
    uint64_t     seed;
    int          steps;
    double       guidance;  // CFG scale
    double       shift;     // flow-matching time shift
    int          width, height;
    const char * model;     // model name (e.g. the checkpoint's file or folder name)
    const char * sampler;   // NULL: "Euler"
};

// An image read from a file.
struct rgb_image {
    int       width, height;
    uint8_t * rgb;     // [height, width, 3], malloc'd
    int       n_text;
    char **   keys;    // n_text keywords and values, malloc'd
    char **   values;
};

// Formats the AUTOMATIC1111-style "parameters" text: the prompt line, "Negative prompt: …" (when not empty), then
// "Steps: 28, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 1024x1024, Model: …, Shift: 3, Version: sd3q 0.1.0".
// Values containing ',', ':' or '"' or a line break are JSON-quoted as that format does. snprintf-style.
size_t pngio_format_parameters(const struct pngio_params * p, char * buf, size_t size);

// Writes rgb [H, W, 3] as an 8-bit RGB PNG at `path` atomically (temporary file + rename; nothing is left behind on
// failure), with the given text chunks.
enum sd3q_status pngio_write_rgb8(const char * path, const uint8_t * rgb, int width, int height, const struct pngio_text * text, int n_text,
                                struct sd3q_errbuf * e);

// pngio_write_rgb8 with the chunks of `p` (may be NULL): "parameters" (pngio_format_parameters), "prompt",
// "negative_prompt", "seed", "steps", "guidance", "shift", "size", "model", and "Software" = "sd3q x.y.z".
enum sd3q_status pngio_write_image(const char * path, const uint8_t * rgb, int width, int height, const struct pngio_params * p,
                                 struct sd3q_errbuf * e);

// Reads any PNG (gray, gray+alpha, palette, RGB, RGBA; 1–16 bits; interlaced) as 8-bit RGB: alpha is dropped (as
// PIL's convert("RGB")), 16-bit samples are scaled to 8 bits. Text chunks (tEXt, zTXt, iTXt) are kept. Refuses files
// that are not PNG, truncated, corrupt (CRC of critical chunks), or larger than PNGIO_MAX_SIDE; never aborts.
enum sd3q_status pngio_read(const char * path, struct rgb_image * img, struct sd3q_errbuf * e);

// Frees what pngio_read allocated (a zeroed struct is fine).
void rgb_image_free(struct rgb_image * img);

// The value of text chunk `key`, or NULL.
const char * rgb_image_text(const struct rgb_image * img, const char * key);

// Planar float [3, H, W] → interleaved uint8 [H, W, 3], as diffusers' postprocess: t = x/2 + 0.5 clamped to [0, 1],
// then round(t·255) with ties to even, all in float32.
void image_to_rgb8(const float * chw, int width, int height, uint8_t * rgb);

// Interleaved uint8 [H, W, 3] → planar float [3, H, W] in [-1, 1], as diffusers' preprocess: 2·(u/255) − 1 in float32.
void rgb8_to_image(const uint8_t * rgb, int width, int height, float * chw);

#endif
