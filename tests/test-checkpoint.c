/*
 * test-checkpoint.c — checkpoint layouts (src/io/checkpoint.c), tensor validation (src/io/expect.c) and MMDiT
 * configuration (src/model/mmdit.c), on small checkpoints derived from tests/golden/mmdit/ with st_write into a
 * scratch folder.
 *
 *   layouts that must load AND still reproduce the golden `out` (rel. L2 ≤ 1e-5) after being rearranged:
 *     the f32 diffusers case re-sharded into 2 shards + index (as --model folder and as a --mmdit folder), the bf16
 *     dual-attention diffusers case re-sharded into 3 shards, the f16 single file given as a split --mmdit file with
 *     and without the `model.diffusion_model.` prefix, a split file overriding a folder's MMDiT, a single file
 *     with extra keys under allow_extra, a prefixed split file with an unprefixed key under allow_extra (rejected
 *     without it)
 *   hyper-parameters from sd3q_model_mmdit_info for all four golden cases (README's configuration; qk_norm and
 *     dual-attention detection; parameter count = sum of the file's element counts)
 *   rejections, each with the status and a message naming the file and the tensor or field: unknown keys (outside
 *     and inside the MMDiT prefix), missing tensors (all listed), a mis-shaped tensor (expected and actual shape),
 *     an integer weight, q/k/v parts of different dtypes, a tensor needed for inference missing, shard indexes that
 *     name a missing file / "../x" / a sub-folder / an absolute path / lie about which shard holds a tensor / are not
 *     JSON / have no weight_map, a tensor provided by two shards, a truncated shard, config.json fields that
 *     contradict the weights (every cross-checked field), qk_norm and dual_attention_layers mismatches.
 */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "io/fileutil.h"
#include "io/safetensors.h"
#include "model/session.h"
#include "testutil.h"

#define TOL 1e-5
#define GOLDEN SD3Q_SOURCE_DIR "/tests/golden/mmdit"
#define F16_DIR GOLDEN "/sd3_single_f16"
#define F32_DIR GOLDEN "/sd3_diffusers_f32_nonsquare"
#define L_DIR GOLDEN "/sd35l_bf16"
#define M_DIR GOLDEN "/sd35m_diffusers_bf16"
#define F16_FILE F16_DIR "/model.safetensors"
#define F32_FILE F32_DIR "/transformer/diffusion_pytorch_model.safetensors"
#define M_FILE M_DIR "/transformer/diffusion_pytorch_model.safetensors"
#define PREFIX "model.diffusion_model."

static char g_dir[1024];

static int rm_cb(const char * p, const struct stat * sb, int flag, struct FTW * ftw) { return remove(p); }
static void rm_rf(const char * p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static const char * tpath(const char * fmt, const char * a) {
    static char buf[16][1600];
    static int k;
    char * p = buf[k++ % 16];
    char rel[512];
    snprintf(rel, sizeof rel, fmt, a);
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, rel);
    return p;
}

static void mkdirs(const char * path) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char * c = tmp + 1; *c; c++)
        if (*c == '/') {
            *c = '\0';
            mkdir(tmp, 0755);
            *c = '/';
        }
    mkdir(tmp, 0755);
}

static void write_text(const char * path, const char * text) {
    struct sd3q_errbuf e;
    if (write_file_atomic(path, text, strlen(text), &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

// ---- tensor lists built from an opened golden file --------------------------------------------------------------------

#define TL_MAX 128
struct tlist {
    int               n;
    struct st_wtensor w[TL_MAX];
    char              name[TL_MAX][160];
    int64_t           shape[TL_MAX][8];
};

// Tensors of f whose names start with `strip` (removed) get `add` prepended.
static void tl_from(struct tlist * l, const struct st_file * f, const char * strip, const char * add) {
    memset(l, 0, sizeof *l);
    size_t sl = strlen(strip);
    for (int i = 0; i < f->n && l->n < TL_MAX; i++) {
        if (strncmp(f->t[i].name, strip, sl) != 0) continue;
        snprintf(l->name[l->n], sizeof l->name[0], "%s%s", add, f->t[i].name + sl);
        memcpy(l->shape[l->n], f->t[i].shape, sizeof l->shape[0]);
        l->w[l->n] = (struct st_wtensor){l->name[l->n], f->t[i].type, f->t[i].ndim, l->shape[l->n], f->t[i].data};
        l->n++;
    }
}

static int tl_find(const struct tlist * l, const char * name) {
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], name) == 0) return i;
    return -1;
}

static void tl_remove(struct tlist * l, const char * name) {
    int i = tl_find(l, name);
    if (i < 0) {
        fprintf(stderr, "test bug: no tensor %s\n", name);
        exit(1);
    }
    for (int k = i; k < l->n - 1; k++) {
        memcpy(l->name[k], l->name[k + 1], sizeof l->name[0]);
        memcpy(l->shape[k], l->shape[k + 1], sizeof l->shape[0]);
        l->w[k] = l->w[k + 1];
        l->w[k].name = l->name[k];
        l->w[k].shape = l->shape[k];
    }
    l->n--;
}

static void tl_add(struct tlist * l, const char * name, enum dtype t, int ndim, const int64_t * shape, const void * data) {
    int i = l->n++;
    snprintf(l->name[i], sizeof l->name[0], "%s", name);
    memset(l->shape[i], 0, sizeof l->shape[0]);
    memcpy(l->shape[i], shape, sizeof(int64_t) * (size_t)ndim);
    l->w[i] = (struct st_wtensor){l->name[i], t, ndim, l->shape[i], data};
}

static void tl_write(const struct tlist * l, int from, int to, const char * path) {
    struct sd3q_errbuf e;
    if (st_write(path, l->w + from, to - from, NULL, 0, &e) != SD3Q_OK) {
        fprintf(stderr, "st_write: %s\n", e.msg);
        exit(1);
    }
}

static void open_or_die(const char * path, struct st_file * f) {
    struct sd3q_errbuf e;
    if (st_open(path, f, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        exit(1);
    }
}

// ---- loading and forward checks ------------------------------------------------------------------------------------

static enum sd3q_status load(const char * path, const char * mmdit_path, int allow_extra, struct sd3q_model ** m, char * err) {
    struct sd3q_model_params p = sd3q_model_default_params();
    p.path        = path;
    p.mmdit_path  = mmdit_path;
    p.allow_extra = allow_extra;
    return sd3q_model_load(&p, m, err, 1024);
}

// Loads, checks the status and that the message contains each of s[] (the first is normally the file).
static void expect_load_fail(const char * label, const char * path, const char * mmdit_path, enum sd3q_status want, const char * s1,
                             const char * s2, const char * s3) {
    struct sd3q_model * m = (struct sd3q_model *)1;
    char err[1024];
    enum sd3q_status st = load(path, mmdit_path, 0, &m, err);
    int ok = st == want && m == NULL && (!s1 || strstr(err, s1)) && (!s2 || strstr(err, s2)) && (!s3 || strstr(err, s3));
    printf("%-34s %-20s %s\n    -> %s\n", label, sd3q_status_str(st), ok ? "OK" : "NOT OK", err);
    CHECKF(ok, "%s: status %d (want %d), message must contain '%s', '%s', '%s'", label, st, want, s1 ? s1 : "", s2 ? s2 : "",
           s3 ? s3 : "");
    if (st == SD3Q_OK) sd3q_model_free(m);
}

// Runs the forward pass of `m` on <case>/io.safetensors and compares `out` with the golden values.
static void check_forward(const struct sd3q_model * m, const char * case_dir, const char * label) {
    char iop[1100];
    snprintf(iop, sizeof iop, "%s/io.safetensors", case_dir);
    struct st_file io;
    open_or_die(iop, &io);
    struct sd3q_errbuf e;
    int64_t xs[4] = {-1, 16, -1, -1}, cs[3] = {-1, -1, -1}, ps[2] = {-1, -1}, ts[1] = {-1}, os[4] = {-1, 16, -1, -1};
    float * x = st_read_f32(&io, "x", 4, xs, &e), * ctx = st_read_f32(&io, "context", 3, cs, &e);
    float * pooled = st_read_f32(&io, "pooled", 2, ps, &e), * t = st_read_f32(&io, "timestep", 1, ts, &e);
    float * ref = st_read_f32(&io, "out", 4, os, &e);
    SD3Q_ASSERT(x && ctx && pooled && t && ref);
    int64_t n = os[0] * os[1] * os[2] * os[3];
    float * out = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) out[i] = NAN;
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = 2;
    sp.max_batch = (int)xs[0], sp.max_latent_h = (int)xs[2], sp.max_latent_w = (int)xs[3], sp.max_context = (int)cs[1];
    struct sd3q_session * s = NULL;
    char err[1024];
    enum sd3q_status st = sd3q_session_init(m, &sp, &s, err, sizeof err);
    CHECKF(st == SD3Q_OK, "%s: session: %s", label, err);
    if (st == SD3Q_OK) {
        st = sd3q_session_mmdit(s, (int)xs[0], (int)xs[2], (int)xs[3], x, (int)cs[1], ctx, pooled, t, out);
        CHECKF(st == SD3Q_OK, "%s: forward: %s", label, sd3q_session_last_error(s));
        char l2[256];
        snprintf(l2, sizeof l2, "%s: out", label);
        check_tensor(l2, out, ref, n, TOL);
    }
    sd3q_session_free(s);
    free(out), free(x), free(ctx), free(pooled), free(t), free(ref);
    st_close(&io);
}

static void load_and_check(const char * label, const char * path, const char * mmdit_path, int allow_extra, const char * case_dir) {
    struct sd3q_model * m = NULL;
    char err[1024];
    enum sd3q_status st = load(path, mmdit_path, allow_extra, &m, err);
    CHECKF(st == SD3Q_OK, "%s: load failed: %s", label, err);
    if (st != SD3Q_OK) return;
    CHECK(sd3q_model_has(m, SD3Q_COMP_MMDIT));
    check_forward(m, case_dir, label);
    sd3q_model_free(m);
}

// ---- hyper-parameters ------------------------------------------------------------------------------------------------

// Sum of the element counts of the tensors of `file` that start with `prefix`.
static int64_t file_params(const char * file, const char * prefix) {
    struct st_file f;
    open_or_die(file, &f);
    int64_t s = 0;
    for (int i = 0; i < f.n; i++)
        if (strncmp(f.t[i].name, prefix, strlen(prefix)) == 0) s += f.t[i].numel;
    st_close(&f);
    return s;
}

static void test_info(void) {
    printf("== hyper-parameters (tests/golden/README.md: D 128, 2 heads × 64, depth 2, patch 2, 16 ch, grid 12, "
           "context 48, pooled 40, MLP 512)\n");
    struct { const char * path, * file, * prefix; int qk, n_dual, mask, sample; } cases[] = {
        {F16_FILE, F16_FILE, PREFIX, 0, 0, 0, 0},
        {F32_DIR, F32_FILE, "", 0, 0, 0, 8},
        {L_DIR "/model.safetensors", L_DIR "/model.safetensors", PREFIX, 1, 0, 0, 0},
        {M_DIR, M_FILE, "", 1, 1, 1, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sd3q_model * m;
        char err[1024];
        enum sd3q_status st = load(cases[i].path, NULL, 0, &m, err);
        CHECKF(st == SD3Q_OK, "%s: %s", cases[i].path, err);
        if (st != SD3Q_OK) continue;
        struct sd3q_mmdit_info in;
        memset(&in, 0xff, sizeof in);
        CHECK(sd3q_model_mmdit_info(m, &in) == SD3Q_OK);
        int64_t np = file_params(cases[i].file, cases[i].prefix);
        int ok = in.depth == 2 && in.hidden == 128 && in.heads == 2 && in.head_dim == 64 && in.patch == 2 && in.in_channels == 16 &&
                 in.out_channels == 16 && in.pos_grid == 12 && in.context_dim == 48 && in.pooled_dim == 40 && in.mlp_hidden == 512 &&
                 in.qk_norm == cases[i].qk && in.n_dual == cases[i].n_dual && in.dual_mask_lo == cases[i].mask && in.dual_mask_hi == 0 &&
                 in.sample_size == cases[i].sample && in.n_params == np;
        printf("%-70s depth %d D %d heads %d×%d patch %d ch %d→%d grid %d ctx %d pooled %d mlp %d qk %d dual %d (mask %x) sample %d "
               "params %lld (file %lld) %s\n",
               strrchr(cases[i].path, '/') ? strstr(cases[i].path, "golden/") : cases[i].path, in.depth, in.hidden, in.heads, in.head_dim,
               in.patch, in.in_channels, in.out_channels, in.pos_grid, in.context_dim, in.pooled_dim, in.mlp_hidden, in.qk_norm, in.n_dual,
               in.dual_mask_lo, in.sample_size, (long long)in.n_params, (long long)np, ok ? "OK" : "NOT OK");
        CHECKF(ok, "%s: hyper-parameters differ from the fixture's configuration", cases[i].path);
        CHECK(sd3q_model_has(m, SD3Q_COMP_MMDIT) && !sd3q_model_has(m, SD3Q_COMP_VAE) && !sd3q_model_has(m, SD3Q_COMP_T5) &&
              !sd3q_model_has(m, SD3Q_COMP_CLIP_L) && !sd3q_model_has(m, SD3Q_COMP_CLIP_G));
        // describe: snprintf contract and content
        size_t need = sd3q_model_describe(m, 1, NULL, 0);
        char * buf = malloc(need + 1);
        CHECK(sd3q_model_describe(m, 1, buf, need + 1) == need && strlen(buf) == need);
        CHECK(strstr(buf, "depth 2, hidden 128, heads 2×64") && strstr(buf, "VAE     absent"));
        CHECK(strstr(buf, cases[i].qk ? "qk-norm rms" : "qk-norm none"));
        char small[16];
        CHECK(sd3q_model_describe(m, 0, small, sizeof small) < need && strlen(small) == sizeof small - 1);
        free(buf);
        sd3q_model_free(m);
    }
    struct sd3q_mmdit_info in;
    CHECK(sd3q_model_mmdit_info(NULL, &in) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_has(NULL, SD3Q_COMP_MMDIT) == 0);
    CHECK(sd3q_model_describe(NULL, 0, NULL, 0) == 0);
    sd3q_model_free(NULL);
}

// ---- layouts that must reproduce the golden outputs ----------------------------------------------------------------------

static void test_layouts(void) {
    printf("== rearranged layouts reproduce the golden outputs\n");
    struct st_file f16, f32, fm;
    open_or_die(F16_FILE, &f16);
    open_or_die(F32_FILE, &f32);
    open_or_die(M_FILE, &fm);
    static struct tlist l;

    // split file with the single-file prefix (the golden file itself) and without it
    load_and_check("split --mmdit, prefixed", NULL, F16_FILE, 0, F16_DIR);
    tl_from(&l, &f16, PREFIX, "");
    const char * stripped = tpath("split-stripped.safetensors", NULL);
    tl_write(&l, 0, l.n, stripped);
    load_and_check("split --mmdit, prefix stripped", NULL, stripped, 0, F16_DIR);
    // a prefixed split file with a key outside the prefix: named as unknown, not dropped silently
    tl_from(&l, &f16, "", "");
    static const float stray_v[2] = {1, 2};
    static const int64_t stray_s[1] = {2};
    tl_add(&l, "stray.weight", DT_F32, 1, stray_s, stray_v);
    const char * stray = tpath("split-stray.safetensors", NULL);
    tl_write(&l, 0, l.n, stray);
    expect_load_fail("split --mmdit, unprefixed stray key", NULL, stray, SD3Q_ERR_FORMAT, stray, "stray.weight", "--allow-extra");
    load_and_check("split --mmdit, stray key allowed", NULL, stray, 1, F16_DIR);

    // re-shard the f32 diffusers case: 2 shards, interleaved, with an index, config.json copied
    const char * sh_root = tpath("sharded-f32", NULL);
    const char * sh_tr = tpath("sharded-f32/transformer", NULL);
    mkdirs(sh_tr);
    tl_from(&l, &f32, "", "");
    static struct tlist a, b;
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    for (int i = 0; i < l.n; i++) tl_add(i % 2 ? &b : &a, l.name[i], l.w[i].type, l.w[i].ndim, l.shape[i], l.w[i].data);
    tl_write(&a, 0, a.n, tpath("sharded-f32/transformer/diffusion_pytorch_model-00001-of-00002.safetensors", NULL));
    tl_write(&b, 0, b.n, tpath("sharded-f32/transformer/diffusion_pytorch_model-00002-of-00002.safetensors", NULL));
    cJSON * idx = cJSON_CreateObject();
    cJSON_AddItemToObject(cJSON_AddObjectToObject(idx, "metadata"), "total_size", cJSON_CreateNumber(4.4e6));
    cJSON * wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int i = 0; i < a.n; i++) cJSON_AddStringToObject(wm, a.name[i], "diffusion_pytorch_model-00001-of-00002.safetensors");
    for (int i = 0; i < b.n; i++) cJSON_AddStringToObject(wm, b.name[i], "diffusion_pytorch_model-00002-of-00002.safetensors");
    char * js = cJSON_Print(idx);
    write_text(tpath("sharded-f32/transformer/diffusion_pytorch_model.safetensors.index.json", NULL), js);
    free(js);
    char * cfg;
    size_t cn;
    struct sd3q_errbuf e;
    CHECK(read_file(F32_DIR "/transformer/config.json", 1 << 20, &cfg, &cn, &e) == SD3Q_OK);
    write_text(tpath("sharded-f32/transformer/config.json", NULL), cfg);
    load_and_check("diffusers folder, 2 shards", sh_root, NULL, 0, F32_DIR);
    load_and_check("--mmdit = sharded transformer/", NULL, sh_tr, 0, F32_DIR);
    {
        struct sd3q_model * m;
        char err[1024];
        if (load(sh_root, NULL, 0, &m, err) == SD3Q_OK) {
            struct sd3q_mmdit_info in;
            CHECK(sd3q_model_mmdit_info(m, &in) == SD3Q_OK && in.sample_size == 8 && in.depth == 2);
            char d[4096];
            sd3q_model_describe(m, 0, d, sizeof d);
            CHECKF(strstr(d, "sharded") && strstr(d, "naming diffusers"), "describe: %s", d);
            sd3q_model_free(m);
        }
    }

    // the dual-attention bf16 case in 3 shards (q/k/v of one attention spread over different shards)
    const char * m_root = tpath("sharded-m", NULL);
    mkdirs(tpath("sharded-m/transformer", NULL));
    tl_from(&l, &fm, "", "");
    static struct tlist s3[3];
    for (int k = 0; k < 3; k++) memset(&s3[k], 0, sizeof s3[k]);
    cJSON_Delete(idx);
    idx = cJSON_CreateObject();
    wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int i = 0; i < l.n; i++) {
        int k = i % 3;
        tl_add(&s3[k], l.name[i], l.w[i].type, l.w[i].ndim, l.shape[i], l.w[i].data);
        char sn[64];
        snprintf(sn, sizeof sn, "part-%d.safetensors", k);
        cJSON_AddStringToObject(wm, l.name[i], sn);
    }
    for (int k = 0; k < 3; k++) {
        char sn[64];
        snprintf(sn, sizeof sn, "sharded-m/transformer/part-%d.safetensors", k);
        tl_write(&s3[k], 0, s3[k].n, tpath("%s", sn));
    }
    js = cJSON_Print(idx);
    write_text(tpath("sharded-m/transformer/diffusion_pytorch_model.safetensors.index.json", NULL), js);
    free(js);
    char * mcfg;
    CHECK(read_file(M_DIR "/transformer/config.json", 1 << 20, &mcfg, &cn, &e) == SD3Q_OK);
    write_text(tpath("sharded-m/transformer/config.json", NULL), mcfg);
    load_and_check("dual-attention bf16, 3 shards", m_root, NULL, 0, M_DIR);

    // a split --mmdit overrides the MMDiT of a --model folder (f16 weights must be the ones used)
    load_and_check("--model folder + --mmdit file", sh_root, F16_FILE, 0, F16_DIR);

    // single file with an extra non-SD3 key: rejected by default, accepted (and still correct) with allow_extra
    tl_from(&l, &f16, "", "");
    float junk[3] = {1, 2, 3};
    int64_t js3[1] = {3};
    tl_add(&l, "optimizer.step_count", DT_F32, 1, js3, junk);
    const char * extra = tpath("single-extra.safetensors", NULL);
    tl_write(&l, 0, l.n, extra);
    expect_load_fail("single file + unknown key", extra, NULL, SD3Q_ERR_FORMAT, extra, "'optimizer.step_count'", "allow-extra");
    load_and_check("same with allow_extra", extra, NULL, 1, F16_DIR);
    // an unknown key inside the MMDiT prefix
    tl_from(&l, &f16, "", "");
    tl_add(&l, PREFIX "joint_blocks.0.x_block.attn.extra_scale", DT_F32, 1, js3, junk);
    const char * extra2 = tpath("single-extra2.safetensors", NULL);
    tl_write(&l, 0, l.n, extra2);
    expect_load_fail("unknown key inside the MMDiT", extra2, NULL, SD3Q_ERR_FORMAT, extra2, "'joint_blocks.0.x_block.attn.extra_scale'",
                     NULL);
    load_and_check("same with allow_extra", extra2, NULL, 1, F16_DIR);

    cJSON_Delete(idx);
    free(cfg);
    free(mcfg);
    st_close(&f16);
    st_close(&f32);
    st_close(&fm);
}

// ---- rejected checkpoints --------------------------------------------------------------------------------------------------

static void test_bad_single(void) {
    printf("== rejected single files\n");
    struct st_file f16;
    open_or_die(F16_FILE, &f16);
    static struct tlist l;

    tl_from(&l, &f16, "", "");
    tl_remove(&l, PREFIX "joint_blocks.0.x_block.attn.proj.bias");
    tl_remove(&l, PREFIX "joint_blocks.1.x_block.mlp.fc2.weight");
    tl_remove(&l, PREFIX "final_layer.adaLN_modulation.1.bias");
    const char * p = tpath("missing3.safetensors", NULL);
    tl_write(&l, 0, l.n, p);
    expect_load_fail("3 tensors missing", p, NULL, SD3Q_ERR_MISSING, "'joint_blocks.0.x_block.attn.proj.bias'",
                     "'joint_blocks.1.x_block.mlp.fc2.weight'", "'final_layer.adaLN_modulation.1.bias'");
    expect_load_fail("  (names the file)", p, NULL, SD3Q_ERR_MISSING, p, "3 tensor(s) missing", NULL);

    tl_from(&l, &f16, "", "");
    tl_remove(&l, PREFIX "context_embedder.weight");
    p = tpath("missing-ctx.safetensors", NULL);
    tl_write(&l, 0, l.n, p);
    expect_load_fail("tensor needed for inference missing", p, NULL, SD3Q_ERR_MISSING, p, "'context_embedder.weight'", NULL);

    // a mis-shaped tensor: attn.proj.weight [128, 127] instead of [128, 128]
    static uint16_t buf16[128 * 200];
    tl_from(&l, &f16, "", "");
    tl_remove(&l, PREFIX "joint_blocks.0.x_block.attn.proj.weight");
    int64_t bad_shape[2] = {128, 127};
    tl_add(&l, PREFIX "joint_blocks.0.x_block.attn.proj.weight", DT_F16, 2, bad_shape, buf16);
    p = tpath("misshaped.safetensors", NULL);
    tl_write(&l, 0, l.n, p);
    expect_load_fail("mis-shaped tensor", p, NULL, SD3Q_ERR_SHAPE, "'joint_blocks.0.x_block.attn.proj.weight'", "[128, 127]", "expected [128, 128]");
    // wrong rank
    tl_from(&l, &f16, "", "");
    tl_remove(&l, PREFIX "joint_blocks.1.x_block.mlp.fc1.bias");
    int64_t rank2[2] = {512, 1};
    tl_add(&l, PREFIX "joint_blocks.1.x_block.mlp.fc1.bias", DT_F16, 2, rank2, buf16);
    p = tpath("rank.safetensors", NULL);
    tl_write(&l, 0, l.n, p);
    expect_load_fail("wrong rank", p, NULL, SD3Q_ERR_SHAPE, "'joint_blocks.1.x_block.mlp.fc1.bias'", "[512, 1]", "expected [512]");

    // an integer weight
    static int32_t i32[128];
    tl_from(&l, &f16, "", "");
    tl_remove(&l, PREFIX "joint_blocks.0.context_block.attn.proj.bias");
    int64_t s128[1] = {128};
    tl_add(&l, PREFIX "joint_blocks.0.context_block.attn.proj.bias", DT_I32, 1, s128, i32);
    p = tpath("int-weight.safetensors", NULL);
    tl_write(&l, 0, l.n, p);
    expect_load_fail("integer-dtype weight", p, NULL, SD3Q_ERR_UNSUPPORTED, "'joint_blocks.0.context_block.attn.proj.bias'", "I32", p);

    // a file with no SD3 keys; a path that does not exist; nothing at all; NULL arguments
    float one = 1;
    struct st_wtensor w = {"encoder.layer.0.weight", DT_F32, 0, NULL, &one};
    struct sd3q_errbuf e;
    p = tpath("not-sd3.safetensors", NULL);
    CHECK(st_write(p, &w, 1, NULL, 0, &e) == SD3Q_OK);
    expect_load_fail("no SD3 keys", p, NULL, SD3Q_ERR_MISSING, p, "no SD3 components", NULL);
    p = tpath("nope/none.safetensors", NULL);
    expect_load_fail("missing path", p, NULL, SD3Q_ERR_MISSING, p, NULL, NULL);
    expect_load_fail("missing --mmdit file", NULL, p, SD3Q_ERR_MISSING, p, NULL, NULL);
    expect_load_fail("no paths at all", NULL, NULL, SD3Q_ERR_MISSING, "no SD3 components", NULL, NULL);
    // a truncated copy of a real file (the reader's message travels up unchanged)
    char * whole;
    size_t wn;
    CHECK(read_file(F16_FILE, 1 << 24, &whole, &wn, &e) == SD3Q_OK);
    p = tpath("truncated.safetensors", NULL);
    CHECK(write_file_atomic(p, whole, wn - 1000, &e) == SD3Q_OK);
    expect_load_fail("truncated single file", p, NULL, SD3Q_ERR_FORMAT, p, "truncated", NULL);
    free(whole);

    struct sd3q_model * m = (struct sd3q_model *)1;
    char err[64];
    CHECK(sd3q_model_load(NULL, &m, err, sizeof err) == SD3Q_ERR_INVALID_ARG && m == NULL && err[0]);
    struct sd3q_model_params mp = sd3q_model_default_params();
    CHECK(mp.path == NULL && mp.mmdit_path == NULL && mp.allow_extra == 0);
    mp.path = F16_FILE;
    CHECK(sd3q_model_load(&mp, NULL, err, sizeof err) == SD3Q_ERR_INVALID_ARG);
    CHECK(sd3q_model_load(&mp, &m, NULL, 0) == SD3Q_OK && m);  // a NULL error buffer is allowed
    sd3q_model_free(m);
    st_close(&f16);
}

// Writes a diffusers folder <name>/transformer/{weights, config.json} whose weights are a copy of `weights` and whose
// config is `cfg_json` (copied from the golden config and edited by the caller).
static const char * make_folder(const char * name, const char * weights, const char * cfg_json) {
    const char * root = tpath("%s", name);
    char tr[1200], wp[1300], cp[1300];
    snprintf(tr, sizeof tr, "%s/transformer", root);
    mkdirs(tr);
    snprintf(wp, sizeof wp, "%s/diffusion_pytorch_model.safetensors", tr);
    snprintf(cp, sizeof cp, "%s/config.json", tr);
    unlink(wp);
    if (symlink(weights, wp) != 0) {
        fprintf(stderr, "symlink %s: %s\n", wp, strerror(errno));
        exit(1);
    }
    write_text(cp, cfg_json);
    return root;
}

// The golden config of `dir` with one field replaced by `value_json` (NULL: removed).
static char * edited_config(const char * dir, const char * field, const char * value_json) {
    char path[1100], * text;
    size_t n;
    struct sd3q_errbuf e;
    snprintf(path, sizeof path, "%s/transformer/config.json", dir);
    if (read_file(path, 1 << 20, &text, &n, &e) != SD3Q_OK) exit(1);
    cJSON * j = cJSON_Parse(text);
    free(text);
    cJSON_DeleteItemFromObjectCaseSensitive(j, field);
    if (value_json) cJSON_AddItemToObject(j, field, cJSON_Parse(value_json));
    char * out = cJSON_Print(j);
    cJSON_Delete(j);
    return out;
}

static void test_bad_config(void) {
    printf("== config.json contradicting the weights\n");
    struct { const char * field, * value, * msg; enum sd3q_status st; } f32c[] = {
        {"num_layers", "3", "num_layers is 3 but the weights say 2", SD3Q_ERR_SHAPE},
        {"num_attention_heads", "3", "num_attention_heads × attention_head_dim is 192 but the weights say 128", SD3Q_ERR_SHAPE},
        {"attention_head_dim", "32", "num_attention_heads × attention_head_dim is 64", SD3Q_ERR_SHAPE},
        {"joint_attention_dim", "4096", "joint_attention_dim is 4096 but the weights say 48", SD3Q_ERR_SHAPE},
        {"pooled_projection_dim", "2048", "pooled_projection_dim is 2048 but the weights say 40", SD3Q_ERR_SHAPE},
        {"in_channels", "4", "in_channels is 4 but the weights say 16", SD3Q_ERR_SHAPE},
        {"out_channels", "8", "out_channels is 8 but the weights say 16", SD3Q_ERR_SHAPE},
        {"patch_size", "4", "patch_size is 4 but the weights say 2", SD3Q_ERR_SHAPE},
        {"pos_embed_max_size", "192", "pos_embed_max_size is 192 but the weights say 12", SD3Q_ERR_SHAPE},
        {"num_layers", "\"2\"", "\"num_layers\"", SD3Q_ERR_FORMAT},
        {"num_layers", "2.5", "\"num_layers\"", SD3Q_ERR_FORMAT},
        {"sample_size", "-8", "\"sample_size\"", SD3Q_ERR_FORMAT},
        {"qk_norm", "\"rms_norm\"", "qk_norm is rms_norm but the weights have no attn.norm_q", SD3Q_ERR_MISSING},
        {"qk_norm", "\"layer_norm\"", "qk_norm \"layer_norm\" is not supported", SD3Q_ERR_UNSUPPORTED},
        {"dual_attention_layers", "[0]", "dual_attention_layers lists 0", SD3Q_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof f32c / sizeof f32c[0]; i++) {
        char * cfg = edited_config(F32_DIR, f32c[i].field, f32c[i].value);
        char name[64];
        snprintf(name, sizeof name, "cfg-f32-%zu", i);
        const char * root = make_folder(name, F32_FILE, cfg);
        char label[128], cpath[1300];
        snprintf(label, sizeof label, "%s = %s", f32c[i].field, f32c[i].value);
        snprintf(cpath, sizeof cpath, "%s/transformer/config.json", root);
        expect_load_fail(label, root, NULL, f32c[i].st, cpath, f32c[i].msg, NULL);
        free(cfg);
    }
    // absent fields fall back to the inferred values; sample_size is taken from the config
    char * cfg = edited_config(F32_DIR, "num_layers", NULL);
    const char * root = make_folder("cfg-f32-nolayers", F32_FILE, cfg);
    free(cfg);
    cfg = edited_config(F32_DIR, "sample_size", "24");
    const char * root2 = make_folder("cfg-f32-sample", F32_FILE, cfg);
    free(cfg);
    struct sd3q_model * m;
    char err[1024];
    CHECKF(load(root, NULL, 0, &m, err) == SD3Q_OK, "config without num_layers: %s", err);
    sd3q_model_free(m);
    if (load(root2, NULL, 0, &m, err) == SD3Q_OK) {
        struct sd3q_mmdit_info in;
        CHECK(sd3q_model_mmdit_info(m, &in) == SD3Q_OK && in.sample_size == 24);
        sd3q_model_free(m);
    } else {
        CHECKF(0, "sample_size 24: %s", err);
    }
    // not JSON at all
    root = make_folder("cfg-notjson", F32_FILE, "{\"num_layers\": 2,");
    char cpath[1300];
    snprintf(cpath, sizeof cpath, "%s/transformer/config.json", root);
    expect_load_fail("config.json not JSON", root, NULL, SD3Q_ERR_FORMAT, cpath, "invalid JSON", NULL);

    // the qk-norm / dual-attention case
    struct { const char * field, * value, * msg; enum sd3q_status st; } mc[] = {
        {"qk_norm", "null", "qk_norm is null but the weights have attn.norm_q", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[1]", "dual_attention_layers lists 1", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[]", "dual_attention_layers lists 0 blocks but 1 have attn2", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[0, 7]", "dual_attention_layers lists 7", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[0.5]", "dual_attention_layers", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[1e300]", "dual_attention_layers", SD3Q_ERR_FORMAT},
        {"dual_attention_layers", "[\"0\"]", "dual_attention_layers", SD3Q_ERR_FORMAT},
        {"num_layers", "1", "num_layers is 1 but the weights say 2", SD3Q_ERR_SHAPE},
    };
    for (size_t i = 0; i < sizeof mc / sizeof mc[0]; i++) {
        cfg = edited_config(M_DIR, mc[i].field, mc[i].value);
        char name[64], label[128];
        snprintf(name, sizeof name, "cfg-m-%zu", i);
        root = make_folder(name, M_FILE, cfg);
        snprintf(label, sizeof label, "(dual) %s = %s", mc[i].field, mc[i].value);
        snprintf(cpath, sizeof cpath, "%s/transformer/config.json", root);
        expect_load_fail(label, root, NULL, mc[i].st, cpath, mc[i].msg, NULL);
        free(cfg);
    }
}

// scheduler/scheduler_config.json: its shift becomes the model's default; what sd3q cannot sample as diffusers would is
// rejected, naming the file and the field.
static void test_scheduler(void) {
    printf("== scheduler config\n");
    char * cfg = edited_config(F32_DIR, "num_layers", "2");
    const char * root = make_folder("sched", F32_FILE, cfg);
    free(cfg);
    char dir[1300], path[1400], err[1024];
    snprintf(dir, sizeof dir, "%s/scheduler", root);
    snprintf(path, sizeof path, "%s/scheduler_config.json", dir);
    struct sd3q_model * m;
    if (load(root, NULL, 0, &m, err) == SD3Q_OK) {  // no scheduler folder: SD3's shift
        CHECKF(sd3q_model_shift(m) == (float)SD3Q_DEFAULT_SHIFT, "no scheduler config: shift %g", sd3q_model_shift(m));
        sd3q_model_free(m);
    } else {
        CHECKF(0, "folder without a scheduler: %s", err);
    }
    mkdirs(dir);
    write_text(path, "{\"_class_name\": \"FlowMatchEulerDiscreteScheduler\", \"shift\": 2.5, \"use_dynamic_shifting\": false}");
    if (load(root, NULL, 0, &m, err) == SD3Q_OK) {
        char d[8192];
        sd3q_model_describe(m, 0, d, sizeof d);
        CHECKF(sd3q_model_shift(m) == 2.5f && strstr(d, "scheduler shift 2.5"), "shift %g, describe: %s", sd3q_model_shift(m), d);
        sd3q_model_free(m);
    } else {
        CHECKF(0, "scheduler shift 2.5: %s", err);
    }
    write_text(path, "{\"num_train_timesteps\": 1000}");  // no shift field: FlowMatchEulerDiscreteScheduler's default
    if (load(root, NULL, 0, &m, err) == SD3Q_OK) {
        CHECKF(sd3q_model_shift(m) == 1.0f, "config without shift: %g (diffusers: 1.0)", sd3q_model_shift(m));
        sd3q_model_free(m);
    } else {
        CHECKF(0, "config without shift: %s", err);
    }
    struct { const char * json, * msg; enum sd3q_status st; } bad[] = {
        {"{\"shift\": \"3\"}", "field \"shift\" must be a finite number", SD3Q_ERR_FORMAT},
        {"{\"shift\": -1}", "field \"shift\" is -1; expected 0.01 to 100", SD3Q_ERR_FORMAT},
        {"{\"shift\": 0}", "field \"shift\" is 0", SD3Q_ERR_FORMAT},
        {"{\"shift\": 1e300}", "field \"shift\" is 1e+300", SD3Q_ERR_FORMAT},
        {"{\"shift\": 3.0, \"use_dynamic_shifting\": true}", "use_dynamic_shifting is true", SD3Q_ERR_UNSUPPORTED},
        {"{\"_class_name\": \"FlowMatchHeunDiscreteScheduler\"}", "only FlowMatchEulerDiscreteScheduler", SD3Q_ERR_UNSUPPORTED},
        {"[3.0]", "expected a JSON object", SD3Q_ERR_FORMAT},
        {"{\"shift\": 3.0,", "invalid JSON", SD3Q_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i].json);
        char label[128];
        snprintf(label, sizeof label, "scheduler %s", bad[i].json);
        expect_load_fail(label, root, NULL, bad[i].st, path, bad[i].msg, NULL);
    }
}

static void test_bad_shards(void) {
    printf("== rejected shard indexes\n");
    struct st_file f32;
    open_or_die(F32_FILE, &f32);
    static struct tlist l, a, b;
    tl_from(&l, &f32, "", "");
    memset(&a, 0, sizeof a), memset(&b, 0, sizeof b);
    for (int i = 0; i < l.n; i++) tl_add(i < l.n / 2 ? &a : &b, l.name[i], l.w[i].type, l.w[i].ndim, l.shape[i], l.w[i].data);
    const char * dir = tpath("shards", NULL);
    mkdirs(dir);
    const char * s1 = tpath("shards/s1.safetensors", NULL), * s2 = tpath("shards/s2.safetensors", NULL);
    tl_write(&a, 0, a.n, s1);
    tl_write(&b, 0, b.n, s2);
    const char * index = tpath("shards/diffusion_pytorch_model.safetensors.index.json", NULL);

    // builds an index: every tensor of a → s1, of b → s2, then one entry overridden (name → shard)
    struct { const char * label, * name, * shard, * raw; enum sd3q_status st; const char * m1, * m2; } cases[] = {
        {"index naming a missing shard", "proj_out.bias", "s3.safetensors", NULL, SD3Q_ERR_MISSING, "s3.safetensors", NULL},
        {"index with ../ shard", "proj_out.bias", "../s2.safetensors", NULL, SD3Q_ERR_FORMAT, "'proj_out.bias'", "same folder"},
        {"index with a sub-folder shard", "proj_out.bias", "sub/s2.safetensors", NULL, SD3Q_ERR_FORMAT, "'proj_out.bias'", NULL},
        {"index with an absolute shard", "proj_out.bias", "/etc/passwd", NULL, SD3Q_ERR_FORMAT, "'proj_out.bias'", NULL},
        {"index with \"..\"", "proj_out.bias", "..", NULL, SD3Q_ERR_FORMAT, "'proj_out.bias'", NULL},
        {"index with an empty shard name", "proj_out.bias", "", NULL, SD3Q_ERR_FORMAT, "'proj_out.bias'", NULL},
        {"index that lies about a shard", NULL, NULL, NULL, SD3Q_ERR_MISSING, "weight_map says", "s1.safetensors"},
        {"index without weight_map", NULL, NULL, "{\"metadata\": {}}", SD3Q_ERR_FORMAT, "weight_map", NULL},
        {"index whose weight_map is a list", NULL, NULL, "{\"weight_map\": [\"s1.safetensors\"]}", SD3Q_ERR_FORMAT, "weight_map", NULL},
        {"index not JSON", NULL, NULL, "{\"weight_map\": {", SD3Q_ERR_FORMAT, "invalid JSON", NULL},
        {"index entry not a string", NULL, NULL, "{\"weight_map\": {\"proj_out.bias\": 3}}", SD3Q_ERR_FORMAT, "'proj_out.bias'", NULL},
    };
    const char * lie_name = b.name[0];  // lives in s2
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char * js;
        if (cases[i].raw) {
            js = strdup(cases[i].raw);
        } else {
            cJSON * idx = cJSON_CreateObject();
            cJSON * wm = cJSON_AddObjectToObject(idx, "weight_map");
            for (int k = 0; k < l.n; k++) {
                const char * shard = k < l.n / 2 ? "s1.safetensors" : "s2.safetensors";
                if (cases[i].name && strcmp(l.name[k], cases[i].name) == 0) shard = cases[i].shard;
                if (!cases[i].name && strcmp(l.name[k], lie_name) == 0) shard = "s1.safetensors";
                cJSON_AddStringToObject(wm, l.name[k], shard);
            }
            js = cJSON_Print(idx);
            cJSON_Delete(idx);
        }
        write_text(index, js);
        free(js);
        expect_load_fail(cases[i].label, NULL, dir, cases[i].st, cases[i].m1, cases[i].m2, cases[i].raw || !cases[i].name ? index : NULL);
        if (!cases[i].name && !cases[i].raw) {  // the liar's message also names the tensor it lied about
            struct sd3q_model * m;
            char err[1024];
            load(NULL, dir, 0, &m, err);
            CHECKF(strstr(err, lie_name) != NULL, "lying index message does not name '%s': %s", lie_name, err);
        }
    }
    // a tensor provided by both shards
    static struct tlist dup;
    memset(&dup, 0, sizeof dup);
    for (int i = 0; i < b.n; i++) tl_add(&dup, b.name[i], b.w[i].type, b.w[i].ndim, b.shape[i], b.w[i].data);
    tl_add(&dup, a.name[0], a.w[0].type, a.w[0].ndim, a.shape[0], a.w[0].data);
    tl_write(&dup, 0, dup.n, s2);
    cJSON * idx = cJSON_CreateObject();
    cJSON * wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int k = 0; k < l.n; k++) cJSON_AddStringToObject(wm, l.name[k], k < l.n / 2 ? "s1.safetensors" : "s2.safetensors");
    char * js = cJSON_Print(idx);
    write_text(index, js);
    expect_load_fail("tensor in two shards", NULL, dir, SD3Q_ERR_FORMAT, a.name[0], "provided twice", index);
    // a truncated shard: the reader's error names the shard
    tl_write(&b, 0, b.n, s2);
    char * whole;
    size_t wn;
    struct sd3q_errbuf e;
    CHECK(read_file(s2, 1 << 24, &whole, &wn, &e) == SD3Q_OK);
    CHECK(write_file_atomic(s2, whole, wn / 2, &e) == SD3Q_OK);
    free(whole);
    expect_load_fail("truncated shard", NULL, dir, SD3Q_ERR_FORMAT, s2, "past the end", NULL);
    tl_write(&b, 0, b.n, s2);
    // restored: the same folder loads
    struct sd3q_model * m;
    char err[1024];
    CHECKF(load(NULL, dir, 0, &m, err) == SD3Q_OK, "restored shards: %s", err);
    sd3q_model_free(m);
    // neither the single file nor an index
    unlink(index);
    expect_load_fail("folder without weights", NULL, dir, SD3Q_ERR_MISSING, dir, "neither", NULL);
    free(js);
    cJSON_Delete(idx);

    // q/k/v parts of different dtypes (to_k converted to F16)
    static struct tlist mix;
    tl_from(&mix, &f32, "", "");
    int k = tl_find(&mix, "transformer_blocks.0.attn.to_k.weight");
    static uint16_t kh[128 * 128];
    const float * kf = (const float *)mix.w[k].data;
    for (int i = 0; i < 128 * 128; i++) {
        float v;
        memcpy(&v, kf + i, 4);
        kh[i] = f32_to_f16(v);
    }
    mix.w[k].type = DT_F16;
    mix.w[k].data = kh;
    const char * mp = tpath("mixed.safetensors", NULL);
    tl_write(&mix, 0, mix.n, mp);
    expect_load_fail("q/k/v parts of different dtypes", NULL, mp, SD3Q_ERR_UNSUPPORTED, "transformer_blocks.0.attn.to_k.weight",
                     "must share a dtype", mp);
    st_close(&f32);
}

int main(void) {
    const char * base = getenv("SD3Q_TEST_TMP");
    if (!base || !base[0]) base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    mkdir(base, 0755);
    snprintf(g_dir, sizeof g_dir, "%s/sd3q-ckpt-XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    printf("scratch folder %s\n", g_dir);
    test_info();
    test_layouts();
    test_bad_single();
    test_bad_config();
    test_scheduler();
    test_bad_shards();
    rm_rf(g_dir);
    return test_finish("test-checkpoint");
}
