/*
 * fuzz-tokenizer-text.c — libFuzzer target feeding arbitrary bytes (any UTF-8, valid or not) as prompt text to the
 * CLIP and T5 tokenizers built from the committed small vocabularies (and the real CLIP vocabulary when
 * ../shared/tokenizers is present). Checks: no crash / leak / out-of-bounds access; ids inside the vocabulary;
 * padded output exactly max_len long; the truncated ids a prefix of the untruncated ones (the early stop of the
 * truncating encoder must not change them); count() equal to the untruncated length.
 *
 * The files are found from this source file's path (tests/fuzz/ → tests/golden/tokenizers), or from
 * $SD3Q_TOKENIZER_GOLDEN.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/tokenizer.h"

static struct bpe_tokenizer *     g_clip_tiny, * g_clip_real;
static struct unigram_tokenizer * g_t5;

static void require(int ok) {
    if (!ok) __builtin_trap();
}

// Loads the tokenizers once.
static void setup(void) {
    static int done;
    if (done) return;
    done = 1;
    char         golden[4096];
    const char * env = getenv("SD3Q_TOKENIZER_GOLDEN");
    if (env) {
        snprintf(golden, sizeof(golden), "%s", env);
    } else {
        const char * f   = __FILE__;
        const char * cut = strstr(f, "tests/fuzz/");
        snprintf(golden, sizeof(golden), "%.*stests/golden/tokenizers", cut ? (int)(cut - f) : 0, f);
    }
    char               p[4200];
    struct sd3q_errbuf e = {{0}};
    snprintf(p, sizeof(p), "%s/clip_tiny", golden);
    if (bpe_tokenizer_load(p, &g_clip_tiny, &e) != SD3Q_OK) fprintf(stderr, "fuzz: %s\n", e.msg);
    snprintf(p, sizeof(p), "%s/t5_tiny/spiece.model", golden);
    if (unigram_tokenizer_load(p, &g_t5, &e) != SD3Q_OK) fprintf(stderr, "fuzz: %s\n", e.msg);
    snprintf(p, sizeof(p), "%s/../../../../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz", golden);
    if (bpe_tokenizer_load(p, &g_clip_real, &e) != SD3Q_OK) g_clip_real = NULL;  // optional
    require(g_clip_tiny && g_t5);
}

static void check_bpe(const struct bpe_tokenizer * t, const char * text) {
    if (!t) return;
    static int32_t full[1 << 16];
    int32_t        pad[SD3Q_CLIP_MAX_LEN];
    int            n = bpe_tokenizer_encode(t, text, 1 << 16, 0, full);
    int            m = bpe_tokenizer_encode(t, text, SD3Q_CLIP_MAX_LEN, 1, pad);
    require(n >= 2 && m == SD3Q_CLIP_MAX_LEN);
    require(bpe_tokenizer_count(t, text) == n || n == 1 << 16);
    int keep = n - 2 < SD3Q_CLIP_MAX_LEN - 2 ? n - 2 : SD3Q_CLIP_MAX_LEN - 2;
    require(memcmp(full, pad, (size_t)(keep + 1) * sizeof(int32_t)) == 0);
    require(pad[keep + 1] == bpe_tokenizer_eos_id(t));
    for (int k = 0; k < n; k++) require(full[k] >= 0 && full[k] < bpe_tokenizer_vocab_size(t));
}

static void check_unigram(const struct unigram_tokenizer * t, const char * text) {
    static int32_t full[1 << 16];
    int32_t        pad[24];
    int            n = unigram_tokenizer_encode(t, text, 1 << 16, 0, full);
    int            m = unigram_tokenizer_encode(t, text, 24, 1, pad);
    require(n >= 1 && m == 24);
    require(unigram_tokenizer_count(t, text) == n || n == 1 << 16);
    int keep = n - 1 < 23 ? n - 1 : 23;
    require(memcmp(full, pad, (size_t)keep * sizeof(int32_t)) == 0 && pad[keep] == unigram_tokenizer_eos_id(t));
    for (int k = 0; k < n; k++) require(full[k] >= 0 && full[k] < unigram_tokenizer_vocab_size(t));
}

int LLVMFuzzerTestOneInput(const uint8_t * data, size_t size) {
    setup();
    char * text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';  // the API reads up to the first NUL
    check_bpe(g_clip_tiny, text);
    check_bpe(g_clip_real, text);
    check_unigram(g_t5, text);
    free(text);
    return 0;
}
