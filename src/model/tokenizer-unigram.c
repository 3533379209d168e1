/*
 * tokenizer-unigram.c — T5's SentencePiece unigram tokenizer, giving the ids of the sentencepiece library (0.2.0:
 * normalizer.cc, unigram_model.cc's optimized Viterbi, sentencepiece_processor.cc) plus "</s>".
 *
 * Reads spiece.model (a ModelProto protobuf, parsed here with bounds-checked varints) or Hugging Face's
 * tokenizer.json (model type Unigram; its Precompiled normalizer and Metaspace pre-tokenizer stand for
 * sentencepiece's normalizer spec). Then, per text:
 *   normalise: the precompiled charsmap (a Darts double-array trie over UTF-8 whose leaves index a pool of
 *     NUL-terminated replacement strings; longest match wins), user-defined pieces kept verbatim, invalid UTF-8
 *     bytes → U+FFFD one byte at a time, extra whitespace removed, spaces → "▁", a "▁" prefix;
 *   segment: Viterbi over the pieces (normal, user-defined and unused pieces are in the lattice; unused are
 *     skipped), scores summed exactly as sentencepiece sums them (double candidates, float storage), a character no
 *     piece covers becomes <unk> scored min − 10, runs of <unk> merge into one (or become <0xXX> byte pieces with
 *     byte_fallback);
 *   append "</s>", truncate keeping "</s>" last, pad.
 * The charsmap is untrusted: it is walked once at load time and every index and value it holds is checked; the
 * lookups check bounds again. Not here: BPE/word/char sentencepiece models, sampling, n-best, decoding.
 */
#include "model/tokenizer.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "core/checked.h"
#include "io/fileutil.h"

#define UG_FILE_CAP   ((size_t)256 << 20)
#define UG_CONFIG_CAP ((size_t)16 << 20)
#define UG_MAX_PIECES (1 << 24)
#define UG_MAX_RESULTS 32  // sentencepiece's kMaxTrieResultsSize for charsmap matches

enum piece_type { PT_NORMAL = 1, PT_UNKNOWN = 2, PT_CONTROL = 3, PT_USER = 4, PT_UNUSED = 5, PT_BYTE = 6 };

struct unigram_tokenizer {
    int32_t           n;           // pieces; ids are 0..n-1
    float *           score;
    uint8_t *         type;
    struct tok_strtab pieces;      // text → id (ids in file order)
    // Lattice trie over the normal, user-defined and unused pieces: node 0 is the root.
    int32_t *         node_piece;  // piece ending at the node, −1 for none
    uint32_t          n_nodes, node_cap;
    uint64_t *        edge_key;    // (node << 8 | byte) + 1, 0 = empty slot
    uint32_t *        edge_child;
    uint32_t          edge_slots, n_edges;
    // Normaliser.
    uint32_t *        units;       // the charsmap's double array (copied: the file's bytes may be unaligned)
    uint32_t          n_units;
    char *            pool;        // NUL-terminated replacement strings
    uint32_t          pool_n;
    int               add_dummy_prefix, remove_extra_ws, escape_ws, ws_suffix, byte_fallback, has_user;
    // Encoding constants.
    int32_t           unk, eos, pad;
    float             min_score, max_score;
    int32_t           byte_piece[256];
};

// ---- building ---------------------------------------------------------------------------------------------------

// Child of `node` by byte c, or 0 (the root is never a child).
static uint32_t trie_child(const struct unigram_tokenizer * t, uint32_t node, uint8_t c) {
    uint64_t key  = ((uint64_t)node << 8 | c) + 1;
    uint32_t mask = t->edge_slots - 1;
    for (uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;; i = (i + 1) & mask) {
        if (t->edge_key[i] == key) return t->edge_child[i];
        if (t->edge_key[i] == 0) return 0;
    }
}

// Doubles the edge table.
static int trie_grow_edges(struct unigram_tokenizer * t) {
    uint32_t   slots = t->edge_slots ? t->edge_slots * 2 : 4096;
    uint64_t * key   = calloc(slots, sizeof(*key));
    uint32_t * child = malloc((size_t)slots * sizeof(*child));
    if (!key || !child) {
        free(key);
        free(child);
        return -1;
    }
    for (uint32_t i = 0; i < t->edge_slots; i++) {
        if (!t->edge_key[i]) continue;
        uint32_t j = (uint32_t)((t->edge_key[i] * 0x9E3779B97F4A7C15ull) >> 40) & (slots - 1);
        while (key[j]) j = (j + 1) & (slots - 1);
        key[j]   = t->edge_key[i];
        child[j] = t->edge_child[i];
    }
    free(t->edge_key);
    free(t->edge_child);
    t->edge_key   = key;
    t->edge_child = child;
    t->edge_slots = slots;
    return 0;
}

// Inserts piece `id` (bytes s[0..n)) into the lattice trie.
static enum sd3q_status trie_insert(struct unigram_tokenizer * t, const char * s, size_t n, int32_t id,
                                    struct sd3q_errbuf * e) {
    if (t->n_nodes == 0) {
        t->node_cap   = 1024;
        t->node_piece = malloc(t->node_cap * sizeof(int32_t));
        if (!t->node_piece) return err_set(e, SD3Q_ERR_OOM, "out of memory");
        t->node_piece[0] = -1;
        t->n_nodes       = 1;
    }
    uint32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t child = t->edge_slots ? trie_child(t, node, (uint8_t)s[i]) : 0;
        if (!child) {
            if (t->n_nodes == UINT32_MAX / 2) return err_set(e, SD3Q_ERR_FORMAT, "too many trie nodes");
            if (t->n_nodes == t->node_cap) {
                int32_t * p = realloc(t->node_piece, (size_t)t->node_cap * 2 * sizeof(int32_t));
                if (!p) return err_set(e, SD3Q_ERR_OOM, "out of memory");
                t->node_piece = p;
                t->node_cap *= 2;
            }
            if ((t->n_edges + 1) * 2 > t->edge_slots && trie_grow_edges(t) != 0)
                return err_set(e, SD3Q_ERR_OOM, "out of memory");
            child                = t->n_nodes++;
            t->node_piece[child] = -1;
            uint64_t key         = ((uint64_t)node << 8 | (uint8_t)s[i]) + 1;
            uint32_t mask        = t->edge_slots - 1;
            uint32_t j           = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & mask;
            while (t->edge_key[j]) j = (j + 1) & mask;
            t->edge_key[j]   = key;
            t->edge_child[j] = child;
            t->n_edges++;
        }
        node = child;
    }
    t->node_piece[node] = id;
    return SD3Q_OK;
}

// Appends a piece; duplicates and empty pieces are errors, as in sentencepiece's InitializePieces.
static enum sd3q_status add_piece(struct unigram_tokenizer * t, const char * s, size_t n, float score, int type,
                                  const char * name, struct sd3q_errbuf * e) {
    if (n == 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: piece %d is empty", name, t->n);
    if (t->n >= UG_MAX_PIECES) return err_set(e, SD3Q_ERR_FORMAT, "%s: more than %d pieces", name, UG_MAX_PIECES);
    if (type < PT_NORMAL || type > PT_BYTE)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: piece %d: type %d is not one of 1..6", name, t->n, type);
    int32_t id;
    TRY(tok_strtab_intern(&t->pieces, s, n, &id, e));
    if (id != t->n)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: piece %d \"%.*s\" is already defined as piece %d", name, t->n,
                       (int)(n > 60 ? 60 : n), s, id);
    if ((t->n & (t->n - 1)) == 0) {  // grow at powers of two
        size_t cap     = t->n ? (size_t)t->n * 2 : 1024;
        float *   sc   = realloc(t->score, cap * sizeof(float));
        if (sc) t->score = sc;
        uint8_t * ty   = realloc(t->type, cap);
        if (ty) t->type = ty;
        if (!sc || !ty) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    t->score[t->n] = score;
    t->type[t->n]  = (uint8_t)type;
    t->n++;
    return SD3Q_OK;
}

// Reads a little-endian u32.
static uint32_t rd32(const uint8_t * p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// Darts unit fields.
static int      u_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t u_value(uint32_t u) { return u & 0x7FFFFFFFu; }
static uint32_t u_label(uint32_t u) { return u & (0x80000000u | 0xFFu); }
static uint32_t u_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

// Takes the precompiled charsmap <u32 trie size><double array><string pool> and checks every transition reachable
// from the root: leaf units in the array, leaf values inside the pool, the pool NUL-terminated.
static enum sd3q_status set_charsmap(struct unigram_tokenizer * t, const uint8_t * blob, size_t n, const char * name,
                                     struct sd3q_errbuf * e) {
    if (n == 0) return SD3Q_OK;  // no normalisation rule (identity)
    if (n <= 4)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: %zu bytes, expected more than 4", name, n);
    uint32_t tsize = rd32(blob);
    if ((uint64_t)tsize >= n - 4)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: trie size %u exceeds the %zu bytes that follow "
                                           "the size field (the string pool would be empty)", name, tsize, n - 4);
    t->n_units = tsize / 4;
    t->pool_n  = (uint32_t)(n - 4 - tsize);
    t->units   = malloc((size_t)(t->n_units ? t->n_units : 1) * sizeof(uint32_t));
    t->pool    = malloc(t->pool_n);
    if (!t->units || !t->pool) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    for (uint32_t i = 0; i < t->n_units; i++) t->units[i] = rd32(blob + 4 + 4 * (size_t)i);
    memcpy(t->pool, blob + 4 + tsize, t->pool_n);
    if (t->pool[t->pool_n - 1] != '\0')
        return err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: the string pool does not end with a NUL byte",
                       name);
    if (t->n_units == 0) return SD3Q_OK;
    // Breadth-first over the states ("bases") reachable from the root; a base at or beyond n_units + 256 has no
    // transition in range, so the visited set needs n_units + 256 bits.
    size_t     nbits   = (size_t)t->n_units + 256;
    uint8_t *  visited = calloc(nbits / 8 + 1, 1);
    uint32_t * queue   = malloc(nbits * sizeof(uint32_t));
    if (!visited || !queue) {
        free(visited);
        free(queue);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    enum sd3q_status st   = SD3Q_OK;
    size_t           head = 0, tail = 0;
    uint32_t         root = u_offset(t->units[0]);
    if (root < nbits) {
        visited[root / 8] |= (uint8_t)(1u << (root % 8));
        queue[tail++] = root;
    }
    while (head < tail && st == SD3Q_OK) {
        uint32_t base = queue[head++];
        for (uint32_t c = 1; c < 256; c++) {
            uint32_t idx = base ^ c;
            if (idx >= t->n_units || u_label(t->units[idx]) != c) continue;
            uint32_t next = idx ^ u_offset(t->units[idx]);
            if (u_has_leaf(t->units[idx])) {
                if (next >= t->n_units) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: trie unit %u: leaf index %u out of "
                                                     "range (the array has %u units)", name, idx, next, t->n_units);
                    break;
                }
                uint32_t v = u_value(t->units[next]);
                if (v >= t->pool_n) {
                    st = err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: trie unit %u: string offset %u out "
                                                     "of range (the pool has %u bytes)", name, next, v, t->pool_n);
                    break;
                }
            }
            if (next < nbits && !(visited[next / 8] & (1u << (next % 8)))) {
                visited[next / 8] |= (uint8_t)(1u << (next % 8));
                queue[tail++] = next;
            }
        }
    }
    free(visited);
    free(queue);
    return st;
}

// Id of a piece text, or −1.
static int32_t piece_id(const struct unigram_tokenizer * t, const char * s) {
    return s ? tok_strtab_find(&t->pieces, s, strlen(s)) : -1;
}

// Everything that follows from the pieces: unk, byte pieces, score range, the lattice trie, eos / pad.
static enum sd3q_status finish(struct unigram_tokenizer * t, const char * name, const char * eos_piece,
                               const char * pad_piece, struct sd3q_errbuf * e) {
    t->unk       = -1;
    t->min_score = FLT_MAX;
    t->max_score = FLT_MIN;  // sentencepiece's initial value: the smallest positive float, not −FLT_MAX
    for (int b = 0; b < 256; b++) t->byte_piece[b] = -1;
    for (int32_t i = 0; i < t->n; i++) {
        int ty = t->type[i];
        if (ty == PT_UNKNOWN) {
            if (t->unk >= 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: pieces %d and %d are both <unk>", name, t->unk, i);
            t->unk = i;
        }
        if (ty == PT_NORMAL) {
            if (t->score[i] < t->min_score) t->min_score = t->score[i];
            if (t->score[i] > t->max_score) t->max_score = t->score[i];
        }
        if (ty == PT_USER) t->has_user = 1;
        if (ty == PT_BYTE) {
            const char * s = t->pieces.bytes + t->pieces.off[i];
            unsigned     v;
            char         tail;
            if (!t->byte_fallback)
                return err_set(e, SD3Q_ERR_FORMAT, "%s: byte piece %d \"%.20s\" although byte_fallback is off", name,
                               i, s);
            if (t->pieces.len[i] != 6 || sscanf(s, "<0x%2X%c", &v, &tail) != 2 || tail != '>')
                return err_set(e, SD3Q_ERR_FORMAT, "%s: byte piece %d \"%.20s\" is not <0xXX>", name, i, s);
            t->byte_piece[v] = i;
        }
        if (ty == PT_NORMAL || ty == PT_USER || ty == PT_UNUSED) {
            TRY(trie_insert(t, t->pieces.bytes + t->pieces.off[i], t->pieces.len[i], i, e));
        }
    }
    if (t->unk < 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: no <unk> piece (type UNKNOWN)", name);
    if (t->byte_fallback)
        for (int b = 0; b < 256; b++)
            if (t->byte_piece[b] < 0)
                return err_set(e, SD3Q_ERR_FORMAT, "%s: byte_fallback is on but piece <0x%02X> is missing", name, b);
    if (t->n_nodes == 0) TRY(trie_insert(t, "", 0, -1, e));  // an empty lattice trie: every character is <unk>
    if (t->edge_slots == 0 && trie_grow_edges(t) != 0) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    t->eos = piece_id(t, eos_piece);
    if (t->eos < 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: no eos piece \"%.40s\"", name, eos_piece);
    t->pad = piece_id(t, pad_piece);
    if (t->pad < 0) t->pad = 0;  // a model without "<pad>": T5's pad id
    return SD3Q_OK;
}

// ---- spiece.model (protobuf) ------------------------------------------------------------------------------------

struct pb {
    const uint8_t * p, * start, * end;
    const char *    name;   // file name for messages
    const char *    what;   // message being read
};

// Reads a varint (at most 10 bytes) into *v.
static enum sd3q_status pb_varint(struct pb * r, uint64_t * v, struct sd3q_errbuf * e) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: varint truncated at byte %td", r->name, r->what,
                           r->p - r->start);
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: varint longer than 64 bits at byte %td", r->name, r->what,
                           r->p - 1 - r->start);
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return SD3Q_OK;
        }
    }
    return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: varint longer than 10 bytes at byte %td", r->name, r->what,
                   r->p - r->start);
}

// Reads a field header; *wire is the wire type.
static enum sd3q_status pb_tag(struct pb * r, uint32_t * field, uint32_t * wire, struct sd3q_errbuf * e) {
    uint64_t tag;
    TRY(pb_varint(r, &tag, e));
    *field = (uint32_t)(tag >> 3);
    *wire  = (uint32_t)(tag & 7);
    if (*field == 0 || tag >> 3 > 0x1FFFFFFF)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: invalid field number %llu at byte %td", r->name, r->what,
                       (unsigned long long)(tag >> 3), r->p - r->start);
    return SD3Q_OK;
}

// Reads a length-delimited payload into *sub (a window on the same bytes).
static enum sd3q_status pb_bytes(struct pb * r, struct pb * sub, const char * what, struct sd3q_errbuf * e) {
    uint64_t n;
    TRY(pb_varint(r, &n, e));
    if (n > (uint64_t)(r->end - r->p))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: length %llu runs past the end (%td bytes left) at byte %td",
                       r->name, what, (unsigned long long)n, r->end - r->p, r->p - r->start);
    *sub = (struct pb){r->p, r->start, r->p + n, r->name, what};
    r->p += n;
    return SD3Q_OK;
}

// Skips a field of wire type `wire`.
static enum sd3q_status pb_skip(struct pb * r, uint32_t field, uint32_t wire, struct sd3q_errbuf * e) {
    uint64_t   v;
    struct pb  sub = {0};
    size_t     k = wire == 1 ? 8 : 4;
    switch (wire) {
        case 0: return pb_varint(r, &v, e);
        case 2: return pb_bytes(r, &sub, r->what, e);
        case 1:
        case 5:
            if ((size_t)(r->end - r->p) < k)
                return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: field %u truncated at byte %td", r->name, r->what, field,
                               r->p - r->start);
            r->p += k;
            return SD3Q_OK;
        default:
            return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: field %u has wire type %u (groups or invalid) at byte %td",
                           r->name, r->what, field, wire, r->p - r->start);
    }
}

// Checks that a field has the wire type the schema gives it.
static enum sd3q_status pb_expect(const struct pb * r, uint32_t field, uint32_t wire, uint32_t want,
                                  struct sd3q_errbuf * e) {
    if (wire == want) return SD3Q_OK;
    return err_set(e, SD3Q_ERR_FORMAT, "%s: %s: field %u: expected wire type %u, got %u at byte %td", r->name,
                   r->what, field, want, wire, r->p - r->start);
}

struct spm_spec {
    uint64_t     model_type;
    int          ws_suffix, byte_fallback;
    int          add_dummy_prefix, remove_extra_ws, escape_ws;
    const uint8_t * charsmap;
    size_t          charsmap_n;
    char         eos_piece[64], pad_piece[64];
};

// ModelProto.SentencePiece: piece (1), score (2), type (3).
static enum sd3q_status pb_piece(struct unigram_tokenizer * t, struct pb * r, struct sd3q_errbuf * e) {
    const uint8_t * s    = NULL;
    size_t          n    = 0;
    float           sc   = 0;
    uint64_t        type = PT_NORMAL;
    while (r->p < r->end) {
        uint32_t f, w;
        TRY(pb_tag(r, &f, &w, e));
        if (f == 1) {
            struct pb sub = {0};
            TRY(pb_expect(r, f, w, 2, e));
            TRY(pb_bytes(r, &sub, "piece", e));
            s = sub.p;
            n = (size_t)(sub.end - sub.p);
        } else if (f == 2) {
            TRY(pb_expect(r, f, w, 5, e));
            if (r->end - r->p < 4)
                return err_set(e, SD3Q_ERR_FORMAT, "%s: piece %d: score truncated", r->name, t->n);
            uint32_t bits = rd32(r->p);
            memcpy(&sc, &bits, 4);
            r->p += 4;
        } else if (f == 3) {
            TRY(pb_expect(r, f, w, 0, e));
            TRY(pb_varint(r, &type, e));
        } else {
            TRY(pb_skip(r, f, w, e));
        }
    }
    if (type < 1 || type > 6)
        return err_set(e, SD3Q_ERR_FORMAT, "%s: piece %d: type %llu is not one of 1..6", r->name, t->n,
                       (unsigned long long)type);
    return add_piece(t, (const char *)s, n, sc, (int)type, r->name, e);
}

// Copies a string field into a fixed buffer (pieces longer than the buffer cannot be special pieces we need).
static enum sd3q_status pb_string(struct pb * r, char * out, size_t cap, const char * what, struct sd3q_errbuf * e) {
    struct pb sub = {0};
    TRY(pb_bytes(r, &sub, what, e));
    size_t n = (size_t)(sub.end - sub.p);
    if (n >= cap) n = cap - 1;
    memcpy(out, sub.p, n);
    out[n] = '\0';
    return SD3Q_OK;
}

// TrainerSpec (2) and NormalizerSpec (3): the fields the encoder needs; merging repeated messages field by field.
static enum sd3q_status pb_spec(struct pb * r, int trainer, struct spm_spec * sp, struct sd3q_errbuf * e) {
    while (r->p < r->end) {
        uint32_t f, w;
        uint64_t v;
        TRY(pb_tag(r, &f, &w, e));
        if (trainer && (f == 3 || f == 24 || f == 35)) {
            TRY(pb_expect(r, f, w, 0, e));
            TRY(pb_varint(r, &v, e));
            if (f == 3) sp->model_type = v;
            if (f == 24) sp->ws_suffix = v != 0;
            if (f == 35) sp->byte_fallback = v != 0;
        } else if (trainer && (f == 47 || f == 48)) {
            TRY(pb_expect(r, f, w, 2, e));
            TRY(pb_string(r, f == 47 ? sp->eos_piece : sp->pad_piece, sizeof(sp->eos_piece), "trainer_spec", e));
        } else if (!trainer && f == 2) {
            struct pb sub = {0};
            TRY(pb_expect(r, f, w, 2, e));
            TRY(pb_bytes(r, &sub, "normalizer_spec.precompiled_charsmap", e));
            sp->charsmap   = sub.p;
            sp->charsmap_n = (size_t)(sub.end - sub.p);
        } else if (!trainer && f >= 3 && f <= 5) {
            TRY(pb_expect(r, f, w, 0, e));
            TRY(pb_varint(r, &v, e));
            if (f == 3) sp->add_dummy_prefix = v != 0;
            if (f == 4) sp->remove_extra_ws = v != 0;
            if (f == 5) sp->escape_ws = v != 0;
        } else {
            TRY(pb_skip(r, f, w, e));
        }
    }
    return SD3Q_OK;
}

// Parses spiece.model into t.
static enum sd3q_status load_spiece(struct unigram_tokenizer * t, const struct tok_text * f, struct spm_spec * sp,
                                    struct sd3q_errbuf * e) {
    const uint8_t * b = (const uint8_t *)f->data;
    struct pb       r = {b, b, b + f->n, f->name, "ModelProto"};
    while (r.p < r.end) {
        uint32_t  fld, w;
        struct pb sub = {0};
        TRY(pb_tag(&r, &fld, &w, e));
        if (fld >= 1 && fld <= 3) {
            TRY(pb_expect(&r, fld, w, 2, e));
            TRY(pb_bytes(&r, &sub, fld == 1 ? "pieces" : fld == 2 ? "trainer_spec" : "normalizer_spec", e));
            if (fld == 1) TRY(pb_piece(t, &sub, e));
            else TRY(pb_spec(&sub, fld == 2, sp, e));
        } else {
            TRY(pb_skip(&r, fld, w, e));
        }
    }
    if (t->n == 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: no pieces (is this a sentencepiece model?)", f->name);
    if (sp->model_type != 1)
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: trainer_spec.model_type %llu: only UNIGRAM (1) is supported",
                       f->name, (unsigned long long)sp->model_type);
    return SD3Q_OK;
}

// ---- tokenizer.json ---------------------------------------------------------------------------------------------

// Decodes standard base64 (with "=" padding) into a malloc'd buffer.
static enum sd3q_status base64_decode(const char * s, const char * where, uint8_t ** out, size_t * n,
                                      struct sd3q_errbuf * e) {
    size_t len = strlen(s);
    if (len % 4 != 0) return err_set(e, SD3Q_ERR_FORMAT, "%s: base64 length %zu is not a multiple of 4", where, len);
    uint8_t * buf = malloc(len / 4 * 3 + 1);
    if (!buf) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        uint32_t acc = 0;
        int      pad = 0;
        for (int k = 0; k < 4; k++) {
            char     c = s[i + k];
            uint32_t v;
            if (c >= 'A' && c <= 'Z') v = (uint32_t)(c - 'A');
            else if (c >= 'a' && c <= 'z') v = (uint32_t)(c - 'a' + 26);
            else if (c >= '0' && c <= '9') v = (uint32_t)(c - '0' + 52);
            else if (c == '+') v = 62;
            else if (c == '/') v = 63;
            else if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || s[i + 3] == '=')) v = 0, pad++;
            else {
                free(buf);
                return err_set(e, SD3Q_ERR_FORMAT, "%s: invalid base64 character at offset %zu", where, i + (size_t)k);
            }
            acc = acc << 6 | v;
        }
        buf[o++] = (uint8_t)(acc >> 16);
        if (pad < 2) buf[o++] = (uint8_t)(acc >> 8);
        if (pad < 1) buf[o++] = (uint8_t)acc;
    }
    *out = buf;
    *n   = o;
    return SD3Q_OK;
}

// Walks the normalizer: Precompiled gives the charsmap; Strip / Replace are the whitespace handling sentencepiece
// does itself; anything else would change the text in ways this port does not implement.
static enum sd3q_status tj_normalizer(const cJSON * nz, const char * name, const char ** charsmap_b64,
                                      struct sd3q_errbuf * e) {
    if (!nz || cJSON_IsNull(nz)) return SD3Q_OK;
    const cJSON * type = cJSON_GetObjectItemCaseSensitive(nz, "type");
    if (!cJSON_IsString(type)) return err_set(e, SD3Q_ERR_FORMAT, "%s: normalizer without a \"type\"", name);
    const char * ty = type->valuestring;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON * list = cJSON_GetObjectItemCaseSensitive(nz, "normalizers");
        if (!cJSON_IsArray(list)) return err_set(e, SD3Q_ERR_FORMAT, "%s: normalizer Sequence without a list", name);
        for (const cJSON * it = list->child; it; it = it->next) TRY(tj_normalizer(it, name, charsmap_b64, e));
        return SD3Q_OK;
    }
    if (strcmp(ty, "Precompiled") == 0) {
        const cJSON * cm = cJSON_GetObjectItemCaseSensitive(nz, "precompiled_charsmap");
        if (cJSON_IsString(cm)) *charsmap_b64 = cm->valuestring;
        else if (cm && !cJSON_IsNull(cm))
            return err_set(e, SD3Q_ERR_FORMAT, "%s: precompiled_charsmap: expected a base64 string", name);
        return SD3Q_OK;
    }
    if (strcmp(ty, "Strip") == 0 || strcmp(ty, "Replace") == 0) return SD3Q_OK;
    return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: normalizer \"%.40s\" is not supported (Precompiled, Strip, Replace)",
                   name, ty);
}

// Walks the pre-tokenizer: Metaspace with "▁" sets the dummy prefix; WhitespaceSplit is implied by sentencepiece.
static enum sd3q_status tj_pretokenizer(const cJSON * pt, const char * name, int * prefix, struct sd3q_errbuf * e) {
    if (!pt || cJSON_IsNull(pt)) return SD3Q_OK;
    const cJSON * type = cJSON_GetObjectItemCaseSensitive(pt, "type");
    if (!cJSON_IsString(type)) return err_set(e, SD3Q_ERR_FORMAT, "%s: pre_tokenizer without a \"type\"", name);
    const char * ty = type->valuestring;
    if (strcmp(ty, "Sequence") == 0) {
        const cJSON * list = cJSON_GetObjectItemCaseSensitive(pt, "pretokenizers");
        if (!cJSON_IsArray(list)) return err_set(e, SD3Q_ERR_FORMAT, "%s: pre_tokenizer Sequence without a list", name);
        for (const cJSON * it = list->child; it; it = it->next) TRY(tj_pretokenizer(it, name, prefix, e));
        return SD3Q_OK;
    }
    if (strcmp(ty, "WhitespaceSplit") == 0) return SD3Q_OK;
    if (strcmp(ty, "Metaspace") == 0) {
        const cJSON * rep = cJSON_GetObjectItemCaseSensitive(pt, "replacement");
        if (!cJSON_IsString(rep) || strcmp(rep->valuestring, "\xe2\x96\x81") != 0)
            return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: Metaspace replacement must be \"\xe2\x96\x81\"", name);
        const cJSON * scheme = cJSON_GetObjectItemCaseSensitive(pt, "prepend_scheme");
        const cJSON * aps    = cJSON_GetObjectItemCaseSensitive(pt, "add_prefix_space");
        if (cJSON_IsString(scheme)) *prefix = strcmp(scheme->valuestring, "never") != 0;
        else if (cJSON_IsBool(aps)) *prefix = cJSON_IsTrue(aps);
        else *prefix = 1;
        return SD3Q_OK;
    }
    return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: pre_tokenizer \"%.40s\" is not supported (Metaspace)", name, ty);
}

// Parses Hugging Face's tokenizer.json (model type Unigram) into t, filling the sentencepiece spec it implies.
static enum sd3q_status load_tokenizer_json(struct unigram_tokenizer * t, const cJSON * root, const char * name,
                                            struct spm_spec * sp, uint8_t ** charsmap, struct sd3q_errbuf * e) {
    const cJSON * model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON * type  = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (!cJSON_IsObject(model)) return err_set(e, SD3Q_ERR_FORMAT, "%s: no \"model\" object", name);
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "Unigram") != 0)
        return err_set(e, SD3Q_ERR_UNSUPPORTED, "%s: model.type: expected \"Unigram\", got %s", name,
                       cJSON_IsString(type) ? type->valuestring : "none");
    const cJSON * vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsArray(vocab)) return err_set(e, SD3Q_ERR_FORMAT, "%s: model.vocab: expected an array", name);
    const cJSON * unk = cJSON_GetObjectItemCaseSensitive(model, "unk_id");
    double        unk_id = cJSON_IsNumber(unk) ? unk->valuedouble : -1;
    sp->byte_fallback    = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    int i = 0;
    for (const cJSON * v = vocab->child; v; v = v->next, i++) {
        const cJSON * p = cJSON_GetArrayItem(v, 0);
        const cJSON * s = cJSON_GetArrayItem(v, 1);
        if (!cJSON_IsArray(v) || !cJSON_IsString(p) || !cJSON_IsNumber(s))
            return err_set(e, SD3Q_ERR_FORMAT, "%s: model.vocab[%d]: expected [\"piece\", score]", name, i);
        size_t n  = strlen(p->valuestring);
        int    ty = i == (int)unk_id ? PT_UNKNOWN : PT_NORMAL;
        if (ty == PT_NORMAL && sp->byte_fallback && n == 6 && strncmp(p->valuestring, "<0x", 3) == 0 &&
            p->valuestring[5] == '>')
            ty = PT_BYTE;
        TRY(add_piece(t, p->valuestring, n, (float)s->valuedouble, ty, name, e));
    }
    // added_tokens mark the control pieces (special) and the user-defined ones.
    const cJSON * added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    for (const cJSON * a = cJSON_IsArray(added) ? added->child : NULL; a; a = a->next) {
        const cJSON * id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!cJSON_IsNumber(id) || !(id->valuedouble >= 0 && id->valuedouble < t->n)) continue;
        int k = (int)id->valuedouble;
        if (t->type[k] == PT_NORMAL)
            t->type[k] = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special")) ? PT_CONTROL : PT_USER;
    }
    if (!(unk_id >= 0 && unk_id < t->n))
        return err_set(e, SD3Q_ERR_FORMAT, "%s: model.unk_id: expected an index into model.vocab (%d pieces)", name,
                       t->n);
    const char * b64 = NULL;
    TRY(tj_normalizer(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), name, &b64, e));
    sp->add_dummy_prefix = 0;
    TRY(tj_pretokenizer(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), name, &sp->add_dummy_prefix, e));
    if (b64) {
        char where[300];
        snprintf(where, sizeof(where), "%s: precompiled_charsmap", name);
        TRY(base64_decode(b64, where, charsmap, &sp->charsmap_n, e));
        sp->charsmap = *charsmap;
    }
    return SD3Q_OK;
}

enum sd3q_status unigram_tokenizer_from_sources(const struct unigram_sources * src_in, struct unigram_tokenizer ** out,
                                                struct sd3q_errbuf * e) {
    *out                         = NULL;
    struct unigram_sources src   = *src_in;
    if (!src.spiece_model.name) src.spiece_model.name = "spiece.model";
    if (!src.tokenizer_json.name) src.tokenizer_json.name = "tokenizer.json";
    if (!src.config_json.name) src.config_json.name = "tokenizer_config.json";
    if (!src.special_tokens_json.name) src.special_tokens_json.name = "special_tokens_map.json";
    struct unigram_tokenizer * t = calloc(1, sizeof(*t));
    if (!t) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    struct spm_spec  sp   = {.model_type = 1, .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1,
                             .eos_piece = "</s>", .pad_piece = "<pad>"};
    uint8_t *        cm   = NULL;
    cJSON *          root = NULL, * cfg = NULL, * spec = NULL;
    const char *     name = src.spiece_model.data ? src.spiece_model.name : src.tokenizer_json.name;
    enum sd3q_status st;
    if (src.spiece_model.data) {
        st = load_spiece(t, &src.spiece_model, &sp, e);
    } else if (src.tokenizer_json.data) {
        st = tok_json_parse(&src.tokenizer_json, &root, e);
        if (st == SD3Q_OK) st = load_tokenizer_json(t, root, name, &sp, &cm, e);
    } else {
        st = err_set(e, SD3Q_ERR_MISSING, "no T5 vocabulary: need spiece.model or tokenizer.json");
    }
    t->add_dummy_prefix = sp.add_dummy_prefix;
    t->remove_extra_ws  = sp.remove_extra_ws;
    t->escape_ws        = sp.escape_ws;
    t->ws_suffix        = sp.ws_suffix;
    t->byte_fallback    = sp.byte_fallback;
    if (st == SD3Q_OK) st = set_charsmap(t, sp.charsmap, sp.charsmap_n, name, e);
    // eos / pad: the configs (as T5TokenizerFast reads them) win over the model's own piece names.
    char * eos = NULL, * pad = NULL;
    int    null_eos = 0, null_pad = 0;
    if (st == SD3Q_OK) st = tok_json_parse(&src.config_json, &cfg, e);
    if (st == SD3Q_OK) st = tok_json_parse(&src.special_tokens_json, &spec, e);
    if (st == SD3Q_OK)
        st = tok_json_token(cfg, src.config_json.name, spec, src.special_tokens_json.name, "eos_token", &eos,
                            &null_eos, e);
    if (st == SD3Q_OK)
        st = tok_json_token(cfg, src.config_json.name, spec, src.special_tokens_json.name, "pad_token", &pad,
                            &null_pad, e);
    if (st == SD3Q_OK) st = finish(t, name, eos ? eos : sp.eos_piece, pad ? pad : sp.pad_piece, e);
    free(eos);
    free(pad);
    free(cm);
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    cJSON_Delete(spec);
    if (st != SD3Q_OK) {
        unigram_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SD3Q_OK;
}

void unigram_tokenizer_free(struct unigram_tokenizer * t) {
    if (!t) return;
    free(t->score);
    free(t->type);
    tok_strtab_free(&t->pieces);
    free(t->node_piece);
    free(t->edge_key);
    free(t->edge_child);
    free(t->units);
    free(t->pool);
    free(t);
}

enum sd3q_status unigram_tokenizer_load(const char * path, struct unigram_tokenizer ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    if (!path) return err_set(e, SD3Q_ERR_INVALID_ARG, "unigram_tokenizer_load: path is NULL");
    struct unigram_sources src = {0};
    char *                 dir = NULL;
    enum sd3q_status       st  = SD3Q_OK;
    if (path_is_dir(path)) {
        dir = strdup(path);
        if (dir) st = tok_read_in(dir, "spiece.model", UG_FILE_CAP, 0, &src.spiece_model, e);
        if (dir && st == SD3Q_OK && !src.spiece_model.data)
            st = tok_read_in(dir, "tokenizer.json", UG_FILE_CAP, 0, &src.tokenizer_json, e);
        if (dir && st == SD3Q_OK && !src.spiece_model.data && !src.tokenizer_json.data)
            st = err_set(e, SD3Q_ERR_MISSING, "%s: no spiece.model or tokenizer.json in this folder", path);
        // A flat --tokenizer-dir may hold CLIP's tokenizer.json: that is not a T5 vocabulary.
        if (dir && st == SD3Q_OK && src.tokenizer_json.data && !tok_json_model_is(&src.tokenizer_json, "Unigram"))
            st = err_set(e, SD3Q_ERR_MISSING, "%s: no spiece.model, and its tokenizer.json is not a Unigram model",
                         path);
    } else if (path_is_file(path)) {
        const char * slash = strrchr(path, '/');
        size_t       n     = strlen(path);
        dir                = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
        int json           = n >= 5 && strcmp(path + n - 5, ".json") == 0;
        if (dir) st = tok_read_in(path, NULL, UG_FILE_CAP, 1, json ? &src.tokenizer_json : &src.spiece_model, e);
    } else {
        return err_set(e, SD3Q_ERR_MISSING, "%s: no such file or folder (expected spiece.model, tokenizer.json or a "
                                            "folder holding one)", path);
    }
    if (!dir) return err_set(e, SD3Q_ERR_OOM, "out of memory");
    if (st == SD3Q_OK) st = tok_read_in(dir, "tokenizer_config.json", UG_CONFIG_CAP, 0, &src.config_json, e);
    if (st == SD3Q_OK) st = tok_read_in(dir, "special_tokens_map.json", UG_CONFIG_CAP, 0, &src.special_tokens_json, e);
    if (st == SD3Q_OK) tok_drop_foreign_config(&src.config_json, &src.special_tokens_json, "T5Tokenizer");
    if (st == SD3Q_OK) st = unigram_tokenizer_from_sources(&src, out, e);
    struct tok_text * all[4] = {&src.spiece_model, &src.tokenizer_json, &src.config_json, &src.special_tokens_json};
    for (int i = 0; i < 4; i++) {
        free((char *)all[i]->data);
        free((char *)all[i]->name);
    }
    free(dir);
    return st;
}

// ---- encoding ---------------------------------------------------------------------------------------------------

// Per-call scratch, so the tokenizer stays read-only.
struct ug_work {
    char *    norm;        // normalised text
    size_t    norm_n, norm_cap;
    float *   best;        // Viterbi: best score of a path ending at each byte position
    int32_t * from;        // where that path's last piece starts (−1: none yet)
    int32_t * piece;       // and which piece it is
    int32_t * path;        // piece end positions of the best path, back to front
    size_t    lattice_cap;
    int32_t * ids;         // output (NULL when only counting)
    size_t    limit, n;
};

// Appends bytes to the normalised text. 0 or −1 (OOM).
static int norm_put(struct ug_work * w, const char * s, size_t n) {
    if (w->norm_n + n > w->norm_cap) {
        size_t cap = w->norm_cap ? w->norm_cap : 256;
        while (cap < w->norm_n + n) cap *= 2;
        char * p = realloc(w->norm, cap);
        if (!p) return -1;
        w->norm     = p;
        w->norm_cap = cap;
    }
    memcpy(w->norm + w->norm_n, s, n);
    w->norm_n += n;
    return 0;
}

// Length of the valid UTF-8 character at s (sentencepiece's DecodeUTF8 rules), or 0 when invalid.
static size_t spm_char_len(const uint8_t * s, size_t n) {
    if (s[0] < 0x80) return 1;
    if (n >= 2 && (s[0] & 0xE0) == 0xC0 && (s[1] & 0xC0) == 0x80) {
        uint32_t cp = (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
        return cp >= 0x80 ? 2 : 0;
    }
    if (n >= 3 && (s[0] & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        uint32_t cp = (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return cp >= 0x800 && !(cp >= 0xD800 && cp <= 0xDFFF) ? 3 : 0;
    }
    if (n >= 4 && (s[0] & 0xF8) == 0xF0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80) {
        uint32_t cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 | (uint32_t)(s[2] & 0x3F) << 6 |
                      (s[3] & 0x3F);
        return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

// sentencepiece's NormalizePrefix: the replacement for the longest rule matching at s, and the bytes it consumes.
static size_t normalize_prefix(const struct unigram_tokenizer * t, const uint8_t * s, size_t n, const char ** out,
                               size_t * out_n) {
    if (t->has_user) {
        // User-defined pieces pass through unnormalised (longest match).
        uint32_t node = 0;
        size_t   best = 0;
        for (size_t i = 0; i < n; i++) {
            node = trie_child(t, node, s[i]);
            if (!node) break;
            int32_t p = t->node_piece[node];
            if (p >= 0 && t->type[p] == PT_USER) best = i + 1;
        }
        if (best) {
            *out   = (const char *)s;
            *out_n = best;
            return best;
        }
    }
    if (t->n_units) {
        // Darts commonPrefixSearch; like sentencepiece, only the first 32 matches are considered.
        uint32_t pos = u_offset(t->units[0]), value = 0;
        size_t   best = 0;
        int      found = 0;
        for (size_t i = 0; i < n; i++) {
            pos ^= s[i];
            if (pos >= t->n_units || u_label(t->units[pos]) != s[i]) break;
            uint32_t u = t->units[pos];
            pos ^= u_offset(u);
            if (u_has_leaf(u)) {
                if (pos >= t->n_units) break;  // rejected at load; checked again for safety
                if (found++ < UG_MAX_RESULTS) {
                    best  = i + 1;
                    value = u_value(t->units[pos]);
                }
            }
        }
        if (best && value < t->pool_n) {
            *out   = t->pool + value;
            *out_n = strlen(t->pool + value);  // the pool ends with a NUL (checked at load)
            return best;
        }
    }
    size_t len = spm_char_len(s, n);
    if (!len) {
        *out   = "\xEF\xBF\xBD";  // U+FFFD for one invalid byte
        *out_n = 3;
        return 1;
    }
    *out   = (const char *)s;
    *out_n = len;
    return len;
}

// sentencepiece's Normalizer::Normalize into w->norm. 0 or −1 (OOM).
static int normalize(const struct unigram_tokenizer * t, const uint8_t * s, size_t n, struct ug_work * w) {
    static const char ws_sym[] = "\xe2\x96\x81";  // U+2581
    const char *      ws       = t->escape_ws ? ws_sym : " ";
    size_t            ws_n     = t->escape_ws ? 3 : 1;
    w->norm_n                  = 0;
    const char * r;
    size_t       rn;
    if (t->remove_extra_ws) {
        while (n > 0) {
            size_t used = normalize_prefix(t, s, n, &r, &rn);
            if (!(rn == 1 && r[0] == ' ')) break;
            s += used;
            n -= used;
        }
    }
    if (n == 0) return 0;
    if (!t->ws_suffix && t->add_dummy_prefix && norm_put(w, ws, ws_n) != 0) return -1;
    int prev_space = t->remove_extra_ws;
    while (n > 0) {
        size_t used = normalize_prefix(t, s, n, &r, &rn);
        while (prev_space && rn > 0 && r[0] == ' ') r++, rn--;
        if (rn > 0) {
            for (size_t i = 0; i < rn; i++) {
                int rc = (t->escape_ws && r[i] == ' ') ? norm_put(w, ws, ws_n) : norm_put(w, r + i, 1);
                if (rc != 0) return -1;
            }
            prev_space = r[rn - 1] == ' ';
        }
        s += used;
        n -= used;
        if (!t->remove_extra_ws) prev_space = 0;
    }
    if (t->remove_extra_ws)
        while (w->norm_n >= ws_n && memcmp(w->norm + w->norm_n - ws_n, ws, ws_n) == 0) w->norm_n -= ws_n;
    if (t->ws_suffix && t->add_dummy_prefix && norm_put(w, ws, ws_n) != 0) return -1;
    return 0;
}

static void ug_emit(struct ug_work * w, int32_t id) {
    if (w->ids && w->n < w->limit) w->ids[w->n] = id;
    w->n++;
}

// Viterbi over w->norm (sentencepiece's EncodeOptimized, with its float / double arithmetic), then the output
// pass: runs of <unk> merge into one, or become byte pieces with byte_fallback. 0 or −1 (OOM).
static int segment(const struct unigram_tokenizer * t, struct ug_work * w) {
    size_t N = w->norm_n;
    if (N == 0) return 0;
    if (N + 1 > w->lattice_cap) {
        size_t cap = N + 1;
        float *   b  = realloc(w->best, cap * sizeof(float));
        if (b) w->best = b;
        int32_t * f  = realloc(w->from, cap * sizeof(int32_t));
        if (f) w->from = f;
        int32_t * p  = realloc(w->piece, cap * sizeof(int32_t));
        if (p) w->piece = p;
        int32_t * pa = realloc(w->path, cap * sizeof(int32_t));
        if (pa) w->path = pa;
        if (!b || !f || !p || !pa || N > INT32_MAX - 1) return -1;
        w->lattice_cap = cap;
    }
    const uint8_t * s         = (const uint8_t *)w->norm;
    const float     unk_score = t->min_score - 10.0f;  // kUnkPenalty
    for (size_t i = 0; i <= N; i++) {
        w->best[i] = 0;
        w->from[i] = -1;
    }
    for (size_t at = 0; at < N;) {
        float  till   = w->best[at];
        int    single = 0;
        size_t mblen  = (size_t)"\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[s[at] >> 4];
        if (mblen > N - at) mblen = N - at;
        uint32_t node = 0;
        for (size_t k = at; k < N;) {
            node = trie_child(t, node, s[k++]);
            if (!node) break;
            int32_t p = t->node_piece[node];
            if (p < 0 || t->type[p] == PT_UNUSED) continue;
            size_t len = k - at;
            // As in sentencepiece: the score is a double (user-defined pieces get length · max − 0.1), the sum is
            // compared in double against the stored float and stored as float.
            double score = t->type[p] == PT_USER ? (double)((float)len * t->max_score) - 0.1 : (double)t->score[p];
            double cand  = score + (double)till;
            if (w->from[k] < 0 || cand > (double)w->best[k]) {
                w->best[k]  = (float)cand;
                w->from[k]  = (int32_t)at;
                w->piece[k] = p;
            }
            if (len == mblen) single = 1;
        }
        if (!single) {
            size_t k    = at + mblen;
            float  cand = unk_score + till;
            if (w->from[k] < 0 || cand > w->best[k]) {
                w->best[k]  = cand;
                w->from[k]  = (int32_t)at;
                w->piece[k] = t->unk;
            }
        }
        at += mblen;
    }
    size_t np = 0;
    for (int32_t end = (int32_t)N; end > 0; end = w->from[end]) w->path[np++] = end;
    int prev_unk = 0;
    for (size_t k = np; k-- > 0;) {
        int32_t end    = w->path[k];
        int32_t id     = w->piece[end];
        int     is_unk = t->type[id] == PT_UNKNOWN;
        if (is_unk && t->byte_fallback) {
            for (int32_t b = w->from[end]; b < end; b++) ug_emit(w, t->byte_piece[s[b]]);
        } else if (!(is_unk && prev_unk)) {
            ug_emit(w, id);
        }
        prev_unk = is_unk;
    }
    return 0;
}

// Normalises and segments `text`, emitting piece ids into w.
static int ug_run(const struct unigram_tokenizer * t, const char * text, struct ug_work * w) {
    int rc = normalize(t, (const uint8_t *)text, strlen(text), w);
    if (rc == 0) rc = segment(t, w);
    free(w->norm);
    free(w->best);
    free(w->from);
    free(w->piece);
    free(w->path);
    return rc;
}

int unigram_tokenizer_encode(const struct unigram_tokenizer * t, const char * text, int max_len, int pad,
                             int32_t * ids) {
    if (!t || !text || !ids || max_len < 1) return -1;
    struct ug_work w = {0};
    w.ids            = ids;
    w.limit          = (size_t)max_len - 1;
    if (ug_run(t, text, &w) != 0) return -1;
    int n    = (int)(w.n < w.limit ? w.n : w.limit);
    ids[n++] = t->eos;
    while (pad && n < max_len) ids[n++] = t->pad;
    return n;
}

int unigram_tokenizer_count(const struct unigram_tokenizer * t, const char * text) {
    if (!t || !text) return -1;
    struct ug_work w = {0};
    w.limit          = SIZE_MAX;
    if (ug_run(t, text, &w) != 0) return -1;
    return w.n > (size_t)INT32_MAX - 1 ? INT32_MAX : (int)w.n + 1;
}

int32_t unigram_tokenizer_eos_id(const struct unigram_tokenizer * t) { return t->eos; }
int32_t unigram_tokenizer_pad_id(const struct unigram_tokenizer * t) { return t->pad; }
int32_t unigram_tokenizer_unk_id(const struct unigram_tokenizer * t) { return t->unk; }
int32_t unigram_tokenizer_vocab_size(const struct unigram_tokenizer * t) { return t->n; }
