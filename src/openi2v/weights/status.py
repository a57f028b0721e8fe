"""What of a preset's weights is on this machine, judged offline: by the manifest a pull wrote, else
by the pipeline's own files."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from openi2v.engines.catalog import Preset
from openi2v.weights.hub import INDEX
from openi2v.weights.plan import PICKLES, components, source_of, stamp

if TYPE_CHECKING:
    from openi2v.config import Settings

MANIFEST = Path(".openi2v") / "manifest.json"


class State(StrEnum):
    PRESENT = "present"
    PARTIAL = "partial"
    ABSENT = "absent"


@dataclass(frozen=True)
class WeightsStatus:
    state: State
    bytes_on_disk: int
    missing: list[str]  # relative to the pipeline's directory ("transformer/..."), "loras/<file>", or a local path
    where: Path | None  # the pipeline's directory, where there is one


def read_manifest(directory: Path) -> dict[str, dict]:
    """Path -> entry (``Remote.entry``); empty when there is none or it cannot be read."""
    return (_json(directory / MANIFEST) or {}).get("files", {})


def write_manifest(directory: Path, files: dict[str, dict]) -> None:
    path = directory / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    os.replace(tmp, path)


def status(settings: "Settings", preset: Preset) -> WeightsStatus:
    """What of a preset's weights is on this machine, judged offline: by the manifest a pull wrote,
    else (a directory copied by hand, a ``path`` preset, the HF cache) from model_index.json."""
    from openi2v.engines.registry import lora_file

    source = source_of(settings, preset)
    where = _pipeline_dir(settings, source)
    if where is None:
        missing, found = [source.path or f"{source.name}/{INDEX}"], 0
    elif (where / MANIFEST).exists():
        missing, found = _listed_missing(where, source.repo)
    else:
        missing, found = _judged_missing(where)
    on_disk = _du(where) if where else 0
    for lora in preset.loras:
        path = lora_file(settings, lora)
        entry = None if lora.path else read_manifest(settings.weights_root / "loras").get(lora.file)
        if path is not None and (entry is None or path.parent != settings.weights_root / "loras" or
                                 entry.get("verified") == stamp(path)):
            found, on_disk = found + 1, on_disk + path.stat().st_size
        else:
            missing.append(lora.path or f"loras/{lora.file}")
    state = State.PRESENT if not missing else State.PARTIAL if found else State.ABSENT
    return WeightsStatus(state, on_disk, missing, where)


def _pipeline_dir(settings: "Settings", preset: Preset) -> Path | None:
    from openi2v.engines.registry import local_weights

    if preset.path:
        return Path(preset.path) if Path(preset.path).is_dir() else None
    target = settings.weights_root / preset.name
    return target if target.is_dir() else local_weights(settings, preset)


def _listed_missing(where: Path, repo: str) -> tuple[list[str], int]:
    """The manifest's files not there as verified (missing, changed since, or not yet checked), or
    pulled from another repo than ``repo``; and how many are fine."""
    listed = read_manifest(where)
    missing = [path + ("" if entry.get("repo") == repo else f" (from {entry.get('repo')})")
               for path, entry in sorted(listed.items())
               if entry.get("repo") != repo or entry.get("verified") is None
               or entry["verified"] != stamp(where / path)]
    return missing, len(listed) - len(missing)


def _judged_missing(where: Path) -> tuple[list[str], int]:
    """Without a manifest: each component folder model_index.json names holds a config, a model's
    config.json has weights beside it, and a sharded model's index has all its shards."""
    index = _json(where / INDEX)
    if index is None:
        return [INDEX], int(any(not p.name.startswith(".") for p in where.iterdir()))
    missing = []
    for folder in sorted(components(index)):
        d = where / folder
        if not any(d.glob("*.json")):
            missing.append(f"{folder}/")
            continue
        for shard_index in d.glob("*.index.json"):
            shards = set((_json(shard_index) or {}).get("weight_map", {}).values())
            missing += [f"{folder}/{s}" for s in sorted(shards) if not (d / s).is_file()]
        if (d / "config.json").is_file() and not any(p.suffix in {".safetensors", *PICKLES} for p in d.iterdir()):
            missing.append(f"{folder}/ (no weights beside config.json)")
    return missing, 1


def _json(path: Path) -> dict | None:
    """A JSON object from a file, or None where there is none to read."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _du(where: Path) -> int:
    return sum(p.stat().st_size for p in where.rglob("*") if p.is_file())
