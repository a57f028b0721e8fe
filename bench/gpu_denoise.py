"""Seconds per denoising step for each preset's transformer: plain diffusers against the preset's speed-ups.

Each preset's transformer is built at its real config with random weights (timing does not
depend on weight values), fed latents of the preset's native size and frame count, and run
for a few denoising steps (each step: one pass, or two with CFG). Both arms run in this one
process on the same card: the baseline (bf16, SDPA, nothing else) and the preset's own
speed-ups (engines/accel.py: compile_repeated_blocks, First-Block cache, FP8 where the card
has it). Prints seconds per step, the ratio, peak memory and achieved TFLOP/s as a fraction
of the card's dense bf16 peak.

Without a GPU it runs the same code on the CPU with tiny configs, so it is known to work;
those timings mean nothing. Run: .venv/bin/python bench/gpu_denoise.py [preset ...] [--steps N]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from openi2v.engines.accel import Speedups, apply_compile, apply_first_block_cache, apply_fp8, fp8_supported  # noqa: E402
from openi2v.engines.catalog import Preset, get_preset  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s), by the name torch reports.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}
TEXT_TOKENS = 512


@dataclass(frozen=True)
class Arch:
    """A transformer config at real size, and how its latents are shaped."""

    kind: str  # "wan" or "ltx"
    config: dict
    vae_spatial: int
    vae_temporal: int
    latent_channels: int  # what the transformer takes in (noise + conditioning channels)
    patch: tuple[int, int, int]


REAL = {
    # Wan 2.2 I2V-A14B: each expert is a 14B transformer (one runs per step)
    "wan2.2-i2v-a14b": Arch("wan", dict(patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128,
                                        in_channels=36, out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824,
                                        num_layers=40, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        eps=1e-6, rope_max_seq_len=1024), 8, 4, 36, (1, 2, 2)),
    "wan2.2-ti2v-5b": Arch("wan", dict(patch_size=(1, 2, 2), num_attention_heads=24, attention_head_dim=128,
                                       in_channels=48, out_channels=48, text_dim=4096, freq_dim=256, ffn_dim=14336,
                                       num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                       eps=1e-6, rope_max_seq_len=1024), 16, 4, 48, (1, 2, 2)),
    "ltx-video-0.9.8-distilled": Arch("ltx", dict(in_channels=128, out_channels=128, patch_size=1, patch_size_t=1,
                                                  num_attention_heads=32, attention_head_dim=128,
                                                  cross_attention_dim=4096, num_layers=48, caption_channels=4096),
                                      32, 8, 128, (1, 1, 1)),
}
REAL["wan2.2-i2v-a14b-turbo"] = REAL["wan2.2-i2v-a14b"]
REAL["wan2.2-ti2v-5b-turbo"] = REAL["wan2.2-ti2v-5b"]


def tiny(arch: Arch) -> Arch:
    """The same code path at a size a CPU runs in seconds."""
    c = dict(arch.config)
    if arch.kind == "wan":
        c.update(num_attention_heads=2, attention_head_dim=12, text_dim=32, ffn_dim=32, num_layers=2,
                 rope_max_seq_len=64)
    else:
        c.update(num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, num_layers=2,
                 caption_channels=32)
    return Arch(arch.kind, c, arch.vae_spatial, arch.vae_temporal, arch.latent_channels, arch.patch)


@contextmanager
def random_init(dtype, device):
    """Modules built inside get random weights made directly in ``dtype`` on ``device``: no fp32 copy."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build(arch: Arch, dtype, device):
    from diffusers import LTXVideoTransformer3DModel, WanTransformer3DModel

    cls = WanTransformer3DModel if arch.kind == "wan" else LTXVideoTransformer3DModel
    with random_init(dtype, device):
        return cls(**arch.config).eval()


def inputs(arch: Arch, preset: Preset, dtype, device) -> tuple[dict, int]:
    """One forward pass's arguments, and its token count."""
    t = (preset.frames - 1) // arch.vae_temporal + 1
    h, w = preset.height // arch.vae_spatial, preset.width // arch.vae_spatial
    text_dim = arch.config.get("text_dim") or arch.config["caption_channels"]
    text = torch.randn(1, TEXT_TOKENS, text_dim, dtype=dtype, device=device)
    tokens = t * (h // arch.patch[1]) * (w // arch.patch[2])
    if arch.kind == "wan":
        x = torch.randn(1, arch.latent_channels, t, h, w, dtype=dtype, device=device)
        return dict(hidden_states=x, encoder_hidden_states=text, return_dict=False), tokens
    x = torch.randn(1, t * h * w, arch.latent_channels, dtype=dtype, device=device)
    mask = torch.ones(1, TEXT_TOKENS, device=device)
    return dict(hidden_states=x, encoder_hidden_states=text, encoder_attention_mask=mask, num_frames=t, height=h,
                width=w, return_dict=False), tokens


def flops_per_pass(arch: Arch, tokens: int) -> float:
    """Matmul FLOPs of one forward pass (2 per multiply-add): the linear layers, plus attention."""
    c = arch.config
    dim = c["num_attention_heads"] * c["attention_head_dim"]
    layers = c["num_layers"]
    ffn = c.get("ffn_dim", 4 * dim)
    # per video token: self-attention q, k, v, o; cross-attention q, o; the feed-forward's two matrices
    per_token = 4 * dim * dim + 2 * dim * dim + 2 * dim * ffn
    text_kv = 2 * dim * dim * TEXT_TOKENS  # cross-attention k, v of the text, once per layer
    linear = 2 * (tokens * per_token + text_kv) * layers
    attention = 4 * tokens * (tokens + TEXT_TOKENS) * dim * layers  # QK^T and PV, self and cross
    return float(linear + attention)


def time_steps(model, args: dict, preset: Preset, steps: int, device) -> tuple[float, float]:
    """Seconds of the warm-up step (compilation happens there), and mean seconds per denoising
    step after it, CFG passes included."""
    passes = 1 if preset.distilled else 2
    x = args["hidden_states"]

    def step(i: int) -> None:
        nonlocal x
        timestep = torch.full((1,), 999.0 - i * 999.0 / max(1, steps), device=device)
        for branch in ("cond", "uncond")[:passes]:
            with model.cache_context(branch) if hasattr(model, "cache_context") else _nothing():
                out = model(**{**args, "hidden_states": x, "timestep": timestep})[0]
        x = x.clone()  # an Euler-like update of the noise channels (I2V inputs carry conditioning after them)
        x[:, :out.shape[1]] -= 0.05 * out.to(x.dtype)

    with torch.inference_mode():
        start = time.perf_counter()
        step(0)
        sync()
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(1, steps + 1):
            step(i)
        sync()
    return warm_up, (time.perf_counter() - start) / steps


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def sync() -> None:
    """Wait for the GPU's queued work, so a host clock times it (a no-op on a CPU-only machine)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def fresh_memory() -> None:
    """Free what finished models hold and restart the GPU's peak-memory count. A model that has run
    sits in a reference cycle, so only a collection frees its weights (without one, the baseline's
    were still allocated in the speed-ups arm, and counted in its peak)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def each_preset(names: list[str], bench_one) -> None:
    """``bench_one(name)`` for each preset; one failing (out of memory, say) still leaves the others'
    figures, and the script exits non-zero at the end."""
    failed = []
    for name in names:
        try:
            bench_one(name)
        except Exception:
            traceback.print_exc()
            print(f"{name} FAILED")
            failed.append(name)
        finally:
            fresh_memory()
    if failed:
        sys.exit(1)


def speed_up(model, speedups: Speedups) -> list[str]:
    """The preset's speed-ups that apply to a bare transformer (the pipeline-level ones are elsewhere)."""
    holder = SimpleNamespace(transformer=model, transformer_2=None)  # accel's apply_* take a pipeline
    applied = []
    if speedups.fp8 and fp8_supported():
        apply_fp8(holder)
        applied.append("fp8")
    if speedups.cache == "fbcache":
        apply_first_block_cache(holder, speedups.cache_threshold)
        applied.append(f"fbcache={speedups.cache_threshold:g}")
    if speedups.compile and torch.cuda.is_available():
        apply_compile(holder, fullgraph=speedups.cache is None)
        applied.append("compile")
    return applied


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("presets", nargs="*", default=["wan2.2-i2v-a14b-turbo", "wan2.2-ti2v-5b-turbo",
                                                     "ltx-video-0.9.8-distilled"])
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    dtype = torch.bfloat16 if gpu else torch.float32
    card = torch.cuda.get_device_name() if gpu else "CPU (tiny configs: checks the code, timings mean nothing)"
    peak = next((v for k, v in PEAK_BF16.items() if k in card), None)
    print(f"device: {card}; torch {torch.__version__}; {args.steps} timed steps after one warm-up")
    started = time.perf_counter()
    try:
        each_preset(args.presets, lambda name: bench(name, args.steps, gpu, device, dtype, peak))
    finally:
        print(f"whole run {time.perf_counter() - started:.0f} s")


def bench(name: str, steps: int, gpu: bool, device: str, dtype, peak: float | None) -> None:
    preset = get_preset(name)
    arch = REAL[name] if gpu else tiny(REAL[name])
    if not gpu:  # a tiny clip too, on the same grid
        preset = preset.with_overrides(size=(preset.size_multiple * 4, preset.size_multiple * 2), frames=9)
    line = {}
    for arm in ("baseline", "speed-ups"):
        fresh_memory()
        model = build(arch, dtype, device)
        if gpu:
            model.set_attention_backend("native")  # SDPA in both arms
        applied = (speed_up(model, Speedups.parse(preset.speedups)) if arm == "speed-ups"
                   else ["bf16" if gpu else "fp32", "sdpa"])
        fwd, tokens = inputs(arch, preset, dtype, device)
        warm_up, seconds = time_steps(model, fwd, preset, steps, device)
        passes = 1 if preset.distilled else 2
        tflops = flops_per_pass(arch, tokens) * passes / seconds / 1e12
        mem = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
        line[arm] = seconds
        share = f"{tflops / peak:.0%} of {peak:g}" if peak else "n/a"
        print(f"{name:28s} {arm:9s} {seconds:8.3f} s/step  peak {mem:6.1f} GiB  {tflops:7.1f} TFLOP/s ({share})  "
              f"[{', '.join(applied) or 'none applicable'}] {tokens} tokens x {passes} pass(es); "
              f"first step {warm_up:.1f} s")
        del model, fwd
    print(f"{name:28s} ratio speed-ups/baseline {line['speed-ups'] / line['baseline']:.2f}; "
          f"{preset.steps} steps -> {line['speed-ups'] * preset.steps:.1f} s of denoising per 5 s clip")

if __name__ == "__main__":
    main()
