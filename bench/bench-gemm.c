/*
 * bench-gemm.c — throughput of the CPU backend's Linear against OpenBLAS sgemm on the MMDiT's shapes.
 *
 * For each shape (M tokens × N outputs × K inputs of SD3-Medium's Linears at 512² and 1024² with CFG batch 2 and 333
 * text tokens) it times, side by side in one run: OpenBLAS sgemm on f32 weights with the same thread count (the
 * baseline), our Linear on f32 weights, and our Linear on f16 weights (conversion fused into the per-chunk packing).
 * Usage: bench-gemm [threads] [repeats]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "common.h"
#include "core/dtype.h"

void openblas_set_num_threads(int num_threads);


// Builds a single-part weight view over a buffer.
static struct wt make_wt(enum dtype t, const void * data, int64_t n, int64_t k) {
    struct wt w;
    memset(&w, 0, sizeof w);
    w.type = t;
    w.ndim = 2;
    w.shape[0] = n;
    w.shape[1] = k;
    w.row_elems = k;
    w.nparts = 1;
    w.part[0].data = data;
    w.part[0].rows = n;
    return w;
}

int main(int argc, char ** argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2, reps = argc > 2 ? atoi(argv[2]) : 3;
    if (threads < 1) threads = 1;
    if (reps < 1) reps = 1;
    struct { const char * what; int M, N, K; } shapes[] = {
        {"512² img qkv", 2048, 4608, 1536}, {"512² img proj", 2048, 1536, 1536}, {"512² img fc1", 2048, 6144, 1536},
        {"512² img fc2", 2048, 1536, 6144}, {"512² txt fc1", 666, 6144, 1536},   {"1024² img fc1", 8192, 6144, 1536},
        {"1024² img fc2", 8192, 1536, 6144},
    };
    int ns = sizeof shapes / sizeof shapes[0];
    struct backend * bk;
    struct sd3q_errbuf e;
    struct backend_plan plan = {threads, 6144, 6144, 64, 0};
    if (backend_cpu_create(&plan, &bk, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    printf("threads %d, repeats %d (median not needed: min of repeats)\n", threads, reps);
    printf("%-16s %6s %6s %6s | %12s %12s %12s | %8s %8s\n", "shape", "M", "N", "K", "openblas GF/s", "ours f32", "ours f16", "f32 %",
           "f16 %");
    double sum_b = 0, sum_32 = 0, sum_16 = 0;
    for (int s = 0; s < ns; s++) {
        int M = shapes[s].M, N = shapes[s].N, K = shapes[s].K;
        float * x = malloc(sizeof(float) * (size_t)M * K), * w = malloc(sizeof(float) * (size_t)N * K);
        float * y = malloc(sizeof(float) * (size_t)M * N);
        uint16_t * wh = malloc(sizeof(uint16_t) * (size_t)N * K);
        for (int64_t i = 0; i < (int64_t)M * K; i++) x[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        for (int64_t i = 0; i < (int64_t)N * K; i++) {
            w[i]  = (float)((i * 104729) % 1000) * 1e-4f - 0.05f;
            wh[i] = f32_to_f16(w[i]);
        }
        struct wt w32 = make_wt(DT_F32, w, N, K), w16 = make_wt(DT_F16, wh, N, K);
        double best[3] = {1e30, 1e30, 1e30};
        for (int r = 0; r < reps + 1; r++) {  // first round is a warm-up
            openblas_set_num_threads(threads);
            double t0 = bench_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
            double t1 = bench_now();
            openblas_set_num_threads(1);
            bk->ops->linear(bk, y, x, M, &w32, NULL);
            double t2 = bench_now();
            bk->ops->linear(bk, y, x, M, &w16, NULL);
            double t3 = bench_now();
            if (r == 0) continue;
            if (t1 - t0 < best[0]) best[0] = t1 - t0;
            if (t2 - t1 < best[1]) best[1] = t2 - t1;
            if (t3 - t2 < best[2]) best[2] = t3 - t2;
        }
        double fl = 2.0 * M * N * K / 1e9;
        printf("%-16s %6d %6d %6d | %12.1f %12.1f %12.1f | %7.1f%% %7.1f%%\n", shapes[s].what, M, N, K, fl / best[0], fl / best[1],
               fl / best[2], 100 * best[0] / best[1], 100 * best[0] / best[2]);
        sum_b += best[0];
        sum_32 += best[1];
        sum_16 += best[2];
        free(x);
        free(w);
        free(y);
        free(wh);
    }
    printf("%-16s %20s | %12s %12s %12s | %7.1f%% %7.1f%%\n", "all shapes", "", "", "", "", 100 * sum_b / sum_32, 100 * sum_b / sum_16);
    bk->ops->free(bk);
    return 0;
}
