"""Where does a held-out colour x shape pair go wrong: in the text encoders or in the MMDiT?

For every held-out caption C (its colour c never occurs with its shape s in training), a twin caption C' names a seen
colour c' with the same shape (same words otherwise, so every word sits at the same token position in both). The
image is generated from mixtures of the two captions' encodings and scored against C (and the colour against c'):

  base          context and pooled vector of C (the normal image)
  pooled        context of C, pooled vector of C'
  shape-token   context of C with the shape word's token states (CLIP-L, CLIP-G, T5) taken from C'; pooled of C
  twin+colour   everything from C' except the colour word's token states, which come from C
  twin          C' alone (control: should draw c' shapes, so its colour verdict against C fails)

If `shape-token` or `twin+colour` repairs the shape while the colour stays c, the text encoders' contextual states
(the shape word's state depends on the colour before it, and T5 is bidirectional) are what the MMDiT cannot read;
if only `pooled` repairs it, the adaLN modulation from the pooled vector is; if none does, the MMDiT itself binds the
pair wrongly. Same seeds as evaluate.py (caption i: 1000 + i, CPU generator), 28 steps, CFG 5, 128x128.

    python probe_binding.py --limit 40 --threads 2            # diffusers on the CPU, ~1 s per image
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import adherence  # noqa: E402
import sample  # noqa: E402
import shapes  # noqa: E402
import tiny_model as tm  # noqa: E402

VARIANTS = ["base", "pooled", "shape-token", "twin+colour", "twin"]


def twin_caption(caption):
    """C' and c': the caption with the first colour c' (palette order) that is seen with its shape and is neither the
    object's colour nor the background."""
    a = adherence.parse_caption(caption)
    held = {(c, s) for c, s in shapes.HELDOUT_PAIRS}
    for c2, _ in shapes.COLOURS:
        if c2 != a["colour"] and c2 != a["background"] and (c2, a["shape"]) not in held:
            words = caption.split(" ")
            i = words.index(a["colour"])  # the object colour precedes the shape; the background colour comes last
            words[i] = c2
            return " ".join(words), c2
    raise ValueError("no twin colour for: " + caption)


def differing_position(x, y):
    """The one token position where two id rows differ (the colour word)."""
    d = (x != y).nonzero().flatten().tolist()
    if len(d) != 1:
        raise ValueError("captions differ in %d token positions, expected 1" % len(d))
    return d[0]


@torch.no_grad()
def mixtures(pipe, caps, twins):
    """prompt embeddings [n, 333, 256] and pooled [n, 192] for every variant."""
    ids = tm.tokenize_all(pipe.tokenizer, pipe.tokenizer_2, pipe.tokenizer_3, caps)
    ids2 = tm.tokenize_all(pipe.tokenizer, pipe.tokenizer_2, pipe.tokenizer_3, twins)
    enc = lambda i: tm.encode_text(pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3, *i)  # noqa: E731
    ctx, pooled = enc(ids)
    ctx2, pooled2 = enc(ids2)
    out = {"base": (ctx, pooled), "pooled": (ctx, pooled2), "twin": (ctx2, pooled2)}
    shape_tok, twin_col = ctx.clone(), ctx2.clone()
    for k in range(len(caps)):
        pc = differing_position(ids[0][k], ids2[0][k])           # CLIP-L and CLIP-G share the tokenizer vocabulary
        if differing_position(ids[1][k], ids2[1][k]) != pc:
            raise ValueError("CLIP tokenizers disagree on the colour position: " + caps[k])
        pt = tm.CLIP_LEN + differing_position(ids[2][k], ids2[2][k])  # T5 rows follow the 77 CLIP rows
        for p in (pc + 1, pt + 1):                                # the shape word follows the colour word
            shape_tok[k, p] = ctx2[k, p]
        for p in (pc, pt):
            twin_col[k, p] = ctx[k, p]
    out["shape-token"] = (shape_tok, pooled)
    out["twin+colour"] = (twin_col, pooled2)
    return out


@torch.no_grad()
def generate(pipe, ctx, pooled, seeds, steps, cfg, batch=10):
    neg, neg_pooled = tm.encode_text(pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3,
                                     *tm.tokenize_all(pipe.tokenizer, pipe.tokenizer_2, pipe.tokenizer_3, [""]))
    imgs = []
    for i in range(0, len(seeds), batch):
        n = min(batch, len(seeds) - i)
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + n]]
        im = pipe(prompt_embeds=ctx[i:i + n], pooled_prompt_embeds=pooled[i:i + n],
                  negative_prompt_embeds=neg.expand(n, -1, -1), negative_pooled_prompt_embeds=neg_pooled.expand(n, -1),
                  num_inference_steps=steps, guidance_scale=cfg, height=128, width=128, generator=gens,
                  output_type="np").images
        imgs.append((np.clip(im, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(imgs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=tm.MODEL_DIR)
    ap.add_argument("--captions", default=os.path.join(HERE, "captions_heldout.txt"))
    ap.add_argument("--limit", type=int, default=0, help="only the first N captions")
    ap.add_argument("--steps", type=int, default=sample.DEFAULT_STEPS)
    ap.add_argument("--cfg", type=float, default=sample.DEFAULT_CFG)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--save", default=None, help="keep the images here (VARIANT/NNNNN.png)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    caps = sample.read_prompts(a.captions)
    if a.limit:
        caps = caps[:a.limit]
    twins, twin_colours = zip(*[twin_caption(c) for c in caps])
    pipe = sample.load_pipeline(a.model, "cpu")
    mix = mixtures(pipe, caps, list(twins))
    seeds = [1000 + i for i in range(len(caps))]
    print("%-12s %9s %7s %7s %7s %12s" % ("variant", "adherence", "shape", "colour", "count", "colour = c'"))
    for v in VARIANTS:
        t0 = time.time()
        imgs = generate(pipe, *mix[v], seeds, a.steps, a.cfg)
        res = [adherence.check(im, c) for im, c in zip(imgs, caps)]
        s = adherence.summarise(res)
        # colour verdict against the twin colour: how often the image took the twin's colour
        twin_col = np.mean([adherence.check(im, t)["attrs"]["colour"] for im, t in zip(imgs, twins)])
        print("%-12s %9.2f %7.2f %7.2f %7.2f %12.2f   (%d images, %.0f s)" % (
            v, s["adherence"], s["per_attribute"]["shape"], s["per_attribute"]["colour"], s["per_attribute"]["count"],
            twin_col, len(caps), time.time() - t0), flush=True)
        if a.save:
            sample.save_images(imgs, caps, os.path.join(a.save, v))


if __name__ == "__main__":
    main()
