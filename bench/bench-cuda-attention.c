/*
 * bench-cuda-attention.c — the CUDA backend's joint attention alone, [B, heads, image + text tokens, 64], for a list
 * of head counts and flash variants: how its time follows the work and the waves of blocks, and which variant wins at
 * a shape, without loading a model. Inputs are fixed pseudo-random bf16 values, uniform in [−s/2, s/2) with s = --scale
 * (the card's clock, and so the time, depends on the data: docs/PERF.md; the scores' standard deviation is s²/12).
 *
 * Each measurement is the best of --rounds rounds of --reps launches between two syncs (after --warmup launches);
 * variants alternate within a round so that drifting clocks hit them alike. FLOPs: 4·B·heads·64·L² with L the joint
 * length. Prints "RESULT" lines (key=value).
 *
 * Usage: bench-cuda-attention [--heads 24] [--image 4096] [--text 333] [--batch 2] [--variants auto]
 *        [--reps 20] [--rounds 5] [--warmup 5] [--scale 1]  (lists: "22,23,24"; variants: "auto" or numbers, e.g. "14,18")
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common.h"

// Prints the usage line to f.
static void usage(FILE * f) {
    fprintf(f, "usage: bench-cuda-attention [--heads 24] [--image 4096] [--text 333] [--batch 2] [--variants auto] [--reps 20] "
               "[--rounds 5] [--warmup 5] [--scale 1]\n  lists are comma-separated (--heads 22,23,24); --variants: auto or numbers (14,18)\n");
}

#ifndef SD3Q_HAVE_CUDA
// Without a CUDA build there is nothing to run.
int main(int argc, char ** argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "bench-cuda-attention: built without CUDA\n");
    return 77;
}
#else
#include "backend/cuda/cuda-backend.h"

#define MAXL 16

// Parses a positive int list argument or fails with a message naming the option.
static int parse_list(const char * opt, const char * s, int * out, int max) {
    int n = bench_parse_list(s, out, max);
    for (int i = 0; i < n; i++)
        if (out[i] <= 0 || out[i] > 1 << 20) n = 0;
    if (n <= 0) fprintf(stderr, "bench-cuda-attention: %s wants positive integers up to 2^20, got \"%s\"\n", opt, s);
    return n;
}

// Fills n floats with a fixed pseudo-random pattern in [-scale/2, scale/2).
static void fill(float * x, int64_t n, float scale) {
    uint32_t s = 12345u;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * scale;
    }
}

// See the top of the file.
int main(int argc, char ** argv) {
    int heads[MAXL] = {24}, nh = 1, vars[MAXL] = {BACKEND_CUDA_FA_AUTO}, nv = 1;
    int img = 4096, txt = 333, batch = 2, reps = 20, rounds = 5, warmup = 5;
    float scale = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char * a = argv[i], * v = i + 1 < argc ? argv[i + 1] : NULL;
        int one[1];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--scale") && v) {
            char * end = NULL;
            scale = strtof(v, &end);
            if (end == v || *end || !(scale > 0.0f && scale <= 64.0f)) {
                fprintf(stderr, "bench-cuda-attention: --scale wants a number in (0, 64], got \"%s\"\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--heads") && v) {
            if (!(nh = parse_list(a, v, heads, MAXL))) return 2;
        } else if (!strcmp(a, "--variants") && v) {
            if (!strcmp(v, "auto")) vars[0] = BACKEND_CUDA_FA_AUTO, nv = 1;
            else {
                nv = bench_parse_list(v, vars, MAXL);
                for (int k = 0; k < nv; k++)
                    if (vars[k] < 0 || vars[k] >= backend_cuda_attention_variants()) nv = 0;
                if (nv <= 0) {
                    fprintf(stderr, "bench-cuda-attention: --variants wants auto or numbers below %d, got \"%s\"\n",
                            backend_cuda_attention_variants(), v);
                    return 2;
                }
            }
        } else if ((!strcmp(a, "--image") || !strcmp(a, "--text") || !strcmp(a, "--batch") || !strcmp(a, "--reps") ||
                    !strcmp(a, "--rounds") || !strcmp(a, "--warmup")) && v) {
            if (!parse_list(a, v, one, 1)) return 2;
            *(!strcmp(a, "--image") ? &img : !strcmp(a, "--text") ? &txt : !strcmp(a, "--batch") ? &batch : !strcmp(a, "--reps") ? &reps
              : !strcmp(a, "--rounds") ? &rounds : &warmup) = one[0];
        } else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!backend_cuda_available()) {
        fprintf(stderr, "bench-cuda-attention: no usable CUDA GPU\n");
        return 77;
    }
    int maxh = 0;
    for (int k = 0; k < nh; k++) maxh = heads[k] > maxh ? heads[k] : maxh;
    const int64_t L = (int64_t)img + txt, Dmax = (int64_t)maxh * 64;
    const int64_t n0 = (int64_t)batch * img * 3 * Dmax, n1 = (int64_t)batch * txt * 3 * Dmax;  // q|k|v values per segment
    if ((double)(n0 + n1) * 2 > 32e9) {
        fprintf(stderr, "bench-cuda-attention: %lld q|k|v values do not fit the 32 GB this bench allows\n", (long long)(n0 + n1));
        return 2;
    }
    struct backend_plan plan = {0, 8192, 16384, L, 0};
    struct backend * bk;
    struct sd3q_errbuf err = {0};
    if (backend_cuda_create(&plan, &bk, &err) != SD3Q_OK) {
        fprintf(stderr, "bench-cuda-attention: %s\n", err.msg);
        return 1;
    }
    bk->err = &err;
    char dev[256];
    backend_cuda_device_name(bk, dev, sizeof dev);
    printf("device %s; [%d, heads, %d + %d, 64], inputs in ±%g\nRESULT device=\"%s\"\n", dev, batch, img, txt, scale / 2, dev);
    // q|k|v of both segments sized for the most heads ([B, n, 3·D]); fewer heads read a prefix of the same buffers as
    // [B, n, 3·heads·64]
    float * h = malloc(sizeof(float) * (size_t)(n0 > n1 ? n0 : n1));
    void * q0 = bk->ops->arena_alloc(bk, (size_t)n0 * 2), * q1 = bk->ops->arena_alloc(bk, (size_t)n1 * 2);
    void * o0 = bk->ops->arena_alloc(bk, (size_t)batch * img * Dmax * 2), * o1 = bk->ops->arena_alloc(bk, (size_t)batch * txt * Dmax * 2);
    if (!h || !q0 || !q1 || !o0 || !o1) {
        fprintf(stderr, "bench-cuda-attention: out of memory: %s\n", err.msg);
        return 1;
    }
    fill(h, n0 > n1 ? n0 : n1, scale);
    if (bk->ops->upload(bk, q0, h, n0) != SD3Q_OK || bk->ops->upload(bk, q1, h, n1) != SD3Q_OK) {
        fprintf(stderr, "bench-cuda-attention: upload: %s\n", err.msg);
        return 1;
    }
    free(h);
    struct attn_seg seg[2] = {{q0, o0, img}, {q1, o1, txt}};
    for (int j = 0; j < nv; j++) {
        backend_cuda_set_attention_variant(bk, vars[j]);
        if (backend_cuda_set_attention_variant(bk, BACKEND_CUDA_FA_AUTO) != vars[j]) {
            fprintf(stderr, "bench-cuda-attention: variant %d cannot run on this device or build\n", vars[j]);
            return 2;
        }
    }
    for (int k = 0; k < nh; k++) {
        const int64_t NH = heads[k];
        const double flop = 4.0 * batch * NH * 64 * (double)L * (double)L;
        double best[MAXL];
        for (int j = 0; j < nv; j++) best[j] = 1e30;
        for (int r = 0; r < rounds; r++)
            for (int j = 0; j < nv; j++) {
                backend_cuda_set_attention_variant(bk, vars[j]);
                for (int w = 0; w < (r ? 1 : warmup); w++) bk->ops->attention(bk, seg, 2, batch, NH, 64, 0.125f, NULL);
                bk->ops->sync(bk);
                double t0 = bench_now();
                for (int it = 0; it < reps; it++) bk->ops->attention(bk, seg, 2, batch, NH, 64, 0.125f, NULL);
                bk->ops->sync(bk);
                double t = (bench_now() - t0) / reps;
                if (t < best[j]) best[j] = t;
            }
        if (err.msg[0]) {
            fprintf(stderr, "bench-cuda-attention: %s\n", err.msg);
            return 1;
        }
        for (int j = 0; j < nv; j++) {
            backend_cuda_set_attention_variant(bk, vars[j]);
            const int used = backend_cuda_attention_variant_for(bk, L);
            const double ms = best[j] * 1e3, tf = flop / best[j] / 1e12;
            printf("heads %3lld  variant %2d%s  %.4f ms  %6.1f TFLOP/s\n", (long long)NH, used, vars[j] < 0 ? " (auto)" : "       ", ms, tf);
            printf("RESULT heads=%lld variant=%d ms=%.4f tflops=%.1f\n", (long long)NH, used, ms, tf);
        }
    }
    bk->ops->free(bk);
    return 0;
}
#endif
