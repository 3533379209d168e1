/*
 * sd3q.h — Stable Diffusion 3 in C, with a W4A8 post-training-quantization toolkit.
 *
 * The one public header. Two opaque objects:
 *   struct sd3q_model    immutable weights (memory-mapped), loaded once; safe to share read-only between threads.
 *   struct sd3q_session  per-run state: the activation arena (measured, then allocated once), thread pool,
 *                        RNG, callbacks and the last error message. One session is used by one thread at a time.
 *
 * Every fallible call returns an `enum sd3q_status`; a detail message (file, tensor or field, expected versus got)
 * is kept on the object: sd3q_session_last_error(), or the caller's buffer for sd3q_model_load().
 * The library never returns memory the caller must free(): outputs go into caller buffers.
 *
 * Usage:
 *     struct sd3q_model_params mp = sd3q_model_default_params();
 *     mp.path = "stable-diffusion-3-medium-diffusers";
 *     struct sd3q_model * model; char err[1024];
 *     if (sd3q_model_load(&mp, &model, err, sizeof err) != SD3Q_OK) { fprintf(stderr, "%s\n", err); return 1; }
 *     struct sd3q_session_params sp = sd3q_session_default_params();
 *     sp.max_batch = 2; sp.max_latent_h = 128; sp.max_latent_w = 128; sp.max_context = 333;
 *     struct sd3q_session * s;
 *     if (sd3q_session_init(model, &sp, &s, err, sizeof err) != SD3Q_OK) { ... }
 *     sd3q_session_mmdit(s, 2, 128, 128, x, 333, context, pooled, timesteps, v);
 *     sd3q_session_free(s); sd3q_model_free(model);
 *
 * Dimension order is PyTorch's (outermost first) everywhere; all tensors are row-major float32 unless stated.
 */
#ifndef SD3Q_H
#define SD3Q_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(SD3Q_SHARED)
#    define SD3Q_API __declspec(dllexport)
#elif defined(__GNUC__)
#    define SD3Q_API __attribute__((visibility("default")))
#else
#    define SD3Q_API
#endif

// ---- status ---------------------------------------------------------------------------------------------------

// Append-only; explicit values.
enum sd3q_status {
    SD3Q_OK              = 0,
    SD3Q_ERR_INVALID_ARG = 1,  // a bad argument or CLI value
    SD3Q_ERR_IO          = 2,  // open/read/write/rename failed
    SD3Q_ERR_FORMAT      = 3,  // a malformed file (header, JSON, offsets, dtype)
    SD3Q_ERR_SHAPE       = 4,  // a tensor with the wrong shape
    SD3Q_ERR_MISSING     = 5,  // a required tensor, component or file is absent
    SD3Q_ERR_OOM         = 6,  // an allocation failed
    SD3Q_ERR_UNSUPPORTED = 7,  // valid but not supported (dtype for a role, a device)
    SD3Q_ERR_DEVICE      = 8,  // a GPU call failed
    SD3Q_ERR_ABORTED     = 9,  // the abort callback asked to stop
    SD3Q_STATUS_COUNT
};

// Returns a fixed, never-NULL description of `st`.
SD3Q_API const char * sd3q_status_str(enum sd3q_status st);

// Returns the library version, e.g. "0.1.0".
SD3Q_API const char * sd3q_version(void);

// ---- model ----------------------------------------------------------------------------------------------------

struct sd3q_model;
struct sd3q_session;

enum sd3q_component {
    SD3Q_COMP_MMDIT  = 0,
    SD3Q_COMP_CLIP_L = 1,
    SD3Q_COMP_CLIP_G = 2,
    SD3Q_COMP_T5     = 3,
    SD3Q_COMP_VAE    = 4,
    SD3Q_COMP_COUNT
};

struct sd3q_model_params {
    const char * path;           // single-file checkpoint or diffusers folder; may be NULL when split files are given
    const char * mmdit_path;     // split files (override what `path` provides)
    const char * clip_l_path;
    const char * clip_g_path;
    const char * t5xxl_path;
    const char * vae_path;
    const char * tokenizer_dir;  // vocabularies for single-file checkpoints (which carry none)
    int          allow_extra;    // 1: unknown tensors are reported as warnings instead of errors
};

// Returns the defaults (all paths NULL, allow_extra 0).
SD3Q_API struct sd3q_model_params sd3q_model_default_params(void);

// Loads and validates a model; on success *out owns it (free with sd3q_model_free). Weights are memory-mapped and
// not copied. On failure *out is NULL and `err` (err_size bytes, may be NULL) holds the detail message.
SD3Q_API enum sd3q_status sd3q_model_load(const struct sd3q_model_params * params, struct sd3q_model ** out,
                                          char * err, size_t err_size);

// Frees a model (NULL is allowed). Sessions made from it must be freed first.
SD3Q_API void sd3q_model_free(struct sd3q_model * model);

// Returns 1 when the model holds component `c`.
SD3Q_API int sd3q_model_has(const struct sd3q_model * model, enum sd3q_component c);

// MMDiT hyper-parameters, from config.json or inferred from tensor shapes.
struct sd3q_mmdit_info {
    int32_t depth;          // joint blocks
    int32_t hidden;         // D
    int32_t heads;          // D / 64
    int32_t head_dim;       // 64
    int32_t patch;          // 2
    int32_t in_channels;    // 16
    int32_t out_channels;   // 16
    int32_t pos_grid;       // side of the stored position table (192 for SD3-Medium)
    int32_t context_dim;    // 4096
    int32_t pooled_dim;     // 2048
    int32_t mlp_hidden;     // 4·D
    int32_t qk_norm;        // 1: RMSNorm on q and k (SD3.5)
    int32_t n_dual;         // number of MMDiT-X dual-attention blocks (SD3.5 Medium: 13)
    int32_t dual_mask_lo;   // bit i set: block i (0..31) has attn2
    int32_t dual_mask_hi;   // bit i set: block 32+i has attn2
    int32_t sample_size;    // default latent side (config.json sample_size; 128 for SD3-Medium), 0 if unknown
    int64_t n_params;       // parameter count including pos_embed
};

// Fills *info; returns SD3Q_ERR_MISSING when the model has no MMDiT.
SD3Q_API enum sd3q_status sd3q_model_mmdit_info(const struct sd3q_model * model, struct sd3q_mmdit_info * info);

// Writes a human-readable description (components, sources, hyper-parameters, tensor counts and dtypes; with
// `tensors` != 0 every tensor) into buf, snprintf-style: returns the length the full text needs.
SD3Q_API size_t sd3q_model_describe(const struct sd3q_model * model, int tensors, char * buf, size_t size);

// ---- session --------------------------------------------------------------------------------------------------

enum sd3q_device {
    SD3Q_DEVICE_AUTO = 0,  // CUDA when built with it and a GPU is present, else CPU
    SD3Q_DEVICE_CPU  = 1,
    SD3Q_DEVICE_CUDA = 2,
};

struct sd3q_session_params {
    enum sd3q_device device;
    int32_t          n_threads;     // CPU threads; 0 = number of online CPUs
    int32_t          max_batch;     // the arena is planned for these maxima; asking for more later is an error
    int32_t          max_latent_h;  // latent rows (image height / 8)
    int32_t          max_latent_w;  // latent columns
    int32_t          max_context;   // text tokens entering the MMDiT (77 + T5 length)
    int32_t          profile;       // 1: time every backend op (see sd3q_session_profile)
};

// Returns defaults: AUTO device, all threads, batch 2, 128×128 latent, 333 context tokens.
SD3Q_API struct sd3q_session_params sd3q_session_default_params(void);

// Creates a session: measures the activation memory for the maxima, then allocates it once.
SD3Q_API enum sd3q_status sd3q_session_init(const struct sd3q_model * model, const struct sd3q_session_params * params,
                                            struct sd3q_session ** out, char * err, size_t err_size);

// Frees a session (NULL is allowed).
SD3Q_API void sd3q_session_free(struct sd3q_session * s);

// Returns the detail message of the last failed call on `s` ("" if none); valid until the next call on `s`.
SD3Q_API const char * sd3q_session_last_error(const struct sd3q_session * s);

// Returns the activation arena size in bytes that the session allocated.
SD3Q_API size_t sd3q_session_arena_bytes(const struct sd3q_session * s);

// Writes the per-op timing table (when the session was created with profile = 1) into buf, snprintf-style; returns
// the length the full text needs. Counters are reset when reset != 0.
SD3Q_API size_t sd3q_session_profile(struct sd3q_session * s, int reset, char * buf, size_t size);

// Progress callback: called after each unit of work (a denoising step); return non-zero to abort.
typedef int (*sd3q_progress_fn)(void * user_data, int done, int total);
SD3Q_API void sd3q_session_set_progress(struct sd3q_session * s, sd3q_progress_fn fn, void * user_data);

// One MMDiT forward: x [n,16,h,w], context [n,n_ctx,context_dim], pooled [n,pooled_dim], timestep [n] (1000·σ)
// → out [n,16,h,w] (the flow-matching velocity). h and w must be multiples of the patch size.
SD3Q_API enum sd3q_status sd3q_session_mmdit(struct sd3q_session * s, int n, int h, int w, const float * x,
                                             int n_ctx, const float * context, const float * pooled,
                                             const float * timestep, float * out);

// ---- sampler --------------------------------------------------------------------------------------------------

// The flow-matching sigma schedule of diffusers' FlowMatchEulerDiscreteScheduler: sigmas[0..steps] (steps+1 values,
// the last 0) for `steps` ≥ 1 and shift > 0. Timesteps are 1000·sigmas[i].
SD3Q_API enum sd3q_status sd3q_schedule(int steps, float shift, float * sigmas);

// Text conditioning for classifier-free guidance (each [1, n_ctx, context_dim] and [1, pooled_dim]).
struct sd3q_cond {
    int           n_ctx;
    const float * context;
    const float * pooled;
};

// Euler sampling with classifier-free guidance: latents [1,16,h,w] holds the initial noise on entry and the final
// latent (model space) on return. With cfg == 1 only the conditional pass runs. Calls the progress callback.
SD3Q_API enum sd3q_status sd3q_session_sample(struct sd3q_session * s, int h, int w, int steps, float shift, float cfg,
                                              const struct sd3q_cond * cond, const struct sd3q_cond * uncond,
                                              float * latents);

#ifdef __cplusplus
}
#endif

#endif
