#!/usr/bin/env python3
"""PyTorch timing reference for bench/bench-cuda-mmdit.c: the same SD3-Medium-shaped MMDiT (24 joint blocks,
D = 1536, 24 heads of 64, MLP 6144, patch 2, 16 latent channels, 333 text tokens of width 4096, pooled 2048),
random bf16 weights, F.scaled_dot_product_attention, one CFG denoising step (batch 2) at 512² and 1024², eager and
torch.compile, timed with CUDA events (median of --reps after --warmup). Written from the architecture (diffusers'
SD3Transformer2DModel computes the same function); not needed at run time. Prints RESULT lines like the C bench.

Usage: python3 tools/bench/torch_mmdit.py [--res 512,1024] [--reps 20] [--warmup 3] [--no-compile]
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

D, HEADS, HD, MLP, DEPTH, PATCH, CIN, CTX_DIM, POOLED, GRID, CTX = 1536, 24, 64, 6144, 24, 2, 16, 4096, 2048, 192, 333


class Block(nn.Module):
    """One joint block: adaLN-modulated LN, q|k|v of both streams, joint attention, gated residuals, GELU MLP."""

    def __init__(self, pre_only):
        super().__init__()
        self.pre_only = pre_only
        self.x_mod, self.c_mod = nn.Linear(D, 6 * D), nn.Linear(D, (2 if pre_only else 6) * D)
        self.x_qkv, self.c_qkv = nn.Linear(D, 3 * D), nn.Linear(D, 3 * D)
        self.x_proj, self.x_fc1, self.x_fc2 = nn.Linear(D, D), nn.Linear(D, MLP), nn.Linear(MLP, D)
        if not pre_only:
            self.c_proj, self.c_fc1, self.c_fc2 = nn.Linear(D, D), nn.Linear(D, MLP), nn.Linear(MLP, D)

    @staticmethod
    def modulate(x, shift, scale):
        return F.layer_norm(x, (D,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]

    def forward(self, x, c, sc):
        B, N, L = x.shape[0], x.shape[1], c.shape[1]
        xm = self.x_mod(sc).chunk(6, dim=1)
        cm = self.c_mod(sc).chunk(2 if self.pre_only else 6, dim=1)
        qx = self.x_qkv(self.modulate(x, xm[0], xm[1])).view(B, N, 3, HEADS, HD)
        qc = self.c_qkv(self.modulate(c, cm[0], cm[1])).view(B, L, 3, HEADS, HD)
        qkv = torch.cat([qx, qc], dim=1).permute(2, 0, 3, 1, 4)  # [3, B, H, N+L, HD]
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, N + L, D)
        x = x + xm[2][:, None] * self.x_proj(a[:, :N])
        x = x + xm[5][:, None] * self.x_fc2(F.gelu(self.x_fc1(self.modulate(x, xm[3], xm[4])), approximate="tanh"))
        if self.pre_only:
            return x, c
        c = c + cm[2][:, None] * self.c_proj(a[:, N:])
        c = c + cm[5][:, None] * self.c_fc2(F.gelu(self.c_fc1(self.modulate(c, cm[3], cm[4])), approximate="tanh"))
        return x, c


class MMDiT(nn.Module):
    def __init__(self):
        super().__init__()
        self.x_embed = nn.Conv2d(CIN, D, PATCH, stride=PATCH)
        self.pos = nn.Parameter(torch.randn(1, GRID * GRID, D) * 0.5)
        self.t1, self.t2 = nn.Linear(256, D), nn.Linear(D, D)
        self.y1, self.y2 = nn.Linear(POOLED, D), nn.Linear(D, D)
        self.ctx = nn.Linear(CTX_DIM, D)
        self.blocks = nn.ModuleList([Block(i == DEPTH - 1) for i in range(DEPTH)])
        self.f_mod, self.f_lin = nn.Linear(D, 2 * D), nn.Linear(D, PATCH * PATCH * CIN)

    def forward(self, x, context, pooled, tfreq):
        B, _, h, w = x.shape
        gh, gw = h // PATCH, w // PATCH
        cvec = self.t2(F.silu(self.t1(tfreq))) + self.y2(F.silu(self.y1(pooled)))
        sc = F.silu(cvec)
        top, left = (GRID - gh) // 2, (GRID - gw) // 2
        pos = self.pos.view(1, GRID, GRID, D)[:, top:top + gh, left:left + gw].reshape(1, gh * gw, D)
        xt = self.x_embed(x).flatten(2).transpose(1, 2) + pos
        c = self.ctx(context)
        for blk in self.blocks:
            xt, c = blk(xt, c, sc)
        shift, scale = self.f_mod(sc).chunk(2, dim=1)
        out = self.f_lin(Block.modulate(xt, shift, scale))
        out = out.view(B, gh, gw, PATCH, PATCH, CIN).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, CIN, h, w)


def flops(lat):
    n = (lat // PATCH) ** 2
    lin = 2 * 2 * (256 * D + D * D) + 2 * 2 * (POOLED * D + D * D) + 2 * 2 * n * CIN * 4 * D + 2 * 2 * CTX * CTX_DIM * D
    att = 0
    for i in range(DEPTH):
        last = i == DEPTH - 1
        lin += 2 * 2 * D * (6 * D + (2 if last else 6) * D) + 2 * 2 * n * D * (4 * D + 2 * MLP)
        lin += 2 * 2 * CTX * D * 3 * D if last else 2 * 2 * CTX * D * (4 * D + 2 * MLP)
        att += 4 * 2 * D * (n + (0 if last else CTX)) * (n + CTX)
    lin += 2 * 2 * D * 2 * D + 2 * 2 * n * D * 4 * CIN
    return lin, att


def timeit(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2], ts[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", default="512,1024")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    print(f"torch {torch.__version__}, device {name}")
    print(f'RESULT torch_device="{name}" torch_version="{torch.__version__}"')
    torch.backends.cuda.matmul.allow_tf32 = True
    with torch.device(dev):
        model = MMDiT()
    for p in model.parameters():  # the scale of nn.Linear's default init, as random as the C bench's weights
        if p.dim() == 2 and p is not model.pos:
            nn.init.uniform_(p, -1.7 / math.sqrt(p.shape[1]), 1.7 / math.sqrt(p.shape[1]))
    model = model.to(torch.bfloat16).eval()
    compiled = None if args.no_compile else torch.compile(model)
    for r in [int(v) for v in args.res.split(",")]:
        lat = r // 8
        x = torch.randn(2, CIN, lat, lat, device=dev, dtype=torch.bfloat16)
        ctx = torch.randn(2, CTX, CTX_DIM, device=dev, dtype=torch.bfloat16)
        pooled = torch.randn(2, POOLED, device=dev, dtype=torch.bfloat16)
        tf = torch.randn(2, 256, device=dev, dtype=torch.bfloat16)
        lin, att = flops(lat)
        with torch.inference_mode():
            med, best = timeit(lambda: model(x, ctx, pooled, tf), args.warmup, args.reps)
            print(f"{r}² eager: median {med:.2f} ms (best {best:.2f}), {(lin + att) / med / 1e9:.1f} TFLOP/s")
            print(f"RESULT torch_mode=eager res={r} step_ms={med:.3f} best_ms={best:.3f} tflops={(lin + att) / med / 1e9:.1f}")
            n = (lat // PATCH) ** 2 + CTX
            q = torch.randn(2, HEADS, n, HD, device=dev, dtype=torch.bfloat16)
            k, v = torch.randn_like(q), torch.randn_like(q)
            amed, _ = timeit(lambda: F.scaled_dot_product_attention(q, k, v), args.warmup, args.reps)
            af = 4 * 2 * D * n * n
            print(f"{r}² SDPA alone [2, 24, {n}, 64]: {amed:.3f} ms, {af / amed / 1e9:.1f} TFLOP/s")
            print(f"RESULT torch_mode=sdpa res={r} attn_ms={amed:.4f} attn_tflops={af / amed / 1e9:.1f}")
            if compiled is not None:
                t0 = time.time()
                compiled(x, ctx, pooled, tf)
                torch.cuda.synchronize()
                ct = time.time() - t0
                med, best = timeit(lambda: compiled(x, ctx, pooled, tf), args.warmup, args.reps)
                print(f"{r}² torch.compile: median {med:.2f} ms (best {best:.2f}), {(lin + att) / med / 1e9:.1f} TFLOP/s (compile {ct:.0f} s)")
                print(f"RESULT torch_mode=compile res={r} step_ms={med:.3f} best_ms={best:.3f} tflops={(lin + att) / med / 1e9:.1f}")
    m = 2 * 4096
    a = torch.randn(m, D, device=dev, dtype=torch.bfloat16)
    w = torch.randn(MLP, D, device=dev, dtype=torch.bfloat16)
    b = torch.randn(MLP, device=dev, dtype=torch.bfloat16)
    with torch.inference_mode():
        gmed, _ = timeit(lambda: F.gelu(F.linear(a, w, b), approximate="tanh"), args.warmup, args.reps)
        big = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        pmed, _ = timeit(lambda: big @ big, args.warmup, args.reps)
    print(f"fc1 Linear+GELU [{m}×1536]·[1536×6144]: {gmed:.3f} ms, {2 * m * D * MLP / gmed / 1e9:.1f} TFLOP/s")
    print(f"8192³ bf16 matmul (the card's practical peak): {pmed:.3f} ms, {2 * 8192 ** 3 / pmed / 1e9:.1f} TFLOP/s")
    print(f"RESULT torch_gemm_tflops={2 * m * D * MLP / gmed / 1e9:.1f} peak_matmul_tflops={2 * 8192 ** 3 / pmed / 1e9:.1f}")
    print(f"RESULT torch_peak_mem_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}")


if __name__ == "__main__":
    main()
