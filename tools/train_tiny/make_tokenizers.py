"""Train the tiny model's three tokenizers on the caption corpus, in SD3's formats.

  tokenizer/    CLIP BPE (OpenAI format: vocab.json + merges.txt), pad <|endoftext|>
  tokenizer_2/  the same BPE, pad "!" (as SD3's CLIP-G tokenizer)
  tokenizer_3/  SentencePiece unigram trained by sentencepiece (spiece.model, nmt_nfkc normaliser, <pad>=0,
                </s>=1, <unk>=2, no BOS, 100 <extra_id_k> sentinels like T5) plus the
                equivalent tokenizer.json written by transformers' T5TokenizerFast.

The BPE trainer below is our own (classic pair-merging on word counts):
  * pre-tokenise like CLIP (lower-case; letter runs, single digits, runs of other
    non-space characters; contractions), map UTF-8 bytes to CLIP's byte symbols and put
    "</w>" on the last symbol of every word;
  * repeatedly merge the most frequent adjacent pair (ties: lexicographically smallest
    pair; a merge whose result is already a vocabulary entry is skipped) until no pair
    is left or --max-merges is reached;
  * vocabulary = 256 byte symbols (CLIP's table order), the same 256 with "</w>", the
    merge results in merge order, then <|startoftext|> and <|endoftext|>.

Usage:  python make_tokenizers.py [--out models/tiny-sd3]
"""
import argparse
import collections
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def byte_symbols():
    """CLIP/GPT-2 byte -> unicode symbol table, in vocabulary order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    order = keep + [b for b in range(256) if b not in keep]
    return table, [table[b] for b in order]


def clip_pretokenize(text):
    import regex
    pat = regex.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                        regex.IGNORECASE)
    return pat.findall(" ".join(text.strip().split()).lower())


def train_bpe(texts, max_merges=4000):
    table, base = byte_symbols()
    words = collections.Counter()
    for t in texts:
        for w in clip_pretokenize(t):
            sym = [table[b] for b in w.encode("utf-8")]
            sym[-1] += "</w>"
            words[tuple(sym)] += 1
    vocab = base + [s + "</w>" for s in base]
    known = set(vocab)
    merges = []
    words = dict(words)
    while len(merges) < max_merges:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w[:-1], w[1:]):
                pairs[(a, b)] += c
        cands = [(-c, p) for p, c in pairs.items() if p[0] + p[1] not in known]
        if not cands:
            break
        _, best = min(cands)
        merged = best[0] + best[1]
        merges.append(best)
        vocab.append(merged)
        known.add(merged)
        new = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + c
        words = new
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(vocab)}, merges


def corpus():
    caps = [shapes.caption_from_index(i) for i in shapes.valid_caption_indices("train")]
    return caps


def write_clip(out, vocab, merges):
    from transformers import CLIPTokenizer
    with tempfile.TemporaryDirectory() as tmp:
        vf, mf = os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")
        with open(vf, "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(mf, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for a, b in merges:
                f.write("%s %s\n" % (a, b))
        for sub, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
            tok = CLIPTokenizer(vf, mf, pad_token=pad, model_max_length=77)
            tok.save_pretrained(os.path.join(out, sub))


def write_t5(out, caps, vocab_size):
    import sentencepiece as spm
    from transformers import T5TokenizerFast
    # The corpus plus: 2000 lines of random caption words (SentencePiece's seed search
    # finds whole words only when they occur in varied contexts; the rigid caption
    # grammar alone yields character-level pieces), a capitalised copy of every 7th
    # caption, and a line with every ASCII letter and digit so that ordinary prompt
    # text never needs <unk>.
    import random
    rng = random.Random(0)
    words = sorted(set(w for c in caps for w in c.split()))
    lines = list(caps) + [" ".join(rng.choice(words) for _ in range(8)) for _ in range(2000)]
    lines += [c[0].upper() + c[1:] for c in caps[::7]]
    lines.append(" ".join(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789,.;:!?'-")))
    import io
    buf = io.BytesIO()  # model_writer: no temporary path ends up in the model's trainer_spec
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="unigram",
        vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        normalization_rule_name="nmt_nfkc", character_coverage=1.0,
        hard_vocab_limit=False, num_threads=1, shuffle_input_sentence=False,
        minloglevel=2)
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "spiece.model")
        with open(model, "wb") as f:
            f.write(buf.getvalue())
        tok = T5TokenizerFast(vocab_file=model, extra_ids=100, model_max_length=512,
                              from_slow=True, legacy=True)
        d = os.path.join(out, "tokenizer_3")
        tok.save_pretrained(d)
    # loading must use tokenizer.json as is (add_prefix_space would force a re-conversion
    # from spiece.model, which needs sentencepiece and protobuf)
    cf = os.path.join(d, "tokenizer_config.json")
    with open(cf) as f:
        cfg = json.load(f)
    cfg.pop("add_prefix_space", None)
    with open(cf, "w") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "models", "tiny-sd3"))
    ap.add_argument("--t5-vocab", type=int, default=160)
    a = ap.parse_args()
    caps = corpus()
    vocab, merges = train_bpe(caps)
    write_clip(a.out, vocab, merges)
    write_t5(a.out, caps, a.t5_vocab)
    print("CLIP BPE: %d merges, vocab %d" % (len(merges), len(vocab)))
    from transformers import CLIPTokenizer, T5TokenizerFast
    t1 = CLIPTokenizer.from_pretrained(os.path.join(a.out, "tokenizer"))
    t3 = T5TokenizerFast.from_pretrained(os.path.join(a.out, "tokenizer_3"))
    print("T5 unigram: %d pieces (+100 sentinels) = %d" % (len(t3) - 100, len(t3)))
    ex = caps[0]
    print(ex)
    print(" clip:", t1(ex).input_ids)
    print(" t5:  ", t3(ex).input_ids, t3.convert_ids_to_tokens(t3(ex).input_ids))


if __name__ == "__main__":
    main()
