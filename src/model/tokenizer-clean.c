/*
 * tokenizer-clean.c — CLIP's text clean-up, as Hugging Face's slow CLIPTokenizer does it when ftfy is installed:
 *     whitespace_clean(ftfy.fix_text(text)).lower()
 * on code points, plus the character classes of its pre-tokenisation pattern.
 *
 * Follows ftfy 6.3.1's fix_text with its default configuration, fixer by fixer and in its order, repeated per line
 * until nothing changes: unescape_html (disabled from the first line holding "<" on), fix_c1_controls,
 * fix_latin_ligatures, fix_character_width, uncurl_quotes, fix_line_breaks, remove_terminal_escapes,
 * remove_control_chars, NFC. Not implemented: fix_encoding (mojibake detection and re-decoding, with its
 * restore_byte_a0 / replace_lossy_sequences / decode_inconsistent_utf8 steps) — it only changes text that already is
 * mojibake; fix_surrogates has nothing to do on code points decoded from UTF-8.
 * Lower-casing is Python's str.lower(): utf8proc's simple mapping plus the two full mappings Python applies
 * (U+0130 → "i̇" and the final-sigma rule). The tables come from tokenizer-unidata.c.
 */
#include "model/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

// Binary search in inclusive [first, last] ranges sorted by first.
static int in_ranges(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return 1;
    }
    return 0;
}

int tok_is_letter(uint32_t cp) {
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(tok_letter_ranges, tok_letter_ranges_count, cp);
}

int tok_is_number(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(tok_number_ranges, tok_number_ranges_count, cp);
}

int tok_is_regex_space(uint32_t cp) {
    if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
           cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int tok_is_py_space(uint32_t cp) {
    return tok_is_regex_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

int tok_is_pattern_skipped(uint32_t cp) {
    if (cp < 0x300) return 0;
    for (int i = 0; i < tok_pattern_skipped_count; i++)
        if (tok_pattern_skipped[i] == cp) return 1;
    return 0;
}

// ---- ftfy fixers: each reads `in` and writes `out` ---------------------------------------------------------------

// Appends one code point; room was reserved by the caller.
static inline void put(struct tok_cps * out, uint32_t cp) { out->p[out->n++] = cp; }

static int is_ascii_alnum(uint32_t c) { return c < 0x80 && ((c | 0x20) - 'a' < 26 || c - '0' < 10); }

// Looks up an entity name (ASCII, n ≤ 24 bytes) in ftfy's table; returns its UTF-8 value or NULL.
static const char * entity_lookup(const char * name, size_t n) {
    int lo = 0, hi = tok_entity_count - 1;
    while (lo <= hi) {
        int          mid = (lo + hi) / 2;
        const char * key = tok_entity_blob + tok_entity_offsets[mid];
        size_t       kn  = strlen(key);
        int          c   = memcmp(name, key, n < kn ? n : kn);
        if (c == 0) c = n < kn ? -1 : (n > kn ? 1 : 0);
        if (c == 0) return key + kn + 1;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

// html.unescape's rules for a numeric reference: writes 0 or 1 code point to *cp; returns how many.
static int numeric_charref(uint64_t num, uint32_t * cp) {
    for (int i = 0; i < tok_html_invalid_charrefs_count; i++) {
        if (tok_html_invalid_charrefs[i][0] == num) {
            *cp = tok_html_invalid_charrefs[i][1];
            return 1;
        }
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        *cp = 0xFFFD;
        return 1;
    }
    for (int i = 0; i < tok_html_invalid_codepoints_count; i++)
        if (tok_html_invalid_codepoints[i] == num) return 0;
    *cp = (uint32_t)num;
    return 1;
}

// Decodes "&#...;" whose body (after "&#", before ";") is cps[0..n): 1 = replaced (appended to out), 0 = keep.
static int unescape_numeric(const uint32_t * body, size_t n, struct tok_cps * out) {
    int    hex   = n > 0 && (body[0] == 'x' || body[0] == 'X');
    size_t start = hex ? 1 : 0;
    if (start >= n) return 0;
    uint64_t num = 0;
    for (size_t i = start; i < n; i++) {
        uint32_t c = body[i];
        int      d;
        if (c >= '0' && c <= '9') d = (int)(c - '0');
        else if (hex && (c | 0x20) >= 'a' && (c | 0x20) <= 'f') d = (int)((c | 0x20) - 'a' + 10);
        else return 0;  // a partial match leaves the ";" in html.unescape's result, so ftfy keeps the text
        num = num * (hex ? 16 : 10) + (uint64_t)d;
        if (num > 0x7FFFFFFF) num = 0x7FFFFFFF;  // anything above U+10FFFF decodes to U+FFFD
    }
    uint32_t cp;
    if (numeric_charref(num, &cp) == 0) return 1;
    if (cp == ';') return 0;  // ftfy keeps the reference when the result contains ";"
    put(out, cp);
    return 1;
}

// ftfy.fixes.unescape_html: entities matching &#?[0-9A-Za-z]{1,24}; are replaced when ftfy knows them.
static void fix_unescape_html(const struct tok_cps * in, struct tok_cps * out) {
    out->n = 0;
    for (size_t i = 0; i < in->n;) {
        uint32_t c = in->p[i];
        if (c != '&') {
            put(out, c);
            i++;
            continue;
        }
        size_t j = i + 1;
        int    hash = j < in->n && in->p[j] == '#';
        if (hash) j++;
        size_t k = j;
        while (k < in->n && is_ascii_alnum(in->p[k])) k++;
        size_t len = k - j;
        if (len < 1 || len > 24 || k >= in->n || in->p[k] != ';') {
            put(out, c);
            i++;
            continue;
        }
        int done = 0;
        if (hash) {
            done = unescape_numeric(in->p + j, len, out);
        } else {
            char name[25];
            for (size_t m = 0; m < len; m++) name[m] = (char)in->p[j + m];
            const char * val = entity_lookup(name, len);
            if (val) {
                // Values are at most three code points of valid UTF-8.
                const uint8_t * v = (const uint8_t *)val;
                while (*v) {
                    uint32_t cp;
                    int      nb = *v < 0x80 ? 1 : *v < 0xE0 ? 2 : *v < 0xF0 ? 3 : 4;
                    cp          = nb == 1 ? *v : (uint32_t)(*v & (0x7F >> nb));
                    for (int m = 1; m < nb; m++) cp = (cp << 6) | (v[m] & 0x3F);
                    put(out, cp);
                    v += nb;
                }
                done = 1;
            }
        }
        if (!done)
            for (size_t m = i; m <= k; m++) put(out, in->p[m]);
        i = k + 1;
    }
}

// ftfy's LIGATURES table (Latin ligatures and digraphs) as code point → up to three code points.
static const uint32_t ligatures[][4] = {
    {0x0132, 'I', 'J', 0},    {0x0133, 'i', 'j', 0},     {0x0149, 0x02BC, 'n', 0}, {0x01C4, 'D', 0x017D, 0},
    {0x01C5, 'D', 0x017E, 0}, {0x01C6, 'd', 0x017E, 0},  {0x01C7, 'L', 'J', 0},    {0x01C8, 'L', 'j', 0},
    {0x01C9, 'l', 'j', 0},    {0x01CA, 'N', 'J', 0},     {0x01CB, 'N', 'j', 0},    {0x01CC, 'n', 'j', 0},
    {0x01F1, 'D', 'Z', 0},    {0x01F2, 'D', 'z', 0},     {0x01F3, 'd', 'z', 0},    {0xFB00, 'f', 'f', 0},
    {0xFB01, 'f', 'i', 0},    {0xFB02, 'f', 'l', 0},     {0xFB03, 'f', 'f', 'i'},  {0xFB04, 'f', 'f', 'l'},
    {0xFB05, 0x017F, 't', 0}, {0xFB06, 's', 't', 0},
};

// The one-pass character fixers, in ftfy's order after unescape_html: C1 controls, ligatures, width, quotes,
// line breaks, terminal escapes, control characters. `out` has room for 3 × in->n code points.
static void fix_chars(const struct tok_cps * in, struct tok_cps * out, struct tok_cps * tmp) {
    // Stage 1: C1 → windows-1252, ligatures, width, quotes — all per character, so one loop keeps their order.
    tmp->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        uint32_t c = in->p[i];
        if (c >= 0x80 && c <= 0x9F) c = tok_c1_to_cp1252[c - 0x80];
        if ((c >= 0x0132 && c <= 0x01F3) || (c >= 0xFB00 && c <= 0xFB06)) {
            int hit = 0;
            for (size_t k = 0; k < sizeof(ligatures) / sizeof(ligatures[0]); k++) {
                if (ligatures[k][0] == c) {
                    // Of the later maps only uncurl_quotes touches ligature output: "ŉ" → "ʼn" → "'n".
                    for (int m = 1; m < 4 && ligatures[k][m]; m++)
                        put(tmp, ligatures[k][m] == 0x02BC ? '\'' : ligatures[k][m]);
                    hit = 1;
                    break;
                }
            }
            if (hit) continue;
        }
        if (c == 0x3000 || (c >= 0xFF01 && c <= 0xFFEF)) {
            int lo = 0, hi = tok_width_map_count - 1, hit = 0;
            while (lo <= hi) {
                int mid = (lo + hi) / 2;
                if (c < tok_width_map[mid][0]) hi = mid - 1;
                else if (c > tok_width_map[mid][0]) lo = mid + 1;
                else {
                    uint32_t a = tok_width_map[mid][1], b = tok_width_map[mid][2];
                    // uncurl_quotes runs after the width map and may apply to its output.
                    if (a == 0x02BC || (a >= 0x2018 && a <= 0x201B)) a = '\'';
                    else if (a >= 0x201C && a <= 0x201F) a = '"';
                    put(tmp, a);
                    if (b) put(tmp, b);
                    hit = 1;
                    break;
                }
            }
            if (hit) continue;
        }
        if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
        else if (c >= 0x201C && c <= 0x201F) c = '"';
        put(tmp, c);
    }
    // Stage 2: line breaks ("\r\n" → "\n" before lone "\r"), then ANSI escapes, then control characters.
    out->n = 0;
    for (size_t i = 0; i < tmp->n; i++) {
        uint32_t c = tmp->p[i];
        if (c == '\r') {
            if (i + 1 < tmp->n && tmp->p[i + 1] == '\n') continue;
            c = '\n';
        } else if (c == 0x2028 || c == 0x2029 || c == 0x85) {
            c = '\n';
        }
        tmp->p[out->n++] = c;  // compacting in place: out->n ≤ i
    }
    size_t m = out->n;
    out->n   = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = tmp->p[i];
        if (c == 0x1B && i + 1 < m && tmp->p[i + 1] == '[') {
            // "\033[" ((\d|;)*) [a-zA-Z] — \d is any Unicode decimal digit in Python's re.
            size_t j = i + 2;
            while (j < m && (tmp->p[j] == ';' || utf8proc_category((int32_t)tmp->p[j]) == UTF8PROC_CATEGORY_ND)) j++;
            if (j < m && tmp->p[j] < 0x80 && ((tmp->p[j] | 0x20) - 'a') < 26) {
                i = j;
                continue;
            }
        }
        put(out, c);
    }
    m      = out->n;
    out->n = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = out->p[i];
        if (c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
            c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC))
            continue;
        out->p[out->n++] = c;
    }
}

// Appends the NFC form of cps[0..n) to out, through utf8proc; u8 is scratch. 0 or −1 (OOM).
static int nfc_run(const uint32_t * cps, size_t n, struct tok_cps * u8, struct tok_cps * out) {
    if (n == 0) return 0;
    // UTF-8 needs at most 4 bytes per code point: n + 1 code points of scratch hold it.
    if (tok_cps_reserve(u8, n + 1) != 0) return -1;
    char * bytes = (char *)u8->p;
    size_t nb    = 0;
    for (size_t i = 0; i < n; i++) nb += (size_t)tok_utf8_put(cps[i], bytes + nb);
    for (;;) {
        size_t           room = out->cap - out->n;
        utf8proc_ssize_t got  = utf8proc_decompose((const utf8proc_uint8_t *)bytes, (utf8proc_ssize_t)nb,
                                                   (utf8proc_int32_t *)(out->p + out->n), (utf8proc_ssize_t)room,
                                                   UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (got < 0) return -1;  // cannot happen: valid UTF-8 without surrogates
        if ((size_t)got > room) {
            if (tok_cps_reserve(out, out->n + (size_t)got) != 0) return -1;
            continue;
        }
        utf8proc_ssize_t len = utf8proc_normalize_utf32((utf8proc_int32_t *)(out->p + out->n), got,
                                                        UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (len < 0) return -1;
        out->n += (size_t)len;
        return 0;
    }
}

// Unicode NFC of b, which then holds the result; u8 and out are scratch. 0 or −1 (OOM).
static int nfc(struct tok_cps * b, struct tok_cps * u8, struct tok_cps * out) {
    size_t first = 0;
    // Below U+0300 every character is NFC-stable and composes with nothing that follows.
    while (first < b->n && b->p[first] < 0x300) first++;
    if (first == b->n) return 0;
    if (tok_cps_reserve(out, b->n + 16) != 0) return -1;
    out->n = 0;
    // utf8proc 2.8 "composes" an LV syllable with U+11A7 (the T base, not a trailing consonant) by dropping the
    // U+11A7. It is a starter that composes with nothing, so normalising the runs between them apart is exact.
    for (size_t i = 0; i <= b->n;) {
        size_t j = i;
        while (j < b->n && b->p[j] != 0x11A7) j++;
        if (nfc_run(b->p + i, j - i, u8, out) != 0) return -1;
        if (j == b->n) break;
        if (tok_cps_reserve(out, out->n + 1) != 0) return -1;
        out->p[out->n++] = 0x11A7;
        i                = j + 1;
    }
    struct tok_cps t = *b;
    *b               = *out;
    *out             = t;
    return 0;
}

// ftfy.fix_and_explain for one line held in `seg` (in place): every fixer, repeated until the text stops changing.
// b1, b2, orig are scratch.
static int fix_line(struct tok_cps * seg, int unescape, struct tok_cps * b1, struct tok_cps * b2,
                    struct tok_cps * orig) {
    // Each round that changes something shrinks an entity or expands a ligature; 100 rounds only bound
    // adversarial input (real text settles in two or three).
    for (int round = 0; round < 100; round++) {
        size_t cap = seg->n * 3 + 16;
        if (tok_cps_reserve(b1, cap) != 0 || tok_cps_reserve(b2, cap) != 0 || tok_cps_reserve(orig, cap) != 0 ||
            tok_cps_reserve(seg, cap) != 0)
            return -1;
        memcpy(orig->p, seg->p, seg->n * sizeof(uint32_t));
        orig->n = seg->n;
        if (unescape) {
            fix_unescape_html(seg, b1);
        } else {
            memcpy(b1->p, seg->p, seg->n * sizeof(uint32_t));
            b1->n = seg->n;
        }
        fix_chars(b1, seg, b2);
        if (nfc(seg, b2, b1) != 0) return -1;
        if (seg->n == orig->n && memcmp(seg->p, orig->p, seg->n * sizeof(uint32_t)) == 0) return 0;
    }
    return 0;
}

// ftfy.fix_text: line by line (each line keeps its "\n"); HTML unescaping stops for good at the first line that
// holds a "<". Result replaces `text`.
static int fix_text(struct tok_cps * text, struct tok_cps s[5]) {
    int plain = 1;
    for (size_t i = 0; i < text->n && plain; i++) {
        uint32_t c = text->p[i];
        plain      = (c >= 0x20 && c < 0x7F && c != '&') || c == '\t' || c == '\n';
    }
    if (plain) return 0;  // printable ASCII without "&": every fixer is the identity
    struct tok_cps * acc = &s[0];
    struct tok_cps * seg = &s[1];
    acc->n               = 0;
    int unescape         = 1;
    for (size_t pos = 0; pos < text->n;) {
        size_t end = pos;
        while (end < text->n && text->p[end] != '\n') end++;
        if (end < text->n) end++;
        if (tok_cps_reserve(seg, end - pos) != 0) return -1;
        memcpy(seg->p, text->p + pos, (end - pos) * sizeof(uint32_t));
        seg->n = end - pos;
        for (size_t i = 0; i < seg->n && unescape; i++)
            if (seg->p[i] == '<') unescape = 0;
        if (fix_line(seg, unescape, &s[2], &s[3], &s[4]) != 0) return -1;
        if (tok_cps_reserve(acc, acc->n + seg->n) != 0) return -1;
        memcpy(acc->p + acc->n, seg->p, seg->n * sizeof(uint32_t));
        acc->n += seg->n;
        pos = end;
    }
    struct tok_cps t = *text;
    *text            = *acc;
    *acc             = t;
    return 0;
}

// Python's Final_Sigma test for the capital sigma at text[i]: preceded by a cased letter and not followed by one,
// skipping case-ignorable characters on both sides.
static int final_sigma(const uint32_t * text, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && in_ranges(tok_case_ignorable_ranges, tok_case_ignorable_ranges_count, text[j - 1])) j--;
    if (j == 0 || !in_ranges(tok_cased_ranges, tok_cased_ranges_count, text[j - 1])) return 0;
    for (j = i + 1; j < n; j++)
        if (!in_ranges(tok_case_ignorable_ranges, tok_case_ignorable_ranges_count, text[j])) break;
    return j == n || !in_ranges(tok_cased_ranges, tok_cased_ranges_count, text[j]);
}

int tok_clip_clean(struct tok_cps * text, struct tok_cps scratch[5]) {
    if (fix_text(text, scratch) != 0) return -1;
    // whitespace_clean: every run of \s becomes one space, then str.strip().
    size_t n = 0;
    for (size_t i = 0; i < text->n; i++) {
        uint32_t c = text->p[i];
        if (tok_is_regex_space(c)) {
            if (n > 0 && text->p[n - 1] == ' ') continue;  // only a \s run writes ' '; extend it
            c = ' ';
        }
        text->p[n++] = c;
    }
    text->n      = n;
    size_t first = 0;
    while (first < n && tok_is_py_space(text->p[first])) first++;
    while (n > first && tok_is_py_space(text->p[n - 1])) n--;
    // str.lower(), written to scratch[0] (it may grow: U+0130 becomes two code points).
    struct tok_cps * low = &scratch[0];
    if (tok_cps_reserve(low, (n - first) * 2 + 1) != 0) return -1;
    low->n = 0;
    for (size_t i = first; i < n; i++) {
        uint32_t c = text->p[i];
        if (c < 0x80) {
            low->p[low->n++] = (c - 'A' < 26) ? c + 32 : c;
        } else if (c == 0x130) {
            low->p[low->n++] = 'i';
            low->p[low->n++] = 0x307;
        } else if (c == 0x3A3) {
            low->p[low->n++] = final_sigma(text->p, n, i) ? 0x3C2 : 0x3C3;
        } else {
            low->p[low->n++] = (uint32_t)utf8proc_tolower((int32_t)c);
        }
    }
    struct tok_cps t = *text;
    *text            = *low;
    *low             = t;
    return 0;
}
