/*
 * tokenizer.h — the text tokenizers of SD3's three text encoders.
 *
 *   struct bpe_tokenizer      CLIP's byte-level BPE (CLIP-L and CLIP-G share it). Same ids as Hugging Face's slow
 *                             CLIPTokenizer (the class diffusers' SD3 pipeline loads) with ftfy installed.
 *   struct unigram_tokenizer  T5's SentencePiece unigram model. Same ids as the sentencepiece library (and
 *                             T5TokenizerFast) with "</s>" appended.
 *
 * docs/TOKENIZERS.md lists the files read, the reference versions matched and the known deviations.
 * Loaded objects are immutable: any number of threads may encode with one object at the same time. The setters
 * (pad id / pad token) are meant for set-up, before the object is shared.
 * Not here: the text encoders themselves, prompt weighting "(word:1.2)" and the Stability reference's 77-token
 * chunking of long CLIP prompts (diffusers truncates, and so do these encoders).
 */
#ifndef SD3Q_MODEL_TOKENIZER_H
#define SD3Q_MODEL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#define SD3Q_CLIP_MAX_LEN 77  // BOS + at most 75 tokens + EOS

// ---- CLIP BPE ---------------------------------------------------------------------------------------------------

struct bpe_tokenizer;

// Loads a CLIP vocabulary from `path`: a folder holding vocab.json + merges.txt (diffusers tokenizer/, tokenizer_2/)
// or tokenizer.json or bpe_simple_vocab_16e6.txt.gz, or one of those files. tokenizer_config.json and
// special_tokens_map.json next to it give the special tokens (pad, bos, eos, unk, added tokens) as Hugging Face
// reads them; without them the CLIP defaults apply (pad = eos = unk = "<|endoftext|>", bos = "<|startoftext|>").
enum sd3q_status bpe_tokenizer_load(const char * path, struct bpe_tokenizer ** out, struct sd3q_errbuf * e);

// Frees a tokenizer (NULL is allowed).
void bpe_tokenizer_free(struct bpe_tokenizer * t);

// Tokenizes UTF-8 `text` (NUL-terminated) into ids[0..max_len): BOS, at most max_len − 2 tokens, EOS; with pad = 1
// the rest up to max_len is filled with the pad id. Returns the number of ids written (max_len when padding), or −1
// for bad arguments (NULL, max_len < 2) or when out of memory. Invalid UTF-8 is read as Python's
// bytes.decode("utf-8", "replace") reads it (one U+FFFD per maximal invalid subsequence).
int bpe_tokenizer_encode(const struct bpe_tokenizer * t, const char * text, int max_len, int pad, int32_t * ids);

// Number of ids `text` gives without truncation (BOS and EOS included), or −1 when out of memory.
int bpe_tokenizer_count(const struct bpe_tokenizer * t, const char * text);

// Special ids and the vocabulary size (largest id + 1, added tokens included).
int32_t bpe_tokenizer_bos_id(const struct bpe_tokenizer * t);
int32_t bpe_tokenizer_eos_id(const struct bpe_tokenizer * t);
int32_t bpe_tokenizer_pad_id(const struct bpe_tokenizer * t);
int32_t bpe_tokenizer_vocab_size(const struct bpe_tokenizer * t);

// Overrides the padding id only (SD3 defaults for single-file checkpoints: CLIP-L pads with EOS, CLIP-G with "!").
// Unlike a tokenizer_config.json pad token, this does not make the token special: "!!" still merges as the
// Stability reference tokenizes it. Call before sharing the object between threads.
void bpe_tokenizer_set_pad_id(struct bpe_tokenizer * t, int32_t pad_id);

// Same, by token text ("!" or "<|endoftext|>"); SD3Q_ERR_INVALID_ARG when the vocabulary lacks it.
enum sd3q_status bpe_tokenizer_set_pad_token(struct bpe_tokenizer * t, const char * token, struct sd3q_errbuf * e);

// ---- T5 SentencePiece unigram -----------------------------------------------------------------------------------

struct unigram_tokenizer;

// Loads a unigram model from `path`: a folder holding spiece.model or tokenizer.json (spiece.model preferred), or
// either file. The eos and pad pieces are "</s>" and "<pad>" unless tokenizer_config.json / special_tokens_map.json
// next to the file (or spiece.model's trainer_spec) name others.
enum sd3q_status unigram_tokenizer_load(const char * path, struct unigram_tokenizer ** out, struct sd3q_errbuf * e);

// Frees a tokenizer (NULL is allowed).
void unigram_tokenizer_free(struct unigram_tokenizer * t);

// Tokenizes UTF-8 `text` into ids[0..max_len): the pieces, truncated to max_len − 1, then "</s>" (as
// T5TokenizerFast with truncation=True); with pad = 1 the rest up to max_len is the pad id. Returns the number of
// ids written, or −1 for bad arguments (NULL, max_len < 1) or when out of memory. Invalid UTF-8 bytes are read as
// sentencepiece reads them (each becomes U+FFFD).
int unigram_tokenizer_encode(const struct unigram_tokenizer * t, const char * text, int max_len, int pad,
                             int32_t * ids);

// Number of ids `text` gives without truncation ("</s>" included), or −1 when out of memory.
int unigram_tokenizer_count(const struct unigram_tokenizer * t, const char * text);

// Special ids and the vocabulary size (largest id + 1).
int32_t unigram_tokenizer_eos_id(const struct unigram_tokenizer * t);
int32_t unigram_tokenizer_pad_id(const struct unigram_tokenizer * t);
int32_t unigram_tokenizer_unk_id(const struct unigram_tokenizer * t);
int32_t unigram_tokenizer_vocab_size(const struct unigram_tokenizer * t);

// ---- internal: shared by the tokenizer sources, the tests and the fuzzer ------------------------------------------

// A file's bytes (not necessarily NUL-terminated) and its name for messages; data == NULL means absent.
struct tok_text {
    const char * data;
    size_t       n;
    const char * name;
};

// The files a CLIP tokenizer is made from: exactly one of vocab_json + merges_txt, tokenizer_json or bpe_txt
// (OpenAI's bpe_simple_vocab, already decompressed); config_json (tokenizer_config.json) and special_tokens_json
// (special_tokens_map.json, which wins where both set a token) are optional.
struct bpe_sources {
    struct tok_text vocab_json, merges_txt, tokenizer_json, bpe_txt, config_json, special_tokens_json;
};

// Builds a CLIP tokenizer from files in memory (what bpe_tokenizer_load does after reading them).
enum sd3q_status bpe_tokenizer_from_sources(const struct bpe_sources * src, struct bpe_tokenizer ** out,
                                            struct sd3q_errbuf * e);

// The files a unigram tokenizer is made from: spiece_model or tokenizer_json, plus the optional configs.
struct unigram_sources {
    struct tok_text spiece_model, tokenizer_json, config_json, special_tokens_json;
};

// Builds a unigram tokenizer from files in memory.
enum sd3q_status unigram_tokenizer_from_sources(const struct unigram_sources * src, struct unigram_tokenizer ** out,
                                                struct sd3q_errbuf * e);

// Reads dir/name (or `dir` itself when name is NULL, capped at `cap` bytes) into f, which then owns the buffer and a
// copy of the path as its name (free both). A missing file is SD3Q_ERR_MISSING when `required`, else leaves f empty.
enum sd3q_status tok_read_in(const char * dir, const char * name, size_t cap, int required, struct tok_text * f,
                             struct sd3q_errbuf * e);

// 0 when f is a JSON object whose model.type is a string other than `type` ("BPE", "Unigram"); 1 otherwise (also
// for invalid JSON, which the loader proper then reports).
int tok_json_model_is(const struct tok_text * f, const char * type);

// A folder may hold several tokenizers' files (a flat --tokenizer-dir): when tokenizer_config.json names a
// tokenizer_class not starting with `class_prefix`, both configs belong to another tokenizer and are dropped (freed).
void tok_drop_foreign_config(struct tok_text * cfg, struct tok_text * spec, const char * class_prefix);

// Inflates gzip data (`name` for messages) into a malloc'd, NUL-terminated buffer of at most `cap` bytes.
enum sd3q_status tok_gunzip(const void * data, size_t n, size_t cap, const char * name, char ** out, size_t * out_n,
                            struct sd3q_errbuf * e);

struct cJSON;

// Parses a JSON file held in memory; *out is NULL when the file is absent (data == NULL). SD3Q_ERR_FORMAT names the
// file and the byte offset where parsing stopped.
enum sd3q_status tok_json_parse(const struct tok_text * f, struct cJSON ** out, struct sd3q_errbuf * e);

// Names a JSON value's type for messages ("a string", "an array", ...).
const char * tok_json_type(const struct cJSON * v);

// Reads a special token `key` ("pad_token", ...) from tokenizer_config.json then special_tokens_map.json (the
// latter wins), as a string or {"content": ...}. *out: malloc'd text or NULL when neither file sets it (or sets
// null: then *is_null = 1). `cfg_name` / `spec_name` name the files for messages.
enum sd3q_status tok_json_token(const struct cJSON * cfg, const char * cfg_name, const struct cJSON * spec,
                                const char * spec_name, const char * key, char ** out, int * is_null,
                                struct sd3q_errbuf * e);

// Interned byte strings: id -> bytes, bytes -> id (open addressing). Zero-initialise before use.
struct tok_strtab {
    char *     bytes;     // all strings back to back, each followed by a NUL
    size_t     bytes_n, bytes_cap;
    uint32_t * off;       // start of string i in bytes
    uint32_t * len;       // its length
    int32_t    count, cap;
    int32_t *  slots;     // hash slots holding ids, −1 = empty; a power of two in number
    uint32_t   nslots;
};

// Finds or adds `s` (n bytes); *id gets its id. SD3Q_ERR_OOM or SD3Q_ERR_FORMAT (table over 2^31 bytes).
enum sd3q_status tok_strtab_intern(struct tok_strtab * st, const char * s, size_t n, int32_t * id,
                                   struct sd3q_errbuf * e);
// Id of `s`, or −1.
int32_t tok_strtab_find(const struct tok_strtab * st, const char * s, size_t n);
// Frees the table's memory.
void tok_strtab_free(struct tok_strtab * st);

// A growable code-point buffer.
struct tok_cps {
    uint32_t * p;
    size_t     n, cap;
};

// Makes room for `need` code points; 0 on success, −1 when out of memory.
int tok_cps_reserve(struct tok_cps * b, size_t need);

// Decodes n bytes of UTF-8 into b (replacing it) as Python's decode("utf-8", "replace") does. 0 or −1 (OOM).
int tok_utf8_decode(const char * s, size_t n, struct tok_cps * b);

// Encodes one code point (≤ U+10FFFF) as UTF-8 into out (4 bytes of room); returns the byte count.
int tok_utf8_put(uint32_t cp, char * out);

// CLIP's text clean-up of one segment, in place: ftfy.fix_text (the subset docs/TOKENIZERS.md lists), collapse of
// whitespace runs, strip, lower-case. `scratch` buffers are reused between calls. 0 or −1 (OOM).
int tok_clip_clean(struct tok_cps * text, struct tok_cps scratch[5]);

// Character classes as the reference's `regex` module sees them: \p{L}, \p{N}, \s.
int tok_is_letter(uint32_t cp);
int tok_is_number(uint32_t cp);
int tok_is_regex_space(uint32_t cp);
// Python's str.isspace().
int tok_is_py_space(uint32_t cp);
// Characters that no alternative of CLIP's case-insensitive pattern matches (findall skips them).
int tok_is_pattern_skipped(uint32_t cp);

// Tables generated by tools/reference/tokenizers/gen_unidata.py (tokenizer-unidata.c).
extern const uint32_t tok_letter_ranges[][2];
extern const int      tok_letter_ranges_count;
extern const uint32_t tok_number_ranges[][2];
extern const int      tok_number_ranges_count;
extern const uint32_t tok_case_ignorable_ranges[][2];
extern const int      tok_case_ignorable_ranges_count;
extern const uint32_t tok_cased_ranges[][2];
extern const int      tok_cased_ranges_count;
extern const uint32_t tok_pattern_skipped[];
extern const int      tok_pattern_skipped_count;
extern const uint32_t tok_width_map[][3];
extern const int      tok_width_map_count;
extern const uint32_t tok_html_invalid_charrefs[][2];
extern const int      tok_html_invalid_charrefs_count;
extern const uint32_t tok_html_invalid_codepoints[];
extern const int      tok_html_invalid_codepoints_count;
extern const uint16_t tok_c1_to_cp1252[32];
extern const char     tok_entity_blob[];
extern const uint32_t tok_entity_offsets[];
extern const int      tok_entity_count;

#endif
