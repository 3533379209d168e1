/*
 * mmdit.h — SD3's multimodal diffusion transformer (MMDiT, and SD3.5's MMDiT-X), weights and forward pass.
 */
#ifndef SD3Q_MODEL_MMDIT_H
#define SD3Q_MODEL_MMDIT_H

#include "backend/backend.h"
#include "core/arena.h"
#include "core/weights.h"
#include "io/checkpoint.h"

#define MMDIT_MAX_DEPTH 64
#define MMDIT_FREQ_DIM  256  // sinusoidal timestep embedding width

struct mmdit_config {
    int     depth;        // joint blocks
    int     D;            // hidden width
    int     heads;        // D / head_dim
    int     head_dim;     // 64
    int     patch;        // 2
    int     in_ch;        // 16
    int     out_ch;       // 16
    int     pos_grid;     // the stored position table is pos_grid × pos_grid
    int     ctx_dim;      // context (text token) width entering context_embedder
    int     pooled_dim;   // pooled text vector width entering y_embedder
    int     mlp_hidden;   // fc1 outputs
    int     qk_norm;      // RMSNorm on q and k
    int     n_dual;       // blocks with MMDiT-X attn2
    uint8_t dual[MMDIT_MAX_DEPTH];
    int     sample_size;  // default latent side from config.json (0 if unknown)
};

// One stream (x_block = image, context_block = text) of a joint block.
struct mmdit_stream {
    int       nmod;        // modulation chunks: 6, 9 (dual attention) or 2 (pre-only text stream of the last block)
    int       pre_only;    // last block's text stream: no proj, no MLP
    struct wt mod_w;       // [nmod·D, D]
    struct wt mod_b;       // [nmod·D]
    struct wt qkv_w;       // [3·D, D]
    struct wt qkv_b;       // [3·D]
    struct wt ln_q, ln_k;  // [head_dim] (qk_norm)
    struct wt proj_w;      // [D, D]
    struct wt proj_b;      // [D]
    struct wt fc1_w;       // [mlp_hidden, D]
    struct wt fc1_b;       // [mlp_hidden]
    struct wt fc2_w;       // [D, mlp_hidden]
    struct wt fc2_b;       // [D]
    struct wt qkv2_w;      // [3·D, D]   (dual attention, image stream only)
    struct wt qkv2_b;      // [3·D]
    struct wt ln_q2, ln_k2;// [head_dim]
    struct wt proj2_w;     // [D, D]
    struct wt proj2_b;     // [D]
};

struct mmdit_block {
    struct mmdit_stream img;  // x_block
    struct mmdit_stream txt;  // context_block
};

struct mmdit {
    struct mmdit_config  cfg;
    struct wt            pos_embed;        // [1, grid², D]
    struct wt            xproj_w, xproj_b; // [D, in_ch, p, p], [D]
    struct wt            t1_w, t1_b;       // [D, 256], [D]
    struct wt            t2_w, t2_b;       // [D, D], [D]
    struct wt            y1_w, y1_b;       // [D, pooled_dim], [D]
    struct wt            y2_w, y2_b;       // [D, D], [D]
    struct wt            ctx_w, ctx_b;     // [D, ctx_dim], [D]
    struct wt            fmod_w, fmod_b;   // [2·D, D], [2·D] (shift, scale)
    struct wt            fin_w, fin_b;     // [p·p·out_ch, D], [p·p·out_ch]
    struct mmdit_block * blocks;           // [depth]
    int64_t              n_params;
    int                  n_tensors;        // canonical tensors
};

// Observes named activations during a forward pass (device pointers, `rows` × `cols`); NULL fn disables it.
// Names: "c", "x_tokens", "ctx_tokens", "block{i}.img", "block{i}.txt", "final_tokens", and the inputs of every
// quantizable Linear: "mm{i}.{img,txt}.attn.qkv", "mm{i}.{img,txt}.attn.proj", "mm{i}.{img,txt}.mlp.fc1",
// "mm{i}.{img,txt}.mlp.fc2", "mm{i}.img.attn2.qkv", "mm{i}.img.attn2.proj" (see docs/FORMATS.md).
// `modify`, when set, is called after `fn` for the Linear inputs only and may change them in place (fake quantization
// for evaluating an activation-quantization config; host memory, so CPU backend only).
struct mmdit_hook {
    void * ud;
    void (*fn)(void * ud, const char * name, const void * data, int64_t batch, int64_t rows_per_batch, int64_t cols);
    void (*modify)(void * ud, const char * name, void * data, int64_t batch, int64_t rows_per_batch, int64_t cols);
};

// Loads and validates the MMDiT of a component (config from config.json when present, cross-checked with shapes).
enum sd3q_status mmdit_load(const struct ckpt_component * comp, int allow_extra, struct mmdit ** out, struct sd3q_errbuf * e);

// Frees the weights index (the data stays in the checkpoint mapping).
void mmdit_free(struct mmdit * m);

// Calls fn for every weight (for backends that upload, and for describe/inspect).
void mmdit_for_each_weight(const struct mmdit * m, void (*fn)(void * ud, const struct wt * w), void * ud);

// The sinusoidal timestep embedding [256] of t (cosines first, exponent i/128), in float32 as diffusers computes it.
void mmdit_timestep_embedding(float t, float * out);

// Buffers a forward pass takes from the arena, in order (a measuring arena gives the size).
struct mmdit_io {
    int          B, h, w, L;    // batch, latent rows/cols, context tokens
    const void * x;             // [B, in_ch, h, w]
    const void * context;       // [B, L, ctx_dim]
    const void * pooled;        // [B, pooled_dim]
    const void * tfreq;         // [B, 256]
    void *       out;           // [B, out_ch, h, w]
};

// Checks the sizes of a forward pass against the configuration (h, w multiples of the patch, within the grid, ...).
enum sd3q_status mmdit_check_sizes(const struct mmdit * m, int B, int h, int w, int L, struct sd3q_errbuf * e);

// Runs the forward pass on a backend; scratch comes from `ar` (rewound before returning). With a measuring arena
// and bk == NULL, only takes the allocations (the planning pass).
void mmdit_forward(const struct mmdit * m, struct backend * bk, struct arena * ar, const struct mmdit_io * io,
                   const struct mmdit_hook * hook);

#endif
