/*
 * fuzz-tokenizer-files.c — libFuzzer target for the tokenizer file parsers: arbitrary bytes as spiece.model,
 * a unigram or BPE tokenizer.json, vocab.json + merges.txt (+ tokenizer_config.json), OpenAI's bpe_simple_vocab
 * text, or its gzip; or byte patches / truncations of the committed files under tests/golden/tokenizers, so that
 * the fuzzer reaches deep into the formats even without a seed corpus. Whatever loads then encodes a few short
 * texts, whose ids must stay inside the vocabulary and whose padded length must be exact.
 *
 * The first byte picks the mode (byte % 11): 0 spiece.model, 1 unigram tokenizer.json, 2 vocab.json NUL merges.txt
 * NUL tokenizer_config.json, 3 BPE tokenizer.json, 4 bpe_simple_vocab text, 5 its gzip; 6..10 patch the committed
 * spiece.model, t5 tokenizer.json, clip_tiny vocab.json, clip_tiny merges.txt, clip_tiny tokenizer.json: a 32-bit
 * length to cut at (used when ≡ 1 mod 4), then (24-bit offset, byte) pairs. Only crashes, leaks, out-of-bounds
 * accesses (with -fsanitize=address,undefined) and broken invariants are reported; errors need a message.
 * The committed files are found from this source file's path, or from $SD3Q_TOKENIZER_GOLDEN.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "model/tokenizer.h"

static const char * texts[] = {"a photo of a cat", "A PHOTO!! 東京 😀 &amp; ﬁ", "", "   ", "\xff\xfe\xc3",
                               "<|endoftext|>!"};

// Traps (a crash libFuzzer reports) when an invariant does not hold.
static void require(int ok) {
    if (!ok) __builtin_trap();
}

static void encode_bpe(const struct bpe_tokenizer * t) {
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int32_t ids[SD3Q_CLIP_MAX_LEN];
        int     n = bpe_tokenizer_encode(t, texts[i], SD3Q_CLIP_MAX_LEN, 1, ids);
        require(n == SD3Q_CLIP_MAX_LEN);
        for (int k = 0; k < n; k++) require(ids[k] >= 0 && ids[k] < bpe_tokenizer_vocab_size(t));
    }
}

static void encode_unigram(const struct unigram_tokenizer * t) {
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int32_t ids[32];
        int     n = unigram_tokenizer_encode(t, texts[i], 32, 1, ids);
        require(n == 32);
        for (int k = 0; k < n; k++) require(ids[k] >= 0 && ids[k] < unigram_tokenizer_vocab_size(t));
        require(unigram_tokenizer_count(t, texts[i]) >= 1);
    }
}

// The committed files the patch modes start from.
static const char * golden_names[5] = {"t5_tiny/spiece.model", "t5_tiny/tokenizer.json", "clip_tiny/vocab.json",
                                       "clip_tiny/merges.txt", "clip_tiny/tokenizer.json"};
static char *       golden[5];
static size_t       golden_n[5];

static void load_golden(void) {
    static int done;
    if (done) return;
    done = 1;
    char         dir[4096];
    const char * env = getenv("SD3Q_TOKENIZER_GOLDEN");
    const char * f   = __FILE__;
    const char * cut = strstr(f, "tests/fuzz/");
    if (env) snprintf(dir, sizeof(dir), "%s", env);
    else snprintf(dir, sizeof(dir), "%.*stests/golden/tokenizers", cut ? (int)(cut - f) : 0, f);
    for (int i = 0; i < 5; i++) {
        char               p[4200];
        struct sd3q_errbuf e = {{0}};
        snprintf(p, sizeof(p), "%s/%s", dir, golden_names[i]);
        if (read_file(p, (size_t)64 << 20, &golden[i], &golden_n[i], &e) != SD3Q_OK) {
            fprintf(stderr, "fuzz-tokenizer-files: %s\n", e.msg);
            abort();
        }
    }
}

// A copy of committed file `which`, cut and patched as the fuzz data says; malloc'd.
static char * patched(int which, const uint8_t * d, size_t n, size_t * out_n) {
    size_t len = golden_n[which];
    if (n >= 4) {
        uint32_t cut = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
        if (cut % 4 == 1) len = (cut / 4) % (len + 1);
        d += 4;
        n -= 4;
    }
    char * c = malloc(len + 1);
    memcpy(c, golden[which], len);
    for (size_t i = 0; len && i + 4 <= n; i += 4) {
        size_t off = ((size_t)d[i] | (size_t)d[i + 1] << 8 | (size_t)d[i + 2] << 16) % len;
        c[off]     = (char)d[i + 3];
    }
    *out_n = len;
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    if (size < 1) return 0;
    load_golden();
    int                mode = data[0] % 11;
    const char *       body = (const char *)data + 1;
    size_t             n    = size - 1;
    struct sd3q_errbuf e    = {{0}};
    enum sd3q_status   st;
    char *             patch = NULL;
    if (mode >= 6) {
        size_t pn = 0;
        patch     = patched(mode - 6, data + 1, size - 1, &pn);
        body      = patch;
        n         = pn;
        mode      = mode == 6 ? 0 : mode == 7 ? 1 : mode == 10 ? 3 : 2;
        if (data[0] % 11 == 8 || data[0] % 11 == 9) {
            // vocab.json or merges.txt patched, the other one intact.
            struct bpe_sources     s = {0};
            struct bpe_tokenizer * t = NULL;
            int                    v = data[0] % 11 == 8;
            s.vocab_json = (struct tok_text){v ? patch : golden[2], v ? pn : golden_n[2], "vocab.json"};
            s.merges_txt = (struct tok_text){v ? golden[3] : patch, v ? golden_n[3] : pn, "merges.txt"};
            st           = bpe_tokenizer_from_sources(&s, &t, &e);
            require((st == SD3Q_OK) == (t != NULL) && (st == SD3Q_OK || e.msg[0]));
            if (t) encode_bpe(t);
            bpe_tokenizer_free(t);
            free(patch);
            return 0;
        }
    }
    if (mode <= 1) {
        struct unigram_sources     s = {0};
        struct unigram_tokenizer * t = NULL;
        if (mode == 0) s.spiece_model = (struct tok_text){body, n, "spiece.model"};
        else s.tokenizer_json = (struct tok_text){body, n, "tokenizer.json"};
        st = unigram_tokenizer_from_sources(&s, &t, &e);
        require((st == SD3Q_OK) == (t != NULL) && (st == SD3Q_OK || e.msg[0]));
        if (t) encode_unigram(t);
        unigram_tokenizer_free(t);
        free(patch);
        return 0;
    }
    struct bpe_sources     s   = {0};
    struct bpe_tokenizer * t   = NULL;
    char *                 txt = NULL;
    if (mode == 2) {
        // vocab.json \0 merges.txt \0 tokenizer_config.json
        const char * a = memchr(body, 0, n);
        const char * b = a ? memchr(a + 1, 0, n - (size_t)(a + 1 - body)) : NULL;
        size_t       vn = a ? (size_t)(a - body) : n;
        s.vocab_json    = (struct tok_text){body, vn, "vocab.json"};
        size_t       mn = a ? (size_t)((b ? b : body + n) - (a + 1)) : 0;
        s.merges_txt    = (struct tok_text){a ? a + 1 : "", mn, "merges.txt"};
        if (b) s.config_json = (struct tok_text){b + 1, (size_t)(body + n - (b + 1)), "tokenizer_config.json"};
    } else if (mode == 3) {
        s.tokenizer_json = (struct tok_text){body, n, "tokenizer.json"};
    } else if (mode == 4) {
        s.bpe_txt = (struct tok_text){body, n, "bpe_simple_vocab_16e6.txt"};
    } else {
        size_t tn = 0;
        if (tok_gunzip(body, n, (size_t)16 << 20, "bpe_simple_vocab_16e6.txt.gz", &txt, &tn, &e) != SD3Q_OK) {
            require(e.msg[0] != 0);
            free(patch);
            return 0;
        }
        s.bpe_txt = (struct tok_text){txt, tn, "bpe_simple_vocab_16e6.txt"};
    }
    st = bpe_tokenizer_from_sources(&s, &t, &e);
    require((st == SD3Q_OK) == (t != NULL) && (st == SD3Q_OK || e.msg[0]));
    if (t) encode_bpe(t);
    bpe_tokenizer_free(t);
    free(txt);
    free(patch);
    return 0;
}
