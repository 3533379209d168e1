/*
 * bench-t5.c — SD3's text encoders at full size on the CPU: a T5-XXL encode of 256 tokens (4096 wide, 24 blocks,
 * 64 heads, d_ff 10240, 32128 embedding rows: 4.76 B parameters) and a CLIP-G encode of 77 tokens (1280 wide,
 * 32 layers), with random weights written once to safetensors files under /tmp (F16; with --f8 also a T5 whose
 * Linear weights are F8_E4M3, like sd3_medium_incl_clips_t5xxlfp8) and memory-mapped by the normal loader.
 *
 * Reports per (encoder, dtype, threads): seconds per encode and GFLOP/s, and the memory that shows the weights are not
 * copied: RssAnon (our allocations: arena, backend scratch, staging) against RssFile (pages of the mapped file) after
 * each pass, VmHWM (peak RSS), and RssFile after sd3q_model_release_pages. A float32 copy of T5-XXL would be 19 GB of
 * RssAnon.
 *
 * Usage: bench-t5 [--dir /tmp] [--threads 1,2] [--tokens 256] [--f8] [--skip-t5] [--skip-clip] [--reps 1]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "io/fileutil.h"
#include "model/clip.h"
#include "model/session.h"
#include "model/t5.h"
#include "model/text.h"
#include "sd3q.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// CPU seconds of the whole process (all threads): a contention-robust cost next to the wall time.
static double cpu_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Reads a "Name:   123 kB" field of /proc/self/status in MiB (-1 if unavailable).
static double proc_mib(const char * field) {
    FILE * f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = atof(line + fl + 1) / 1024.0;
            break;
        }
    fclose(f);
    return v;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

// xorshift64*: fast, fine for benchmark weights.
static uint64_t rnd_u64(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

// Uniform in [-1, 1).
static float rnd(void) { return (float)((rnd_u64() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; }

// ---- a streaming safetensors writer (the T5 file is 9.5 GB: never held in memory) ---------------------------------

#define POOL (1 << 24)  // random values per pool; tensors are filled from random offsets of a pool

struct wtensor {
    char       name[160];
    enum dtype type;
    int        ndim;
    int64_t    shape[2];
    int        pool;  // 0 embedding (±1), 1 Linear with fan-in D, 2 Linear with fan-in F, 3 ones (norms)
};

struct wfile {
    struct wtensor t[1024];
    int            n;
};

static void add(struct wfile * f, const char * name, enum dtype type, int pool, int64_t d0, int64_t d1) {
    if (f->n == (int)(sizeof f->t / sizeof f->t[0])) {
        fprintf(stderr, "bench-t5: too many tensors\n");
        exit(1);
    }
    struct wtensor * t = &f->t[f->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->type = type, t->pool = pool, t->ndim = d1 ? 2 : 1, t->shape[0] = d0, t->shape[1] = d1;
}

// Writes the tensors with random values: header, then data streamed from the pools. Returns 0 on success.
static int write_file(const char * path, const struct wfile * f, const float scale[3]) {
    size_t hcap = 256 + (size_t)f->n * 320, hl = 0;
    char * h = malloc(hcap);
    uint64_t off = 0;
    hl += (size_t)snprintf(h + hl, hcap - hl, "{");
    for (int i = 0; i < f->n; i++) {
        const struct wtensor * t = &f->t[i];
        uint64_t bytes = (uint64_t)t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1) * dtype_size(t->type);
        hl += (size_t)snprintf(h + hl, hcap - hl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", i ? "," : "", t->name, dtype_name(t->type),
                               (long long)t->shape[0]);
        if (t->ndim == 2) hl += (size_t)snprintf(h + hl, hcap - hl, ",%lld", (long long)t->shape[1]);
        hl += (size_t)snprintf(h + hl, hcap - hl, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                               (unsigned long long)(off + bytes));
        off += bytes;
    }
    hl += (size_t)snprintf(h + hl, hcap - hl, "}");
    while (hl % 8) h[hl++] = ' ';
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE * fp = fopen(tmp, "wb");
    if (!fp) {
        perror(tmp);
        free(h);
        return 1;
    }
    uint64_t hl64 = hl;
    fwrite(&hl64, 8, 1, fp);
    fwrite(h, 1, hl, fp);
    free(h);
    // pools: F16 values at three scales, and F8_E4M3 bytes (random sign, exponent 0–2, mantissa: |v| ≤ 0.23)
    uint16_t * p16[3];
    uint8_t * p8 = malloc(POOL);
    for (int k = 0; k < 3; k++) {
        p16[k] = malloc(sizeof(uint16_t) * POOL);
        for (int i = 0; i < POOL; i++) p16[k][i] = f32_to_f16(scale[k] * rnd());
    }
    for (int i = 0; i < POOL; i++) {
        uint64_t r = rnd_u64() >> 32;
        p8[i] = (uint8_t)((r & 0x80) | ((r >> 8) % 3) << 3 | (r >> 16 & 7));
    }
    const uint16_t one = f32_to_f16(1.0f);
    uint16_t ones[4096];
    for (int i = 0; i < 4096; i++) ones[i] = one;
    for (int i = 0; i < f->n; i++) {
        const struct wtensor * t = &f->t[i];
        int64_t n = t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
        for (int64_t done = 0; done < n;) {
            int64_t chunk = n - done < (1 << 20) ? n - done : (1 << 20);
            if (t->pool == 3) {
                chunk = chunk < 4096 ? chunk : 4096;
                fwrite(ones, 2, (size_t)chunk, fp);
            } else if (t->type == DT_F8_E4M3) {
                fwrite(p8 + rnd_u64() % (POOL - chunk), 1, (size_t)chunk, fp);
            } else {
                fwrite(p16[t->pool] + rnd_u64() % (POOL - chunk), 2, (size_t)chunk, fp);
            }
            done += chunk;
        }
    }
    for (int k = 0; k < 3; k++) free(p16[k]);
    free(p8);
    int bad = ferror(fp);
    bad |= fclose(fp) != 0;
    if (bad || rename(tmp, path) != 0) {
        perror(path);
        remove(tmp);
        return 1;
    }
    return 0;
}

// T5-XXL's tensors (original single-file names); Linear weights in `lin` (F16 or F8_E4M3).
static int make_t5(const char * path, enum dtype lin) {
    const int D = 4096, F = 10240, NL = 24, V = 32128, NH = 64;
    static struct wfile f;
    f.n = 0;
    char n[128];
    const char * p = "text_encoders.t5xxl.transformer.";
    snprintf(n, sizeof n, "%sshared.weight", p);
    add(&f, n, DT_F16, 0, V, D);
    snprintf(n, sizeof n, "%sencoder.final_layer_norm.weight", p);
    add(&f, n, DT_F16, 3, D, 0);
    snprintf(n, sizeof n, "%sencoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", p);
    add(&f, n, DT_F16, 0, 32, NH);
    for (int i = 0; i < NL; i++) {
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%sencoder.block.%d.layer.0.SelfAttention.%c.weight", p, i, "qkvo"[k]);
            add(&f, n, lin, 1, D, D);
        }
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.0.layer_norm.weight", p, i);
        add(&f, n, DT_F16, 3, D, 0);
        for (int k = 0; k < 2; k++) {
            snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.DenseReluDense.wi_%d.weight", p, i, k);
            add(&f, n, lin, 1, F, D);
        }
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.DenseReluDense.wo.weight", p, i);
        add(&f, n, lin, 2, D, F);
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.layer_norm.weight", p, i);
        add(&f, n, DT_F16, 3, D, 0);
    }
    const float scale[3] = {1.0f, sqrtf(3.0f / 4096), sqrtf(3.0f / 10240)};
    double t0 = now();
    int r = write_file(path, &f, scale);
    printf("wrote %s (%d tensors, Linear weights %s) in %.1f s\n", path, f.n, dtype_name(lin), now() - t0);
    return r;
}

// CLIP-G's tensors (bigG/14 text tower, F16).
static int make_clip_g(const char * path) {
    const int W = 1280, F = 5120, NL = 32, V = 49408;
    static struct wfile f;
    f.n = 0;
    char n[160];
    const char * p = "text_encoders.clip_g.transformer.text_model.";
    snprintf(n, sizeof n, "%sembeddings.token_embedding.weight", p);
    add(&f, n, DT_F16, 0, V, W);
    snprintf(n, sizeof n, "%sembeddings.position_embedding.weight", p);
    add(&f, n, DT_F16, 0, 77, W);
    snprintf(n, sizeof n, "%sfinal_layer_norm.weight", p);
    add(&f, n, DT_F16, 3, W, 0);
    snprintf(n, sizeof n, "%sfinal_layer_norm.bias", p);
    add(&f, n, DT_F16, 1, W, 0);
    add(&f, "text_encoders.clip_g.transformer.text_projection.weight", DT_F16, 1, W, W);
    for (int i = 0; i < NL; i++) {
        static const char * const lin[4] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%sencoder.layers.%d.%s.weight", p, i, lin[k]);
            add(&f, n, DT_F16, 1, W, W);
            snprintf(n, sizeof n, "%sencoder.layers.%d.%s.bias", p, i, lin[k]);
            add(&f, n, DT_F16, 1, W, 0);
        }
        for (int k = 1; k <= 2; k++) {
            snprintf(n, sizeof n, "%sencoder.layers.%d.layer_norm%d.weight", p, i, k);
            add(&f, n, DT_F16, 3, W, 0);
            snprintf(n, sizeof n, "%sencoder.layers.%d.layer_norm%d.bias", p, i, k);
            add(&f, n, DT_F16, 1, W, 0);
        }
        snprintf(n, sizeof n, "%sencoder.layers.%d.mlp.fc1.weight", p, i);
        add(&f, n, DT_F16, 1, F, W);
        snprintf(n, sizeof n, "%sencoder.layers.%d.mlp.fc1.bias", p, i);
        add(&f, n, DT_F16, 1, F, 0);
        snprintf(n, sizeof n, "%sencoder.layers.%d.mlp.fc2.weight", p, i);
        add(&f, n, DT_F16, 2, W, F);
        snprintf(n, sizeof n, "%sencoder.layers.%d.mlp.fc2.bias", p, i);
        add(&f, n, DT_F16, 1, W, 0);
    }
    const float scale[3] = {1.0f, sqrtf(3.0f / 1280), sqrtf(3.0f / 5120)};
    double t0 = now();
    int r = write_file(path, &f, scale);
    printf("wrote %s (%d tensors) in %.1f s\n", path, f.n, now() - t0);
    return r;
}

// Parses "a,b,c" into up to 8 ints.
static int parse_list(const char * s, int * out) {
    int n = 0;
    while (s && *s && n < 8) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

// Prints the memory line after a pass.
static void mem_line(const char * when) {
    printf("   %-28s RssAnon %8.1f MiB   RssFile %8.1f MiB   VmHWM %8.1f MiB\n", when, proc_mib("RssAnon"), proc_mib("RssFile"),
           proc_mib("VmHWM"));
}

// Loads a model from split component files (either may be NULL).
static struct sd3q_model * load(const char * t5, const char * clip_g) {
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.t5xxl_path  = t5;
    mp.clip_g_path = clip_g;
    struct sd3q_model * m = NULL;
    char err[1024];
    double t0 = now();
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return NULL;
    }
    printf("loaded %s in %.3f s; RssAnon %.1f MiB, RssFile %.1f MiB (the weights stay in the mapping)\n", t5 ? t5 : clip_g, now() - t0,
           proc_mib("RssAnon"), proc_mib("RssFile"));
    return m;
}

// A CPU session for the text encoders with room for `t5_tokens` T5 tokens.
static struct sd3q_session * session(const struct sd3q_model * m, int threads, int t5_tokens) {
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.n_threads = threads, sp.max_batch = 1, sp.max_latent_h = 2, sp.max_latent_w = 2;
    sp.max_context = 77 + t5_tokens;
    sp.profile     = 1;
    struct sd3q_session * s = NULL;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) fprintf(stderr, "%s\n", err);
    return s;
}

// T5-XXL: encodes `L` random tokens per thread count.
static int bench_t5(const char * path, const char * label, const int * thr, int nthr, int L, int reps) {
    struct sd3q_model * m = load(path, NULL);
    if (!m) return 1;
    const struct t5_config * c = &m->t5->cfg;
    const double D = c->d_model, I = c->inner, F = c->d_ff;
    const double flops = c->layers * (2.0 * L * D * 3 * I + 4.0 * L * L * I + 2.0 * L * I * D + 2.0 * L * D * 2 * F + 2.0 * L * F * D);
    printf("T5 %s: %.3f G parameters (a float32 copy would be %.1f GiB), %d tokens → %.1f GFLOP per encode\n", label,
           (double)m->t5->n_params / 1e9, (double)m->t5->n_params * 4 / (1 << 30), L, flops / 1e9);
    int32_t * ids = malloc(sizeof(int32_t) * (size_t)L);
    float * out = malloc(sizeof(float) * (size_t)L * c->d_model);
    for (int i = 0; i < L; i++) ids[i] = i < L / 2 ? (int32_t)(rnd_u64() % 32000) : 0;  // half prompt, half <pad>
    int cold = 1;
    for (int k = 0; k < nthr; k++) {
        struct sd3q_session * s = session(m, thr[k], L);
        if (!s) return 1;
        printf("== T5 %s, %d token(s), %d thread(s): arena %.1f MiB\n", label, L, thr[k], (double)sd3q_session_arena_bytes(s) / (1 << 20));
        const int passes = reps + cold;  // the first pass of the run faults the mapped weights in
        for (int r = 0; r < passes; r++) {
            double t0 = now(), c0 = cpu_now();
            if (text_encode_t5(s, ids, L, out) != SD3Q_OK) {
                fprintf(stderr, "%s\n", sd3q_session_last_error(s));
                return 1;
            }
            double dt = now() - t0, dc = cpu_now() - c0;
            double sum = 0;
            for (int64_t i = 0; i < (int64_t)L * c->d_model; i++) sum += fabs((double)out[i]);
            printf("   %s pass: %7.2f s  %7.1f GFLOP/s   (CPU time %.2f s = %.1f GFLOP per CPU-second; mean |out| %.3f)\n",
                   cold ? "cold (page faults)" : "warm", dt, flops / dt / 1e9, dc, flops / dc / 1e9, sum / ((double)L * c->d_model));
            mem_line(cold ? "after the cold pass:" : "after the pass:");
            char prof[4096];
            sd3q_session_profile(s, 1, prof, sizeof prof);
            if (!cold) printf("%s", prof);
            cold = 0;
        }
        sd3q_session_free(s);
    }
    sd3q_model_release_pages(m, SD3Q_COMP_T5);
    mem_line("after release_pages(T5):");
    free(ids);
    free(out);
    sd3q_model_free(m);
    return 0;
}

// CLIP-G: encodes 77 random tokens per thread count.
static int bench_clip_g(const char * path, const int * thr, int nthr, int reps) {
    struct sd3q_model * m = load(NULL, path);
    if (!m) return 1;
    const struct clip_config * c = &m->clip_g->cfg;
    const double L = 77, W = c->width, F = c->mlp;
    const double flops = c->layers * (2 * L * W * 3 * W + 4 * L * L * W + 2 * L * W * W + 4 * L * W * F) + 2 * W * c->proj_dim;
    printf("CLIP-G: %.3f G parameters, 77 tokens → %.1f GFLOP per encode\n", (double)m->clip_g->n_params / 1e9, flops / 1e9);
    int32_t ids[77];
    ids[0] = 49406;
    for (int i = 1; i < 77; i++) ids[i] = i < 20 ? (int32_t)(rnd_u64() % 49000) : i == 20 ? 49407 : 0;
    float * pen = malloc(sizeof(float) * 77 * c->width), pooled[4096];
    int cold = 1;
    for (int k = 0; k < nthr; k++) {
        struct sd3q_session * s = session(m, thr[k], 0);
        if (!s) return 1;
        const int passes = reps + cold;
        for (int r = 0; r < passes; r++) {
            double t0 = now(), c0 = cpu_now();
            if (text_encode_clip(s, 1, ids, pen, pooled, NULL) != SD3Q_OK) {
                fprintf(stderr, "%s\n", sd3q_session_last_error(s));
                return 1;
            }
            double dt = now() - t0, dc = cpu_now() - c0;
            printf("== CLIP-G, 77 tokens, %d thread(s), %s pass: %.3f s  %.1f GFLOP/s (CPU time %.2f s)\n", thr[k], cold ? "cold" : "warm",
                   dt, flops / dt / 1e9, dc);
            cold = 0;
        }
        mem_line("after the passes:");
        sd3q_session_free(s);
    }
    free(pen);
    sd3q_model_free(m);
    return 0;
}

int main(int argc, char ** argv) {
    const char * dir = "/tmp";
    int thr[8] = {1, 2}, nthr = 2, L = 256, f8 = 0, skip_t5 = 0, skip_clip = 0, reps = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);  // progress lines appear as they happen when redirected
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--dir") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) nthr = parse_list(argv[++i], thr);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) L = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--f8")) f8 = 1;
        else if (!strcmp(argv[i], "--skip-t5")) skip_t5 = 1;
        else if (!strcmp(argv[i], "--skip-clip")) skip_clip = 1;
        else {
            fprintf(stderr, "usage: bench-t5 [--dir /tmp] [--threads 1,2] [--tokens 256] [--f8] [--skip-t5] [--skip-clip] [--reps 1]\n");
            return 2;
        }
    }
    if (L < 1 || L > 4096 || reps < 1) {
        fprintf(stderr, "bench-t5: --tokens must be in [1, 4096] and --reps at least 1\n");
        return 2;
    }
    char t5f16[1024], t5f8[1024], clipg[1024];
    snprintf(t5f16, sizeof t5f16, "%s/sd3q-bench-t5xxl-f16.safetensors", dir);
    snprintf(t5f8, sizeof t5f8, "%s/sd3q-bench-t5xxl-f8.safetensors", dir);
    snprintf(clipg, sizeof clipg, "%s/sd3q-bench-clipg-f16.safetensors", dir);
    if (!skip_clip) {
        if (!path_is_file(clipg) && make_clip_g(clipg) != 0) return 1;
        if (bench_clip_g(clipg, thr, nthr, reps) != 0) return 1;
    }
    if (!skip_t5) {
        if (!path_is_file(t5f16) && make_t5(t5f16, DT_F16) != 0) return 1;
        if (bench_t5(t5f16, "F16", thr, nthr, L, reps) != 0) return 1;
        if (f8) {
            if (!path_is_file(t5f8) && make_t5(t5f8, DT_F8_E4M3) != 0) return 1;
            if (bench_t5(t5f8, "F8_E4M3", thr, nthr, L, reps) != 0) return 1;
        }
    }
    printf("peak RSS (VmHWM) %.0f MiB — includes the mapped weight pages the passes touched\n", proc_mib("VmHWM"));
    return 0;
}
