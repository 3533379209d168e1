/*
 * test-safetensors.c — the safetensors reader (src/io/safetensors.c) on hostile input and valid edge cases, and the
 * atomic writer.
 *
 * Reader: every malformed file of the issue list (empty, < 8 bytes, header length past EOF / over 100 MB, header not
 * JSON / not an object, unknown dtype, bad shapes incl. element-count and byte-size overflow, bad data_offsets,
 * begin > end, span ≠ numel·size, data past EOF, overlaps, holes and trailing bytes, duplicates, bad __metadata__,
 * > 8 dims, empty names, ...) is written to a real file and opened with st_open; each must fail with the expected
 * status and a message that names the file and the tensor or field. A valid file is also cut at every length (st_parse on an exact-size heap
 * copy, so ASan sees any over-read). Valid edge cases load with the right shapes and bytes: all eight dtypes,
 * zero-size tensors, scalars, metadata, 8 dims, padded headers. Files are built byte by byte here, not with st_write.
 *
 * Writer: round trip of several tensors + metadata; failures (missing folder, a file where a folder should be, /proc,
 * a target that is a directory, a disk-full write simulated with RLIMIT_FSIZE) return SD3Q_ERR_IO with the path,
 * leave no temporary file, and leave an existing file's old content intact; a successful write replaces it.
 * (Tests run as root, so permission bits cannot provoke failures; these paths fail for root too.)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "io/safetensors.h"
#include "testutil.h"

static char g_dir[1024];

static int rm_cb(const char * p, const struct stat * sb, int flag, struct FTW * ftw) { return remove(p); }
static void rm_rf(const char * p) { nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static void make_tmpdir(void) {
    const char * base = getenv("SD3Q_TEST_TMP");
    if (!base || !base[0]) base = getenv("TMPDIR");
    if (!base || !base[0]) base = "/tmp";
    mkdir(base, 0755);
    snprintf(g_dir, sizeof g_dir, "%s/sd3q-st-XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "mkdtemp(%s): %s\n", g_dir, strerror(errno));
        exit(1);
    }
}

static char * tpath(const char * name) {
    static char buf[8][1200];
    static int k;
    char * p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

static void write_bytes(const char * path, const void * p, size_t n) {
    FILE * f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

// A safetensors image: 8-byte little-endian length (hlen_override ≥ 0 replaces the true one), header, data bytes.
static uint8_t * build(const char * header, long long hlen_override, const void * data, size_t data_len, size_t * out_len) {
    size_t hl = strlen(header);
    size_t n = 8 + hl + data_len;
    uint8_t * b = malloc(n ? n : 1);
    uint64_t L = hlen_override >= 0 ? (uint64_t)hlen_override : (uint64_t)hl;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(L >> (8 * i));
    memcpy(b + 8, header, hl);
    if (data_len) {
        if (data) memcpy(b + 8 + hl, data, data_len);
        else memset(b + 8 + hl, 0, data_len);
    }
    *out_len = n;
    return b;
}

static int contains(const char * hay, const char * needle) { return !needle || strstr(hay, needle) != NULL; }

// Writes the image to a file, opens it, and checks the status and that the message names the file and the
// expected substrings.
static void expect_open_fail(const char * label, const uint8_t * img, size_t n, enum sd3q_status want, const char * s1,
                             const char * s2) {
    char name[64];
    snprintf(name, sizeof name, "bad-%s.safetensors", label);
    for (char * c = name; *c; c++)
        if (*c == ' ' || *c == '/') *c = '_';
    const char * path = tpath(name);
    write_bytes(path, img, n);
    struct st_file f;
    struct sd3q_errbuf e;
    memset(&e, 0, sizeof e);
    enum sd3q_status st = st_open(path, &f, &e);
    int ok = st == want && contains(e.msg, path) && contains(e.msg, s1) && contains(e.msg, s2);
    printf("%-32s %-14s %s\n    -> %s\n", label, sd3q_status_str(st), ok ? "OK" : "NOT OK", e.msg);
    CHECKF(ok, "%s: status %d (want %d), message \"%s\" should name %s, '%s' and '%s'", label, st, want, e.msg, path, s1 ? s1 : "",
           s2 ? s2 : "");
    CHECK(f.t == NULL && f.map == NULL && f.n == 0);  // nothing left open on failure
    if (st == SD3Q_OK) st_close(&f);
    st_close(&f);  // closing a failed (zeroed) file is harmless
}

static void expect_header_fail(const char * label, const char * header, size_t data_len, enum sd3q_status want, const char * s1,
                               const char * s2) {
    size_t n;
    uint8_t * img = build(header, -1, NULL, data_len, &n);
    expect_open_fail(label, img, n, want, s1, s2);
    free(img);
}

// ---- reader: bad inputs ---------------------------------------------------------------------------------------------

static void test_bad_files(void) {
    printf("== malformed files\n");
    expect_open_fail("empty file", (const uint8_t *)"", 0, SD3Q_ERR_FORMAT, "0 bytes", "header");
    expect_open_fail("5 bytes", (const uint8_t *)"\x02\0\0\0\0", 5, SD3Q_ERR_FORMAT, "5 bytes", "header");
    expect_open_fail("7 bytes", (const uint8_t *)"\x02\0\0\0\0\0\0", 7, SD3Q_ERR_FORMAT, "7 bytes", NULL);
    size_t n;
    uint8_t * img = build("{}", 1000, NULL, 10, &n);
    expect_open_fail("header length past EOF", img, n, SD3Q_ERR_FORMAT, "header length 1000", "past the end");
    free(img);
    img = build("{}", 200ll * 1024 * 1024, NULL, 0, &n);
    expect_open_fail("header length 200 MB", img, n, SD3Q_ERR_FORMAT, "header length 209715200", "limit");
    free(img);
    img = build("{}", 0x7fffffffffffffffll, NULL, 0, &n);
    expect_open_fail("header length 2^63-1", img, n, SD3Q_ERR_FORMAT, "header length", "limit");
    free(img);
    uint8_t allff[16];
    memset(allff, 0xff, sizeof allff);
    expect_open_fail("header length 2^64-1", allff, sizeof allff, SD3Q_ERR_FORMAT, "header length", "limit");
    img = build("{}", 8, NULL, 0, &n);  // says 8, file holds 2 header bytes
    expect_open_fail("header length past EOF by 6", img, n, SD3Q_ERR_FORMAT, "header length 8", NULL);
    free(img);
    expect_header_fail("header 1 byte", "{", 0, SD3Q_ERR_FORMAT, "header length 1", NULL);
    expect_header_fail("header not JSON", "{\"a\": ", 0, SD3Q_ERR_FORMAT, "JSON", NULL);
    expect_header_fail("header binary junk", "\x01\x02\x03\x04garbage", 0, SD3Q_ERR_FORMAT, "JSON", NULL);
    expect_header_fail("trailing bytes after JSON",
                       "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}} garbage", 1, SD3Q_ERR_FORMAT,
                       "not valid JSON", "after the JSON object");
    expect_header_fail("second JSON object", "{} {\"w.a\": 1}", 0, SD3Q_ERR_FORMAT, "not valid JSON", NULL);
    img = build("{}", 8, NULL, 6, &n);  // header "{}" + 6 NUL bytes: NUL padding is not JSON whitespace
    expect_open_fail("NUL padding", img, n, SD3Q_ERR_FORMAT, "not valid JSON", NULL);
    free(img);
    expect_header_fail("header JSON array", "[1, 2, 3]", 0, SD3Q_ERR_FORMAT, "not a JSON object", NULL);
    expect_header_fail("header JSON string", "\"tensors\"", 0, SD3Q_ERR_FORMAT, "not a JSON object", NULL);
    expect_header_fail("header JSON number", "12345678", 0, SD3Q_ERR_FORMAT, "not a JSON object", NULL);
    expect_header_fail("entry not an object", "{\"w.a\": [1, 2]}", 0, SD3Q_ERR_FORMAT, "'w.a'", "not a JSON object");
    expect_header_fail("dtype missing", "{\"w.a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, SD3Q_ERR_FORMAT, "'w.a'", "dtype");
    expect_header_fail("dtype not a string", "{\"w.a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, SD3Q_ERR_FORMAT,
                       "'w.a'", "dtype");
    expect_header_fail("unknown dtype F64", "{\"w.a\": {\"dtype\": \"F64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
                       SD3Q_ERR_FORMAT, "'w.a'", "F64");
    expect_header_fail("unknown dtype f32 (case)", "{\"w.a\": {\"dtype\": \"f32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "\"f32\"");
    expect_header_fail("unknown dtype F8_E5M2", "{\"w.a\": {\"dtype\": \"F8_E5M2\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
                       SD3Q_ERR_FORMAT, "'w.a'", "F8_E5M2");
    expect_header_fail("shape missing", "{\"w.a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, SD3Q_ERR_FORMAT, "'w.a'", "shape");
    expect_header_fail("shape not an array", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": 1, \"data_offsets\": [0, 4]}}", 4, SD3Q_ERR_FORMAT,
                       "'w.a'", "shape");
    expect_header_fail("shape negative", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2, -3], \"data_offsets\": [0, 24]}}", 24,
                       SD3Q_ERR_FORMAT, "'w.a'", "shape[1]");
    expect_header_fail("shape fractional", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 10]}}", 10,
                       SD3Q_ERR_FORMAT, "'w.a'", "shape[0]");
    expect_header_fail("shape as string", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [\"2\"], \"data_offsets\": [0, 8]}}", 8,
                       SD3Q_ERR_FORMAT, "'w.a'", "shape[0]");
    expect_header_fail("shape 1e300", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [1e300], \"data_offsets\": [0, 1]}}", 1, SD3Q_ERR_FORMAT,
                       "'w.a'", "shape[0]");
    expect_header_fail("shape 2^53+2", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [1, 9007199254740994], \"data_offsets\": [0, 1]}}", 1,
                       SD3Q_ERR_FORMAT, "'w.a'", "shape[1]");
    expect_header_fail("numel overflow 2^32*2^32",
                       "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [4294967296, 4294967296], \"data_offsets\": [0, 0]}}", 0, SD3Q_ERR_FORMAT,
                       "'w.a'", "element count overflows");
    expect_header_fail("numel overflow 3 dims",
                       "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [2097152, 2097152, 2097152], \"data_offsets\": [0, 0]}}", 0,
                       SD3Q_ERR_FORMAT, "'w.a'", "overflow");
    expect_header_fail("byte size overflow I64 2^62",
                       "{\"w.a\": {\"dtype\": \"I64\", \"shape\": [2147483648, 2147483648], \"data_offsets\": [0, 0]}}", 0,
                       SD3Q_ERR_FORMAT, "'w.a'", "byte size overflows");
    expect_header_fail("9 dims",
                       "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, SD3Q_ERR_FORMAT,
                       "'w.a'", "9 dimensions");
    expect_header_fail("data_offsets missing", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, SD3Q_ERR_FORMAT, "'w.a'",
                       "data_offsets");
    expect_header_fail("data_offsets 1 entry", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4]}}", 4, SD3Q_ERR_FORMAT,
                       "'w.a'", "data_offsets");
    expect_header_fail("data_offsets 3 entries", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 8,
                       SD3Q_ERR_FORMAT, "'w.a'", "data_offsets");
    expect_header_fail("data_offsets not array", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": \"0-4\"}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "data_offsets");
    expect_header_fail("data_offsets negative", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "data_offsets");
    expect_header_fail("data_offsets fractional", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [0.5, 3.5]}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "data_offsets");
    expect_header_fail("data_offsets huge", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [3], \"data_offsets\": [1e30, 1e30]}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "data_offsets");
    expect_header_fail("begin > end", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 8, SD3Q_ERR_FORMAT,
                       "'w.a'", "begin 8 > end 4");
    expect_header_fail("span != numel*size", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [0, 20]}}", 24,
                       SD3Q_ERR_FORMAT, "'w.a'", "expected 24");
    expect_header_fail("span too long", "{\"w.a\": {\"dtype\": \"BF16\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, SD3Q_ERR_FORMAT,
                       "'w.a'", "span 8 bytes");
    expect_header_fail("end past EOF (truncated)", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 12,
                       SD3Q_ERR_FORMAT, "'w.a'", "past the end");
    expect_header_fail("zero-size past EOF", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [64, 64]}}", 4,
                       SD3Q_ERR_FORMAT, "'w.a'", "past the end");
    expect_header_fail("overlapping offsets",
                       "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"w.b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                       12, SD3Q_ERR_FORMAT, "'w.a'", "'w.b'");
    expect_header_fail("identical offsets",
                       "{\"w.b\": {\"dtype\": \"U8\", \"shape\": [4], \"data_offsets\": [0, 4]},"
                       " \"w.a\": {\"dtype\": \"I32\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
                       4, SD3Q_ERR_FORMAT, "overlap", "'w.a'");
    expect_header_fail("hole before the first tensor", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12,
                       SD3Q_ERR_FORMAT, "bytes [0, 4) belong to no tensor", "'w.a'");
    expect_header_fail("hole between tensors",
                       "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                       " \"w.b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [9, 13]}}",
                       13, SD3Q_ERR_FORMAT, "bytes [8, 9) belong to no tensor", "'w.b'");
    expect_header_fail("bytes after the last tensor", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 9,
                       SD3Q_ERR_FORMAT, "bytes [8, 9) after the last tensor", "entirely indexed");
    expect_header_fail("data but no tensors", "{\"__metadata__\": {\"format\": \"pt\"}}", 16, SD3Q_ERR_FORMAT,
                       "bytes [0, 16) after the last tensor", NULL);
    expect_header_fail("one inside another",
                       "{\"big\": {\"dtype\": \"U8\", \"shape\": [16], \"data_offsets\": [0, 16]},"
                       " \"mid\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [16, 18]},"
                       " \"small\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [5, 7]}}",
                       18, SD3Q_ERR_FORMAT, "'big'", "'small'");
    expect_header_fail("duplicate tensor names",
                       "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [0, 2]},"
                       " \"w.a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [2, 4]}}",
                       4, SD3Q_ERR_FORMAT, "'w.a'", "twice");
    expect_header_fail("__metadata__ a string", "{\"__metadata__\": \"pt\"}", 0, SD3Q_ERR_FORMAT, "__metadata__", "object");
    expect_header_fail("__metadata__ an array", "{\"__metadata__\": [\"format\", \"pt\"]}", 0, SD3Q_ERR_FORMAT, "__metadata__", NULL);
    expect_header_fail("__metadata__ number value", "{\"__metadata__\": {\"format\": \"pt\", \"epoch\": 3}}", 0, SD3Q_ERR_FORMAT,
                       "__metadata__", "'epoch'");
    expect_header_fail("__metadata__ object value", "{\"__metadata__\": {\"cfg\": {\"a\": \"b\"}}}", 0, SD3Q_ERR_FORMAT, "__metadata__",
                       "'cfg'");
    expect_header_fail("__metadata__ null value", "{\"__metadata__\": {\"n\": null}}", 0, SD3Q_ERR_FORMAT, "__metadata__", "'n'");
    expect_header_fail("__metadata__ twice", "{\"__metadata__\": {}, \"__metadata__\": {\"a\": \"b\"}}", 0, SD3Q_ERR_FORMAT, "__metadata__",
                       "duplicate");
    expect_header_fail("empty tensor name", "{\"\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1, SD3Q_ERR_FORMAT,
                       "empty name", NULL);

    // not files at all
    struct st_file f;
    struct sd3q_errbuf e;
    const char * missing = tpath("does-not-exist.safetensors");
    CHECK(st_open(missing, &f, &e) == SD3Q_ERR_MISSING && strstr(e.msg, missing));
    printf("%-32s -> %s\n", "missing file", e.msg);
    CHECK(st_open(g_dir, &f, &e) == SD3Q_ERR_IO && strstr(e.msg, g_dir) && strstr(e.msg, "regular file"));
    printf("%-32s -> %s\n", "a directory", e.msg);
}

// ---- reader: valid edge cases ------------------------------------------------------------------------------------------

struct vt {
    const char * name;
    const char * dtype;
    enum dtype   type;
    int          ndim;
    int64_t      shape[8];
    size_t       nbytes;
    size_t       off;
};

static void test_valid(void) {
    printf("== valid edge cases\n");
    struct vt ts[] = {
        {"a.f32", "F32", DT_F32, 2, {2, 3}, 24, 0},
        {"b.f16", "F16", DT_F16, 1, {5}, 10, 0},
        {"c.bf16", "BF16", DT_BF16, 2, {1, 3}, 6, 0},
        {"d.f8", "F8_E4M3", DT_F8_E4M3, 1, {7}, 7, 0},
        {"e.i8", "I8", DT_I8, 3, {1, 1, 3}, 3, 0},
        {"f.u8", "U8", DT_U8, 1, {9}, 9, 0},
        {"g.i32", "I32", DT_I32, 1, {2}, 8, 0},
        {"h.i64", "I64", DT_I64, 2, {3, 1}, 24, 0},
        {"i.scalar", "F32", DT_F32, 0, {0}, 4, 0},
        {"j.empty", "F32", DT_F32, 1, {0}, 0, 0},
        {"k.empty2d", "I64", DT_I64, 2, {3, 0}, 0, 0},
        {"l.eightdims", "U8", DT_U8, 8, {1, 2, 1, 2, 1, 1, 1, 1}, 4, 0},
        {"m.\"quoted\"\\name", "U8", DT_U8, 1, {1}, 1, 0},
        {"n.unicode.\xc3\xa9", "U8", DT_U8, 1, {2}, 2, 0},
    };
    const char * json_name[] = {"a.f32", "b.f16", "c.bf16", "d.f8", "e.i8", "f.u8", "g.i32", "h.i64", "i.scalar", "j.empty",
                                "k.empty2d", "l.eightdims", "m.\\\"quoted\\\"\\\\name", "n.unicode.\xc3\xa9"};
    int nt = (int)(sizeof ts / sizeof ts[0]);
    // data laid out in reverse order, unaligned (odd sizes follow one another; alignment is not required) and without
    // holes (the format requires the data to be entirely indexed); empty tensors sit at offsets that coincide with
    // other tensors' starts (allowed: they take no bytes)
    size_t off = 0;
    for (int i = nt - 1; i >= 0; i--) {
        ts[i].off = off;
        off += ts[i].nbytes;
    }
    ts[9].off = ts[0].off;
    size_t data_len = off;
    uint8_t * data = malloc(data_len);
    for (size_t i = 0; i < data_len; i++) data[i] = (uint8_t)rand_below(256);
    char header[8192];
    size_t hl = (size_t)snprintf(header, sizeof header, "{\"__metadata__\": {\"format\": \"pt\", \"note\": \"a \\\"b\\\" \\u00e9\"}");
    for (int i = 0; i < nt; i++) {
        hl += (size_t)snprintf(header + hl, sizeof header - hl, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [", json_name[i], ts[i].dtype);
        for (int d = 0; d < ts[i].ndim; d++) hl += (size_t)snprintf(header + hl, sizeof header - hl, d ? ", %lld" : "%lld", (long long)ts[i].shape[d]);
        hl += (size_t)snprintf(header + hl, sizeof header - hl, "], \"data_offsets\": [%zu, %zu]}", ts[i].off, ts[i].off + ts[i].nbytes);
    }
    hl += (size_t)snprintf(header + hl, sizeof header - hl, "}       ");  // trailing spaces, as writers pad
    size_t n;
    uint8_t * img = build(header, -1, data, data_len, &n);
    const char * path = tpath("valid.safetensors");
    write_bytes(path, img, n);
    struct st_file f;
    struct sd3q_errbuf e;
    enum sd3q_status st = st_open(path, &f, &e);
    CHECKF(st == SD3Q_OK, "valid file rejected: %s", e.msg);
    if (st == SD3Q_OK) {
        CHECKF(f.n == nt, "%d tensors, expected %d", f.n, nt);
        CHECK(f.data_start == 8 + hl);
        for (int i = 1; i < f.n; i++) CHECK(strcmp(f.t[i - 1].name, f.t[i].name) < 0);  // sorted by name
        for (int i = 0; i < nt; i++) {
            const struct st_tensor * t = st_find(&f, ts[i].name);
            CHECKF(t != NULL, "tensor '%s' not found", ts[i].name);
            if (!t) continue;
            int64_t numel = 1;
            for (int d = 0; d < ts[i].ndim; d++) numel *= ts[i].shape[d];
            int ok = t->type == ts[i].type && t->ndim == ts[i].ndim && t->numel == numel && t->begin == ts[i].off &&
                     t->end == ts[i].off + ts[i].nbytes && t->data == f.map + f.data_start + ts[i].off &&
                     memcmp(t->data, data + ts[i].off, ts[i].nbytes) == 0;
            for (int d = 0; d < ts[i].ndim; d++) ok &= t->shape[d] == ts[i].shape[d];
            CHECKF(ok, "tensor '%s' read back wrongly", ts[i].name);
        }
        CHECK(st_find(&f, "a.f3") == NULL && st_find(&f, "zzz") == NULL && st_find(&f, "") == NULL && st_find(&f, "__metadata__") == NULL);
        CHECK(f.n_meta == 2);
        CHECK(st_meta_get(&f, "format") && strcmp(st_meta_get(&f, "format"), "pt") == 0);
        CHECK(st_meta_get(&f, "note") && strcmp(st_meta_get(&f, "note"), "a \"b\" \xc3\xa9") == 0);
        CHECK(st_meta_get(&f, "missing") == NULL);

        // st_read_f32: shapes with free dims, conversion, wrong shape / dtype / name messages
        int64_t want[2] = {-1, 3};
        float * v = st_read_f32(&f, "a.f32", 2, want, &e);
        CHECK(v && want[0] == 2 && memcmp(v, data + ts[0].off, 24) == 0);
        free(v);
        int64_t w1[1] = {5};
        v = st_read_f32(&f, "b.f16", 1, w1, &e);
        if (v) {
            for (int i = 0; i < 5; i++) {
                uint16_t h;
                memcpy(&h, data + ts[1].off + 2 * i, 2);
                CHECK((isnan(v[i]) && isnan(f16_to_f32(h))) || v[i] == f16_to_f32(h));
            }
        }
        CHECK(v != NULL);
        free(v);
        int64_t w0[1] = {0};
        v = st_read_f32(&f, "i.scalar", 0, w0, &e);
        CHECK(v && memcmp(v, data + ts[8].off, 4) == 0);
        free(v);
        int64_t we[1] = {-1};
        v = st_read_f32(&f, "j.empty", 1, we, &e);
        CHECK(v && we[0] == 0);
        free(v);
        int64_t bad[2] = {3, -1};
        v = st_read_f32(&f, "a.f32", 2, bad, &e);
        CHECKF(!v && strstr(e.msg, path) && strstr(e.msg, "'a.f32'") && strstr(e.msg, "[2, 3]") && strstr(e.msg, "[3, -1]"),
               "wrong-shape message: %s", e.msg);
        printf("st_read_f32 wrong shape -> %s\n", e.msg);
        int64_t rank[1] = {-1};
        v = st_read_f32(&f, "a.f32", 1, rank, &e);
        CHECK(!v && strstr(e.msg, "'a.f32'"));
        int64_t wi[1] = {2};
        v = st_read_f32(&f, "g.i32", 1, wi, &e);
        CHECKF(!v && strstr(e.msg, path) && strstr(e.msg, "'g.i32'") && strstr(e.msg, "I32"), "int dtype message: %s", e.msg);
        printf("st_read_f32 integer dtype -> %s\n", e.msg);
        v = st_read_f32(&f, "nope", 1, wi, &e);
        CHECKF(!v && strstr(e.msg, path) && strstr(e.msg, "'nope'"), "missing message: %s", e.msg);
        st_close(&f);
        CHECK(f.map == NULL && f.t == NULL);
    }

    // every strict prefix of the valid image must be rejected without reading out of bounds
    int accepted = 0;
    for (size_t k = 0; k < n; k++) {
        uint8_t * cut = malloc(k ? k : 1);
        memcpy(cut, img, k);
        struct st_file g;
        if (st_parse(cut, k, "cut", &g, &e) == SD3Q_OK) {
            accepted++;
            st_close(&g);
        } else {
            CHECKF(strstr(e.msg, "cut") != NULL, "prefix %zu: message without the label: %s", k, e.msg);
        }
        free(cut);
    }
    CHECKF(accepted == 0, "%d truncated prefixes were accepted", accepted);
    printf("all %zu truncations of a %zu-byte file rejected\n", n, n);

    // a header of nothing but an empty object, and one of only metadata: valid, no tensors
    const char * empties[] = {"{}", "{\"__metadata__\": {}}", "  {}  ", "{}\n\t\r "};
    for (size_t i = 0; i < 4; i++) {
        size_t m;
        uint8_t * im = build(empties[i], -1, NULL, 0, &m);
        struct st_file g;
        CHECKF(st_parse(im, m, "empty", &g, &e) == SD3Q_OK && g.n == 0, "header '%s' rejected: %s", empties[i], e.msg);
        st_close(&g);
        free(im);
    }
    free(img);
    free(data);
}

// ---- writer ----------------------------------------------------------------------------------------------------------

// 1 when some file in `dir` has ".tmp." in its name (a left-over temporary file).
static int has_temp_file(const char * dir) {
    DIR * d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent * de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

static uint8_t * slurp(const char * path, size_t * n) {
    char * p;
    struct sd3q_errbuf e;
    if (read_file(path, 1u << 30, &p, n, &e) != SD3Q_OK) return NULL;
    return (uint8_t *)p;
}

static void test_writer(void) {
    printf("== writer\n");
    float a[6];
    fill_randn(a, 6, 1.0f);
    uint16_t b[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000};
    uint8_t c[3] = {0x38, 0x7e, 0x81};
    int64_t d[2] = {INT64_MIN, 42};
    float s = 3.5f;
    int64_t sa[2] = {2, 3}, sb[1] = {5}, sc[1] = {3}, sd[2] = {2, 1}, se[1] = {0}, sz[3] = {4, 0, 2};
    struct st_wtensor wt[] = {
        {"model.a", DT_F32, 2, sa, a},     {"model.b", DT_F16, 1, sb, b}, {"model.c", DT_F8_E4M3, 1, sc, c},
        {"zz.\"q\"", DT_I64, 2, sd, d},    {"scalar", DT_F32, 0, NULL, &s}, {"empty", DT_BF16, 1, se, NULL},
        {"empty3", DT_U8, 3, sz, NULL},
    };
    int nw = (int)(sizeof wt / sizeof wt[0]);
    const char * meta[] = {"format", "pt", "quote \"x\"", "line\nbreak \xe2\x9c\x93"};
    const char * path = tpath("written.safetensors");
    struct sd3q_errbuf e;
    CHECKF(st_write(path, wt, nw, meta, 2, &e) == SD3Q_OK, "st_write: %s", e.msg);
    CHECK(!has_temp_file(g_dir));
    struct stat sbuf;
    CHECK(stat(path, &sbuf) == 0 && (sbuf.st_mode & 0777) == 0644);
    struct st_file f;
    enum sd3q_status st = st_open(path, &f, &e);
    CHECKF(st == SD3Q_OK, "reading back: %s", e.msg);
    if (st == SD3Q_OK) {
        CHECK(f.n == nw);
        CHECKF(f.data_start % 8 == 0, "data section starts at %zu, not 8-byte aligned", f.data_start);
        for (int i = 0; i < nw; i++) {
            const struct st_tensor * t = st_find(&f, wt[i].name);
            CHECKF(t != NULL, "'%s' missing after round trip", wt[i].name);
            if (!t) continue;
            int64_t numel = 1;
            for (int k = 0; k < wt[i].ndim; k++) numel *= wt[i].shape[k];
            int ok = t->type == wt[i].type && t->ndim == wt[i].ndim && t->numel == numel;
            for (int k = 0; ok && k < wt[i].ndim; k++) ok = t->shape[k] == wt[i].shape[k];
            if (ok && numel) ok = memcmp(t->data, wt[i].data, (size_t)numel * (size_t)dtype_size(wt[i].type)) == 0;
            CHECKF(ok, "'%s' differs after round trip", wt[i].name);
        }
        CHECK(f.n_meta == 2 && st_meta_get(&f, "format") && strcmp(st_meta_get(&f, "format"), "pt") == 0);
        CHECK(st_meta_get(&f, meta[2]) && strcmp(st_meta_get(&f, meta[2]), meta[3]) == 0);
        st_close(&f);
    }
    printf("round trip: %d tensors (F32, F16, F8, I64, scalar, empty) + 2 metadata pairs OK\n", nw);

    // an existing file is replaced by a successful write
    size_t n_old;
    uint8_t * old = slurp(path, &n_old);
    CHECK(st_write(path, wt, 1, NULL, 0, &e) == SD3Q_OK);
    CHECK(st_open(path, &f, &e) == SD3Q_OK && f.n == 1 && f.n_meta == 0);
    st_close(&f);
    CHECK(st_write(path, wt, nw, meta, 2, &e) == SD3Q_OK);  // restore the full version as the "old" content
    size_t n_cur;
    uint8_t * cur = slurp(path, &n_cur);
    CHECK(cur && old && n_cur == n_old && memcmp(cur, old, n_old) == 0);  // the writer is deterministic
    free(cur);

    // a name used twice, or the reserved "__metadata__": rejected before anything is written, the old file kept
    struct st_wtensor dup[2] = {wt[0], wt[1]};
    dup[1].name = wt[0].name;
    st = st_write(path, dup, 2, NULL, 0, &e);
    CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(e.msg, "model.a") && strstr(e.msg, "twice"), "duplicate name: %d %s", st, e.msg);
    printf("duplicate tensor name -> %s\n", e.msg);
    dup[1].name = "__metadata__";
    st = st_write(path, dup, 2, NULL, 0, &e);
    CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(e.msg, "reserved"), "__metadata__ as a name: %d %s", st, e.msg);
    cur = slurp(path, &n_cur);
    CHECK(cur && n_cur == n_old && memcmp(cur, old, n_old) == 0 && !has_temp_file(g_dir));
    free(cur);

    // failures: each returns SD3Q_ERR_IO naming the path and leaves nothing behind
    char sub[1200], fileparent[1200];
    snprintf(sub, sizeof sub, "%s/no/such/dir/x.safetensors", g_dir);
    st = st_write(sub, wt, nw, meta, 2, &e);
    CHECKF(st == SD3Q_ERR_IO && strstr(e.msg, sub), "missing folder: %d %s", st, e.msg);
    printf("write into a missing folder -> %s\n", e.msg);
    snprintf(fileparent, sizeof fileparent, "%s/x.safetensors", path);  // parent is a regular file
    st = st_write(fileparent, wt, nw, NULL, 0, &e);
    CHECKF(st == SD3Q_ERR_IO && strstr(e.msg, fileparent), "file as folder: %d %s", st, e.msg);
    printf("write below a regular file -> %s\n", e.msg);
    st = st_write("/proc/sd3q-test.safetensors", wt, nw, NULL, 0, &e);
    CHECKF(st == SD3Q_ERR_IO && strstr(e.msg, "/proc/sd3q-test.safetensors"), "/proc: %d %s", st, e.msg);
    CHECK(access("/proc/sd3q-test.safetensors", F_OK) != 0);
    printf("write into /proc -> %s\n", e.msg);
    // the target is an existing (non-empty) directory: the temporary file is written, the rename fails, the
    // temporary file is removed and the directory is untouched
    const char * dirtarget = tpath("iam-a-dir.safetensors");
    mkdir(dirtarget, 0755);
    char inside[1300];
    snprintf(inside, sizeof inside, "%s/keep", dirtarget);
    write_bytes(inside, "k", 1);
    st = st_write(dirtarget, wt, nw, meta, 2, &e);
    CHECKF(st == SD3Q_ERR_IO && strstr(e.msg, dirtarget), "directory target: %d %s", st, e.msg);
    CHECK(path_is_dir(dirtarget) && path_is_file(inside));
    CHECKF(!has_temp_file(g_dir), "a temporary file was left in %s", g_dir);
    printf("write over a directory -> %s\n", e.msg);

    // disk full, simulated: RLIMIT_FSIZE makes writes past 16 KiB fail with EFBIG (root is not exempt)
    enum { BIG = 1 << 16 };
    float * big = calloc(BIG, sizeof(float));
    int64_t sbig[1] = {BIG};
    struct st_wtensor wbig = {"big", DT_F32, 1, sbig, big};
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 16384;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        st = st_write(path, &wbig, 1, NULL, 0, &e);
        setrlimit(RLIMIT_FSIZE, &old_lim);
        CHECKF(st == SD3Q_ERR_IO && strstr(e.msg, path), "write past RLIMIT_FSIZE: %d %s", st, e.msg);
        printf("write that runs out of space -> %s\n", e.msg);
        size_t n_after;
        uint8_t * after = slurp(path, &n_after);
        CHECKF(after && n_after == n_old && memcmp(after, old, n_old) == 0, "the old file was damaged by a failed write");
        free(after);
        CHECKF(!has_temp_file(g_dir), "a temporary file was left after the failed write");
    } else {
        setrlimit(RLIMIT_FSIZE, &old_lim);
        CHECKF(0, "setrlimit(RLIMIT_FSIZE) failed: %s", strerror(errno));
    }
    signal(SIGXFSZ, old_sig);
    // the same write without the limit succeeds
    CHECK(st_write(path, &wbig, 1, NULL, 0, &e) == SD3Q_OK);
    CHECK(st_open(path, &f, &e) == SD3Q_OK && f.n == 1 && f.t[0].numel == BIG);
    st_close(&f);
    free(big);

    // size overflow in a tensor to write: refused before anything is created
    int64_t huge[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    struct st_wtensor wh = {"huge", DT_F32, 2, huge, a};
    const char * hp = tpath("huge.safetensors");
    st = st_write(hp, &wh, 1, NULL, 0, &e);
    CHECKF(st == SD3Q_ERR_INVALID_ARG && strstr(e.msg, "'huge'"), "overflowing shape: %d %s", st, e.msg);
    CHECK(access(hp, F_OK) != 0 && !has_temp_file(g_dir));

    // write_file_atomic replaces content and fails cleanly the same way
    const char * tp = tpath("plain.txt");
    CHECK(write_file_atomic(tp, "one", 3, &e) == SD3Q_OK);
    CHECK(write_file_atomic(tp, "second", 6, &e) == SD3Q_OK);
    size_t tn;
    uint8_t * tc = slurp(tp, &tn);
    CHECK(tc && tn == 6 && memcmp(tc, "second", 6) == 0);
    free(tc);
    CHECK(write_file_atomic(sub, "x", 1, &e) == SD3Q_ERR_IO);
    free(old);
}

int main(void) {
    make_tmpdir();
    printf("scratch folder %s\n", g_dir);
    test_bad_files();
    test_valid();
    test_writer();
    rm_rf(g_dir);
    return test_finish("test-safetensors");
}
