"""`openi2v generate --model PRESET --weights DIR` and `openi2v models list`, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys

from openi2v.engines.catalog import BUILT_IN
from openi2v.media.video import probe
from tests import pictures, tiny_models


def cli(tmp_path, *args):
    env = dict(os.environ, OPENI2V_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "openi2v.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_generate_runs_a_preset_from_a_diffusers_directory(tmp_path):
    weights = tiny_models.save("wan2.2-5b", tmp_path / "tiny-5b")
    photo = tmp_path / "photo.png"
    photo.write_bytes(pictures.png(640, 426))
    out = cli(tmp_path, "generate", str(photo), "--prompt", "slow zoom in", "--model", "wan2.2-ti2v-5b",
              "--weights", str(weights), "--steps", "2", "--size", "64x32", "--device", "cpu", "--seed", "4",
              "-o", str(tmp_path / "out.mp4"))
    assert out.returncode == 0, out.stderr
    assert "wan2.2-ti2v-5b: 2 steps, CFG 5.0" in out.stdout
    info = probe(tmp_path / "out.mp4")
    assert (info.codec, info.frames, info.fps, info.width, info.height) == ("h264", 121, 24, 64, 32)


def test_generate_names_an_unknown_preset(tmp_path):
    photo = tmp_path / "photo.png"
    photo.write_bytes(pictures.png(640, 426))
    out = cli(tmp_path, "generate", str(photo), "--prompt", "x", "--model", "sora")
    assert out.returncode == 2 and "unknown model preset 'sora'" in out.stderr


def test_models_list_shows_every_preset_its_weights_and_gpu_memory(tmp_path):
    tiny_models.save("wan2.2-5b", tmp_path / "data" / "weights" / "wan2.2-ti2v-5b")  # copied by hand: no manifest
    out = cli(tmp_path, "models", "list")
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split("\t") == ["name", "repo", "size", "fps", "frames", "steps", "cfg", "weights", "on disk",
                                  "gpu memory", "speed-ups"]
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert set(rows) == set(BUILT_IN)
    assert rows["wan2.2-ti2v-5b"][2:10] == ["1280x704", "24", "121", "50", "5", "present", rows["wan2.2-ti2v-5b"][8],
                                            "33 GiB estimate"]
    assert rows["wan2.2-ti2v-5b"][8].endswith(" kB")
    assert rows["wan2.2-i2v-a14b-turbo"][1] == "Wan-AI/Wan2.2-I2V-A14B-Diffusers + 2 LoRAs"
    assert rows["wan2.2-i2v-a14b-turbo"][6:10] == ["1 (distilled)", "absent", "0 B", "41.6 GiB measured"]
    assert rows["ltx-video-0.9.8-distilled"][7:9] == ["absent", "0 B"]


def test_models_pull_says_clearly_when_the_hub_cannot_be_reached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = cli(tmp_path, "models", "pull", "wan2.2-ti2v-5b-turbo")
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: could not download wan2.2-ti2v-5b-turbo (FastVideo/FastWan2.2-TI2V-5B-"
                                  "FullAttn-Diffusers): offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is "
                                  "set): unset it to download")
