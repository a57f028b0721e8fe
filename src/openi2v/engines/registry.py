"""Model id -> engine, chosen in configuration (``Settings.engines``).

An engine name is "motion" (the CPU camera engine), "instant" (the same at 144p with the
fastest encoder: a stand-in for tests), a diffusion preset from the catalog, "auto", or a
class of your own named by import path ("module:Class", built in-process with no
arguments). The API needs only ``served_models``, a plain table that builds no engine; the
workers build them (``build_engines``), a diffusion engine as an ``EngineSpec`` that its own
child process loads (worker/isolated.py). ``check`` tells ``openi2v serve`` and ``openi2v
worker`` before they start anything whether the configured engines can start, in a sentence
naming the setting to fix.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from openi2v.config import Settings
from openi2v.engines.base import INSTANT_DESCRIPTION, MOTION_DESCRIPTION, Engine
from openi2v.engines.catalog import Lora, Preset, get_preset, presets, weights_of

if TYPE_CHECKING:
    from openi2v.engines.accel import Speedups
    from openi2v.worker.isolated import EngineSpec

log = logging.getLogger("openi2v.engines")
FAMILIES = {"wan": "openi2v.engines.wan:WanEngine", "ltx": "openi2v.engines.ltx:LTXEngine"}
CPU_ENGINES = {"motion": MOTION_DESCRIPTION, "instant": INSTANT_DESCRIPTION}  # built in the worker's own process


def local_weights(settings: Settings, preset: Preset) -> Path | None:
    """A preset's diffusers directory: its own ``path``, else under ``weights_dir``, else in the Hugging
    Face cache. A preset with a ``base`` runs its base's weights, wherever they are."""
    preset = weights_of(preset, presets(settings))
    if preset.path:
        return Path(preset.path) if (Path(preset.path) / "model_index.json").exists() else None
    path = settings.weights_root / preset.name
    if (path / "model_index.json").exists():
        return path
    if preset.repo and importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(preset.repo, "model_index.json")
        if isinstance(cached, str):
            return Path(cached).parent
    return None


def lora_file(settings: Settings, lora: Lora) -> Path | None:
    """A LoRA's file on this machine: its own ``path``, else where ``models pull`` puts it, else the HF cache."""
    if lora.path:
        return Path(lora.path) if Path(lora.path).is_file() else None
    local = settings.weights_root / "loras" / lora.file
    if local.is_file():
        return local
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(lora.repo, lora.file)
        if isinstance(cached, str):
            return Path(cached)
    return None


def _nvidia_device() -> bool:
    """Whether the NVIDIA driver shows a device here, without importing torch."""
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def missing_diffusion_packages() -> list[str]:
    """What a diffusion preset needs that is not installed here (the ``diffusion`` extra)."""
    return [m for m in ("torch", "diffusers") if importlib.util.find_spec(m) is None]


def gpu_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve(settings: Settings) -> dict[str, str]:
    """Model id -> "motion", "instant", a preset name or a "module:Class": ``auto`` decided, and each
    preset in use also served under its own model id."""
    catalog = presets(settings)
    out: dict[str, str] = {}
    for model_id, name in settings.engines.items():
        if name == "auto":
            name = auto(settings)[0]
        elif name not in CPU_ENGINES and name not in catalog and not is_import_path(name):
            raise ValueError(f"OPENI2V_ENGINES: unknown engine {name!r} for model {model_id}; choose motion, "
                             f"instant (for tests), auto, a class as module:Class, or one of {', '.join(catalog)}")
        out[model_id] = name
    for name in set(out.values()) & set(catalog):
        out.setdefault(catalog[name].model_id, name)
    return out


def is_import_path(name: str) -> bool:
    """A team's own engine class, "module:Class" (no engine or preset name has a colon)."""
    return ":" in name


def auto(settings: Settings) -> tuple[str, str]:
    """What ``auto`` serves on this machine, and why (logged by the server, printed by ``openi2v doctor``)."""
    catalog = presets(settings)
    if settings.auto_preset not in catalog:
        raise ValueError(f"OPENI2V_AUTO_PRESET: unknown preset {settings.auto_preset!r}; choose one of "
                         f"{', '.join(catalog)}")
    preset = catalog[settings.auto_preset]
    weights = local_weights(settings, preset)  # checked first: importing torch costs seconds
    if weights is None:
        gpu = "" if _nvidia_device() else "no CUDA GPU here and "  # no torch import: seconds at every start
        choice = "motion", (f"{gpu}no weights for {preset.name} (openi2v models pull {preset.name}): "
                            "the camera-motion engine serves")
    elif settings.device.startswith("cuda") and not gpu_available():
        choice = "motion", f"weights for {preset.name} found but no CUDA GPU: the camera-motion engine serves"
    else:
        choice = preset.name, f"serving {preset.name} from {weights} on {settings.device}"
    log.info("engine auto: %s", choice[1])
    return choice


def check(settings: Settings, models: tuple[str, ...] | None = None) -> None:
    """Raise ValueError, in a sentence naming the setting, when a configured engine (or the engine of
    one of ``models``) cannot start here, or one of ``models`` is not served.

    An unknown name, a class that does not import or build, and a preset that could only fail
    every job it took (task code 1403): one with a malformed override, without diffusers and
    torch, without its weights on this machine (engines never download), or on a CUDA device
    this machine does not have.
    """
    served = resolve(settings)
    unknown = [m for m in models or () if m not in served]
    if unknown:
        raise ValueError(f"--models: {', '.join(unknown)} not served; OPENI2V_ENGINES serves {', '.join(served)}")
    for name in {served[m] for m in models or served} - set(CPU_ENGINES):
        if is_import_path(name):
            imported_engine(name)
        else:
            _check_preset(settings, name)


def _check_preset(settings: Settings, name: str) -> None:
    from openi2v.engines.accel import Speedups

    try:
        Speedups.parse(settings.speedups.split(","))
    except ValueError as exc:
        raise ValueError(f"OPENI2V_SPEEDUPS: {exc}") from exc
    try:
        preset = diffusion_preset(settings, name)
    except ValueError as exc:
        raise ValueError(f"OPENI2V_DIFFUSION_SIZE: {exc}") from exc
    missing = missing_diffusion_packages()
    if missing:
        raise ValueError(f"OPENI2V_ENGINES: preset {name} needs {' and '.join(missing)}, not installed here: "
                         "pip install -e '.[diffusion]'")
    source = weights_of(preset, presets(settings))
    if local_weights(settings, preset) is None:
        if source.path:
            raise ValueError(f"preset {name}: no diffusers pipeline (model_index.json) in {source.path}, its path "
                             f"in {settings.presets_path}")
        where = settings.weights_root / source.name
        raise ValueError(f"OPENI2V_ENGINES: preset {name} has no weights in {where} "
                         f"or the Hugging Face cache: run `openi2v models pull {name}` (or set OPENI2V_WEIGHTS_DIR)")
    for lora in preset.loras:
        if lora_file(settings, lora) is None:
            raise ValueError(f"preset {name}: LoRA file {lora.path} does not exist" if lora.path else
                             f"OPENI2V_ENGINES: preset {name} needs its LoRA {lora.name}, not on this machine: "
                             f"run `openi2v models pull {name}`")
    from openi2v.weights import status

    found = status(settings, preset)
    if found.state != "present":  # a pull cut short, a file changed since it was verified, another repo's
        raise ValueError(f"OPENI2V_ENGINES: preset {name}: its weights in {found.where} are {found.state} "
                         f"(missing {', '.join(found.missing[:3])}{' ...' if len(found.missing) > 3 else ''}): "
                         f"run `openi2v models pull {name}`")
    if settings.device.startswith("cuda") and not gpu_available():
        raise ValueError(f"OPENI2V_DEVICE: {settings.device}, but this machine has no CUDA GPU for preset {name}; "
                         "set OPENI2V_DEVICE=cpu or serve motion")


@dataclass(frozen=True)
class ServedModel:
    """A model id the service takes predictions for, as the API lists it."""

    id: str
    engine: str  # "motion", "instant", a preset's name, or "module:Class"
    description: str


def served_models(settings: Settings) -> dict[str, ServedModel]:
    """Model id -> what serves it: read from the settings, no engine built."""
    return {model_id: ServedModel(model_id, name, _describe(settings, name))
            for model_id, name in resolve(settings).items()}


def _describe(settings: Settings, name: str) -> str:
    if name in CPU_ENGINES:
        return CPU_ENGINES[name]
    if is_import_path(name):
        return f"a custom engine ({name})"
    return get_preset(name, settings).summary


def build_engines(settings: Settings, models: list[str] | None = None) -> dict[str, Engine]:
    """One engine instance per served model id, or per id of ``models`` (instances are shared by
    engine name)."""
    served = resolve(settings)
    built: dict[str, Engine] = {}
    engines: dict[str, Engine] = {}
    for model_id in models or served:
        name = served[model_id]
        if name not in built:
            built[name] = _build(settings, name)
        engines[model_id] = built[name]
    return engines


def _build(settings: Settings, name: str) -> Engine:
    if name in CPU_ENGINES:
        return in_process_engine(settings, name)
    if is_import_path(name):
        return imported_engine(name)
    from openi2v.worker.isolated import IsolatedEngine

    return IsolatedEngine(diffusion_spec(settings, name))


def imported_engine(name: str) -> Engine:
    """A team's own engine class, named "module:Class", built in this process with no arguments
    (as uvicorn builds an app from its import string)."""
    try:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)()
    except Exception as exc:  # whatever importing or building it raised: the setting to fix, and why
        raise ValueError(f"OPENI2V_ENGINES: cannot build engine {name!r} ({type(exc).__name__}: {exc})") from exc


def in_process_engine(settings: Settings, name: str, weights: Path | None = None) -> Engine:
    """An engine in this very process, without isolation (``openi2v generate``: one job, then exit)."""
    if name == "motion":
        from openi2v.engines.motion import MotionEngine, MotionSettings

        return MotionEngine(MotionSettings.from_settings(settings))
    if name == "instant":
        from openi2v.engines.instant import InstantEngine

        return InstantEngine.from_settings(settings)
    spec = diffusion_spec(settings, name, weights)
    return spec.factory(**spec.kwargs)


def diffusion_spec(settings: Settings, name: str, weights: Path | None = None) -> "EngineSpec":
    """How to build a preset's engine with this machine's settings: overrides applied, weights from
    ``weights`` or found locally (else the repo id, for the HF cache)."""
    from openi2v.worker.isolated import EngineSpec

    preset = diffusion_preset(settings, name)
    path = weights or local_weights(settings, preset) or preset.repo
    # the LoRAs found here, so that the engine's process needs no settings to find them
    preset = replace(preset, loras=tuple(_located(settings, lora) for lora in preset.loras))
    speedups = speedups_for(settings, preset)
    module, _, attr = FAMILIES[preset.family].partition(":")
    return EngineSpec(name, getattr(importlib.import_module(module), attr),
                      dict(preset=preset, weights=str(path), device=settings.device, speedups=speedups),
                      preset.summary)


def _located(settings: Settings, lora: Lora) -> Lora:
    found = lora_file(settings, lora)
    return replace(lora, path=str(found)) if found else lora


def speedups_for(settings: Settings, preset: Preset) -> "Speedups":
    """The preset's speed-ups, or ``OPENI2V_SPEEDUPS`` where set (it replaces them)."""
    from openi2v.engines.accel import Speedups

    return Speedups.parse(settings.speedups.split(",") if settings.speedups else preset.speedups)


def diffusion_preset(settings: Settings, name: str) -> Preset:
    """The preset with this machine's overrides (``diffusion_steps``, ``diffusion_size``) applied."""
    size = None
    if settings.diffusion_size:
        w, _, h = settings.diffusion_size.lower().partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise ValueError(f"must be WxH, e.g. 832x480 (got {settings.diffusion_size!r})")
        size = (int(w), int(h))
    return get_preset(name, settings).with_overrides(steps=settings.diffusion_steps or None, size=size)
