/*
 * tokenizer-bpe.c — CLIP's byte-level BPE tokenizer (CLIP-L and CLIP-G), matching Hugging Face's slow
 * CLIPTokenizer (transformers 4.46) with ftfy installed, which is what diffusers' SD3 pipeline runs.
 *
 * Pipeline for one prompt, as PreTrainedTokenizer.tokenize + CLIPTokenizer._tokenize do it:
 *   1. UTF-8 → code points; split out the added tokens (the special tokens and added_tokens_decoder entries, so
 *      with tokenizer_2's config every "!" becomes the pad token, id 0, and never merges: diffusers issue #4153);
 *   2. each remaining segment: ftfy.fix_text, whitespace collapse + strip, str.lower() (tokenizer-clean.c);
 *   3. CLIP's pattern  <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
 *      (case-insensitive, which matters for "ſ" ~ "s" and makes U+0345 match no alternative: it is skipped);
 *   4. each piece → UTF-8 bytes → byte symbols (OpenAI's bytes_to_unicode), "</w>" on the last; merges by rank,
 *      all occurrences of the best pair left to right per round; symbols → ids (unknown → unk id);
 *   5. BOS + ids (truncated to max_len − 2) + EOS, padded with the pad id.
 * Vocabulary sources: vocab.json + merges.txt, tokenizer.json (model type BPE) or OpenAI's bpe_simple_vocab (the
 * vocabulary is then built as OpenAI's SimpleTokenizer builds it). Only the first 49152 − 256 − 2 merges are used,
 * as CLIPTokenizer does. Not here: the fast (Rust) tokenizer's different normalisation, the no-ftfy fallback
 * (BasicTokenizer) and ftfy's mojibake repair (see tokenizer-clean.c and docs/TOKENIZERS.md).
 */
#include "model/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "io/fileutil.h"

#define BPE_MAX_MERGES   (49152 - 256 - 2)
#define BPE_MAX_ID       (1 << 24)          // ids above this are rejected as malformed
#define BPE_FILE_CAP     ((size_t)256 << 20)
#define BPE_CONFIG_CAP   ((size_t)16 << 20)

struct bpe_added {
    uint32_t * cps;     // the token's text as code points
    size_t     n;
    int32_t    id;
    int        lstrip, rstrip;
};

struct bpe_merge {
    uint64_t key;       // left symbol << 32 | right symbol; UINT64_MAX = empty slot
    uint32_t rank;
    int32_t  result;    // merged symbol
};

struct bpe_tokenizer {
    struct tok_strtab  syms;          // every symbol: vocabulary keys, merge parts and results, byte symbols
    int32_t *          sym_id;        // symbol → vocabulary id, −1 when not in the vocabulary (→ unk)
    int32_t            sym_id_cap;
    struct bpe_merge * merges;        // open addressing, a power of two in size
    uint32_t           merge_slots, merge_count;
    int32_t            byte_sym[256];      // symbol of a byte inside a word
    int32_t            byte_sym_end[256];  // symbol of a byte ending a word ("</w>" appended)
    struct bpe_added * added;
    int                n_added;
    int32_t            bos, eos, pad, unk;
    int32_t            sot_id, eot_id;     // ids the pattern's literal special tokens map to
    int32_t            vocab_size;
};

// OpenAI's bytes_to_unicode: printable Latin-1 bytes keep their code point; the other 68 bytes, in increasing
// order, become U+0100, U+0101, ... `order` receives the bytes in the table's order (vocabulary ids 0..255).
static void bytes_to_unicode(uint32_t cp[256], uint8_t order[256]) {
    int k = 0, extra = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
            cp[b]      = (uint32_t)b;
            order[k++] = (uint8_t)b;
        }
    }
    for (int b = 0; b < 256; b++) {
        if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
            cp[b]      = 256u + (uint32_t)extra++;
            order[k++] = (uint8_t)b;
        }
    }
}

// ---- building ---------------------------------------------------------------------------------------------------

// Interns a symbol and makes sure sym_id has a slot for it (−1 when new).
static enum sd3q_status intern_sym(struct bpe_tokenizer * t, const char * s, size_t n, int32_t * sym,
                                   struct sd3q_errbuf * e) {
    TRY(tok_strtab_intern(&t->syms, s, n, sym, e));
    if (*sym >= t->sym_id_cap) {
        int32_t   cap = t->sym_id_cap ? t->sym_id_cap * 2 : 4096;
        int32_t * p   = realloc(t->sym_id, (size_t)cap * sizeof(*p));
        if (!p) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        for (int32_t i = t->sym_id_cap; i < cap; i++) p[i] = -1;
        t->sym_id     = p;
        t->sym_id_cap = cap;
    }
    return SD3Q_OK;
}

// vocab[s] = id (a later duplicate wins, as in a Python dict).
static enum sd3q_status add_vocab(struct bpe_tokenizer * t, const char * s, size_t n, int32_t id,
                                  struct sd3q_errbuf * e) {
    int32_t sym;
    TRY(intern_sym(t, s, n, &sym, e));
    t->sym_id[sym] = id;
    if (id + 1 > t->vocab_size) t->vocab_size = id + 1;
    return SD3Q_OK;
}

// Slot of pair (a, b) in the merge table: the matching entry or the empty slot where it would go.
static uint32_t merge_slot(const struct bpe_tokenizer * t, uint64_t key) {
    uint64_t h    = key * 0x9E3779B97F4A7C15ull;
    uint32_t mask = t->merge_slots - 1;
    uint32_t i    = (uint32_t)(h >> 32) & mask;
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key) i = (i + 1) & mask;
    return i;
}

// Looks up pair (a, b); NULL when it does not merge.
static const struct bpe_merge * find_merge(const struct bpe_tokenizer * t, int32_t a, int32_t b) {
    if (t->merge_slots == 0) return NULL;  // a vocabulary without merges
    uint64_t                 key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    const struct bpe_merge * m   = &t->merges[merge_slot(t, key)];
    return m->key == key ? m : NULL;
}

// Records merge (a, b) with `rank`; a later line with the same pair overrides the rank, as in CLIPTokenizer's dict.
static enum sd3q_status add_merge(struct bpe_tokenizer * t, const char * a, size_t an, const char * b, size_t bn,
                                  uint32_t rank, int32_t * result, struct sd3q_errbuf * e) {
    int32_t sa, sb, sr;
    TRY(intern_sym(t, a, an, &sa, e));
    TRY(intern_sym(t, b, bn, &sb, e));
    char   stackbuf[256];
    size_t rn  = an + bn;  // both ≤ line length, which is capped by the file size
    char * cat = rn <= sizeof(stackbuf) ? stackbuf : malloc(rn);
    if (!cat) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    memcpy(cat, a, an);
    memcpy(cat + an, b, bn);
    enum sd3q_status st = intern_sym(t, cat, rn, &sr, e);
    if (cat != stackbuf) free(cat);
    TRY(st);
    if ((t->merge_count + 1) * 2 > t->merge_slots) {
        uint32_t           nslots = t->merge_slots ? t->merge_slots * 2 : 1024;
        struct bpe_merge * old = t->merges;
        uint32_t           oldn = t->merge_slots;
        t->merges = malloc((size_t)nslots * sizeof(*t->merges));
        if (!t->merges) {
            t->merges = old;
            return err_set(e, SD3Q_ERR_OOM, "out of memory");
        }
        t->merge_slots = nslots;
        for (uint32_t i = 0; i < nslots; i++) t->merges[i].key = UINT64_MAX;
        for (uint32_t i = 0; i < oldn; i++)
            if (old[i].key != UINT64_MAX) t->merges[merge_slot(t, old[i].key)] = old[i];
        free(old);
    }
    uint64_t           key = (uint64_t)(uint32_t)sa << 32 | (uint32_t)sb;
    struct bpe_merge * m   = &t->merges[merge_slot(t, key)];
    if (m->key != key) t->merge_count++;
    m->key    = key;
    m->rank   = rank;
    m->result = sr;
    if (result) *result = sr;
    return SD3Q_OK;
}

// Splits one merges line into exactly two fields separated by ASCII whitespace. 0 = blank, 2 = ok, −1 = other.
static int split_merge_line(const char * s, size_t n, const char ** a, size_t * an, const char ** b, size_t * bn) {
    const char * f[3];
    size_t       fl[3];
    int          nf = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) i++;
        if (i >= n) break;
        size_t j = i;
        while (j < n && !(s[j] == ' ' || (s[j] >= '\t' && s[j] <= '\r'))) j++;
        if (nf == 3) return -1;
        f[nf]    = s + i;
        fl[nf++] = j - i;
        i        = j;
    }
    if (nf == 0) return 0;
    if (nf != 2) return -1;
    *a  = f[0];
    *an = fl[0];
    *b  = f[1];
    *bn = fl[1];
    return 2;
}

// Parses merges text: the first line is a header (skipped), then up to BPE_MAX_MERGES lines "left right", ranked
// by line. With `openai_vocab` each merge's result is also appended to the vocabulary (bpe_simple_vocab).
static enum sd3q_status parse_merges(struct bpe_tokenizer * t, const struct tok_text * f, int openai_vocab,
                                     int32_t * next_id, struct sd3q_errbuf * e) {
    const char * s = f->data;
    size_t       n = f->n;
    if (!openai_vocab) {
        // CLIPTokenizer strips the whole file before splitting it into lines.
        while (n > 0 && (*s == ' ' || (*s >= '\t' && *s <= '\r'))) s++, n--;
        while (n > 0 && (s[n - 1] == ' ' || (s[n - 1] >= '\t' && s[n - 1] <= '\r'))) n--;
    }
    size_t pos  = 0;
    long   line = 0;
    while (pos <= n && line <= BPE_MAX_MERGES) {
        size_t end = pos;
        while (end < n && s[end] != '\n') end++;
        if (line > 0) {
            const char * a, * b;
            size_t       an, bn;
            int          k = split_merge_line(s + pos, end - pos, &a, &an, &b, &bn);
            if (k < 0) {
                return err_set(e, SD3Q_ERR_FORMAT,
                               "%s: line %ld: expected two symbols separated by a space, got \"%.*s\"", f->name,
                               line + 1, (int)(end - pos > 80 ? 80 : end - pos), s + pos);
            }
            if (k == 2) {
                int32_t r;
                TRY(add_merge(t, a, an, b, bn, (uint32_t)(line - 1), &r, e));
                if (openai_vocab) {
                    t->sym_id[r] = (*next_id)++;
                    if (*next_id > t->vocab_size) t->vocab_size = *next_id;
                }
            } else if (openai_vocab) {
                TRY(add_vocab(t, "", 0, (*next_id)++, e));  // OpenAI joins an empty line into "" and keeps it
            }
        }
        if (end >= n) break;
        pos = end + 1;
        line++;
    }
    return SD3Q_OK;
}

// Reads vocab.json: an object of "token": id.
static enum sd3q_status parse_vocab_object(struct bpe_tokenizer * t, const cJSON * obj, const char * name,
                                           struct sd3q_errbuf * e) {
    if (!cJSON_IsObject(obj)) return err_set(e, SD3Q_ERR_FORMAT, "%s: expected a JSON object of \"token\": id", name);
    for (const cJSON * it = obj->child; it; it = it->next) {
        if (!it->string) return err_set(e, SD3Q_ERR_FORMAT, "%s: entry without a key", name);
        double v = it->valuedouble;
        if (!cJSON_IsNumber(it))
            return err_set(e, SD3Q_ERR_FORMAT, "%s: \"%.60s\": expected an integer id, got %s", name, it->string,
                           tok_json_type(it));
        if (v < 0 || v >= BPE_MAX_ID || v != (double)(int32_t)v)
            return err_set(e, SD3Q_ERR_FORMAT, "%s: \"%.60s\": expected an integer id in [0, %d), got %g", name,
                           it->string, BPE_MAX_ID, v);
        TRY(add_vocab(t, it->string, strlen(it->string), (int32_t)v, e));
    }
    return SD3Q_OK;
}

// Reads tokenizer.json's model (type BPE): vocab, merges (strings "a b" or pairs), end_of_word_suffix "</w>";
// and its added_tokens.
static enum sd3q_status parse_tokenizer_json(struct bpe_tokenizer * t, const cJSON * root, const char * name,
                                             const cJSON ** added_out, struct sd3q_errbuf * e) {
    const cJSON * model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON * type  = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model)) return err_set(e, SD3Q_ERR_FORMAT, "%s: no \"model\" object", name);
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: model.type: expected \"BPE\", got %s%s%s", name,
                       cJSON_IsString(type) ? "\"" : "a non-string", cJSON_IsString(type) ? type->valuestring : "",
                       cJSON_IsString(type) ? "\"" : "");
    const cJSON * suffix = cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix");
    if (!cJSON_IsString(suffix) || strcmp(suffix->valuestring, "</w>") != 0)
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: model.end_of_word_suffix: CLIP's BPE needs \"</w>\", got %s",
                       name, cJSON_IsString(suffix) ? suffix->valuestring : "none");
    char where[300];
    snprintf(where, sizeof(where), "%s: model.vocab", name);
    TRY(parse_vocab_object(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"), where, e));
    const cJSON * merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return err_set(e, SD3Q_ERR_FORMAT, "%s: model.merges: expected an array", name);
    uint32_t rank = 0;
    for (const cJSON * m = merges->child; m && rank < BPE_MAX_MERGES; m = m->next, rank++) {
        const char * a = NULL, * b = NULL;
        size_t       an = 0, bn = 0;
        int          ok = 0;
        if (cJSON_IsString(m)) {
            ok = split_merge_line(m->valuestring, strlen(m->valuestring), &a, &an, &b, &bn) == 2;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            a  = m->child->valuestring;
            an = strlen(a);
            b  = m->child->next->valuestring;
            bn = strlen(b);
            ok = an > 0 && bn > 0;
        }
        if (!ok)
            return err_set(e, SD3Q_ERR_FORMAT, "%s: model.merges[%u]: expected \"left right\" or [\"left\", \"right\"]",
                           name, rank);
        TRY(add_merge(t, a, an, b, bn, rank, NULL, e));
    }
    *added_out = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    return SD3Q_OK;
}

// Adds (or updates) an added token that is split out of the raw text before clean-up.
static enum sd3q_status add_added(struct bpe_tokenizer * t, const char * text, int32_t id, int lstrip, int rstrip,
                                  struct sd3q_errbuf * e) {
    struct tok_cps cps = {0};
    if (tok_utf8_decode(text, strlen(text), &cps) != 0) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if (cps.n == 0) {
        free(cps.p);
        return SD3Q_OK;  // an empty token never matches
    }
    for (int i = 0; i < t->n_added; i++) {
        if (t->added[i].n == cps.n && memcmp(t->added[i].cps, cps.p, cps.n * sizeof(uint32_t)) == 0) {
            free(cps.p);
            return SD3Q_OK;  // the first definition wins, like added_tokens_decoder before the special tokens
        }
    }
    struct bpe_added * p = realloc(t->added, (size_t)(t->n_added + 1) * sizeof(*p));
    if (!p) {
        free(cps.p);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    t->added                = p;
    t->added[t->n_added++]  = (struct bpe_added){cps.p, cps.n, id, lstrip, rstrip};
    if (id + 1 > t->vocab_size) t->vocab_size = id + 1;
    return SD3Q_OK;
}

// Reads an added-token object {"content": ..., "lstrip": ..., "rstrip": ...} with the given id.
static enum sd3q_status add_added_json(struct bpe_tokenizer * t, const cJSON * o, double id, const char * where,
                                       struct sd3q_errbuf * e) {
    const cJSON * content = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (!cJSON_IsObject(o) || !cJSON_IsString(content))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: expected an object with a \"content\" string", where);
    if (!(id >= 0 && id < BPE_MAX_ID && id == (double)(int32_t)id))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: expected an integer id in [0, %d), got %g", where, BPE_MAX_ID, id);
    return add_added(t, content->valuestring, (int32_t)id,
                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "lstrip")),
                     cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "rstrip")), e);
}

// Id of a token text: an added token first, then the vocabulary; −1 when neither has it.
static int32_t token_id(const struct bpe_tokenizer * t, const char * s) {
    struct tok_cps cps = {0};
    int32_t        id  = -1;
    if (tok_utf8_decode(s, strlen(s), &cps) == 0) {
        for (int i = 0; i < t->n_added && id < 0; i++)
            if (t->added[i].n == cps.n && memcmp(t->added[i].cps, cps.p, cps.n * sizeof(uint32_t)) == 0)
                id = t->added[i].id;
    }
    free(cps.p);
    if (id >= 0) return id;
    int32_t sym = tok_strtab_find(&t->syms, s, strlen(s));
    return sym >= 0 ? t->sym_id[sym] : -1;
}

// Special tokens from the configs (defaults as CLIPTokenizer.__init__), their ids, and the added-token list.
static enum sd3q_status resolve_specials(struct bpe_tokenizer * t, const struct bpe_sources * src,
                                         const cJSON * tj_added, struct sd3q_errbuf * e) {
    cJSON *          cfg = NULL, * spec = NULL;
    enum sd3q_status st  = tok_json_parse(&src->config_json, &cfg, e);
    if (st == SD3Q_OK) st = tok_json_parse(&src->special_tokens_json, &spec, e);
    const char *     cname = src->config_json.name;
    const char *     sname = src->special_tokens_json.name;
    static const char * keys[4]     = {"bos_token", "eos_token", "unk_token", "pad_token"};
    static const char * defaults[4] = {"<|startoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"};
    char *              text[4]     = {0};
    int                 is_null[4]  = {0};
    for (int k = 0; k < 4 && st == SD3Q_OK; k++)
        st = tok_json_token(cfg, cname, spec, sname, keys[k], &text[k], &is_null[k], e);

    // Added tokens: tokenizer.json's list, then tokenizer_config.json's added_tokens_decoder, then the specials.
    if (st == SD3Q_OK && tj_added) {
        if (!cJSON_IsArray(tj_added)) st = err_set(e, SD3Q_ERR_FORMAT, "%s: added_tokens: expected an array",
                                                    src->tokenizer_json.name);
        int i = 0;
        for (const cJSON * a = tj_added ? tj_added->child : NULL; a && st == SD3Q_OK; a = a->next, i++) {
            char where[300];
            snprintf(where, sizeof(where), "%s: added_tokens[%d]", src->tokenizer_json.name, i);
            const cJSON * id = cJSON_GetObjectItemCaseSensitive(a, "id");
            st = add_added_json(t, a, cJSON_IsNumber(id) ? id->valuedouble : -1, where, e);
        }
    }
    const cJSON * dec = cJSON_IsObject(cfg) ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL;
    if (st == SD3Q_OK && dec) {
        if (!cJSON_IsObject(dec))
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: added_tokens_decoder: expected an object", cname);
        for (const cJSON * a = cJSON_IsObject(dec) ? dec->child : NULL; a && st == SD3Q_OK; a = a->next) {
            char where[300];
            snprintf(where, sizeof(where), "%s: added_tokens_decoder[\"%.40s\"]", cname, a->string);
            char * endp = NULL;
            double id   = strtod(a->string, &endp);
            if (!endp || *endp || endp == a->string) id = -1;
            st = add_added_json(t, a, id, where, e);
        }
    }
    const cJSON * extra = NULL;
    if (cJSON_IsObject(spec)) extra = cJSON_GetObjectItemCaseSensitive(spec, "additional_special_tokens");
    if (!extra && cJSON_IsObject(cfg)) extra = cJSON_GetObjectItemCaseSensitive(cfg, "additional_special_tokens");

    // The four specials must exist in the vocabulary (Hugging Face would append missing ones as new ids, which
    // the text encoder's embedding table does not have).
    int32_t ids[4] = {-1, -1, -1, -1};
    for (int k = 0; k < 4 && st == SD3Q_OK; k++) {
        const char * s = text[k] ? text[k] : (is_null[k] ? NULL : defaults[k]);
        if (!s) continue;
        ids[k] = token_id(t, s);
        if (ids[k] < 0) {
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: %s \"%.60s\" is not in the vocabulary",
                         text[k] ? (src->special_tokens_json.data ? sname : cname) : "CLIP default", keys[k], s);
            break;
        }
        st = add_added(t, s, ids[k], 0, 0, e);
    }
    for (const cJSON * a = cJSON_IsArray(extra) ? extra->child : NULL; a && st == SD3Q_OK; a = a->next) {
        const cJSON * c = cJSON_IsObject(a) ? cJSON_GetObjectItemCaseSensitive(a, "content") : a;
        if (!cJSON_IsString(c)) continue;
        int32_t id = token_id(t, c->valuestring);
        if (id < 0) st = err_set(e, SD3Q_ERR_FORMAT, "additional_special_tokens: \"%.60s\" is not in the vocabulary",
                                 c->valuestring);
        else st = add_added(t, c->valuestring, id, 0, 0, e);
    }
    if (st == SD3Q_OK) {
        if (ids[0] < 0 || ids[1] < 0)
            st = err_set(e, SD3Q_ERR_FORMAT, "%s: bos_token and eos_token must not be null", cname);
        t->bos = ids[0];
        t->eos = ids[1];
        t->unk = ids[2] >= 0 ? ids[2] : ids[1];
        t->pad = ids[3] >= 0 ? ids[3] : ids[1];  // pad_token null: pad with the end token
    }
    for (int k = 0; k < 4; k++) free(text[k]);
    cJSON_Delete(cfg);
    cJSON_Delete(spec);
    return st;
}

enum sd3q_status bpe_tokenizer_from_sources(const struct bpe_sources * src_in, struct bpe_tokenizer ** out,
                                            struct sd3q_errbuf * e) {
    *out = NULL;
    // Messages name every file; give nameless in-memory sources their usual file names.
    struct bpe_sources   named    = *src_in;
    struct bpe_sources * src      = &named;
    struct tok_text *    all[6]   = {&named.vocab_json, &named.merges_txt, &named.tokenizer_json, &named.bpe_txt,
                                     &named.config_json, &named.special_tokens_json};
    static const char *  names[6] = {"vocab.json", "merges.txt", "tokenizer.json", "bpe_simple_vocab_16e6.txt",
                                     "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 6; i++)
        if (!all[i]->name) all[i]->name = names[i];

    struct bpe_tokenizer * t = calloc(1, sizeof(*t));
    if (!t) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    uint32_t cp[256];
    uint8_t  order[256];
    bytes_to_unicode(cp, order);
    cJSON *          root     = NULL;
    const cJSON *    tj_added = NULL;
    enum sd3q_status st       = SD3Q_OK;

    // The 512 byte symbols exist whatever the vocabulary holds (a small vocabulary may lack some: they map to unk).
    for (int b = 0; b < 256 && st == SD3Q_OK; b++) {
        char u8[8];
        int  n = tok_utf8_put(cp[b], u8);
        memcpy(u8 + n, "</w>", 4);
        st = intern_sym(t, u8, (size_t)n, &t->byte_sym[b], e);
        if (st == SD3Q_OK) st = intern_sym(t, u8, (size_t)n + 4, &t->byte_sym_end[b], e);
    }
    if (st == SD3Q_OK && src->bpe_txt.data) {
        // OpenAI's SimpleTokenizer: byte symbols, the same with "</w>", merge results, then the two specials.
        int32_t next = 0;
        for (int k = 0; k < 256; k++) t->sym_id[t->byte_sym[order[k]]] = next++;
        for (int k = 0; k < 256; k++) t->sym_id[t->byte_sym_end[order[k]]] = next++;
        st = parse_merges(t, &src->bpe_txt, 1, &next, e);
        if (st == SD3Q_OK) st = add_vocab(t, "<|startoftext|>", 15, next++, e);
        if (st == SD3Q_OK) st = add_vocab(t, "<|endoftext|>", 13, next++, e);
        if (next > t->vocab_size) t->vocab_size = next;
    } else if (st == SD3Q_OK && src->tokenizer_json.data) {
        st = tok_json_parse(&src->tokenizer_json, &root, e);
        if (st == SD3Q_OK) st = parse_tokenizer_json(t, root, src->tokenizer_json.name, &tj_added, e);
    } else if (st == SD3Q_OK && src->vocab_json.data && src->merges_txt.data) {
        st = tok_json_parse(&src->vocab_json, &root, e);
        if (st == SD3Q_OK) st = parse_vocab_object(t, root, src->vocab_json.name, e);
        int32_t unused = 0;
        if (st == SD3Q_OK) st = parse_merges(t, &src->merges_txt, 0, &unused, e);
    } else if (st == SD3Q_OK) {
        st = err_set(e, SD3Q_ERR_MISSING, "no CLIP vocabulary: need vocab.json + merges.txt, tokenizer.json or "
                                          "bpe_simple_vocab_16e6.txt.gz");
    }
    if (st == SD3Q_OK) st = resolve_specials(t, src, tj_added, e);
    if (st == SD3Q_OK) {
        int32_t s = tok_strtab_find(&t->syms, "<|startoftext|>", 15);
        int32_t d = tok_strtab_find(&t->syms, "<|endoftext|>", 13);
        t->sot_id = s >= 0 && t->sym_id[s] >= 0 ? t->sym_id[s] : t->unk;
        t->eot_id = d >= 0 && t->sym_id[d] >= 0 ? t->sym_id[d] : t->unk;
    }
    cJSON_Delete(root);
    if (st != SD3Q_OK) {
        bpe_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SD3Q_OK;
}

void bpe_tokenizer_free(struct bpe_tokenizer * t) {
    if (!t) return;
    tok_strtab_free(&t->syms);
    free(t->sym_id);
    free(t->merges);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].cps);
    free(t->added);
    free(t);
}

// 1 when dir/name is a regular file.
static int file_in(const char * dir, const char * name) {
    char * p  = path_join(dir, name);
    int    ok = p && path_is_file(p);
    free(p);
    return ok;
}

enum sd3q_status bpe_tokenizer_load(const char * path, struct bpe_tokenizer ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    if (!path) return err_set(e, SD3Q_ERR_INVALID_ARG, "bpe_tokenizer_load: path is NULL");
    char *       dir  = NULL;
    const char * file = NULL;  // basename when `path` is a file
    if (path_is_dir(path)) {
        dir = strdup(path);
    } else if (path_is_file(path)) {
        const char * slash = strrchr(path, '/');
        file               = slash ? slash + 1 : path;
        dir                = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    } else {
        return err_set(e, SD3Q_ERR_MISSING, "%s: no such file or folder (expected a CLIP tokenizer folder, "
                                            "vocab.json, tokenizer.json or bpe_simple_vocab_16e6.txt.gz)", path);
    }
    if (!dir) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    // Which vocabulary: the named file, else what the folder holds: vocab.json + merges.txt (diffusers), OpenAI's
    // .gz, a tokenizer.json holding a BPE model (a flat --tokenizer-dir may also hold T5's tokenizer.json).
    enum { PAIR, TJ, GZ } kind = PAIR;
    const char * single = NULL;  // tokenizer.json or .gz inside dir (NULL: `path` itself)
    size_t       flen   = file ? strlen(file) : 0;
    if (file) {
        kind = (flen > 3 && strcmp(file + flen - 3, ".gz") == 0) ? GZ
             : (strcmp(file, "vocab.json") == 0 || strcmp(file, "merges.txt") == 0) ? PAIR : TJ;
    } else if (file_in(dir, "vocab.json")) {
        kind = PAIR;
    } else if (file_in(dir, "bpe_simple_vocab_16e6.txt.gz")) {
        kind   = GZ;
        single = "bpe_simple_vocab_16e6.txt.gz";
    } else if (file_in(dir, "clip_bpe_simple_vocab_16e6.txt.gz")) {
        kind   = GZ;
        single = "clip_bpe_simple_vocab_16e6.txt.gz";
    } else if (file_in(dir, "tokenizer.json")) {
        kind   = TJ;
        single = "tokenizer.json";
    } else {
        enum sd3q_status st = err_set(e, SD3Q_ERR_MISSING, "%s: no vocab.json + merges.txt, tokenizer.json or "
                                                           "bpe_simple_vocab_16e6.txt.gz in this folder", dir);
        free(dir);
        return st;
    }
    struct bpe_sources src = {0};
    struct tok_text    gz  = {0};
    enum sd3q_status   st  = SD3Q_OK;
    if (kind == PAIR) {
        st = tok_read_in(dir, "vocab.json", BPE_FILE_CAP, 1, &src.vocab_json, e);
        if (st == SD3Q_OK) st = tok_read_in(dir, "merges.txt", BPE_FILE_CAP, 1, &src.merges_txt, e);
    } else if (kind == TJ) {
        st = single ? tok_read_in(dir, single, BPE_FILE_CAP, 1, &src.tokenizer_json, e)
                    : tok_read_in(path, NULL, BPE_FILE_CAP, 1, &src.tokenizer_json, e);
    } else {
        st = single ? tok_read_in(dir, single, BPE_FILE_CAP, 1, &gz, e)
                    : tok_read_in(path, NULL, BPE_FILE_CAP, 1, &gz, e);
        char * txt = NULL;
        size_t n   = 0;
        if (st == SD3Q_OK) st = tok_gunzip(gz.data, gz.n, BPE_FILE_CAP, gz.name, &txt, &n, e);
        if (st == SD3Q_OK) src.bpe_txt = (struct tok_text){txt, n, strdup(gz.name)};
    }
    if (st == SD3Q_OK && single && kind == TJ && !tok_json_model_is(&src.tokenizer_json, "BPE"))
        st = err_set(e, SD3Q_ERR_MISSING, "%s: no CLIP vocabulary in this folder (its tokenizer.json is not a BPE "
                                          "model)", dir);
    if (st == SD3Q_OK) st = tok_read_in(dir, "tokenizer_config.json", BPE_CONFIG_CAP, 0, &src.config_json, e);
    if (st == SD3Q_OK) st = tok_read_in(dir, "special_tokens_map.json", BPE_CONFIG_CAP, 0, &src.special_tokens_json, e);
    if (st == SD3Q_OK) tok_drop_foreign_config(&src.config_json, &src.special_tokens_json, "CLIPTokenizer");
    if (st == SD3Q_OK) st = bpe_tokenizer_from_sources(&src, out, e);
    struct tok_text * all[7] = {&src.vocab_json, &src.merges_txt, &src.tokenizer_json, &src.bpe_txt,
                                &src.config_json, &src.special_tokens_json, &gz};
    for (int i = 0; i < 7; i++) {
        free((char *)all[i]->data);
        free((char *)all[i]->name);
    }
    free(dir);
    return st;
}

// ---- encoding ---------------------------------------------------------------------------------------------------

// Per-call scratch: everything an encode needs, so the tokenizer itself stays read-only.
struct bpe_work {
    struct tok_cps text, seg, scratch[5];
    int32_t *      sym, * nxt, * prv, * pending;
    uint64_t *     heap;       // rank << 32 | position, a binary min-heap
    uint8_t *      bytes;
    size_t         word_cap;   // symbols the word arrays hold
    int32_t *      ids;        // output (NULL when only counting)
    size_t         limit;      // ids to store; SIZE_MAX = no limit
    size_t         n;          // ids produced
};

static void work_free(struct bpe_work * w) {
    free(w->text.p);
    free(w->seg.p);
    for (int i = 0; i < 5; i++) free(w->scratch[i].p);
    free(w->sym);
    free(w->nxt);
    free(w->prv);
    free(w->pending);
    free(w->heap);
    free(w->bytes);
}

// Makes the word arrays hold n symbols (n bytes; the heap 3n entries, pending 2n). 0 or −1 (OOM).
static int work_reserve_word(struct bpe_work * w, size_t n) {
    if (n <= w->word_cap) return 0;
    size_t cap = w->word_cap ? w->word_cap : 64;
    while (cap < n) cap *= 2;
    if (cap > SIZE_MAX / (3 * sizeof(uint64_t))) return -1;
    int32_t *  sym = realloc(w->sym, cap * sizeof(int32_t));
    if (sym) w->sym = sym;
    int32_t *  nxt = realloc(w->nxt, cap * sizeof(int32_t));
    if (nxt) w->nxt = nxt;
    int32_t *  prv = realloc(w->prv, cap * sizeof(int32_t));
    if (prv) w->prv = prv;
    int32_t *  pen = realloc(w->pending, 2 * cap * sizeof(int32_t));
    if (pen) w->pending = pen;
    uint64_t * hp  = realloc(w->heap, 3 * cap * sizeof(uint64_t));
    if (hp) w->heap = hp;
    uint8_t *  by  = realloc(w->bytes, cap);
    if (by) w->bytes = by;
    if (!sym || !nxt || !prv || !pen || !hp || !by) return -1;
    w->word_cap = cap;
    return 0;
}

static int work_full(const struct bpe_work * w) { return w->limit != SIZE_MAX && w->n >= w->limit; }

static void emit(struct bpe_work * w, int32_t id) {
    if (w->ids && w->n < w->limit) w->ids[w->n] = id;
    w->n++;
}

static void heap_push(uint64_t * h, size_t * n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i    = (i - 1) / 2;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t * h, size_t * n) {
    uint64_t top  = h[0];
    uint64_t last = h[--(*n)];
    size_t   i    = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1] < h[c]) c++;
        if (h[c] >= last) break;
        h[i] = h[c];
        i    = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

// BPE of one pre-token's bytes (n ≥ 1, in w->bytes): rounds of "take the lowest-ranked adjacent pair and merge all
// its occurrences left to right"; pairs a round creates join the heap only after the round, as in
// CLIPTokenizer.bpe. Emits the resulting ids.
static void bpe_word(const struct bpe_tokenizer * t, struct bpe_work * w, size_t n) {
    int32_t *  sym = w->sym, * nxt = w->nxt, * prv = w->prv;
    uint64_t * heap = w->heap;
    size_t     hn   = 0;
    for (size_t i = 0; i < n; i++) {
        sym[i] = i + 1 == n ? t->byte_sym_end[w->bytes[i]] : t->byte_sym[w->bytes[i]];
        nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        const struct bpe_merge * m = find_merge(t, sym[i], sym[i + 1]);
        if (m) heap_push(heap, &hn, (uint64_t)m->rank << 32 | i);
    }
    while (hn > 0) {
        uint32_t rank = (uint32_t)(heap[0] >> 32);
        size_t   np   = 0;
        while (hn > 0 && (uint32_t)(heap[0] >> 32) == rank) {
            int32_t i = (int32_t)(uint32_t)heap_pop(heap, &hn);
            if (sym[i] < 0 || nxt[i] < 0) continue;
            int32_t                  j = nxt[i];
            const struct bpe_merge * m = find_merge(t, sym[i], sym[j]);
            if (!m || m->rank != rank) continue;  // stale: a neighbour changed since the pair was queued
            sym[i] = m->result;
            sym[j] = -1;
            nxt[i] = nxt[j];
            if (nxt[j] >= 0) prv[nxt[j]] = i;
            if (prv[i] >= 0) w->pending[np++] = prv[i];
            w->pending[np++] = i;
        }
        for (size_t k = 0; k < np; k++) {
            int32_t p = w->pending[k];
            if (sym[p] < 0 || nxt[p] < 0) continue;
            const struct bpe_merge * m = find_merge(t, sym[p], sym[nxt[p]]);
            if (m) heap_push(heap, &hn, (uint64_t)m->rank << 32 | (uint32_t)p);
        }
    }
    for (int32_t i = 0; i >= 0; i = nxt[i]) {
        int32_t id = t->sym_id[sym[i]];
        emit(w, id >= 0 ? id : t->unk);
    }
}

// 1 when cps[0..n) is `lit` (ASCII, lower case) under the pattern's IGNORECASE, where "ſ" also matches "s".
static int match_ci(const uint32_t * cps, size_t n, const char * lit) {
    size_t k = strlen(lit);
    if (n < k) return 0;
    for (size_t i = 0; i < k; i++) {
        uint32_t c = cps[i];
        if (c < 0x80 && c - 'A' < 26) c += 32;
        if (c != (uint8_t)lit[i] && !(lit[i] == 's' && c == 0x17F)) return 0;
    }
    return (int)k;
}

// Tokenizes one segment between added tokens: clean-up, CLIP's pattern, BPE. 0 or −1 (OOM).
static int encode_segment(const struct bpe_tokenizer * t, struct bpe_work * w, const uint32_t * cps, size_t n) {
    if (tok_cps_reserve(&w->seg, n) != 0) return -1;
    memcpy(w->seg.p, cps, n * sizeof(uint32_t));
    w->seg.n = n;
    if (tok_clip_clean(&w->seg, w->scratch) != 0) return -1;
    const uint32_t * s = w->seg.p;
    size_t           m = w->seg.n;
    for (size_t i = 0; i < m && !work_full(w);) {
        uint32_t c   = s[i];
        size_t   len = 0;
        int      lit = 0;  // 1: "<|startoftext|>", 2: "<|endoftext|>" exactly
        if (tok_is_regex_space(c) || tok_is_pattern_skipped(c)) {
            i++;
            continue;
        }
        if (c == '<' && (len = (size_t)match_ci(s + i, m - i, "<|startoftext|>")) > 0) {
            lit = 1;
        } else if (c == '<' && (len = (size_t)match_ci(s + i, m - i, "<|endoftext|>")) > 0) {
            lit = 2;
        } else if (c == '\'' && i + 1 < m) {
            static const char * contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
            for (int k = 0; k < 7 && !len; k++) len = (size_t)match_ci(s + i, m - i, contractions[k]);
        }
        if (!len) {
            if (tok_is_letter(c)) {
                len = 1;
                while (i + len < m && tok_is_letter(s[i + len])) len++;
            } else if (tok_is_number(c)) {
                len = 1;
            } else {
                len = 1;
                while (i + len < m && !tok_is_regex_space(s[i + len]) && !tok_is_letter(s[i + len]) &&
                       !tok_is_number(s[i + len]) && !tok_is_pattern_skipped(s[i + len]))
                    len++;
            }
        }
        if (lit) {
            // CLIPTokenizer's cache returns the literal itself (when it is spelled exactly so, "ſ" aside).
            const char * want = lit == 1 ? "<|startoftext|>" : "<|endoftext|>";
            int          same = 1;
            for (size_t k = 0; k < len; k++) same &= s[i + k] == (uint8_t)want[k];
            if (same) {
                emit(w, lit == 1 ? t->sot_id : t->eot_id);
                i += len;
                continue;
            }
        }
        if (work_reserve_word(w, len * 4) != 0) return -1;
        size_t nb = 0;
        for (size_t k = 0; k < len; k++) nb += (size_t)tok_utf8_put(s[i + k], (char *)w->bytes + nb);
        bpe_word(t, w, nb);
        i += len;
    }
    return 0;
}

// Earliest added token at or after `from` (the longest when several start there): *k = its index, or −1.
static size_t find_added(const struct bpe_tokenizer * t, const uint32_t * cps, size_t n, size_t from, int * k) {
    for (size_t p = from; p < n; p++) {
        int    best = -1;
        size_t blen = 0;
        for (int a = 0; a < t->n_added; a++) {
            const struct bpe_added * ad = &t->added[a];
            if (ad->n > blen && ad->n <= n - p && ad->cps[0] == cps[p] &&
                memcmp(ad->cps, cps + p, ad->n * sizeof(uint32_t)) == 0) {
                best = a;
                blen = ad->n;
            }
        }
        if (best >= 0) {
            *k = best;
            return p;
        }
    }
    *k = -1;
    return n;
}

// The whole text: added tokens split out first (with their lstrip / rstrip), the segments between them encoded.
static int encode_text(const struct bpe_tokenizer * t, struct bpe_work * w, const char * text) {
    if (tok_utf8_decode(text, strlen(text), &w->text) != 0) return -1;
    const uint32_t * c           = w->text.p;
    size_t           n           = w->text.n;
    int              prev_rstrip = 0;
    for (size_t pos = 0; pos <= n && !work_full(w);) {
        int    k;
        size_t at = find_added(t, c, n, pos, &k);
        size_t a = pos, b = at;
        if (prev_rstrip)
            while (a < b && tok_is_py_space(c[a])) a++;
        if (k >= 0 && t->added[k].lstrip)
            while (b > a && tok_is_py_space(c[b - 1])) b--;
        if (b > a && encode_segment(t, w, c + a, b - a) != 0) return -1;
        if (k < 0 || work_full(w)) break;
        emit(w, t->added[k].id);
        prev_rstrip = t->added[k].rstrip;
        pos         = at + t->added[k].n;
    }
    return 0;
}

int bpe_tokenizer_encode(const struct bpe_tokenizer * t, const char * text, int max_len, int pad, int32_t * ids) {
    if (!t || !text || !ids || max_len < 2) return -1;
    struct bpe_work w = {0};
    w.ids             = ids + 1;
    w.limit           = (size_t)max_len - 2;
    int rc            = encode_text(t, &w, text);
    work_free(&w);
    if (rc != 0) return -1;
    int n   = 1 + (int)(w.n < w.limit ? w.n : w.limit);
    ids[0]  = t->bos;
    ids[n++] = t->eos;
    while (pad && n < max_len) ids[n++] = t->pad;
    return n;
}

int bpe_tokenizer_count(const struct bpe_tokenizer * t, const char * text) {
    if (!t || !text) return -1;
    struct bpe_work w = {0};
    w.limit           = SIZE_MAX;
    int rc            = encode_text(t, &w, text);
    work_free(&w);
    if (rc != 0) return -1;
    return w.n > (size_t)INT32_MAX - 2 ? INT32_MAX : (int)w.n + 2;
}

int32_t bpe_tokenizer_bos_id(const struct bpe_tokenizer * t) { return t->bos; }
int32_t bpe_tokenizer_eos_id(const struct bpe_tokenizer * t) { return t->eos; }
int32_t bpe_tokenizer_pad_id(const struct bpe_tokenizer * t) { return t->pad; }
int32_t bpe_tokenizer_vocab_size(const struct bpe_tokenizer * t) { return t->vocab_size; }

void bpe_tokenizer_set_pad_id(struct bpe_tokenizer * t, int32_t pad_id) { t->pad = pad_id; }

enum sd3q_status bpe_tokenizer_set_pad_token(struct bpe_tokenizer * t, const char * token, struct sd3q_errbuf * e) {
    int32_t id = token ? token_id(t, token) : -1;
    if (id < 0)
        return err_set(e, SD3Q_ERR_INVALID_ARG, "pad token \"%.60s\" is not in the CLIP vocabulary",
                       token ? token : "(null)");
    t->pad = id;
    return SD3Q_OK;
}
