/*
 * common.c — what the benchmarks share: SD3-Medium-shaped random checkpoints, a clock, a list parser, the CUDA
 * memory line (see common.h). Tensor names and shapes follow
 * ../shared/research/sd3_arch_spec.md §2.2–2.3 (MMDiT), §4.1–4.3 (CLIP-L, CLIP-G, T5-XXL) and §6 (VAE).
 */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SD3Q_HAVE_CUDA
#include "backend/cuda/cuda-backend.h"
#endif

#define POOL     (1 << 22)  // values per pool; tensors read random windows of it
#define MAX_POOL 64         // distinct scales

struct bw_tensor {
    char       name[160];
    enum dtype type;
    int        ndim;
    int64_t    shape[4];
    float      scale;
};

struct bw_file {
    struct bw_tensor * t;
    int                n, cap;
};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

// xorshift64*: fast, fine for benchmark weights.
static uint64_t rnd_u64(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dull;
}

double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int bench_parse_list(const char * s, int * out, int max) {
    int n = 0;
    while (s && *s && n < max) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (s) s++;
    }
    return n;
}

struct bw_file * bw_new(void) { return calloc(1, sizeof(struct bw_file)); }

void bw_free(struct bw_file * f) {
    if (f) free(f->t);
    free(f);
}

void bw_add(struct bw_file * f, const char * name, enum dtype t, float scale, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 1024;
        f->t = realloc(f->t, sizeof(*f->t) * (size_t)f->cap);
        if (!f->t) {
            fprintf(stderr, "bench weights: out of memory\n");
            exit(1);
        }
    }
    struct bw_tensor * x = &f->t[f->n++];
    snprintf(x->name, sizeof x->name, "%s", name);
    x->type = t, x->scale = scale;
    int64_t d[4] = {d0, d1, d2, d3};
    x->ndim = 0;
    while (x->ndim < 4 && d[x->ndim] > 0) x->shape[x->ndim] = d[x->ndim], x->ndim++;
}

// A Linear (weight [out, in], bias [out]) named prefix.weight / prefix.bias; weights scaled ≈ 1/√in.
static void linear(struct bw_file * f, enum dtype t, const char * prefix, int64_t out, int64_t in, int bias) {
    char n[320];
    snprintf(n, sizeof n, "%s.weight", prefix);
    bw_add(f, n, t, sqrtf(3.0f / (float)in), out, in, 0, 0);
    if (!bias) return;
    snprintf(n, sizeof n, "%s.bias", prefix);
    bw_add(f, n, t, 0.02f, out, 0, 0, 0);
}

void bw_add_mmdit(struct bw_file * f, enum dtype t) {
    const int depth = 24, D = 1536, F = 6144, grid = 192;
    const char * p = "model.diffusion_model.";
    char n[200];
    snprintf(n, sizeof n, "%spos_embed", p);
    bw_add(f, n, t, 0.5f, 1, (int64_t)grid * grid, D, 0);
    snprintf(n, sizeof n, "%sx_embedder.proj.weight", p);
    bw_add(f, n, t, 0.12f, D, 16, 2, 2);
    snprintf(n, sizeof n, "%sx_embedder.proj.bias", p);
    bw_add(f, n, t, 0.02f, D, 0, 0, 0);
    const char * emb[4] = {"t_embedder.mlp.0", "t_embedder.mlp.2", "y_embedder.mlp.0", "y_embedder.mlp.2"};
    const int in[4] = {256, D, 2048, D};
    for (int k = 0; k < 4; k++) {
        snprintf(n, sizeof n, "%s%s", p, emb[k]);
        linear(f, t, n, D, in[k], 1);
    }
    snprintf(n, sizeof n, "%scontext_embedder", p);
    linear(f, t, n, D, 4096, 1);
    for (int i = 0; i < depth; i++)
        for (int s = 0; s < 2; s++) {
            const char * b = s ? "context_block" : "x_block";
            int pre = s == 1 && i == depth - 1;
            snprintf(n, sizeof n, "%sjoint_blocks.%d.%s.adaLN_modulation.1", p, i, b);
            linear(f, t, n, (pre ? 2 : 6) * D, D, 1);
            snprintf(n, sizeof n, "%sjoint_blocks.%d.%s.attn.qkv", p, i, b);
            linear(f, t, n, 3 * D, D, 1);
            if (pre) continue;
            snprintf(n, sizeof n, "%sjoint_blocks.%d.%s.attn.proj", p, i, b);
            linear(f, t, n, D, D, 1);
            snprintf(n, sizeof n, "%sjoint_blocks.%d.%s.mlp.fc1", p, i, b);
            linear(f, t, n, F, D, 1);
            snprintf(n, sizeof n, "%sjoint_blocks.%d.%s.mlp.fc2", p, i, b);
            linear(f, t, n, D, F, 1);
        }
    snprintf(n, sizeof n, "%sfinal_layer.adaLN_modulation.1", p);
    linear(f, t, n, 2 * D, D, 1);
    snprintf(n, sizeof n, "%sfinal_layer.linear", p);
    linear(f, t, n, 64, D, 1);
}

void bw_add_clip(struct bw_file * f, const char * prefix, int W, int layers, int mlp, int projection) {
    char n[200];
    snprintf(n, sizeof n, "%stext_model.embeddings.token_embedding.weight", prefix);
    bw_add(f, n, DT_F16, 1.0f, 49408, W, 0, 0);
    snprintf(n, sizeof n, "%stext_model.embeddings.position_embedding.weight", prefix);
    bw_add(f, n, DT_F16, 1.0f, 77, W, 0, 0);
    snprintf(n, sizeof n, "%stext_model.final_layer_norm.weight", prefix);
    bw_add(f, n, DT_F16, 0, W, 0, 0, 0);
    snprintf(n, sizeof n, "%stext_model.final_layer_norm.bias", prefix);
    bw_add(f, n, DT_F16, 0.02f, W, 0, 0, 0);
    if (projection) {
        snprintf(n, sizeof n, "%stext_projection.weight", prefix);
        bw_add(f, n, DT_F16, sqrtf(3.0f / (float)W), W, W, 0, 0);
    }
    for (int i = 0; i < layers; i++) {
        static const char * const lin[4] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"};
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.%s", prefix, i, lin[k]);
            linear(f, DT_F16, n, W, W, 1);
        }
        for (int k = 1; k <= 2; k++) {
            snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.layer_norm%d.weight", prefix, i, k);
            bw_add(f, n, DT_F16, 0, W, 0, 0, 0);
            snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.layer_norm%d.bias", prefix, i, k);
            bw_add(f, n, DT_F16, 0.02f, W, 0, 0, 0);
        }
        snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.mlp.fc1", prefix, i);
        linear(f, DT_F16, n, mlp, W, 1);
        snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.mlp.fc2", prefix, i);
        linear(f, DT_F16, n, W, mlp, 1);
    }
}

void bw_add_t5(struct bw_file * f, enum dtype lin) {
    const int D = 4096, F = 10240, NL = 24, NH = 64;
    const char * p = "text_encoders.t5xxl.transformer.";
    char n[200];
    snprintf(n, sizeof n, "%sshared.weight", p);
    bw_add(f, n, DT_F16, 1.0f, 32128, D, 0, 0);
    snprintf(n, sizeof n, "%sencoder.final_layer_norm.weight", p);
    bw_add(f, n, DT_F16, 0, D, 0, 0, 0);
    snprintf(n, sizeof n, "%sencoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", p);
    bw_add(f, n, DT_F16, 1.0f, 32, NH, 0, 0);
    for (int i = 0; i < NL; i++) {
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%sencoder.block.%d.layer.0.SelfAttention.%c", p, i, "qkvo"[k]);
            linear(f, lin, n, D, D, 0);
        }
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.0.layer_norm.weight", p, i);
        bw_add(f, n, DT_F16, 0, D, 0, 0, 0);
        for (int k = 0; k < 2; k++) {
            snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.DenseReluDense.wi_%d", p, i, k);
            linear(f, lin, n, F, D, 0);
        }
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.DenseReluDense.wo", p, i);
        linear(f, lin, n, D, F, 0);
        snprintf(n, sizeof n, "%sencoder.block.%d.layer.1.layer_norm.weight", p, i);
        bw_add(f, n, DT_F16, 0, D, 0, 0, 0);
    }
}

// A 3×3 (or k×k) convolution prefix.weight / prefix.bias.
static void conv(struct bw_file * f, const char * prefix, int64_t out, int64_t in, int64_t k) {
    char n[320];
    snprintf(n, sizeof n, "%s.weight", prefix);
    bw_add(f, n, DT_F16, sqrtf(3.0f / (float)(in * k * k)), out, in, k, k);
    snprintf(n, sizeof n, "%s.bias", prefix);
    bw_add(f, n, DT_F16, 0.02f, out, 0, 0, 0);
}

// A GroupNorm prefix.weight (ones) / prefix.bias.
static void gnorm(struct bw_file * f, const char * prefix, int64_t c) {
    char n[320];
    snprintf(n, sizeof n, "%s.weight", prefix);
    bw_add(f, n, DT_F16, 0, c, 0, 0, 0);
    snprintf(n, sizeof n, "%s.bias", prefix);
    bw_add(f, n, DT_F16, 0.02f, c, 0, 0, 0);
}

// A VAE ResNet block cin → cout under prefix.
static void resnet(struct bw_file * f, const char * prefix, int64_t cin, int64_t cout) {
    char n[280];
    snprintf(n, sizeof n, "%s.norm1", prefix), gnorm(f, n, cin);
    snprintf(n, sizeof n, "%s.conv1", prefix), conv(f, n, cout, cin, 3);
    snprintf(n, sizeof n, "%s.norm2", prefix), gnorm(f, n, cout);
    snprintf(n, sizeof n, "%s.conv2", prefix), conv(f, n, cout, cout, 3);
    if (cin != cout) snprintf(n, sizeof n, "%s.nin_shortcut", prefix), conv(f, n, cout, cin, 1);
}

// The mid block (ResNet, attention, ResNet) of 512 channels under prefix.
static void mid(struct bw_file * f, const char * prefix) {
    char n[240];
    snprintf(n, sizeof n, "%s.block_1", prefix), resnet(f, n, 512, 512);
    snprintf(n, sizeof n, "%s.attn_1.norm", prefix), gnorm(f, n, 512);
    static const char * const a[4] = {"q", "k", "v", "proj_out"};
    for (int k = 0; k < 4; k++) snprintf(n, sizeof n, "%s.attn_1.%s", prefix, a[k]), conv(f, n, 512, 512, 1);
    snprintf(n, sizeof n, "%s.block_2", prefix), resnet(f, n, 512, 512);
}

void bw_add_vae(struct bw_file * f) {
    const int64_t ch[4] = {128, 256, 512, 512};
    const char * p = "first_stage_model.";
    char n[200];
    snprintf(n, sizeof n, "%sencoder.conv_in", p), conv(f, n, 128, 3, 3);
    int64_t c = 128;
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 2; j++) {
            snprintf(n, sizeof n, "%sencoder.down.%d.block.%d", p, i, j);
            resnet(f, n, c, ch[i]);
            c = ch[i];
        }
        if (i < 3) snprintf(n, sizeof n, "%sencoder.down.%d.downsample.conv", p, i), conv(f, n, c, c, 3);
    }
    snprintf(n, sizeof n, "%sencoder.mid", p), mid(f, n);
    snprintf(n, sizeof n, "%sencoder.norm_out", p), gnorm(f, n, 512);
    snprintf(n, sizeof n, "%sencoder.conv_out", p), conv(f, n, 32, 512, 3);
    snprintf(n, sizeof n, "%sdecoder.conv_in", p), conv(f, n, 512, 16, 3);
    snprintf(n, sizeof n, "%sdecoder.mid", p), mid(f, n);
    c = 512;
    for (int L = 3; L >= 0; L--) {
        for (int j = 0; j < 3; j++) {
            snprintf(n, sizeof n, "%sdecoder.up.%d.block.%d", p, L, j);
            resnet(f, n, c, ch[L]);
            c = ch[L];
        }
        if (L > 0) snprintf(n, sizeof n, "%sdecoder.up.%d.upsample.conv", p, L), conv(f, n, c, c, 3);
    }
    snprintf(n, sizeof n, "%sdecoder.norm_out", p), gnorm(f, n, 128);
    snprintf(n, sizeof n, "%sdecoder.conv_out", p), conv(f, n, 3, 128, 3);
}

// The pool of values for a scale (created on first use); F8 tensors use their own byte pool.
struct pools {
    float      scale[MAX_POOL];
    uint16_t * h[MAX_POOL];
    int        n;
    uint8_t *  f8;
};

static const uint16_t * pool_f16(struct pools * p, float scale) {
    for (int i = 0; i < p->n; i++)
        if (p->scale[i] == scale) return p->h[i];
    if (p->n == MAX_POOL) return p->h[0];
    uint16_t * h = malloc(sizeof(uint16_t) * POOL);
    if (!h) exit(1);
    for (int i = 0; i < POOL; i++) {
        float u = scale == 0 ? 1.0f : scale * ((float)((rnd_u64() >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f);
        h[i] = f32_to_f16(u);
    }
    p->scale[p->n] = scale, p->h[p->n] = h;
    return p->h[p->n++];
}

int bw_write(const struct bw_file * f, const char * path) {
    double t0 = bench_now();
    size_t hcap = 256 + (size_t)f->n * 360, hl = 0;
    char * h = malloc(hcap);
    uint64_t off = 0;
    hl += (size_t)snprintf(h + hl, hcap - hl, "{");
    for (int i = 0; i < f->n; i++) {
        const struct bw_tensor * t = &f->t[i];
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (uint64_t)t->shape[d];
        uint64_t bytes = numel * (uint64_t)dtype_size(t->type);
        hl += (size_t)snprintf(h + hl, hcap - hl, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t->name, dtype_name(t->type));
        for (int d = 0; d < t->ndim; d++) hl += (size_t)snprintf(h + hl, hcap - hl, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        hl += (size_t)snprintf(h + hl, hcap - hl, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
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
    struct pools p = {0};
    p.f8 = malloc(POOL);
    if (!p.f8) exit(1);
    for (int i = 0; i < POOL; i++) {  // F8_E4M3 bytes: random sign, exponent 1–3, any mantissa (|v| < 0.24)
        uint64_t r = rnd_u64() >> 32;
        p.f8[i] = (uint8_t)((r & 0x80) | (1 + (r >> 8) % 3) << 3 | (r >> 16 & 7));
    }
    for (int i = 0; i < f->n; i++) {
        const struct bw_tensor * t = &f->t[i];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        const uint16_t * pool = t->type == DT_F16 ? pool_f16(&p, t->scale) : NULL;
        for (int64_t done = 0; done < n;) {
            int64_t chunk = n - done < (1 << 20) ? n - done : (1 << 20);
            uint64_t at = rnd_u64() % (uint64_t)(POOL - chunk);
            if (t->type == DT_F8_E4M3) fwrite(p.f8 + at, 1, (size_t)chunk, fp);
            else fwrite(pool + at, 2, (size_t)chunk, fp);
            done += chunk;
        }
    }
    for (int i = 0; i < p.n; i++) free(p.h[i]);
    free(p.f8);
    int bad = ferror(fp);
    bad |= fclose(fp) != 0;
    if (bad || rename(tmp, path) != 0) {
        perror(path);
        remove(tmp);
        return 1;
    }
    printf("wrote %s: %d tensors, %.2f GB, in %.1f s\n", path, f->n, (double)off / 1e9, bench_now() - t0);
    return 0;
}

void bench_cuda_mem(const char * when, struct backend * bk) {
#ifdef SD3Q_HAVE_CUDA
    struct cuda_mem_info mi;
    if (backend_cuda_mem_info(bk, &mi) != 0) return;
    printf("memory %-34s weights %7.1f MiB, backend %7.1f MiB (peak %7.1f MiB), device used %7.1f of %.0f MiB\n", when,
           mi.weights_now / 1048576.0, mi.backend_now / 1048576.0, mi.backend_peak / 1048576.0, mi.device_used / 1048576.0,
           mi.device_total / 1048576.0);
#else
    (void)when, (void)bk;
#endif
}
