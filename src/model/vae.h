/*
 * vae.h — SD3's KL autoencoder (16 latent channels): configuration, weights in either naming, and the encoder and
 * decoder forward passes for one image (../shared/research/sd3_arch_spec.md §6).
 *
 * Canonical names are the original single-file ones without `first_stage_model.` ("decoder.up.3.block.0.conv1.weight");
 * diffusers names map onto them (up_blocks.i = up.{levels−1−i}, conv_shortcut = nin_shortcut, attention
 * group_norm/to_q/to_k/to_v/to_out.0 = norm/q/k/v/proj_out, conv_norm_out = norm_out). The mid attention's three
 * 1×1 convolutions are one fused weight "…mid.attn_1.qkv.weight" [3C, C] (rows q | k | v) made of three row-range
 * views, so its product lands directly in the fused q|k|v layout the attention op reads; [C,C,1,1] and [C,C] files
 * are both accepted.
 */
#ifndef SD3Q_MODEL_VAE_H
#define SD3Q_MODEL_VAE_H

#include "backend/backend.h"
#include "core/arena.h"
#include "core/weights.h"
#include "io/checkpoint.h"
#include "model/mmdit.h"

#define VAE_MAX_LEVELS 8
#define VAE_MAX_LAYERS 8
#define VAE_EPS        1e-6f  // GroupNorm eps of the VAE (spec §11 pitfall 8)

struct vae_config {
    int   levels;               // resolution levels (len(block_out_channels)); downsampling factor 2^(levels−1)
    int   ch[VAE_MAX_LEVELS];   // block_out_channels (SD3: 128, 256, 512, 512)
    int   layers;               // layers_per_block: ResNets per encoder level (the decoder has layers + 1)
    int   z_ch;                 // latent channels (16)
    int   groups;               // GroupNorm groups (32)
    int   mid_attn;             // 1: the mid blocks have their attention
    int   has_encoder;          // the checkpoint has encoder.* weights
    int   has_decoder;          // ... decoder.* weights
    float scaling, shift;       // latent normalisation: model = (vae − shift)·scaling
    int   sample_size;          // config.json sample_size (pixels), 0 if unknown
};

struct vae_resnet {
    int       cin, cout;
    struct wt n1_w, n1_b;       // [cin]
    struct wt c1_w, c1_b;       // [cout, cin, 3, 3], [cout]
    struct wt n2_w, n2_b;       // [cout]
    struct wt c2_w, c2_b;       // [cout, cout, 3, 3], [cout]
    struct wt sk_w, sk_b;       // [cout, cin, 1, 1], [cout] (only when cin ≠ cout)
};

struct vae_attn {
    struct wt n_w, n_b;         // [C]
    struct wt qkv_w, qkv_b;     // [3C, C], [3C]
    struct wt proj_w, proj_b;   // [C, C], [C]
};

struct vae_mid {
    struct vae_resnet r1, r2;
    struct vae_attn   at;
};

struct vae_level {
    struct vae_resnet res[VAE_MAX_LAYERS + 1];
    struct wt         rs_w, rs_b;  // the level's resampling conv (encoder downsample / decoder upsample), if any
};

struct vae {
    struct vae_config cfg;
    // encoder: image [3, H, W] → moments [2·z, H/f, W/f]
    struct wt         e_in_w, e_in_b;
    struct vae_level  enc[VAE_MAX_LEVELS];  // by level i (0 = full resolution)
    struct vae_mid    e_mid;
    struct wt         e_no_w, e_no_b, e_out_w, e_out_b;
    // decoder: latent [z, h, w] → image [3, f·h, f·w]
    struct wt         d_in_w, d_in_b;
    struct vae_mid    d_mid;
    struct vae_level  dec[VAE_MAX_LEVELS];  // by original level L (levels−1 runs first, 0 is full resolution)
    struct wt         d_no_w, d_no_b, d_out_w, d_out_b;
    int64_t           n_params;
    int               n_tensors;            // canonical tensors
};

// Loads and validates the VAE of a component (config.json when present, cross-checked with shapes; else inferred).
// Weight ids are id0, id0 + 1, ... (they continue after the other components').
enum sd3q_status vae_load(const struct ckpt_component * comp, int allow_extra, int32_t id0, struct vae ** out, struct sd3q_errbuf * e);

// Frees the weights index.
void vae_free(struct vae * v);

// Calls fn for every weight.
void vae_for_each_weight(const struct vae * v, void (*fn)(void * ud, const struct wt * w), void * ud);

// The spatial factor between image and latent (8 for SD3).
static inline int vae_factor(const struct vae * v) { return 1 << (v->cfg.levels - 1); }

// Decoder for one latent [z, h, w] (an arena buffer) into img [3, f·h, f·w] (an arena buffer); scratch from `ar`,
// rewound before returning. bk == NULL with a measuring arena: the planning pass. The hook (may be NULL) sees
// "dec.conv_in", "dec.mid" and "dec.up.{L}" (after level L, incl. its upsample) as [1, C, H·W].
void vae_decode_forward(const struct vae * v, struct backend * bk, struct arena * ar, int h, int w, const void * z, void * img,
                        const struct mmdit_hook * hook);

// Encoder for one image [3, H, W] (H, W multiples of the factor) into the moments [2z, H/f, W/f] (mean | logvar,
// logvar not yet clamped). Hook names "enc.down.{i}" (after level i incl. its downsample) and "enc.mid".
void vae_encode_forward(const struct vae * v, struct backend * bk, struct arena * ar, int H, int W, const void * img, void * moments,
                        const struct mmdit_hook * hook);

#endif
