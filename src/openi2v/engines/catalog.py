"""The diffusion model catalog: each preset names its weights, native clip and sampler settings.

A preset is everything needed to serve one open model behind the API: the Hugging Face
repo (diffusers format) and optional distillation LoRAs, the native size, fps and frame
count of a 5 s clip, the steps and the model's recommended CFG, and the speed-ups it
runs with by default (see ``accel.py``; group offload and VAE tiling are added on their own on
GPUs under 40 GB), and the GPU memory a request needs: measured on an H100 where
docs/benchmarks.md has the figure (the turbo presets), otherwise an estimate from the model's size.
A preset file (``preset_file.py``) adds presets or overrides these. ``openi2v models list`` prints this table;
``openi2v models pull NAME`` downloads a preset's files: the pipeline into
``{weights root}/{weights_name}``, LoRAs into ``{weights root}/loras``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openi2v.config import Settings


@dataclass(frozen=True)
class Lora:
    repo: str = ""  # a Hub repo holding ``file`` (``models pull`` puts it in {weights root}/loras)
    file: str = ""
    into: str = "transformer"  # or "transformer_2" (Wan 2.2's low-noise expert)
    scale: float = 1.0
    path: str | None = None  # or a local .safetensors file (absolute), instead of repo and file

    @property
    def name(self) -> str:
        """How a message names this LoRA."""
        return self.path or f"{self.file} from {self.repo}"


@dataclass(frozen=True)
class Preset:
    name: str
    family: str  # "wan" or "ltx": which engine module runs it
    repo: str  # diffusers-format weights on the Hugging Face Hub
    width: int  # native landscape size; portrait inputs swap it (see diffusion.fit_size)
    height: int
    fps: int
    frames: int  # one native clip, about 5 s
    steps: int
    cfg: float  # the model's recommended classifier-free guidance (guidance_scale 0.5 maps here)
    distilled: bool = False  # CFG-distilled: always runs at CFG 1 (guidance_scale and negative_prompt unused)
    size_multiple: int = 16  # height and width must be multiples of this
    flow_shift: float | None = None  # scheduler shift, where the preset overrides the checkpoint's
    loras: tuple[Lora, ...] = ()
    last_image: bool = False  # the model conditions on a last frame (first-last-frame support)
    speedups: tuple[str, ...] = ("bf16", "sdpa")  # names understood by accel.Speedups.parse
    base: str | None = None  # another preset whose weights this one runs (with its own LoRAs)
    path: str | None = None  # a local diffusers directory holding the weights (absolute): nothing to pull
    gpu_gib: float | None = None  # GPU memory one request needs at the native size (GiB)
    gpu_gib_measured: bool = False  # ``gpu_gib`` was measured (docs/benchmarks.md), else an estimate
    description: str = ""
    extra: dict = field(default_factory=dict)  # pipeline call arguments specific to the model

    @property
    def weights_name(self) -> str:
        """The directory under the weights root that holds this preset's pipeline."""
        return self.base or self.name

    @property
    def summary(self) -> str:
        """What ``GET /api/v3/models`` says of an engine serving this preset."""
        return f"{self.description} Diffusion engine ({self.repo or self.path})."

    @property
    def model_id(self) -> str:
        """The API model id this preset is served under, beside any id configured to use it."""
        return f"openi2v/{self.name}/image-to-video"

    def with_overrides(self, steps: int | None = None, size: tuple[int, int] | None = None,
                       frames: int | None = None) -> "Preset":
        """A small machine's version of this preset (fewer steps, a smaller size or clip)."""
        out = self
        if steps:
            out = replace(out, steps=steps)
        if size:
            out = replace(out, width=size[0], height=size[1])
        if frames:
            out = replace(out, frames=frames)
        return out


_WAN_A14B = dict(family="wan", repo="Wan-AI/Wan2.2-I2V-A14B-Diffusers", width=832, height=480, fps=16, frames=81,
                 size_multiple=16, last_image=True)
_LIGHTX2V = "lightx2v/Wan2.2-Distill-Loras"
_WAN_5B = dict(family="wan", width=1280, height=704, fps=24, frames=121, size_multiple=32)

BUILT_IN: dict[str, Preset] = {p.name: p for p in (
    Preset("wan2.2-i2v-a14b", **_WAN_A14B, steps=40, cfg=3.5,
           speedups=("bf16", "sdpa", "compile", "fbcache=0.1", "fp8", "vae_channels_last"), gpu_gib=42,
           description="Wan 2.2 I2V-A14B, two experts (high/low noise), 480p, 81 frames at 16 fps."),
    Preset("wan2.2-i2v-a14b-turbo", **_WAN_A14B, steps=4, cfg=1.0, distilled=True, flow_shift=5.0,
           base="wan2.2-i2v-a14b",
           loras=(Lora(_LIGHTX2V, "wan2.2_i2v_A14b_high_noise_lightx2v_4step_720p_260412.safetensors"),
                  Lora(_LIGHTX2V, "wan2.2_i2v_A14b_low_noise_lightx2v_4step_720p_260412.safetensors",
                       into="transformer_2")),
           speedups=("bf16", "sdpa", "compile", "fp8", "vae_channels_last"), gpu_gib=41.6, gpu_gib_measured=True,
           description="Wan 2.2 I2V-A14B with the LightX2V 4-step distill LoRAs in both experts (CFG 1)."),
    Preset("wan2.2-ti2v-5b", **_WAN_5B, repo="Wan-AI/Wan2.2-TI2V-5B-Diffusers", steps=50, cfg=5.0,
           speedups=("bf16", "sdpa", "compile", "fbcache=0.1", "vae_channels_last", "vae_compile"), gpu_gib=33,
           description="Wan 2.2 TI2V-5B, 1280x704, 121 frames at 24 fps; fits a 24 GB GPU."),
    Preset("wan2.2-ti2v-5b-turbo", **_WAN_5B, repo="FastVideo/FastWan2.2-TI2V-5B-FullAttn-Diffusers", steps=3,
           cfg=1.0, distilled=True, speedups=("bf16", "sdpa", "compile", "vae_channels_last", "vae_compile"),
           gpu_gib=32.4, gpu_gib_measured=True,
           description="FastWan 2.2 TI2V-5B: the 5B model DMD-distilled to 3 steps (CFG 1)."),
    Preset("wan2.1-i2v-14b-480p", family="wan", repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", width=832, height=480,
           fps=16, frames=81, steps=40, cfg=5.0,
           speedups=("bf16", "sdpa", "compile", "fbcache=0.1", "fp8", "vae_channels_last"), gpu_gib=40,
           description="Wan 2.1 I2V-14B (CLIP image tokens), 480p, 81 frames at 16 fps."),
    Preset("ltx-video-0.9.8-distilled", family="ltx", repo="Lightricks/LTX-Video-0.9.8-13B-distilled", width=1216,
           height=704, fps=24, frames=121, steps=8, cfg=1.0, distilled=True, size_multiple=32, last_image=True,
           speedups=("bf16", "sdpa", "compile"), gpu_gib=40,
           extra={"decode_timestep": 0.05, "decode_noise_scale": 0.025},
           description="LTX-Video 0.9.8 13B distilled: 8 steps, CFG 1, 1216x704, 121 frames at 24 fps."),
)}


def presets(settings: "Settings | None" = None) -> dict[str, Preset]:
    """The catalog this machine serves: the built-in presets, with those of the preset file
    (``Settings.presets_path``, see ``preset_file.py``) added or overriding them."""
    path = settings.presets_path if settings is not None else None
    if path is None:
        return BUILT_IN
    from openi2v.engines.preset_file import load

    return load(path, BUILT_IN)


def weights_of(preset: Preset, catalog: dict[str, Preset]) -> Preset:
    """The preset whose weights ``preset`` runs: itself, or the end of its chain of ``base``s (a preset
    file refuses a cycle), so that a base given a ``path`` or ``repo`` carries its dependants along."""
    while preset.base and preset.base in catalog and catalog[preset.base] is not preset:
        preset = catalog[preset.base]
    return preset


def get_preset(name: str, settings: "Settings | None" = None) -> Preset:
    catalog = presets(settings)
    try:
        return catalog[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(catalog)}") from None
