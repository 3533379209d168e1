/*
 * text.h — the text side of the model and the session: loading CLIP-L, CLIP-G, T5 and their tokenizers into the
 * model, sizing their memory in a session, and SD3's prompt encoding (public entry points in sd3q.h).
 *
 * The model/session files call the load/free/describe/plan functions below; tests use the encoders directly through
 * text_encode_clip / text_encode_t5 (token ids in, host float32 out).
 */
#ifndef SD3Q_MODEL_TEXT_H
#define SD3Q_MODEL_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "sd3q.h"

#define TEXT_CLIP_LEN 77  // CLIP tokens of the context (BOS + 75 + EOS), and diffusers' zero T5 rows without T5

struct sd3q_model;
struct sd3q_session;

// Loads the text encoders the checkpoint holds (weight ids continue after the MMDiT's) and the tokenizers: the
// diffusers tokenizer folders, or params->tokenizer_dir (see docs/TEXT.md for its two layouts). Cross-checks the
// widths against each other and against the MMDiT. Missing tokenizers are not an error here (encoding fails later
// with a hint); unreadable or inconsistent ones are.
enum sd3q_status text_load(struct sd3q_model * m, const struct sd3q_model_params * params, struct sd3q_errbuf * e);

// Frees the encoders and tokenizers of the model.
void text_free(struct sd3q_model * m);

// Writes the hyper-parameter line(s) of text component k (CLIP-L, CLIP-G or T5) snprintf-style; "" for others.
size_t text_describe(const struct sd3q_model * m, enum sd3q_component k, char * buf, size_t size);

// Widens a backend plan (largest Linear row and row count, longest attention) for the text encoders, with the T5
// sequence at most max_context − 77 tokens.
void text_plan_backend(const struct sd3q_model * m, int max_context, int64_t * max_k, int64_t * max_n, int64_t * max_tokens);

// The text encoders' planning pass on the session's arena (re-initialised as a measuring arena when any encoder is
// present): raises *bytes to their peak, and allocates the host staging buffers. Needs s->bk.
enum sd3q_status text_plan_session(struct sd3q_session * s, size_t * bytes, struct sd3q_errbuf * e);

// Frees the session's text staging buffers.
void text_session_free(struct sd3q_session * s);

// Frees the backend's device copies of the text encoders' weights (CUDA; no-op on the CPU), e.g. once the prompts
// of a run are encoded; they are copied again before the next encode.
void text_release_device(struct sd3q_session * s);

// Runs CLIP-L (which = 0) or CLIP-G (1) on 77 token ids: penult [77, W] (penultimate states), pooled
// [clip_pooled_dim], last [77, W] (final LayerNorm; may be NULL). Host buffers; errors on the session.
enum sd3q_status text_encode_clip(struct sd3q_session * s, int which, const int32_t * ids, float * penult, float * pooled,
                                  float * last);

// Runs T5 on L token ids (L ≤ the session's max_context − 77): out [L, d_model]. Host buffers.
enum sd3q_status text_encode_t5(struct sd3q_session * s, const int32_t * ids, int L, float * out);

#endif
