"""bench/gpu_denoise.py runs everywhere: on a CPU with tiny configs, through the same code as on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_denoise_bench_runs_on_cpu_with_tiny_configs():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_denoise.py"), "wan2.2-i2v-a14b",
                          "ltx-video-0.9.8-distilled", "--steps", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "tiny configs" in lines[0]
    for name in ("wan2.2-i2v-a14b", "ltx-video-0.9.8-distilled"):
        arms = [line for line in lines if line.startswith(name)]
        assert [a.split()[1] for a in arms] == ["baseline", "speed-ups", "ratio"]
        assert all("s/step" in a for a in arms[:2])
    assert "fbcache=0.1" in next(line for line in lines if line.startswith("wan2.2-i2v-a14b ") and "speed-ups" in line)


def test_gpu_end_to_end_bench_runs_on_cpu_with_tiny_pipelines():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_end_to_end.py"), "--runs", "2",
                          "--add", "vae_compile", "--then-vae-compile"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "tiny pipelines" in lines[0]
    for name, frames in (("wan2.2-i2v-a14b-turbo", 9), ("wan2.2-ti2v-5b-turbo", 9)):
        requests = [line for line in lines if line.startswith(name) and "request" in line]
        assert len(requests) == 4  # two with the preset's speed-ups, two more after --then-vae-compile
        assert sum("then vae_compile + warm-up" in line for line in lines if line.startswith(name)) == 1
        assert all("2 steps" in r and f"{frames} frames 64x32" in r for r in requests)
        assert all("of which x264" in r and "on a panned photo" in r for r in requests)


def test_gpu_decode_bench_runs_on_cpu_with_tiny_vaes():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_decode.py")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "tiny VAEs" in lines[0]
    for name in ("wan2.2-ti2v-5b", "wan2.2-i2v-a14b"):
        line = next(line for line in lines if line.startswith(name))
        assert "channels-last" in line and "on the device" in line and "panned photo" in line


def test_gpu_all_keeps_each_bench_s_results_and_logs_and_refuses_unknown_names(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_all.sh"), "decode"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "tiny VAEs" in out.stdout and "[decode: exit 0 after" in out.stdout
    assert "tiny VAEs" in (tmp_path / "decode.out").read_text() and (tmp_path / "decode.err").exists()
    refused = subprocess.run(["bash", str(ROOT / "bench" / "gpu_all.sh"), "e2e-everything"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "unknown bench e2e-everything" in refused.stderr
