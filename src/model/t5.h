/*
 * t5.h — the T5 v1.1 encoder (SD3's T5-XXL), weights and forward pass, as transformers' T5EncoderModel computes it in
 * float32 (../shared/research/sd3_arch_spec.md §4.3, pitfalls 19–21).
 *
 * Not here: tokenisation (tokenizer.h), the SD3 context assembly (text.c), the decoder (SD3 has none).
 */
#ifndef SD3Q_MODEL_T5_H
#define SD3Q_MODEL_T5_H

#include "backend/backend.h"
#include "core/arena.h"
#include "core/weights.h"
#include "io/checkpoint.h"

#define T5_MAX_LAYERS 128

struct t5_config {
    int           d_model;      // 4096
    int           d_kv;         // 64
    int           heads;        // 64
    int           inner;        // heads · d_kv (= rows of q, k, v)
    int           d_ff;         // 10240
    int           layers;       // 24
    int           vocab;        // embedding rows (32128)
    int           num_buckets;  // 32
    int           max_distance; // 128
    float         eps;          // RMSNorm epsilon, 1e-6
    enum act_kind act;          // gate activation: gelu_new = ACT_GELU_TANH
};

struct t5_layer {
    struct wt ln0;   // [D] attention RMSNorm
    struct wt qkv;   // [3·inner, D]: q | k | v (three parts)
    struct wt o;     // [D, inner]
    struct wt ln1;   // [D] feed-forward RMSNorm
    struct wt wi;    // [2·F, D]: wi_0 | wi_1 (two parts), for the gated activation
    struct wt wo;    // [D, F]
};

struct t5 {
    struct t5_config  cfg;
    struct wt         emb;         // [vocab, D] the chosen embedding (gathered on the host)
    struct wt         emb_shared;  // shared.weight, when present
    struct wt         emb_enc;     // encoder.embed_tokens.weight, when present
    struct wt         rel_bias;    // [num_buckets, heads] block 0's table, used by every block (host)
    struct t5_layer * layers;
    struct wt         fln;         // [D] final RMSNorm
    int64_t           n_params;
    int               n_tensors;
};

// Loads and validates a T5 encoder (config.json when present, cross-checked with the shapes; else inferred).
// The embedding may be shared.weight and/or encoder.embed_tokens.weight (shared.weight is used when both exist).
// Weight ids are id_base + index.
enum sd3q_status t5_load(const struct ckpt_component * comp, int allow_extra, int32_t id_base, struct t5 ** out,
                         struct sd3q_errbuf * e);

// Frees the weights index.
void t5_free(struct t5 * m);

// Calls fn for every weight the backend reads (not the embedding and the bias table, which are used on the host).
void t5_for_each_weight(const struct t5 * m, void (*fn)(void * ud, const struct wt * w), void * ud);

// transformers' bidirectional relative-position bucket of rel = key − query, with the logarithm in float32.
int t5_bucket(int rel, int num_buckets, int max_distance);

// Input embeddings on the host: out[t] = emb[ids[t]] ([L, D] floats); an id outside the table is an error.
enum sd3q_status t5_embed(const struct t5 * m, const int32_t * ids, int L, float * out, struct sd3q_errbuf * e);

// The relative-position bias of head h for L tokens on the host: out[i·L + j] = table[bucket(j − i)][h] ([L, L]).
void t5_bias_head(const struct t5 * m, int h, int L, float * out);

// Buffers of one forward pass (batch 1), in the backend's activation memory.
struct t5_io {
    int          L;     // tokens
    void *       x;     // [L, D] in: token embeddings; clobbered (the residual stream)
    const void * bias;  // [heads, L, L] relative-position bias (t5_bias_head per head)
    void *       out;   // [L, D] out: final RMSNorm of the last block (HF last_hidden_state)
};

// Runs the forward pass; scratch from `ar` (rewound before returning). bk == NULL with a measuring arena: planning.
void t5_forward(const struct t5 * m, struct backend * bk, struct arena * ar, const struct t5_io * io);

#endif
