/*
 * test-core.c — the core utilities: the arena (measure mode, alignment, capacity, mark/rewind, overflow), the
 * overflow-checked arithmetic of checked.h, the thread pool (every task exactly once, thread ids in range, many
 * generations in a row, 0/1/many tasks, NULL pool), status strings, the error buffer (err_set / err_prefix
 * truncation stays in bounds), and the small file helpers (path_join, shape_str, read_file limits).
 */
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/checked.h"
#include "core/status.h"
#include "core/threads.h"
#include "io/fileutil.h"
#include "testutil.h"

// ---- arena -----------------------------------------------------------------------------------------------------------

static void test_arena(void) {
    // measuring: offsets advance with alignment, the peak is recorded, the pointers are non-NULL fakes
    struct arena m;
    arena_init_measure(&m, 64);
    CHECK(arena_measuring(&m));
    void * a = arena_alloc(&m, 10);
    void * b = arena_alloc(&m, 1);
    size_t mk = arena_mark(&m);
    void * c = arena_alloc(&m, 100);
    CHECK(a && b && c);
    CHECKF(m.used == 128 + 100, "measure: used %zu after 10, 1 (64-aligned), 100 bytes", m.used);
    arena_rewind(&m, mk);
    CHECK(m.used == 65);
    arena_alloc(&m, 7);
    CHECKF(m.peak == 228, "measure: peak %zu, expected 228", m.peak);
    CHECK(arena_alloc(&m, SIZE_MAX) == NULL);         // overflow of the offset is refused, not wrapped
    CHECK(arena_alloc(&m, SIZE_MAX - 100) == NULL);
    size_t peak = m.peak;

    // allocating exactly the measured peak lets the same sequence succeed, and nothing more fits
    struct arena r;
    CHECK(arena_init_alloc(&r, peak, 64) == 0);
    CHECK(!arena_measuring(&r));
    CHECKF(r.size >= peak && r.size % 64 == 0, "size %zu for peak %zu", r.size, peak);
    uint8_t * p1 = arena_alloc(&r, 10), * p2 = arena_alloc(&r, 1);
    size_t mk2 = arena_mark(&r);
    uint8_t * p3 = arena_alloc(&r, 100);
    CHECK(p1 && p2 && p3);
    CHECK(((uintptr_t)p1 % 64) == 0 && ((uintptr_t)p2 % 64) == 0 && ((uintptr_t)p3 % 64) == 0);
    CHECK(p2 == p1 + 64 && p3 == p1 + 128);
    memset(p3, 0xab, 100);  // ASan: the whole block is addressable
    arena_rewind(&r, mk2);
    uint8_t * p4 = arena_alloc(&r, 7);
    CHECK(p4 == p3);
    CHECK(arena_alloc(&r, r.size) == NULL);  // past the capacity
    CHECK(arena_alloc(&r, SIZE_MAX) == NULL);
    CHECK(r.used == 128 + 7);                // a refused allocation leaves the offset alone
    arena_rewind(&r, 0);
    uint8_t * whole = arena_alloc(&r, r.size);
    CHECK(whole == p1);
    if (whole) memset(whole, 0, r.size);
    CHECK(arena_alloc(&r, 1) == NULL);
    arena_free(&r);
    CHECK(r.base == NULL && r.size == 0);

    // floats helper, zero-size arenas, huge sizes
    CHECK(arena_init_alloc(&r, 0, 16) == 0 && r.size == 16);
    float * f = arena_floats(&r, 4);
    CHECK(f != NULL);
    CHECK(arena_floats(&r, 1) == NULL);
    arena_free(&r);
    CHECK(arena_init_alloc(&r, SIZE_MAX - 5, 64) == -1);  // size + align − 1 overflows: refused
    printf("arena: measure/allocate/rewind/capacity/overflow checks done\n");
}

// ---- checked arithmetic ----------------------------------------------------------------------------------------------

static void test_checked(void) {
    size_t s;
    uint64_t u;
    int64_t i;
    CHECK(ck_add_size(1, 2, &s) && s == 3);
    CHECK(!ck_add_size(SIZE_MAX, 1, &s));
    CHECK(ck_add_size(SIZE_MAX - 1, 1, &s) && s == SIZE_MAX);
    CHECK(ck_mul_size(SIZE_MAX / 3, 3, &s) && s == SIZE_MAX / 3 * 3);
    CHECK(!ck_mul_size(SIZE_MAX / 2 + 1, 2, &s));
    CHECK(ck_mul_size(0, SIZE_MAX, &s) && s == 0);
    CHECK(!ck_add_u64(UINT64_MAX, 1, &u));
    CHECK(!ck_mul_u64((uint64_t)1 << 32, (uint64_t)1 << 32, &u));
    CHECK(ck_mul_u64((uint64_t)1 << 31, (uint64_t)1 << 32, &u) && u == (uint64_t)1 << 63);
    CHECK(!ck_mul_i64(INT64_MAX / 2 + 1, 2, &i));
    CHECK(!ck_mul_i64(INT64_MIN, -1, &i));
    CHECK(ck_mul_i64(-3, 4, &i) && i == -12);
    CHECK(!ck_add_i64(INT64_MAX, 1, &i));
    CHECK(!ck_add_i64(INT64_MIN, -1, &i));
    CHECK(ck_add_i64(INT64_MAX, INT64_MIN, &i) && i == -1);

    int64_t d1[] = {2, 3, 4};
    CHECK(ck_numel(d1, 3, &i) && i == 24);
    CHECK(ck_numel(d1, 0, &i) && i == 1);  // a scalar has one element
    int64_t d2[] = {5, 0, 7};
    CHECK(ck_numel(d2, 3, &i) && i == 0);
    int64_t d3[] = {4, -1};
    CHECK(!ck_numel(d3, 2, &i));
    int64_t d4[] = {(int64_t)1 << 32, (int64_t)1 << 31};
    CHECK(!ck_numel(d4, 2, &i));
    int64_t d5[] = {(int64_t)1 << 31, (int64_t)1 << 31, 2};
    CHECK(!ck_numel(d5, 3, &i));  // 2^63 does not fit in int64
    int64_t d6[] = {(int64_t)1 << 31, (int64_t)1 << 31, 1};
    CHECK(ck_numel(d6, 3, &i) && i == (int64_t)1 << 62);
    int64_t d7[] = {INT64_MAX, 1};
    CHECK(ck_numel(d7, 2, &i) && i == INT64_MAX);
    printf("checked arithmetic: add/mul overflow and numel checks done\n");
}

// ---- thread pool --------------------------------------------------------------------------------------------------------

struct pool_ctx {
    atomic_int * hits;
    int          nthreads;
    atomic_int   bad_ith;
    atomic_int   seen_ith[64];
    atomic_llong sum;
};

static void pool_task(void * ctx, int64_t task, int ith) {
    struct pool_ctx * c = ctx;
    atomic_fetch_add(&c->hits[task], 1);
    if (ith < 0 || ith >= c->nthreads) atomic_fetch_add(&c->bad_ith, 1);
    else atomic_store(&c->seen_ith[ith], 1);
    atomic_fetch_add(&c->sum, task);
}

// Runs n tasks on p and checks that each ran exactly once on a valid thread index.
static int run_and_check(struct pool * p, int64_t n, struct pool_ctx * c) {
    for (int64_t k = 0; k < n; k++) atomic_store(&c->hits[k], 0);
    atomic_store(&c->bad_ith, 0);
    atomic_store(&c->sum, 0);
    pool_run(p, pool_task, c, n);
    int wrong = 0;
    for (int64_t k = 0; k < n; k++) wrong += atomic_load(&c->hits[k]) != 1;
    int ok = wrong == 0 && atomic_load(&c->bad_ith) == 0 && atomic_load(&c->sum) == n * (n - 1) / 2;
    if (!ok)
        fprintf(stderr, "pool(%d threads) %lld tasks: %d tasks not run exactly once, %d bad thread ids\n", pool_size(p), (long long)n,
                wrong, atomic_load(&c->bad_ith));
    return ok;
}

static void test_pool(void) {
    enum { MAXT = 5000 };
    static atomic_int hits[MAXT];
    static struct pool_ctx c;
    c.hits = hits;
    CHECK(cpu_count() >= 1);
    int sizes[] = {1, 2, 3, 8};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        struct pool * p = pool_create(sizes[si]);
        CHECKF(p != NULL, "pool_create(%d)", sizes[si]);
        if (!p) continue;
        CHECKF(pool_size(p) == sizes[si], "pool_size %d, expected %d", pool_size(p), sizes[si]);
        c.nthreads = pool_size(p);
        int64_t counts[] = {0, 1, 2, 3, 7, 64, 1000, MAXT};
        for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) CHECK(run_and_check(p, counts[k], &c));
        // many generations in a row (a lost wake-up or a double count shows up here)
        int ok = 1;
        for (int g = 0; g < 2000 && ok; g++) ok = run_and_check(p, 1 + g % 9, &c);
        CHECKF(ok, "pool(%d): a generation went wrong", sizes[si]);
        pool_free(p);
    }
    // NULL pool: runs on the caller, thread id 0
    c.nthreads = 1;
    CHECK(run_and_check(NULL, 17, &c));
    CHECK(pool_size(NULL) == 1);
    pool_free(NULL);
    // nonsense sizes are clamped to one thread
    struct pool * p0 = pool_create(0);
    CHECK(p0 && pool_size(p0) == 1);
    pool_free(p0);
    struct pool * pn = pool_create(-3);
    CHECK(pn && pool_size(pn) == 1);
    pool_free(pn);
    // create/free without running anything (workers must not hang on shutdown)
    for (int k = 0; k < 50; k++) pool_free(pool_create(4));
    printf("thread pool: 1/2/3/8 threads, 0..%d tasks, 2000 generations each, NULL pool\n", MAXT);
}

// ---- status and error buffers ----------------------------------------------------------------------------------------

static void test_status(void) {
    const char * seen[SD3Q_STATUS_COUNT];
    for (int s = 0; s < SD3Q_STATUS_COUNT; s++) {
        const char * t = sd3q_status_str((enum sd3q_status)s);
        CHECKF(t && t[0] && strcmp(t, "unknown status") != 0, "sd3q_status_str(%d) = \"%s\"", s, t ? t : "(null)");
        seen[s] = t;
        for (int k = 0; k < s; k++) CHECKF(strcmp(seen[k], t) != 0, "statuses %d and %d share the text \"%s\"", k, s, t);
        printf("  status %d: %s\n", s, t);
    }
    CHECK(strcmp(sd3q_status_str(SD3Q_OK), "ok") == 0);
    CHECK(sd3q_status_str(SD3Q_STATUS_COUNT) != NULL && strcmp(sd3q_status_str(SD3Q_STATUS_COUNT), "unknown status") == 0);
    CHECK(sd3q_status_str((enum sd3q_status)1000) != NULL);
    CHECK(sd3q_status_str((enum sd3q_status)-1) != NULL);
    CHECK(sd3q_version() && strcmp(sd3q_version(), SD3Q_VERSION_STR) == 0);

    struct sd3q_errbuf e;
    memset(&e, 'x', sizeof e);
    CHECK(err_set(&e, SD3Q_ERR_SHAPE, "tensor '%s' has %d dims", "a.b", 3) == SD3Q_ERR_SHAPE);
    CHECK(strcmp(e.msg, "tensor 'a.b' has 3 dims") == 0);
    err_prefix(&e, "%s", "/p/file.safetensors");
    CHECKF(strcmp(e.msg, "/p/file.safetensors: tensor 'a.b' has 3 dims") == 0, "err_prefix gave \"%s\"", e.msg);
    CHECK(err_set(NULL, SD3Q_ERR_IO, "ignored %d", 1) == SD3Q_ERR_IO);  // NULL buffer: just the status
    err_prefix(NULL, "x");
    err_clear(NULL);
    err_clear(&e);
    CHECK(e.msg[0] == '\0');

    // truncation: a message longer than the buffer, then prefixes of every length — always NUL-terminated, in bounds
    char big[3000];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    err_set(&e, SD3Q_ERR_FORMAT, "%s", big);
    CHECK(strlen(e.msg) == SD3Q_ERRBUF_SIZE - 1);
    for (int lp = 0; lp < 1100; lp += 37) {
        err_set(&e, SD3Q_ERR_FORMAT, "%s", big + (sizeof big - 1) - (size_t)(lp * 2 % 1500));
        char pre[1200];
        memset(pre, 'p', (size_t)lp);
        pre[lp] = '\0';
        err_prefix(&e, "%s", pre);
        size_t L = strnlen(e.msg, sizeof e.msg);
        CHECKF(L < sizeof e.msg, "err_prefix(%d chars): message not terminated", lp);
        size_t want_pre = (size_t)lp < SD3Q_ERRBUF_SIZE - 3 ? (size_t)lp : SD3Q_ERRBUF_SIZE - 3;
        CHECKF(strncmp(e.msg, pre, want_pre) == 0 && e.msg[want_pre] == ':', "err_prefix(%d chars) lost the prefix", lp);
    }
    printf("status strings and error-buffer truncation checks done\n");
}

// ---- file helpers -------------------------------------------------------------------------------------------------------

static void test_fileutil(void) {
    char * j = path_join("a/b", "c.json");
    CHECK(j && strcmp(j, "a/b/c.json") == 0);
    free(j);
    j = path_join("a/b/", "c");
    CHECK(j && strcmp(j, "a/b/c") == 0);
    free(j);
    j = path_join("", "c");
    CHECK(j && strcmp(j, "c") == 0);
    free(j);

    int64_t sh[] = {2, 16, 64, 64};
    char buf[64];
    shape_str(sh, 4, buf, sizeof buf);
    CHECK(strcmp(buf, "[2, 16, 64, 64]") == 0);
    shape_str(sh, 0, buf, sizeof buf);
    CHECK(strcmp(buf, "[]") == 0);
    int64_t neg[] = {-1, 9223372036854775807LL};
    shape_str(neg, 2, buf, sizeof buf);
    CHECK(strcmp(buf, "[-1, 9223372036854775807]") == 0);
    for (size_t n = 1; n < 20; n++) {  // every short buffer: terminated, a prefix of the full text (ASan checks bounds)
        char * small = malloc(n);
        shape_str(sh, 4, small, n);
        CHECKF(strlen(small) < n && strncmp(small, "[2, 16, 64, 64]", strlen(small)) == 0, "shape_str into %zu bytes: \"%s\"", n, small);
        free(small);
    }

    // read_file: size cap, missing file, directory (in a fresh folder under $SD3Q_TEST_TMP, $TMPDIR or /tmp)
    const char * base = getenv("SD3Q_TEST_TMP");
    if (!base || !base[0]) base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    mkdir(base, 0755);
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%s/sd3q-core-XXXXXX", base);
    if (!mkdtemp(tmpl)) {
        CHECKF(0, "mkdtemp(%s) failed", tmpl);
        return;
    }
    char * fpath = path_join(tmpl, "f.txt");
    struct sd3q_errbuf e;
    CHECK(write_file_atomic(fpath, "hello", 5, &e) == SD3Q_OK);
    char * data = NULL;
    size_t n = 0;
    CHECK(read_file(fpath, 5, &data, &n, &e) == SD3Q_OK && n == 5 && data && strcmp(data, "hello") == 0);
    free(data);
    CHECK(read_file(fpath, 4, &data, &n, &e) == SD3Q_ERR_FORMAT && data == NULL && strstr(e.msg, fpath));
    char * missing = path_join(tmpl, "missing.txt");
    CHECK(read_file(missing, 100, &data, &n, &e) == SD3Q_ERR_MISSING && strstr(e.msg, missing));
    CHECK(read_file(tmpl, 100, &data, &n, &e) != SD3Q_OK && strstr(e.msg, tmpl));
    CHECK(path_is_dir(tmpl) && !path_is_file(tmpl) && path_is_file(fpath) && !path_is_dir(fpath) && !path_is_file(missing));
    unlink(fpath);
    rmdir(tmpl);
    free(fpath);
    free(missing);
    printf("file helpers: path_join, shape_str (all short buffers), read_file limits done\n");
}

int main(void) {
    test_arena();
    test_checked();
    test_pool();
    test_status();
    test_fileutil();
    return test_finish("test-core");
}
