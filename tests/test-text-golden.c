/*
 * test-text-golden.c — the text encoders and SD3's prompt encoding against the PyTorch reference
 * (tests/golden/clip/, t5/, pipeline/): CLIP-L and CLIP-G (penultimate states, final LayerNorm, pooled/projected),
 * T5 (last hidden state; the bucket function against `rel_bucket`), in both checkpoint layouts (the diffusers folder
 * with F16 weights and a sharded T5; the original single file with F8_E4M3 T5 Linears), on the optimised CPU backend
 * and on the scalar reference backend; then the whole prompt encoding from text (tokenizers of pipeline/) against
 * pipeline/io.safetensors, the token ids against the fixture ids, the no-T5 case, page release, and bad inputs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/clip.h"
#include "model/session.h"
#include "model/t5.h"
#include "model/text.h"
#include "testutil.h"

#define TOL 1e-5  // float64 reference rounded to f32; see tests/golden/README.md

#define GOLD       SD3Q_SOURCE_DIR "/tests/golden/"
#define PIPE       GOLD "pipeline"
#define SINGLE     GOLD "single_file/sd3_tiny_incl_clips_t5xxlfp8.safetensors"
#define PROMPT     "a photo of an astronaut riding a horse on the moon, 4k"
#define NEG_PROMPT "blurry, low quality"

// Opens a fixture file (aborts the test program when it cannot: nothing else would make sense).
static void open_io(const char * path, struct st_file * f) {
    struct sd3q_errbuf e;
    if (st_open(path, f, &e) != SD3Q_OK) {
        fprintf(stderr, "FAIL: %s\n", e.msg);
        exit(1);
    }
}

// Reads a float tensor of a fixture (shape checked against want, -1 entries free).
static float * read_f32(const struct st_file * f, const char * name, int ndim, int64_t * want) {
    struct sd3q_errbuf e;
    float * p = st_read_f32(f, name, ndim, want, &e);
    if (!p) {
        fprintf(stderr, "FAIL: %s\n", e.msg);
        exit(1);
    }
    return p;
}

// Reads n int64 ids of a fixture tensor (row `row` of rows of n) as int32.
static void read_ids(const struct st_file * f, const char * name, int row, int n, int32_t * out) {
    const struct st_tensor * t = st_find(f, name);
    SD3Q_ASSERT(t && t->type == DT_I64 && t->numel >= (int64_t)(row + 1) * n);
    for (int i = 0; i < n; i++) {
        int64_t v;
        memcpy(&v, t->data + ((size_t)row * n + i) * 8, 8);
        out[i] = (int32_t)v;
    }
}

// Loads a model; *m is NULL (and a failure counted unless expect_fail) on error, with the message in err.
static enum sd3q_status load(const struct sd3q_model_params * p, struct sd3q_model ** m, char * err, size_t n, int expect_fail) {
    enum sd3q_status st = sd3q_model_load(p, m, err, n);
    if (!expect_fail) CHECKF(st == SD3Q_OK, "load: %s", err);
    return st;
}

// A CPU session for the text encoders with room for `ctx` context tokens (ref: the scalar reference backend).
static struct sd3q_session * text_session(const struct sd3q_model * m, int ctx, int ref) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.max_batch = 1, sp.max_latent_h = 2, sp.max_latent_w = 2, sp.max_context = ctx, sp.n_threads = 2;
    sp.device = SD3Q_DEVICE_CPU;  // the CPU backends are what this test checks (a CUDA build would pick the GPU)
    struct sd3q_session * s = NULL;
    char err[1024];
    enum sd3q_status st = session_create(m, &sp, ref, &s, err, sizeof err);
    CHECKF(st == SD3Q_OK, "session: %s", err);
    return s;
}

// CLIP-L and CLIP-G on the three fixture sequences: penultimate, final LN and pooled (projected for CLIP-G).
static void check_clip(struct sd3q_session * s, const char * label) {
    struct st_file io;
    open_io(GOLD "clip/io.safetensors", &io);
    for (int k = 0; k < 2; k++) {
        const char * tw = k ? "clip_g" : "clip_l";
        const struct clip * c = k ? s->model->clip_g : s->model->clip_l;
        int64_t W = c->cfg.width, P = clip_pooled_dim(c);
        char n[64];
        int64_t s3[3] = {3, 77, W}, s2[2] = {3, P};
        snprintf(n, sizeof n, "%s.penultimate", tw);
        float * pen = read_f32(&io, n, 3, s3);
        snprintf(n, sizeof n, "%s.last_hidden", tw);
        float * last = read_f32(&io, n, 3, s3);
        snprintf(n, sizeof n, "%s.pooled", tw);
        float * pooled = read_f32(&io, n, 2, s2);
        float * got_pen = malloc(sizeof(float) * 77 * W), * got_last = malloc(sizeof(float) * 77 * W);
        float * got_pool = malloc(sizeof(float) * P);
        int32_t ids[77];
        for (int b = 0; b < 3; b++) {
            snprintf(n, sizeof n, "%s.ids", tw);
            read_ids(&io, n, b, 77, ids);
            for (int64_t i = 0; i < 77 * W; i++) got_pen[i] = got_last[i] = 1e30f;  // poison: every element must be written
            enum sd3q_status st = text_encode_clip(s, k, ids, got_pen, got_pool, got_last);
            CHECKF(st == SD3Q_OK, "%s: %s", label, sd3q_session_last_error(s));
            char l[160];
            snprintf(l, sizeof l, "%s %s[%d] penultimate", label, tw, b);
            check_tensor(l, got_pen, pen + b * 77 * W, 77 * W, TOL);
            snprintf(l, sizeof l, "%s %s[%d] last_hidden", label, tw, b);
            check_tensor(l, got_last, last + b * 77 * W, 77 * W, TOL);
            snprintf(l, sizeof l, "%s %s[%d] pooled", label, tw, b);
            check_tensor(l, got_pool, pooled + b * P, P, TOL);
        }
        free(pen), free(last), free(pooled), free(got_pen), free(got_last), free(got_pool);
    }
    st_close(&io);
}

// T5 on the two fixture sequences of 100 tokens.
static void check_t5(struct sd3q_session * s, const char * label) {
    struct st_file io;
    open_io(GOLD "t5/io.safetensors", &io);
    const int64_t D = s->model->t5->cfg.d_model;
    int64_t sh[3] = {2, 100, D};
    float * ref = read_f32(&io, "last_hidden", 3, sh);
    float * got = malloc(sizeof(float) * 100 * D);
    int32_t ids[100];
    for (int b = 0; b < 2; b++) {
        read_ids(&io, "ids", b, 100, ids);
        for (int64_t i = 0; i < 100 * D; i++) got[i] = 1e30f;
        enum sd3q_status st = text_encode_t5(s, ids, 100, got);
        CHECKF(st == SD3Q_OK, "%s: %s", label, sd3q_session_last_error(s));
        char l[160];
        snprintf(l, sizeof l, "%s t5[%d] last_hidden", label, b);
        check_tensor(l, got, ref + b * 100 * D, 100 * D, TOL);
    }
    free(ref), free(got);
    st_close(&io);
}

// The bucket function against the reference's rel_bucket (r = −99…99) and the spec's table (§10.3) beyond it.
static void check_buckets(void) {
    struct st_file io;
    open_io(GOLD "t5/io.safetensors", &io);
    int32_t rb[199];
    read_ids(&io, "rel_bucket", 0, 199, rb);
    int bad = 0;
    for (int r = -99; r <= 99; r++) bad += t5_bucket(r, 32, 128) != rb[r + 99];
    CHECKF(bad == 0, "%d relative buckets differ from the reference", bad);
    static const int spec[][2] = {{0, 0},     {-1, 1},   {-7, 7},   {-8, 8},   {-11, 8},  {-12, 9},   {-16, 10}, {-22, 10},
                                  {-23, 11},  {-32, 12}, {-45, 12}, {-46, 13}, {-63, 13}, {-64, 14},  {-90, 14}, {-91, 15},
                                  {-5000, 15}, {1, 17},  {7, 23},   {8, 24},   {16, 26},  {32, 28},   {64, 30},  {90, 30},
                                  {91, 31},   {100000, 31}};
    for (size_t i = 0; i < sizeof spec / sizeof spec[0]; i++)
        CHECKF(t5_bucket(spec[i][0], 32, 128) == spec[i][1], "bucket(%d) = %d, spec says %d", spec[i][0], t5_bucket(spec[i][0], 32, 128),
               spec[i][1]);
    printf("t5 buckets: 199 reference values and %zu spec values checked\n", sizeof spec / sizeof spec[0]);
    st_close(&io);
}

// Token ids of the pipeline's prompt and negative prompt for all three tokenizers against the fixture.
static void check_ids(const struct sd3q_model * m, const char * label) {
    struct st_file io;
    open_io(PIPE "/io.safetensors", &io);
    static const char * const enc[3] = {"clip_l", "clip_g", "t5"};
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < 3; k++) {
            char n[64], err[1024];
            snprintf(n, sizeof n, "%s_%s_ids", half ? "uncond" : "cond", enc[k]);
            int32_t want[77], got[77];
            int cnt = 0;
            read_ids(&io, n, 0, 77, want);
            enum sd3q_status st = sd3q_model_tokenize(m, (enum sd3q_component)(SD3Q_COMP_CLIP_L + k), half ? NEG_PROMPT : PROMPT, 77, 1,
                                                      got, &cnt, err, sizeof err);
            CHECKF(st == SD3Q_OK && cnt == 77, "%s tokenize %s: %s", label, n, err);
            CHECKF(memcmp(got, want, sizeof want) == 0, "%s: %s differ from the fixture", label, n);
        }
    printf("%s: token ids of prompt and negative prompt equal the fixture (3 tokenizers)\n", label);
    st_close(&io);
}

// The whole prompt encoding from text against the pipeline fixture (T5 length 77).
static void check_encode(struct sd3q_session * s, const char * label) {
    struct st_file io;
    open_io(PIPE "/io.safetensors", &io);
    const int D = sd3q_model_context_dim(s->model), P = sd3q_model_pooled_dim(s->model);
    CHECK(sd3q_model_context_len(s->model, 77) == 154);
    int64_t cs[3] = {1, 154, D}, ps[2] = {1, P};
    float * ctx = malloc(sizeof(float) * 154 * D), * pooled = malloc(sizeof(float) * P);
    for (int half = 0; half < 2; half++) {
        char n[64], l[160];
        for (int64_t i = 0; i < 154 * D; i++) ctx[i] = 1e30f;
        for (int i = 0; i < P; i++) pooled[i] = 1e30f;
        enum sd3q_status st = sd3q_session_encode_prompt(s, half ? NEG_PROMPT : PROMPT, 77, ctx, pooled);
        CHECKF(st == SD3Q_OK, "%s encode: %s", label, sd3q_session_last_error(s));
        snprintf(n, sizeof n, "%s_context", half ? "uncond" : "cond");
        float * rc = read_f32(&io, n, 3, cs);
        snprintf(l, sizeof l, "%s %s", label, n);
        check_tensor(l, ctx, rc, 154 * D, TOL);
        snprintf(n, sizeof n, "%s_pooled", half ? "uncond" : "cond");
        float * rp = read_f32(&io, n, 2, ps);
        snprintf(l, sizeof l, "%s %s", label, n);
        check_tensor(l, pooled, rp, P, TOL);
        free(rc), free(rp);
    }
    free(ctx), free(pooled);
    st_close(&io);
}

// Encoders, ids and the prompt encoding of one checkpoint layout, on both backends.
static void run_layout(const char * label, const struct sd3q_model_params * p) {
    struct sd3q_model * m = NULL;
    char err[1024];
    if (load(p, &m, err, sizeof err, 0) != SD3Q_OK) return;
    CHECK(sd3q_model_context_dim(m) == 256 && sd3q_model_pooled_dim(m) == 192);
    check_ids(m, label);
    for (int ref = 0; ref < 2; ref++) {
        struct sd3q_session * s = text_session(m, 177, ref);
        if (!s) continue;
        char l[96];
        snprintf(l, sizeof l, "%s[%s]", label, ref ? "ref" : "cpu");
        check_clip(s, l);
        check_t5(s, l);
        check_encode(s, l);
        if (!ref) {  // releasing the pages changes nothing: they are read back from the file
            CHECK(sd3q_model_release_pages(m, SD3Q_COMP_T5) == SD3Q_OK);
            CHECK(sd3q_model_release_pages(m, SD3Q_COMP_CLIP_G) == SD3Q_OK);
            snprintf(l, sizeof l, "%s[cpu, after release]", label);
            check_encode(s, l);
        }
        sd3q_session_free(s);
    }
    sd3q_model_free(m);
}

// Without T5: diffusers' 77 zero rows after the CLIP part, whatever the T5 length; a notice, no error.
static void check_no_t5(void) {
    struct sd3q_model_params p = sd3q_model_default_params();
    p.mmdit_path = PIPE "/transformer", p.clip_l_path = PIPE "/text_encoder", p.clip_g_path = PIPE "/text_encoder_2";
    p.tokenizer_dir = PIPE;
    struct sd3q_model * m = NULL;
    char err[1024];
    if (load(&p, &m, err, sizeof err, 0) != SD3Q_OK) return;
    CHECK(!sd3q_model_has(m, SD3Q_COMP_T5));
    CHECK(sd3q_model_context_dim(m) == 256 && sd3q_model_pooled_dim(m) == 192);
    CHECK(sd3q_model_context_len(m, 256) == 154 && sd3q_model_context_len(m, 77) == 154 && sd3q_model_context_len(m, 0) == 0);
    struct sd3q_session * s = text_session(m, 154, 0);
    if (s) {
        struct st_file io;
        open_io(PIPE "/io.safetensors", &io);
        int64_t cs[3] = {1, 154, 256}, ps[2] = {1, 192};
        float * rc = read_f32(&io, "cond_context", 3, cs), * rp = read_f32(&io, "cond_pooled", 2, ps);
        float * ctx = malloc(sizeof(float) * 154 * 256), pooled[192];
        for (int i = 0; i < 154 * 256; i++) ctx[i] = 1e30f;
        enum sd3q_status st = sd3q_session_encode_prompt(s, PROMPT, 256, ctx, pooled);
        CHECKF(st == SD3Q_OK, "no-T5 encode: %s", sd3q_session_last_error(s));
        check_tensor("no-T5 CLIP rows", ctx, rc, 77 * 256, TOL);
        check_tensor("no-T5 pooled", pooled, rp, 192, TOL);
        int nonzero = 0;
        for (int i = 77 * 256; i < 154 * 256; i++) nonzero += ctx[i] != 0.0f;
        CHECKF(nonzero == 0, "no-T5: %d non-zero values in the 77 T5 rows", nonzero);
        printf("no-T5: 77 CLIP rows match, 77 zero rows follow\n");
        free(rc), free(rp), free(ctx);
        st_close(&io);
        sd3q_session_free(s);
    }
    sd3q_model_free(m);
    // CLIPs without T5 and without MMDiT: the context width is unknown
    p.mmdit_path = NULL;
    if (load(&p, &m, err, sizeof err, 0) != SD3Q_OK) return;
    CHECK(sd3q_model_context_dim(m) == 0 && sd3q_model_context_len(m, 77) == 0);
    s = text_session(m, 154, 0);
    if (s) {
        float ctx[16], pooled[16];
        enum sd3q_status st = sd3q_session_encode_prompt(s, PROMPT, 77, ctx, pooled);
        CHECKF(st == SD3Q_ERR_MISSING && strstr(sd3q_session_last_error(s), "context width"), "got %d: %s", st,
               sd3q_session_last_error(s));
        sd3q_session_free(s);
    }
    sd3q_model_free(m);
}

// Bad inputs: every one an error with a message that says what to do, never a crash.
static void check_bad_inputs(void) {
    char err[1024];
    struct sd3q_model * m = NULL;
    // a single file without tokenizers: loads, but cannot encode text
    struct sd3q_model_params p = sd3q_model_default_params();
    p.path = SINGLE;
    if (load(&p, &m, err, sizeof err, 0) == SD3Q_OK) {
        int32_t ids[77];
        int n = -1;
        enum sd3q_status st = sd3q_model_tokenize(m, SD3Q_COMP_CLIP_L, PROMPT, 77, 1, ids, &n, err, sizeof err);
        CHECKF(st == SD3Q_ERR_MISSING && strstr(err, "--tokenizer-dir") && n == 0, "tokenize without tokenizer: %d %s", st, err);
        struct sd3q_session * s = text_session(m, 154, 0);
        if (s) {
            float * ctx = malloc(sizeof(float) * 154 * 256), pooled[192];
            st = sd3q_session_encode_prompt(s, PROMPT, 77, ctx, pooled);
            CHECKF(st == SD3Q_ERR_MISSING && strstr(sd3q_session_last_error(s), "tokenizer"), "encode without tokenizer: %d %s", st,
                   sd3q_session_last_error(s));
            printf("missing tokenizer: %s\n", sd3q_session_last_error(s));
            // ids outside the vocabulary are rejected before anything runs
            for (int i = 0; i < 77; i++) ids[i] = i == 3 ? 100000 : 5;
            st = text_encode_clip(s, 0, ids, ctx, pooled, NULL);
            CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(sd3q_session_last_error(s), "100000"), "bad id: %d %s", st, sd3q_session_last_error(s));
            st = text_encode_t5(s, ids, 77, ctx);
            CHECKF(st == SD3Q_ERR_INVALID_ARG, "bad T5 id: %d %s", st, sd3q_session_last_error(s));
            st = text_encode_t5(s, ids, 78, ctx);  // planned for 154 − 77 = 77 T5 tokens
            CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(sd3q_session_last_error(s), "max_context"), "T5 too long: %d %s", st,
                   sd3q_session_last_error(s));
            free(ctx);
            sd3q_session_free(s);
        }
        sd3q_model_free(m);
    }
    // --tokenizer-dir that does not exist
    p.tokenizer_dir = GOLD "no_such_folder";
    enum sd3q_status st = load(&p, &m, err, sizeof err, 1);
    CHECKF(st == SD3Q_ERR_MISSING && strstr(err, "no_such_folder") && !m, "bad --tokenizer-dir: %d %s", st, err);
    // the pipeline: t5_len out of range, a session planned too small, NULL arguments, a bad encoder or length
    p = sd3q_model_default_params();
    p.path = PIPE;
    if (load(&p, &m, err, sizeof err, 0) != SD3Q_OK) return;
    struct sd3q_session * s = text_session(m, 120, 0);
    if (s) {
        float * ctx = malloc(sizeof(float) * 400 * 256), pooled[192];
        const int bad_len[] = {0, -1, 65536, 1 << 30};
        for (size_t i = 0; i < sizeof bad_len / sizeof bad_len[0]; i++) {
            st = sd3q_session_encode_prompt(s, PROMPT, bad_len[i], ctx, pooled);
            CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(sd3q_session_last_error(s), "out of range"), "t5_len %d: %d %s", bad_len[i], st,
                   sd3q_session_last_error(s));
        }
        st = sd3q_session_encode_prompt(s, PROMPT, 77, ctx, pooled);  // 154 rows > max_context 120
        CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(sd3q_session_last_error(s), "max_context 120"), "too small: %d %s", st,
               sd3q_session_last_error(s));
        printf("session too small: %s\n", sd3q_session_last_error(s));
        st = sd3q_session_encode_prompt(s, PROMPT, 43, ctx, pooled);  // 120 rows fit
        CHECKF(st == SD3Q_OK, "t5_len 43: %s", sd3q_session_last_error(s));
        CHECK(sd3q_session_encode_prompt(s, NULL, 43, ctx, pooled) == SD3Q_ERR_INVALID_ARG);
        CHECK(sd3q_session_encode_prompt(s, PROMPT, 43, NULL, pooled) == SD3Q_ERR_INVALID_ARG);
        CHECK(sd3q_session_encode_prompt(NULL, PROMPT, 43, ctx, pooled) == SD3Q_ERR_INVALID_ARG);
        free(ctx);
        sd3q_session_free(s);
    }
    int32_t ids[8];
    int n;
    CHECK(sd3q_model_tokenize(m, SD3Q_COMP_VAE, PROMPT, 8, 1, ids, &n, err, sizeof err) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_tokenize(m, SD3Q_COMP_CLIP_L, PROMPT, 1, 1, ids, &n, err, sizeof err) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_tokenize(m, SD3Q_COMP_CLIP_L, NULL, 8, 1, ids, &n, err, sizeof err) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_tokenize(m, SD3Q_COMP_T5, PROMPT, 8, 1, ids, &n, err, sizeof err) == SD3Q_OK && n == 8 && ids[7] == 1);
    CHECK(sd3q_model_tokenize(m, SD3Q_COMP_CLIP_G, PROMPT, 8, 1, ids, &n, err, sizeof err) == SD3Q_OK && n == 8 && ids[7] == 713);
    CHECK(sd3q_model_release_pages(m, SD3Q_COMP_COUNT) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_release_pages(NULL, SD3Q_COMP_T5) == SD3Q_ERR_INVALID_ARG);
    sd3q_model_free(m);
    // T5 only, in a session with no room for T5 tokens: the session is made, encoding says why it cannot run
    p = sd3q_model_default_params();
    p.t5xxl_path = PIPE "/text_encoder_3";
    if (load(&p, &m, err, sizeof err, 0) == SD3Q_OK) {
        struct sd3q_session * s2 = text_session(m, 50, 0);
        if (s2) {
            int32_t one = 1;
            float out[256];
            st = text_encode_t5(s2, &one, 1, out);
            CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(sd3q_session_last_error(s2), "[1, 0]"), "T5 in a 50-token session: %d %s", st,
                   sd3q_session_last_error(s2));
            sd3q_session_free(s2);
        }
        s2 = text_session(m, 78, 1);
        if (s2) {
            int32_t one = 1;
            float out[256];
            st = text_encode_t5(s2, &one, 1, out);  // a single token: the bias is table[bucket 0] for every head
            CHECKF(st == SD3Q_OK, "T5 on one token: %s", sd3q_session_last_error(s2));
            sd3q_session_free(s2);
        }
        sd3q_model_free(m);
    }
    // encoders only (no MMDiT) still make a session
    p = sd3q_model_default_params();
    p.clip_l_path = PIPE "/text_encoder";
    if (load(&p, &m, err, sizeof err, 0) == SD3Q_OK) {
        struct sd3q_session * s2 = text_session(m, 333, 0);
        if (s2) {
            float ctx[8], pooled[8];
            st = sd3q_session_encode_prompt(s2, PROMPT, 77, ctx, pooled);
            CHECKF(st == SD3Q_ERR_MISSING && strstr(sd3q_session_last_error(s2), "CLIP-G"), "CLIP-L only: %d %s", st,
                   sd3q_session_last_error(s2));
            sd3q_session_free(s2);
        }
        sd3q_model_free(m);
    }
}

int main(void) {
    check_buckets();
    struct sd3q_model_params p = sd3q_model_default_params();
    p.path = PIPE;
    run_layout("diffusers", &p);
    p.path = SINGLE;
    p.tokenizer_dir = PIPE;
    run_layout("single-f8", &p);
    check_no_t5();
    check_bad_inputs();
    return test_finish("test-text-golden");
}
