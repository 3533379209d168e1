/*
 * pipeline.c — text to image, as diffusers' StableDiffusion3Pipeline: encode the prompt and the negative prompt,
 * start from torch-compatible noise (or a given latent), sample with flow-matching Euler and classifier-free guidance,
 * undo the latent normalisation (z = x / scaling + shift) and decode with the VAE.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/session.h"
#include "model/text.h"
#include "model/vae-api.h"

struct sd3q_gen_params sd3q_gen_default_params(void) {
    struct sd3q_gen_params p;
    memset(&p, 0, sizeof p);
    p.negative_prompt = "";
    p.steps           = 28;
    p.t5_len          = 256;
    p.cfg             = 7.0f;
    p.shift           = 0.0f;  // the model's (sd3q_model_shift)
    return p;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Forgets the cached conditioning (the buffers stay for the next prompt).
static void gen_forget(struct sd3q_session * s) {
    free(s->gen_prompt);
    free(s->gen_negative);
    s->gen_prompt = s->gen_negative = NULL;
}

void pipeline_session_free(struct sd3q_session * s) {
    gen_forget(s);
    free(s->gen_ctx);
    free(s->gen_pooled);
    s->gen_ctx = s->gen_pooled = NULL;
    s->gen_ctx_n = 0;
}

// Fills s->gen_ctx/gen_pooled with the conditioning of (prompt, negative), encoding only when the texts differ from the
// last call's: `--count N` and repeated calls with one prompt run the text encoders once (T5-XXL: ~30 s on 2 CPU cores).
static enum sd3q_status gen_condition(struct sd3q_session * s, const char * prompt, const char * negative, int t5_len,
                                      int64_t LD, int P, int * encoded) {
    *encoded = 0;
    if (s->gen_prompt && s->gen_t5_len == t5_len && !strcmp(s->gen_prompt, prompt) &&
        (!negative || (s->gen_negative && !strcmp(s->gen_negative, negative))))
        return SD3Q_OK;
    gen_forget(s);
    if (s->gen_ctx_n != LD) {
        free(s->gen_ctx);
        free(s->gen_pooled);
        s->gen_ctx    = malloc(sizeof(float) * (size_t)(2 * LD));
        s->gen_pooled = malloc(sizeof(float) * (size_t)(2 * P));
        s->gen_ctx_n  = s->gen_ctx && s->gen_pooled ? LD : 0;
        if (!s->gen_ctx_n) return err_set(&s->err, SD3Q_ERR_OOM, "out of memory");
    }
    *encoded = 1;
    TRY(sd3q_session_encode_prompt(s, prompt, t5_len, s->gen_ctx, s->gen_pooled));
    if (negative) TRY(sd3q_session_encode_prompt(s, negative, t5_len, s->gen_ctx + LD, s->gen_pooled + P));
    // remembered only once both halves are complete
    s->gen_prompt   = strdup(prompt);
    s->gen_negative = negative ? strdup(negative) : NULL;
    s->gen_t5_len   = t5_len;
    if (!s->gen_prompt || (negative && !s->gen_negative)) {
        gen_forget(s);
        return err_set(&s->err, SD3Q_ERR_OOM, "out of memory");
    }
    return SD3Q_OK;
}

enum sd3q_status sd3q_session_generate(struct sd3q_session * s, const struct sd3q_gen_params * p, float * image, float * latents,
                                       struct sd3q_gen_timing * timing) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    if (!p || !p->prompt || !image) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_generate: prompt and image are required");
    const struct sd3q_model * m = s->model;
    struct sd3q_mmdit_info info;
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK) return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no MMDiT");
    if (!sd3q_model_has(m, SD3Q_COMP_VAE)) return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no VAE (pass --vae)");
    int side = info.sample_size > 0 ? info.sample_size * 8 : 1024;
    int W = p->width ? p->width : side, H = p->height ? p->height : side;
    if (W % 16 || H % 16 || W < 16 || H < 16)
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "width and height must be positive multiples of 16 (got %d×%d)", W, H);
    int L = sd3q_model_context_len(m, p->t5_len);
    if (L <= 0) return err_set(&s->err, SD3Q_ERR_MISSING, "the model cannot encode prompts: text encoders or tokenizers missing (see --tokenizer-dir)");
    int h = H / 8, w = W / 8, C = info.in_channels, D = sd3q_model_context_dim(m), P = sd3q_model_pooled_dim(m);
    int64_t nl = (int64_t)C * h * w;
    int use_cfg = p->cfg != 1.0f;
    // before the text encoders run: a request the session cannot hold should fail in milliseconds, not after them
    enum sd3q_status st = session_check_request(s, use_cfg ? 2 : 1, h, w, L);
    if (st != SD3Q_OK) return st;
    // working memory for one image: staged here rather than in the arena because it lives across model calls
    float * x = malloc(sizeof(float) * (size_t)nl);
    if (!x) return err_set(&s->err, SD3Q_ERR_OOM, "out of memory");
    double t0 = now();
    int encoded;
    const char * negative = use_cfg ? (p->negative_prompt ? p->negative_prompt : "") : NULL;
    if ((st = gen_condition(s, p->prompt, negative, p->t5_len, (int64_t)L * D, P, &encoded)) != SD3Q_OK) goto done;
    float * ctx = s->gen_ctx, * pooled = s->gen_pooled, * nctx = ctx + (int64_t)L * D, * npooled = pooled + P;
    if (encoded && p->release_text) {  // e.g. 9.5 GB of T5-XXL pages, before the denoising loop needs the memory
        sd3q_model_release_pages(m, SD3Q_COMP_T5);
        sd3q_model_release_pages(m, SD3Q_COMP_CLIP_G);
        sd3q_model_release_pages(m, SD3Q_COMP_CLIP_L);
    }
    if (encoded && s->p.low_memory) text_release_device(s);  // a 24 GB card holds T5-XXL or the MMDiT's working set, not both
    double t1 = now();
    if (p->init_noise) memcpy(x, p->init_noise, sizeof(float) * (size_t)nl);
    else sd3q_randn_torch(p->seed, x, nl);
    struct sd3q_cond cond = {L, ctx, pooled}, uncond = {L, nctx, npooled};
    float shift = p->shift == 0.0f ? sd3q_model_shift(m) : p->shift;
    if ((st = sd3q_session_sample(s, h, w, p->steps, shift, p->cfg, &cond, use_cfg ? &uncond : NULL, x)) != SD3Q_OK) goto done;
    if (latents) memcpy(latents, x, sizeof(float) * (size_t)nl);
    if (s->p.low_memory) session_mmdit_release(s);
    double t2 = now();
    float scale, vshift;
    sd3q_model_vae_factors(m, &scale, &vshift);
    for (int64_t k = 0; k < nl; k++) x[k] = x[k] / scale + vshift;  // model space → VAE space
    if ((st = sd3q_session_vae_decode(s, 1, h, w, x, image)) != SD3Q_OK) goto done;
    if (s->p.low_memory) {
        vae_release_device(s);
        if (s->bk->ops->release) s->bk->ops->release(s->bk, -1);  // any weight copied on first use
    }
    if (timing) timing->text = t1 - t0, timing->denoise = t2 - t1, timing->decode = now() - t2;
done:
    free(x);
    return st;
}
