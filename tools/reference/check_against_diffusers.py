"""Cross-check the golden fixtures (made by our own reference) against diffusers /
transformers.  Run with the reference venv:

    /opt/refenv/bin/python tools/reference/check_against_diffusers.py [--golden tests/golden]

Prints relative errors ||a-b||/||b|| (b = stored golden) and exits non-zero if any
exceeds the tolerance (1e-5; diffusers runs in float32, the goldens are float64
results).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.dont_write_bytecode = True  # keep tools/reference free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sd3ref as R  # noqa: E402
import make_golden as G  # noqa: E402

import diffusers  # noqa: E402
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel  # noqa: E402

TOL = 1e-5
failures = []


def rel(a, b):
    a = torch.as_tensor(np.asarray(a, dtype=np.float64))
    b = torch.as_tensor(np.asarray(b, dtype=np.float64))
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).norm() / b.norm())


def report(name, err, tol=TOL):
    ok = err < tol
    print("  %-58s rel err %.3e %s" % (name, err, "ok" if ok else "FAIL (tol %.0e)" % tol))
    if not ok:
        failures.append(name)


def np_(t):
    return t.detach().cpu().double().numpy()


# --------------------------------------------------------------------------
# MMDiT
# --------------------------------------------------------------------------

def diffusers_mmdit(folder):
    """A float32 diffusers SD3Transformer2DModel for a case folder: diffusers layout
    via from_pretrained, single-file layout via our own name conversion."""
    if os.path.isdir(os.path.join(folder, "transformer")):
        return SD3Transformer2DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=torch.float32)
    W = R.load_safetensors(os.path.join(folder, "model.safetensors"))
    W = {k[len(G.SINGLE_PREFIX):]: v for k, v in W.items()}
    cfg = R.mmdit_diffusers_config(W, sample_size=8)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    m = SD3Transformer2DModel(**cfg).to(torch.float32)
    sd = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in R.mmdit_to_diffusers(W).items()}
    m.load_state_dict(sd, strict=True)
    return m.eval()


def diffusers_single_file(folder):
    """diffusers' own single-file converter (independent check of our key mapping)."""
    W = R.load_safetensors(os.path.join(folder, "model.safetensors"))
    cfg = R.mmdit_diffusers_config({k[len(G.SINGLE_PREFIX):]: v for k, v in W.items()}, sample_size=8)
    with tempfile.TemporaryDirectory() as tmp:
        G.write_json(os.path.join(tmp, "transformer", "config.json"), cfg)
        return SD3Transformer2DModel.from_single_file(os.path.join(folder, "model.safetensors"), config=tmp,
                                                      subfolder="transformer", torch_dtype=torch.float32).eval()


def run_traced(m, io):
    """Forward with hooks that capture the golden intermediates."""
    tr = {}
    hooks = [
        m.pos_embed.register_forward_hook(lambda mod, i, o: tr.__setitem__("x_tokens", o)),
        m.time_text_embed.register_forward_hook(lambda mod, i, o: tr.__setitem__("c", o)),
        m.context_embedder.register_forward_hook(lambda mod, i, o: tr.__setitem__("ctx_tokens", o)),
        m.proj_out.register_forward_hook(lambda mod, i, o: tr.__setitem__("final_tokens", o)),
    ]
    for i, blk in enumerate(m.transformer_blocks):
        def hook(mod, inp, out, i=i):
            txt, img = out
            tr["block%d.img" % i] = img
            if txt is not None:
                tr["block%d.txt" % i] = txt
        hooks.append(blk.register_forward_hook(hook))
    T = lambda k: torch.from_numpy(io[k])
    with torch.no_grad():
        out = m(hidden_states=T("x"), encoder_hidden_states=T("context"), pooled_projections=T("pooled"),
                timestep=T("timestep")).sample
    for h in hooks:
        h.remove()
    tr["out"] = out
    return tr


def check_mmdit(golden):
    print("MMDiT (diffusers %s, torch %s)" % (diffusers.__version__, torch.__version__))
    for name, dtype, layout, *_ in G.MMDIT_CASES:
        folder = os.path.join(golden, "mmdit", name)
        io = R.load_safetensors(os.path.join(folder, "io.safetensors"))
        # our reference reproduces its own stored output
        tr = {}
        o = R.mmdit_forward(G.load_mmdit(folder), *(torch.from_numpy(io[k]) for k in ("x", "timestep", "context",
                                                                                   "pooled")), trace=tr)
        report("%s: reference rerun vs stored out" % name, rel(o, io["out"]), 1e-6)
        got = run_traced(diffusers_mmdit(folder), io)
        for k in sorted(io):
            if k in got:
                report("%s [%s layout]: diffusers %s" % (name, layout, k), rel(np_(got[k]), io[k]))
        missing = [k for k in io if k not in got and k not in ("x", "context", "pooled", "timestep")]
        assert not missing, missing
        if layout == "single":
            try:
                m = diffusers_single_file(folder)
                report("%s: diffusers from_single_file out" % name, rel(np_(run_traced(m, io)["out"]), io["out"]))
            except Exception as e:  # informative only
                print("  %s: diffusers from_single_file not usable here: %s" % (name, str(e).splitlines()[0]))


# --------------------------------------------------------------------------
# schedule and sampler
# --------------------------------------------------------------------------

def check_schedule(golden):
    print("schedule")
    with open(os.path.join(golden, "schedule.json")) as f:
        sch = json.load(f)["schedules"]
    for s in sch:
        d = FlowMatchEulerDiscreteScheduler(shift=s["shift"])
        d.set_timesteps(s["steps"])
        same = (np.array_equal(np.float32(s["sigmas"]), d.sigmas.numpy())
                and np.array_equal(np.float32(s["timesteps"]), d.timesteps.numpy()))
        ref = np.abs(R.flow_sigmas(s["steps"], s["shift"]) - np.float64(s["sigmas"])).max()
        print("  N=%-3d shift=%.1f  diffusers float32 bit-equal: %s; float64 reference max abs diff %.1e"
              % (s["steps"], s["shift"], same, ref))
        if not same or ref > 1e-6:
            failures.append("schedule %d %.1f" % (s["steps"], s["shift"]))


def check_sampler(golden):
    print("sampler (diffusers transformer + FlowMatchEulerDiscreteScheduler.step)")
    folder = os.path.join(golden, "sampler")
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    io = R.load_safetensors(os.path.join(folder, "io.safetensors"))
    m = diffusers_mmdit(os.path.normpath(os.path.join(folder, cfg["model"])))
    sch = FlowMatchEulerDiscreteScheduler(shift=cfg["shift"])
    sch.set_timesteps(cfg["steps"])
    report("sigmas", rel(sch.sigmas.numpy(), io["sigmas"]), 1e-7)
    T = torch.from_numpy
    ctx = torch.cat([T(io["uncond_context"]), T(io["cond_context"])])
    pooled = torch.cat([T(io["uncond_pooled"]), T(io["cond_pooled"])])
    x = T(io["noise"])
    with torch.no_grad():
        for i, t in enumerate(sch.timesteps):
            v = m(hidden_states=torch.cat([x, x]), encoder_hidden_states=ctx, pooled_projections=pooled,
                  timestep=t.expand(2)).sample
            vu, vc = v.chunk(2)
            x = sch.step(vu + cfg["guidance"] * (vc - vu), t, x).prev_sample
            report("latents_step%d" % i, rel(x.numpy(), io["latents_step%d" % i]))
    report("latents (final)", rel(x.numpy(), io["latents"]))


# --------------------------------------------------------------------------
# phase 2: CLIP, T5, VAE, pipeline
# --------------------------------------------------------------------------

def single_component(golden, comp, dtype=torch.float32):
    sd = R.load_safetensors(os.path.join(golden, G.SINGLE_FILE))
    p = G.PREFIX[comp]
    return {k[len(p):]: torch.from_numpy(np.asarray(v)).to(dtype) for k, v in sd.items() if k.startswith(p)}


def check_clip(golden):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection
    import transformers
    print("CLIP (transformers %s CLIPTextModelWithProjection)" % transformers.__version__)
    io = R.load_safetensors(os.path.join(golden, "clip", "io.safetensors"))
    for key, sub in (("clip_l", "text_encoder"), ("clip_g", "text_encoder_2")):
        folder = os.path.join(golden, "pipeline", sub)
        m_d = CLIPTextModelWithProjection.from_pretrained(folder, torch_dtype=torch.float32).eval()
        m_s = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder)).eval()
        sd = single_component(golden, key)
        if "text_projection.weight" not in sd:  # CLIP-L single file has none: identity
            sd["text_projection.weight"] = torch.eye(m_s.config.hidden_size)
        missing, unexpected = m_s.load_state_dict(sd, strict=False)
        assert not unexpected and all("position_ids" in k for k in missing), (missing, unexpected)
        for layout, m in (("diffusers", m_d), ("single-file", m_s)):
            with torch.no_grad():
                o = m(torch.from_numpy(io[key + ".ids"]), output_hidden_states=True)
            report("%s [%s] penultimate (hidden_states[-2])" % (key, layout),
                   rel(np_(o.hidden_states[-2]), io[key + ".penultimate"]))
            report("%s [%s] last_hidden" % (key, layout), rel(np_(o.last_hidden_state), io[key + ".last_hidden"]))
            report("%s [%s] pooled (text_embeds)" % (key, layout), rel(np_(o.text_embeds), io[key + ".pooled"]))


def check_t5(golden):
    from transformers import T5Config, T5EncoderModel
    print("T5 (transformers T5EncoderModel)")
    io = R.load_safetensors(os.path.join(golden, "t5", "io.safetensors"))
    folder = os.path.join(golden, "pipeline", "text_encoder_3")
    m_d = T5EncoderModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
    m_s = T5EncoderModel(T5Config.from_pretrained(folder)).eval()
    sd = single_component(golden, "t5")
    sd.setdefault("encoder.embed_tokens.weight", sd["shared.weight"])
    m_s.load_state_dict(sd, strict=True)
    for layout, m in (("diffusers, sharded F16", m_d), ("single-file, F8_E4M3 linears", m_s)):
        with torch.no_grad():
            o = m(torch.from_numpy(io["ids"])).last_hidden_state
        report("t5 [%s] last_hidden" % layout, rel(np_(o), io["last_hidden"]))
    # bucket function against transformers' own
    from transformers.models.t5.modeling_t5 import T5Attention
    n = (len(io["rel_bucket"]) + 1) // 2
    b = T5Attention._relative_position_bucket(torch.arange(-(n - 1), n), bidirectional=True, num_buckets=32,
                                              max_distance=128)
    same = np.array_equal(b.numpy(), io["rel_bucket"])
    print("  t5 relative buckets r=-%d..%d equal to transformers': %s" % (n - 1, n - 1, same))
    if not same:
        failures.append("t5 buckets")


def check_vae(golden):
    from diffusers import AutoencoderKL
    print("VAE (diffusers AutoencoderKL)")
    io = R.load_safetensors(os.path.join(golden, "vae", "io.safetensors"))
    folder = os.path.join(golden, "pipeline", "vae")
    m_d = AutoencoderKL.from_pretrained(folder, torch_dtype=torch.float32).eval()
    m_s = AutoencoderKL.from_config(AutoencoderKL.load_config(folder)).eval()
    sd = {k: torch.from_numpy(np.asarray(v, dtype=np.float32))
          for k, v in R.vae_to_diffusers(single_component(golden, "vae", torch.float64)).items()}
    m_s.load_state_dict(sd, strict=True)
    models = [("diffusers", m_d), ("single-file via our converter", m_s)]
    try:
        m_f = AutoencoderKL.from_single_file(os.path.join(golden, G.SINGLE_FILE), config=os.path.join(golden, "pipeline"),
                                             subfolder="vae", torch_dtype=torch.float32).eval()
        models.append(("single-file via diffusers from_single_file", m_f))
    except Exception as e:
        print("  diffusers AutoencoderKL.from_single_file not usable here: %s" % str(e).splitlines()[0])
    for layout, m in models:
        with torch.no_grad():
            img = m.decode(torch.from_numpy(io["z"])).sample
            dist = m.encode(torch.from_numpy(io["image_in"])).latent_dist
        report("vae [%s] decode image" % layout, rel(np_(img), io["image"]))
        report("vae [%s] encode mean" % layout, rel(np_(dist.mean), io["mean"]))
        report("vae [%s] encode logvar" % layout, rel(np_(dist.logvar), io["logvar"]))


def check_pipeline(golden):
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTokenizer, T5TokenizerFast
    print("pipeline (diffusers StableDiffusion3Pipeline)")
    folder = os.path.join(golden, "pipeline")
    with open(os.path.join(folder, "golden.json")) as f:
        cfg = json.load(f)
    io = R.load_safetensors(os.path.join(folder, "io.safetensors"))
    pipe = StableDiffusion3Pipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    # tokenizers: the ids recorded in tiny_tokenizer_ids.json / io come from these files
    with open(os.path.join(golden, "tiny_tokenizer_ids.json")) as f:
        tok = json.load(f)
    tl = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    tg = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer_2"))
    t5 = T5TokenizerFast.from_pretrained(os.path.join(folder, "tokenizer_3"))
    from tokenizers import Tokenizer
    t5_json = Tokenizer.from_file(os.path.join(folder, "tokenizer_3", "tokenizer.json"))
    ok = all(tl(v["text"]).input_ids == v["clip_l"] and tg(v["text"]).input_ids == v["clip_g"]
             and t5(v["text"]).input_ids == v["t5"] and t5_json.encode(v["text"]).ids == v["t5"]
             for v in tok["vectors"])
    for k, text in (("cond", cfg["prompt"]), ("uncond", cfg["negative_prompt"])):
        ok &= tl(text, padding="max_length", max_length=77, truncation=True).input_ids == io[k + "_clip_l_ids"][0].tolist()
        ok &= tg(text, padding="max_length", max_length=77, truncation=True).input_ids == io[k + "_clip_g_ids"][0].tolist()
        ok &= t5(text, padding="max_length", max_length=cfg["max_sequence_length"], truncation=True).input_ids == \
            io[k + "_t5_ids"][0].tolist()
    print("  tokenizer ids reproduce tiny_tokenizer_ids.json and io ids: %s" % ok)
    if not ok:
        failures.append("tokenizer ids")

    with torch.no_grad():
        pe, npe, pp, npp = pipe.encode_prompt(cfg["prompt"], cfg["prompt"], cfg["prompt"],
                                              negative_prompt=cfg["negative_prompt"], do_classifier_free_guidance=True,
                                              max_sequence_length=cfg["max_sequence_length"])
    report("encode_prompt cond context", rel(np_(pe), io["cond_context"]))
    report("encode_prompt cond pooled", rel(np_(pp), io["cond_pooled"]))
    report("encode_prompt uncond context", rel(np_(npe), io["uncond_context"]))
    report("encode_prompt uncond pooled", rel(np_(npp), io["uncond_pooled"]))

    kw = dict(height=cfg["height"], width=cfg["width"], num_inference_steps=cfg["steps"],
              guidance_scale=cfg["guidance"], latents=torch.from_numpy(io["noise"]), output_type="latent")
    with torch.no_grad():
        lat = pipe(prompt=cfg["prompt"], negative_prompt=cfg["negative_prompt"],
                   max_sequence_length=cfg["max_sequence_length"], **kw).images
        lat2 = pipe(prompt_embeds=torch.from_numpy(io["cond_context"]), negative_prompt_embeds=torch.from_numpy(
            io["uncond_context"]), pooled_prompt_embeds=torch.from_numpy(io["cond_pooled"]),
            negative_pooled_prompt_embeds=torch.from_numpy(io["uncond_pooled"]), **kw).images
        img = pipe.vae.decode(lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
        kw["output_type"] = "pt"
        img01 = pipe(prompt=cfg["prompt"], negative_prompt=cfg["negative_prompt"],
                     max_sequence_length=cfg["max_sequence_length"], **kw).images
    # the original single file through diffusers' own single-file converters (CLIPs, F8 T5, VAE, MMDiT)
    ps = StableDiffusion3Pipeline.from_single_file(os.path.join(golden, G.SINGLE_FILE), config=folder,
                                                   torch_dtype=torch.float32)
    ps.set_progress_bar_config(disable=True)
    kw["output_type"] = "latent"
    with torch.no_grad():
        lat3 = ps(prompt=cfg["prompt"], negative_prompt=cfg["negative_prompt"],
                  max_sequence_length=cfg["max_sequence_length"], **kw).images
    report("pipeline(prompt) final latents", rel(np_(lat), io["latents"]))
    report("single-file pipeline (from_single_file) final latents", rel(np_(lat3), io["latents"]))
    report("pipeline(prompt_embeds) final latents", rel(np_(lat2), io["latents"]))
    report("vae.decode(latents/1.5305+0.0609) image", rel(np_(img), io["image"]))
    report("pipeline output_type=pt vs clamp((image+1)/2)", rel(np_(img01), np.clip((io["image"] + 1) / 2, 0, 1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--golden", default=os.path.join(G.REPO, "tests", "golden"))
    args = ap.parse_args()
    torch.manual_seed(0)
    check_mmdit(args.golden)
    check_schedule(args.golden)
    check_sampler(args.golden)
    check_clip(args.golden)
    check_t5(args.golden)
    check_vae(args.golden)
    check_pipeline(args.golden)
    print("FAILED: %s" % ", ".join(failures) if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
