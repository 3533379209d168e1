"""Parity fixture for the shipped tiny model: diffusers' StableDiffusion3Pipeline (float32, CPU) on models/tiny-sd3
with a given prompt, negative prompt "" and injected initial noise (torch.randn with a CPU generator), default
settings (28 steps, CFG 5, 128x128, T5 length 256). Writes tests/golden/tiny/parity.safetensors with `noise`,
`latents` (the final denoised latent, model space) and `image` (the decoded image, [-1, 1], unclamped), and
parity.json with the settings. tests/test-tiny-parity.c compares sd3q against it.

    /opt/refenv/bin/python tools/train_tiny/make_parity_fixture.py
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "reference"))
from sd3ref import save_safetensors  # noqa: E402  (our own writer)

PROMPTS = ["two small red circles in the top left on a blue background",
           "a large yellow star in the center on a black background"]


def main():
    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline.from_pretrained(os.path.join(ROOT, "models", "tiny-sd3"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out_dir = os.path.join(ROOT, "tests", "golden", "tiny")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {}
    cases = []
    for i, prompt in enumerate(PROMPTS):
        seed = 1000 + i
        noise = torch.randn((1, 16, 16, 16), generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
        with torch.no_grad():
            lat = pipe(prompt=prompt, negative_prompt="", num_inference_steps=28, guidance_scale=5.0, height=128, width=128,
                       latents=noise.clone(), output_type="latent").images
            vae = pipe.vae
            img = vae.decode(lat / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
        tensors["noise%d" % i] = noise
        tensors["latents%d" % i] = lat.float()
        tensors["image%d" % i] = img.float()
        cases.append({"prompt": prompt, "seed": seed})
    save_safetensors(os.path.join(out_dir, "parity.safetensors"), {k: v.numpy() for k, v in tensors.items()}, dtype="F32")
    import diffusers
    import transformers
    with open(os.path.join(out_dir, "parity.json"), "w") as f:
        json.dump({"model": "models/tiny-sd3", "steps": 28, "guidance": 5.0, "width": 128, "height": 128,
                   "max_sequence_length": 256, "negative_prompt": "", "cases": cases,
                   "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                                "transformers": transformers.__version__}}, f, indent=1)
    print("wrote", out_dir)


if __name__ == "__main__":
    main()
