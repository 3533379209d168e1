/*
 * test-tokenizer-bad.c — malformed tokenizer files give clear errors (file, field, expected vs got) and never crash;
 * hand-made unigram models check the charsmap trie walk, user-defined pieces and byte fallback.
 *
 * Covers: vocab.json not an object / bad ids / invalid JSON, merges.txt lines without two symbols, an unknown or
 * mistyped pad token, corrupt and truncated gzip, tokenizer.json of the wrong model type; spiece.model truncated at
 * many points, bad varints, lengths past the end, group wire types, duplicate / empty / missing <unk> pieces, a
 * non-unigram model, charsmap trie indices and string offsets out of range, a pool without NUL, bad base64.
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "io/fileutil.h"
#include "model/tokenizer.h"
#include "testutil.h"

#define GOLDEN SD3Q_SOURCE_DIR "/tests/golden/tokenizers"

// ---- CLIP -------------------------------------------------------------------------------------------------------

// Builds a CLIP tokenizer from in-memory vocab.json + merges.txt (+ config); returns the status, frees the object.
static enum sd3q_status clip_try(const char * vocab, const char * merges, const char * config, struct sd3q_errbuf * e) {
    struct bpe_sources s = {0};
    s.vocab_json         = (struct tok_text){vocab, strlen(vocab), "vocab.json"};
    s.merges_txt         = (struct tok_text){merges, strlen(merges), "merges.txt"};
    if (config) s.config_json = (struct tok_text){config, strlen(config), "tokenizer_config.json"};
    struct bpe_tokenizer * t  = NULL;
    e->msg[0]                 = '\0';
    enum sd3q_status st       = bpe_tokenizer_from_sources(&s, &t, e);
    CHECK((st == SD3Q_OK) == (t != NULL));
    bpe_tokenizer_free(t);
    return st;
}

// Expects status `want` and a message holding every one of the (up to three) fragments.
#define EXPECT_ERR(call, want, f1, f2, f3)                                                                  \
    do {                                                                                                    \
        struct sd3q_errbuf e_ = {{0}};                                                                      \
        enum sd3q_status   st_ = call;                                                                      \
        CHECKF(st_ == (want), "%s: status %d (%s)", #call, st_, e_.msg);                                    \
        CHECKF(strstr(e_.msg, f1) && strstr(e_.msg, f2) && strstr(e_.msg, f3), "%s: message \"%s\"", #call, \
               e_.msg);                                                                                     \
        if (st_ == (want)) printf("  ok: %s\n", e_.msg);                                                    \
    } while (0)

// A minimal vocabulary: the specials plus "a", "b", "ab</w>".
#define VOCAB "{\"<|startoftext|>\": 0, \"<|endoftext|>\": 1, \"a\": 2, \"b</w>\": 3, \"ab</w>\": 4, \"!\": 5}"

static void test_clip_files(void) {
    printf("CLIP files:\n");
    struct sd3q_errbuf e = {{0}};
    CHECKF(clip_try(VOCAB, "#version: 0.2\na b</w>\n", NULL, &e) == SD3Q_OK, "%s", e.msg);
    EXPECT_ERR(clip_try("[1, 2]", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "vocab.json", "expected a JSON object", "");
    EXPECT_ERR(clip_try("{\"a\": 1", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "vocab.json", "not valid JSON", "byte");
    EXPECT_ERR(clip_try("{\"a\": \"x\"}", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "vocab.json", "\"a\"", "got a string");
    EXPECT_ERR(clip_try("{\"a\": -3}", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "vocab.json", "\"a\"", "-3");
    EXPECT_ERR(clip_try("{\"a\": 1.5}", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "vocab.json", "\"a\"", "1.5");
    EXPECT_ERR(clip_try(VOCAB, "#version: 0.2\na b</w>\nab\n", NULL, &e_), SD3Q_ERR_FORMAT, "merges.txt",
               "line 3", "two symbols");
    EXPECT_ERR(clip_try(VOCAB, "#version: 0.2\na b c\n", NULL, &e_), SD3Q_ERR_FORMAT, "merges.txt", "line 2",
               "\"a b c\"");
    EXPECT_ERR(clip_try(VOCAB, "#v\n", "{\"pad_token\": \"<|nope|>\"}", &e_), SD3Q_ERR_FORMAT,
               "tokenizer_config.json", "pad_token", "not in the vocabulary");
    EXPECT_ERR(clip_try(VOCAB, "#v\n", "{\"pad_token\": 7}", &e_), SD3Q_ERR_FORMAT, "tokenizer_config.json",
               "pad_token", "got a number");
    EXPECT_ERR(clip_try(VOCAB, "#v\n", "{\"added_tokens_decoder\": {\"x\": {\"content\": \"!\"}}}", &e_),
               SD3Q_ERR_FORMAT, "added_tokens_decoder", "\"x\"", "integer id");
    EXPECT_ERR(clip_try("{\"a\": 0}", "#v\n", NULL, &e_), SD3Q_ERR_FORMAT, "bos_token", "<|startoftext|>",
               "not in the vocabulary");
    EXPECT_ERR(clip_try(VOCAB, "#v\n", "[]", &e_), SD3Q_ERR_FORMAT, "tokenizer_config.json", "expected a JSON object",
               "");

    // A config pad token that is a special token: "!" splits out and is never merged (Hugging Face's behaviour).
    struct bpe_sources s = {0};
    const char * cfg     = "{\"pad_token\": \"!\"}";
    s.vocab_json         = (struct tok_text){VOCAB, strlen(VOCAB), NULL};
    s.merges_txt         = (struct tok_text){"#v\na b</w>\n", 11, NULL};
    s.config_json        = (struct tok_text){cfg, strlen(cfg), NULL};
    struct bpe_tokenizer * t = NULL;
    CHECKF(bpe_tokenizer_from_sources(&s, &t, &e) == SD3Q_OK, "%s", e.msg);
    if (t) {
        int32_t ids[8];
        int     n = bpe_tokenizer_encode(t, "ab!ab", 8, 1, ids);
        CHECKF(n == 8 && ids[0] == 0 && ids[1] == 4 && ids[2] == 5 && ids[3] == 4 && ids[4] == 1 && ids[5] == 5,
               "ab!ab → %d: %d %d %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]);
        bpe_tokenizer_free(t);
    }

    // A vocabulary without any merge encodes byte by byte (found by the fuzzer: the merge table was never made).
    s.merges_txt = (struct tok_text){"#version: 0.2\n", 14, NULL};
    s.config_json = (struct tok_text){0};
    CHECKF(bpe_tokenizer_from_sources(&s, &t, &e) == SD3Q_OK, "%s", e.msg);
    if (t) {
        int32_t ids[8];
        int     n = bpe_tokenizer_encode(t, "ab", 8, 0, ids);
        CHECKF(n == 4 && ids[1] == 2 && ids[2] == 3, "ab without merges → %d ids: %d %d", n, ids[1], ids[2]);
        bpe_tokenizer_free(t);
    }

    // tokenizer.json of another model type, or without CLIP's "</w>".
    struct bpe_sources j = {0};
    const char * wp = "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}";
    j.tokenizer_json = (struct tok_text){wp, strlen(wp), "tokenizer.json"};
    EXPECT_ERR(bpe_tokenizer_from_sources(&j, &t, &e_), SD3Q_ERR_UNSUPPORTED, "tokenizer.json", "model.type",
               "WordPiece");
    const char * nosuf = "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}";
    j.tokenizer_json   = (struct tok_text){nosuf, strlen(nosuf), "tokenizer.json"};
    EXPECT_ERR(bpe_tokenizer_from_sources(&j, &t, &e_), SD3Q_ERR_UNSUPPORTED, "end_of_word_suffix", "</w>", "");
    const char * badm = "{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", \"vocab\": " VOCAB
                        ", \"merges\": [[\"a\"]]}}";
    j.tokenizer_json  = (struct tok_text){badm, strlen(badm), "tokenizer.json"};
    EXPECT_ERR(bpe_tokenizer_from_sources(&j, &t, &e_), SD3Q_ERR_FORMAT, "model.merges[0]", "left", "");

    // OpenAI's text format with a one-symbol line.
    struct bpe_sources o = {0};
    o.bpe_txt            = (struct tok_text){"header\na b\nc\n", 13, "bpe_simple_vocab_16e6.txt"};
    EXPECT_ERR(bpe_tokenizer_from_sources(&o, &t, &e_), SD3Q_ERR_FORMAT, "bpe_simple_vocab_16e6.txt", "line 3", "");

    // Nothing to load.
    struct bpe_sources none = {0};
    EXPECT_ERR(bpe_tokenizer_from_sources(&none, &t, &e_), SD3Q_ERR_MISSING, "no CLIP vocabulary", "", "");
    EXPECT_ERR(bpe_tokenizer_load("/nonexistent/tokenizer", &t, &e_), SD3Q_ERR_MISSING, "/nonexistent/tokenizer",
               "no such file", "");
    EXPECT_ERR(bpe_tokenizer_load(GOLDEN "/clip_configs/tokenizer", &t, &e_), SD3Q_ERR_MISSING, "clip_configs",
               "no vocab.json", "");
}

// gzip-compresses `s` (windowBits 31 writes the gzip header).
static unsigned char * gzip_bytes(const char * s, size_t n, size_t * out_n) {
    z_stream zs;
    memset(&zs, 0, sizeof(zs));
    deflateInit2(&zs, 9, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    size_t          cap = deflateBound(&zs, (uLong)n) + 64;
    unsigned char * out = malloc(cap);
    zs.next_in          = (Bytef *)s;
    zs.avail_in         = (uInt)n;
    zs.next_out         = out;
    zs.avail_out        = (uInt)cap;
    deflate(&zs, Z_FINISH);
    *out_n = cap - zs.avail_out;
    deflateEnd(&zs);
    return out;
}

static void test_gzip(void) {
    printf("gzip:\n");
    const char * txt = "bpe header line\na b\nab c\n";
    size_t       gn;
    unsigned char * gz = gzip_bytes(txt, strlen(txt), &gn);
    char *          out = NULL;
    size_t          on  = 0;
    struct sd3q_errbuf e = {{0}};
    CHECKF(tok_gunzip(gz, gn, 1 << 20, "v.gz", &out, &on, &e) == SD3Q_OK && on == strlen(txt) &&
               memcmp(out, txt, on) == 0, "%s", e.msg);
    free(out);
    EXPECT_ERR(tok_gunzip(gz, gn / 2, 1 << 20, "v.gz", &out, &on, &e_), SD3Q_ERR_FORMAT, "v.gz", "corrupt", "");
    EXPECT_ERR(tok_gunzip(gz, gn, 10, "v.gz", &out, &on, &e_), SD3Q_ERR_FORMAT, "v.gz", "cap", "");
    gz[gn / 2] ^= 0x55;
    gz[gn / 2 + 1] ^= 0xAA;
    EXPECT_ERR(tok_gunzip(gz, gn, 1 << 20, "v.gz", &out, &on, &e_), SD3Q_ERR_FORMAT, "v.gz", "corrupt", "");
    EXPECT_ERR(tok_gunzip("not gzip at all", 15, 1 << 20, "v.gz", &out, &on, &e_), SD3Q_ERR_FORMAT, "v.gz", "corrupt",
               "");
    free(gz);
    // Every truncation of a real-looking file fails cleanly.
    int crashes_avoided = 0;
    for (size_t cut = 0; cut + 1 < gn; cut++) {
        unsigned char * g = gzip_bytes(txt, strlen(txt), &gn);
        if (tok_gunzip(g, cut, 1 << 20, "v.gz", &out, &on, &e) != SD3Q_OK) crashes_avoided++;
        else free(out);
        free(g);
    }
    CHECKF(crashes_avoided > 0, "truncated gzip streams were accepted");
}

// ---- unigram: a tiny protobuf writer ----------------------------------------------------------------------------

struct buf {
    unsigned char * p;
    size_t          n, cap;
};

static void put(struct buf * b, const void * d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p   = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_varint(struct buf * b, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) c |= 0x80;
        put(b, &c, 1);
    } while (v);
}

static void put_tag(struct buf * b, uint32_t field, uint32_t wire) { put_varint(b, (uint64_t)field << 3 | wire); }

static void put_lenbytes(struct buf * b, uint32_t field, const void * d, size_t n) {
    put_tag(b, field, 2);
    put_varint(b, n);
    put(b, d, n);
}

// One ModelProto.pieces entry.
static void put_piece(struct buf * b, const char * piece, float score, int type) {
    struct buf m = {0};
    put_lenbytes(&m, 1, piece, strlen(piece));
    put_tag(&m, 2, 5);
    put(&m, &score, 4);
    put_tag(&m, 3, 0);
    put_varint(&m, (uint64_t)type);
    put_lenbytes(b, 1, m.p, m.n);
    free(m.p);
}

// A charsmap of 256 units mapping "a" to pool[value] (pool = "b\0"); `leaf_offset` and `value` can be corrupted.
static struct buf charsmap(uint32_t leaf_offset, uint32_t value) {
    uint32_t units[256] = {0};
    units[0]            = 0;                                          // root: offset 0, so base 0
    units['a']          = 'a' | (1u << 8) | (leaf_offset << 10);      // label 'a', has a leaf at 'a' ^ offset
    uint32_t leaf       = 'a' ^ leaf_offset;
    if (leaf < 256) units[leaf] = value | 0x80000000u;                // leaf unit: value, label with the MSB set
    struct buf b        = {0};
    uint32_t   tsize    = sizeof(units);
    put(&b, &tsize, 4);
    put(&b, units, sizeof(units));
    put(&b, "b\0", 2);
    return b;
}

// A small T5-like model: <pad> </s> <unk> ▁ b ▁b <x>(user) [+ 256 byte pieces]; charsmap optional.
static struct buf model(const struct buf * cm, int byte_fallback, int model_type) {
    struct buf b = {0};
    put_piece(&b, "<pad>", 0, 3);
    put_piece(&b, "</s>", 0, 3);
    put_piece(&b, "<unk>", 0, 2);
    put_piece(&b, "\xe2\x96\x81", -2.0f, 1);
    put_piece(&b, "b", -3.0f, 1);
    put_piece(&b, "\xe2\x96\x81" "b", -1.0f, 1);
    put_piece(&b, "<x>", 0, 4);
    if (byte_fallback) {
        for (int i = 0; i < 256; i++) {
            char p[8];
            snprintf(p, sizeof(p), "<0x%02X>", i);
            put_piece(&b, p, 0, 6);
        }
    }
    struct buf ts = {0};
    put_tag(&ts, 3, 0);
    put_varint(&ts, (uint64_t)model_type);
    put_tag(&ts, 35, 0);
    put_varint(&ts, (uint64_t)byte_fallback);
    put_lenbytes(&b, 2, ts.p, ts.n);
    free(ts.p);
    if (cm) {
        struct buf ns = {0};
        put_lenbytes(&ns, 1, "test", 4);
        put_lenbytes(&ns, 2, cm->p, cm->n);
        put_lenbytes(&b, 3, ns.p, ns.n);
        free(ns.p);
    }
    return b;
}

static enum sd3q_status ug_try(const void * data, size_t n, struct unigram_tokenizer ** out, struct sd3q_errbuf * e) {
    struct unigram_sources s = {0};
    s.spiece_model           = (struct tok_text){data, n, "spiece.model"};
    *out                     = NULL;
    e->msg[0]                = '\0';
    enum sd3q_status st      = unigram_tokenizer_from_sources(&s, out, e);
    CHECK((st == SD3Q_OK) == (*out != NULL));
    return st;
}

// Loads, encodes `text` and compares with want[0..n) (then frees).
static void expect_ids(const struct buf * m, const char * text, const int32_t * want, int n) {
    struct unigram_tokenizer * t = NULL;
    struct sd3q_errbuf         e = {{0}};
    CHECKF(ug_try(m->p, m->n, &t, &e) == SD3Q_OK, "%s", e.msg);
    if (!t) return;
    int32_t ids[64];
    int     got = unigram_tokenizer_encode(t, text, 64, 0, ids);
    int     ok  = got == n && memcmp(ids, want, (size_t)n * sizeof(int32_t)) == 0;
    CHECKF(ok, "\"%s\": got %d ids (%d %d %d %d ...)", text, got, ids[0], got > 1 ? ids[1] : -1, got > 2 ? ids[2] : -1,
           got > 3 ? ids[3] : -1);
    unigram_tokenizer_free(t);
}

static void test_unigram_handmade(void) {
    printf("hand-made unigram models:\n");
    struct buf cm = charsmap(0x80, 0);  // 'a' → "b"
    struct buf m  = model(&cm, 0, 1);
    // "a a" normalises to "▁b▁b": two "▁b" pieces, then </s>.
    expect_ids(&m, "a a", (int32_t[]){5, 5, 1}, 3);
    // User-defined pieces are matched before normalisation and win the lattice; unknown runs merge.
    expect_ids(&m, "a<x>b", (int32_t[]){5, 6, 4, 1}, 4);
    expect_ids(&m, "zzz a", (int32_t[]){3, 2, 5, 1}, 4);
    // Invalid UTF-8: one U+FFFD per byte, all unknown (merged).
    expect_ids(&m, "\xff\xfe", (int32_t[]){3, 2, 1}, 3);
    free(m.p);
    // byte_fallback: unknown characters become their UTF-8 bytes' pieces (<0x7A> = 7 + 0x7A).
    m = model(&cm, 1, 1);
    expect_ids(&m, "z\xc3\xa9", (int32_t[]){3, 7 + 0x7A, 7 + 0xC3, 7 + 0xA9, 1}, 5);
    free(m.p);
    free(cm.p);

    struct unigram_tokenizer * t = NULL;
    cm = charsmap(0x1000, 0);  // leaf index 'a' ^ 0x1000, outside the 256 units
    m  = model(&cm, 0, 1);
    EXPECT_ERR(ug_try(m.p, m.n, &t, &e_), SD3Q_ERR_FORMAT, "precompiled_charsmap", "leaf index", "out of range");
    free(m.p);
    free(cm.p);
    cm = charsmap(0x80, 9999);  // string offset past the 2-byte pool
    m  = model(&cm, 0, 1);
    EXPECT_ERR(ug_try(m.p, m.n, &t, &e_), SD3Q_ERR_FORMAT, "precompiled_charsmap", "string offset 9999", "pool");
    free(m.p);
    cm.n--;  // pool "b" without its NUL
    m = model(&cm, 0, 1);
    EXPECT_ERR(ug_try(m.p, m.n, &t, &e_), SD3Q_ERR_FORMAT, "precompiled_charsmap", "NUL", "");
    free(m.p);
    memcpy(cm.p, &(uint32_t){100000}, 4);  // trie size larger than the blob
    m = model(&cm, 0, 1);
    EXPECT_ERR(ug_try(m.p, m.n, &t, &e_), SD3Q_ERR_FORMAT, "precompiled_charsmap", "trie size 100000", "");
    free(m.p);
    free(cm.p);

    m = model(NULL, 0, 2);
    EXPECT_ERR(ug_try(m.p, m.n, &t, &e_), SD3Q_ERR_UNSUPPORTED, "spiece.model", "model_type 2", "UNIGRAM");
    free(m.p);
    // Duplicate, empty, missing and double <unk> pieces; bad type.
    struct buf d = {0};
    put_piece(&d, "<unk>", 0, 2);
    put_piece(&d, "x", 0, 1);
    put_piece(&d, "x", 0, 1);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "piece 2 \"x\"", "already defined");
    d.n = 0;
    put_piece(&d, "<unk>", 0, 2);
    put_piece(&d, "", 0, 1);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "piece 1", "empty");
    d.n = 0;
    put_piece(&d, "x", 0, 1);
    put_piece(&d, "</s>", 0, 3);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "no <unk>", "");
    d.n = 0;
    put_piece(&d, "<unk>", 0, 2);
    put_piece(&d, "<unk2>", 0, 2);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "both <unk>", "");
    d.n = 0;
    put_piece(&d, "<unk>", 0, 9);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "type 9", "1..6");
    d.n = 0;
    put_piece(&d, "<unk>", 0, 2);
    EXPECT_ERR(ug_try(d.p, d.n, &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "eos piece", "</s>");
    free(d.p);
}

static void test_unigram_protobuf(void) {
    printf("spiece.model protobuf:\n");
    struct unigram_tokenizer * t = NULL;
    static const unsigned char long_varint[] = {0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    EXPECT_ERR(ug_try(long_varint, sizeof(long_varint), &t, &e_), SD3Q_ERR_FORMAT, "spiece.model", "varint", "byte");
    static const unsigned char cut_varint[] = {0x0A, 0xFF, 0xFF};
    EXPECT_ERR(ug_try(cut_varint, sizeof(cut_varint), &t, &e_), SD3Q_ERR_FORMAT, "varint truncated", "byte", "");
    static const unsigned char past_end[] = {0x0A, 0x10, 'a'};
    EXPECT_ERR(ug_try(past_end, sizeof(past_end), &t, &e_), SD3Q_ERR_FORMAT, "length 16", "past the end", "byte 2");
    static const unsigned char group[] = {0x3B, 0x3C};  // field 7 as a (deprecated) group
    EXPECT_ERR(ug_try(group, sizeof(group), &t, &e_), SD3Q_ERR_FORMAT, "field 7", "wire type 3", "groups");
    static const unsigned char field0[] = {0x02, 0x00};
    EXPECT_ERR(ug_try(field0, sizeof(field0), &t, &e_), SD3Q_ERR_FORMAT, "invalid field number 0", "", "");
    static const unsigned char wrong_wire[] = {0x08, 0x01};  // pieces as a varint
    EXPECT_ERR(ug_try(wrong_wire, sizeof(wrong_wire), &t, &e_), SD3Q_ERR_FORMAT, "field 1", "expected wire type 2",
               "got 0");
    EXPECT_ERR(ug_try("", 0, &t, &e_), SD3Q_ERR_FORMAT, "no pieces", "", "");

    // The real file cut at many points: every load either fails with a message or (at a piece boundary) succeeds.
    char *             data = NULL;
    size_t             n    = 0;
    struct sd3q_errbuf e    = {{0}};
    CHECKF(read_file(GOLDEN "/t5_tiny/spiece.model", 1 << 24, &data, &n, &e) == SD3Q_OK, "%s", e.msg);
    int failed = 0, tried = 0;
    for (size_t cut = 0; data && cut < n; cut += cut < 4096 ? 1 : 997) {
        enum sd3q_status st = ug_try(data, cut, &t, &e);
        tried++;
        failed += st != SD3Q_OK;
        CHECKF(st == SD3Q_OK || e.msg[0] != '\0', "cut at %zu: error without a message", cut);
        unigram_tokenizer_free(t);
    }
    printf("  truncated spiece.model: %d of %d cut points rejected with a message, none crashed\n", failed, tried);
    CHECK(failed > tried / 2);
    // Flipped bytes: no crash whatever the outcome (the fuzzer does this at scale).
    char * copy = data ? malloc(n) : NULL;
    for (size_t i = 0; copy && i < 200; i++) {
        memcpy(copy, data, n);
        for (int k = 0; k < 3; k++) copy[rand_below((uint32_t)n)] ^= (char)(1 + rand_below(255));
        if (ug_try(copy, n, &t, &e) == SD3Q_OK) {
            int32_t ids[32];
            CHECK(unigram_tokenizer_encode(t, "A photo of a cat, \xe6\x9d\xb1 \xff", 32, 1, ids) == 32);
            unigram_tokenizer_free(t);
        }
    }
    free(copy);
    free(data);
}

static void test_unigram_json(void) {
    printf("unigram tokenizer.json:\n");
    struct unigram_tokenizer * t = NULL;
    struct unigram_sources     s = {0};
#define TJ(js) (s.tokenizer_json = (struct tok_text){js, strlen(js), "tokenizer.json"}, \
                unigram_tokenizer_from_sources(&s, &t, &e_))
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"BPE\"}}"), SD3Q_ERR_UNSUPPORTED, "tokenizer.json", "Unigram", "BPE");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\"]]}}"), SD3Q_ERR_FORMAT, "model.vocab[0]",
               "[\"piece\", score]", "");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0]]}}"), SD3Q_ERR_FORMAT, "model.unk_id",
               "", "");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0], [\"</s>\", 0]]},"
                  "\"normalizer\": {\"type\": \"Lowercase\"}}"),
               SD3Q_ERR_UNSUPPORTED, "normalizer \"Lowercase\"", "", "");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0], [\"</s>\", 0]]},"
                  "\"normalizer\": {\"type\": \"Precompiled\", \"precompiled_charsmap\": \"AAA*\"}}"),
               SD3Q_ERR_FORMAT, "precompiled_charsmap", "base64", "");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0], [\"</s>\", 0]]},"
                  "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"_\"}}"),
               SD3Q_ERR_UNSUPPORTED, "Metaspace", "", "");
    EXPECT_ERR(TJ("{\"model\": {\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"<unk>\", 0], [\"</s>\", 0]"),
               SD3Q_ERR_FORMAT, "tokenizer.json", "not valid JSON", "");
#undef TJ
    // The committed tokenizer.json, cut short, never loads.
    char *             data = NULL;
    size_t             n    = 0;
    struct sd3q_errbuf e    = {{0}};
    CHECK(read_file(GOLDEN "/t5_tiny/tokenizer.json", 1 << 24, &data, &n, &e) == SD3Q_OK);
    for (size_t cut = 1; data && cut < n; cut += 9973) {
        s.tokenizer_json = (struct tok_text){data, cut, "tokenizer.json"};
        CHECK(unigram_tokenizer_from_sources(&s, &t, &e) != SD3Q_OK && strstr(e.msg, "tokenizer.json"));
    }
    free(data);
    EXPECT_ERR(unigram_tokenizer_load("/nonexistent/spiece.model", &t, &e_), SD3Q_ERR_MISSING, "/nonexistent",
               "", "");
    EXPECT_ERR(unigram_tokenizer_load(GOLDEN "/clip_configs", &t, &e_), SD3Q_ERR_MISSING, "no spiece.model", "", "");
}

int main(void) {
    test_clip_files();
    test_gzip();
    test_unigram_handmade();
    test_unigram_protobuf();
    test_unigram_json();
    return test_finish("test-tokenizer-bad");
}
