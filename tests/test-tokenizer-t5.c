/*
 * test-tokenizer-t5.c — T5 unigram ids against the sentencepiece library, fixtures made by
 * tools/reference/tokenizers/make_fixtures.py on the small committed model tests/golden/tokenizers/t5_tiny
 * (trained there with sentencepiece's nmt_nfkc rule). Both load paths (spiece.model, Hugging Face's
 * tokenizer.json) and the folder path must give sentencepiece's ids for every prompt, including invalid UTF-8;
 * truncation and padding must equal T5TokenizerFast's (padding="max_length", truncation=True).
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/fileutil.h"
#include "model/tokenizer.h"
#include "testutil.h"
#include "tokfixture.h"

#define GOLDEN SD3Q_SOURCE_DIR "/tests/golden/tokenizers"

// Every case through `t`: untruncated ids, and truncated + padded to each fixture length.
static void check_cases(const char * what, const struct unigram_tokenizer * t, const cJSON * fx) {
    int good = 0, total = 0, hf_same = 0, hf_total = 0;
    for (const cJSON * c = cJSON_GetObjectItem(fx, "cases")->child; c; c = c->next) {
        char *       text = case_text(c);
        const char * name = cJSON_GetObjectItem(c, "name")->valuestring;
        int32_t      ids[4096];
        int          n  = unigram_tokenizer_encode(t, text, 4096, 0, ids);
        int          ok = same_ids(what, name, ids, n, cJSON_GetObjectItem(c, "spm"));
        CHECKF(unigram_tokenizer_count(t, text) == n, "%s [%s]: count %d, encode %d", what, name,
               unigram_tokenizer_count(t, text), n);
        for (const cJSON * m = cJSON_GetObjectItem(fx, "max_lens")->child; m; m = m->next) {
            char key[32];
            snprintf(key, sizeof(key), "spm_%d", (int)m->valuedouble);
            n = unigram_tokenizer_encode(t, text, (int)m->valuedouble, 1, ids);
            ok &= same_ids(what, name, ids, n, cJSON_GetObjectItem(c, key));
            // T5TokenizerFast's truncation and padding, where its ids agree with sentencepiece's.
            snprintf(key, sizeof(key), "hf_%d", (int)m->valuedouble);
            if (cJSON_IsTrue(cJSON_GetObjectItem(c, "hf_agrees")))
                ok &= same_ids(what, name, ids, n, cJSON_GetObjectItem(c, key));
        }
        if (cJSON_GetObjectItem(c, "hf_agrees")) {
            hf_total++;
            hf_same += cJSON_IsTrue(cJSON_GetObjectItem(c, "hf_agrees"));
        }
        good += ok;
        total++;
        free(text);
    }
    printf("%-36s %d/%d prompts match sentencepiece (T5TokenizerFast agrees with it on %d/%d)\n", what, good, total,
           hf_same, hf_total);
    CHECK(total >= 40);
}

int main(void) {
    cJSON *             fx       = load_json(GOLDEN "/t5_fixtures.json");
    static const char * paths[3] = {GOLDEN "/t5_tiny/spiece.model", GOLDEN "/t5_tiny/tokenizer.json",
                                    GOLDEN "/t5_tiny"};
    static const char * what[3]  = {"spiece.model", "tokenizer.json", "folder (spiece.model preferred)"};
    for (int i = 0; i < 3; i++) {
        struct unigram_tokenizer * t = NULL;
        struct sd3q_errbuf         e = {{0}};
        struct timespec            a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        CHECKF(unigram_tokenizer_load(paths[i], &t, &e) == SD3Q_OK, "%s: %s", paths[i], e.msg);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (!t) continue;
        printf("loaded %s in %.1f ms\n", what[i], (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6);
        CHECK(unigram_tokenizer_eos_id(t) == (int32_t)cJSON_GetObjectItem(fx, "eos_id")->valuedouble);
        CHECK(unigram_tokenizer_pad_id(t) == (int32_t)cJSON_GetObjectItem(fx, "pad_id")->valuedouble);
        CHECK(unigram_tokenizer_unk_id(t) == (int32_t)cJSON_GetObjectItem(fx, "unk_id")->valuedouble);
        if (i == 0)
            CHECK(unigram_tokenizer_vocab_size(t) == (int32_t)cJSON_GetObjectItem(fx, "vocab_size")->valuedouble);
        check_cases(what[i], t, fx);
        // Arguments the API rejects, and the smallest length (only "</s>").
        int32_t ids[4];
        CHECK(unigram_tokenizer_encode(t, "x", 0, 0, ids) == -1);
        CHECK(unigram_tokenizer_encode(t, NULL, 4, 0, ids) == -1);
        CHECK(unigram_tokenizer_encode(t, "a b c", 1, 1, ids) == 1 && ids[0] == unigram_tokenizer_eos_id(t));
        unigram_tokenizer_free(t);
    }
    cJSON_Delete(fx);
    return test_finish("test-tokenizer-t5");
}
