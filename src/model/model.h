/*
 * model.h — the immutable model object: the opened checkpoint and the validated weights of each component.
 */
#ifndef SD3Q_MODEL_MODEL_H
#define SD3Q_MODEL_MODEL_H

#include "io/checkpoint.h"
#include "model/mmdit.h"
#include "sd3q.h"

struct clip;
struct t5;
struct vae;
struct bpe_tokenizer;
struct unigram_tokenizer;

struct sd3q_model {
    struct ckpt                ck;
    struct mmdit *             mmdit;   // NULL when the checkpoint has no MMDiT
    // text side (src/model/clip.c, t5.c, text.c): NULL when absent
    struct clip *              clip_l;
    struct clip *              clip_g;
    struct t5 *                t5;
    struct bpe_tokenizer *     tok_l;   // CLIP-L tokenizer (pads with <|endoftext|>)
    struct bpe_tokenizer *     tok_g;   // CLIP-G tokenizer (pads with "!")
    struct unigram_tokenizer * tok_t5;
    // image side (src/model/vae.c): NULL when absent
    struct vae *               vae;
};

#endif
