"""Prompt adherence of the tiny SD3 model over fixed caption sets.

For every caption i of a set: generate one image with seed 1000 + i (CPU generator),
28 Euler steps, CFG --cfg, 128x128, then score it with adherence.check.  Reports the
adherence rate (fraction of captions whose image satisfies every attribute) and the
per-attribute pass rates.

Caption sets (fixed, committed next to this file):
  heldout   captions_heldout.txt - 100 captions, each with a colour x shape pair that
            never occurs in training (the headline number)
  seen      captions_seen.txt    - 100 captions of training combinations
  select    captions_select.txt  - 400 other held-out captions, to choose between candidate weights (so that the
            headline set is measured, not selected on)
  (or the path of any caption file)

    python evaluate.py                                 # both sets, shipped model, CPU
    python evaluate.py --sets heldout --cfg 5 7 --device cuda --model /tmp/export
    python evaluate.py --limit 20 --save /tmp/eval     # quick; keeps the images
    python evaluate.py --vaes /tmp/vae_a /tmp/vae_b    # the same latents decoded by other VAEs as well

With --vaes, each set's latents are generated once and decoded by the model's own VAE and by the vae/ folder of
each DIR (or DIR itself when it holds the VAE's config.json): a comparison of decoders that share the latent space
(a decoder fine-tune keeps the encoder).
"""
import argparse
import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import adherence  # noqa: E402
import sample  # noqa: E402
import tiny_model as tm  # noqa: E402

SETS = {"heldout": os.path.join(HERE, "captions_heldout.txt"),
        "seen": os.path.join(HERE, "captions_seen.txt"),
        "select": os.path.join(HERE, "captions_select.txt")}
SEED0 = 1000


def evaluate(pipe, vaes, captions, cfg, steps=sample.DEFAULT_STEPS, size=128, batch=25, save=None):
    """Generates the captions' latents once and scores their images as decoded by each (name, vae) of vaes (for pipe.vae
    the pipeline's own images). -> [(name, summary, per-image results)]; images saved under save
    (save_vae1, ... for the further decoders)."""
    lat = sample.generate_latents(pipe, captions, [SEED0 + i for i in range(len(captions))], steps, cfg, size, batch)
    runs = []
    for k, (name, vae) in enumerate(vaes):
        imgs = sample.decode_latents(vae, lat)
        res = [adherence.check(im, c) for im, c in zip(imgs, captions)]
        if save:
            sample.save_images(imgs, captions, save + ("_vae%d" % k if k else ""))
        runs.append((name, adherence.summarise(res), res))
    return runs


def load_vae(d, pipe):
    """The AutoencoderKL of folder d (d/vae, or d itself), on the pipeline's device and dtype."""
    from diffusers import AutoencoderKL
    sub = os.path.join(d, "vae")
    vae = AutoencoderKL.from_pretrained(sub if os.path.isdir(sub) else d, torch_dtype=pipe.vae.dtype)
    return vae.to(pipe.vae.device).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=tm.MODEL_DIR)
    ap.add_argument("--sets", nargs="*", default=["heldout", "seen"], help="names of SETS or caption files")
    ap.add_argument("--cfg", type=float, nargs="*", default=[sample.DEFAULT_CFG])
    ap.add_argument("--steps", type=int, default=sample.DEFAULT_STEPS)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--limit", type=int, default=0, help="only the first N captions of each set")
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--save", default=None, help="folder for the images (SET_cfgX subfolders)")
    ap.add_argument("--json", default=None, help="write the summaries here")
    ap.add_argument("--verbose", action="store_true", help="print every failing caption")
    ap.add_argument("--vaes", nargs="*", default=[], help="also decode the same latents with these VAEs")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    pipe = sample.load_pipeline(a.model, a.device)
    vaes = [("model", pipe.vae)] + [(d, load_vae(d, pipe)) for d in a.vaes]
    report = []
    for s in a.sets:
        caps = sample.read_prompts(SETS.get(s, s))
        if a.limit:
            caps = caps[:a.limit]
        for cfg in a.cfg:
            t0 = time.time()
            save = os.path.join(a.save, "%s_cfg%g" % (s, cfg)) if a.save else None
            runs = evaluate(pipe, vaes, caps, cfg, a.steps, a.size, a.batch, save)
            for name, summ, res in runs:
                summ.update(set=s, cfg=cfg, steps=a.steps, size=a.size, seconds=round(time.time() - t0, 1),
                            device=a.device, vae=name)
                report.append(summ)
                print("%-8s cfg %-4g adherence %.3f  %s  (%d captions, %.0fs)%s" % (
                    s, cfg, summ["adherence"], " ".join("%s %.2f" % kv for kv in summ["per_attribute"].items()),
                    summ["n"], summ["seconds"], "" if len(runs) == 1 else "  vae " + name), flush=True)
                if a.verbose:
                    for c, r in zip(caps, res):
                        if not r["ok"]:
                            print("   FAIL %-40s %s" % (",".join(k for k, v in r["attrs"].items() if not v), c))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
