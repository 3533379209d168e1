"""Build the tiny tokenizers of the pipeline fixture and record HF token ids.

usage: /opt/refenv/bin/python tools/reference/make_tokenizers.py [--out tests/golden]
(needs `regex`, `sentencepiece`, `transformers`; run it before make_golden.py)

Writes
  <out>/pipeline/tokenizer/    CLIP BPE (vocab.json, merges.txt; pad <|endoftext|>)
  <out>/pipeline/tokenizer_2/  same vocabulary, pad "!" (SD3 convention)
  <out>/pipeline/tokenizer_3/  SentencePiece unigram spiece.model (+ HF tokenizer.json)
  <out>/tiny_tokenizer_ids.json prompts and the ids HF's CLIPTokenizer / T5TokenizerFast
                               give for them; make_golden.py takes its model inputs here.

The BPE merges are learnt here by our own small trainer on tools/reference/tiny_corpus.txt
(same file format as OpenAI CLIP's: ids 0-255 byte symbols, 256-511 the same with
"</w>", then merges, then <|startoftext|>, <|endoftext|>).  spiece.model is trained by
the sentencepiece library on the same corpus.
"""
import argparse
import collections
import json
import os
import shutil
import sys

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "tiny_corpus.txt")

NUM_MERGES = 200
T5_VOCAB = 320
CLIP_LEN = 77
T5_LEN_PIPELINE = 77
T5_LEN_FIXTURE = 100

PROMPT = "a photo of an astronaut riding a horse on the moon, 4k"
NEGATIVE = "blurry, low quality"
LONG = " ".join(open(CORPUS).read().split("\n")[:6])  # > 77 CLIP tokens and > 100 T5 tokens
CLIP_FIXTURE = [PROMPT, "", LONG]
T5_FIXTURE = [PROMPT, LONG]
TOKENIZER_VECTORS = [
    "a photo of a cat",
    "A Photo Of A CAT, best quality",
    "astronaut riding a horse, 4k",
    "Hello   world\n",
    "",
    "it's 3 apples and 12 pears",
    "the café at night",
    "wow!! a cat!",
]


def byte_symbols():
    """OpenAI CLIP byte -> unicode symbol table, returned as the list of the 256
    symbols in vocabulary order (printable bytes first, then the rest)."""
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table, [table[b] for b in printable] + [table[b] for b in range(256) if b not in printable]


PAT = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                    regex.IGNORECASE)


def train_bpe(lines, num_merges):
    table, order = byte_symbols()
    words = collections.Counter()
    for line in lines:
        text = " ".join(line.split()).lower()
        for piece in PAT.findall(text):
            syms = [table[b] for b in piece.encode("utf-8")]
            syms[-1] += "</w>"
            words[tuple(syms)] += 1
    vocab = order + [s + "</w>" for s in order]
    known = set(vocab)
    merges = []
    while len(merges) < num_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        cands = sorted(((-c, p) for p, c in pairs.items() if p[0] + p[1] not in known))
        if not cands:
            break
        a, b = cands[0][1]
        merges.append((a, b))
        vocab.append(a + b)
        known.add(a + b)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(vocab)}, merges


def write_clip_tokenizer(folder, vocab, merges, pad):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join("%s %s\n" % m for m in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": pad}
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = dict(special, tokenizer_class="CLIPTokenizer", model_max_length=CLIP_LEN, do_lower_case=True,
               errors="replace", add_prefix_space=False, clean_up_tokenization_spaces=True)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def train_spiece(folder, lines):
    """Train spiece.model from the corpus lines (iterator + in-memory writer, so no file
    path ends up in the model's trainer spec and the bytes do not depend on the checkout)."""
    import io
    import sentencepiece as spm
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=T5_VOCAB, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=1.0, num_threads=1, minloglevel=2)
    with open(os.path.join(folder, "spiece.model"), "wb") as f:
        f.write(buf.getvalue())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden"))
    out = ap.parse_args().out
    pipe = os.path.join(out, "pipeline")
    for t in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        shutil.rmtree(os.path.join(pipe, t), ignore_errors=True)

    lines = [l for l in open(CORPUS, encoding="utf-8").read().split("\n") if l.strip()]
    vocab, merges = train_bpe(lines, NUM_MERGES)
    write_clip_tokenizer(os.path.join(pipe, "tokenizer"), vocab, merges, "<|endoftext|>")
    write_clip_tokenizer(os.path.join(pipe, "tokenizer_2"), vocab, merges, "!")

    tmp = os.path.join(pipe, "tokenizer_3_spm")
    train_spiece(tmp, lines)
    from transformers import CLIPTokenizer, T5TokenizerFast
    t5 = T5TokenizerFast(vocab_file=os.path.join(tmp, "spiece.model"), extra_ids=0, legacy=True,
                         model_max_length=512)
    t5.save_pretrained(os.path.join(pipe, "tokenizer_3"))
    shutil.rmtree(tmp)
    # without this key T5TokenizerFast loads tokenizer.json as is instead of re-converting spiece.model
    cfg_path = os.path.join(pipe, "tokenizer_3", "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg.pop("add_prefix_space", None)
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    tl = CLIPTokenizer.from_pretrained(os.path.join(pipe, "tokenizer"))
    tg = CLIPTokenizer.from_pretrained(os.path.join(pipe, "tokenizer_2"))
    t5 = T5TokenizerFast.from_pretrained(os.path.join(pipe, "tokenizer_3"))

    def clip_ids(tok, texts):
        return tok(texts, padding="max_length", max_length=CLIP_LEN, truncation=True).input_ids

    def t5_ids(texts, n):
        return t5(texts, padding="max_length", max_length=n, truncation=True, add_special_tokens=True).input_ids

    rec = {
        "comment": "ids from transformers %s CLIPTokenizer (tokenizer, tokenizer_2) and T5TokenizerFast "
                   "(tokenizer_3) on the pipeline/ tokenizer files; 'padded' entries use padding='max_length', "
                   "truncation=True as diffusers' StableDiffusion3Pipeline does" % sys.modules["transformers"].__version__,
        "clip_vocab_size": len(vocab), "t5_vocab_size": len(t5),
        "vectors": [{"text": s, "clip_l": tl(s).input_ids, "clip_g": tg(s).input_ids, "t5": t5(s).input_ids}
                    for s in TOKENIZER_VECTORS],
        "clip_fixture": {"texts": CLIP_FIXTURE, "clip_l": clip_ids(tl, CLIP_FIXTURE), "clip_g": clip_ids(tg, CLIP_FIXTURE)},
        "t5_fixture": {"texts": T5_FIXTURE, "length": T5_LEN_FIXTURE, "t5": t5_ids(T5_FIXTURE, T5_LEN_FIXTURE)},
        "pipeline": {"prompt": PROMPT, "negative_prompt": NEGATIVE, "max_sequence_length": T5_LEN_PIPELINE},
    }
    for name, text in (("cond", PROMPT), ("uncond", NEGATIVE)):
        rec["pipeline"][name] = {"clip_l": clip_ids(tl, [text])[0], "clip_g": clip_ids(tg, [text])[0],
                                 "t5": t5_ids([text], T5_LEN_PIPELINE)[0]}
    text = json.dumps(rec, indent=1, ensure_ascii=False)
    text = regex.sub(r"\[\s*([-0-9,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)
    with open(os.path.join(out, "tiny_tokenizer_ids.json"), "w", encoding="utf-8") as f:
        f.write(text + "\n")
    print("clip vocab %d (%d merges), t5 vocab %d" % (len(vocab), len(merges), len(t5)))
    for v in rec["vectors"]:
        print(repr(v["text"]), v["clip_l"], v["clip_g"], v["t5"])


if __name__ == "__main__":
    main()
