"""How the API's inputs map onto diffusion presets: CFG, size, catalog, speed-up names."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from openi2v.engines import accel
from openi2v.engines.accel import Speedups
from openi2v.engines.catalog import BUILT_IN, get_preset
from openi2v.engines.diffusion import cfg_for, cover, fit_size, match_colour


@pytest.mark.parametrize("name", ["wan2.2-i2v-a14b", "wan2.2-ti2v-5b", "wan2.1-i2v-14b-480p"])
def test_guidance_half_is_the_models_recommended_cfg(name):
    p = get_preset(name)
    assert cfg_for(0.5, p) == pytest.approx(p.cfg)
    assert cfg_for(0.0, p) == 1.0  # no unconditional pass: negative_prompt unused
    assert cfg_for(1.0, p) == pytest.approx(2 * p.cfg - 1)
    assert cfg_for(0.25, p) < cfg_for(0.5, p) < cfg_for(0.75, p)


@pytest.mark.parametrize("name", [n for n, p in BUILT_IN.items() if p.distilled])
def test_distilled_presets_always_run_at_cfg_1(name):
    assert all(cfg_for(g, get_preset(name)) == 1.0 for g in (0.0, 0.5, 1.0))


@pytest.mark.parametrize("size", [(1280, 720), (720, 1280), (1000, 1000), (2500, 1000), (1000, 2500), (640, 426)])
@pytest.mark.parametrize("name", list(BUILT_IN))
def test_size_keeps_aspect_and_area_on_the_models_grid(name, size):
    p = get_preset(name)
    w, h = fit_size(size, p)
    assert w % p.size_multiple == 0 and h % p.size_multiple == 0
    assert w * h == pytest.approx(p.width * p.height, rel=0.12)
    assert w / h == pytest.approx(size[0] / size[1], rel=0.1)


def test_cover_crops_the_centre_without_stretching():
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    img.paste((0, 0, 255), (150, 0, 250, 200))  # a blue band in the middle
    out = np.asarray(cover(img, 100, 100))
    assert out.shape == (100, 100, 3)
    assert out[50, 50, 2] > 200 and out[50, 0, 0] > 200  # the band stays centred, the sides red


def test_colour_match_lands_the_first_frame_on_the_reference():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 255, (16, 16, 3)).astype(np.uint8)
    drifted = np.clip(ref.astype(int)[None].repeat(3, 0) * 0.9 + 12, 0, 255).astype(np.uint8)
    fixed = match_colour(drifted, ref)
    assert np.abs(fixed[0].astype(int) - ref).mean() < 1.0


def test_catalog_has_the_presets_users_ask_for():
    for name in ("wan2.2-i2v-a14b", "wan2.2-i2v-a14b-turbo", "wan2.2-ti2v-5b", "wan2.2-ti2v-5b-turbo",
                 "ltx-video-0.9.8-distilled"):
        p = get_preset(name)
        assert p.repo and p.fps and p.frames and p.steps
        assert p.model_id == f"openi2v/{name}/image-to-video"
        Speedups.parse(p.speedups)  # every default speed-up is one we know
    turbo = get_preset("wan2.2-i2v-a14b-turbo")
    assert turbo.steps == 4 and {lora.into for lora in turbo.loras} == {"transformer", "transformer_2"}
    assert turbo.weights_name == "wan2.2-i2v-a14b"  # the LoRAs ride the base weights, pulled once
    with pytest.raises(KeyError, match="unknown model preset"):
        get_preset("sora")


def test_speedup_names_parse_and_unknown_ones_are_refused():
    s = Speedups.parse(["bf16", "cudnn", "compile", "fbcache=0.08", "fp8", "offload", "vae_tiling",
                        "vae_channels_last", "vae_compile"])
    assert (s.dtype, s.attention, s.compile, s.cache, s.cache_threshold, s.fp8, s.group_offload, s.vae_tiling,
            s.vae_channels_last, s.vae_compile) == ("bf16", "cudnn", True, "fbcache", 0.08, True, True, True, True,
                                                    True)
    assert not Speedups.parse(["bf16"]).vae_compile
    with pytest.raises(ValueError, match="unknown speed-up"):
        Speedups.parse(["flash_hub"])


@pytest.mark.parametrize("small_gpu", [False, True])
def test_a_gpu_under_40_gb_offloads_and_tiles_and_then_leaves_the_vae_decoder_uncompiled(monkeypatch, small_gpu):
    called = []
    for name in ("apply_attention", "apply_fp8", "apply_group_offload", "apply_vae_tiling", "apply_vae_channels_last",
                 "apply_vae_compile", "apply_compile"):
        monkeypatch.setattr(accel, name, lambda *a, name=name, **k: called.append(name))
    monkeypatch.setattr(accel, "gpu_facts", lambda device: accel.Gpu((9, 0), (24 if small_gpu else 80) * 2**30))
    pipe = type("Pipe", (), {"to": lambda self, device: called.append("to")})()
    applied = accel.apply_speedups(pipe, Speedups.parse(get_preset("wan2.2-ti2v-5b-turbo").speedups), "cuda", 3)
    if small_gpu:
        assert applied == ["bf16", "attention=sdpa", "group_offload", "vae_tiling", "vae_channels_last", "compile"]
        assert "apply_vae_compile" not in called and "to" not in called
    else:
        assert applied == ["bf16", "attention=sdpa", "vae_channels_last", "vae_compile", "compile"]
        assert called == ["apply_attention", "to", "apply_vae_channels_last", "apply_vae_compile", "apply_compile"]


def test_frames_become_uint8_images_rounded_as_exactly_as_numpy_would():
    import torch

    from openi2v.engines.diffusion import to_uint8

    noise = torch.rand(20, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    frames = (noise * 1.2 - 0.1).to(torch.bfloat16)  # the VAE's output dtype; some values outside [0, 1]
    out = to_uint8(frames, chunk=8)  # (F, 3, H, W) -> (F, H, W, 3), several chunks
    exact = np.round(np.clip(frames.float().numpy().astype(np.float64), 0, 1) * 255).astype(np.uint8)
    assert out.shape == (20, 5, 7, 3) and out.dtype == np.uint8
    assert np.array_equal(out, exact.transpose(0, 2, 3, 1))
