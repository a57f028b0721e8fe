"""`openi2v doctor`: what a machine can serve, why, and the command that fixes each missing piece."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from openi2v import doctor
from openi2v.config import Settings
from openi2v.engines import accel
from openi2v.engines.accel import Speedups
from tests import tiny_models

GIB = 2**30
H100 = doctor.GpuInfo(0, "NVIDIA H100 80GB HBM3", 78 * GIB, 80 * GIB, (9, 0))
A100 = doctor.GpuInfo(0, "NVIDIA A100-SXM4-80GB", 78 * GIB, 80 * GIB, (8, 0))
RTX4090 = doctor.GpuInfo(0, "NVIDIA GeForce RTX 4090", 23 * GIB, 24 * GIB, (8, 9))
A6000 = doctor.GpuInfo(0, "NVIDIA RTX A6000", 47 * GIB, 48 * GIB, (8, 6))


def run(tmp_path, *args, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENI2V_", "HF_"))}
    env.update(OPENI2V_DATA_DIR=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
               **env_extra)
    return subprocess.run([sys.executable, "-m", "openi2v.cli", "doctor", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def fits(report) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    return {p.name: (p.fit, p.speedups, p.skipped) for p in report.presets}


def test_without_a_gpu_it_says_the_camera_engine_serves_and_why(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[lines.index("GPUs") + 1] == "  none: no CUDA GPU (or torch without CUDA) here"
    assert "  auto would serve motion: no CUDA GPU here and no weights for wan2.2-ti2v-5b-turbo (openi2v models pull " \
           "wan2.2-ti2v-5b-turbo): the camera-motion engine serves" in lines
    assert "  kwaivgi/kling-v2.5-turbo-pro/image-to-video: auto" in lines
    assert "  ok: the configured engines can start" in lines
    assert "    fix: openi2v models pull wan2.2-i2v-a14b-turbo" in lines
    assert any(line.startswith("  wan2.2-i2v-a14b-turbo: weights absent; no GPU:") for line in lines)
    assert any(line.startswith("  torch: 2.") for line in lines)


def test_it_exits_1_with_the_fix_when_the_configured_engines_cannot_start(tmp_path):
    out = run(tmp_path, "--json", OPENI2V_ENGINES=json.dumps({"m": "wan2.2-ti2v-5b"}), OPENI2V_DEVICE="cpu")
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert "run `openi2v models pull wan2.2-ti2v-5b`" in report["problem"]
    assert report["engines"] == {"m": "wan2.2-ti2v-5b"}
    five_b = next(p for p in report["presets"] if p["name"] == "wan2.2-ti2v-5b")
    assert five_b["weights"] == "absent" and five_b["fixes"] == ["openi2v models pull wan2.2-ti2v-5b"]
    # the weights pulled, the same machine can start it: exit 0
    tiny_models.save("wan2.2-5b", tmp_path / "data" / "weights" / "wan2.2-ti2v-5b")
    out = run(tmp_path, "--json", OPENI2V_ENGINES=json.dumps({"m": "wan2.2-ti2v-5b"}), OPENI2V_DEVICE="cpu")
    assert out.returncode == 0, out.stdout
    five_b = next(p for p in json.loads(out.stdout)["presets"] if p["name"] == "wan2.2-ti2v-5b")
    assert five_b["weights"] == "present" and five_b["fixes"] == [] and five_b["bytes_on_disk"] > 0


def test_a_malformed_preset_file_is_the_problem_it_reports(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "presets.toml").write_text('[[preset]]\nname = "x"\ninherit = "wan2.2-ti2v-5b"\nfps = 0\n')
    out = run(tmp_path)
    assert out.returncode == 1
    assert f"cannot start: {tmp_path / 'data' / 'presets.toml'}, line 4: preset 'x', field 'fps'" in out.stdout


def test_which_presets_fit_each_gpu_and_with_which_speedups(tmp_path):
    s = Settings(data_dir=tmp_path)
    h100 = fits(doctor.examine(s, [H100]))
    assert h100["wan2.2-i2v-a14b-turbo"] == ("fits", ["bf16", "attention=sdpa", "fp8", "vae_channels_last",
                                                      "compile"], {})
    assert h100["wan2.2-ti2v-5b-turbo"][0] == "fits"
    # an A100 has no FP8: the A14B's measured 41.6 GiB (with fp8) may double without it
    a100 = fits(doctor.examine(s, [A100]))
    assert a100["wan2.2-i2v-a14b-turbo"][0] == "may not fit"
    assert a100["wan2.2-i2v-a14b-turbo"][2] == {"fp8": "needs a GPU of compute capability 8.9 or newer"}
    assert a100["wan2.2-ti2v-5b-turbo"][0] == "fits"
    # under 40 GB, group offload and VAE tiling come on their own, and the VAE decoder is not compiled then
    rtx = fits(doctor.examine(s, [RTX4090]))
    assert rtx["wan2.2-ti2v-5b-turbo"][0] == "fits with group offload"
    assert rtx["wan2.2-ti2v-5b-turbo"][1] == ["bf16", "attention=sdpa", "group_offload", "vae_tiling",
                                              "vae_channels_last", "compile"]
    assert rtx["wan2.2-ti2v-5b-turbo"][2] == {"vae_compile": "not with VAE tiling"}
    # 48 GB without FP8: no offload on its own, and the A14B's lower bound already exceeds it
    a6000 = fits(doctor.examine(s, [A6000]))
    assert a6000["ltx-video-0.9.8-distilled"][0] == "fits"
    assert a6000["wan2.2-i2v-a14b-turbo"][0] == "may not fit"
    lines = doctor.render(doctor.examine(s, [H100]))
    assert "  cuda:0 NVIDIA H100 80GB HBM3: 78.0 GiB free of 80.0 GiB, compute capability 9.0" in lines
    assert any(line.startswith("  wan2.2-i2v-a14b-turbo: weights absent; fits: needs about 41.6 GiB (measured)")
               for line in lines)


def test_a_preset_without_a_memory_figure_or_too_big_says_so(tmp_path):
    (tmp_path / "presets.toml").write_text(
        '[[preset]]\nname = "huge"\ninherit = "wan2.2-ti2v-5b"\ngpu_gib = 120\n'
        '[[preset]]\nname = "new"\nfamily = "wan"\nrepo = "o/r"\nwidth = 64\nheight = 64\nfps = 8\nframes = 9\n'
        'steps = 2\ncfg = 1\n')
    report = fits(doctor.examine(Settings(data_dir=tmp_path), [H100]))
    assert report["huge"][0] == "does not fit"
    assert report["new"][0] == "unknown"


@pytest.mark.parametrize("gpu, expected", [
    (None, ["fp32", "attention=sdpa", "fbcache=0.1"]),
    (accel.Gpu((9, 0), 80 * GIB), ["bf16", "attention=sdpa", "fp8", "vae_channels_last", "vae_compile",
                                   "fbcache=0.1", "compile"]),
    (accel.Gpu((8, 6), 24 * GIB), ["bf16", "attention=sdpa", "group_offload", "vae_tiling", "vae_channels_last",
                                   "fbcache=0.1", "compile"]),
])
def test_the_speedups_a_gpu_gets(gpu, expected):
    applied, skipped = accel.decide(Speedups.parse(["bf16", "sdpa", "compile", "fbcache=0.1", "fp8",
                                                    "vae_channels_last", "vae_compile"]), gpu)
    assert applied == expected
    assert ("fp8" in skipped) == (gpu is None or gpu.capability < (8, 9))


def test_the_fp8_figure_is_doubled_when_speedups_drop_fp8_and_a_malformed_device_is_no_crash(tmp_path):
    l40s = doctor.GpuInfo(0, "NVIDIA L40S", 44 * GIB, 46 * GIB, (8, 9))
    assert fits(doctor.examine(Settings(data_dir=tmp_path), [l40s]))["wan2.2-i2v-a14b-turbo"][0] == "fits"
    without = fits(doctor.examine(Settings(data_dir=tmp_path, speedups="bf16,sdpa"), [l40s]))
    assert without["wan2.2-i2v-a14b-turbo"][0] == "may not fit"  # 41.6 GiB was measured with fp8
    report = doctor.examine(Settings(data_dir=tmp_path, device="cuda:x"), [H100])
    assert {p.fit for p in report.presets} == {"no GPU"}


def test_an_attention_backend_that_is_installed_but_broken_says_why(tmp_path, monkeypatch):
    broken = tmp_path / "site" / "sageattention"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("built for CUDA 12.8, this is 12.4")\n')
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "sageattention", raising=False)
    backends = doctor.attention(H100)
    assert backends["sage"] == "sageattention does not import (RuntimeError: built for CUDA 12.8, this is 12.4)"
    assert backends["flash3"] == "flash_attn_interface is not installed"
    assert backends["sdpa"] == backends["cudnn"] == "ok"
    assert doctor.attention(None)["cudnn"] == "GPU only"
