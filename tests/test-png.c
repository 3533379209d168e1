/*
 * test-png.c — images: PNG round trip (pixels and text chunks, ASCII as tEXt and UTF-8 as iTXt, the AUTOMATIC1111
 * "parameters" text parsed back), reading of other PNG flavours (gray, gray+alpha, palette, RGBA, 16-bit, interlaced)
 * as 8-bit RGB, hostile files (truncated, bad CRC, huge dimensions, not a PNG, empty) refused with a message naming the
 * file, failed writes (missing folder, a file as folder, a full disk simulated with RLIMIT_FSIZE) leaving neither the
 * output nor a temporary file, and the float ↔ uint8 conversions of diffusers' image processor.
 */
#include <dirent.h>
#include <math.h>
#include <png.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "io/fileutil.h"
#include "io/png.h"
#include "testutil.h"

static char g_dir[512];

// A path inside the test's scratch folder.
static const char * tmp(const char * name) {
    static char buf[4][700];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

// Number of leftover temporary files (*.tmp.*) in the scratch folder.
static int n_temp_files(void) {
    DIR * d = opendir(g_dir);
    int n = 0;
    struct dirent * de;
    while (d && (de = readdir(d)))
        if (strstr(de->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static int exists(const char * p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

// Reads a whole file into a malloc'd buffer.
static uint8_t * slurp(const char * p, size_t * n) {
    char * buf = NULL;
    struct sd3q_errbuf e;
    if (read_file(p, 1 << 26, &buf, n, &e) != SD3Q_OK) return NULL;
    return (uint8_t *)buf;
}

static void spit(const char * p, const uint8_t * d, size_t n) {
    FILE * f = fopen(p, "wb");
    SD3Q_ASSERT(f);
    if (n) fwrite(d, 1, n, f);
    fclose(f);
}

// Expects pngio_read to fail with `want` and a message containing `frag` and the path.
static void expect_bad(const char * label, const char * path, enum sd3q_status want, const char * frag) {
    struct rgb_image img;
    struct sd3q_errbuf e = {{0}};
    enum sd3q_status st = pngio_read(path, &img, &e);
    printf("%-22s → %s: %s\n", label, sd3q_status_str(st), e.msg);
    CHECKF(st == want, "%s: status %d, want %d", label, st, want);
    CHECKF(strstr(e.msg, path) != NULL, "%s: message does not name the file", label);
    CHECKF(!frag || strstr(e.msg, frag) != NULL, "%s: message lacks '%s'", label, frag);
    CHECK(img.rgb == NULL && img.n_text == 0);
    rgb_image_free(&img);
}

// Writes a PNG of any flavour with libpng directly (rows given as packed bytes).
static void write_flavour(const char * path, int w, int h, int depth, int ctype, int interlace, const uint8_t * data, size_t rowbytes,
                          const png_color * pal, int npal) {
    FILE * f = fopen(path, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    SD3Q_ASSERT(f && png && info);
    if (setjmp(png_jmpbuf(png))) SD3Q_ASSERT(!"libpng write failed in the test");
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, ctype, interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    for (int p = 0; p < passes; p++)
        for (int y = 0; y < h; y++) png_write_row(png, data + (size_t)y * rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

// Appends a chunk (length, type, data, CRC) to buf at *n.
static void put_chunk(uint8_t * buf, size_t * n, const char * type, const uint8_t * data, uint32_t len) {
    uint8_t * p = buf + *n;
    p[0] = (uint8_t)(len >> 24), p[1] = (uint8_t)(len >> 16), p[2] = (uint8_t)(len >> 8), p[3] = (uint8_t)len;
    memcpy(p + 4, type, 4);
    if (len) memcpy(p + 8, data, len);
    uint32_t crc = (uint32_t)crc32(0L, p + 4, len + 4);
    p[8 + len] = (uint8_t)(crc >> 24), p[9 + len] = (uint8_t)(crc >> 16), p[10 + len] = (uint8_t)(crc >> 8), p[11 + len] = (uint8_t)crc;
    *n += 12 + len;
}

static void test_round_trip(void) {
    const int W = 37, H = 23;
    uint8_t * rgb = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)rand_below(256);
    struct pngio_params p = {"a photo of an astronaut, riding a horse: on the moon", "blurry, low quality", 42, 28, 7.0, 3.0, W, H,
                           "sd3_medium_incl_clips.safetensors", NULL};
    struct sd3q_errbuf e;
    enum sd3q_status st = pngio_write_image(tmp("rt.png"), rgb, W, H, &p, &e);
    CHECKF(st == SD3Q_OK, "%s", e.msg);
    struct rgb_image img;
    st = pngio_read(tmp("rt.png"), &img, &e);
    CHECKF(st == SD3Q_OK, "%s", e.msg);
    if (st == SD3Q_OK) {
        CHECK(img.width == W && img.height == H);
        CHECK(memcmp(img.rgb, rgb, (size_t)W * H * 3) == 0);
        const char * par = rgb_image_text(&img, "parameters");
        CHECK(par != NULL);
        if (par) {
            printf("parameters text:\n%s\n", par);
            // parse: prompt line, negative line, then "Key: value" pairs
            const char * nl1 = strchr(par, '\n');
            CHECK(nl1 && (size_t)(nl1 - par) == strlen(p.prompt) && strncmp(par, p.prompt, strlen(p.prompt)) == 0);
            CHECK(nl1 && strncmp(nl1 + 1, "Negative prompt: blurry, low quality\n", 37) == 0);
            const char * kv = nl1 ? strchr(nl1 + 1, '\n') : NULL;
            const char * line = "Steps: 28, Sampler: Euler, CFG scale: 7, Seed: 42, Size: 37x23, Model: ";
            CHECK(kv && strncmp(kv + 1, line, strlen(line)) == 0);
            char ver[64];
            snprintf(ver, sizeof ver, ", Shift: 3, Version: sd3q %s", sd3q_version());
            CHECK(kv && strstr(kv, ver) != NULL);
            CHECK(kv && strstr(kv, "Model: sd3_medium_incl_clips.safetensors") != NULL);
        }
        CHECK(rgb_image_text(&img, "seed") && strcmp(rgb_image_text(&img, "seed"), "42") == 0);
        CHECK(rgb_image_text(&img, "steps") && strcmp(rgb_image_text(&img, "steps"), "28") == 0);
        CHECK(rgb_image_text(&img, "size") && strcmp(rgb_image_text(&img, "size"), "37x23") == 0);
        CHECK(rgb_image_text(&img, "negative_prompt") && strcmp(rgb_image_text(&img, "negative_prompt"), p.negative_prompt) == 0);
        CHECK(rgb_image_text(&img, "Software") && strncmp(rgb_image_text(&img, "Software"), "sd3q ", 5) == 0);
    }
    rgb_image_free(&img);
    // UTF-8 prompt (iTXt), a model name with a comma (quoted), empty negative prompt (no line), a huge seed
    struct pngio_params q = {"une tortue \xc3\xa0 lunettes \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac", "", 18446744073709551615ull, 4, 4.5, 1.0,
                           W, H, "a,b", "Euler"};
    CHECK(pngio_write_image(tmp("utf8.png"), rgb, W, H, &q, &e) == SD3Q_OK);
    CHECK(pngio_read(tmp("utf8.png"), &img, &e) == SD3Q_OK);
    const char * par = rgb_image_text(&img, "parameters");
    CHECK(par && strncmp(par, q.prompt, strlen(q.prompt)) == 0 && par[strlen(q.prompt)] == '\n');
    CHECK(par && !strstr(par, "Negative prompt"));
    CHECK(par && strstr(par, "Seed: 18446744073709551615,") && strstr(par, "Model: \"a,b\",") && strstr(par, "CFG scale: 4.5,"));
    CHECK(rgb_image_text(&img, "prompt") && strcmp(rgb_image_text(&img, "prompt"), q.prompt) == 0);
    rgb_image_free(&img);
    // no parameters at all; overwriting an existing file
    CHECK(pngio_write_rgb8(tmp("rt.png"), rgb, W, H, NULL, 0, &e) == SD3Q_OK);
    CHECK(pngio_read(tmp("rt.png"), &img, &e) == SD3Q_OK && img.n_text == 0 && memcmp(img.rgb, rgb, (size_t)W * H * 3) == 0);
    rgb_image_free(&img);
    // invalid arguments
    struct pngio_text bad = {"", "x"};
    CHECK(pngio_write_rgb8(tmp("bad.png"), rgb, W, H, &bad, 1, &e) == SD3Q_ERR_INVALID_ARG);
    CHECK(pngio_write_rgb8(tmp("bad.png"), rgb, 0, H, NULL, 0, &e) == SD3Q_ERR_INVALID_ARG);
    CHECK(!exists(tmp("bad.png")));
    CHECK(n_temp_files() == 0);
    free(rgb);
}

static void test_flavours(void) {
    const int W = 5, H = 3;
    uint8_t d[5 * 3 * 8];
    struct rgb_image img;
    struct sd3q_errbuf e;
    // gray 8
    for (int i = 0; i < W * H; i++) d[i] = (uint8_t)(i * 17);
    write_flavour(tmp("g8.png"), W, H, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, d, W, NULL, 0);
    CHECK(pngio_read(tmp("g8.png"), &img, &e) == SD3Q_OK);
    int ok = img.rgb != NULL;
    for (int i = 0; ok && i < W * H; i++) ok = img.rgb[3 * i] == i * 17 && img.rgb[3 * i + 1] == i * 17 && img.rgb[3 * i + 2] == i * 17;
    CHECKF(ok, "gray 8-bit → RGB");
    rgb_image_free(&img);
    // RGBA 8, interlaced: alpha dropped
    for (int i = 0; i < W * H * 4; i++) d[i] = (uint8_t)(i * 7);
    write_flavour(tmp("rgba.png"), W, H, 8, PNG_COLOR_TYPE_RGB_ALPHA, PNG_INTERLACE_ADAM7, d, W * 4, NULL, 0);
    CHECK(pngio_read(tmp("rgba.png"), &img, &e) == SD3Q_OK);
    ok = img.rgb != NULL;
    for (int i = 0; ok && i < W * H; i++)
        for (int c = 0; c < 3; c++) ok = ok && img.rgb[3 * i + c] == d[4 * i + c];
    CHECKF(ok, "RGBA interlaced → RGB");
    rgb_image_free(&img);
    // gray+alpha 8
    for (int i = 0; i < W * H; i++) d[2 * i] = (uint8_t)(200 - i), d[2 * i + 1] = 9;
    write_flavour(tmp("ga.png"), W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, d, W * 2, NULL, 0);
    CHECK(pngio_read(tmp("ga.png"), &img, &e) == SD3Q_OK);
    ok = img.rgb != NULL;
    for (int i = 0; ok && i < W * H; i++) ok = img.rgb[3 * i] == 200 - i && img.rgb[3 * i + 2] == 200 - i;
    CHECKF(ok, "gray+alpha → RGB");
    rgb_image_free(&img);
    // palette, 4 bits
    png_color pal[3] = {{255, 0, 0}, {0, 255, 0}, {1, 2, 3}};
    for (int y = 0; y < H; y++) d[y * 3] = 0x01, d[y * 3 + 1] = 0x20, d[y * 3 + 2] = 0x00;  // indices 0 1 2 0 0 per row
    write_flavour(tmp("pal.png"), W, H, 4, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, d, 3, pal, 3);
    CHECK(pngio_read(tmp("pal.png"), &img, &e) == SD3Q_OK);
    CHECKF(img.rgb && img.rgb[0] == 255 && img.rgb[3 + 0] == 0 && img.rgb[3 + 1] == 255 && img.rgb[6] == 1 && img.rgb[7] == 2 && img.rgb[8] == 3,
           "palette → RGB");
    rgb_image_free(&img);
    // RGB 16-bit: scaled to 8 bits (65535 → 255, 0x8080 → 128)
    for (int i = 0; i < W * H * 3; i++) d[2 * i] = (i % 2) ? 0xff : 0x80, d[2 * i + 1] = (i % 2) ? 0xff : 0x80;
    write_flavour(tmp("rgb16.png"), W, H, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, d, W * 6, NULL, 0);
    CHECK(pngio_read(tmp("rgb16.png"), &img, &e) == SD3Q_OK);
    CHECKF(img.rgb && img.rgb[0] == 128 && img.rgb[1] == 255, "16-bit → 8-bit (%d %d)", img.rgb ? img.rgb[0] : -1, img.rgb ? img.rgb[1] : -1);
    rgb_image_free(&img);
}

static void test_hostile(void) {
    struct sd3q_errbuf e;
    const int W = 64, H = 48;
    uint8_t * rgb = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)(i * 31 + i / 7);
    CHECK(pngio_write_rgb8(tmp("ok.png"), rgb, W, H, NULL, 0, &e) == SD3Q_OK);
    size_t n;
    uint8_t * good = slurp(tmp("ok.png"), &n);
    SD3Q_ASSERT(good && n > 100);
    // truncated at several points
    size_t cuts[] = {8, 20, 33, n / 2, n - 12, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        spit(tmp("trunc.png"), good, cuts[i]);
        char lb[64];
        snprintf(lb, sizeof lb, "truncated at %zu/%zu", cuts[i], n);
        expect_bad(lb, tmp("trunc.png"), SD3Q_ERR_FORMAT, NULL);
    }
    // bad CRC in IHDR (byte 29 is the last CRC byte of IHDR), and in the IDAT data
    uint8_t * bad = malloc(n);
    memcpy(bad, good, n);
    bad[29] ^= 0x55;
    spit(tmp("crc.png"), bad, n);
    expect_bad("bad IHDR CRC", tmp("crc.png"), SD3Q_ERR_FORMAT, "CRC");
    memcpy(bad, good, n);
    bad[33 + 8 + 10] ^= 0x55;  // inside the first IDAT's data
    spit(tmp("crc2.png"), bad, n);
    expect_bad("corrupt IDAT", tmp("crc2.png"), SD3Q_ERR_FORMAT, NULL);
    // huge dimensions with a valid CRC
    uint8_t hdr[64];
    size_t hn = 8;
    memcpy(hdr, good, 8);
    uint8_t ihdr[13] = {0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0, 8, 2, 0, 0, 0};  // 100000 × 100000 RGB
    put_chunk(hdr, &hn, "IHDR", ihdr, 13);
    put_chunk(hdr, &hn, "IEND", NULL, 0);
    spit(tmp("huge.png"), hdr, hn);
    expect_bad("100000² image", tmp("huge.png"), SD3Q_ERR_FORMAT, "exceeds");
    uint8_t ihdr0[13] = {0, 0, 0, 0, 0, 0, 0, 1, 8, 2, 0, 0, 0};  // width 0
    hn = 8;
    put_chunk(hdr, &hn, "IHDR", ihdr0, 13);
    put_chunk(hdr, &hn, "IEND", NULL, 0);
    spit(tmp("zero.png"), hdr, hn);
    expect_bad("zero width", tmp("zero.png"), SD3Q_ERR_FORMAT, NULL);
    // not a PNG, empty, missing
    spit(tmp("text.png"), (const uint8_t *)"hello, this is not an image\n", 28);
    expect_bad("not a PNG", tmp("text.png"), SD3Q_ERR_FORMAT, "not a PNG");
    spit(tmp("empty.png"), NULL, 0);
    expect_bad("empty file", tmp("empty.png"), SD3Q_ERR_FORMAT, "not a PNG");
    expect_bad("missing file", tmp("nope.png"), SD3Q_ERR_IO, "cannot open");
    expect_bad("a folder", g_dir, SD3Q_ERR_IO, "folder");
    free(bad);
    free(good);
    free(rgb);
}

static void test_unwritable(void) {
    struct sd3q_errbuf e;
    const int W = 256, H = 256;
    uint8_t * rgb = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H * 3; i++) rgb[i] = (uint8_t)rand_below(256);  // incompressible
    // a folder that does not exist; a regular file used as a folder
    enum sd3q_status st = pngio_write_rgb8(tmp("no/such/dir/x.png"), rgb, W, H, NULL, 0, &e);
    printf("write into a missing folder → %s: %s\n", sd3q_status_str(st), e.msg);
    CHECK(st == SD3Q_ERR_IO && strstr(e.msg, "no/such/dir/x.png"));
    spit(tmp("afile"), (const uint8_t *)"x", 1);
    st = pngio_write_rgb8(tmp("afile/x.png"), rgb, W, H, NULL, 0, &e);
    CHECK(st == SD3Q_ERR_IO);
    // a full disk: the file size limit stops the write part-way (EFBIG, like ENOSPC); SIGXFSZ ignored
    void (*old)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl, lim;
    getrlimit(RLIMIT_FSIZE, &rl);
    lim = rl;
    lim.rlim_cur = 20000;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    st = pngio_write_rgb8(tmp("full.png"), rgb, W, H, NULL, 0, &e);
    setrlimit(RLIMIT_FSIZE, &rl);
    signal(SIGXFSZ, old);
    printf("write onto a full disk → %s: %s\n", sd3q_status_str(st), e.msg);
    CHECK(st == SD3Q_ERR_IO && strstr(e.msg, "full.png"));
    CHECK(!exists(tmp("full.png")));
    // an existing output is left untouched by a failed write
    CHECK(pngio_write_rgb8(tmp("keep.png"), rgb, 8, 8, NULL, 0, &e) == SD3Q_OK);
    size_t n0, n1;
    uint8_t * before = slurp(tmp("keep.png"), &n0);
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    st = pngio_write_rgb8(tmp("keep.png"), rgb, W, H, NULL, 0, &e);
    setrlimit(RLIMIT_FSIZE, &rl);
    signal(SIGXFSZ, old);
    uint8_t * after = slurp(tmp("keep.png"), &n1);
    CHECK(st == SD3Q_ERR_IO && before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    CHECKF(n_temp_files() == 0, "%d temporary files left", n_temp_files());
    free(before);
    free(after);
    free(rgb);
}

static void test_conversions(void) {
    // diffusers: round((x/2 + 0.5).clamp(0, 1) · 255) with ties to even; 0 → 127.5 → 128
    float v[3 * 8] = {-1.0f, 1.0f, 0.0f, -2.0f, 3.0f, NAN, -0.99215686f, 0.5f};
    for (int i = 8; i < 24; i++) v[i] = v[i % 8];
    uint8_t u[24];
    image_to_rgb8(v, 8, 1, u);
    const uint8_t want[8] = {0, 255, 128, 0, 255, 0, 1, 191};
    for (int i = 0; i < 8; i++) CHECKF(u[3 * i] == want[i], "image_to_rgb8(%g) = %d, want %d", (double)v[i], u[3 * i], want[i]);
    // every byte survives uint8 → float → uint8, and the float is 2·(u/255) − 1
    uint8_t all[256 * 3], back[256 * 3];
    for (int i = 0; i < 256 * 3; i++) all[i] = (uint8_t)(i / 3);
    float f[256 * 3];
    rgb8_to_image(all, 256, 1, f);
    CHECK(f[0] == -1.0f && f[255] == 1.0f && fabsf(f[128] - (2.0f * (128.0f / 255.0f) - 1.0f)) == 0.0f);
    image_to_rgb8(f, 256, 1, back);
    CHECK(memcmp(all, back, sizeof all) == 0);
}

int main(void) {
    const char * base = getenv("SD3Q_TEST_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/test-png.XXXXXX", base && base[0] ? base : "/tmp");
    if (base) mkdir(base, 0755);
    if (!mkdtemp(g_dir)) {
        snprintf(g_dir, sizeof g_dir, "/tmp/test-png.XXXXXX");
        SD3Q_ASSERT(mkdtemp(g_dir));
    }
    test_round_trip();
    test_flavours();
    test_hostile();
    test_unwritable();
    test_conversions();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_dir);
    return test_finish("test-png");
}
