#!/usr/bin/env python3
"""
make_fixtures.py — reference token ids for tests/test-tokenizer-clip.c and tests/test-tokenizer-t5.c.

Writes under tests/golden/tokenizers/:
  clip_configs/{tokenizer,tokenizer_2}/   SD3's diffusers tokenizer configs (pad "<|endoftext|>" / "!"), no vocabulary
  clip_fixtures.json                      ids from transformers' slow CLIPTokenizer for the REAL CLIP vocabulary, read
                                          from ../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz (vocab.json and
                                          merges.txt are built from it in a temporary folder, never committed)
  clip_tiny/                              a small CLIP-style BPE trained here on corpus.txt (vocab.json, merges.txt,
                                          tokenizer_config.json, tokenizer.json), with unusual special-token ids
  clip_tiny_fixtures.json                 CLIPTokenizer ids for it
  t5_tiny/                                a unigram model trained here with sentencepiece (nmt_nfkc) on corpus.txt:
                                          spiece.model and T5TokenizerFast's tokenizer.json (+ configs)
  t5_fixtures.json                        sentencepiece ids (+ "</s>") and T5TokenizerFast ids

CLIP reference configuration: the slow CLIPTokenizer with ftfy installed (what diffusers' SD3 pipeline runs for
users who have ftfy). ftfy's mojibake repair (fix_encoding) is not ported; prompts where it changes the ids are
recorded with both results and flagged as a known deviation.

Run with the reference interpreter from the repository root:
    /opt/refenv/bin/python tools/reference/tokenizers/make_fixtures.py [--retrain]
--retrain re-trains the two small models (otherwise the committed ones are reused).
"""
import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile

import ftfy
import google.protobuf
import regex
import sentencepiece as spm
import tokenizers
import transformers
from transformers import CLIPTokenizer, CLIPTokenizerFast, T5TokenizerFast
from transformers.models.clip.tokenization_clip import bytes_to_unicode, whitespace_clean

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prompts import PROMPTS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
GOLDEN = os.path.join(ROOT, "tests", "golden", "tokenizers")
CORPUS = os.path.join(HERE, "corpus.txt")
CLIP_GZ = os.path.join(ROOT, "..", "shared", "tokenizers", "clip_bpe_simple_vocab_16e6.txt.gz")
CLIP_MAX = 77
T5_MAX = (24, 77)

VERSIONS = {
    "python": sys.version.split()[0],
    "transformers": transformers.__version__,
    "tokenizers": tokenizers.__version__,
    "sentencepiece": spm.__version__,
    "ftfy": ftfy.__version__,
    "regex": regex.__version__,
    "protobuf": google.protobuf.__version__,
}

# SD3's diffusers tokenizer configs (stabilityai/stable-diffusion-3-medium-diffusers tokenizer/ and tokenizer_2/,
# the SDXL convention): same vocabulary, different pad token.
def clip_config(pad):
    added = {
        "49406": {"content": "<|startoftext|>", "lstrip": False, "normalized": True, "rstrip": False,
                  "single_word": False, "special": True},
        "49407": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                  "single_word": False, "special": True},
    }
    if pad == "!":
        added = {"0": {"content": "!", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                       "special": True}, **added}
    cfg = {
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": "<|startoftext|>",
        "clean_up_tokenization_spaces": True, "do_lower_case": True, "eos_token": "<|endoftext|>",
        "errors": "replace", "model_max_length": 77, "pad_token": pad, "tokenizer_class": "CLIPTokenizer",
        "unk_token": "<|endoftext|>",
    }
    tok = lambda s: {"content": s, "lstrip": False, "normalized": s == "<|startoftext|>", "rstrip": False,
                     "single_word": False}
    spec = {"bos_token": tok("<|startoftext|>"), "eos_token": tok("<|endoftext|>"),
            "pad_token": tok(pad) if pad != "!" else "!", "unk_token": tok("<|endoftext|>")}
    return cfg, spec


def write_json(path, obj, compact=False):
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def write_fixture(path, out):
    # One case per line: small files and readable diffs.
    cases = out.pop("cases")
    head = json.dumps(out, ensure_ascii=False, indent=1)[:-2]
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + ',\n "cases": [\n')
        f.write(",\n".join("  " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in cases))
        f.write("\n ]\n}\n")


def as_text(t):
    # Invalid UTF-8 reaches Python only through decode("utf-8", "replace"): the behaviour the C code documents.
    return t.decode("utf-8", "replace") if isinstance(t, bytes) else t


def as_bytes(t):
    return t if isinstance(t, bytes) else t.encode("utf-8")


def case_header(name, t):
    b = as_bytes(t)
    return {"name": name, "hex": b.hex(), "text": as_text(t)}


# ---- CLIP ------------------------------------------------------------------------------------------------------

def openai_vocab(gz_path):
    lines = gzip.open(gz_path).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m.split()))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    return dict(zip(vocab, range(len(vocab)))), merges


def no_fix_encoding(tok):
    # The same tokenizer with ftfy's mojibake repair switched off: what the C port implements.
    tok.fix_text = lambda s: ftfy.fix_text(s, fix_encoding=False)
    return tok


def clip_ids(tok, text):
    full = tok(text).input_ids
    padded = tok(text, padding="max_length", max_length=CLIP_MAX, truncation=True).input_ids
    return {"full": full, "padded": padded}


def make_clip_real(tmp):
    if not os.path.exists(CLIP_GZ):
        print("skip real CLIP fixtures: %s not found" % CLIP_GZ)
        return
    enc, merges = openai_vocab(CLIP_GZ)
    styles = {}
    for style, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        cfg, spec = clip_config(pad)
        cdir = os.path.join(GOLDEN, "clip_configs", style)
        os.makedirs(cdir, exist_ok=True)
        write_json(os.path.join(cdir, "tokenizer_config.json"), cfg)
        write_json(os.path.join(cdir, "special_tokens_map.json"), spec)
        d = os.path.join(tmp, style)
        os.makedirs(d)
        write_json(os.path.join(d, "vocab.json"), enc, compact=True)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        shutil.copy(os.path.join(cdir, "tokenizer_config.json"), d)
        shutil.copy(os.path.join(cdir, "special_tokens_map.json"), d)
        styles[style] = (CLIPTokenizer.from_pretrained(d), no_fix_encoding(CLIPTokenizer.from_pretrained(d)))
    assert styles["tokenizer"][0].pad_token_id == 49407 and styles["tokenizer_2"][0].pad_token_id == 0
    cases, deviations = [], 0
    for name, t in PROMPTS:
        c = case_header(name, t)
        for style, (ref, port) in styles.items():
            want = clip_ids(port, as_text(t))
            real = clip_ids(ref, as_text(t))
            c[style] = want
            if want != real:
                c[style + "_ftfy_fix_encoding"] = real
                c["deviation"] = "ftfy fix_encoding (mojibake repair) is not ported"
        deviations += "deviation" in c
        cases.append(c)
    with open(CLIP_GZ, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "generator": "tools/reference/tokenizers/make_fixtures.py",
        "reference": "transformers.CLIPTokenizer (slow) with ftfy; fix_encoding off where flagged",
        "versions": VERSIONS,
        "vocabulary": "../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz",
        "vocabulary_sha256": sha,
        "max_len": CLIP_MAX,
        "pad_ids": {"tokenizer": 49407, "tokenizer_2": 0},
        "cases": cases,
    }
    write_fixture(os.path.join(GOLDEN, "clip_fixtures.json"), out)
    print("clip_fixtures.json: %d prompts, %d flagged deviations" % (len(cases), deviations))


def clip_pretokens(text):
    # CLIPTokenizer._tokenize's text path up to the pattern (ftfy, whitespace, lower case, CLIP's regex).
    pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                        r"""[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
    return regex.findall(pat, whitespace_clean(ftfy.fix_text(text)).lower())


def train_tiny_bpe(n_merges=700):
    # A plain BPE trainer over CLIP's pre-tokens (most frequent pair first, ties by the pair's text): enough to
    # give a small, deterministic vocabulary whose ids differ from the real CLIP's.
    b2u = bytes_to_unicode()
    words = {}
    for line in open(CORPUS, encoding="utf-8"):
        for tok in clip_pretokens(line):
            sy = [b2u[b] for b in tok.encode("utf-8")]
            sy[-1] += "</w>"
            words[tuple(sy)] = words.get(tuple(sy), 0) + 1
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        nw = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nw[tuple(out)] = nw.get(tuple(out), 0) + c
        words = nw
    return merges


def make_clip_tiny(retrain):
    d = os.path.join(GOLDEN, "clip_tiny")
    if retrain or not os.path.exists(os.path.join(d, "merges.txt")):
        os.makedirs(d, exist_ok=True)
        merges = train_tiny_bpe()
        base = list(bytes_to_unicode().values())
        # Leave a few byte symbols that no merge uses out, so that the unknown-token path is exercised.
        used = {s for m in merges for s in m}
        dropped = {s for s in ("~", "~</w>", "^", "^</w>", "`</w>", "|</w>") if s not in used}
        vocab = [s for s in base if s not in dropped] + [s + "</w>" for s in base if s + "</w>" not in dropped]
        for a, b in merges:
            if a + b not in vocab:
                vocab.append(a + b)
        # Special tokens first: BOS/EOS/pad ids that are nothing like 49406/49407.
        vocab = ["<|pad|>", "<|endoftext|>", "<|startoftext|>"] + vocab
        write_json(os.path.join(d, "vocab.json"), {s: i for i, s in enumerate(vocab)})
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join("%s %s" % m for m in merges) + "\n")
        cfg = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|pad|>", "model_max_length": 77, "tokenizer_class": "CLIPTokenizer"}
        write_json(os.path.join(d, "tokenizer_config.json"), cfg)
        # The fast tokenizer's file, for the tokenizer.json load path (its vocabulary and merges only).
        tmp = tempfile.mkdtemp()
        CLIPTokenizerFast.from_pretrained(d, from_slow=True).save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        shutil.rmtree(tmp)
    ref = CLIPTokenizer.from_pretrained(d)
    port = no_fix_encoding(CLIPTokenizer.from_pretrained(d))
    cases = []
    for name, t in PROMPTS:
        c = case_header(name, t)
        c["tiny"] = clip_ids(port, as_text(t))
        real = clip_ids(ref, as_text(t))
        if real != c["tiny"]:
            c["tiny_ftfy_fix_encoding"] = real
            c["deviation"] = "ftfy fix_encoding (mojibake repair) is not ported"
        cases.append(c)
    out = {
        "generator": "tools/reference/tokenizers/make_fixtures.py",
        "reference": "transformers.CLIPTokenizer (slow) with ftfy on tests/golden/tokenizers/clip_tiny",
        "versions": VERSIONS,
        "max_len": CLIP_MAX,
        "bos_id": ref.bos_token_id, "eos_id": ref.eos_token_id, "pad_id": ref.pad_token_id,
        "unk_id": ref.unk_token_id, "vocab_size": len(ref.get_vocab()),
        "cases": cases,
    }
    write_fixture(os.path.join(GOLDEN, "clip_tiny_fixtures.json"), out)
    print("clip_tiny_fixtures.json: %d prompts (bos %d eos %d pad %d)" % (
        len(cases), ref.bos_token_id, ref.eos_token_id, ref.pad_token_id))


# ---- T5 --------------------------------------------------------------------------------------------------------

def make_t5(retrain):
    d = os.path.join(GOLDEN, "t5_tiny")
    model = os.path.join(d, "spiece.model")
    if retrain or not os.path.exists(model):
        os.makedirs(d, exist_ok=True)
        tmp = tempfile.mkdtemp()
        # T5's special-piece layout (<pad> 0, </s> 1, <unk> 2, no <s>); nmt_nfkc is sentencepiece's default rule.
        spm.SentencePieceTrainer.train(
            input=CORPUS, model_prefix=os.path.join(tmp, "spiece"), vocab_size=1000, model_type="unigram",
            normalization_rule_name="nmt_nfkc", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
            character_coverage=0.995, num_threads=1, shuffle_input_sentence=False, seed_sentencepiece_size=100000,
            minloglevel=2)
        shutil.copy(os.path.join(tmp, "spiece.model"), model)
        fast = T5TokenizerFast(vocab_file=model)  # converts through the slow tokenizer, as diffusers' file was made
        fast.save_pretrained(tmp)
        for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(tmp, f), os.path.join(d, f))
        shutil.rmtree(tmp)
    sp = spm.SentencePieceProcessor(model_file=model)
    fast = T5TokenizerFast.from_pretrained(d)
    eos = sp.piece_to_id("</s>")
    cases, disagree = [], 0
    for name, t in PROMPTS:
        c = case_header(name, t)
        ids = sp.encode(as_bytes(t)) + [eos]  # sentencepiece reads the raw bytes, invalid UTF-8 included
        c["spm"] = ids
        for m in T5_MAX:
            c["spm_%d" % m] = (ids[:m - 1] + [eos] if len(ids) > m else ids) + [0] * max(0, m - len(ids))
        if not isinstance(t, bytes):
            c["hf"] = fast(t).input_ids
            for m in T5_MAX:
                c["hf_%d" % m] = fast(t, padding="max_length", max_length=m, truncation=True).input_ids
            same = c["hf"] == ids and all(c["hf_%d" % m] == c["spm_%d" % m] for m in T5_MAX)
            c["hf_agrees"] = same
            disagree += not same
        cases.append(c)
    out = {
        "generator": "tools/reference/tokenizers/make_fixtures.py",
        "reference": "sentencepiece.SentencePieceProcessor.encode + [</s>] on t5_tiny/spiece.model; "
                     "transformers.T5TokenizerFast on t5_tiny/ for comparison",
        "versions": VERSIONS,
        "max_lens": list(T5_MAX),
        "eos_id": eos, "pad_id": sp.pad_id(), "unk_id": sp.unk_id(), "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    write_fixture(os.path.join(GOLDEN, "t5_fixtures.json"), out)
    print("t5_fixtures.json: %d prompts, T5TokenizerFast differs from sentencepiece on %d" % (len(cases), disagree))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--retrain", action="store_true", help="re-train the small BPE and unigram models")
    args = ap.parse_args()
    os.makedirs(GOLDEN, exist_ok=True)
    print("reference versions:", " ".join("%s=%s" % kv for kv in VERSIONS.items()))
    tmp = tempfile.mkdtemp()
    try:
        make_clip_real(tmp)
    finally:
        shutil.rmtree(tmp)
    make_clip_tiny(args.retrain)
    make_t5(args.retrain)


if __name__ == "__main__":
    main()
