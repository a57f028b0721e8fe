"""What the diffusion engines share: how the API's inputs map onto a video diffusion model.

| API input         | on a diffusion preset                                                            |
|-------------------|-----------------------------------------------------------------------------------|
| image             | the first frame: scaled to cover the preset's size for its aspect ratio, centre-cropped (``fit_size``) |
| duration 5        | one native clip (``Preset.frames`` at ``Preset.fps``)                              |
| duration 10       | two clips; the second starts from the first's last frame, colour-matched, its duplicate first frame dropped |
| guidance_scale g  | CFG = 1 + 2·g·(recommended − 1): 0.5 gives the model's recommended CFG, 0 gives 1 (``cfg_for``) |
| negative_prompt   | used whenever CFG > 1 (at CFG 1 the unconditional pass is skipped)                 |
| seed              | a CPU ``torch.Generator``: the same seed gives the same video on the same hardware; segment k uses seed + k |
| last_image        | the model's first-last-frame conditioning where the preset has it (the last segment ends on it) |

Each model family implements ``_open`` (load its pipeline) and ``_sample`` (one native clip);
LoRAs (``loras.py``), speed-ups, sizing, guidance, chaining and encoding are here.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from openi2v.engines.accel import Speedups, apply_speedups, torch_dtype
from openi2v.engines.base import CancelCheck, Cancelled, EngineJob, EngineResult, Progress
from openi2v.engines.catalog import Lora, Preset
from openi2v.media.video import write_mp4

log = logging.getLogger("openi2v.engines.diffusion")


def cfg_for(guidance_scale: float, preset: Preset) -> float:
    """Kling's guidance_scale (0..1, default 0.5) as classifier-free guidance for this preset."""
    if preset.distilled:
        return 1.0
    return 1.0 + 2.0 * guidance_scale * (preset.cfg - 1.0)


def fit_size(image_size: tuple[int, int], preset: Preset) -> tuple[int, int]:
    """(width, height) for an input: the preset's pixel area at the input's aspect ratio,
    each side rounded to the nearest multiple the model needs."""
    w, h = image_size
    area = preset.width * preset.height
    out_h = math.sqrt(area * h / w)
    out_w = out_h * w / h
    m = preset.size_multiple
    return max(m, round(out_w / m) * m), max(m, round(out_h / m) * m)


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale to cover (width, height), then centre-crop: the aspect ratio is kept, nothing is stretched."""
    scale = max(width / image.width, height / image.height)
    w, h = max(width, round(image.width * scale)), max(height, round(image.height * scale))
    resized = image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    left, top = (w - width) // 2, (h - height) // 2
    return resized.crop((left, top, left + width, top + height))


def match_colour(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Shift each channel of ``frames`` so its first frame has ``reference``'s mean and spread:
    hides the colour drift a chained segment picks up at the seam."""
    first = frames[0].reshape(-1, 3).astype(np.float32)
    ref = reference.reshape(-1, 3).astype(np.float32)
    gain = (ref.std(0) + 1e-3) / (first.std(0) + 1e-3)
    offset = ref.mean(0) - first.mean(0) * gain
    return np.clip(frames.astype(np.float32) * gain + offset, 0, 255).round().astype(np.uint8)


class DiffusionEngine:
    """One preset of one model family, loaded once, serving jobs."""

    family = ""

    def __init__(self, preset: Preset, weights: str | Path, device: str = "cuda",
                 speedups: Speedups | None = None, warm_up: bool | None = None) -> None:
        self.preset = preset
        self.warm_up = warm_up  # None: when the transformer or the VAE decoder was compiled (see ``_warm_up``)
        self.weights = str(weights)
        self.device = device
        self.speedups = speedups or Speedups.parse(preset.speedups)
        self.name = preset.name
        self.description = preset.summary
        self.pipe = None
        self.applied: list[str] = []

    def load(self) -> None:
        if self.pipe is not None:
            return
        try:
            pipe = self._open(torch_dtype(self.speedups.dtype, self.device))
        except (OSError, ValueError) as exc:
            if not Path(self.weights).is_dir():
                raise FileNotFoundError(f"no weights for {self.name} in {self.weights} or the Hugging Face cache; "
                                        f"run: openi2v models pull {self.name}") from exc
            raise
        self._merge_loras(pipe)
        self.applied = apply_speedups(pipe, self.speedups, self.device, self.preset.steps)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        log.info("%s loaded from %s on %s with %s", self.name, self.weights, self.device, ", ".join(self.applied))
        compiled = "compile" in self.applied or "vae_compile" in self.applied
        warm_up = compiled if self.warm_up is None else self.warm_up
        if warm_up:
            self._warm_up()

    def _merge_loras(self, pipe) -> None:
        """Fuse each preset LoRA into the transformer it was trained for, at its own scale, before the
        speed-ups (FP8, compilation) see the weights; fused, it costs nothing per step."""
        from openi2v.engines.loras import merge_lora

        for lora in self.preset.loras:
            transformer = getattr(pipe, lora.into, None)
            if transformer is None:
                raise ValueError(f"preset {self.name}: LoRA {lora.name} is for {lora.into}, which the pipeline "
                                 f"in {self.weights} does not have")
            changed = merge_lora(transformer, self._lora_file(lora), lora.scale, self.device)
            log.info("%s: LoRA %s merged into %s at scale %g (%d parameters)", self.name, lora.name, lora.into,
                     lora.scale, changed)

    def _lora_file(self, lora: Lora) -> str:
        """A LoRA's file: its own ``path``, else beside the pipelines where ``openi2v models pull`` puts it,
        else the Hugging Face cache (never the network here)."""
        if lora.path:
            if Path(lora.path).is_file():
                return lora.path
            raise FileNotFoundError(f"LoRA file {lora.path} of {self.name} does not exist; "
                                    f"put it there or change the preset's LoRA path")
        local = Path(self.weights).parent / "loras" / lora.file
        if local.is_file():
            return str(local)
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(lora.repo, lora.file, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"LoRA {lora.name} of {self.name} not found in {local} or the Hugging Face "
                                    f"cache; run: openi2v models pull {self.name}") from exc

    def _warm_up(self) -> None:
        """Compile at load, not in the first user's request (on an H100 the A14B turbo preset's first
        clip took 140 s against 15 s warm). One short clip from a grey 16:9 frame, the commonest
        input shape; another aspect ratio compiles once more on first use.

        A compiled VAE decoder needs two clips: the second decode still compiles (dynamo's guards
        on the decoder's frame cache; on an H100 the 5B turbo preset's first request after one
        warm-up clip took 34 s, the next 8.4 s)."""
        start = time.perf_counter()
        grey = Image.new("RGB", (1280, 720), (128, 128, 128))
        width, height = fit_size(grey.size, self.preset)
        steps = self.preset.steps if self.preset.distilled else 2  # A14B: 2 steps reach both experts
        for _ in range(2 if "vae_compile" in self.applied else 1):
            self._sample(grey, "warm-up", "", cfg_for(0.5, self.preset), 0, width, height, None, steps,
                         lambda i: None)
        log.info("%s warmed up at %dx%d in %.1f s", self.name, width, height, time.perf_counter() - start)

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        p = self.preset
        on_gpu = self.device.startswith("cuda")
        if on_gpu:
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        # 1. Size the first frame for the model (and the last one, if any).
        width, height = fit_size(job.image.size, p)
        first = cover(job.image, width, height)
        last = cover(job.last_image, width, height) if job.last_image is not None and p.last_image else None
        # 2. Map guidance_scale to CFG; the negative prompt matters only above 1.
        cfg = cfg_for(job.guidance_scale, p)
        negative = job.negative_prompt if cfg > 1.0 else ""
        # 3. Sample one native clip per 5 s, each from the previous clip's last frame.
        segments = max(1, job.duration // 5)
        clips: list[np.ndarray] = []
        for k in range(segments):
            def step(i: int, k: int = k) -> None:
                if cancelled():
                    raise Cancelled()
                progress((k + (i + 1) / p.steps) / segments * 0.97)

            start = first if k == 0 else Image.fromarray(clips[-1][-1])
            clip = self._sample(start, job.prompt, negative, cfg, job.seed + k, width, height,
                                last if k == segments - 1 else None, p.steps, step)
            if k > 0:  # the new clip's first frame repeats the previous clip's last
                clip = match_colour(clip, clips[-1][-1])[1:]
            clips.append(clip)
        frames = np.concatenate(clips)
        # 4. Encode through the one video writer.
        video = job.out_dir / "video.mp4"
        write_mp4(video, iter(frames), fps=p.fps, width=width, height=height)
        poster = job.out_dir / "poster.jpg"
        Image.fromarray(frames[0]).save(poster, quality=85)
        details = {"engine": self.name, "model": p.repo, "width": width, "height": height, "fps": p.fps,
                   "frames": len(frames), "segments": segments, "steps": p.steps, "cfg": round(cfg, 3),
                   "speedups": self.applied}
        peak = torch.cuda.max_memory_allocated(self.device) if on_gpu else None
        return EngineResult(video, width, height, p.fps, len(frames), details, poster, peak)

    # --- what each family provides ------------------------------------------------------

    def _open(self, dtype):
        """The pipeline loaded from ``self.weights`` in ``dtype``, ready for speed-ups (still on the CPU)."""
        raise NotImplementedError

    def _sample(self, image: Image.Image, prompt: str, negative: str, cfg: float, seed: int, width: int,
                height: int, last: Image.Image | None, steps: int, step) -> np.ndarray:
        """One native clip as uint8 frames (F, H, W, 3) in ``steps`` denoising steps; ``step(i)`` after each."""
        raise NotImplementedError


def generator(seed: int):
    """A CPU generator: the same initial noise on any device."""
    import torch

    return torch.Generator("cpu").manual_seed(int(seed) % 2**63)


def to_uint8(frames, chunk: int = 16) -> np.ndarray:
    """Pipeline output (``output_type="pt"``: float in [0, 1], (F, 3, H, W), where the VAE left it)
    as uint8 (F, H, W, 3). Converted on the pipeline's device, in float32 (bf16 cannot hold
    255 steps exactly), a few frames at a time so a GPU needs little extra memory. On an H100,
    for 121 frames at 1280x704, an equivalent conversion on the GPU took 0.3 s where diffusers'
    numpy output and a numpy conversion took 2.4 s (docs/benchmarks.md)."""
    import torch

    out = np.empty((frames.shape[0], frames.shape[2], frames.shape[3], 3), dtype=np.uint8)
    for i in range(0, frames.shape[0], chunk):
        part = frames[i:i + chunk].float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
        out[i:i + chunk] = part.permute(0, 2, 3, 1).cpu().numpy()
    return out


def step_callback(step):
    """diffusers' ``callback_on_step_end`` calling ``step(i)``; ``step`` may raise Cancelled."""
    def on_step_end(pipe, i, t, kwargs):
        step(i)
        return {}

    return on_step_end
