"""Validate the adherence checker on the generator's own images.

Renders N scenes of every split (seed fixed) at 128x128 (and --res), scores each against
its caption and prints the adherence rate, which must be 1.0.  With --blur S it also
scores copies blurred by a Gaussian of sigma S px plus N(0, 6) noise, to show how much
degradation the thresholds tolerate.  With --vae DIR it also scores the images after a
round trip through the VAE of the model folder DIR (encode to the posterior mean, decode):
the adherence a perfect MMDiT could reach with that VAE (--split picks the scenes; --shape and
--size keep only scenes of that shape / size; the round trip through a posterior sample, which
is what the MMDiT is trained to produce, is scored too).

    python validate_checker.py --n 1000 --blur 0.7 1.0
    python validate_checker.py --n 500 --split heldout --vae ../../models/tiny-sd3
    python validate_checker.py --n 100 --seed 11 --shape star --size small --vae ../../models/tiny-sd3
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import adherence  # noqa: E402
import shapes  # noqa: E402


def blur(img, s):
    r = int(3 * s) + 1
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
    k /= k.sum()
    H, W = img.shape[:2]
    p = np.pad(img.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="edge")
    y = sum(k[i] * p[i:i + H] for i in range(2 * r + 1))
    return sum(k[i] * y[:, i:i + W] for i in range(2 * r + 1))


def vae_round_trip(folder, imgs):
    """uint8 [N, H, W, 3] -> (the images encoded to the posterior mean and decoded by folder/vae, the same through a
    posterior sample with a fixed seed)."""
    import torch
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae"), torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    u8 = lambda y: ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # noqa: E731
    mean, smp = [], []
    with torch.no_grad():
        for i in range(0, len(imgs), 50):
            x = torch.from_numpy(imgs[i:i + 50]).permute(0, 3, 1, 2).float() / 127.5 - 1
            post = vae.encode(x).latent_dist
            mean.append(u8(vae.decode(post.mean).sample))
            smp.append(u8(vae.decode(post.sample(generator=g)).sample))
    return np.concatenate(mean), np.concatenate(smp)


def select_scenes(seed, n, split, shape=None, size=None):
    """n scenes of the split, only those of the given shape / size name when set (drawn from a larger sample)."""
    if shape is None and size is None:
        return shapes.sample_scenes(seed, n, split)
    sc = shapes.sample_scenes(seed, 40 * n, split)
    keep = np.ones(len(sc["shape"]), dtype=bool)
    if shape is not None:
        keep &= sc["shape"] == shapes.SHAPE_IDX[shape]
    if size is not None:
        keep &= sc["size"] == shapes.SIZE_IDX[size]
    sel = np.flatnonzero(keep)[:n]
    if len(sel) < n:
        raise SystemExit("only %d scenes of that kind among %d sampled" % (len(sel), 40 * n))
    return {k: v[sel] for k, v in sc.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--res", type=int, nargs="*", default=[128])
    ap.add_argument("--blur", type=float, nargs="*", default=[])
    ap.add_argument("--split", default="all", choices=["all", "train", "heldout"])
    ap.add_argument("--vae", default=None, help="model folder whose vae/ makes the round trip")
    ap.add_argument("--shape", default=None, choices=list(shapes.SHAPE_IDX), help="only scenes of this shape")
    ap.add_argument("--size", default=None, choices=list(shapes.SIZE_IDX), help="only scenes of this size")
    a = ap.parse_args()
    sc = select_scenes(a.seed, a.n, a.split, a.shape, a.size)
    caps = shapes.scene_captions(sc)
    ok = True
    for res in a.res:
        imgs = np.concatenate([shapes.to_uint8(shapes.render(sc, idx=np.arange(i, min(i + 100, a.n)), res=res))
                               for i in range(0, a.n, 100)])
        s = adherence.summarise([adherence.check(im, c) for im, c in zip(imgs, caps)])
        print("ground truth %dx%d: adherence %.3f %s" % (res, res, s["adherence"], s["per_attribute"]))
        ok &= s["adherence"] == 1.0
        rng = np.random.default_rng(0)
        for sig in a.blur:
            b = [np.clip(blur(im, sig * res / 128.0) + rng.normal(0, 6, im.shape), 0, 255).astype(np.uint8)
                 for im in imgs]
            s = adherence.summarise([adherence.check(im, c) for im, c in zip(b, caps)])
            print("  blurred (sigma %.1f px at 128) + noise: adherence %.3f %s" % (sig, s["adherence"], s["per_attribute"]))
        if a.vae:
            for name, rt in zip(("mean", "sample"), vae_round_trip(a.vae, imgs)):
                s = adherence.summarise([adherence.check(im, c) for im, c in zip(rt, caps)])
                print("  VAE round trip (posterior %s): adherence %.3f %s" % (name, s["adherence"], s["per_attribute"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
