/*
 * session.c — the per-run object: backend, activation arena (measured by a planning pass, then allocated once),
 * host staging buffers, callbacks, last error; and the MMDiT entry points that run on it (forward, CFG sampling).
 *
 * Nothing is allocated after sd3q_session_init: every buffer the denoising loop touches was planned for the
 * session's maximum batch, latent size and context length, and a larger request is an error, not a reallocation.
 */
#include "model/session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/profile.h"
#ifdef SD3Q_HAVE_CUDA
#include "backend/cuda/cuda-backend.h"
#endif
#include "model/scheduler.h"
#include "model/text.h"
#include "model/vae-api.h"

struct sd3q_session_params sd3q_session_default_params(void) {
    struct sd3q_session_params p;
    memset(&p, 0, sizeof p);
    p.device       = SD3Q_DEVICE_AUTO;
    p.max_batch    = 2;
    p.max_latent_h = 128;
    p.max_latent_w = 128;
    p.max_context  = 333;
    return p;
}

// Tracks the largest weight dimensions, for sizing backend scratch.
struct dims {
    int64_t max_k, max_n;
};

static void track_dims(void * ud, const struct wt * w) {
    struct dims * d = ud;
    if (w->ndim < 2 || w->shape[0] == 1) return;  // vectors and the position table are never a Linear's weight
    if (w->row_elems > d->max_k) d->max_k = w->row_elems;
    if (w->shape[0] > d->max_n) d->max_n = w->shape[0];
}

// Takes the MMDiT input/output buffers from the arena (same order in planning and in use).
static void take_io(struct sd3q_session * s, struct mmdit_io * io, int B, int h, int w, int L) {
    const struct mmdit_config * c = &s->model->mmdit->cfg;
    size_t esz = s->bk->ops->act_size(s->bk);
    memset(io, 0, sizeof *io);
    io->B = B, io->h = h, io->w = w, io->L = L;
    io->x       = arena_alloc(&s->ar, esz * (size_t)B * c->in_ch * h * w);   // [B, C, h, w]
    io->context = arena_alloc(&s->ar, esz * (size_t)B * L * c->ctx_dim);     // [B, L, ctx_dim]
    io->pooled  = arena_alloc(&s->ar, esz * (size_t)B * c->pooled_dim);      // [B, pooled_dim]
    io->tfreq   = arena_alloc(&s->ar, esz * (size_t)B * MMDIT_FREQ_DIM);     // [B, 256]
    io->out     = arena_alloc(&s->ar, esz * (size_t)B * c->out_ch * h * w);  // [B, C, h, w]
    SD3Q_ASSERT(io->x && io->context && io->pooled && io->tfreq && io->out);
}

struct wlist {
    const struct wt ** w;
    int64_t            n, cap;
};

// Appends a weight to a growable list (cap −1 marks an allocation failure).
static void wlist_add(void * ud, const struct wt * w) {
    struct wlist * l = ud;
    if (l->n == l->cap) {
        int64_t cap = l->cap ? 2 * l->cap : 256;
        const struct wt ** p = realloc(l->w, sizeof(*p) * (size_t)cap);
        if (!p) {
            l->cap = -1;  // out of memory: reported by the caller
            return;
        }
        l->w = p, l->cap = cap;
    }
    if (l->cap > 0) l->w[l->n++] = w;
}

// See session.h.
enum sd3q_status session_prepare_weights(struct sd3q_session * s, int group,
                                         void (*for_each)(const void * obj, void (*fn)(void * ud, const struct wt * w), void * ud),
                                         const void * obj, struct sd3q_errbuf * e) {
    if (!s->bk->ops->prepare) return SD3Q_OK;  // backends that read the mapped weights in place
    struct wlist l = {0};
    for_each(obj, wlist_add, &l);
    enum sd3q_status st = l.cap < 0 ? err_set(e, SD3Q_ERR_OOM, "out of memory") : s->bk->ops->prepare(s->bk, group, l.w, l.n);
    if (st != SD3Q_OK && l.cap >= 0) err_set(e, st, "%s", s->err.msg);
    free(l.w);
    return st;
}

// mmdit_for_each_weight with the signature session_prepare_weights takes.
static void mmdit_weights(const void * m, void (*fn)(void * ud, const struct wt * w), void * ud) { mmdit_for_each_weight(m, fn, ud); }

enum sd3q_status sd3q_session_init(const struct sd3q_model * model, const struct sd3q_session_params * params,
                                   struct sd3q_session ** out, char * err, size_t err_size) {
    return session_create(model, params, 0, out, err, err_size);
}

enum sd3q_status session_create(const struct sd3q_model * model, const struct sd3q_session_params * params, int ref,
                                struct sd3q_session ** out, char * err, size_t err_size) {
    struct sd3q_errbuf e = {{0}};
    enum sd3q_status st = SD3Q_OK;
    struct sd3q_session * s = NULL;
    if (out) *out = NULL;
    if (!model || !params || !out) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "sd3q_session_init: model, params and out must not be NULL");
        goto done;
    }
    if (params->max_batch < 1 || params->max_batch > 64 || params->max_latent_h < 1 || params->max_latent_w < 1 ||
        params->max_latent_h > 4096 || params->max_latent_w > 4096 || params->max_context < 1 || params->max_context > 65536 ||
        params->n_threads < 0 || params->n_threads > 1024) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "session limits out of range (batch %d, latent %d×%d, context %d, threads %d)",
                     params->max_batch, params->max_latent_h, params->max_latent_w, params->max_context, params->n_threads);
        goto done;
    }
    if (params->vae_tile < 0 || params->vae_tile > 4096) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "VAE tile %d out of range [0 (default), 4096]", params->vae_tile);
        goto done;
    }
    // device: CUDA when asked for (an error without one), or for AUTO when built with it and a GPU is present
    int use_cuda = 0;
#ifdef SD3Q_HAVE_CUDA
    use_cuda = !ref && (params->device == SD3Q_DEVICE_CUDA || (params->device == SD3Q_DEVICE_AUTO && backend_cuda_available()));
#endif
    if (params->device == SD3Q_DEVICE_CUDA && !use_cuda) {
        st = err_set(&e, SD3Q_ERR_UNSUPPORTED, "--device cuda: %s", ref ? "the scalar reference runs on the CPU only"
                                                                          : "this build has no CUDA backend");
        goto done;
    }
    s = calloc(1, sizeof(*s));
    if (!s) {
        st = err_set(&e, SD3Q_ERR_OOM, "out of memory");
        goto done;
    }
    s->model     = model;
    s->p         = *params;
    s->force_ref = ref;
    const struct mmdit * m = model->mmdit;
    struct dims d = {MMDIT_FREQ_DIM, 1};
    int64_t max_tokens = params->max_context;
    if (m) {
        mmdit_for_each_weight(m, track_dims, &d);
        max_tokens += (int64_t)(params->max_latent_h / m->cfg.patch) * (params->max_latent_w / m->cfg.patch);
    }
    text_plan_backend(model, params->max_context, &d.max_k, &d.max_n, &max_tokens);
    vae_plan_backend(model, params, &d.max_k, &d.max_n, &max_tokens);
    struct backend_plan plan = {params->n_threads, d.max_k, d.max_n, max_tokens, s->force_ref};
#ifdef SD3Q_HAVE_CUDA
    if (use_cuda && (st = backend_cuda_create(&plan, &s->bk, &e)) != SD3Q_OK) goto done;
#endif
    if (!use_cuda && (st = backend_cpu_create(&plan, &s->bk, &e)) != SD3Q_OK) goto done;
    if (params->profile) {
        struct backend * w = backend_profile_wrap(s->bk);
        if (!w) {
            st = err_set(&e, SD3Q_ERR_OOM, "out of memory");
            goto done;
        }
        s->bk = w;
    }
    s->bk->err = &s->err;
    // the MMDiT's weights are copied now, so that no step uploads or allocates; with low_memory at first use instead
    if (m && !params->low_memory) {
        if ((st = session_prepare_weights(s, SD3Q_COMP_MMDIT, mmdit_weights, m, &e)) != SD3Q_OK) goto done;
        s->mmdit_prepared = 1;
    }

    // planning pass: the same allocations as a real call, on a measuring arena
    size_t bytes = 0;
    if (m) {
        int B = params->max_batch, h = params->max_latent_h - params->max_latent_h % m->cfg.patch;
        int w = params->max_latent_w - params->max_latent_w % m->cfg.patch;
        arena_init_measure(&s->ar, 64);
        struct mmdit_io io;
        take_io(s, &io, B, h, w, params->max_context);
        mmdit_forward(m, NULL, &s->ar, &io, NULL);
        bytes = s->ar.peak;
        s->host_v = malloc(sizeof(float) * (size_t)B * m->cfg.out_ch * h * w);
        s->host_t = malloc(sizeof(float) * (size_t)B * MMDIT_FREQ_DIM);
        if (!s->host_v || !s->host_t) {
            st = err_set(&e, SD3Q_ERR_OOM, "out of memory for staging buffers");
            goto done;
        }
    }
    if ((st = text_plan_session(s, &bytes, &e)) != SD3Q_OK) goto done;
    if ((st = vae_plan_session(s, &bytes, &e)) != SD3Q_OK) goto done;
    void * base = s->bk->ops->arena_alloc(s->bk, bytes ? bytes : 64);
    if (!base) {
        st = err_set(&e, SD3Q_ERR_OOM, "cannot allocate the %.1f MiB activation arena", (double)bytes / (1 << 20));
        goto done;
    }
    memset(&s->ar, 0, sizeof s->ar);
    s->ar.base  = base;
    s->ar.size  = bytes ? bytes : 64;
    s->ar.align = 64;
    *out = s;
    s = NULL;
done:
    sd3q_session_free(s);
    if (err && err_size) snprintf(err, err_size, "%s", st == SD3Q_OK ? "" : e.msg);
    return st;
}

void sd3q_session_free(struct sd3q_session * s) {
    if (!s) return;
    if (s->bk) {
        if (s->ar.base) s->bk->ops->arena_free(s->bk, s->ar.base);
        s->bk->ops->free(s->bk);
    }
    free(s->host_v);
    free(s->host_t);
    text_session_free(s);
    vae_session_free(s);
    pipeline_session_free(s);
    free(s);
}

const char * sd3q_session_last_error(const struct sd3q_session * s) { return s ? s->err.msg : ""; }

size_t sd3q_session_arena_bytes(const struct sd3q_session * s) { return s ? s->ar.size : 0; }

size_t sd3q_session_profile(struct sd3q_session * s, int reset, char * buf, size_t size) {
    if (buf && size) buf[0] = '\0';
    if (!s) return 0;
    char * text = NULL;
    size_t len = 0;
    FILE * f = open_memstream(&text, &len);
    if (!f) return 0;
    backend_profile_report(s->bk, f);
    fclose(f);
    if (buf && size) snprintf(buf, size, "%s", text ? text : "");
    free(text);
    if (reset) backend_profile_reset(s->bk);
    return len;
}

void sd3q_session_set_progress(struct sd3q_session * s, sd3q_progress_fn fn, void * user_data) {
    if (!s) return;
    s->progress    = fn;
    s->progress_ud = user_data;
}

// Checks a forward request against the model and the session's planned maxima.
enum sd3q_status session_check_request(struct sd3q_session * s, int n, int h, int w, int n_ctx) {
    if (!s->model->mmdit) return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no MMDiT");
    TRY(mmdit_check_sizes(s->model->mmdit, n, h, w, n_ctx, &s->err));
    if (n > s->p.max_batch || h > s->p.max_latent_h || w > s->p.max_latent_w || n_ctx > s->p.max_context)
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG,
                       "request (batch %d, latent %d×%d, context %d) exceeds the session's planned maxima (batch %d, latent %d×%d, context %d)",
                       n, h, w, n_ctx, s->p.max_batch, s->p.max_latent_h, s->p.max_latent_w, s->p.max_context);
    return SD3Q_OK;
}

// Gives a backend that keeps its own weight copies the MMDiT's, if they are not there (low_memory sessions).
static enum sd3q_status mmdit_ready(struct sd3q_session * s) {
    if (s->mmdit_prepared || !s->bk->ops->prepare) return SD3Q_OK;
    struct sd3q_errbuf e = {{0}};  // (session_prepare_weights reads s->err while writing e)
    enum sd3q_status st = session_prepare_weights(s, SD3Q_COMP_MMDIT, mmdit_weights, s->model->mmdit, &e);
    if (st != SD3Q_OK) return err_set(&s->err, st, "%s", e.msg);
    s->mmdit_prepared = 1;
    return SD3Q_OK;
}

// See session.h.
void session_mmdit_release(struct sd3q_session * s) {
    if (!s || !s->bk || !s->bk->ops->release || !s->mmdit_prepared) return;
    s->bk->ops->release(s->bk, SD3Q_COMP_MMDIT);
    s->mmdit_prepared = 0;
}

// Uploads n timesteps as their frequency embeddings.
static enum sd3q_status upload_tfreq(struct sd3q_session * s, void * dst, const float * timestep, int n) {
    for (int b = 0; b < n; b++) mmdit_timestep_embedding(timestep[b], s->host_t + (size_t)b * MMDIT_FREQ_DIM);
    return s->bk->ops->upload(s->bk, dst, s->host_t, (int64_t)n * MMDIT_FREQ_DIM);
}

enum sd3q_status sd3q_session_mmdit(struct sd3q_session * s, int n, int h, int w, const float * x, int n_ctx, const float * context,
                                    const float * pooled, const float * timestep, float * out) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    if (!x || !context || !pooled || !timestep || !out) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_mmdit: NULL buffer");
    TRY(session_check_request(s, n, h, w, n_ctx));
    TRY(mmdit_ready(s));
    const struct mmdit_config * c = &s->model->mmdit->cfg;
    const struct backend_ops * o = s->bk->ops;
    size_t mark = arena_mark(&s->ar);
    struct mmdit_io io;
    take_io(s, &io, n, h, w, n_ctx);
    enum sd3q_status st;
    if ((st = o->upload(s->bk, (void *)io.x, x, (int64_t)n * c->in_ch * h * w)) != SD3Q_OK ||
        (st = o->upload(s->bk, (void *)io.context, context, (int64_t)n * n_ctx * c->ctx_dim)) != SD3Q_OK ||
        (st = o->upload(s->bk, (void *)io.pooled, pooled, (int64_t)n * c->pooled_dim)) != SD3Q_OK ||
        (st = upload_tfreq(s, (void *)io.tfreq, timestep, n)) != SD3Q_OK)
        goto done;
    mmdit_forward(s->model->mmdit, s->bk, &s->ar, &io, (s->hook.fn || s->hook.modify) ? &s->hook : NULL);
    st = o->download(s->bk, out, io.out, (int64_t)n * c->out_ch * h * w);
done:
    arena_rewind(&s->ar, mark);
    return st;
}

enum sd3q_status sd3q_session_sample(struct sd3q_session * s, int h, int w, int steps, float shift, float cfg,
                                     const struct sd3q_cond * cond, const struct sd3q_cond * uncond, float * latents) {
    return session_sample(s, h, w, steps, shift, cfg, cond, uncond, latents, NULL, NULL);
}

enum sd3q_status session_sample(struct sd3q_session * s, int h, int w, int steps, float shift, float cfg, const struct sd3q_cond * cond,
                                const struct sd3q_cond * uncond, float * latents, sample_step_fn on_step, void * ud) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    if (!cond || !latents || !cond->context || !cond->pooled ||
        (cfg != 1.0f && (!uncond || !uncond->context || !uncond->pooled)))
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_sample: missing conditioning or latents");
    if (!(cfg >= 0.0f) || cfg > 1000.0f) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "guidance scale %g out of range [0, 1000]", cfg);
    if (steps < 1 || steps > SCHED_MAX_STEPS) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "steps %d out of range [1, %d]", steps, SCHED_MAX_STEPS);
    int use_cfg = cfg != 1.0f;
    int B = use_cfg ? 2 : 1;
    if (use_cfg && uncond->n_ctx != cond->n_ctx)
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "conditional and unconditional contexts differ in length (%d vs %d)", cond->n_ctx,
                       uncond->n_ctx);
    TRY(session_check_request(s, B, h, w, cond->n_ctx));
    TRY(mmdit_ready(s));
    const struct mmdit_config * c = &s->model->mmdit->cfg;
    const struct backend_ops * o = s->bk->ops;
    float * sigmas = malloc(sizeof(float) * (size_t)(steps + 1));
    if (!sigmas) return err_set(&s->err, SD3Q_ERR_OOM, "out of memory");
    if (sd3q_schedule(steps, shift, sigmas) != SD3Q_OK) {
        free(sigmas);
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "invalid schedule (steps %d, shift %g)", steps, shift);
    }
    size_t mark = arena_mark(&s->ar);
    struct mmdit_io io;
    take_io(s, &io, B, h, w, cond->n_ctx);
    const int64_t nl = (int64_t)c->in_ch * h * w, nc = (int64_t)cond->n_ctx * c->ctx_dim;
    // batch order as diffusers: [uncond, cond]
    const struct sd3q_cond * order[2] = {use_cfg ? uncond : cond, cond};
    enum sd3q_status st = SD3Q_OK;
    for (int b = 0; b < B && st == SD3Q_OK; b++) {
        const struct sd3q_cond * cd = order[b];
        st = o->upload(s->bk, (uint8_t *)io.context + (size_t)b * nc * o->act_size(s->bk), cd->context, nc);
        if (st == SD3Q_OK)
            st = o->upload(s->bk, (uint8_t *)io.pooled + (size_t)b * c->pooled_dim * o->act_size(s->bk), cd->pooled, c->pooled_dim);
    }
    for (int i = 0; i < steps && st == SD3Q_OK; i++) {
        float sigma = sigmas[i], t[2];
        if (on_step) on_step(ud, i, sigma, sched_timestep(sigma), latents);
        t[0] = t[1] = sched_timestep(sigma);
        for (int b = 0; b < B && st == SD3Q_OK; b++)
            st = o->upload(s->bk, (uint8_t *)io.x + (size_t)b * nl * o->act_size(s->bk), latents, nl);
        if (st == SD3Q_OK) st = upload_tfreq(s, (void *)io.tfreq, t, B);
        if (st != SD3Q_OK) break;
        mmdit_forward(s->model->mmdit, s->bk, &s->ar, &io, (s->hook.fn || s->hook.modify) ? &s->hook : NULL);
        if ((st = o->download(s->bk, s->host_v, io.out, B * nl)) != SD3Q_OK) break;
        // CFG v = v_u + w·(v_c − v_u), then Euler x ← x + (σ' − σ)·v, in float32 as the scheduler does
        float dt = sigmas[i + 1] - sigma;
        const float * vu = s->host_v, * vc = s->host_v + (use_cfg ? nl : 0);
        for (int64_t k = 0; k < nl; k++) {
            float v = use_cfg ? vu[k] + cfg * (vc[k] - vu[k]) : vc[k];
            latents[k] = latents[k] + dt * v;
        }
        if (s->progress && s->progress(s->progress_ud, i + 1, steps)) {
            st = err_set(&s->err, SD3Q_ERR_ABORTED, "aborted at step %d of %d", i + 1, steps);
            break;
        }
    }
    if (st == SD3Q_OK && on_step) on_step(ud, steps, 0.0f, 0.0f, latents);
    arena_rewind(&s->ar, mark);
    free(sigmas);
    return st;
}
