/*
 * session.h — the per-run object (opaque in the public API).
 */
#ifndef SD3Q_MODEL_SESSION_H
#define SD3Q_MODEL_SESSION_H

#include "backend/backend.h"
#include "core/arena.h"
#include "model/model.h"

struct sd3q_session {
    const struct sd3q_model *  model;
    struct sd3q_session_params p;
    struct backend *           bk;
    struct arena               ar;        // activations, planned at init
    struct sd3q_errbuf         err;
    sd3q_progress_fn           progress;
    void *                     progress_ud;
    struct mmdit_hook          hook;      // activation observer (calibration statistics, tests)
    float *                    host_v;    // [max_batch, C, h, w] velocity staging for the Euler update
    float *                    host_t;    // [max_batch, 256] timestep embeddings before upload
    int                        force_ref; // 1: scalar reference ops (tests)
    // text encoders (src/model/text.c)
    float *                    host_text; // staging: input embeddings, one head's T5 bias, CLIP hidden states
    int32_t *                  host_ids;  // token ids of the prompt being encoded
    int                        t5_notice; // 1 once the "no T5 in the model" notice was printed
    int                        mmdit_prepared; // the MMDiT's weights were given to the backend (prepare)
    unsigned                   text_prepared; // bit c: encoder c's weights were given to the backend (prepare)
    // VAE (src/model/vae-api.c)
    int                        vae_th;    // planned VAE tile, latent rows (0: no VAE)
    int                        vae_tw;    // planned VAE tile, latent columns
    float *                    host_vae;  // staging: one tile's latent and image
    int                        vae_prepared; // 1: the VAE's weights were given to the backend (prepare)
    // sd3q_session_generate's conditioning for the last prompt (src/model/pipeline.c): reused while the texts repeat
    char *                     gen_prompt;   // NULL: nothing cached
    char *                     gen_negative; // NULL when only the conditional half was encoded (CFG off)
    int                        gen_t5_len;
    float *                    gen_ctx;      // [2, L, D]: conditional, then unconditional
    float *                    gen_pooled;   // [2, P]
    int64_t                    gen_ctx_n;    // floats allocated in gen_ctx (L·D each half)
};

// Frees what sd3q_session_generate keeps between calls.
void pipeline_session_free(struct sd3q_session * s);

// Copies a component's weights to the backend ahead of use as residency group `group` (enum sd3q_component), when
// the backend keeps its own copies (CUDA); for_each(obj, fn, ud) calls fn for every weight (e.g. mmdit_for_each_weight).
enum sd3q_status session_prepare_weights(struct sd3q_session * s, int group,
                                         void (*for_each)(const void * obj, void (*fn)(void * ud, const struct wt * w), void * ud),
                                         const void * obj, struct sd3q_errbuf * e);

// Frees the backend's copies of the MMDiT's weights (low_memory sessions); the next MMDiT call copies them again.
void session_mmdit_release(struct sd3q_session * s);

// sd3q_session_init with the choice of the scalar reference backend (ref = 1), for tests and op comparisons.
enum sd3q_status session_create(const struct sd3q_model * model, const struct sd3q_session_params * params, int ref,
                                struct sd3q_session ** out, char * err, size_t err_size);

// Checks an MMDiT request (batch n, latent h×w, n_ctx context tokens) against the model and the session's planned
// maxima; callers that do expensive work first (text encoding) call it up front.
enum sd3q_status session_check_request(struct sd3q_session * s, int n, int h, int w, int n_ctx);

// Called by session_sample with the latent entering step k (σ_k, timestep 1000·σ_k), and once more after the last
// step with k = steps, σ = 0 and the final latent.
typedef void (*sample_step_fn)(void * ud, int k, float sigma, float timestep, const float * latents);

// sd3q_session_sample with a per-step observer (calibration keeps the latent entering every step).
enum sd3q_status session_sample(struct sd3q_session * s, int h, int w, int steps, float shift, float cfg, const struct sd3q_cond * cond,
                                const struct sd3q_cond * uncond, float * latents, sample_step_fn on_step, void * ud);

#endif
