"""Diffusion engines on tiny random models: saved in diffusers format, loaded through the real path."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from openi2v.engines.accel import (Speedups, apply_first_block_cache, apply_group_offload, apply_vae_channels_last,
                                   apply_vae_tiling)
from openi2v.engines.base import Cancelled, EngineJob
from openi2v.engines.catalog import get_preset
from openi2v.engines.ltx import LTXEngine
from openi2v.engines.wan import WanEngine
from openi2v.media.video import probe, read_frames
from tests import pictures, tiny_models

PHOTO = pictures.photo(640, 426, seed=2)
# tiny layout -> (preset it stands in for, engine class, size override)
LAYOUTS = {
    "wan2.1": ("wan2.1-i2v-14b-480p", WanEngine, (48, 32)),
    "wan2.2-a14b": ("wan2.2-i2v-a14b", WanEngine, (48, 32)),
    "wan2.2-5b": ("wan2.2-ti2v-5b", WanEngine, (64, 32)),
    "ltx": ("ltx-video-0.9.8-distilled", LTXEngine, (64, 32)),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-weights")
    return {layout: tiny_models.save(layout, root / layout) for layout in LAYOUTS}


def engine(weights, layout, steps=2, speedups=("sdpa",)):
    preset, cls, size = LAYOUTS[layout]
    e = cls(get_preset(preset).with_overrides(steps=steps, size=size), weights[layout], "cpu", Speedups.parse(speedups))
    e.load()
    return e


def run(e, tmp_path, seed=7, duration=5, guidance=0.5, prompt="slow zoom in", cancelled=lambda: False,
        progress=None, **kw):
    out = Path(tempfile.mkdtemp(dir=tmp_path))
    return e.run(EngineJob(PHOTO, prompt, "blurry", guidance, duration, seed, out, **kw),
                 progress or (lambda f: None), cancelled)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_makes_a_native_clip_as_h264(weights, layout, tmp_path):
    e = engine(weights, layout)
    seen = []
    result = run(e, tmp_path, progress=seen.append)
    info = probe(result.video)
    p = e.preset
    assert (info.codec, info.pix_fmt, info.fps, info.frames) == ("h264", "yuv420p", p.fps, p.frames)
    assert (info.width, info.height) == (result.width, result.height) == LAYOUTS[layout][2]
    assert abs(info.duration - p.frames / p.fps) < 0.1
    assert seen == sorted(seen) and len(seen) == p.steps  # progress per denoising step
    assert result.details["steps"] == 2 and result.details["cfg"] == pytest.approx(
        1.0 if p.distilled else p.cfg)


def test_the_same_seed_gives_the_same_video_and_another_seed_another(weights, tmp_path):
    e = engine(weights, "wan2.2-a14b")
    a, b, c = (read_frames(run(e, tmp_path, seed=s).video) for s in (11, 11, 12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_ten_seconds_is_two_native_clips_joined_without_a_repeated_frame(weights, tmp_path):
    e = engine(weights, "wan2.1")
    result = run(e, tmp_path, duration=10)
    assert result.frames == 2 * e.preset.frames - 1 and result.details["segments"] == 2
    info = probe(result.video)
    assert info.frames == result.frames and abs(info.duration - result.frames / e.preset.fps) < 0.1


def test_guidance_changes_the_video_and_zero_skips_the_negative_prompt(weights, tmp_path):
    e = engine(weights, "wan2.2-5b")
    low, mid = (read_frames(run(e, tmp_path, guidance=g).video) for g in (0.0, 0.5))
    assert not all(np.array_equal(x, y) for x, y in zip(low, mid))
    assert run(e, tmp_path, guidance=0.0).details["cfg"] == 1.0


@pytest.mark.parametrize("layout", ["wan2.2-a14b", "ltx"])
def test_last_image_is_used_where_the_model_has_first_last_frame_support(weights, layout, tmp_path):
    e = engine(weights, layout)
    assert e.preset.last_image
    end = pictures.photo(640, 426, seed=9)
    plain, framed = (read_frames(run(e, tmp_path, **kw).video) for kw in ({}, {"last_image": end}))
    assert not np.array_equal(plain[-1], framed[-1])


def test_cancel_takes_effect_between_steps(weights, tmp_path):
    e = engine(weights, "wan2.1", steps=4)
    steps = []
    with pytest.raises(Cancelled):
        run(e, tmp_path, progress=steps.append, cancelled=lambda: len(steps) >= 2)
    assert len(steps) == 2  # stopped at the first check after the second step


def test_speedups_apply_on_tiny_models(weights, tmp_path):
    e = engine(weights, "wan2.2-a14b", speedups=("sdpa", "fbcache=0.2", "vae_tiling"))
    assert e.applied == ["fp32", "attention=sdpa", "vae_tiling", "fbcache=0.2"]
    assert probe(run(e, tmp_path).video).frames == e.preset.frames
    plain = engine(weights, "wan2.2-a14b")
    apply_group_offload(plain.pipe, "cpu")  # cpu -> cpu streams the same weights: the same frames
    apply_vae_tiling(plain.pipe)
    apply_vae_channels_last(plain.pipe)  # a memory layout: the same arithmetic
    assert plain.pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last_3d)
    reference = engine(weights, "wan2.2-a14b")
    a, b = (read_frames(run(x, tmp_path, seed=3).video) for x in (plain, reference))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    apply_first_block_cache(reference.pipe, 0.5)
    assert reference.pipe.transformer.is_cache_enabled


def test_missing_weights_say_how_to_get_them(tmp_path):
    e = WanEngine(get_preset("wan2.2-ti2v-5b"), tmp_path / "nothing-here", "cpu")
    with pytest.raises(FileNotFoundError, match="openi2v models pull wan2.2-ti2v-5b"):
        e.load()


def test_turbo_loras_load_into_both_experts_and_change_the_video(weights, tmp_path):
    from dataclasses import replace

    from openi2v.engines.catalog import Lora

    loras = weights["wan2.2-a14b"].parent / "loras"  # beside the pipelines, where `models pull` puts them
    tiny_models.save_lora(loras, "wan2.2-a14b", "high.safetensors", seed=1)
    tiny_models.save_lora(loras, "wan2.2-a14b", "low.safetensors", seed=2)
    turbo = get_preset("wan2.2-i2v-a14b-turbo").with_overrides(steps=2, size=(48, 32))
    turbo = replace(turbo, loras=(Lora("local", "high.safetensors"), Lora("local", "low.safetensors", "transformer_2")))
    with_loras = WanEngine(turbo, weights["wan2.2-a14b"], "cpu", Speedups.parse(["sdpa"]))
    with_loras.load()
    without = WanEngine(replace(turbo, loras=()), weights["wan2.2-a14b"], "cpu", Speedups.parse(["sdpa"]))
    without.load()
    a, b = (read_frames(run(e, tmp_path, seed=5).video) for e in (with_loras, without))
    assert not all(np.array_equal(x, y) for x, y in zip(a, b))
    assert with_loras.pipe.scheduler.config.flow_shift == 5.0


def test_a_compiled_engine_warms_up_at_load_and_an_uncompiled_one_does_not(weights, tmp_path):
    preset, cls, size = LAYOUTS["wan2.2-a14b"]
    steps_run = []

    class Counting(cls):
        def _sample(self, *args, **kwargs):
            steps_run.append(args[8])  # the steps argument
            return super()._sample(*args, **kwargs)

    def counting(warm_up):
        steps_run.clear()
        e = Counting(get_preset(preset).with_overrides(steps=3, size=size), weights["wan2.2-a14b"], "cpu",
                     Speedups.parse(("sdpa",)), warm_up=warm_up)
        e.load()
        return e

    e = counting(warm_up=True)  # on a GPU, True whenever "compile" was applied
    assert steps_run == [2]  # a short clip: 2 steps reach both of A14B's experts
    assert run(e, tmp_path).details["steps"] == 3 and steps_run == [2, 3]  # the preset itself is untouched
    counting(warm_up=None)  # the default: nothing was compiled on this CPU, so nothing to warm up
    assert steps_run == []
    e.applied.append("vae_compile")  # as on a GPU: the compiled decoder still compiles in its second decode
    steps_run.clear()
    e._warm_up()
    assert steps_run == [2, 2]
