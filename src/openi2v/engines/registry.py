"""Model id -> engine, chosen in configuration (``Settings.engines``)."""

from __future__ import annotations

from typing import Callable

from openi2v.config import Settings
from openi2v.engines.base import Engine


def _motion(settings: Settings) -> Engine:
    from openi2v.engines.motion import MotionEngine, MotionSettings

    return MotionEngine(MotionSettings.from_settings(settings))


FACTORIES: dict[str, Callable[[Settings], Engine]] = {"motion": _motion}


def build_engines(settings: Settings) -> dict[str, Engine]:
    """One engine instance per configured model id (instances are shared by name)."""
    built: dict[str, Engine] = {}
    engines: dict[str, Engine] = {}
    for model_id, name in settings.engines.items():
        if name not in FACTORIES:
            raise ValueError(f"unknown engine {name!r} for model {model_id}; choose one of {sorted(FACTORIES)}")
        engines[model_id] = built.setdefault(name, FACTORIES[name](settings))
    return engines
