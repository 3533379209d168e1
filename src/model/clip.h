/*
 * clip.h — the CLIP text transformer of SD3's two CLIP towers (CLIP-L/14 and OpenCLIP bigG/14), weights and forward
 * pass, as transformers' CLIPTextModelWithProjection computes it (../shared/research/sd3_arch_spec.md §4.1–4.2).
 *
 * What SD3 takes from it: the penultimate hidden states (output of the second-to-last layer, no final LayerNorm) for
 * the context, and the pooled vector (final LayerNorm at the end-token position), projected for CLIP-G.
 * Not here: tokenisation (tokenizer.h), the assembly of the SD3 context (text.c).
 */
#ifndef SD3Q_MODEL_CLIP_H
#define SD3Q_MODEL_CLIP_H

#include "backend/backend.h"
#include "core/arena.h"
#include "core/weights.h"
#include "io/checkpoint.h"

#define CLIP_MAX_LAYERS 128

enum clip_role {
    CLIP_ROLE_L = 0,  // CLIP-L: quick-GELU by default; pooled vector not projected (SD3 uses it raw)
    CLIP_ROLE_G = 1,  // CLIP-G: exact GELU by default; pooled vector projected with text_projection
};

struct clip_config {
    int           width;      // hidden size W
    int           layers;
    int           heads;      // W / 64 unless config.json says otherwise
    int           head_dim;
    int           mlp;        // intermediate size
    int           vocab;      // token embedding rows
    int           n_pos;      // position embedding rows (77)
    int           proj_dim;   // rows of text_projection (CLIP-G), 0 when the pooled vector is not projected
    enum act_kind act;        // ACT_QUICK_GELU (CLIP-L) or ACT_GELU_ERF (CLIP-G)
    float         ln_eps;     // 1e-5
    int32_t       eos_token_id;  // config.json eos_token_id; 2 (transformers' legacy value) means "argmax of the ids"
};

struct clip_layer {
    struct wt ln1_w, ln1_b;  // [W]
    struct wt qkv_w, qkv_b;  // [3W, W], [3W]: q_proj | k_proj | v_proj (three parts)
    struct wt out_w, out_b;  // [W, W], [W]
    struct wt ln2_w, ln2_b;  // [W]
    struct wt fc1_w, fc1_b;  // [F, W], [F]
    struct wt fc2_w, fc2_b;  // [W, F], [W]
};

struct clip {
    struct clip_config  cfg;
    enum clip_role      role;
    struct wt           tok_emb;     // [vocab, W] (gathered on the host)
    struct wt           pos_emb;     // [n_pos, W] (gathered on the host)
    struct clip_layer * layers;      // [layers]
    struct wt           fln_w, fln_b;// [W] final LayerNorm
    struct wt           proj;        // [proj_dim, W] (CLIP-G), absent for CLIP-L
    int64_t             n_params;
    int                 n_tensors;
};

// Loads and validates a CLIP tower (config.json when present, cross-checked with the shapes; else inferred: heads =
// W/64, activation from the role). Weight ids are id_base + index. Ignores position_ids, logit_scale and, for
// CLIP-L, text_projection.
enum sd3q_status clip_load(const struct ckpt_component * comp, enum clip_role role, int allow_extra, int32_t id_base,
                           struct clip ** out, struct sd3q_errbuf * e);

// Frees the weights index (the data stays in the checkpoint mapping).
void clip_free(struct clip * m);

// Calls fn for every weight the backend reads (the Linear weights, biases and norms; not the two embedding tables,
// which are gathered on the host).
void clip_for_each_weight(const struct clip * m, void (*fn)(void * ud, const struct wt * w), void * ud);

// Width of the pooled vector the forward pass writes (proj_dim when projected, else W).
int clip_pooled_dim(const struct clip * m);

// The row whose final-LN state is the pooled vector, as transformers picks it: with eos_token_id 2 (the legacy value
// SD3's configs carry, and the single-file default) the first maximum of the ids, else the first id equal to
// eos_token_id (0 when none is).
int clip_pool_index(const struct clip * m, const int32_t * ids, int L);

// Input embeddings on the host: out[t] = token_embedding[ids[t]] + position_embedding[t] for t < L ([L, W] floats).
// SD3Q_ERR_INVALID_ARG when an id is outside the vocabulary or L exceeds the position table.
enum sd3q_status clip_embed(const struct clip * m, const int32_t * ids, int L, float * out, struct sd3q_errbuf * e);

// Buffers of one forward pass (batch 1), all in the backend's activation memory.
struct clip_io {
    int    L;       // tokens
    int    eos;     // pooled row (clip_pool_index)
    void * x;       // [L, W] in: input embeddings; out: penultimate hidden states (SD3's context part)
    void * pooled;  // [clip_pooled_dim] out: final LayerNorm at row eos, projected when the tower has a projection
    void * last;    // [L, W] out, optional (NULL: skipped): final LayerNorm of the last layer (HF last_hidden_state)
};

// Runs the forward pass; scratch comes from `ar` (rewound before returning). With a measuring arena and bk == NULL,
// only takes the allocations (the planning pass).
void clip_forward(const struct clip * m, struct backend * bk, struct arena * ar, const struct clip_io * io);

#endif
