"""Speed-ups applied to a loaded diffusers pipeline from the outside, never by editing model code.

Each ``apply_*`` function takes the pipeline (and what it needs) and changes how it runs:
precision, attention backend, regional compilation, step caching, FP8 weights, group
offload, VAE tiling and layout. ``Speedups`` is the parsed list a preset (or ``OPENI2V_SPEEDUPS``)
names; ``apply_speedups`` applies it and returns what it actually applied, since some
only make sense on some hardware (FP8 needs compute capability 8.9+, e.g. Hopper).
No backend here downloads kernels at run time (the ``*_hub`` backends of diffusers do,
and are not offered).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

log = logging.getLogger("openi2v.accel")

# our names -> diffusers attention dispatcher backends that need nothing downloaded
ATTENTION = {"sdpa": "native", "cudnn": "_native_cudnn", "flash": "_native_flash", "flash-attn": "flash",
             "flash3": "_flash_3", "sage": "sage", "math": "_native_math"}
ATTENTION_PACKAGES = {"flash-attn": "flash_attn", "flash3": "flash_attn_interface", "sage": "sageattention"}
GPU_ATTENTION = {"cudnn", "flash", "flash-attn", "flash3", "sage"}  # kernels without a CPU path
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
# names that switch one speed-up on -> its field of Speedups
SWITCHES = {"compile": "compile", "fp8": "fp8", "offload": "group_offload", "group_offload": "group_offload",
            "vae_tiling": "vae_tiling", "vae_channels_last": "vae_channels_last", "vae_compile": "vae_compile"}
SMALL_GPU_BYTES = 40 * 2**30  # under this, group offload and VAE tiling are worth their cost


@dataclass(frozen=True)
class Speedups:
    dtype: str = "bf16"
    attention: str | None = None  # a key of ATTENTION
    compile: bool = False  # compile_repeated_blocks: each transformer block compiled once, reused
    cache: str | None = None  # "fbcache" (First-Block cache) or "magcache"
    cache_threshold: float = 0.1
    fp8: bool = False  # FP8 dynamic-activation weights through torchao (compute capability >= 8.9)
    group_offload: bool = False  # keep blocks on the CPU, stream them to the GPU group by group
    vae_tiling: bool = False
    vae_channels_last: bool = False  # the VAE's 3D convolutions in channels-last layout (GPU only)
    vae_compile: bool = False  # torch.compile the VAE decoder (GPU only; compiled at load by the warm-up)

    @classmethod
    def parse(cls, names: Iterable[str]) -> "Speedups":
        """From names such as ("bf16", "sdpa", "compile", "fbcache=0.1", "fp8", "offload", "vae_tiling",
        "vae_channels_last", "vae_compile")."""
        fields: dict[str, Any] = {}
        for raw in names:
            name, _, value = raw.strip().partition("=")
            if not name:
                continue
            if name in DTYPES:
                fields["dtype"] = name
            elif name in ATTENTION:
                fields["attention"] = name
            elif name in ("fbcache", "magcache"):
                fields["cache"] = name
                if value:
                    fields["cache_threshold"] = float(value)
            elif name in SWITCHES:
                fields[SWITCHES[name]] = True
            else:
                raise ValueError(f"unknown speed-up {raw!r}")
        return cls(**fields)


def torch_dtype(name: str, device: str):
    import torch

    if device == "cpu" and name != "fp32":
        return torch.float32  # half precision on a CPU is slower, and tests compare frames exactly
    return getattr(torch, DTYPES[name])


def transformers_of(pipe) -> list:
    """The denoisers of a pipeline (Wan 2.2 A14B has two experts)."""
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if m is not None]


def apply_attention(pipe, backend: str) -> None:
    for t in transformers_of(pipe):
        t.set_attention_backend(ATTENTION[backend])


def apply_compile(pipe, fullgraph: bool = True) -> None:
    """Regional compilation: the same speed as compiling the whole model, a fraction of the compile time."""
    for t in transformers_of(pipe):
        t.compile_repeated_blocks(fullgraph=fullgraph)


def apply_first_block_cache(pipe, threshold: float) -> None:
    """Skip the remaining blocks on steps where the first block's output barely changed."""
    from diffusers import FirstBlockCacheConfig

    for t in transformers_of(pipe):
        t.enable_cache(FirstBlockCacheConfig(threshold=threshold))


def apply_mag_cache(pipe, threshold: float, steps: int, mag_ratios: list[float]) -> None:
    """MagCache: skip steps by the calibrated magnitude ratios of the model's residuals.

    ``mag_ratios`` come from a calibration run on real weights
    (``MagCacheConfig(calibrate=True, num_inference_steps=steps)``).
    """
    from diffusers import MagCacheConfig

    for t in transformers_of(pipe):
        t.enable_cache(MagCacheConfig(mag_ratios=mag_ratios, num_inference_steps=steps, threshold=threshold))


FP8_CAPABILITY = (8, 9)  # FP8 matmuls: Ada and Hopper onwards


@dataclass(frozen=True)
class Gpu:
    """What the speed-ups depend on: a CUDA device's compute capability and memory."""

    capability: tuple[int, int]
    total_bytes: int


def gpu_facts(device: str) -> Gpu | None:
    """``device``'s facts, or None for the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    props = torch.cuda.get_device_properties(device)
    return Gpu((props.major, props.minor), props.total_memory)


def fp8_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= FP8_CAPABILITY


def apply_fp8(pipe, device: str | None = None) -> None:
    """FP8 weights and activations for the transformers' linear layers (torchao).

    With ``device``, each transformer moves there before it is converted: the conversion runs on
    the GPU, and memory holds one bf16 expert at a time (Wan 2.2 A14B has two of 28 GB each).
    """
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_

    for t in transformers_of(pipe):
        if device is not None:
            t.to(device)
        quantize_(t, Float8DynamicActivationFloat8WeightConfig())


def apply_group_offload(pipe, device: str, blocks_per_group: int = 4) -> None:
    import torch

    onload, offload = torch.device(device), torch.device("cpu")
    for t in transformers_of(pipe):
        t.enable_group_offload(onload_device=onload, offload_device=offload, offload_type="block_level",
                               num_blocks_per_group=blocks_per_group)
    if getattr(pipe, "text_encoder", None) is not None:
        from diffusers.hooks import apply_group_offloading

        apply_group_offloading(pipe.text_encoder, onload_device=onload, offload_device=offload,
                               offload_type="block_level", num_blocks_per_group=blocks_per_group)


def apply_vae_tiling(pipe) -> None:
    pipe.vae.enable_tiling()


def apply_vae_channels_last(pipe) -> None:
    """Channels-last 3D convolution weights in the VAE: on an H100, decoding a 5 s Wan 2.2 clip took
    5.94 s instead of 6.33 s, and a Wan 2.1 480p clip 1.76 s instead of 2.11 s (docs/benchmarks.md)."""
    import torch

    for m in pipe.vae.modules():
        if isinstance(m, torch.nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)


def apply_vae_compile(pipe) -> None:
    """Compile the VAE decoder in place (its state dict keys stay as they are). The Wan decoder runs
    once per latent frame with a cache of earlier frames' features; the cache's first states make
    four graphs, all compiled by the first decode (the engines' warm-up at load)."""
    pipe.vae.decoder.compile()


def decide(s: Speedups, gpu: Gpu | None, calibrated: bool = False) -> tuple[list[str], dict[str, str]]:
    """What ``apply_speedups`` applies on ``gpu`` (None: the CPU), in order, and why it skips the
    others: the one place these rules live (``openi2v doctor`` prints them for each GPU)."""
    applied = [s.dtype if gpu else "fp32"]
    skipped: dict[str, str] = {}
    if s.attention:
        applied.append(f"attention={s.attention}")
    offload = gpu is not None and (s.group_offload or gpu.total_bytes < SMALL_GPU_BYTES)
    if s.fp8:
        if gpu and gpu.capability >= FP8_CAPABILITY:
            applied.append("fp8")
        else:
            skipped["fp8"] = "needs a GPU of compute capability 8.9 or newer"
    if offload:
        applied.append("group_offload")
    if s.vae_tiling or offload:
        applied.append("vae_tiling")
    for name, wanted in (("vae_channels_last", s.vae_channels_last), ("vae_compile", s.vae_compile)):
        if wanted and not gpu:
            skipped[name] = "GPU only"
        elif wanted and name == "vae_compile" and "vae_tiling" in applied:
            # Tiles of several shapes would each compile, for a decode whose point is memory, not speed.
            skipped[name] = "not with VAE tiling"
        elif wanted:
            applied.append(name)
    if s.cache == "fbcache":
        applied.append(f"fbcache={s.cache_threshold:g}")
    elif s.cache == "magcache":
        if calibrated:
            applied.append(f"magcache={s.cache_threshold:g}")
        else:
            skipped["magcache"] = "no calibrated mag_ratios for this preset"
    if s.compile:
        if gpu:
            applied.append("compile")
        else:
            skipped["compile"] = "GPU only"  # minutes of compiling on a CPU, for little
    return applied, skipped


def apply_speedups(pipe, s: Speedups, device: str, steps: int, mag_ratios: list[float] | None = None) -> list[str]:
    """Apply ``s`` to a loaded pipeline (already in its dtype) and place it on ``device``.

    Returns the speed-ups applied, in order (``decide``). Order matters: attention and caches
    hook modules before compilation traces them; FP8 swaps weights before compilation too.
    """
    applied, skipped = decide(s, gpu_facts(device), bool(mag_ratios))
    for name, reason in skipped.items():
        log.info("%s skipped: %s", name, reason)
    offload = "group_offload" in applied
    if s.attention:
        apply_attention(pipe, s.attention)
    if "fp8" in applied:
        apply_fp8(pipe, None if offload else device)
    if offload:
        apply_group_offload(pipe, device)
    else:
        pipe.to(device)
    if "vae_tiling" in applied:
        apply_vae_tiling(pipe)
    if "vae_channels_last" in applied:
        apply_vae_channels_last(pipe)
    if "vae_compile" in applied:
        apply_vae_compile(pipe)
    if s.cache == "fbcache":
        apply_first_block_cache(pipe, s.cache_threshold)
    elif s.cache == "magcache" and "magcache" not in skipped:
        apply_mag_cache(pipe, s.cache_threshold, steps, mag_ratios)
    if "compile" in applied:
        apply_compile(pipe, fullgraph=s.cache is None)  # a cache's per-step decision is a graph break
    return applied
