/*
 * calibfile.h — the calibration directory written by `sd3q calibrate` and read by `sd3q collect-activations`.
 *
 *   DIR/manifest.json               versioned index (settings, prompts, completed images); rewritten atomically after
 *                                   every image, so an interrupted run resumes where it stopped
 *   DIR/prompts/pNNNN.safetensors   one prompt's embeddings: context [1, L, D], pooled [1, P] (once per prompt)
 *   DIR/prompts/negative.safetensors the negative prompt's embeddings (same names)
 *   DIR/latents/NNNN.safetensors    latents [N+1, C, h, w] (the latent entering step k, k < N; the final latent at N),
 *                                   sigmas [N+1], timesteps [N]
 *   DIR/images/NNNN.png             the decoded image
 * All paths inside the manifest are relative to DIR. Format details in docs/FORMATS.md.
 */
#ifndef SD3Q_QUANT_CALIBFILE_H
#define SD3Q_QUANT_CALIBFILE_H

#include <stdint.h>

#include "core/status.h"

#define CALIB_FORMAT  "sd3q-calibration"
#define CALIB_VERSION 1

struct calib_settings {
    char    model[1024];
    char    prompts_file[1024];
    char    negative[1024];
    int     steps, width, height, t5_max_length, num_images, latent_channels;
    double  cfg, shift;
    int64_t seed;
};

struct calib_prompt {
    char * text;
    int    id;
};

struct calib_image {
    int     id, prompt;
    int64_t seed;
};

struct calib_manifest {
    struct calib_settings set;
    int                   n_prompts, n_images;
    struct calib_prompt * prompts;   // every prompt of the prompt file (its id is its index)
    struct calib_image *  images;    // completed images, in order (id == index)
};

// Reads and validates DIR/manifest.json.
enum sd3q_status calib_read(const char * dir, struct calib_manifest * m, struct sd3q_errbuf * e);

// Writes DIR/manifest.json atomically.
enum sd3q_status calib_write(const char * dir, const struct calib_manifest * m, struct sd3q_errbuf * e);

// Frees a manifest.
void calib_free(struct calib_manifest * m);

// Writes one prompt's embeddings (context [1, L, D], pooled [1, P]) to DIR/rel atomically.
enum sd3q_status calib_write_embeds(const char * dir, const char * rel, const float * ctx, int64_t L, int64_t D, const float * pooled,
                                    int64_t P, struct sd3q_errbuf * e);

// Reads them back into new arrays (shapes checked); on failure both are NULL.
enum sd3q_status calib_read_embeds(const char * dir, const char * rel, int64_t L, int64_t D, int64_t P, float ** ctx, float ** pooled,
                                   struct sd3q_errbuf * e);

// Relative file names, for a prompt id or an image id.
void calib_prompt_file(int id, char * buf, size_t n);    // "prompts/p0007.safetensors"
void calib_latents_file(int id, char * buf, size_t n);   // "latents/0007.safetensors"
void calib_image_file(int id, char * buf, size_t n);     // "images/0007.png"

#endif
