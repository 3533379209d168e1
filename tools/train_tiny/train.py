"""Train sd3q's tiny SD3 model (PyTorch, diffusers/transformers classes).

Stages (each resumable from its checkpoint in --workdir):

  vae     the 16-channel AutoencoderKL as an autoencoder: L1 + L2 + image-gradient L1
          reconstruction loss + a small KL term; at the end the latent statistics give
          SD3-style shift_factor (= mean) and scaling_factor (= 1 / std).
  dit     the MMDiT and the three text encoders jointly, rectified flow:
          x_t = (1 - t) x0 + t eps, target v = eps - x0, t = sigmoid(N(0, 1))
          (SD3's logit-normal sampling), MSE loss; 10% of captions dropped to "" for
          classifier-free guidance; the VAE is frozen; prompt assembly identical to
          StableDiffusion3Pipeline.encode_prompt (see tiny_model.encode_text).
  export  write the diffusers folder (fp16 weights, model_index.json, scheduler, the
          three tokenizers) from the checkpoints.

Training stops at --time-budget-s of wall-clock time (or --max-steps).  Learning rate:
linear warm-up, constant, then a linear decay to --min-lr-ratio over the last
--decay-frac of the budget (warmup-stable-decay, so a resumed run simply decays again).
Training images are rendered on the fly (on the GPU when there is one) from a bank of
scenes sampled with --seed.

Examples:
  python train.py vae --workdir /tmp/w --time-budget-s 100
  python train.py dit --workdir /tmp/w --time-budget-s 330
  python train.py export --workdir /tmp/w --out models/tiny-sd3
  python train.py dit --workdir /tmp/w --resume            # continue from /tmp/w/dit.pt
  python train.py dit --workdir /tmp/w2 --init-from models/tiny-sd3   # fine-tune a shipped model
  torchrun --nproc_per_node=4 train.py dit --workdir /tmp/w3 --init-from models/tiny-sd3 --freeze-text
      # data parallel, one process per GPU (each its own scene bank and noise, gradients averaged every step);
      # --freeze-text keeps the text encoders fixed and caches the captions' embeddings (the MMDiT alone trains)
"""
import argparse
import io
import os
import shutil
import sys
import tarfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import shapes  # noqa: E402
import tiny_model as tm  # noqa: E402


RANK = int(os.environ.get("RANK", "0"))  # torchrun's process rank; only rank 0 logs and writes files


def log(msg, fh=None):
    if RANK != 0:
        return
    line = "[%s] %s" % (time.strftime("%H:%M:%S"), msg)
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")
        fh.flush()


def device_of(args):
    if args.device:
        return torch.device(args.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def dist_setup(dev):
    """Data parallelism under torchrun (one process per GPU): returns (rank, world size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), world


def allreduce_grads(params, world):
    """Average the gradients over the ranks in one flat all-reduce (43 MB for the MMDiT)."""
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world
    for g, s in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(s)


def broadcast_float(x, dev, world):
    """Rank 0's value of x on every rank (so that all ranks take the same schedule decisions)."""
    if world == 1:
        return x
    import torch.distributed as dist
    t = torch.tensor([x], dtype=torch.float64, device=dev)
    dist.broadcast(t, 0)
    return float(t)


def bank_to_torch(sc, dev):
    out = {}
    for k, v in sc.items():
        dt = torch.float32 if v.dtype.kind == "f" else torch.long
        out[k] = torch.as_tensor(v, dtype=dt, device=dev)
    return out


T_START = time.time()


class Schedule:
    """Warmup-stable-decay on max(step progress, time progress).  The time budget counts
    from the start of the process, so set-up (data banks, tokenisation) is included."""

    def __init__(self, args, start_step):
        self.a = args
        self.t0 = T_START
        self.start = start_step

    def progress(self, step):
        p = (time.time() - self.t0) / self.a.time_budget_s
        if self.a.max_steps:
            p = max(p, (step - self.start) / self.a.max_steps)
        return p

    def lr(self, step, p=None):
        a = self.a
        warm = min(1.0, (step - self.start + 1) / max(a.warmup, 1))
        p = self.progress(step) if p is None else p
        f = 1.0
        if p > 1 - a.decay_frac:
            f = max(0.0, (1 - p) / a.decay_frac)
        return a.lr * warm * (a.min_lr_ratio + (1 - a.min_lr_ratio) * f)

    def done(self, step):
        return self.progress(step) >= 1.0


class GradWatch:
    """Flags a run whose gradient norm drifts up: the median of the logged norms in the first `ref_lines` log lines after
    warm-up is the reference, and `patience` consecutive lines above `ratio` times it give a warning (phase 8 of the
    tiny model went from 0.05 to 7 within 10,000 steps while its loss barely moved at first)."""

    def __init__(self, warmup, ref_lines=10, ratio=4.0, patience=3):
        self.warmup, self.ref_lines, self.ratio, self.patience = warmup, ref_lines, ratio, patience
        self.early, self.ref, self.high = [], None, 0

    def update(self, step, gnorm):
        """Returns a warning line or None."""
        if step <= self.warmup:
            return None
        if self.ref is None:
            self.early.append(gnorm)
            if len(self.early) == self.ref_lines:
                self.ref = float(sorted(self.early)[len(self.early) // 2])
            return None
        self.high = self.high + 1 if gnorm > self.ratio * self.ref else 0
        if self.high == self.patience:
            return ("WARNING gradient norm %.3g at step %d: %d log lines in a row above %.0fx the early median %.3g; the "
                    "run may be diverging" % (gnorm, step, self.patience, self.ratio, self.ref))
        return None


def autocast(dev, enabled=True):
    if dev.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def save_ckpt(path, obj):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# stage vae
# ------------------------------------------------------------------------------------------
def grad_l1(x, y):
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


@torch.no_grad()
def fg_weights(x, half, w):
    """Per-pixel loss weights [B, 1, H, W] for images x in [-1, 1] (plain backgrounds): 1 on the background, 1 + w *
    (11 / half)^2 within 2 px of an object (half = the scene's object half-extent at 128 px), so edges and tips weigh
    more, small objects most (the squared factor makes a small object's edge about 4x a large one's)."""
    fg = ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.02).float()   # the corner is background (margin)
    fg = F.max_pool2d(fg, 5, stride=1, padding=2)
    return 1.0 + w * fg * (11.0 / half.float()).pow(2)[:, None, None, None]


def weighted_recon_loss(rec, x, wt):
    """The VAE's reconstruction loss (L1 + L2 + 0.5 L1 of the image gradients) with per-pixel weights wt, normalised
    by the weights' mean so the loss scale (and so the learning rate) stays comparable with the unweighted one."""
    e = rec - x
    n = wt.mean()
    wx = torch.maximum(wt[..., :, 1:], wt[..., :, :-1])
    wy = torch.maximum(wt[..., 1:, :], wt[..., :-1, :])
    gx = (e[..., :, 1:] - e[..., :, :-1]).abs()
    gy = (e[..., 1:, :] - e[..., :-1, :]).abs()
    return ((wt * e.abs()).mean() + (wt * e * e).mean() + 0.5 * ((wx * gx).mean() + (wy * gy).mean())) / n


@torch.no_grad()
def latent_stats(vae, bank, dev, n=4096, bs=256, seed=123):
    g = torch.Generator(device=dev).manual_seed(seed)
    zs = []
    nb = bank["shape"].shape[0]
    for i in range(0, n, bs):
        idx = torch.randint(nb, (bs,), device=dev, generator=g)
        x = shapes.render(bank, idx, device=dev) * 2 - 1
        zs.append(vae.encode(x).latent_dist.sample(generator=g).float())
    z = torch.cat(zs)
    return float(z.mean()), float(z.std())


@torch.no_grad()
def vae_psnr(vae, dev, n=256, seed=99):
    sc = bank_to_torch(shapes.sample_scenes(seed, n, "all"), dev)
    x = shapes.render(sc, device=dev)
    rec = vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample
    rec = ((rec + 1) / 2).clamp(0, 1)
    mse = ((rec - x) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(1.0 / mse.clamp(min=1e-10))).mean())


def export_vae(vae, shift, scale, out):
    """Save the VAE as a diffusers subfolder (fp16) with SD3-style latent shift/scale."""
    import copy
    v = copy.deepcopy(vae).to("cpu").half()
    v.register_to_config(shift_factor=float(shift), scaling_factor=float(scale))
    if os.path.exists(out):
        shutil.rmtree(out)
    v.save_pretrained(out)


def tar_parts(src, arcname, ship_dir, prefix):
    """Tar folder src (as arcname) into ship_dir/prefix.part0, .part1, ... (<= 15 MiB each)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.add(src, arcname=arcname)
    data = buf.getvalue()
    os.makedirs(ship_dir, exist_ok=True)
    for f in os.listdir(ship_dir):
        if f.startswith(prefix + ".part"):
            os.remove(os.path.join(ship_dir, f))
    part = 15 * 1024 * 1024
    for i in range(0, len(data), part):
        with open(os.path.join(ship_dir, "%s.part%d" % (prefix, i // part)), "wb") as f:
            f.write(data[i:i + part])
    return len(data)


def stage_vae(args):
    """Train the VAE from scratch, or (--init-from DIR --decoder-only) fine-tune the
    decoder of a trained model with its encoder frozen, which keeps the latent space (and
    so the trained MMDiT) valid."""
    dev = device_of(args)
    os.makedirs(args.workdir, exist_ok=True)
    fh = open(os.path.join(args.workdir, "log_vae.txt"), "a")
    torch.manual_seed(args.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    vae = tm.build_vae()
    shift = scale = None
    if args.init_from:
        from diffusers import AutoencoderKL
        v = AutoencoderKL.from_pretrained(os.path.join(args.init_from, "vae"), torch_dtype=torch.float32)
        vae.load_state_dict(v.state_dict())
        shift, scale = v.config.shift_factor, v.config.scaling_factor
        log("initialised VAE from %s" % args.init_from, fh)
    vae.to(dev)
    if args.decoder_only:
        if shift is None:
            raise SystemExit("--decoder-only needs --init-from")
        vae.encoder.requires_grad_(False)
        train_params = list(vae.decoder.parameters())
    else:
        train_params = list(vae.parameters())
    opt = torch.optim.AdamW(train_params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ck = os.path.join(args.workdir, "vae.pt")
    step, elapsed_before = 0, 0.0
    if args.resume and os.path.exists(ck):
        st = torch.load(ck, map_location=dev, weights_only=False)
        vae.load_state_dict(st["vae"])
        opt.load_state_dict(st["opt"])
        step, elapsed_before = st["step"], st["elapsed"]
        log("resumed vae at step %d" % step, fh)
    bank = bank_to_torch(shapes.sample_scenes_focus(args.seed + step, args.bank, "train", args.focus), dev)
    nb = args.bank
    g = torch.Generator(device=dev).manual_seed(args.seed + 7 + step)
    sched = Schedule(args, step)
    log("vae: %d params (%d trained), batch %d, lr %g, device %s" % (
        tm.count_params(vae), sum(p.numel() for p in train_params), args.batch, args.lr, dev), fh)
    t_last, n_last, acc, acc_n = time.time(), step, 0.0, 0
    last_ck = last_ship = time.time()
    vae.train()
    if args.decoder_only:
        vae.encoder.eval()
    while not sched.done(step):
        lr = sched.lr(step)
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.randint(nb, (args.batch,), device=dev, generator=g)
        with torch.no_grad():
            x = shapes.render(bank, idx, device=dev) * 2 - 1
        with autocast(dev, args.bf16):
            if args.decoder_only:
                with torch.no_grad():
                    post = vae.encode(x).latent_dist
                    z = post.sample(generator=g)
            else:
                post = vae.encode(x).latent_dist
                z = post.sample(generator=g)
            rec = vae.decode(z).sample
        rec = rec.float()
        if args.fg_weight > 0:
            loss = weighted_recon_loss(rec, x, fg_weights(x, bank["half"][idx], args.fg_weight))
        else:
            loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 0.5 * grad_l1(rec, x)
        kl = torch.zeros((), device=dev)
        if not args.decoder_only:
            kl = 0.5 * (post.mean.float() ** 2 + post.var.float() - 1.0 - post.logvar.float()).mean()
            loss = loss + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(train_params, 1.0)
        opt.step()
        step += 1
        acc = acc + loss.detach()  # stays on the device: no synchronisation per step
        acc_n += 1
        if step % args.log_every == 0 or step == 1:
            dt = time.time() - t_last
            log("vae step %d loss %.5f kl %.3f lr %.2e  %.1f it/s %.0f img/s  t=%.0fs" % (
                step, float(acc) / acc_n, float(kl.detach()), lr, (step - n_last) / dt, (step - n_last) * args.batch / dt,
                time.time() - sched.t0), fh)
            t_last, n_last, acc, acc_n = time.time(), step, 0.0, 0
        if time.time() - last_ck > args.ckpt_every_s:
            save_ckpt(ck, dict(vae=vae.state_dict(), opt=opt.state_dict(), step=step,
                               elapsed=elapsed_before + time.time() - sched.t0,
                               shift_factor=shift, scaling_factor=scale))
            last_ck = time.time()
            if args.ship_dir and shift is not None and time.time() - last_ship > args.ship_every_s:
                export_vae(vae, shift, scale, os.path.join(args.workdir, "vae_export"))
                tar_parts(os.path.join(args.workdir, "vae_export"), "vae", args.ship_dir, "vae.tar")
                log("shipped VAE of step %d" % step, fh)
                last_ship = time.time()
    vae.eval()
    if not args.decoder_only:
        mean, std = latent_stats(vae, bank, dev, n=args.stats_n, bs=min(256, args.stats_n))
        shift, scale = mean, 1.0 / std
        log("latent mean %.4f std %.4f -> shift_factor %.4f scaling_factor %.4f" % (mean, std, shift, scale), fh)
    psnr = vae_psnr(vae, dev, n=min(256, args.stats_n))
    log("vae done: %d steps in %.0fs; PSNR %.2f dB" % (step, time.time() - sched.t0, psnr), fh)
    save_ckpt(ck, dict(vae=vae.state_dict(), opt=opt.state_dict(), step=step,
                       elapsed=elapsed_before + time.time() - sched.t0,
                       shift_factor=shift, scaling_factor=scale, psnr=psnr))
    export_vae(vae, shift, scale, os.path.join(args.workdir, "vae_export"))
    if args.ship_dir:
        tar_parts(os.path.join(args.workdir, "vae_export"), "vae", args.ship_dir, "vae.tar")
        log("shipped VAE of step %d" % step, fh)


# ------------------------------------------------------------------------------------------
# stage dit
# ------------------------------------------------------------------------------------------
def dit_init_(tr):
    """DiT-style initialisation: xavier linears, zero adaLN modulation and output layer."""
    for m in tr.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    for name, m in tr.named_modules():
        if isinstance(m, torch.nn.Linear) and (name.endswith("norm1.linear") or name.endswith("norm1_context.linear")
                                               or name == "norm_out.linear" or name == "proj_out"):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)


def load_vae_for_dit(args, dev):
    vae = tm.build_vae()
    if args.init_from:
        from diffusers import AutoencoderKL
        v = AutoencoderKL.from_pretrained(os.path.join(args.init_from, "vae"), torch_dtype=torch.float32)
        vae.load_state_dict(v.state_dict())
        shift, scale = v.config.shift_factor, v.config.scaling_factor
        ck = os.path.join(args.workdir, "vae.pt")
        if RANK == 0 and not os.path.exists(ck):  # so that export finds the VAE in the workdir
            save_ckpt(ck, dict(vae=vae.state_dict(), step=0, elapsed=0.0,
                               shift_factor=shift, scaling_factor=scale))
    else:
        st = torch.load(os.path.join(args.workdir, "vae.pt"), map_location="cpu", weights_only=False)
        vae.load_state_dict(st["vae"])
        shift, scale = st["shift_factor"], st["scaling_factor"]
    vae.to(dev).eval().requires_grad_(False)
    return vae, shift, scale


def build_dit_models(args):
    t1, t2, t3 = tm.load_tokenizers(args.tokenizers)
    te1, te2, te3 = tm.build_text_encoders(t1, t3)
    tr = tm.build_transformer()
    dit_init_(tr)
    models = dict(transformer=tr, text_encoder=te1, text_encoder_2=te2, text_encoder_3=te3)
    return (t1, t2, t3), models


def load_models_from_folder(models, folder):
    from safetensors.torch import load_file
    files = dict(transformer="transformer/diffusion_pytorch_model.safetensors",
                 text_encoder="text_encoder/model.safetensors",
                 text_encoder_2="text_encoder_2/model.safetensors",
                 text_encoder_3="text_encoder_3/model.safetensors")
    for k, m in models.items():
        sd = {n: t.float() for n, t in load_file(os.path.join(folder, files[k])).items()}
        if k == "text_encoder_3" and "encoder.embed_tokens.weight" not in sd:
            sd["encoder.embed_tokens.weight"] = sd["shared.weight"]
        missing, unexpected = m.load_state_dict(sd, strict=False)
        missing = [n for n in missing if not n.endswith("position_ids")]
        if missing or unexpected:
            raise RuntimeError("%s: missing %s unexpected %s" % (k, missing, unexpected))


@torch.no_grad()
def text_table(models, ids1, ids2, ids3, dev, bf16, bs=512):
    """Context [n, 333, 256] and pooled [n, 192] embeddings of the captions ids*, for frozen text encoders (bf16 where
    the training autocasts to bf16, else f32)."""
    te1, te2, te3 = (models[k] for k in ("text_encoder", "text_encoder_2", "text_encoder_3"))
    n = ids1.shape[0]
    dt = torch.bfloat16 if dev.type == "cuda" and bf16 else torch.float32
    ctx = pooled = None
    for i in range(0, n, bs):
        with autocast(dev, bf16):
            c, p = tm.encode_text(te1, te2, te3, ids1[i:i + bs], ids2[i:i + bs], ids3[i:i + bs])
        if ctx is None:
            ctx = torch.empty((n,) + tuple(c.shape[1:]), dtype=dt, device=dev)
            pooled = torch.empty((n,) + tuple(p.shape[1:]), dtype=dt, device=dev)
        ctx[i:i + bs] = c.to(dt)
        pooled[i:i + bs] = p.to(dt)
    return ctx, pooled


def stage_dit(args):
    dev = device_of(args)
    rank, world = dist_setup(dev)
    os.makedirs(args.workdir, exist_ok=True)
    fh = open(os.path.join(args.workdir, "log_dit.txt"), "a") if rank == 0 else None
    torch.manual_seed(args.seed)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    toks, models = build_dit_models(args)
    if args.init_from:
        load_models_from_folder(models, args.init_from)
        log("initialised from %s" % args.init_from, fh)
    vae, shift, scale = load_vae_for_dit(args, dev)
    for m in models.values():
        m.to(dev).train()
    if args.freeze_text:
        for k in ("text_encoder", "text_encoder_2", "text_encoder_3"):
            models[k].eval().requires_grad_(False)
    names, params = [], []
    for mk, m in models.items():
        for n, p in m.named_parameters():
            if p.requires_grad:
                names.append((mk, n))
                params.append(p)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0, eps=1e-8)
    ema = [p.detach().clone().float() for p in params]
    ck = os.path.join(args.workdir, "dit.pt")
    step, elapsed_before = 0, 0.0
    if args.resume and os.path.exists(ck):
        st = torch.load(ck, map_location=dev, weights_only=False)
        for mk, m in models.items():
            m.load_state_dict(st["models"][mk])
        opt.load_state_dict(st["opt"])
        for e, (mk, n) in zip(ema, names):
            e.copy_(st["ema"][mk][n])
        step, elapsed_before = st["step"], st["elapsed"]
        log("resumed dit at step %d" % step, fh)
    # caption token table: index -> ids (last row = empty caption)
    t0 = time.time()
    caps = shapes.all_captions()
    drop_of = None
    if args.attr_drop > 0:
        # attribute dropout: each caption also without its colour word and without its shape word (distinct texts
        # appended once); drop_of[k][i] is the row of caption i's variant k (the empty caption maps to itself)
        rows = {c: i for i, c in enumerate(caps)}
        drop_of = []
        for what in ("colour", "shape"):
            m = []
            for i in range(shapes.N_CAPTIONS):
                c = shapes.partial_caption(i, what)
                if c not in rows:
                    rows[c] = len(caps)
                    caps.append(c)
                m.append(rows[c])
            drop_of.append(torch.tensor(m + [shapes.EMPTY_CAPTION_INDEX], device=dev))
    ids1, ids2, ids3 = [t.to(dev) for t in tm.tokenize_all(*toks, caps)]
    log("tokenised %d captions in %.1fs" % (len(caps), time.time() - t0), fh)
    nb = args.latent_bank or args.bank
    # each rank draws its own scenes and noise
    bank = bank_to_torch(shapes.sample_scenes_focus(args.seed + 1000 + step + 7919 * rank, nb, "train", args.focus),
                         dev)
    g = torch.Generator(device=dev).manual_seed(args.seed + 11 + step + 104729 * rank)
    text_ctx = text_pooled = row_of = None
    if args.freeze_text:
        # embeddings of the captions the bank uses (and ""); row_of maps a caption index to its row
        t0 = time.time()
        used = [bank["caption"], torch.tensor([shapes.EMPTY_CAPTION_INDEX], device=dev)]
        used += [d[bank["caption"]] for d in drop_of or []]
        used = torch.unique(torch.cat(used))
        row_of = torch.full((len(caps),), -1, dtype=torch.long, device=dev)
        row_of[used] = torch.arange(len(used), device=dev)
        text_ctx, text_pooled = text_table(models, ids1[used], ids2[used], ids3[used], dev, args.bf16)
        log("frozen text encoders: %d caption embeddings in %.1fs" % (len(used), time.time() - t0), fh)
    lat_mean = lat_std = None
    if args.latent_bank:
        # pre-encode every scene once: posterior mean and std (bf16), sampled per step
        t0 = time.time()
        lat_mean = torch.empty((nb, 16, tm.IMAGE_SIZE // 8, tm.IMAGE_SIZE // 8), dtype=torch.bfloat16, device=dev)
        lat_std = torch.empty_like(lat_mean)
        with torch.no_grad():
            for i in range(0, nb, 1024):
                idx = torch.arange(i, min(i + 1024, nb), device=dev)
                with autocast(dev, args.bf16):
                    post = vae.encode(shapes.render(bank, idx, device=dev) * 2 - 1).latent_dist
                lat_mean[i:i + len(idx)] = post.mean.to(torch.bfloat16)
                lat_std[i:i + len(idx)] = post.std.to(torch.bfloat16)
        log("latent bank: %d scenes encoded in %.1fs" % (nb, time.time() - t0), fh)
    n_tr = sum(p.numel() for p in params)
    log("dit: %d trainable params (transformer %d), batch %d x %d ranks, lr %g, latent shift %.4f scale %.4f, "
        "device %s" % (n_tr, tm.count_params(models["transformer"]), args.batch, world, args.lr, shift, scale, dev), fh)
    sched = Schedule(args, step)
    start_step = step
    t_last, n_last, acc, acc_n = time.time(), step, 0.0, 0
    last_ck, last_ship = time.time(), time.time()
    tr, te1, te2, te3 = (models[k] for k in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3"))
    # the forward the steps call: torch.compile fuses the MMDiT's many small elementwise kernels (hidden 192);
    # the module itself (tr) stays the one whose parameters the optimizer, EMA and checkpoints see
    fwd = torch.compile(tr) if args.compile else tr
    watch = GradWatch(args.warmup)

    def checkpoint():
        if rank != 0:
            return
        save_ckpt(ck, dict(models={k: m.state_dict() for k, m in models.items()}, opt=opt.state_dict(),
                           ema={mk: {n: e for e, (mk2, n) in zip(ema, names) if mk2 == mk} for mk in models},
                           step=step, elapsed=elapsed_before + time.time() - sched.t0,
                           shift_factor=shift, scaling_factor=scale))

    while True:
        p = broadcast_float(sched.progress(step), dev, world)
        if p >= 1.0:
            break
        lr = sched.lr(step, p)
        for pg in opt.param_groups:
            pg["lr"] = lr
        idx = torch.randint(nb, (args.batch,), device=dev, generator=g)
        with torch.no_grad():
            if lat_mean is not None:
                m, sd = lat_mean[idx].float(), lat_std[idx].float()
                z = m + sd * torch.randn(m.shape, device=dev, generator=g)
            else:
                x = shapes.render(bank, idx, device=dev) * 2 - 1
                with autocast(dev, args.bf16):
                    z = vae.encode(x).latent_dist.sample(generator=g)
            x0 = (z.float() - shift) * scale
            cap = bank["caption"][idx]
            if drop_of is not None:  # colour word left out with probability attr_drop, else the shape word likewise
                u = torch.rand(args.batch, device=dev, generator=g)
                cap = torch.where(u < args.attr_drop, drop_of[0][cap],
                                  torch.where(u < 2 * args.attr_drop, drop_of[1][cap], cap))
            drop = torch.rand(args.batch, device=dev, generator=g) < args.cap_drop
            cap = torch.where(drop, torch.full_like(cap, shapes.EMPTY_CAPTION_INDEX), cap)
            eps = torch.randn(x0.shape, device=dev, generator=g)
            t = torch.sigmoid(torch.randn(args.batch, device=dev, generator=g))
            xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
            target = eps - x0
        def forward_backward(f):
            with autocast(dev, args.bf16):
                if text_ctx is not None:
                    ctx, pooled = text_ctx[row_of[cap]], text_pooled[row_of[cap]]
                else:
                    ctx, pooled = tm.encode_text(te1, te2, te3, ids1[cap], ids2[cap], ids3[cap])
                v = f(hidden_states=xt, encoder_hidden_states=ctx, pooled_projections=pooled,
                      timestep=t * 1000.0, return_dict=False)[0]
            loss = F.mse_loss(v.float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            return loss

        try:
            loss = forward_backward(fwd)
        except Exception as e:  # noqa: BLE001 -- a compiler failure at the first step falls back to eager
            if fwd is tr or step > start_step:
                raise
            log("torch.compile failed (%s: %s); training eagerly" % (type(e).__name__, str(e)[:300]), fh)
            fwd = tr
            loss = forward_backward(fwd)
        if world > 1:
            allreduce_grads(params, world)
        gn = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        step += 1
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - d)
        acc = acc + loss.detach()  # stays on the device: no synchronisation per step
        acc_n += 1
        if step % args.log_every == 0 or step in (1, 10, 50):
            dt = time.time() - t_last
            log("dit step %d loss %.4f gnorm %.3f lr %.2e  %.2f it/s %.0f img/s  t=%.0fs" % (
                step, float(acc) / acc_n, float(gn), lr, (step - n_last) / dt, (step - n_last) * args.batch * world / dt,
                time.time() - sched.t0), fh)
            t_last, n_last, acc, acc_n = time.time(), step, 0.0, 0
            warn = watch.update(step, float(gn))
            if warn:
                log(warn, fh)
        if time.time() - last_ck > args.ckpt_every_s:
            checkpoint()
            last_ck = time.time()
            if rank == 0 and args.ship_dir and time.time() - last_ship > args.ship_every_s:
                ship(args.workdir, args.ship_dir, args.tokenizers, "ema", fh)
                last_ship = time.time()
    checkpoint()
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else 0.0
    log("dit done: %d steps in %.0fs (peak GPU memory %.1f GiB)" % (step, time.time() - sched.t0, mem), fh)
    if rank == 0 and args.ship_dir:
        ship(args.workdir, args.ship_dir, args.tokenizers, "ema", fh)
    if world > 1:
        import torch.distributed as dist
        dist.barrier()
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------
def export(workdir, out, tokenizers, weights="ema"):
    """Write the diffusers folder (fp16) from workdir/vae.pt and workdir/dit.pt."""
    from diffusers import StableDiffusion3Pipeline
    toks, models = build_dit_models(argparse.Namespace(tokenizers=tokenizers))
    st = torch.load(os.path.join(workdir, "dit.pt"), map_location="cpu", weights_only=False)
    for mk, m in models.items():
        m.load_state_dict(st["models"][mk])
        if weights == "ema":
            sd = m.state_dict()
            for n, tsr in st["ema"][mk].items():
                sd[n] = tsr.float()
            m.load_state_dict(sd)
    vae = tm.build_vae()
    vs = torch.load(os.path.join(workdir, "vae.pt"), map_location="cpu", weights_only=False)
    vae.load_state_dict(vs["vae"])
    vae.register_to_config(shift_factor=float(st["shift_factor"]), scaling_factor=float(st["scaling_factor"]))
    pipe = StableDiffusion3Pipeline(
        transformer=models["transformer"].half(), scheduler=tm.build_scheduler(), vae=vae.half(),
        text_encoder=models["text_encoder"].half(), tokenizer=toks[0],
        text_encoder_2=models["text_encoder_2"].half(), tokenizer_2=toks[1],
        text_encoder_3=models["text_encoder_3"].half(), tokenizer_3=toks[2])
    if os.path.exists(out):
        shutil.rmtree(out)
    pipe.save_pretrained(out)
    # keep tokenizer files byte-identical to the trained ones
    for sub in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        shutil.rmtree(os.path.join(out, sub))
        shutil.copytree(os.path.join(tokenizers, sub), os.path.join(out, sub))
    return st["step"]


def ship(workdir, ship_dir, tokenizers, weights, fh=None):
    """Export to workdir/ship_<weights> and store it as a tar split into <= 15 MiB parts."""
    t0 = time.time()
    d = os.path.join(workdir, "ship_" + weights)
    step = export(workdir, d, tokenizers, weights)
    n = tar_parts(d, "tiny-sd3", ship_dir, "model.tar")
    log("shipped %s weights of step %d (%d bytes) in %.1fs" % (weights, step, n, time.time() - t0), fh)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["vae", "dit", "export"])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tokenizers", default=tm.MODEL_DIR, help="folder with tokenizer, tokenizer_2, tokenizer_3")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue from the stage's checkpoint in --workdir")
    ap.add_argument("--init-from", default=None, help="start from a diffusers folder's weights")
    ap.add_argument("--decoder-only", action="store_true", help="(vae) fine-tune only the decoder")
    ap.add_argument("--latent-bank", type=int, default=0,
                    help="(dit) pre-encode this many scenes' latent distributions instead of "
                         "rendering and encoding every batch")
    ap.add_argument("--time-budget-s", type=float, default=600)
    ap.add_argument("--max-steps", type=int, default=0)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--decay-frac", type=float, default=0.2)
    ap.add_argument("--min-lr-ratio", type=float, default=0.05)
    ap.add_argument("--bank", type=int, default=None, help="number of pre-sampled scenes")
    ap.add_argument("--stats-n", type=int, default=4096, help="(vae) images for the latent statistics")
    ap.add_argument("--focus", type=float, default=0.0,
                    help="fraction of the scene bank drawn from stars and small objects only (shapes.is_focus)")
    ap.add_argument("--fg-weight", type=float, default=0.0,
                    help="(vae) extra loss weight near objects, scaled up for small ones (fg_weights)")
    ap.add_argument("--kl", type=float, default=1e-4, help="(vae) KL weight (per-element mean)")
    ap.add_argument("--freeze-text", action="store_true",
                    help="(dit) keep the text encoders fixed and train the MMDiT on cached caption embeddings")
    ap.add_argument("--compile", action="store_true", help="(dit) torch.compile the MMDiT's forward and backward")
    ap.add_argument("--cap-drop", type=float, default=0.1, help="(dit) caption dropout probability")
    ap.add_argument("--attr-drop", type=float, default=0.0,
                    help="(dit) probability of leaving the colour word out of a caption, and again of leaving the shape "
                         "word out (\"two small red objects ...\"); 0: full captions only")
    ap.add_argument("--ema", type=float, default=0.999, help="(dit) EMA decay")
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--ckpt-every-s", type=float, default=60)
    ap.add_argument("--ship-dir", default=None, help="periodically export + tar the model (dit: EMA) here")
    ap.add_argument("--ship-every-s", type=float, default=120)
    ap.add_argument("--out", default=None, help="(export) output folder")
    ap.add_argument("--weights", default="ema", choices=["ema", "raw"], help="(export) which weights")
    a = ap.parse_args()
    defaults = dict(vae=dict(batch=64, lr=1e-3, warmup=200, bank=200000),
                    dit=dict(batch=256, lr=7e-4, warmup=300, bank=500000),
                    export=dict(batch=1, lr=0, warmup=0, bank=0))[a.stage]
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if not 0.0 <= a.attr_drop <= 0.5:
        ap.error("--attr-drop must be in [0, 0.5] (each of the two words is left out with this probability), got %g"
                 % a.attr_drop)
    if a.stage == "vae":
        stage_vae(a)
    elif a.stage == "dit":
        stage_dit(a)
    else:
        step = export(a.workdir, a.out, a.tokenizers, a.weights)
        print("exported %s weights of step %d to %s" % (a.weights, step, a.out))


if __name__ == "__main__":
    main()
