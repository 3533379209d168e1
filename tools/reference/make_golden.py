"""Write the golden fixtures under tests/golden/ from the sd3ref reference.

usage: /usr/bin/python3 tools/reference/make_golden.py [--out tests/golden]

Needs <out>/tiny_tokenizer_ids.json and <out>/pipeline/tokenizer*/ from make_tokenizers.py
(already in the repository; only make_tokenizers.py needs transformers/sentencepiece).

Deterministic: every random tensor comes from numpy.random.default_rng(seed) with
the seeds listed in SEEDS; weights are rounded to their storage dtype first and the
reference runs in float64 on exactly the stored values; outputs are stored as F32.
Works with Debian's python3 (torch 1.13, numpy 1.24) and /opt/refenv (torch 2.5).
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep tools/reference free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd3ref as R  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

SEEDS = {
    "sd3_single_f16": 101,
    "sd3_diffusers_f32_nonsquare": 102,
    "sd35l_bf16": 103,
    "sd35m_diffusers_bf16": 104,
    "sampler": 201,
    "clip_l": 301,
    "clip_g": 302,
    "t5": 303,
    "vae": 304,
    "pipeline_mmdit": 305,
    "vae_inputs": 306,
    "pipeline_noise": 307,
}

MMDIT_CASES = [
    # name, dtype, layout, qk_norm, dual layers, latent (h, w), batch
    ("sd3_single_f16", "F16", "single", False, [], (8, 8), 2),
    ("sd3_diffusers_f32_nonsquare", "F32", "diffusers", False, [], (6, 10), 2),
    ("sd35l_bf16", "BF16", "single", True, [], (8, 8), 1),
    ("sd35m_diffusers_bf16", "BF16", "diffusers", True, [0], (10, 6), 2),
]
MMDIT_DIMS = dict(hidden=128, depth=2, patch=2, channels=16, pos_grid=12, context_dim=48,
                  pooled_dim=40, mlp_ratio=4, context_len=7)

SCHEDULES = [(1, 3.0), (2, 3.0), (28, 3.0), (50, 3.0), (30, 1.0), (4, 2.5)]
SAMPLER = dict(steps=3, shift=3.0, guidance=4.5, model="sd3_single_f16")

SINGLE_PREFIX = "model.diffusion_model."

# phase 2: tiny text encoders, VAE and a whole pipeline.  Widths are multiples of 64
# because single-file CLIPs carry no config (heads = width / 64).
CLIP_L = dict(width=64, layers=2, mlp=256, act="quick_gelu")
CLIP_G = dict(width=128, layers=2, mlp=512, act="gelu")
T5 = dict(d_model=256, d_kv=32, heads=4, d_ff=256, layers=2, spare_rows=16)
# channels fall instead of rise (SD3: 128, 256, 512, 512) only to keep the files small; both
# directions exercise nin_shortcut (encoder down.1.block.0, decoder up.0.block.0).
VAE = dict(block_out_channels=(64, 32, 32, 32), layers_per_block=2, z_channels=16)
PIPE_MMDIT = dict(hidden=64, depth=2, patch=2, channels=16, pos_grid=8, mlp_ratio=4)
PIPELINE = dict(height=64, width=64, steps=4, guidance=5.0, shift=3.0)
VAE_IMAGE = (32, 48)
SINGLE_FILE = "single_file/sd3_tiny_incl_clips_t5xxlfp8.safetensors"
PREFIX = {"mmdit": "model.diffusion_model.", "vae": "first_stage_model.",
          "clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
          "t5": "text_encoders.t5xxl.transformer."}
T5_F8 = ("SelfAttention.q.", "SelfAttention.k.", "SelfAttention.v.", "SelfAttention.o.", "DenseReluDense.")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def f32(t):
    """torch/numpy -> numpy float32 (for storing outputs)."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def sincos_2d(dim, grid):
    """A 2-D sin/cos table [1, grid*grid, dim]: first half encodes the column,
    second half the row, each as [sin | cos] over dim/4 frequencies."""
    q = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(q, dtype=np.float64) / q)
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    def enc(pos):
        a = pos.reshape(-1)[:, None] * omega[None]
        return np.concatenate([np.sin(a), np.cos(a)], axis=1)
    return np.concatenate([enc(xs), enc(ys)], axis=1)[None]


class Gen:
    """Weight generator: normal(0, gain/sqrt(fan_in)) matrices, small biases."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.W = {}

    def normal(self, shape, std):
        return self.rng.standard_normal(shape) * std

    def linear(self, name, out, inp, gain=1.0, bias=0.05):
        self.W[name + ".weight"] = self.normal((out, inp), gain / math.sqrt(inp))
        if bias is not None:
            self.W[name + ".bias"] = self.normal((out,), bias)

    def vector(self, name, n, mean=1.0, std=0.2):
        self.W[name] = mean + self.normal((n,), std)


def gen_mmdit(seed, qk_norm, dual, hidden, depth, patch, channels, pos_grid, context_dim, pooled_dim, mlp_ratio,
              **_):
    g = Gen(seed)
    D, F = hidden, hidden * mlp_ratio
    g.W["pos_embed"] = sincos_2d(D, pos_grid)
    g.W["x_embedder.proj.weight"] = g.normal((D, channels, patch, patch), 1.0 / math.sqrt(channels * patch * patch))
    g.W["x_embedder.proj.bias"] = g.normal((D,), 0.05)
    g.linear("t_embedder.mlp.0", D, 256)
    g.linear("t_embedder.mlp.2", D, D)
    g.linear("y_embedder.mlp.0", D, pooled_dim)
    g.linear("y_embedder.mlp.2", D, D)
    # small context tokens: makes the LayerNorm eps (1e-6) visible in the outputs
    g.linear("context_embedder", D, context_dim, gain=0.05, bias=0.02)
    for i in range(depth):
        last = i == depth - 1
        for s in ("context_block", "x_block"):
            pre = "joint_blocks.%d.%s." % (i, s)
            pre_only = last and s == "context_block"
            nmod = 2 if pre_only else (9 if (s == "x_block" and i in dual) else 6)
            g.linear(pre + "adaLN_modulation.1", nmod * D, D, gain=0.7, bias=0.1)
            attns = ["attn", "attn2"] if (s == "x_block" and i in dual) else ["attn"]
            for a in attns:
                g.linear(pre + a + ".qkv", 3 * D, D)
                if qk_norm:
                    g.vector(pre + a + ".ln_q.weight", R.HEAD_DIM)
                    g.vector(pre + a + ".ln_k.weight", R.HEAD_DIM)
                if not pre_only:
                    g.linear(pre + a + ".proj", D, D)
            if not pre_only:
                g.linear(pre + "mlp.fc1", F, D)
                g.linear(pre + "mlp.fc2", D, F)
    g.linear("final_layer.adaLN_modulation.1", 2 * D, D, gain=0.7, bias=0.1)
    g.linear("final_layer.linear", patch * patch * channels, D)
    return g.W


def model_index(components):
    idx = {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": "0.31.0"}
    for name in ("scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
                 "tokenizer_3", "transformer", "vae"):
        idx[name] = components.get(name, [None, None])
    return idx


SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.31.0",
                    "num_train_timesteps": 1000, "shift": 3.0}


def save_mmdit(folder, W, dtype, layout, sample_size):
    """Store original-named weights W (already rounded) in the given layout."""
    if layout == "single":
        R.save_safetensors(os.path.join(folder, "model.safetensors"),
                           {SINGLE_PREFIX + k: W[k] for k in sorted(W)}, dtype)
    else:
        Dsd = R.mmdit_to_diffusers(W)
        write_json(os.path.join(folder, "model_index.json"), model_index({
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "transformer": ["diffusers", "SD3Transformer2DModel"]}))
        write_json(os.path.join(folder, "scheduler", "scheduler_config.json"), SCHEDULER_CONFIG)
        write_json(os.path.join(folder, "transformer", "config.json"), R.mmdit_diffusers_config(W, sample_size))
        R.save_safetensors(os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"),
                           {k: Dsd[k] for k in sorted(Dsd)}, dtype)


def load_mmdit(folder):
    """Read a case folder back (either layout) -> original-named float64 torch dict."""
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return R.to_torch64(R.load_safetensors(single), SINGLE_PREFIX)
    sd = R.load_safetensors(os.path.join(folder, "transformer", "diffusion_pytorch_model.safetensors"))
    return R.to_torch64(R.mmdit_from_diffusers(sd))


# --------------------------------------------------------------------------
# phase 1: MMDiT, schedule, sampler
# --------------------------------------------------------------------------

def make_mmdit(out):
    for name, dtype, layout, qk, dual, (h, w), B in MMDIT_CASES:
        d = MMDIT_DIMS
        W = {k: R.round_to_dtype(v, dtype) for k, v in gen_mmdit(SEEDS[name], qk, dual, **d).items()}
        folder = os.path.join(out, "mmdit", name)
        save_mmdit(folder, W, dtype, layout, sample_size=8)
        Wt = load_mmdit(folder)  # run on what was written (checks the writer too)
        assert set(Wt) == set(W) and all(np.array_equal(Wt[k].numpy(), W[k]) for k in W)

        rng = np.random.default_rng(SEEDS[name] + 1000)
        x = f32(rng.standard_normal((B, d["channels"], h, w)))
        ctx = f32(rng.standard_normal((B, d["context_len"], d["context_dim"])))
        pooled = f32(rng.standard_normal((B, d["pooled_dim"])))
        sig = rng.uniform(0.02, 0.98, size=B)
        t = f32(1000.0 * sig)
        tr = {}
        o = R.mmdit_forward(Wt, torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx),
                            torch.from_numpy(pooled), trace=tr)
        io = {"x": x, "context": ctx, "pooled": pooled, "timestep": t, "out": f32(o)}
        io.update({k: f32(v) for k, v in tr.items()})
        R.save_safetensors(os.path.join(folder, "io.safetensors"), io, "F32")
        print("mmdit/%s: out rms %.4f" % (name, float(o.pow(2).mean().sqrt())))


def make_schedule(out):
    scheds = []
    for n, shift in SCHEDULES:
        s, t = R.flow_sigmas_f32(n, shift)
        ref = R.flow_sigmas(n, shift)
        assert np.abs(ref - s).max() < 1e-6
        scheds.append({"steps": n, "shift": shift, "sigmas": [float(v) for v in s],
                       "timesteps": [float(v) for v in t]})
    write_json(os.path.join(out, "schedule.json"), {
        "comment": "FlowMatchEulerDiscreteScheduler(shift).set_timesteps(steps): float32 sigmas (steps+1, "
                   "trailing 0) and model timesteps = float32(sigma)*1000 in float32. Values are exact "
                   "float32 numbers written as decimal doubles.",
        "schedules": scheds})


def make_sampler(out):
    d = MMDIT_DIMS
    W = load_mmdit(os.path.join(out, "mmdit", SAMPLER["model"]))
    rng = np.random.default_rng(SEEDS["sampler"])
    noise = f32(rng.standard_normal((1, d["channels"], 8, 8)))
    cc = f32(rng.standard_normal((1, d["context_len"], d["context_dim"])))
    cp = f32(rng.standard_normal((1, d["pooled_dim"])))
    uc = f32(rng.standard_normal((1, d["context_len"], d["context_dim"])))
    up = f32(rng.standard_normal((1, d["pooled_dim"])))
    sigmas, _ = R.flow_sigmas_f32(SAMPLER["steps"], SAMPLER["shift"])
    T = torch.from_numpy
    tr = {}
    lat = R.sample_euler_cfg(lambda x, t, c, p: R.mmdit_forward(W, x, t, c, p), T(noise), sigmas,
                             (T(cc), T(cp)), (T(uc), T(up)), SAMPLER["guidance"], trace=tr)
    io = {"noise": noise, "cond_context": cc, "cond_pooled": cp, "uncond_context": uc, "uncond_pooled": up,
          "sigmas": sigmas, "latents": f32(lat)}
    io.update({k: f32(v) for k, v in tr.items()})
    folder = os.path.join(out, "sampler")
    os.makedirs(folder, exist_ok=True)
    R.save_safetensors(os.path.join(folder, "io.safetensors"), io, "F32")
    write_json(os.path.join(folder, "config.json"), dict(SAMPLER, model="../mmdit/" + SAMPLER["model"],
                                                         batch_order=["uncond", "cond"]))


# --------------------------------------------------------------------------
# phase 2: CLIP, T5, VAE, pipeline
# --------------------------------------------------------------------------

def gen_clip(seed, vocab, width, layers, mlp, projection, **_):
    g = Gen(seed)
    p = "text_model."
    g.W[p + "embeddings.token_embedding.weight"] = g.normal((vocab, width), 0.3)
    g.W[p + "embeddings.position_embedding.weight"] = g.normal((77, width), 0.1)
    for n in range(layers):
        q = p + "encoder.layers.%d." % n
        g.vector(q + "layer_norm1.weight", width)
        g.vector(q + "layer_norm1.bias", width, 0.0, 0.05)
        for t in "qkv":
            g.linear(q + "self_attn.%s_proj" % t, width, width, gain=1.5 if t in "qk" else 1.0)
        g.linear(q + "self_attn.out_proj", width, width)
        g.vector(q + "layer_norm2.weight", width)
        g.vector(q + "layer_norm2.bias", width, 0.0, 0.05)
        g.linear(q + "mlp.fc1", mlp, width, gain=2.0)
        g.linear(q + "mlp.fc2", width, mlp)
    g.vector(p + "final_layer_norm.weight", width)
    g.vector(p + "final_layer_norm.bias", width, 0.0, 0.05)
    if projection == "random":
        g.linear("text_projection", width, width, bias=None)
    elif projection == "identity":
        g.W["text_projection.weight"] = np.eye(width)
    return g.W


def gen_t5(seed, rows, d_model, d_kv, heads, d_ff, layers, **_):
    g = Gen(seed)
    inner = heads * d_kv
    g.W["shared.weight"] = g.normal((rows, d_model), 0.05)  # small: makes the RMSNorm eps visible
    for n in range(layers):
        a = "encoder.block.%d.layer.0." % n
        g.vector(a + "layer_norm.weight", d_model)
        for t in "qkv":
            g.linear(a + "SelfAttention." + t, inner, d_model, gain=0.6 if t in "qk" else 1.0, bias=None)
        g.linear(a + "SelfAttention.o", d_model, inner, bias=None)
        if n == 0:
            g.W[a + "SelfAttention.relative_attention_bias.weight"] = g.normal((32, heads), 1.0)
        f = "encoder.block.%d.layer.1." % n
        g.vector(f + "layer_norm.weight", d_model)
        g.linear(f + "DenseReluDense.wi_0", d_ff, d_model, gain=2.0, bias=None)
        g.linear(f + "DenseReluDense.wi_1", d_ff, d_model, bias=None)
        g.linear(f + "DenseReluDense.wo", d_model, d_ff, bias=None)
    g.vector("encoder.final_layer_norm.weight", d_model)
    return g.W


def gen_vae(seed, block_out_channels, layers_per_block, z_channels, **_):
    """Original (first_stage_model.*-less) names."""
    g = Gen(seed)
    W = g.W
    boc = list(block_out_channels)

    def conv(name, cout, cin, k=3, gain=1.0):
        W[name + ".weight"] = g.normal((cout, cin, k, k), gain / math.sqrt(cin * k * k))
        W[name + ".bias"] = g.normal((cout,), 0.05)

    def norm(name, c):
        g.vector(name + ".weight", c, 1.0, 0.1)
        g.vector(name + ".bias", c, 0.0, 0.1)

    def resnet(name, cin, cout):
        norm(name + ".norm1", cin)
        conv(name + ".conv1", cout, cin)
        norm(name + ".norm2", cout)
        conv(name + ".conv2", cout, cout)
        if cin != cout:
            conv(name + ".nin_shortcut", cout, cin, k=1)

    def mid(pre, c):
        resnet(pre + ".mid.block_1", c, c)
        norm(pre + ".mid.attn_1.norm", c)
        for t in ("q", "k", "v", "proj_out"):
            conv(pre + ".mid.attn_1." + t, c, c, k=1, gain=1.5 if t in "qk" else 1.0)
        resnet(pre + ".mid.block_2", c, c)

    conv("encoder.conv_in", boc[0], 3, gain=0.1)  # small: makes the GroupNorm eps visible
    cin = boc[0]
    for i, c in enumerate(boc):
        for j in range(layers_per_block):
            resnet("encoder.down.%d.block.%d" % (i, j), cin if j == 0 else c, c)
        cin = c
        if i != len(boc) - 1:
            conv("encoder.down.%d.downsample.conv" % i, c, c)
    mid("encoder", boc[-1])
    norm("encoder.norm_out", boc[-1])
    conv("encoder.conv_out", 2 * z_channels, boc[-1])

    conv("decoder.conv_in", boc[-1], z_channels, gain=0.1)
    mid("decoder", boc[-1])
    cin = boc[-1]
    for L in reversed(range(len(boc))):
        c = boc[L]
        for j in range(layers_per_block + 1):
            resnet("decoder.up.%d.block.%d" % (L, j), cin if j == 0 else c, c)
        cin = c
        if L != 0:
            conv("decoder.up.%d.upsample.conv" % L, c, c)
    norm("decoder.norm_out", boc[0])
    conv("decoder.conv_out", 3, boc[0], gain=0.5)
    return W


def clip_config(vocab, width, layers, mlp, act, **_):
    return {"architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model",
            "vocab_size": vocab, "hidden_size": width, "intermediate_size": mlp, "projection_dim": width,
            "num_hidden_layers": layers, "num_attention_heads": width // R.HEAD_DIM, "max_position_embeddings": 77,
            "hidden_act": act, "layer_norm_eps": 1e-05, "attention_dropout": 0.0, "dropout": 0.0,
            "initializer_factor": 1.0, "initializer_range": 0.02, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1, "torch_dtype": "float16", "transformers_version": "4.46.3"}


def t5_config(rows, d_model, d_kv, heads, d_ff, layers, **_):
    return {"architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": rows, "d_model": d_model,
            "d_kv": d_kv, "d_ff": d_ff, "num_layers": layers, "num_heads": heads,
            "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128, "dropout_rate": 0.0,
            "layer_norm_epsilon": 1e-06, "initializer_factor": 1.0, "feed_forward_proj": "gated-gelu",
            "dense_act_fn": "gelu_new", "is_gated_act": True, "is_encoder_decoder": True, "use_cache": False,
            "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0,
            "torch_dtype": "float16", "transformers_version": "4.46.3"}


def vae_config(block_out_channels, layers_per_block, z_channels, **_):
    n = len(block_out_channels)
    return {"_class_name": "AutoencoderKL", "_diffusers_version": "0.31.0", "act_fn": "silu",
            "block_out_channels": list(block_out_channels), "down_block_types": ["DownEncoderBlock2D"] * n,
            "up_block_types": ["UpDecoderBlock2D"] * n, "in_channels": 3, "out_channels": 3,
            "latent_channels": z_channels, "layers_per_block": layers_per_block, "norm_num_groups": 32,
            "sample_size": 64, "scaling_factor": R.VAE_SCALE, "shift_factor": R.VAE_SHIFT, "use_quant_conv": False,
            "use_post_quant_conv": False, "force_upcast": True, "mid_block_add_attention": True,
            "latents_mean": None, "latents_std": None}


def phase2_weights(tok):
    """All phase-2 weights, rounded to their storage dtype (float64 numpy dicts)."""
    r16 = lambda W: {k: R.round_to_dtype(v, "F16") for k, v in W.items()}
    clip_l = r16(gen_clip(SEEDS["clip_l"], tok["clip_vocab_size"], projection="identity", **CLIP_L))
    clip_g = r16(gen_clip(SEEDS["clip_g"], tok["clip_vocab_size"], projection="random", **CLIP_G))
    t5 = gen_t5(SEEDS["t5"], tok["t5_vocab_size"] + T5["spare_rows"], **T5)
    t5 = {k: R.round_to_dtype(v, "F8_E4M3" if any(f in k for f in T5_F8) else "F16") for k, v in t5.items()}
    vae = r16(gen_vae(SEEDS["vae"], **VAE))
    mm = r16(gen_mmdit(SEEDS["pipeline_mmdit"], False, [], context_dim=T5["d_model"],
                       pooled_dim=CLIP_L["width"] + CLIP_G["width"], **PIPE_MMDIT))
    return {"clip_l": clip_l, "clip_g": clip_g, "t5": t5, "vae": vae, "mmdit": mm}


def write_phase2_weights(out, W, tok):
    pipe = os.path.join(out, "pipeline")
    # diffusers layout (all F16)
    write_json(os.path.join(pipe, "model_index.json"), model_index({
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "tokenizer_3": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "SD3Transformer2DModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    write_json(os.path.join(pipe, "scheduler", "scheduler_config.json"), SCHEDULER_CONFIG)
    for sub, key, cfg in (("text_encoder", "clip_l", CLIP_L), ("text_encoder_2", "clip_g", CLIP_G)):
        write_json(os.path.join(pipe, sub, "config.json"), clip_config(tok["clip_vocab_size"], **cfg))
        R.save_safetensors(os.path.join(pipe, sub, "model.safetensors"), W[key], "F16")
    # T5 as two shards + index, like the real text_encoder_3
    t5dir = os.path.join(pipe, "text_encoder_3")
    write_json(os.path.join(t5dir, "config.json"), t5_config(len(W["t5"]["shared.weight"]), **T5))
    names = list(W["t5"])
    shards = [names[:len(names) // 2], names[len(names) // 2:]]
    wmap, total = {}, 0
    for i, part in enumerate(shards):
        fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        R.save_safetensors(os.path.join(t5dir, fn), {k: W["t5"][k] for k in part}, "F16")
        for k in part:
            wmap[k] = fn
            total += 2 * W["t5"][k].size
    write_json(os.path.join(t5dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": dict(sorted(wmap.items()))})
    write_json(os.path.join(pipe, "transformer", "config.json"),
               R.mmdit_diffusers_config(W["mmdit"], sample_size=PIPELINE["height"] // 8))
    Dsd = R.mmdit_to_diffusers(W["mmdit"])
    R.save_safetensors(os.path.join(pipe, "transformer", "diffusion_pytorch_model.safetensors"),
                       {k: Dsd[k] for k in sorted(Dsd)}, "F16")
    write_json(os.path.join(pipe, "vae", "config.json"), vae_config(**VAE))
    Vd = R.vae_to_diffusers(W["vae"])
    R.save_safetensors(os.path.join(pipe, "vae", "diffusion_pytorch_model.safetensors"),
                       {k: Vd[k] for k in sorted(Vd)}, "F16")

    # one original single file with everything; T5 Linear weights as F8_E4M3
    single = {}
    for comp in ("mmdit", "vae", "clip_l", "clip_g", "t5"):
        for k, v in W[comp].items():
            if comp == "clip_l" and k == "text_projection.weight":
                continue  # CLIP-L projection is not used by SD3 (spec 4.1)
            dt = "F8_E4M3" if comp == "t5" and any(f in k for f in T5_F8) else "F16"
            single[PREFIX[comp] + k] = (v, dt)
    # the released files carry the tied T5 embedding twice (diffusers' loader needs both)
    single[PREFIX["t5"] + "encoder.embed_tokens.weight"] = (W["t5"]["shared.weight"], "F16")
    R.save_safetensors(os.path.join(out, SINGLE_FILE), {k: single[k] for k in sorted(single)}, "F16")


def load_single_component(out, comp):
    """Read one component back from the single file -> float64 torch dict without prefix."""
    return R.to_torch64(R.load_safetensors(os.path.join(out, SINGLE_FILE)), PREFIX[comp])


def make_phase2(out):
    path = os.path.join(out, "tiny_tokenizer_ids.json")
    if not os.path.exists(path):
        sys.exit("tests/golden/tiny_tokenizer_ids.json missing: run tools/reference/make_tokenizers.py first")
    with open(path) as f:
        tok = json.load(f)
    W = phase2_weights(tok)
    write_phase2_weights(out, W, tok)
    # everything below runs on what was written to the single file
    Wt = {c: load_single_component(out, c) for c in PREFIX}
    Wt["clip_l"]["text_projection.weight"] = torch.eye(CLIP_L["width"], dtype=torch.float64)
    assert torch.equal(Wt["t5"].pop("encoder.embed_tokens.weight"), Wt["t5"]["shared.weight"])
    for c in PREFIX:
        assert set(Wt[c]) == set(W[c]) and all(np.array_equal(Wt[c][k].numpy(), W[c][k]) for k in W[c]), c
    single = os.path.join("..", SINGLE_FILE)

    # CLIP
    ids = {k: torch.tensor(tok["clip_fixture"][k]) for k in ("clip_l", "clip_g")}
    io = {}
    for key, act in (("clip_l", "quick_gelu"), ("clip_g", "gelu")):
        o = R.clip_forward(Wt[key], ids[key], act)
        io[key + ".ids"] = ids[key].numpy()
        io[key + ".penultimate"] = f32(o["penultimate"])
        io[key + ".last_hidden"] = f32(o["last_hidden"])
        if key == "clip_l":
            io[key + ".pooled"] = f32(o["pooled"])
        else:
            io[key + ".pooled"] = f32(o["projected"])
            io[key + ".pooled_unprojected"] = f32(o["pooled"])
    R.save_safetensors(os.path.join(out, "clip", "io.safetensors"), io)
    write_json(os.path.join(out, "clip", "config.json"), {
        "texts": tok["clip_fixture"]["texts"],
        "clip_l": dict(CLIP_L, heads=CLIP_L["width"] // 64, diffusers="../pipeline/text_encoder",
                       single_file=single, prefix=PREFIX["clip_l"], pad="<|endoftext|>"),
        "clip_g": dict(CLIP_G, heads=CLIP_G["width"] // 64, diffusers="../pipeline/text_encoder_2",
                       single_file=single, prefix=PREFIX["clip_g"], pad="!"),
        "vocab_size": tok["clip_vocab_size"], "bos": tok["clip_vocab_size"] - 2, "eos": tok["clip_vocab_size"] - 1})

    # T5
    ids = torch.tensor(tok["t5_fixture"]["t5"])
    tr = {}
    h = R.t5_forward(Wt["t5"], ids, trace=tr)
    n = ids.shape[1]
    io = {"ids": ids.numpy(), "last_hidden": f32(h),
          "rel_bucket": R.t5_relative_bucket(torch.arange(-(n - 1), n)).numpy()}
    R.save_safetensors(os.path.join(out, "t5", "io.safetensors"), io)
    write_json(os.path.join(out, "t5", "config.json"), {
        "texts": tok["t5_fixture"]["texts"], "length": n, **T5, "vocab_rows": len(W["t5"]["shared.weight"]),
        "diffusers": "../pipeline/text_encoder_3", "single_file": single, "prefix": PREFIX["t5"],
        "single_file_f8_e4m3": "Linear weights (q, k, v, o, wi_0, wi_1, wo); the rest F16"})

    # VAE
    rng = np.random.default_rng(SEEDS["vae_inputs"])
    H, Wd = VAE_IMAGE
    z = f32(rng.standard_normal((1, VAE["z_channels"], H // 8, Wd // 8)) * 0.8)
    img = f32(rng.uniform(-1.0, 1.0, (1, 3, H, Wd)))
    tr = {}
    dec = R.vae_decode(Wt["vae"], torch.from_numpy(z), trace=tr)
    mean, logvar = R.vae_encode(Wt["vae"], torch.from_numpy(img), trace=tr)
    io = {"z": z, "image": f32(dec), "image_in": img, "mean": f32(mean), "logvar": f32(logvar),
          "latent_scaled": f32((mean - R.VAE_SHIFT) * R.VAE_SCALE)}
    io.update({k: f32(v) for k, v in tr.items() if v[0].numel() <= 32 * 16 * 24})  # skip full-res ones
    R.save_safetensors(os.path.join(out, "vae", "io.safetensors"), io)
    write_json(os.path.join(out, "vae", "config.json"), dict(
        VAE, diffusers="../pipeline/vae", single_file=single, prefix=PREFIX["vae"], scaling_factor=R.VAE_SCALE,
        shift_factor=R.VAE_SHIFT, groups=32, eps=1e-6))

    # pipeline
    P = tok["pipeline"]
    ids = {k: tuple(torch.tensor([P[k][e]]) for e in ("clip_l", "clip_g", "t5")) for k in ("cond", "uncond")}
    rng = np.random.default_rng(SEEDS["pipeline_noise"])
    noise = f32(rng.standard_normal((1, 16, PIPELINE["height"] // 8, PIPELINE["width"] // 8)))
    tr = {}
    image = R.sd3_pipeline(Wt["mmdit"], Wt["vae"], Wt["clip_l"], Wt["clip_g"], Wt["t5"], ids,
                           torch.from_numpy(noise), PIPELINE["steps"], PIPELINE["shift"], PIPELINE["guidance"],
                           trace=tr)
    io = {"noise": noise, "image": f32(image)}
    for k in ("cond", "uncond"):
        for e, t in zip(("clip_l", "clip_g", "t5"), ids[k]):
            io["%s_%s_ids" % (k, e)] = t.numpy()
    io.update({k: f32(v) for k, v in tr.items()})
    R.save_safetensors(os.path.join(out, "pipeline", "io.safetensors"), io)
    write_json(os.path.join(out, "pipeline", "golden.json"), dict(
        PIPELINE, prompt=P["prompt"], negative_prompt=P["negative_prompt"],
        max_sequence_length=P["max_sequence_length"], batch_order=["uncond", "cond"], single_file=single))
    print("pipeline: image range [%.3f, %.3f], latents rms %.3f" % (float(image.min()), float(image.max()),
                                                                     float(tr["latents"].pow(2).mean().sqrt())))


# --------------------------------------------------------------------------
# MANIFEST
# --------------------------------------------------------------------------

# what make_golden.py / make_tokenizers.py write (other files under tests/golden, e.g.
# tokenizers/ from the C tokenizer work, are not covered by this MANIFEST)
OWN = ("mmdit", "sampler", "schedule.json", "clip", "t5", "vae", "single_file", "pipeline", "tiny_tokenizer_ids.json")


def write_manifest(out):
    files = []
    for top in OWN:
        p0 = os.path.join(out, top)
        paths = [p0] if os.path.isfile(p0) else [os.path.join(r, n) for r, _, ns in os.walk(p0) for n in ns]
        for p in paths:
            with open(p, "rb") as f:
                files.append((os.path.relpath(p, out), os.path.getsize(p), hashlib.sha256(f.read()).hexdigest()))
    files.sort()
    lines = [
        "sd3q golden fixtures (generated; do not edit by hand)",
        "generator: tools/reference/make_golden.py (reference: tools/reference/sd3ref.py)",
        "regenerate: [/opt/refenv/bin/python tools/reference/make_tokenizers.py  (tokenizer files, tiny_tokenizer_ids.json)]",
        "            /usr/bin/python3 tools/reference/make_golden.py  (or /opt/refenv/bin/python: same bytes)",
        "verify against diffusers: /opt/refenv/bin/python tools/reference/check_against_diffusers.py",
        "python %s, torch %s, numpy %s" % (sys.version.split()[0], torch.__version__, np.__version__),
        "seeds: " + ", ".join("%s=%d" % kv for kv in SEEDS.items()),
        "note: all random values come from numpy default_rng; outputs are float64 results stored as F32; "
        "python3.11/torch 2.5.1/numpy 1.26.4 and Debian python3/torch 1.13/numpy 1.24.2 wrote identical files",
        "total bytes of the files below: %d" % sum(s for _, s, _ in files),
        "",
        "sha256  bytes  path",
    ]
    lines += ["%s  %d  %s" % (h, s, p) for p, s, h in files]
    with open(os.path.join(out, "MANIFEST"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "golden"))
    args = ap.parse_args()
    out = args.out
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    # tokenizer files and tiny_tokenizer_ids.json come from make_tokenizers.py and are kept
    for sub in ("mmdit", "sampler", "clip", "t5", "vae", "single_file", "pipeline/scheduler", "pipeline/text_encoder",
                "pipeline/text_encoder_2", "pipeline/text_encoder_3", "pipeline/transformer", "pipeline/vae"):
        shutil.rmtree(os.path.join(out, sub), ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    make_mmdit(out)
    make_schedule(out)
    make_sampler(out)
    make_phase2(out)
    write_manifest(out)


if __name__ == "__main__":
    main()
