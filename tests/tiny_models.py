"""Tiny, randomly initialised diffusion pipelines built in code and saved in diffusers format.

Nothing is downloaded: the tokenizer is a Unigram model made here (the model type of
T5/UMT5's vocabulary), the text and image encoders come from small configs, and the
transformer and VAE configs follow diffusers' own fast tests. ``save(layout, dir)``
writes a directory the engines load through their real ``from_pretrained`` path.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LAYOUTS = ("wan2.1", "wan2.2-a14b", "wan2.2-5b", "ltx")


def tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0) for w in ("a", "the", "camera", "slow", "zoom", "pan", "in", "left", "right")]
    vocab += [(c, -5.0) for c in letters] + [(f"▁{c}", -4.0) for c in letters]
    tok = Tokenizer(Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=64, padding_side="right")


def _text_encoder(kind: str, vocab: int):
    import transformers

    config_cls, model_cls = {"umt5": ("UMT5Config", "UMT5EncoderModel"), "t5": ("T5Config", "T5EncoderModel")}[kind]
    config = getattr(transformers, config_cls)(vocab_size=vocab, d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                               num_heads=4, relative_attention_num_buckets=8, dropout_rate=0.0,
                                               is_encoder_decoder=False)
    return getattr(transformers, model_cls)(config).eval()


def _wan_transformer(in_ch: int, out_ch: int, image_dim: int | None = None, added_kv_proj_dim: int | None = None):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                 in_channels=in_ch, out_channels=out_ch, text_dim=32, freq_dim=256, ffn_dim=32,
                                 num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                 rope_max_seq_len=64, image_dim=image_dim, added_kv_proj_dim=added_kv_proj_dim)


def wan_image_transformer():
    """A tiny Wan transformer with all of Wan 2.1 I2V's image branch: the image embedder, and cross-attention's
    image keys and values (which the tiny Wan 2.1 pipeline leaves out)."""
    import torch

    torch.manual_seed(3)
    return _wan_transformer(36, 16, image_dim=4, added_kv_proj_dim=24)


def wan_vae(z_dim: int = 16):
    from diffusers import AutoencoderKLWan

    if z_dim == 16:
        return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                temperal_downsample=[False, True, True])
    return AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
                            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1],
                            num_res_blocks=1, scale_factor_spatial=16, scale_factor_temporal=4,
                            temperal_downsample=[False, True, True])


def build(layout: str):
    import torch
    from diffusers import UniPCMultistepScheduler

    torch.manual_seed(0)
    tok = tokenizer()
    text = _text_encoder("t5" if layout == "ltx" else "umt5", len(tok))
    if layout == "ltx":
        from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXConditionPipeline,
                               LTXVideoTransformer3DModel)

        transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                                 num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                                 num_layers=1, caption_channels=32)
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
            decoder_spatio_temporal_scaling=(True, True, False, False),
            decoder_inject_noise=(False, False, False, False, False), upsample_residual=(False, False, False, False),
            upsample_factor=(1, 1, 1, 1), timestep_conditioning=False, patch_size=1, patch_size_t=1,
            encoder_causal=True, decoder_causal=False)
        vae.use_framewise_encoding = False
        vae.use_framewise_decoding = False
        return LTXConditionPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                                    text_encoder=text, tokenizer=tok)

    from diffusers import WanImageToVideoPipeline

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    common = dict(tokenizer=tok, text_encoder=text, scheduler=scheduler)
    if layout == "wan2.1":
        from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

        encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=4, projection_dim=4, num_hidden_layers=2,
                                                   num_attention_heads=2, image_size=32, intermediate_size=16,
                                                   patch_size=1)).eval()
        return WanImageToVideoPipeline(**common, vae=wan_vae(), transformer=_wan_transformer(36, 16, image_dim=4),
                                       image_encoder=encoder, image_processor=CLIPImageProcessorPil(crop_size=32,
                                                                                                   size=32))
    if layout == "wan2.2-a14b":
        high = _wan_transformer(36, 16)
        torch.manual_seed(1)
        low = _wan_transformer(36, 16)
        return WanImageToVideoPipeline(**common, vae=wan_vae(), transformer=high, transformer_2=low,
                                       boundary_ratio=0.9)
    if layout == "wan2.2-5b":
        return WanImageToVideoPipeline(**common, vae=wan_vae(48), transformer=_wan_transformer(48, 48),
                                       expand_timesteps=True)
    raise ValueError(layout)


def save(layout: str, directory: Path) -> Path:
    build(layout).save_pretrained(directory)
    return directory


def save_lora(directory: Path, layout: str, name: str, seed: int, **config) -> Path:
    """A random rank-4 LoRA for the attention of the tiny transformer of ``layout``, in diffusers' LoRA
    format, its PEFT config (``config`` overrides ``LoraConfig``'s arguments) in the file's metadata as
    diffusers' training scripts write it."""
    import torch
    from diffusers import WanImageToVideoPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    transformer = build(layout).transformer
    transformer.add_adapter(LoraConfig(**{"r": 4, "lora_alpha": 4, "init_lora_weights": False,
                                          "target_modules": ["to_q", "to_k", "to_v", "to_out.0"], **config}))
    torch.manual_seed(seed)
    for param_name, param in transformer.named_parameters():
        if "lora_" in param_name:
            torch.nn.init.normal_(param, std=0.5)
    metadata = transformer.peft_config["default"].to_dict()
    WanImageToVideoPipeline.save_lora_weights(directory, transformer_lora_layers=get_peft_model_state_dict(transformer),
                                              weight_name=name, transformer_lora_adapter_metadata=metadata)
    return directory / name
