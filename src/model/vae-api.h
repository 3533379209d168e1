/*
 * vae-api.h — the VAE's hooks into the model and session objects (src/model/model.c, session.c call these); the
 * public VAE entry points are in sd3q.h.
 */
#ifndef SD3Q_MODEL_VAE_API_H
#define SD3Q_MODEL_VAE_API_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "sd3q.h"

struct sd3q_model;
struct sd3q_session;

// Loads the VAE when the checkpoint has one (weight ids after the MMDiT's and the text encoders').
enum sd3q_status vae_model_load(struct sd3q_model * m, int allow_extra, struct sd3q_errbuf * e);

// Frees the model's VAE.
void vae_model_free(struct sd3q_model * m);

// Writes the VAE's hyper-parameter line snprintf-style ("" without a VAE).
size_t vae_describe(const struct sd3q_model * m, char * buf, size_t size);

// Widens a backend plan for the VAE: its largest conv/Linear rows and the mid attention's tokens of one tile.
void vae_plan_backend(const struct sd3q_model * m, const struct sd3q_session_params * p, int64_t * max_k, int64_t * max_n,
                      int64_t * max_tokens);

// The VAE's planning pass (one tile of the encoder and the decoder) on the session's arena, re-initialised as a
// measuring arena when the model has a VAE: raises *bytes to its peak; allocates the host staging. Needs s->bk.
enum sd3q_status vae_plan_session(struct sd3q_session * s, size_t * bytes, struct sd3q_errbuf * e);

// Frees the session's VAE staging.
void vae_session_free(struct sd3q_session * s);

// Frees the backend's device copies of the VAE's weights (CUDA; no-op on the CPU); they are copied again before the
// next decode or encode.
void vae_release_device(struct sd3q_session * s);

#endif
