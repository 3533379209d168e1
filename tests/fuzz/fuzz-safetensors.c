/*
 * fuzz-safetensors.c — libFuzzer target for the safetensors reader (st_parse, the same validation st_open runs on a
 * mapped file). Build with clang: -DSD3Q_FUZZ=ON -DSD3Q_SANITIZE=ON; run:
 *   ./build-fuzz/tests/fuzz-safetensors -dict=tests/fuzz/fuzz-safetensors.dict -max_total_time=120 CORPUS \
 *       tests/fuzz/corpus-safetensors
 *
 * The input is copied into an exact-size heap buffer so that ASan sees any read past its end. Whatever the reader
 * accepts must then satisfy the invariants its callers rely on; a violation aborts (a finding):
 *   every tensor's byte range lies inside the data section and equals numel · dtype size, numel is the product of
 *   the shape, ranges of non-empty tensors do not overlap, names are non-empty, unique and sorted, st_find finds
 *   every tensor by name, metadata values are strings; every byte of every tensor is readable (touched); float
 *   tensors of moderate size convert with st_read_f32.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

#define REQUIRE(x)                                                                  \
    do {                                                                            \
        if (!(x)) {                                                                 \
            fprintf(stderr, "fuzz-safetensors: invariant violated: %s\n", #x);      \
            abort();                                                                \
        }                                                                           \
    } while (0)

static int cmp_range(const void * a, const void * b) {
    const struct st_tensor * x = *(const struct st_tensor * const *)a, * y = *(const struct st_tensor * const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    uint8_t * buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct st_file f;
    struct sd3q_errbuf e;
    e.msg[0] = '\0';
    enum sd3q_status st = st_parse(buf, size, "fuzz", &f, &e);
    if (st != SD3Q_OK) {
        REQUIRE(st == SD3Q_ERR_FORMAT || st == SD3Q_ERR_OOM);
        REQUIRE(e.msg[0] != '\0' && strlen(e.msg) < sizeof e.msg);
        REQUIRE(f.t == NULL && f.n == 0 && f.meta == NULL);
        free(buf);
        return 0;
    }
    REQUIRE(f.data_start >= 10 && f.data_start <= size);
    uint64_t data_size = size - f.data_start;
    const struct st_tensor ** order = malloc(sizeof(*order) * (size_t)(f.n ? f.n : 1));
    int m = 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < f.n; i++) {
        const struct st_tensor * t = &f.t[i];
        REQUIRE(t->name && t->name[0]);
        REQUIRE(i == 0 || strcmp(f.t[i - 1].name, t->name) < 0);
        REQUIRE(st_find(&f, t->name) == t);
        REQUIRE(t->type >= 0 && t->type < DT_COUNT && t->ndim >= 0 && t->ndim <= ST_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            REQUIRE(t->shape[d] >= 0);
            REQUIRE(!__builtin_mul_overflow(numel, t->shape[d], &numel));
        }
        REQUIRE(numel == t->numel);
        REQUIRE(t->begin <= t->end && t->end <= data_size);
        REQUIRE(t->end - t->begin == (uint64_t)numel * (uint64_t)dtype_size(t->type));
        REQUIRE(t->data == buf + f.data_start + t->begin);
        for (uint64_t k = 0; k < t->end - t->begin; k++) sink ^= t->data[k];
        if (t->end > t->begin) order[m++] = t;
        if (dtype_is_float(t->type) && numel <= (1 << 16)) {
            int64_t want[ST_MAX_DIMS];
            for (int d = 0; d < t->ndim; d++) want[d] = -1;
            float * v = st_read_f32(&f, t->name, t->ndim, want, &e);
            REQUIRE(v != NULL);
            for (int d = 0; d < t->ndim; d++) REQUIRE(want[d] == t->shape[d]);
            free(v);
        }
    }
    qsort(order, (size_t)m, sizeof(*order), cmp_range);
    for (int i = 1; i < m; i++) REQUIRE(order[i]->begin >= order[i - 1]->end);
    free(order);
    for (int i = 0; i < f.n_meta; i++) {
        REQUIRE(f.meta[i].key && f.meta[i].value);
        REQUIRE(st_meta_get(&f, f.meta[i].key) != NULL);
    }
    REQUIRE(st_find(&f, "") == NULL);
    (void)sink;
    st_close(&f);
    free(buf);
    return 0;
}
