"""Configuration and construction of the tiny SD3 model (diffusers/transformers classes),
and the SD3 prompt assembly used during training.

Every component is the class SD3-Medium uses, so `save_pretrained` writes the
diffusers folder layout of stabilityai/stable-diffusion-3-medium-diffusers.
"""
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL_DIR = os.path.join(REPO, "models", "tiny-sd3")

T5_LEN = 256          # diffusers' default max_sequence_length
CLIP_LEN = 77

# ---- sizes -------------------------------------------------------------------------------
CLIP_L = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=1,
              hidden_act="quick_gelu", projection_dim=64)
CLIP_G = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=2,
              hidden_act="gelu", projection_dim=128)
T5 = dict(d_model=256, d_kv=64, d_ff=512, num_layers=4, num_heads=4)
MMDIT = dict(num_layers=8, num_attention_heads=3, attention_head_dim=64)   # hidden 192
VAE = dict(block_out_channels=(32, 64, 128, 128), layers_per_block=1)
IMAGE_SIZE = 128
SCHEDULER_SHIFT = 3.0


def load_tokenizers(model_dir=MODEL_DIR):
    from transformers import CLIPTokenizer, T5TokenizerFast
    t1 = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer"))
    t2 = CLIPTokenizer.from_pretrained(os.path.join(model_dir, "tokenizer_2"))
    t3 = T5TokenizerFast.from_pretrained(os.path.join(model_dir, "tokenizer_3"))
    return t1, t2, t3


def build_text_encoders(t1, t3):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel
    vocab = len(t1)
    common = dict(vocab_size=vocab, max_position_embeddings=CLIP_LEN, layer_norm_eps=1e-5,
                  attention_dropout=0.0, dropout=0.0, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    te1 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **CLIP_L))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **CLIP_G))
    # SD3 uses CLIP-L's pooled output unprojected: make its projection the identity, frozen.
    with torch.no_grad():
        te1.text_projection.weight.copy_(torch.eye(CLIP_L["hidden_size"]))
    te1.text_projection.weight.requires_grad_(False)
    cfg3 = T5Config(vocab_size=len(t3), relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, dropout_rate=0.0, layer_norm_epsilon=1e-6,
                    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                    tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0, num_decoder_layers=T5["num_layers"], **T5)
    te3 = T5EncoderModel(cfg3)
    return te1, te2, te3


def build_transformer():
    from diffusers import SD3Transformer2DModel
    d = MMDIT["num_attention_heads"] * MMDIT["attention_head_dim"]
    return SD3Transformer2DModel(
        sample_size=IMAGE_SIZE // 8, patch_size=2, in_channels=16, out_channels=16,
        joint_attention_dim=T5["d_model"], caption_projection_dim=d,
        pooled_projection_dim=CLIP_L["hidden_size"] + CLIP_G["projection_dim"],
        pos_embed_max_size=32, **MMDIT)


def build_vae():
    from diffusers import AutoencoderKL
    n = len(VAE["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=VAE["block_out_channels"], layers_per_block=VAE["layers_per_block"],
        act_fn="silu", norm_num_groups=32, sample_size=IMAGE_SIZE,
        scaling_factor=1.0, shift_factor=0.0, force_upcast=True,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True)


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=SCHEDULER_SHIFT)


def tokenize_all(t1, t2, t3, captions):
    """Token ids exactly as StableDiffusion3Pipeline.encode_prompt makes them."""
    a = t1(captions, padding="max_length", max_length=CLIP_LEN, truncation=True, return_tensors="pt").input_ids
    b = t2(captions, padding="max_length", max_length=CLIP_LEN, truncation=True, return_tensors="pt").input_ids
    c = t3(captions, padding="max_length", max_length=T5_LEN, truncation=True, add_special_tokens=True,
           return_tensors="pt").input_ids
    return a, b, c


def encode_text(te1, te2, te3, ids1, ids2, ids3):
    """SD3 prompt assembly (identical to StableDiffusion3Pipeline.encode_prompt):
    context = [CLIP-L penultimate | CLIP-G penultimate | zero pad to T5 width] (77 tokens)
              followed by the T5 last hidden state (256 tokens);
    pooled  = [CLIP-L pooled | CLIP-G pooled+projected]."""
    o1 = te1(ids1, output_hidden_states=True)
    o2 = te2(ids2, output_hidden_states=True)
    t5 = te3(ids3)[0]
    clip = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), torch.cat([o1[0], o2[0]], dim=-1)


def count_params(m):
    return sum(p.numel() for p in m.state_dict().values())


if __name__ == "__main__":
    t1, t2, t3 = load_tokenizers()
    te1, te2, te3 = build_text_encoders(t1, t3)
    tr, vae = build_transformer(), build_vae()
    tot = 0
    for n, m in [("text_encoder", te1), ("text_encoder_2", te2), ("text_encoder_3", te3),
                 ("transformer", tr), ("vae", vae), ("vae.encoder", vae.encoder), ("vae.decoder", vae.decoder)]:
        c = count_params(m)
        if "." not in n:
            tot += c
        print("%-16s %10d params  %6.2f MB fp16" % (n, c, 2 * c / 1e6))
    print("%-16s %10d params  %6.2f MB fp16" % ("total", tot, 2 * tot / 1e6))
