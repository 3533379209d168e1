/*
 * text.c — SD3's text side: the three encoders and their tokenizers in the model, their memory in the session, and
 * the prompt encoding of diffusers' StableDiffusion3Pipeline.encode_prompt (../shared/research/sd3_arch_spec.md §4.4):
 *
 *   context = [ CLIP-L penultimate (77 × W_l) | CLIP-G penultimate (77 × W_g) | zeros ] per CLIP token (77 rows),
 *             then the T5 output (t5_len rows; without T5 in the model: 77 zero rows, as diffusers does)
 *   pooled  = CLIP-L pooled (unprojected) | CLIP-G pooled, projected
 *
 * Each encoder runs at batch 1 on the session's arena (planned at init for 77 CLIP tokens and max_context − 77 T5
 * tokens) and its output is assembled on the host into the caller's buffers; the host staging buffers were allocated
 * at init too. Not here: the tokenizers themselves (tokenizer-*.c), prompt weighting, long-prompt chunking.
 */
#include "model/text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "model/clip.h"
#include "model/session.h"
#include "model/t5.h"
#include "model/tokenizer.h"

#define TEXT_MAX_T5 (65536 - TEXT_CLIP_LEN)  // the session's max_context limit minus the CLIP rows

// ---- loading --------------------------------------------------------------------------------------------------------

// Loads the three encoders the checkpoint holds; weight ids continue after `id`.
static enum sd3q_status load_encoders(struct sd3q_model * m, int allow_extra, int32_t id, struct sd3q_errbuf * e) {
    const struct ckpt_component * c = m->ck.comp;
    if (c[SD3Q_COMP_CLIP_L].present) {
        TRY(clip_load(&c[SD3Q_COMP_CLIP_L], CLIP_ROLE_L, allow_extra, id, &m->clip_l, e));
        id += m->clip_l->n_tensors;
    }
    if (c[SD3Q_COMP_CLIP_G].present) {
        TRY(clip_load(&c[SD3Q_COMP_CLIP_G], CLIP_ROLE_G, allow_extra, id, &m->clip_g, e));
        id += m->clip_g->n_tensors;
    }
    if (c[SD3Q_COMP_T5].present) TRY(t5_load(&c[SD3Q_COMP_T5], allow_extra, id, &m->t5, e));
    return SD3Q_OK;
}

// Checks that the encoders fit each other and the MMDiT: 77 CLIP positions, CLIP widths within the context width,
// T5 width = the MMDiT's context width, pooled width = the MMDiT's pooled width.
static enum sd3q_status check_widths(const struct sd3q_model * m, struct sd3q_errbuf * e) {
    const struct clip * cl[2] = {m->clip_l, m->clip_g};
    for (int k = 0; k < 2; k++)
        if (cl[k] && cl[k]->cfg.n_pos < TEXT_CLIP_LEN)
            return err_set(e, SD3Q_ERR_SHAPE, "%s: the CLIP position table has %d rows; SD3 encodes %d tokens",
                           m->ck.comp[SD3Q_COMP_CLIP_L + k].origin, cl[k]->cfg.n_pos, TEXT_CLIP_LEN);
    const struct mmdit_config * mc = m->mmdit ? &m->mmdit->cfg : NULL;
    if (m->t5 && mc && m->t5->cfg.d_model != mc->ctx_dim)
        return err_set(e, SD3Q_ERR_SHAPE, "%s: T5 width %d does not match the MMDiT's context width %d (joint_attention_dim)",
                       m->ck.comp[SD3Q_COMP_T5].origin, m->t5->cfg.d_model, mc->ctx_dim);
    if (m->clip_l && m->clip_g) {
        int wl = m->clip_l->cfg.width, wg = m->clip_g->cfg.width, pooled = wl + clip_pooled_dim(m->clip_g);
        int ctx = m->t5 ? m->t5->cfg.d_model : mc ? mc->ctx_dim : wl + wg;
        if (wl + wg > ctx)
            return err_set(e, SD3Q_ERR_SHAPE, "CLIP-L width %d + CLIP-G width %d exceed the context width %d they are zero-padded to",
                           wl, wg, ctx);
        if (mc && pooled != mc->pooled_dim)
            return err_set(e, SD3Q_ERR_SHAPE, "CLIP-L width %d + CLIP-G projection %d = %d, but the MMDiT's pooled width is %d", wl,
                           clip_pooled_dim(m->clip_g), pooled, mc->pooled_dim);
    }
    return SD3Q_OK;
}

// Where each tokenizer comes from: a diffusers tokenizer folder (its configs apply), or a flat --tokenizer-dir
// (SD3's pads are set: CLIP-L pads with its EOS, CLIP-G with "!").
struct tok_src {
    char * dir[3];
    int    flat[3];
};

// Resolves the tokenizer folders: --tokenizer-dir (subfolders tokenizer/, tokenizer_2/, tokenizer_3/ when present,
// else the folder itself) over the diffusers layout's folders.
static enum sd3q_status tok_sources(const struct sd3q_model * m, const char * tdir, struct tok_src * s, struct sd3q_errbuf * e) {
    static const char * const sub[3] = {"tokenizer", "tokenizer_2", "tokenizer_3"};
    memset(s, 0, sizeof *s);
    if (tdir && !path_is_dir(tdir))
        return err_set(e, SD3Q_ERR_MISSING, "--tokenizer-dir %s: no such folder", tdir);
    for (int k = 0; k < 3; k++) {
        if (!tdir) {
            s->dir[k] = m->ck.tokenizer[k] ? strdup(m->ck.tokenizer[k]) : NULL;
            if (m->ck.tokenizer[k] && !s->dir[k]) return err_set(e, SD3Q_ERR_OOM, "out of memory");
            continue;
        }
        char * d = path_join(tdir, sub[k]);
        if (!d) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        if (!path_is_dir(d)) {
            free(d);
            d = strdup(tdir);
            s->flat[k] = 1;
            if (!d) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        }
        s->dir[k] = d;
    }
    return SD3Q_OK;
}

// Loads the tokenizers. A flat folder may lack a vocabulary (that tokenizer stays absent); a subfolder must be valid.
static enum sd3q_status load_tokenizers(struct sd3q_model * m, const char * tdir, struct sd3q_errbuf * e) {
    static const char * const title[3] = {"CLIP-L", "CLIP-G", "T5"};
    struct tok_src s;
    enum sd3q_status st = tok_sources(m, tdir, &s, e);
    for (int k = 0; k < 3 && st == SD3Q_OK; k++) {
        if (!s.dir[k]) continue;
        struct bpe_tokenizer ** bt = k == 0 ? &m->tok_l : &m->tok_g;
        st = k < 2 ? bpe_tokenizer_load(s.dir[k], bt, e) : unigram_tokenizer_load(s.dir[k], &m->tok_t5, e);
        if (st == SD3Q_ERR_MISSING && s.flat[k]) {  // not every flat folder holds all three vocabularies
            err_clear(e);
            st = SD3Q_OK;
            continue;
        }
        if (st == SD3Q_OK && k < 2 && s.flat[k]) {
            if (k == 0) bpe_tokenizer_set_pad_id(*bt, bpe_tokenizer_eos_id(*bt));
            else st = bpe_tokenizer_set_pad_token(*bt, "!", e);
        }
        if (st != SD3Q_OK) err_prefix(e, "%s tokenizer (%s)", title[k], s.dir[k]);
    }
    for (int k = 0; k < 3; k++) free(s.dir[k]);
    if (st != SD3Q_OK) return st;
    // a tokenizer whose ids exceed the embedding table belongs to another model
    const struct { const char * name; int32_t ids; int rows; } chk[3] = {
        {"CLIP-L", m->tok_l ? bpe_tokenizer_vocab_size(m->tok_l) : 0, m->clip_l ? m->clip_l->cfg.vocab : 0},
        {"CLIP-G", m->tok_g ? bpe_tokenizer_vocab_size(m->tok_g) : 0, m->clip_g ? m->clip_g->cfg.vocab : 0},
        {"T5", m->tok_t5 ? unigram_tokenizer_vocab_size(m->tok_t5) : 0, m->t5 ? m->t5->cfg.vocab : 0},
    };
    for (int k = 0; k < 3; k++)
        if (chk[k].rows && chk[k].ids > chk[k].rows)
            return err_set(e, SD3Q_ERR_SHAPE, "the %s tokenizer has %d ids but the %s embedding has %d rows (a tokenizer of another model?)",
                           chk[k].name, (int)chk[k].ids, chk[k].name, chk[k].rows);
    return SD3Q_OK;
}

enum sd3q_status text_load(struct sd3q_model * m, const struct sd3q_model_params * params, struct sd3q_errbuf * e) {
    TRY(load_encoders(m, params->allow_extra, m->mmdit ? m->mmdit->n_tensors : 0, e));
    TRY(check_widths(m, e));
    return load_tokenizers(m, params->tokenizer_dir, e);
}

void text_free(struct sd3q_model * m) {
    clip_free(m->clip_l);
    clip_free(m->clip_g);
    t5_free(m->t5);
    bpe_tokenizer_free(m->tok_l);
    bpe_tokenizer_free(m->tok_g);
    unigram_tokenizer_free(m->tok_t5);
    m->clip_l = m->clip_g = NULL;
    m->t5     = NULL;
    m->tok_l = m->tok_g = NULL;
    m->tok_t5 = NULL;
}

size_t text_describe(const struct sd3q_model * m, enum sd3q_component k, char * buf, size_t size) {
    static const char * const act[ACT_COUNT] = {"gelu_tanh", "gelu_erf", "quick_gelu", "silu"};
    if (buf && size) buf[0] = '\0';
    int n = 0;
    const struct clip * c = k == SD3Q_COMP_CLIP_L ? m->clip_l : k == SD3Q_COMP_CLIP_G ? m->clip_g : NULL;
    if (c) {
        const struct clip_config * f = &c->cfg;
        const struct bpe_tokenizer * t = k == SD3Q_COMP_CLIP_L ? m->tok_l : m->tok_g;
        n = snprintf(buf, size, "        width %d, layers %d, heads %d×%d, mlp %d (%s), positions %d, vocab %d, pooled %d%s\n"
                                "        tokenizer: ",
                     f->width, f->layers, f->heads, f->head_dim, f->mlp, act[f->act], f->n_pos, f->vocab, clip_pooled_dim(c),
                     f->proj_dim ? " (projected)" : " (not projected)");
        size_t used = n > 0 && (size_t)n < size ? (size_t)n : size;
        n += t ? snprintf(buf ? buf + used : NULL, size - used, "%d ids, bos %d, eos %d, pad %d\n", (int)bpe_tokenizer_vocab_size(t),
                          (int)bpe_tokenizer_bos_id(t), (int)bpe_tokenizer_eos_id(t), (int)bpe_tokenizer_pad_id(t))
               : snprintf(buf ? buf + used : NULL, size - used, "none (pass --tokenizer-dir)\n");
    } else if (k == SD3Q_COMP_T5 && m->t5) {
        const struct t5_config * f = &m->t5->cfg;
        const struct unigram_tokenizer * t = m->tok_t5;
        n = snprintf(buf, size, "        d_model %d, blocks %d, heads %d×%d, d_ff %d (gated %s), buckets %d / distance %d, vocab %d, "
                                "embedding %s, %.2f M distinct parameters\n        tokenizer: ",
                     f->d_model, f->layers, f->heads, f->d_kv, f->d_ff, act[f->act], f->num_buckets, f->max_distance, f->vocab,
                     m->t5->emb.name, (double)m->t5->n_params / 1e6);
        size_t used = n > 0 && (size_t)n < size ? (size_t)n : size;
        n += t ? snprintf(buf ? buf + used : NULL, size - used, "%d ids, eos %d, pad %d\n", (int)unigram_tokenizer_vocab_size(t),
                          (int)unigram_tokenizer_eos_id(t), (int)unigram_tokenizer_pad_id(t))
               : snprintf(buf ? buf + used : NULL, size - used, "none (pass --tokenizer-dir)\n");
    }
    return n > 0 ? (size_t)n : 0;
}

// ---- model-level public API -----------------------------------------------------------------------------------------

enum sd3q_status sd3q_model_tokenize(const struct sd3q_model * m, enum sd3q_component enc, const char * text, int max_len, int pad,
                                     int32_t * ids, int * n_out, char * err, size_t err_size) {
    struct sd3q_errbuf e = {{0}};
    enum sd3q_status st = SD3Q_OK;
    static const char * const title[3] = {"CLIP-L", "CLIP-G", "T5"};
    if (n_out) *n_out = 0;
    if (!m || !text || !ids || !n_out) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "sd3q_model_tokenize: model, text, ids and n_out must not be NULL");
    } else if (enc != SD3Q_COMP_CLIP_L && enc != SD3Q_COMP_CLIP_G && enc != SD3Q_COMP_T5) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "sd3q_model_tokenize: encoder must be CLIP-L, CLIP-G or T5 (got %d)", (int)enc);
    } else if (max_len < (enc == SD3Q_COMP_T5 ? 1 : 2) || max_len > (1 << 20)) {
        st = err_set(&e, SD3Q_ERR_INVALID_ARG, "max length %d out of range [%d, %d]", max_len, enc == SD3Q_COMP_T5 ? 1 : 2, 1 << 20);
    } else {
        int k = (int)enc - SD3Q_COMP_CLIP_L;
        const void * tok = k == 0 ? (const void *)m->tok_l : k == 1 ? (const void *)m->tok_g : (const void *)m->tok_t5;
        if (!tok) {
            st = err_set(&e, SD3Q_ERR_MISSING, "the model has no %s tokenizer: a diffusers folder brings tokenizer/, tokenizer_2/, "
                                               "tokenizer_3/; for a single file pass --tokenizer-dir", title[k]);
        } else {
            int n = k < 2 ? bpe_tokenizer_encode(tok, text, max_len, pad != 0, ids)
                          : unigram_tokenizer_encode(tok, text, max_len, pad != 0, ids);
            if (n < 0) st = err_set(&e, SD3Q_ERR_OOM, "out of memory while tokenizing for %s", title[k]);
            else *n_out = n;
        }
    }
    if (err && err_size) snprintf(err, err_size, "%s", st == SD3Q_OK ? "" : e.msg);
    return st;
}

int sd3q_model_context_dim(const struct sd3q_model * m) {
    if (!m || !m->clip_l || !m->clip_g) return 0;
    if (m->t5) return m->t5->cfg.d_model;
    return m->mmdit ? m->mmdit->cfg.ctx_dim : 0;  // no T5: diffusers' zeros have joint_attention_dim columns
}

int sd3q_model_pooled_dim(const struct sd3q_model * m) {
    if (!m || !m->clip_l || !m->clip_g) return 0;
    return m->clip_l->cfg.width + clip_pooled_dim(m->clip_g);
}

int sd3q_model_context_len(const struct sd3q_model * m, int t5_len) {
    if (!sd3q_model_context_dim(m) || t5_len < 1 || t5_len > TEXT_MAX_T5) return 0;
    return TEXT_CLIP_LEN + (m->t5 ? t5_len : TEXT_CLIP_LEN);
}

enum sd3q_status sd3q_model_release_pages(const struct sd3q_model * m, enum sd3q_component c) {
    if (!m || c < 0 || c >= SD3Q_COMP_COUNT) return SD3Q_ERR_INVALID_ARG;
    const struct ckpt_component * comp = &m->ck.comp[c];
    if (!comp->present) return SD3Q_ERR_MISSING;
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < comp->n; i++) {
        const struct st_tensor * t = comp->t[i].t;
        size_t bytes = (size_t)(t->end - t->begin);
        for (int f = 0; f < m->ck.n_files && bytes; f++) {
            const struct st_file * sf = m->ck.files[f];
            // only pages of a read-only file mapping: they are dropped, and read back from the file if touched again
            if (!sf->mapped || t->data < sf->map || t->data + bytes > sf->map + sf->size) continue;
            uintptr_t a = (uintptr_t)t->data & ~(pg - 1), b = ((uintptr_t)t->data + bytes + pg - 1) & ~(pg - 1);
            madvise((void *)a, (size_t)(b - a), MADV_DONTNEED);
            break;
        }
    }
    return SD3Q_OK;
}

// ---- session: planning ----------------------------------------------------------------------------------------------

// A backend plan's weight maxima.
struct plan_dims {
    int64_t max_k, max_n;
};

// Raises the maxima for one weight (Linear weights only; vectors are norms and biases).
static void track_dims(void * ud, const struct wt * w) {
    struct plan_dims * d = ud;
    if (w->ndim < 2) return;
    if (w->row_elems > d->max_k) d->max_k = w->row_elems;
    if (w->shape[0] > d->max_n) d->max_n = w->shape[0];
}

void text_plan_backend(const struct sd3q_model * m, int max_context, int64_t * max_k, int64_t * max_n, int64_t * max_tokens) {
    struct plan_dims d = {*max_k, *max_n};
    const struct clip * cl[2] = {m->clip_l, m->clip_g};
    for (int k = 0; k < 2; k++)
        if (cl[k]) {
            clip_for_each_weight(cl[k], track_dims, &d);
            if (cl[k]->cfg.width > d.max_n) d.max_n = cl[k]->cfg.width;  // LayerNorm parameters share the bias buffer
            if (*max_tokens < TEXT_CLIP_LEN) *max_tokens = TEXT_CLIP_LEN;
        }
    if (m->t5) {
        t5_for_each_weight(m->t5, track_dims, &d);
        if (m->t5->cfg.d_model > d.max_n) d.max_n = m->t5->cfg.d_model;
        if (max_context - TEXT_CLIP_LEN > *max_tokens) *max_tokens = max_context - TEXT_CLIP_LEN;
    }
    *max_k = d.max_k;
    *max_n = d.max_n;
}

// Takes n activations from the session arena (the request was checked against the planned maxima).
static void * take(struct sd3q_session * s, int64_t n) {
    void * p = arena_alloc(&s->ar, (size_t)n * s->bk->ops->act_size(s->bk));
    SD3Q_ASSERT(p);
    return p;
}

// The T5 tokens a session was planned for (0: none).
static int t5_capacity(const struct sd3q_session * s) {
    int n = s->p.max_context - TEXT_CLIP_LEN;
    return s->model->t5 && n > 0 ? n : 0;
}

// I/O buffers of one CLIP pass, in the same order for planning and use.
static void clip_take_io(struct sd3q_session * s, const struct clip * c, struct clip_io * io, int with_last) {
    io->L      = TEXT_CLIP_LEN;
    io->x      = take(s, (int64_t)TEXT_CLIP_LEN * c->cfg.width);  // [77, W]
    io->pooled = take(s, clip_pooled_dim(c));                     // [P]
    io->last   = with_last ? take(s, (int64_t)TEXT_CLIP_LEN * c->cfg.width) : NULL;  // [77, W]
}

// I/O buffers of one T5 pass of L tokens.
static void t5_take_io(struct sd3q_session * s, struct t5_io * io, int L) {
    const struct t5_config * c = &s->model->t5->cfg;
    io->L    = L;
    io->x    = take(s, (int64_t)L * c->d_model);         // [L, D]
    io->bias = take(s, (int64_t)c->heads * L * L);       // [NH, L, L]
    io->out  = take(s, (int64_t)L * c->d_model);         // [L, D]
}

// clip_for_each_weight with the signature session_prepare_weights takes.
static void clip_weights(const void * m, void (*fn)(void * ud, const struct wt * w), void * ud) { clip_for_each_weight(m, fn, ud); }

// t5_for_each_weight with the signature session_prepare_weights takes.
static void t5_weights(const void * m, void (*fn)(void * ud, const struct wt * w), void * ud) { t5_for_each_weight(m, fn, ud); }

enum sd3q_status text_plan_session(struct sd3q_session * s, size_t * bytes, struct sd3q_errbuf * e) {
    const struct sd3q_model * m = s->model;
    if (!m->clip_l && !m->clip_g && !m->t5) return SD3Q_OK;
    int64_t host = 1, ids = TEXT_CLIP_LEN;
    arena_init_measure(&s->ar, 64);
    const struct clip * cl[2] = {m->clip_l, m->clip_g};
    for (int k = 0; k < 2; k++) {
        if (!cl[k]) continue;
        size_t mark = arena_mark(&s->ar);
        struct clip_io io;
        clip_take_io(s, cl[k], &io, 1);
        clip_forward(cl[k], NULL, &s->ar, &io);
        arena_rewind(&s->ar, mark);
        if ((int64_t)TEXT_CLIP_LEN * cl[k]->cfg.width > host) host = (int64_t)TEXT_CLIP_LEN * cl[k]->cfg.width;
    }
    int L = t5_capacity(s);
    if (L > 0) {
        size_t mark = arena_mark(&s->ar);
        struct t5_io io;
        t5_take_io(s, &io, L);
        t5_forward(m->t5, NULL, &s->ar, &io);
        arena_rewind(&s->ar, mark);
        int64_t need = (int64_t)L * (L > m->t5->cfg.d_model ? L : m->t5->cfg.d_model);  // embeddings, or one head's bias
        if (need > host) host = need;
        if (L > ids) ids = L;
    }
    if (s->ar.peak > *bytes) *bytes = s->ar.peak;
    s->host_text = malloc(sizeof(float) * (size_t)host);
    s->host_ids  = malloc(sizeof(int32_t) * (size_t)ids);
    if (!s->host_text || !s->host_ids)
        return err_set(e, SD3Q_ERR_OOM, "out of memory for the text staging buffers (%.1f MiB)", (double)host * 4 / (1 << 20));
    return SD3Q_OK;
}

void text_session_free(struct sd3q_session * s) {
    free(s->host_text);
    free(s->host_ids);
    s->host_text = NULL;
    s->host_ids  = NULL;
}

// ---- session: running the encoders ----------------------------------------------------------------------------------

// The checks every text entry point shares: the encoder exists and the session was planned for it.
static enum sd3q_status need_encoder(struct sd3q_session * s, const void * enc, const char * name) {
    if (!enc) return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no %s text encoder", name);
    if (!s->host_text || !s->host_ids) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "the session was created without text encoders");
    return SD3Q_OK;
}

// Gives a backend that keeps its own weight copies (CUDA) those of encoder `comp` before its first use in this session,
// as residency group comp (not at session init: an MMDiT-only session must not copy T5-XXL to the device).
static enum sd3q_status prepare_encoder(struct sd3q_session * s, enum sd3q_component comp) {
    const unsigned bit = 1u << comp;
    if (!s->bk->ops->prepare || (s->text_prepared & bit)) return SD3Q_OK;
    const struct sd3q_model * m = s->model;
    struct sd3q_errbuf e = {{0}};  // (session_prepare_weights reads s->err while writing e)
    enum sd3q_status st = comp == SD3Q_COMP_T5 ? session_prepare_weights(s, comp, t5_weights, m->t5, &e)
                        : session_prepare_weights(s, comp, clip_weights, comp == SD3Q_COMP_CLIP_L ? m->clip_l : m->clip_g, &e);
    if (st != SD3Q_OK) return err_set(&s->err, st, "%s", e.msg);
    s->text_prepared |= bit;
    return SD3Q_OK;
}

void text_release_device(struct sd3q_session * s) {
    if (!s || !s->bk || !s->bk->ops->release) return;
    for (int c = SD3Q_COMP_CLIP_L; c <= SD3Q_COMP_T5; c++)
        if (s->text_prepared & (1u << c)) s->bk->ops->release(s->bk, c);
    s->text_prepared = 0;
}

// Runs one CLIP tower on 77 ids; the penultimate states go to rows of `hidden` (row stride ld, starting at column
// col), the pooled vector to `pooled`, the final-LN states (optional) to `last` [77, W].
static enum sd3q_status run_clip(struct sd3q_session * s, const struct clip * c, const int32_t * ids, float * hidden, int64_t ld,
                                 int64_t col, float * pooled, float * last) {
    const int64_t W = c->cfg.width, L = TEXT_CLIP_LEN;
    const struct backend_ops * o = s->bk->ops;
    TRY(prepare_encoder(s, c == s->model->clip_l ? SD3Q_COMP_CLIP_L : SD3Q_COMP_CLIP_G));
    TRY(clip_embed(c, ids, (int)L, s->host_text, &s->err));
    size_t mark = arena_mark(&s->ar);
    struct clip_io io;
    clip_take_io(s, c, &io, last != NULL);
    io.eos = clip_pool_index(c, ids, (int)L);
    enum sd3q_status st = o->upload(s->bk, io.x, s->host_text, L * W);
    if (st == SD3Q_OK) {
        clip_forward(c, s->bk, &s->ar, &io);
        st = o->download(s->bk, s->host_text, io.x, L * W);
    }
    if (st == SD3Q_OK) st = o->download(s->bk, pooled, io.pooled, clip_pooled_dim(c));
    if (st == SD3Q_OK && last) st = o->download(s->bk, last, io.last, L * W);
    arena_rewind(&s->ar, mark);
    if (st != SD3Q_OK) return st;
    for (int64_t t = 0; t < L; t++) memcpy(hidden + t * ld + col, s->host_text + t * W, sizeof(float) * (size_t)W);
    return SD3Q_OK;
}

// Runs T5 on L ids (L within the session's plan) into out [L, D].
static enum sd3q_status run_t5(struct sd3q_session * s, const int32_t * ids, int L, float * out) {
    const struct t5 * m = s->model->t5;
    const int64_t D = m->cfg.d_model, LL = (int64_t)L * L;
    const struct backend_ops * o = s->bk->ops;
    const size_t esz = o->act_size(s->bk);
    TRY(prepare_encoder(s, SD3Q_COMP_T5));
    TRY(t5_embed(m, ids, L, s->host_text, &s->err));
    size_t mark = arena_mark(&s->ar);
    struct t5_io io;
    t5_take_io(s, &io, L);
    enum sd3q_status st = o->upload(s->bk, io.x, s->host_text, L * D);
    for (int h = 0; h < m->cfg.heads && st == SD3Q_OK; h++) {  // the bias one head at a time: host staging of L² floats
        t5_bias_head(m, h, L, s->host_text);
        st = o->upload(s->bk, (uint8_t *)io.bias + (size_t)h * LL * esz, s->host_text, LL);
    }
    if (st == SD3Q_OK) {
        t5_forward(m, s->bk, &s->ar, &io);
        st = o->download(s->bk, out, io.out, L * D);
    }
    arena_rewind(&s->ar, mark);
    return st;
}

enum sd3q_status text_encode_clip(struct sd3q_session * s, int which, const int32_t * ids, float * penult, float * pooled,
                                  float * last) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    const struct clip * c = which == 0 ? s->model->clip_l : which == 1 ? s->model->clip_g : NULL;
    TRY(need_encoder(s, c, which == 0 ? "CLIP-L" : "CLIP-G"));
    if (!ids || !penult || !pooled) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "text_encode_clip: NULL buffer");
    return run_clip(s, c, ids, penult, c->cfg.width, 0, pooled, last);
}

enum sd3q_status text_encode_t5(struct sd3q_session * s, const int32_t * ids, int L, float * out) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    TRY(need_encoder(s, s->model->t5, "T5"));
    if (!ids || !out) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "text_encode_t5: NULL buffer");
    if (L < 1 || L > t5_capacity(s))
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "T5 length %d out of range [1, %d] (the session's max_context %d minus %d CLIP tokens)",
                       L, t5_capacity(s), s->p.max_context, TEXT_CLIP_LEN);
    return run_t5(s, ids, L, out);
}

// Tokenizes `text` for CLIP tower k (0 L, 1 G) into the session's id buffer, padded to 77.
static enum sd3q_status clip_ids(struct sd3q_session * s, int k, const char * text) {
    const struct bpe_tokenizer * t = k == 0 ? s->model->tok_l : s->model->tok_g;
    SD3Q_ASSERT(t);  // checked by the caller
    if (bpe_tokenizer_encode(t, text, TEXT_CLIP_LEN, 1, s->host_ids) != TEXT_CLIP_LEN)
        return err_set(&s->err, SD3Q_ERR_OOM, "out of memory while tokenizing the prompt");
    return SD3Q_OK;
}

enum sd3q_status sd3q_session_encode_prompt(struct sd3q_session * s, const char * prompt, int t5_len, float * context,
                                            float * pooled) {
    if (!s) return SD3Q_ERR_INVALID_ARG;
    err_clear(&s->err);
    const struct sd3q_model * m = s->model;
    if (!prompt || !context || !pooled) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "sd3q_session_encode_prompt: NULL argument");
    TRY(need_encoder(s, m->clip_l, "CLIP-L"));
    TRY(need_encoder(s, m->clip_g, "CLIP-G"));
    const int64_t D = sd3q_model_context_dim(m);
    if (!D) return err_set(&s->err, SD3Q_ERR_MISSING, "the context width is unknown: the model has neither T5-XXL nor an MMDiT");
    if (t5_len < 1 || t5_len > TEXT_MAX_T5) return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "T5 length %d out of range [1, %d]", t5_len, TEXT_MAX_T5);
    const int n_t5 = m->t5 ? t5_len : TEXT_CLIP_LEN;
    if (TEXT_CLIP_LEN + n_t5 > s->p.max_context)
        return err_set(&s->err, SD3Q_ERR_INVALID_ARG, "%d context rows (77 CLIP + %d %s) exceed the session's planned max_context %d",
                       TEXT_CLIP_LEN + n_t5, n_t5, m->t5 ? "T5" : "zero T5 rows", s->p.max_context);
    if (!m->tok_l || !m->tok_g || (m->t5 && !m->tok_t5))
        return err_set(&s->err, SD3Q_ERR_MISSING, "the model has no %s tokenizer, so prompts cannot be encoded: a diffusers folder "
                                                  "brings tokenizer/, tokenizer_2/ and tokenizer_3/; for a single file pass "
                                                  "--tokenizer-dir DIR",
                       !m->tok_l ? "CLIP-L" : !m->tok_g ? "CLIP-G" : "T5");
    const int64_t wl = m->clip_l->cfg.width, wg = m->clip_g->cfg.width;
    // CLIP part: [77, W_l | W_g | zeros]; pooled = CLIP-L pooled | CLIP-G projected
    TRY(clip_ids(s, 0, prompt));
    TRY(run_clip(s, m->clip_l, s->host_ids, context, D, 0, pooled, NULL));
    TRY(clip_ids(s, 1, prompt));
    TRY(run_clip(s, m->clip_g, s->host_ids, context, D, wl, pooled + wl, NULL));
    for (int64_t t = 0; t < TEXT_CLIP_LEN; t++) memset(context + t * D + wl + wg, 0, sizeof(float) * (size_t)(D - wl - wg));
    float * t5part = context + (int64_t)TEXT_CLIP_LEN * D;  // [n_t5, D]
    if (!m->t5) {
        memset(t5part, 0, sizeof(float) * (size_t)n_t5 * (size_t)D);
        if (!s->t5_notice) {
            fprintf(stderr, "sd3q: notice: the model has no T5-XXL; its part of the context is %d rows of zeros, as diffusers "
                            "does (the T5 length is not used)\n", TEXT_CLIP_LEN);
            s->t5_notice = 1;
        }
        return SD3Q_OK;
    }
    if (unigram_tokenizer_encode(m->tok_t5, prompt, t5_len, 1, s->host_ids) != t5_len)
        return err_set(&s->err, SD3Q_ERR_OOM, "out of memory while tokenizing the prompt for T5");
    return run_t5(s, s->host_ids, t5_len, t5part);
}
