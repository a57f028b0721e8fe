"""What a Wan clip costs after its last denoising step: VAE decode, uint8 conversion, x264.

For each Wan VAE (2.2 for TI2V-5B at 121x704x1280, 2.1 for A14B at 81x480x848), built at
its real configuration with random weights, the script decodes random latents of a 5 s
clip's shape and times, in one run:
- the decode plain, with channels-last convolution weights (``vae_channels_last``), and on a
  GPU with the decoder compiled as well (``vae_compile``: its first call, which compiles, and a
  warm one; the frames are checked against the plain decode's);
- diffusers' numpy output plus a numpy uint8 conversion, against ``diffusion.to_uint8`` on
  the device (what the engines do);
- x264 (the engines' writer) on the decoded frames, and on a panned photo of the same size:
  random weights decode to noise, which costs x264 far more than natural video does.

Without a GPU it runs the same code on the CPU with the tests' tiny VAEs, so it is known to
work; those timings mean nothing. Run: .venv/bin/python bench/gpu_decode.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gpu_denoise import fresh_memory, random_init, sync  # noqa: E402  (bench/ is this script's directory)
from gpu_end_to_end import WAN21_VAE, WAN22_VAE, encode_seconds, panned_photo  # noqa: E402

from openi2v.engines.accel import apply_vae_channels_last, apply_vae_compile  # noqa: E402
from openi2v.engines.diffusion import to_uint8  # noqa: E402
from tests import tiny_models  # noqa: E402

# name, VAE config, latents of a 5 s clip (batch, channels, frames, height, width), pixels per latent
CLIPS = (("wan2.2-ti2v-5b 121x704x1280", WAN22_VAE, (1, 48, 31, 44, 80), 16),
         ("wan2.2-i2v-a14b 81x480x848", WAN21_VAE, (1, 16, 21, 60, 106), 8))


def timed(fn, repeats: int = 2):
    """The last of ``repeats`` calls (the first warms up cuDNN), and its seconds."""
    out, seconds = None, 0.0
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        seconds = time.perf_counter() - start
    return out, seconds


def main() -> None:
    from diffusers import AutoencoderKLWan
    from diffusers.video_processor import VideoProcessor

    gpu = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if gpu else ("cpu", torch.float32)
    card = torch.cuda.get_device_name() if gpu else "CPU (tiny VAEs, 2 latent frames: timings mean nothing)"
    print(f"device: {card}; torch {torch.__version__}")
    for name, config, shape, scale in CLIPS:
        fresh_memory()  # the previous VAE's
        if gpu:
            with random_init(dtype, device):
                vae = AutoencoderKLWan(**config).eval()
        else:  # the tests' tiny VAE of the same layout, and two latent frames
            vae = tiny_models.wan_vae(config.get("z_dim", 16)).eval()
            shape = (*shape[:2], 2, 4, 6)
        latents = torch.randn(shape, device=device, dtype=dtype)
        with torch.inference_mode():
            video, plain = timed(lambda: vae.decode(latents, return_dict=False)[0])
            apply_vae_channels_last(SimpleNamespace(vae=vae))  # accel's apply_* take a pipeline
            _, channels_last = timed(lambda: vae.decode(latents, return_dict=False)[0])
            compiled = ""
            if gpu:  # on a CPU compiling takes minutes (as in accel.apply_speedups)
                apply_vae_compile(SimpleNamespace(vae=vae))
                fast, first = timed(lambda: vae.decode(latents, return_dict=False)[0], repeats=1)
                fast, warm = timed(lambda: vae.decode(latents, return_dict=False)[0])
                differs = (fast.float() - video.float()).abs().max().item()
                compiled = f", compiled {warm:5.2f} s (first call {first:.0f} s; max difference {differs:.3f})"
                del fast
                torch._dynamo.reset()  # the next VAE compiles afresh, as in a server's own process (the
                # two VAEs share their classes' code, and with it dynamo's limit of 8 compiles per function)
            processor = VideoProcessor(vae_scale_factor=scale)
            start = time.perf_counter()
            as_numpy = processor.postprocess_video(video, output_type="np")[0]
            frames = (np.clip(as_numpy, 0, 1) * 255).round().astype(np.uint8)
            numpy_path = time.perf_counter() - start
            start = time.perf_counter()
            on_device = to_uint8(processor.postprocess_video(video, output_type="pt")[0])
            device_path = time.perf_counter() - start
        assert np.abs(on_device.astype(int) - frames.astype(int)).max() <= 1  # the same pictures, within one level
        count, height, width = frames.shape[:3]
        noise_x264, natural_x264 = encode_seconds(frames), encode_seconds(panned_photo(count, height, width))
        mem = torch.cuda.max_memory_allocated() / 2**30 if gpu else float("nan")
        print(f"{name:28s} decode {plain:5.2f} s, channels-last {channels_last:5.2f} s{compiled} | uint8: numpy {numpy_path:4.2f} s, "
              f"on the device {device_path:4.2f} s | x264: decoded frames {noise_x264:4.2f} s, panned photo "
              f"{natural_x264:4.2f} s | {count} frames {width}x{height}, peak {mem:.1f} GiB")
        del vae, latents, video


if __name__ == "__main__":
    main()
