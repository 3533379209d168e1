"""Generate images with the tiny SD3 model through diffusers' StableDiffusion3Pipeline.

Image i uses the prompt i and seed (--seed + i) for a CPU torch.Generator, so results are
reproducible across devices (the initial noise is drawn on the CPU).

    python sample.py --prompts "a large red circle in the center on a blue background" \
                     "two small white stars in the top left on a black background" --out /tmp/s
    python sample.py --prompts-file captions_heldout.txt --out /tmp/s --cfg 5
Writes OUT/00000.png ... and OUT/captions.txt ("file<TAB>caption"), the format that
adherence.py reads.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tiny_model as tm  # noqa: E402

DEFAULT_STEPS = 28
DEFAULT_CFG = 5.0


def load_pipeline(model_dir=tm.MODEL_DIR, device="cpu", dtype=torch.float32):
    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline.from_pretrained(model_dir, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@torch.no_grad()
def generate(pipe, prompts, seeds, steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, size=128, batch=16):
    """-> uint8 array [N, size, size, 3]."""
    out = []
    for i in range(0, len(prompts), batch):
        p = prompts[i:i + batch]
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + batch]]
        img = pipe(prompt=p, num_inference_steps=steps, guidance_scale=cfg, height=size, width=size,
                   generator=gens, output_type="np").images
        out.append((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


@torch.no_grad()
def generate_latents(pipe, prompts, seeds, steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, size=128, batch=16):
    """The denoised latents (before the VAE's shift and scale are undone) -> float32 tensor [N, 16, size/8, size/8]
    on the CPU; decode them with decode_latents, with this or another VAE of the same latent space."""
    out = []
    for i in range(0, len(prompts), batch):
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds[i:i + batch]]
        out.append(pipe(prompt=prompts[i:i + batch], num_inference_steps=steps, guidance_scale=cfg, height=size,
                        width=size, generator=gens, output_type="latent").images.float().cpu())
    return torch.cat(out)


@torch.no_grad()
def decode_latents(vae, lat, batch=50):
    """Latents from generate_latents -> uint8 array [N, H, W, 3], as the pipeline's own decoding and generate()."""
    dev, dt = vae.device, vae.dtype
    out = []
    for i in range(0, len(lat), batch):
        z = lat[i:i + batch].to(dev, dt) / vae.config.scaling_factor + vae.config.shift_factor
        x = (vae.decode(z, return_dict=False)[0].float() / 2 + 0.5).clamp(0, 1)
        out.append((x.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8))
    return np.concatenate(out)


def read_prompts(path):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]


def save_images(imgs, prompts, out):
    from PIL import Image
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "captions.txt"), "w") as f:
        for i, (im, p) in enumerate(zip(imgs, prompts)):
            name = "%05d.png" % i
            Image.fromarray(im).save(os.path.join(out, name))
            f.write("%s\t%s\n" % (name, p))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=tm.MODEL_DIR)
    ap.add_argument("--prompts", nargs="*", default=[])
    ap.add_argument("--prompts-file")
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--cfg", type=float, default=DEFAULT_CFG)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    prompts = list(a.prompts) + (read_prompts(a.prompts_file) if a.prompts_file else [])
    pipe = load_pipeline(a.model, a.device)
    imgs = generate(pipe, prompts, [a.seed + i for i in range(len(prompts))], a.steps, a.cfg, a.size, a.batch)
    save_images(imgs, prompts, a.out)
    print("wrote %d images to %s" % (len(imgs), a.out))


if __name__ == "__main__":
    main()
