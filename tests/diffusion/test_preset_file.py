"""Presets as configuration: a TOML file adds or overrides presets, and a mistake is refused with its line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from openi2v.config import Settings
from openi2v.engines import registry
from openi2v.engines.catalog import BUILT_IN, Lora, get_preset, presets
from openi2v.engines.preset_file import PresetFileError


def settings_with(tmp_path, text: str, **extra) -> Settings:
    (tmp_path / "presets.toml").write_text(textwrap.dedent(text))
    return Settings(data_dir=tmp_path, **extra)


def refused(tmp_path, text: str) -> str:
    with pytest.raises(PresetFileError) as exc:
        presets(settings_with(tmp_path, text))
    return str(exc.value)


def test_a_preset_inherits_a_built_in_and_runs_weights_from_a_local_directory(tmp_path):
    s = settings_with(tmp_path, """
        [[preset]]
        name = "our-wan-5b"
        inherit = "wan2.2-ti2v-5b"
        path = "weights/ours"
        steps = 30
        description = "Wan 5B fine-tuned on our footage."

        [[preset.lora]]
        path = "loras/style.safetensors"
        scale = 0.8

        [[preset.lora]]
        repo = "org/loras"
        file = "low.safetensors"
        into = "transformer_2"
    """)
    ours = get_preset("our-wan-5b", s)
    built_in = BUILT_IN["wan2.2-ti2v-5b"]
    assert (ours.steps, ours.cfg, ours.width, ours.fps, ours.speedups) == (30, built_in.cfg, 1280, 24,
                                                                          built_in.speedups)
    assert ours.path == str(tmp_path / "weights" / "ours") and ours.repo == "" and ours.base is None
    assert ours.loras == (Lora(path=str(tmp_path / "loras" / "style.safetensors"), scale=0.8),
                          Lora("org/loras", "low.safetensors", "transformer_2", 1.0))
    assert set(BUILT_IN) < set(presets(s))  # the built-ins stay, unchanged
    assert get_preset("wan2.2-ti2v-5b", s) == built_in


def test_the_server_serves_a_file_preset_like_a_built_in(tmp_path):
    from tests import tiny_models

    tiny_models.save("wan2.2-5b", tmp_path / "weights" / "ours")
    s = settings_with(tmp_path, """
        [[preset]]
        name = "our-wan-5b"
        inherit = "wan2.2-ti2v-5b"
        path = "weights/ours"
    """, engines={"kwaivgi/kling-v2.5-turbo-pro/image-to-video": "our-wan-5b"}, device="cpu")
    served = registry.served_models(s)
    assert served["openi2v/our-wan-5b/image-to-video"].engine == "our-wan-5b"
    assert served["kwaivgi/kling-v2.5-turbo-pro/image-to-video"].description.endswith(
        f"Diffusion engine ({tmp_path / 'weights' / 'ours'}).")
    assert registry.local_weights(s, get_preset("our-wan-5b", s)) == tmp_path / "weights" / "ours"
    registry.check(s)  # its weights are there: it can start
    spec = registry.diffusion_spec(s, "our-wan-5b")
    assert spec.kwargs["weights"] == str(tmp_path / "weights" / "ours") and spec.kwargs["preset"].name == "our-wan-5b"


def test_a_missing_local_directory_is_named_at_start(tmp_path):
    s = settings_with(tmp_path, """
        [[preset]]
        name = "ours"
        inherit = "wan2.2-ti2v-5b"
        path = "/nowhere/ours"
    """, engines={"m": "ours"}, device="cpu")
    with pytest.raises(ValueError, match="no diffusers pipeline \\(model_index.json\\) in /nowhere/ours"):
        registry.check(s)


def test_overriding_a_built_in_keeps_the_fields_not_given(tmp_path):
    s = settings_with(tmp_path, """
        [[preset]]
        name = "wan2.2-ti2v-5b-turbo"
        steps = 4
        speedups = ["bf16", "sdpa"]
    """)
    turbo = get_preset("wan2.2-ti2v-5b-turbo", s)
    assert (turbo.steps, turbo.speedups) == (4, ("bf16", "sdpa"))
    assert turbo.repo == BUILT_IN["wan2.2-ti2v-5b-turbo"].repo and turbo.distilled and turbo.base is None
    assert BUILT_IN["wan2.2-ti2v-5b-turbo"].steps == 3


def test_a_new_name_without_weights_of_its_own_shares_its_parents(tmp_path):
    s = settings_with(tmp_path, """
        [[preset]]
        name = "turbo-8"
        inherit = "wan2.2-i2v-a14b-turbo"
        steps = 8
        [[preset]]
        name = "5b-short"
        inherit = "wan2.2-ti2v-5b"
        frames = 49
    """)
    assert get_preset("turbo-8", s).weights_name == "wan2.2-i2v-a14b"
    assert get_preset("5b-short", s).weights_name == "wan2.2-ti2v-5b"


def test_a_new_preset_gives_every_field_it_needs(tmp_path):
    s = settings_with(tmp_path, """
        [[preset]]
        name = "ltx-2b"
        family = "ltx"
        repo = "Lightricks/LTX-Video-0.9.7-distilled"
        width = 704
        height = 512
        fps = 24
        frames = 121
        steps = 8
        cfg = 1
        distilled = true
        size_multiple = 32
        gpu_gib = 12
        extra = { decode_timestep = 0.05 }
    """)
    ltx = get_preset("ltx-2b", s)
    assert (ltx.family, ltx.repo, ltx.cfg, ltx.gpu_gib, ltx.gpu_gib_measured, ltx.extra) == (
        "ltx", "Lightricks/LTX-Video-0.9.7-distilled", 1.0, 12.0, False, {"decode_timestep": 0.05})
    message = refused(tmp_path, """
        [[preset]]
        name = "half"
        family = "wan"
        repo = "org/model"
    """)
    assert message == (f"{tmp_path / 'presets.toml'}, line 2: preset 'half', field 'width': a new preset needs it "
                       "(or inherit = \"PRESET\" to start from one)")


@pytest.mark.parametrize("text, line, expected", [
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nsteps = "four"\n', 4,
     "preset 'x', field 'steps': must be a whole number from 1 to 100000 (got 'four')"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n\n[[preset]]\nname = "y"\ninherit = "x"\ncfg = 0.5\n', 8,
     "preset 'y', field 'cfg': must be a number, at least 1 (got 0.5)"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nstepz = 3\n', 4, "preset 'x', field 'stepz': unknown field"),
    ('[[preset]]\nname = "x"\ninherit = "sora"\n', 3, "field 'inherit': no preset of that name"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nspeedups = ["bf16", "warp"]\n', 4,
     "field 'speedups': unknown speed-up"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nwidth = 1000\n', 4,
     "field 'width': width and height must be multiples of size_multiple (32)"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n[[preset.lora]]\npath = "a.safetensors"\n'
     '[[preset.lora]]\nrepo = "o/r"\nfile = "b.safetensors"\ninto = "transformer_3"\n', 9,
     "field 'into': must be one of transformer, transformer_2 (got 'transformer_3')"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n[[preset.lora]]\nrepo = "o/r"\n', 4,
     "field 'file': a LoRA needs repo and file"),
    ('[[preset]]\nname = "motion"\ninherit = "wan2.2-ti2v-5b"\n', 2, "field 'name': must be 1-64 letters"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n', 5,
     "preset 'x' is defined twice"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nbase = "nothing"\n', 4, "field 'base': no preset named"),
    ('[[preset]]\nname = "x"\nrepo = "not a repo"\ninherit = "wan2.2-ti2v-5b"\n', 3,
     "field 'repo': must be a Hugging Face repo id"),
    ('[presets]\nname = "x"\n', 1, "unknown table or key 'presets'"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n\n[server]\nport = 1\n', 5,
     "unknown table or key 'server'"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\n[preset.extra]\ndecode_timestep = 0.05\n'
     '[[preset.lora]]\npath = "a.safetensors"\n[[preset.lora]]\npath = "b.safetensors"\nscale = "high"\n', 10,
     "field 'scale': must be a number from -100 to 100 (got 'high')"),
    ('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nlora = [{path = "a.safetensors", into = "unet"}]\n', 4,
     "field 'into': must be one of transformer, transformer_2"),
    ('[[preset]]\nname = "a"\ninherit = "wan2.2-ti2v-5b"\nbase = "b"\n[[preset]]\nname = "b"\n'
     'inherit = "wan2.2-ti2v-5b"\nbase = "a"\n', 4, "field 'base': a cycle: a -> b -> a"),
    ('[[preset]]\nname = "loras"\ninherit = "wan2.2-ti2v-5b"\n', 2, "field 'name': must be 1-64 letters"),
    ('[[preset]]\nname = "x"\nsteps = = 3\n', None, "not valid TOML: Invalid value (at line 3, column 9)"),
])
def test_a_malformed_file_names_the_line_and_the_field(tmp_path, text, line, expected):
    message = refused(tmp_path, text)
    where = f"{tmp_path / 'presets.toml'}" + (f", line {line}: " if line else ": ")
    assert message.startswith(where) and expected in message, message


def test_the_file_is_read_again_when_it_changes(tmp_path):
    s = settings_with(tmp_path, '[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nsteps = 7\n')
    assert get_preset("x", s).steps == 7
    (tmp_path / "presets.toml").write_text('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nsteps = 9\n\n')
    assert get_preset("x", s).steps == 9


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(PresetFileError, match="OPENI2V_PRESETS_FILE: .*nope.toml does not exist"):
        presets(Settings(data_dir=tmp_path, presets_file=tmp_path / "nope.toml"))
    assert presets(Settings(data_dir=tmp_path)) == BUILT_IN  # no file in the data directory: the built-ins


def test_serve_refuses_to_start_with_a_malformed_file(tmp_path):
    (tmp_path / "presets.toml").write_text('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nfps = 0\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENI2V_")}
    env.update(OPENI2V_DATA_DIR=str(tmp_path), OPENI2V_ENGINES=json.dumps({"m": "motion"}))
    out = subprocess.run([sys.executable, "-m", "openi2v.cli", "serve", "--port", "0"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {tmp_path / 'presets.toml'}, line 4: preset 'x', field 'fps': must be a "
                                  "whole number from 1 to 100000 (got 0)")


def test_generate_runs_a_file_preset_by_name(tmp_path):
    from openi2v.media.video import probe
    from tests import pictures, tiny_models

    tiny_models.save("wan2.2-5b", tmp_path / "ours")
    (tmp_path / "presets.toml").write_text('[[preset]]\nname = "ours"\ninherit = "wan2.2-ti2v-5b"\npath = "ours"\n'
                                           'steps = 2\nwidth = 64\nheight = 32\nframes = 9\nfps = 8\n')
    photo = tmp_path / "photo.png"
    photo.write_bytes(pictures.png(640, 320))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENI2V_")}
    env.update(OPENI2V_DATA_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "openi2v.cli", "generate", str(photo), "--prompt", "slow zoom in",
                          "--model", "ours", "--device", "cpu", "-o", str(tmp_path / "out.mp4")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ours: 2 steps" in out.stdout
    info = probe(tmp_path / "out.mp4")
    assert (info.codec, info.frames, info.fps, info.width, info.height) == ("h264", 9, 8, 64, 32)


def test_a_preset_cannot_start_without_its_loras_and_finds_them_where_pull_puts_them(tmp_path):
    from tests import tiny_models

    tiny_models.save("wan2.2-a14b", tmp_path / "weights" / "wan2.2-i2v-a14b")
    s = Settings(data_dir=tmp_path, engines={"m": "wan2.2-i2v-a14b-turbo"}, device="cpu")
    with pytest.raises(ValueError) as exc:
        registry.check(s)
    assert str(exc.value) == ("OPENI2V_ENGINES: preset wan2.2-i2v-a14b-turbo needs its LoRA "
                              "wan2.2_i2v_A14b_high_noise_lightx2v_4step_720p_260412.safetensors from "
                              "lightx2v/Wan2.2-Distill-Loras, not on this machine: run "
                              "`openi2v models pull wan2.2-i2v-a14b-turbo`")
    loras = tmp_path / "weights" / "loras"
    loras.mkdir()
    for lora in BUILT_IN["wan2.2-i2v-a14b-turbo"].loras:
        (loras / lora.file).write_bytes(b"")
    registry.check(s)
    located = registry.diffusion_spec(s, "wan2.2-i2v-a14b-turbo").kwargs["preset"].loras
    assert [(lora.path, lora.into) for lora in located] == [
        (str(loras / lora.file), lora.into) for lora in BUILT_IN["wan2.2-i2v-a14b-turbo"].loras]
    # a file preset's own LoRA file, missing
    (tmp_path / "presets.toml").write_text('[[preset]]\nname = "x"\ninherit = "wan2.2-i2v-a14b"\n'
                                           '[[preset.lora]]\npath = "nope.safetensors"\n')
    with pytest.raises(ValueError, match=f"^preset x: LoRA file {tmp_path / 'nope.safetensors'} does not exist$"):
        registry.check(Settings(data_dir=tmp_path, engines={"m": "x"}, device="cpu"))
