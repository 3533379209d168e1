#!/usr/bin/env python3
"""
random_diff.py — differential test of the C tokenizers against the reference libraries on random text.

Builds a small driver from src/model/tokenizer-*.c (cc, no CMake needed), generates random strings from pools of
interesting characters (whitespace and control characters, combining marks, Greek sigma, Hangul jamo, fullwidth
forms, ligatures, HTML entities, ANSI escapes, CLIP's special tokens, emoji, random code points; a tenth with invalid
UTF-8 bytes) and compares every id:
  clip: transformers' slow CLIPTokenizer with ftfy (fix_encoding off, see docs/TOKENIZERS.md) on the real vocabulary,
        SD3's tokenizer and tokenizer_2 configs, untruncated and 77-padded;
  t5:   sentencepiece on tests/golden/tokenizers/t5_tiny/spiece.model (+ "</s>"), through both load paths.
Not run by CI (it needs the reference environment).

    /opt/refenv/bin/python tools/reference/tokenizers/random_diff.py clip 20000 1
    /opt/refenv/bin/python tools/reference/tokenizers/random_diff.py t5 50000 1
"""
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, HERE)
from transformers import CLIPTokenizer
import sentencepiece as spm
from make_fixtures import CLIP_GZ, clip_config, no_fix_encoding, openai_vocab, write_json

DRIVER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model/tokenizer.h"
// usage: driver clip|t5 path maxlen pad ; stdin: hex lines ; stdout: ids per line
int main(int argc, char ** argv) {
    struct sd3q_errbuf e = {{0}};
    int clip = strcmp(argv[1], "clip") == 0;
    struct bpe_tokenizer * b = NULL; struct unigram_tokenizer * u = NULL;
    if (clip ? bpe_tokenizer_load(argv[2], &b, &e) : unigram_tokenizer_load(argv[2], &u, &e)) { fprintf(stderr, "%s\n", e.msg); return 1; }
    int maxlen = atoi(argv[3]), pad = atoi(argv[4]);
    if (argc > 5 && b) bpe_tokenizer_set_pad_id(b, atoi(argv[5]));
    static char line[1 << 22]; static char txt[1 << 21]; static int32_t ids[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line); while (n && (line[n-1] == '\n' || line[n-1] == '\r')) line[--n] = 0;
        for (size_t i = 0; i < n / 2; i++) { unsigned v; sscanf(line + 2*i, "%2x", &v); txt[i] = (char)v; }
        txt[n/2] = 0;
        int k = clip ? bpe_tokenizer_encode(b, txt, maxlen, pad, ids) : unigram_tokenizer_encode(u, txt, maxlen, pad, ids);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    return 0;
}
"""
DRIVER = None


def build_driver(tmp):
    global DRIVER
    c = os.path.join(tmp, "driver.c")
    open(c, "w").write(DRIVER_C)
    srcs = [os.path.join(ROOT, "src", "model", f) for f in sorted(os.listdir(os.path.join(ROOT, "src", "model")))
            if f.startswith("tokenizer-") and f.endswith(".c")]
    srcs += [os.path.join(ROOT, "src", "core", "status.c"), os.path.join(ROOT, "src", "io", "fileutil.c")]
    DRIVER = os.path.join(tmp, "driver")
    subprocess.run(["cc", "-O2", "-std=c11", "-D_GNU_SOURCE", "-I" + os.path.join(ROOT, "src"),
                    "-I" + os.path.join(ROOT, "include"), c] + srcs + ["-lcjson", "-lutf8proc", "-lz", "-lm", "-o", DRIVER],
                   check=True)

def cps(*ranges):
    return [chr(c) for a, b in ranges for c in range(a, b)]


def pools(rng):
    """Character pools; gen() draws short runs from them."""
    p = {
        "ascii": cps((0x20, 0x7F)),
        "ws": list("\t\n\r\x0b\x0c") + [chr(c) for c in (0x85, 0xA0, 0x1680, 0x2000, 0x2005, 0x200A, 0x2028,
                                                          0x2029, 0x202F, 0x205F, 0x3000, 0x1C, 0x1D, 0x1E, 0x1F)],
        "ctrl": cps((1, 0x20), (0x7F, 0xA0)) + list("\u200b\u200c\u200d\u200e\ufeff\u206a\ufff9\ufffc\ufffd\u00ad"),
        "latin": cps((0xA0, 0x250)) + list("\u0130\u0131\u017f\u1e9e\u212a\u212b\u2126"),
        "comb": cps((0x300, 0x370)) + list("\u0345\u20dd\u3099\u309a"),
        "greek": cps((0x370, 0x400)) + ["\u03a3"] * 10 + list("\u1f00\u1fbc\u1f88"),
        "cyr": cps((0x400, 0x530)),
        "cjk": [chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(200)] + cps((0x3040, 0x3100)),
        "hangul": [chr(rng.randint(0xAC00, 0xD7A3)) for _ in range(100)] + cps((0x1100, 0x1200), (0x3131, 0x318F)),
        "jamo": cps((0x1100, 0x1113), (0x1161, 0x1176), (0x11A7, 0x11C3)) + [chr(0xAC00 + 28 * k) for k in range(0, 399, 7)],
        "width": cps((0xFF01, 0xFFF0)) + ["\u3000"],
        "emoji": [chr(rng.randint(0x1F300, 0x1FAFF)) for _ in range(200)]
                 + list("\u200d\ufe0f\ufe0e\U0001f3fb\U0001f1ef\U0001f1f5\u2764\u263a"),
        "quotes": cps((0x2010, 0x2030)) + list("\u02bc\u00ab\u00bb"),
        "lig": cps((0x1C4, 0x1CD), (0x1F1, 0x1F4), (0x132, 0x134), (0x149, 0x14A), (0xFB00, 0xFB07)),
        "ent": ["&amp;", "&lt;", "&gt;", "&#", "&#x", "x41;", "41;", "&eacute;", "&EACUTE;", "&#59;", "&nbsp;", ";",
                "&", "&AMP;", "&amp", "&#128;", "&#x1F600;", "&#0;", "&#xD800;", "&quot;", "&SZLIG;", "&ETH;",
                "&notin;", "&#1114112;", "&#x0000000041;", "&" + "a" * 25 + ";", "&ampamp;", "&Jscr;", "&fjlig;",
                "&NotEqualTilde;", "&#65", "<", ">"],
        "ansi": ["\x1b[", "31m", "\x1b", "0m", "1;4m", "\x1b[m", "\u0663"],
        "special": ["<|startoftext|>", "<|endoftext|>", "<|ENDOFTEXT|>", "<|", "|>", "!", "!!", "'s", "'ll", "'re",
                    "'ve", "'m", "'d", "'t", "\u017f", "'", "'S", "<|\u017ftartoftext|>", "<|endoftexts"],
        "misc": cps((0x600, 0x700), (0x900, 0x980), (0xE00, 0xE60), (0x5D0, 0x5F0), (0x2070, 0x2200),
                    (0x2460, 0x2500), (0x2150, 0x2190)),
        "words": ["photo", "cat", "astronaut", "Hello", "WORLD", "the", "of", "a", "detailed", "8k", "4K", "1080p",
                  "x2", "caf\u00e9", "na\u00efve", "\u6771\u4eac", "123", "3.14"],
        "marks": [chr(c) for c in range(0x300, 0x20000) if unicodedata.category(chr(c)).startswith("M")],
        "any": [chr(c) for c in (rng.randint(0xA0, 0x2FFFF) for _ in range(500)) if not 0xD800 <= c <= 0xDFFF],
    }
    return p


def gen(p, rng, maxparts=30):
    weights = {k: {"ascii": 6, "words": 6, "ws": 3, "marks": 2}.get(k, 1) for k in p}
    out = []
    for k in rng.choices(list(p), [weights[k] for k in p], k=rng.randint(0, maxparts)):
        out.extend(rng.choice(p[k]) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.3:
            out.append(" ")
    return "".join(out)


def run_driver(args, texts):
    inp = "".join(as_bytes(t).hex() + "\n" for t in texts)
    r = subprocess.run([DRIVER] + args, input=inp.encode(), capture_output=True, check=True)
    return [list(map(int, line.split())) for line in r.stdout.decode().split("\n")[:len(texts)]]


def as_bytes(t):
    return t if isinstance(t, bytes) else t.encode("utf-8")


def report(bad, what, text, got, want):
    if bad <= 10:
        print("MISMATCH", what, repr(text)[:200], "\n  got ", got[:30], "\n  want", want[:30])


def compare_clip(texts):
    bad, tmp = 0, tempfile.mkdtemp()
    enc, merges = openai_vocab(CLIP_GZ)
    for style, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        d = os.path.join(tmp, style)
        os.makedirs(d)
        write_json(os.path.join(d, "vocab.json"), enc, compact=True)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        cfg, spec = clip_config(pad)
        write_json(os.path.join(d, "tokenizer_config.json"), cfg)
        write_json(os.path.join(d, "special_tokens_map.json"), spec)
        ref = no_fix_encoding(CLIPTokenizer.from_pretrained(d))
        ftfy_full = CLIPTokenizer.from_pretrained(d)
        got_full = run_driver(["clip", d, "100000", "0"], texts)
        got_pad = run_driver(["clip", d, "77", "1"], texts)
        fixenc = 0
        for t, gf, gp in zip(texts, got_full, got_pad):
            s = t.decode("utf-8", "replace") if isinstance(t, bytes) else t
            wf = ref(s).input_ids
            wp = ref(s, padding="max_length", max_length=77, truncation=True).input_ids
            if gf != wf or gp != wp:
                bad += 1
                report(bad, style, s, gf if gf != wf else gp, wf if gf != wf else wp)
            fixenc += ftfy_full(s).input_ids != wf
        print("%s: %d texts, %d mismatches; ftfy's fix_encoding (not ported) would change %d" % (
            style, len(texts), bad, fixenc))
    shutil.rmtree(tmp)
    return bad


def compare_t5(texts):
    bad = 0
    model = os.path.join(ROOT, "tests", "golden", "tokenizers", "t5_tiny", "spiece.model")
    sp = spm.SentencePieceProcessor(model_file=model)
    for path in (model, os.path.join(os.path.dirname(model), "tokenizer.json")):
        for t, g in zip(texts, run_driver(["t5", path, "100000", "0"], texts)):
            w = sp.encode(as_bytes(t)) + [sp.piece_to_id("</s>")]
            if g != w:
                bad += 1
                report(bad, os.path.basename(path), t, g, w)
        print("%s: %d texts, %d mismatches" % (os.path.basename(path), len(texts), bad))
    return bad


def main():
    which, n = sys.argv[1], int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    p = pools(rng)
    texts = [gen(p, rng).replace("\x00", "") for _ in range(n)]
    for t in texts[: n // 10]:  # a tenth again with invalid UTF-8 bytes inserted
        b = bytearray(t.encode("utf-8"))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randint(0, len(b))
            b[pos:pos] = bytes([rng.choice([0x80, 0xBF, 0xC0, 0xC1, 0xC3, 0xE2, 0xED, 0xF0, 0xF4, 0xF5, 0xFE, 0xFF])])
        texts.append(bytes(b))
    build_tmp = tempfile.mkdtemp()
    try:
        build_driver(build_tmp)
        bad = compare_clip(texts) if which == "clip" else compare_t5(texts)
    finally:
        shutil.rmtree(build_tmp)
    print("TOTAL mismatches", bad)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
