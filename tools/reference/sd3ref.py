"""sd3ref: a small, independent PyTorch reference of Stable Diffusion 3.

Written from shared/research/sd3_arch_spec.md (section numbers below refer to it).
Everything here is plain functional PyTorch on float64 tensors, so the outputs can
serve as "truth" for the C implementation.  It runs with torch 1.13 (Debian) and
torch 2.x; it uses no torch-2-only API.  Weight dictionaries use the ORIGINAL
single-file key names without the "model.diffusion_model." prefix.

Contents
  safetensors I/O ....... load_safetensors, save_safetensors, round_to_dtype
                          (F32, F16, BF16, F8_E4M3, I64)
  MMDiT (spec 2) ........ mmdit_config, mmdit_forward, mmdit_to_diffusers,
                          mmdit_from_diffusers, mmdit_diffusers_config
  sampler (spec 3) ...... flow_sigmas, flow_sigmas_f32, sample_euler_cfg
  text encoders (4) ..... clip_forward, t5_forward, t5_relative_bucket, sd3_conditioning
  VAE (spec 6) .......... vae_decode, vae_encode, vae_to_diffusers
  pipeline .............. sd3_pipeline
CLIP and T5 weights use the HF names (no prefix), the VAE uses the original names
without "first_stage_model.".
"""
import json
import math
import os
import struct

import numpy as np
import torch

# --------------------------------------------------------------------------
# safetensors (own minimal reader/writer; numpy + struct + json only)
# --------------------------------------------------------------------------

_NP_OF = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
          "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def _bf16_bits(a):
    """float array -> uint16 bfloat16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def _bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _e4m3_table():
    """float value of every float8 e4m3fn code (0x7F/0xFF = NaN, no infinities)."""
    v = np.zeros(256, dtype=np.float64)
    for code in range(256):
        e, m = (code >> 3) & 15, code & 7
        mag = (m / 8.0) * 2.0 ** -6 if e == 0 else (1 + m / 8.0) * 2.0 ** (e - 7)
        v[code] = -mag if code & 128 else mag
    v[0x7F] = v[0xFF] = np.nan
    return v


_E4M3 = _e4m3_table()


def _e4m3_bits(a):
    """float array -> e4m3fn codes, round to nearest, ties to even code; saturates at 448."""
    a = np.asarray(a, dtype=np.float64)
    pos = _E4M3[:0x7F]  # codes 0..126, ascending
    x = np.minimum(np.abs(a), 448.0)
    hi = np.clip(np.searchsorted(pos, x), 1, 126)
    lo = hi - 1
    dlo, dhi = x - pos[lo], pos[hi] - x
    code = np.where((dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0)), hi, lo)
    code = np.where(x >= pos[126], 126, code)
    return (code | np.where(np.signbit(a), 128, 0)).astype(np.uint8)


def round_to_dtype(a, dtype):
    """Values of `a` after storing as `dtype` ('F32', 'F16', 'BF16', 'F8_E4M3'), as float64."""
    a = np.asarray(a, dtype=np.float64)
    if dtype == "F64":
        return a.copy()
    if dtype == "F32":
        return a.astype(np.float32).astype(np.float64)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    if dtype == "F8_E4M3":
        return _E4M3[_e4m3_bits(a)]
    if dtype == "BF16":
        # go through float32 first (float64 -> f32 -> bf16 can double-round, but
        # the result is what we store, so it is the truth by definition)
        return _bf16_to_f32(_bf16_bits(a.astype(np.float32))).astype(np.float64)
    raise ValueError(dtype)


def save_safetensors(path, tensors, dtype="F32", metadata=None):
    """Write {name: array} to `path`.  Floating arrays are stored as `dtype`
    ('F32', 'F16', 'BF16', 'F8_E4M3'); a value given as (array, 'DT') overrides the dtype for
    that tensor; integer arrays are stored as I64."""
    header = {"__metadata__": dict(metadata or {"format": "pt"})}
    blobs, off = [], 0
    for name, val in tensors.items():
        dt = dtype
        if isinstance(val, tuple):
            val, dt = val
        a = np.asarray(val)
        if a.dtype.kind in "iu":
            dt = "I64"
            raw = np.ascontiguousarray(a, dtype="<i8").tobytes()
        elif dt == "BF16":
            raw = _bf16_bits(a).astype("<u2").tobytes()
        elif dt == "F8_E4M3":
            raw = _e4m3_bits(a).tobytes()
        else:
            raw = np.ascontiguousarray(a, dtype=np.dtype(_NP_OF[dt]).newbyteorder("<")).tobytes()
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path, with_dtypes=False):
    """Read a safetensors file -> {name: numpy array}.  F16/BF16 become float32,
    F32 stays float32, F64 float64, integers int64.  With with_dtypes=True also
    returns {name: stored dtype string}.  F8_E4M3 becomes float32 too."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        data = f.read()
    out, dts = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt, shape = info["dtype"], info["shape"]
        buf = data[b:e]
        if dt == "BF16":
            a = _bf16_to_f32(np.frombuffer(buf, dtype="<u2"))
        elif dt == "F8_E4M3":
            a = _E4M3[np.frombuffer(buf, dtype=np.uint8)].astype(np.float32)
        else:
            a = np.frombuffer(buf, dtype=np.dtype(_NP_OF[dt]).newbyteorder("<"))
            if dt == "F16":
                a = a.astype(np.float32)
            elif dt in ("I32", "U8"):
                a = a.astype(np.int64)
        out[name] = a.reshape(shape).copy()
        dts[name] = dt
    return (out, dts) if with_dtypes else out


def to_torch64(sd, strip_prefix=""):
    """numpy dict -> float64 torch dict (optionally keep/strip a key prefix)."""
    r = {}
    for k, v in sd.items():
        if strip_prefix:
            if not k.startswith(strip_prefix):
                continue
            k = k[len(strip_prefix):]
        r[k] = torch.from_numpy(np.asarray(v, dtype=np.float64))
    return r


# --------------------------------------------------------------------------
# small ops (float64 unless stated)
# --------------------------------------------------------------------------

def linear(x, w, b=None):
    y = torch.matmul(x, w.t())
    return y + b if b is not None else y


def silu(x):
    return x * torch.sigmoid(x)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def layer_norm(x, eps, w=None, b=None):
    """LayerNorm over the last axis, biased variance."""
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def rms_norm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def softmax_attention(q, k, v, scale, bias=None):
    """q [B,Nq,H,d], k/v [B,Nk,H,d] -> [B,Nq,H,d].  bias broadcastable to
    [B,H,Nq,Nk] (added to the logits)."""
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    if bias is not None:
        s = s + bias
    p = torch.softmax(s, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", p, v)


# --------------------------------------------------------------------------
# MMDiT (spec 2)
# --------------------------------------------------------------------------

HEAD_DIM = 64


def mmdit_config(W):
    """Hyper-parameters derived from an original-named weight dict (spec 2.1)."""
    pw = W["x_embedder.proj.weight"]
    D, cin, p, _ = pw.shape
    depth = 0
    while "joint_blocks.%d.x_block.attn.qkv.weight" % depth in W:
        depth += 1
    grid = int(round(math.sqrt(W["pos_embed"].shape[1])))
    assert grid * grid == W["pos_embed"].shape[1]
    return {
        "hidden": D, "heads": D // HEAD_DIM, "patch": p, "in_channels": cin,
        "out_channels": W["final_layer.linear.weight"].shape[0] // (p * p),
        "depth": depth, "pos_grid": grid,
        "context_dim": W["context_embedder.weight"].shape[1],
        "pooled_dim": W["y_embedder.mlp.0.weight"].shape[1],
        "mlp_hidden": W["joint_blocks.0.x_block.mlp.fc1.weight"].shape[0],
        "qk_norm": "joint_blocks.0.context_block.attn.ln_k.weight" in W,
        "dual_layers": [i for i in range(depth) if "joint_blocks.%d.x_block.attn2.ln_k.weight" % i in W
                        or "joint_blocks.%d.x_block.attn2.qkv.weight" % i in W],
    }


def timestep_embedding(t, dim=256, max_period=10000.0):
    """Sinusoidal frequency embedding, cosines first, divisor dim/2 (spec 2.4.3).

    float32 semantics of the reference/diffusers, made reproducible: the exponent
    float32(float32(-ln max_period) * i) / half is formed in float32, the frequency
    is exp() of it correctly rounded to float32, a = float32(t * freq) is a float32
    product, and cos/sin are evaluated exactly (float64).  A C port doing
    expf / float multiply / cosf matches this to ~1 ulp; torch's own float32 exp
    differs from it by 1 ulp in a few entries (relative effect on the MMDiT output
    about 1e-6)."""
    half = dim // 2
    e = np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32) / np.float32(half)
    freqs = np.exp(e.astype(np.float64)).astype(np.float32)
    tt = np.asarray(t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t, dtype=np.float32)
    args = (tt[:, None] * freqs[None]).astype(np.float32).astype(np.float64)
    return torch.from_numpy(np.concatenate([np.cos(args), np.sin(args)], axis=-1))


def _mlp2(W, pre, x):
    """Linear -> SiLU -> Linear with keys pre.0 / pre.2."""
    return linear(silu(linear(x, W[pre + ".0.weight"], W[pre + ".0.bias"])), W[pre + ".2.weight"], W[pre + ".2.bias"])


def patchify(W, x, p):
    """x [B,C,H,W] -> tokens [B,(H/p)(W/p),D] (conv k=p stride p), row-major tokens."""
    B, C, H, Wd = x.shape
    gh, gw = H // p, Wd // p
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    w = W["x_embedder.proj.weight"]
    return linear(patches, w.reshape(w.shape[0], -1), W["x_embedder.proj.bias"])


def cropped_pos_embed(W, gh, gw):
    pe = W["pos_embed"]
    grid = int(round(math.sqrt(pe.shape[1])))
    assert gh <= grid and gw <= grid, "latent too large for pos_embed"
    top, left = (grid - gh) // 2, (grid - gw) // 2
    P = pe.reshape(grid, grid, pe.shape[-1])
    return P[top:top + gh, left:left + gw].reshape(1, gh * gw, pe.shape[-1])


def unpatchify(tok, gh, gw, p, c):
    """tokens [B,N,p*p*c] with (py,px,c) c fastest -> [B,c,gh*p,gw*p]."""
    B = tok.shape[0]
    return tok.reshape(B, gh, gw, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(B, c, gh * p, gw * p)


def _mod(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def _qkv(W, pre, h, heads, qk_norm):
    """Fused qkv projection -> q,k,v [B,N,H,64], with optional per-head RMSNorm."""
    qkv = linear(h, W[pre + ".qkv.weight"], W[pre + ".qkv.bias"])
    B, N, _ = qkv.shape
    q, k, v = qkv.reshape(B, N, 3, heads, HEAD_DIM).unbind(2)
    if qk_norm:
        q = rms_norm(q, W[pre + ".ln_q.weight"], 1e-6)
        k = rms_norm(k, W[pre + ".ln_k.weight"], 1e-6)
    return q, k, v


def joint_block(W, i, img, ctx, c_act, cfg):
    """One MMDiT joint block (spec 2.4.6/7). Returns (img, ctx); ctx is None after
    the last (pre-only) block."""
    D, H, qkn = cfg["hidden"], cfg["heads"], cfg["qk_norm"]
    xb, cb = "joint_blocks.%d.x_block" % i, "joint_blocks.%d.context_block" % i
    last = i == cfg["depth"] - 1
    dual = i in cfg["dual_layers"]

    mx = linear(c_act, W[xb + ".adaLN_modulation.1.weight"], W[xb + ".adaLN_modulation.1.bias"])
    mx = mx.reshape(mx.shape[0], -1, D).unbind(1)  # 6 or 9 chunks
    mc = linear(c_act, W[cb + ".adaLN_modulation.1.weight"], W[cb + ".adaLN_modulation.1.bias"])
    mc = mc.reshape(mc.shape[0], -1, D).unbind(1)  # 6, or 2 (shift, scale) when last
    assert len(mc) == (2 if last else 6) and len(mx) == (9 if dual else 6)

    img_ln = layer_norm(img, 1e-6)
    qi, ki, vi = _qkv(W, xb + ".attn", _mod(img_ln, mx[0], mx[1]), H, qkn)
    qc, kc, vc = _qkv(W, cb + ".attn", _mod(layer_norm(ctx, 1e-6), mc[0], mc[1]), H, qkn)

    # joint attention; order [context, image] as in the Stability reference
    nc = ctx.shape[1]
    o = softmax_attention(torch.cat([qc, qi], 1), torch.cat([kc, ki], 1), torch.cat([vc, vi], 1),
                          1.0 / math.sqrt(HEAD_DIM))
    o = o.reshape(o.shape[0], o.shape[1], D)
    oc, oi = o[:, :nc], o[:, nc:]

    img = img + mx[2][:, None] * linear(oi, W[xb + ".attn.proj.weight"], W[xb + ".attn.proj.bias"])
    if dual:
        q2, k2, v2 = _qkv(W, xb + ".attn2", _mod(img_ln, mx[6], mx[7]), H, qkn)
        o2 = softmax_attention(q2, k2, v2, 1.0 / math.sqrt(HEAD_DIM)).reshape(img.shape)
        img = img + mx[8][:, None] * linear(o2, W[xb + ".attn2.proj.weight"], W[xb + ".attn2.proj.bias"])
    h = _mod(layer_norm(img, 1e-6), mx[3], mx[4])
    h = linear(gelu_tanh(linear(h, W[xb + ".mlp.fc1.weight"], W[xb + ".mlp.fc1.bias"])),
               W[xb + ".mlp.fc2.weight"], W[xb + ".mlp.fc2.bias"])
    img = img + mx[5][:, None] * h

    if last:
        return img, None
    ctx = ctx + mc[2][:, None] * linear(oc, W[cb + ".attn.proj.weight"], W[cb + ".attn.proj.bias"])
    h = _mod(layer_norm(ctx, 1e-6), mc[3], mc[4])
    h = linear(gelu_tanh(linear(h, W[cb + ".mlp.fc1.weight"], W[cb + ".mlp.fc1.bias"])),
               W[cb + ".mlp.fc2.weight"], W[cb + ".mlp.fc2.bias"])
    ctx = ctx + mc[5][:, None] * h
    return img, ctx


def mmdit_forward(W, x, timestep, context, pooled, trace=None):
    """SD3 MMDiT forward (spec 2.4).
    W: original-named float64 weights (no 'model.diffusion_model.' prefix).
    x [B,C,H,W], timestep [B] (= 1000*sigma), context [B,L,Dctx], pooled [B,Dpool].
    Returns the velocity [B,C,H,W] (float64).  If `trace` is a dict it receives
    the intermediates c, x_tokens, ctx_tokens, block{i}.img/.txt, final_tokens."""
    cfg = mmdit_config(W)
    p = cfg["patch"]
    x, context, pooled = x.double(), context.double(), pooled.double()
    B, C, Hh, Ww = x.shape
    gh, gw = Hh // p, Ww // p
    tr = trace if trace is not None else {}

    img = patchify(W, x, p) + cropped_pos_embed(W, gh, gw)
    c = _mlp2(W, "t_embedder.mlp", timestep_embedding(timestep)) + _mlp2(W, "y_embedder.mlp", pooled)
    ctx = linear(context, W["context_embedder.weight"], W["context_embedder.bias"])
    tr["c"], tr["x_tokens"], tr["ctx_tokens"] = c, img, ctx

    c_act = silu(c)
    for i in range(cfg["depth"]):
        img, ctx = joint_block(W, i, img, ctx, c_act, cfg)
        tr["block%d.img" % i] = img
        if ctx is not None:
            tr["block%d.txt" % i] = ctx

    m = linear(c_act, W["final_layer.adaLN_modulation.1.weight"], W["final_layer.adaLN_modulation.1.bias"])
    shift, scale = m.chunk(2, dim=1)  # original order (shift, scale)
    out = linear(_mod(layer_norm(img, 1e-6), shift, scale), W["final_layer.linear.weight"], W["final_layer.linear.bias"])
    tr["final_tokens"] = out
    return unpatchify(out, gh, gw, p, cfg["out_channels"])


# ---- original <-> diffusers names (spec tables 2.2 / 2.3) ----

_GLOBAL_MAP = [
    ("pos_embed", "pos_embed.pos_embed"),
    ("x_embedder.proj.", "pos_embed.proj."),
    ("t_embedder.mlp.0.", "time_text_embed.timestep_embedder.linear_1."),
    ("t_embedder.mlp.2.", "time_text_embed.timestep_embedder.linear_2."),
    ("y_embedder.mlp.0.", "time_text_embed.text_embedder.linear_1."),
    ("y_embedder.mlp.2.", "time_text_embed.text_embedder.linear_2."),
    ("context_embedder.", "context_embedder."),
    ("final_layer.linear.", "proj_out."),
]
_BLOCK_MAP = [  # (original suffix, diffusers suffix) inside joint_blocks.i / transformer_blocks.i
    ("x_block.adaLN_modulation.1.", "norm1.linear."),
    ("x_block.attn.proj.", "attn.to_out.0."),
    ("x_block.attn.ln_q.", "attn.norm_q."),
    ("x_block.attn.ln_k.", "attn.norm_k."),
    ("x_block.attn2.proj.", "attn2.to_out.0."),
    ("x_block.attn2.ln_q.", "attn2.norm_q."),
    ("x_block.attn2.ln_k.", "attn2.norm_k."),
    ("x_block.mlp.fc1.", "ff.net.0.proj."),
    ("x_block.mlp.fc2.", "ff.net.2."),
    ("context_block.adaLN_modulation.1.", "norm1_context.linear."),
    ("context_block.attn.proj.", "attn.to_add_out."),
    ("context_block.attn.ln_q.", "attn.norm_added_q."),
    ("context_block.attn.ln_k.", "attn.norm_added_k."),
    ("context_block.mlp.fc1.", "ff_context.net.0.proj."),
    ("context_block.mlp.fc2.", "ff_context.net.2."),
]
_QKV_MAP = [
    ("x_block.attn.qkv.", ("attn.to_q.", "attn.to_k.", "attn.to_v.")),
    ("x_block.attn2.qkv.", ("attn2.to_q.", "attn2.to_k.", "attn2.to_v.")),
    ("context_block.attn.qkv.", ("attn.add_q_proj.", "attn.add_k_proj.", "attn.add_v_proj.")),
]


def _swap_halves(a):
    n = a.shape[0] // 2
    return np.concatenate([a[n:], a[:n]], axis=0)


def mmdit_to_diffusers(W):
    """Original-named dict (numpy or torch; no prefix) -> diffusers SD3Transformer2DModel
    names.  Splits fused qkv, swaps (shift, scale) halves of the final layer and of
    the last block's pre-only context modulation."""
    W = {k: np.asarray(v) for k, v in W.items()}
    depth = mmdit_config(W)["depth"]
    out = {}
    for k, v in W.items():
        if k.startswith("joint_blocks."):
            _, i, rest = k.split(".", 2)
            i = int(i)
            pre = "transformer_blocks.%d." % i
            done = False
            for o, ds in _QKV_MAP:
                if rest.startswith(o):
                    leaf = rest[len(o):]
                    for part, d in zip(np.split(v, 3, axis=0), ds):
                        out[pre + d + leaf] = part
                    done = True
            for o, d in _BLOCK_MAP:
                if not done and rest.startswith(o):
                    if i == depth - 1 and o.startswith("context_block.adaLN"):
                        v = _swap_halves(v)
                    out[pre + d + rest[len(o):]] = v
                    done = True
            if not done:
                raise KeyError(k)
        elif k.startswith("final_layer.adaLN_modulation.1."):
            out["norm_out.linear." + k.rsplit(".", 1)[1]] = _swap_halves(v)
        else:
            for o, d in _GLOBAL_MAP:
                if k.startswith(o):
                    out[d + k[len(o):]] = v
                    break
            else:
                raise KeyError(k)
    return out


def mmdit_from_diffusers(Dsd):
    """Inverse of mmdit_to_diffusers."""
    Dsd = {k: np.asarray(v) for k, v in Dsd.items()}
    depth = 1 + max(int(k.split(".")[1]) for k in Dsd if k.startswith("transformer_blocks."))
    out = {}
    for k, v in Dsd.items():
        if k.startswith("transformer_blocks."):
            _, i, rest = k.split(".", 2)
            i = int(i)
            pre = "joint_blocks.%d." % i
            if any(rest.startswith(d[1]) or rest.startswith(d[2]) for _, d in _QKV_MAP):
                continue  # handled with the q part
            hit = False
            for o, ds in _QKV_MAP:
                if rest.startswith(ds[0]):
                    leaf = rest[len(ds[0]):]
                    out[pre + o + leaf] = np.concatenate(
                        [Dsd["transformer_blocks.%d.%s%s" % (i, d, leaf)] for d in ds], axis=0)
                    hit = True
            for o, d in _BLOCK_MAP:
                if not hit and rest.startswith(d):
                    if i == depth - 1 and o.startswith("context_block.adaLN"):
                        v = _swap_halves(v)
                    out[pre + o + rest[len(d):]] = v
                    hit = True
            if not hit:
                raise KeyError(k)
        elif k.startswith("norm_out.linear."):
            out["final_layer.adaLN_modulation.1." + k.rsplit(".", 1)[1]] = _swap_halves(v)
        else:
            for o, d in _GLOBAL_MAP:
                if k.startswith(d):
                    out[o + k[len(d):]] = v
                    break
            else:
                raise KeyError(k)
    return out


def mmdit_diffusers_config(W, sample_size=None):
    """diffusers transformer/config.json dict for an original-named weight dict."""
    cfg = mmdit_config(W)
    return {
        "_class_name": "SD3Transformer2DModel",
        "_diffusers_version": "0.31.0",
        "sample_size": sample_size if sample_size is not None else cfg["pos_grid"],
        "patch_size": cfg["patch"],
        "in_channels": cfg["in_channels"],
        "num_layers": cfg["depth"],
        "attention_head_dim": HEAD_DIM,
        "num_attention_heads": cfg["heads"],
        "joint_attention_dim": cfg["context_dim"],
        "caption_projection_dim": cfg["hidden"],
        "pooled_projection_dim": cfg["pooled_dim"],
        "out_channels": cfg["out_channels"],
        "pos_embed_max_size": cfg["pos_grid"],
        "dual_attention_layers": cfg["dual_layers"],
        "qk_norm": "rms_norm" if cfg["qk_norm"] else None,
    }


# --------------------------------------------------------------------------
# flow-matching schedule and CFG Euler sampler (spec 3)
# --------------------------------------------------------------------------

def flow_sigmas(n, shift=3.0, num_train_timesteps=1000):
    """sigma_0..sigma_n (n+1 values, trailing 0), float64 (spec 3.1)."""
    def sh(u):
        return shift * u / (1.0 + (shift - 1.0) * u)
    smax, smin = sh(1.0), sh(1.0 / num_train_timesteps)
    T = np.linspace(num_train_timesteps * smax, num_train_timesteps * smin, n)
    s = sh(T / num_train_timesteps)
    return np.concatenate([s, [0.0]])


def flow_sigmas_f32(n, shift=3.0, num_train_timesteps=1000):
    """The same schedule with diffusers' float32 roundings (FlowMatchEulerDiscrete-
    Scheduler, static shift): sigma_min comes from the float32 training table, the
    inference schedule is built in float64 and stored as float32, and the model
    timesteps are float32(sigma) * 1000 in float32.
    Returns (sigmas float32 [n+1], timesteps float32 [n])."""
    f32 = np.float32
    u = np.arange(num_train_timesteps, 0, -1, dtype=f32) / f32(num_train_timesteps)
    train = (f32(shift) * u) / (f32(1.0) + f32(shift - 1.0) * u)
    smax, smin = float(train[0]), float(train[-1])
    T = np.linspace(smax * num_train_timesteps, smin * num_train_timesteps, n)
    s = T / num_train_timesteps
    s = (shift * s / (1 + (shift - 1) * s)).astype(f32)
    ts = s * f32(num_train_timesteps)
    return np.concatenate([s, np.zeros(1, f32)]), ts.astype(f32)


def sample_euler_cfg(model, noise, sigmas, cond, uncond, guidance, trace=None):
    """CFG Euler sampler (spec 3.2).  model(x[B], t[B], context[B], pooled[B]) -> v.
    cond / uncond = (context [1,L,D], pooled [1,Dp]).  Batch order [uncond, cond]
    as in diffusers.  sigmas: sequence ending with 0; the model sees
    t = float32(1000 * sigma) like diffusers.  Returns final latents (float64)."""
    x = noise.double()
    ctx = torch.cat([uncond[0], cond[0]], 0).double()
    pooled = torch.cat([uncond[1], cond[1]], 0).double()
    for i in range(len(sigmas) - 1):
        s, s1 = float(sigmas[i]), float(sigmas[i + 1])
        t = torch.tensor([s], dtype=torch.float32) * 1000.0
        v2 = model(torch.cat([x, x], 0), t.expand(2), ctx, pooled)
        vu, vc = v2[:1], v2[1:]
        v = vu + guidance * (vc - vu)
        x = x + (s1 - s) * v
        if trace is not None:
            trace["latents_step%d" % i] = x
    return x


# --------------------------------------------------------------------------
# CLIP text transformer (spec 4.1 / 4.2); HF key names without any prefix
# --------------------------------------------------------------------------

def clip_forward(W, ids, act):
    """CLIP text encoder.  W: 'text_model.*' (+ optional 'text_projection.weight'),
    ids [B,L] int, act 'quick_gelu' (CLIP-L) or 'gelu' (CLIP-G, exact erf).
    Heads = width / 64.  Returns dict: penultimate (output of the second-to-last
    layer, no final LN), last_hidden (final LN of the last layer), pooled (last_hidden
    at argmax(ids), i.e. the first EOS when EOS is the highest id), projected
    (pooled @ text_projection.T, if that tensor exists)."""
    f = {"quick_gelu": quick_gelu, "gelu": gelu_erf}[act]
    p = "text_model."
    ids = torch.as_tensor(ids, dtype=torch.long)
    B, L = ids.shape
    x = W[p + "embeddings.token_embedding.weight"][ids] + W[p + "embeddings.position_embedding.weight"][:L][None]
    width = x.shape[-1]
    heads = width // HEAD_DIM
    causal = torch.full((L, L), float("-inf"), dtype=torch.float64).triu(1)
    hidden = [x]
    n = 0
    while p + "encoder.layers.%d.layer_norm1.weight" % n in W:
        q = p + "encoder.layers.%d." % n
        h = layer_norm(x, 1e-5, W[q + "layer_norm1.weight"], W[q + "layer_norm1.bias"])
        qs, ks, vs = (linear(h, W[q + "self_attn.%s_proj.weight" % t], W[q + "self_attn.%s_proj.bias" % t])
                      .reshape(B, L, heads, width // heads) for t in "qkv")
        o = softmax_attention(qs, ks, vs, (width // heads) ** -0.5, causal).reshape(B, L, width)
        x = x + linear(o, W[q + "self_attn.out_proj.weight"], W[q + "self_attn.out_proj.bias"])
        h = layer_norm(x, 1e-5, W[q + "layer_norm2.weight"], W[q + "layer_norm2.bias"])
        h = linear(f(linear(h, W[q + "mlp.fc1.weight"], W[q + "mlp.fc1.bias"])), W[q + "mlp.fc2.weight"],
                   W[q + "mlp.fc2.bias"])
        x = x + h
        hidden.append(x)
        n += 1
    last = layer_norm(x, 1e-5, W[p + "final_layer_norm.weight"], W[p + "final_layer_norm.bias"])
    pooled = last[torch.arange(B), ids.argmax(-1)]
    out = {"penultimate": hidden[-2], "last_hidden": last, "pooled": pooled}
    if "text_projection.weight" in W:
        out["projected"] = linear(pooled, W["text_projection.weight"])
    return out


# --------------------------------------------------------------------------
# T5 v1.1 encoder (spec 4.3); HF key names without prefix
# --------------------------------------------------------------------------

def t5_relative_bucket(rel, num_buckets=32, max_distance=128):
    """Bidirectional bucket of rel = key - query (int tensor), logarithm in float32."""
    half = num_buckets // 2
    bucket = (rel > 0).long() * half
    n = rel.abs()
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    large = torch.clamp(large, max=half - 1)
    return bucket + torch.where(n < exact, n, large)


def t5_forward(W, ids, trace=None):
    """T5 encoder: final RMSNorm of the last block output [B,L,d_model].
    Heads from encoder.block.0...relative_attention_bias.weight [32, heads]."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    emb = W["shared.weight"] if "shared.weight" in W else W["encoder.embed_tokens.weight"]
    x = emb[ids]
    B, L = ids.shape
    table = W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = table.shape[1]
    pos = torch.arange(L)
    bucket = t5_relative_bucket(pos[None, :] - pos[:, None])  # [query, key]
    bias = table[bucket].permute(2, 0, 1)[None]  # [1,H,Lq,Lk]
    n = 0
    while "encoder.block.%d.layer.0.layer_norm.weight" % n in W:
        a = "encoder.block.%d.layer.0." % n
        h = rms_norm(x, W[a + "layer_norm.weight"], 1e-6)
        q, k, v = (linear(h, W[a + "SelfAttention.%s.weight" % t]).reshape(B, L, heads, -1) for t in "qkv")
        o = softmax_attention(q, k, v, 1.0, bias).reshape(B, L, -1)
        x = x + linear(o, W[a + "SelfAttention.o.weight"])
        f = "encoder.block.%d.layer.1." % n
        h = rms_norm(x, W[f + "layer_norm.weight"], 1e-6)
        g = gelu_tanh(linear(h, W[f + "DenseReluDense.wi_0.weight"])) * linear(h, W[f + "DenseReluDense.wi_1.weight"])
        x = x + linear(g, W[f + "DenseReluDense.wo.weight"])
        if trace is not None:
            trace["block%d" % n] = x
        n += 1
    return rms_norm(x, W["encoder.final_layer_norm.weight"], 1e-6)


# --------------------------------------------------------------------------
# VAE (spec 6); ORIGINAL key names ('encoder.*', 'decoder.*', no first_stage_model.)
# --------------------------------------------------------------------------

VAE_SCALE, VAE_SHIFT = 1.5305, 0.0609


def group_norm(x, w, b, groups=32, eps=1e-6):
    B, C, H, Wd = x.shape
    g = x.reshape(B, groups, -1)
    mu = g.mean(-1, keepdim=True)
    var = ((g - mu) ** 2).mean(-1, keepdim=True)
    g = (g - mu) / torch.sqrt(var + eps)
    return g.reshape(B, C, H, Wd) * w[None, :, None, None] + b[None, :, None, None]


def _conv(W, pre, x, stride=1, pad=1):
    return torch.nn.functional.conv2d(x, W[pre + ".weight"], W[pre + ".bias"], stride=stride, padding=pad)


def _gn(W, pre, x):
    return group_norm(x, W[pre + ".weight"], W[pre + ".bias"])


def vae_resnet(W, pre, x):
    h = _conv(W, pre + ".conv1", silu(_gn(W, pre + ".norm1", x)))
    h = _conv(W, pre + ".conv2", silu(_gn(W, pre + ".norm2", h)))
    if pre + ".nin_shortcut.weight" in W:
        x = _conv(W, pre + ".nin_shortcut", x, pad=0)
    return x + h


def vae_attention(W, pre, x):
    """Single-head self-attention over the H*W pixels, scale 1/sqrt(C)."""
    B, C, H, Wd = x.shape
    h = _gn(W, pre + ".norm", x)
    q, k, v = (_conv(W, pre + "." + t, h, pad=0).reshape(B, C, H * Wd).transpose(1, 2) for t in "qkv")
    p = torch.softmax(torch.matmul(q, k.transpose(1, 2)) / math.sqrt(C), dim=-1)
    o = torch.matmul(p, v).transpose(1, 2).reshape(B, C, H, Wd)
    return x + _conv(W, pre + ".proj_out", o, pad=0)


def _vae_mid(W, pre, x):
    x = vae_resnet(W, pre + ".mid.block_1", x)
    x = vae_attention(W, pre + ".mid.attn_1", x)
    return vae_resnet(W, pre + ".mid.block_2", x)


def _count(W, fmt):
    n = 0
    while any(k.startswith(fmt % n) for k in W):
        n += 1
    return n


def vae_decode(W, z, trace=None):
    """Decoder: VAE latent z [B,zc,h,w] (already un-normalised: x/1.5305+0.0609)
    -> image [B,3,8h,8w], unclamped."""
    tr = trace if trace is not None else {}
    levels = _count(W, "decoder.up.%d.")
    blocks = _count(W, "decoder.up.0.block.%d.")
    x = _conv(W, "decoder.conv_in", z.double())
    tr["dec.conv_in"] = x
    x = _vae_mid(W, "decoder", x)
    tr["dec.mid"] = x
    for L in reversed(range(levels)):
        for j in range(blocks):
            x = vae_resnet(W, "decoder.up.%d.block.%d" % (L, j), x)
        if L != 0:
            x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = _conv(W, "decoder.up.%d.upsample.conv" % L, x)
        tr["dec.up.%d" % L] = x
    return _conv(W, "decoder.conv_out", silu(_gn(W, "decoder.norm_out", x)))


def vae_encode(W, img, trace=None):
    """Encoder: image [B,3,H,W] in [-1,1] -> (mean, logvar) [B,zc,H/8,W/8]; logvar
    clamped to [-30, 20]."""
    tr = trace if trace is not None else {}
    levels = _count(W, "encoder.down.%d.")
    blocks = _count(W, "encoder.down.0.block.%d.")
    x = _conv(W, "encoder.conv_in", img.double())
    for i in range(levels):
        for j in range(blocks):
            x = vae_resnet(W, "encoder.down.%d.block.%d" % (i, j), x)
        if i != levels - 1:
            x = _conv(W, "encoder.down.%d.downsample.conv" % i, torch.nn.functional.pad(x, (0, 1, 0, 1)),
                      stride=2, pad=0)
        tr["enc.down.%d" % i] = x
    x = _vae_mid(W, "encoder", x)
    tr["enc.mid"] = x
    m = _conv(W, "encoder.conv_out", silu(_gn(W, "encoder.norm_out", x)))
    mean, logvar = m.chunk(2, dim=1)
    return mean, torch.clamp(logvar, -30.0, 20.0)


def vae_to_diffusers(W):
    """Original VAE names ('encoder.*'/'decoder.*') -> diffusers AutoencoderKL names.
    Attention 1x1-conv weights [C,C,1,1] become Linear weights [C,C]."""
    levels = _count(W, "decoder.up.%d.")
    out = {}
    for k, v in W.items():
        v = np.asarray(v)
        part, rest = k.split(".", 1)
        r = rest
        if r.startswith("mid.attn_1."):
            leaf = r.split(".")[-2:]
            name = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}[leaf[0]]
            r = "mid_block.attentions.0.%s.%s" % (name, leaf[1])
            if v.ndim == 4:
                v = v[:, :, 0, 0]
        elif r.startswith("mid.block_"):
            r = "mid_block.resnets.%d.%s" % (int(r[len("mid.block_")]) - 1, r.split(".", 2)[2])
        elif r.startswith("down.") or r.startswith("up."):
            kind, i, sub = r.split(".", 2)
            i = int(i)
            blk = "down_blocks.%d" % i if kind == "down" else "up_blocks.%d" % (levels - 1 - i)
            if sub.startswith("block."):
                _, j, leaf = sub.split(".", 2)
                r = "%s.resnets.%s.%s" % (blk, j, leaf)
            else:  # downsample.conv.* / upsample.conv.*
                r = "%s.%s.0.conv.%s" % (blk, "downsamplers" if kind == "down" else "upsamplers", sub.split(".")[-1])
        elif r.startswith("norm_out."):
            r = "conv_norm_out." + r.split(".", 1)[1]
        r = r.replace("nin_shortcut", "conv_shortcut")
        out[part + "." + r] = v
    return out


# --------------------------------------------------------------------------
# SD3 text conditioning (spec 4.4) and the whole pipeline
# --------------------------------------------------------------------------

def sd3_conditioning(clip_l, clip_g, t5, ids_l, ids_g, ids_t5):
    """clip_l / clip_g / t5: weight dicts (HF names, no prefix).  Returns
    (context [B, 77+N_t5, d_t5], pooled [B, w_l + w_g]):
    context = [CLIP-L penultimate | CLIP-G penultimate | zeros] per CLIP token, then
    the T5 tokens; pooled = CLIP-L pooled (unprojected) | CLIP-G projected pooled."""
    ol = clip_forward(clip_l, ids_l, "quick_gelu")
    og = clip_forward(clip_g, ids_g, "gelu")
    th = t5_forward(t5, ids_t5)
    clip = torch.cat([ol["penultimate"], og["penultimate"]], -1)
    clip = torch.nn.functional.pad(clip, (0, th.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, th], 1), torch.cat([ol["pooled"], og["projected"]], -1)


def sd3_pipeline(mmdit, vae, clip_l, clip_g, t5, ids, noise, steps, shift, guidance, trace=None):
    """Text-to-image: ids = {'cond': (l, g, t5), 'uncond': (l, g, t5)} token id
    tensors [1, n]; noise [1,16,h,w].  Returns the decoded image [1,3,8h,8w]
    (unclamped, ~[-1,1]).  trace receives cond/uncond context and pooled, sigmas,
    latents_step{i}, latents."""
    tr = trace if trace is not None else {}
    cond = sd3_conditioning(clip_l, clip_g, t5, *ids["cond"])
    uncond = sd3_conditioning(clip_l, clip_g, t5, *ids["uncond"])
    tr["cond_context"], tr["cond_pooled"] = cond
    tr["uncond_context"], tr["uncond_pooled"] = uncond
    sigmas, _ = flow_sigmas_f32(steps, shift)
    tr["sigmas"] = torch.from_numpy(sigmas)
    x = sample_euler_cfg(lambda a, t, c, p: mmdit_forward(mmdit, a, t, c, p), noise, sigmas, cond, uncond,
                         guidance, trace=tr)
    tr["latents"] = x
    return vae_decode(vae, x / VAE_SCALE + VAE_SHIFT)
