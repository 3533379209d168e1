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
    int32_t          vae_tile;      // VAE tile side in latent pixels (0: 64, i.e. 512² images); the VAE is planned
                                    // for min(vae_tile, max_latent) and larger images are decoded/encoded in tiles
    int32_t          low_memory;    // 1: on a device with its own memory (CUDA), keep only the running component's
                                    // weights there: sd3q_session_generate frees the text encoders' copies after
                                    // encoding, the MMDiT's after sampling, the VAE's after decoding (each is copied
                                    // again at its next use). 0: everything stays resident once copied
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

// ---- text ------------------------------------------------------------------------------------------------------

// Tokenizes `text` with the tokenizer of encoder `enc` (SD3Q_COMP_CLIP_L, SD3Q_COMP_CLIP_G or SD3Q_COMP_T5) into ids
// (capacity max_len): BOS/EOS as the tokenizer defines, truncated to max_len, padded to max_len when pad != 0 with the
// tokenizer's pad id. *n_out receives the count written. The model must have the tokenizer (diffusers folder, or
// --tokenizer-dir for single files).
SD3Q_API enum sd3q_status sd3q_model_tokenize(const struct sd3q_model * model, enum sd3q_component enc, const char * text,
                                              int max_len, int pad, int32_t * ids, int * n_out, char * err, size_t err_size);

// Width of the MMDiT context rows the prompt encoding produces (the T5 width; 4096 for SD3; without T5 the MMDiT's
// joint_attention_dim, as diffusers) and of the pooled vector (CLIP-L width + CLIP-G projection; 2048). 0 when the
// text encoders are missing (both CLIPs are needed; without T5 also an MMDiT, for the width).
SD3Q_API int sd3q_model_context_dim(const struct sd3q_model * model);
SD3Q_API int sd3q_model_pooled_dim(const struct sd3q_model * model);

// Number of context rows sd3q_session_encode_prompt writes for a T5 length: 77 + t5_len, or 77 + 77 when the model
// has no T5 (diffusers then uses 77 zero rows whatever max_sequence_length is). 0 when the text encoders are missing
// or t5_len is out of range.
SD3Q_API int sd3q_model_context_len(const struct sd3q_model * model, int t5_len);

// Encodes a prompt exactly as diffusers' StableDiffusion3Pipeline.encode_prompt: context [sd3q_model_context_len
// rows, context_dim] (77 rows of CLIP-L ‖ CLIP-G penultimate states zero-padded to the context width, then t5_len rows
// of T5 states — the prompt tokenised, truncated and padded to t5_len as with max_sequence_length = t5_len; without
// T5 in the model 77 zero rows, with a notice on stderr once per session) and pooled [pooled_dim] (CLIP-L pooled ‖
// CLIP-G projected). The negative prompt of classifier-free guidance is a second call ("" is a valid prompt). The
// session must have been planned for max_context ≥ the row count. Needs the tokenizers (diffusers folder or
// --tokenizer-dir).
SD3Q_API enum sd3q_status sd3q_session_encode_prompt(struct sd3q_session * s, const char * prompt, int t5_len, float * context,
                                                     float * pooled);

// Drops the resident pages of component c's weights (madvise MADV_DONTNEED over their memory-mapped ranges), e.g. the
// 9.5 GB of T5-XXL after the prompts are encoded. The model does not change: the pages are read back from the file if
// the component runs again. Safe while no call of any session uses that component.
SD3Q_API enum sd3q_status sd3q_model_release_pages(const struct sd3q_model * model, enum sd3q_component c);

// ---- VAE --------------------------------------------------------------------------------------------------------

// The VAE's latent normalisation (config.json scaling_factor / shift_factor; SD3: 1.5305, 0.0609; single files carry
// no config and get SD3's values). SD3Q_ERR_MISSING when the model has no VAE.
SD3Q_API enum sd3q_status sd3q_model_vae_factors(const struct sd3q_model * model, float * scaling, float * shift);

// VAE hyper-parameters, from vae/config.json or inferred from tensor shapes.
struct sd3q_vae_info {
    int32_t latent_channels;  // C of the latents (16)
    int32_t factor;           // image pixels per latent pixel along each axis (8)
    int32_t has_encoder;      // the checkpoint has the encoder (needed by sd3q_session_vae_encode)
    int32_t has_decoder;      // ... the decoder
    float   scaling, shift;   // as sd3q_model_vae_factors
};

// Fills *info; SD3Q_ERR_MISSING when the model has no VAE.
SD3Q_API enum sd3q_status sd3q_model_vae_info(const struct sd3q_model * model, struct sd3q_vae_info * info);

// Decodes latents [n, C, h, w] in the VAE's own latent space (no scaling/shift) into images [n, 3, 8h, 8w] in about
// [-1, 1] (not clamped). Any size: a latent larger than the session's VAE tile (params.vae_tile, at most the planned
// maximum latent) is decoded in overlapping tiles blended with linear ramps across each overlap, so memory stays
// bounded and there are no seams, but the result differs from a one-piece decode (GroupNorm statistics and the mid
// attention see one tile; diffusers' tiled decoding behaves the same). A tile at least as large as the latent gives
// the one-piece result. Batch elements are decoded one after the other.
SD3Q_API enum sd3q_status sd3q_session_vae_decode(struct sd3q_session * s, int n, int h, int w, const float * latents,
                                                  float * image);

// Encodes images [n, 3, H, W] in [-1, 1] (H, W multiples of 8) into the latent mean [n, C, H/8, W/8] (VAE space);
// logvar (may be NULL) receives the log-variance clamped to [-30, 20]. Tiled like decoding (the moments are blended).
// The model-space latent is (mean − shift)·scaling (sd3q_model_vae_factors).
SD3Q_API enum sd3q_status sd3q_session_vae_encode(struct sd3q_session * s, int n, int H, int W, const float * image,
                                                  float * mean, float * logvar);

// ---- noise ------------------------------------------------------------------------------------------------------

// Fills out[0..n) with the values torch.randn(n, generator=torch.Generator("cpu").manual_seed(seed)) produces, bit
// for bit (mt19937 and torch's normal sampling), so a seed starts from the same latent as diffusers: randn of a shape
// [1,16,h,w] is randn of its element count. Matches float32 torch on x86-64 (its AVX2 kernel, also used on AVX-512
// machines; checked against torch 2.5.1); the seed's low 32 bits are used, as torch does.
SD3Q_API void sd3q_randn_torch(uint64_t seed, float * out, int64_t n);

// ---- pipeline -----------------------------------------------------------------------------------------------------

// Text-to-image settings (diffusers' StableDiffusion3Pipeline defaults from sd3q_gen_default_params).
struct sd3q_gen_params {
    const char *  prompt;
    const char *  negative_prompt;  // "" by default
    int32_t       width, height;    // multiples of 16 (0: the model's sample size × 8, 1024 for SD3)
    int32_t       steps;            // 28
    int32_t       t5_len;           // T5 tokens (256 as diffusers)
    float         cfg;              // 7.0; 1 disables the unconditional pass
    float         shift;            // flow-matching time shift; 0 (the default): the model's (sd3q_model_shift)
    uint64_t      seed;             // noise = torch.randn([1, C, h, w], Generator("cpu").manual_seed(seed))
    const float * init_noise;       // or this starting latent [1, C, h, w] (diffusers' latents=), NULL: from the seed
    int32_t       release_text;     // 1: drop the text encoders' pages once the prompts are encoded
};

// Returns the defaults (prompt NULL, negative "", size 0 = the model's, 28 steps, T5 256, CFG 7, shift 0 = the model's,
// seed 0).
SD3Q_API struct sd3q_gen_params sd3q_gen_default_params(void);

// Seconds spent in each stage of the last sd3q_session_generate call.
struct sd3q_gen_timing {
    double text, denoise, decode;
};

// Generates one image: encodes the prompts, samples (flow-matching Euler with CFG, batch order [uncond, cond] as
// diffusers), decodes. image [3, H, W] in about [-1, 1]; latents (may be NULL) [C, H/8, W/8] receives the final
// latent in model space (before the VAE's scaling and shift). timing may be NULL. A size the session was not planned
// for (sd3q_session_params) is rejected before any work. The session keeps the last call's text conditioning and
// reuses it while the prompt, negative prompt and T5 length repeat (the text encoders then do not run: timing->text ≈ 0).
SD3Q_API enum sd3q_status sd3q_session_generate(struct sd3q_session * s, const struct sd3q_gen_params * p, float * image,
                                                float * latents, struct sd3q_gen_timing * timing);

// ---- sampler --------------------------------------------------------------------------------------------------

#define SD3Q_DEFAULT_SHIFT 3.0   // SD3's flow-matching time shift (every released SD3 / SD3.5 scheduler config)
#define SD3Q_MIN_SHIFT     0.01  // the range a scheduler config or a caller may give
#define SD3Q_MAX_SHIFT     100.0

// The model's time shift: `shift` of scheduler/scheduler_config.json for a diffusers folder that has one (checked when
// the model loads: a number in [SD3Q_MIN_SHIFT, SD3Q_MAX_SHIFT], 1.0 when the config has none as in diffusers,
// FlowMatchEulerDiscreteScheduler, no dynamic shifting), else SD3Q_DEFAULT_SHIFT (single files carry no scheduler
// config). SD3Q_DEFAULT_SHIFT for NULL.
SD3Q_API float sd3q_model_shift(const struct sd3q_model * model);

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
