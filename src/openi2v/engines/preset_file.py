"""Presets as configuration: a TOML file that adds presets or overrides built-in ones.

A team that fine-tuned Wan on its own footage serves it without editing code::

    [[preset]]
    name = "our-wan-5b"
    inherit = "wan2.2-ti2v-5b"      # start from this preset's fields (optional)
    path = "weights/our-wan-5b"     # a local diffusers directory (relative to this file), or repo = "org/name"
    steps = 30

    [[preset.lora]]                 # LoRAs, each from a Hub repo (repo, file) or a local file (path)
    path = "loras/house-style.safetensors"
    into = "transformer"            # Wan 2.2 A14B: "transformer_2" is the low-noise expert
    scale = 0.8

A ``[[preset]]`` whose name is a built-in preset's overrides the fields it gives and keeps the
rest. A new preset without ``inherit`` gives every field a preset needs. The fields are
``catalog.Preset``'s; a file with any mistake is refused whole, in one ``PresetFileError``
naming the file, the line and the field (``openi2v serve`` and ``worker`` check at start).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from openi2v.engines.catalog import Lora, Preset
from openi2v.engines.registry import CPU_ENGINES, FAMILIES

EXPERTS = ("transformer", "transformer_2")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# engine names that are not presets, and the weights directory's folder of LoRAs (models pull)
RESERVED = {*CPU_ENGINES, "auto", "loras"}
NEEDED = ("family", "width", "height", "fps", "frames", "steps", "cfg")  # besides repo or path
LORA_FIELDS = ("repo", "file", "path", "into", "scale")
# fields a file may not set: derived, or how the catalog names itself
NOT_SETTABLE = {"name", "loras"}

_cache: dict[tuple[Path, int, int], dict[str, Preset]] = {}


class PresetFileError(ValueError):
    """The preset file is malformed: the message names the file, the line and the field."""


def load(path: Path, built_in: dict[str, Preset]) -> dict[str, Preset]:
    """``built_in`` with the file's presets added or overriding (read again only when the file changes)."""
    try:
        stat = path.stat()
        key = (path.resolve(), stat.st_mtime_ns, stat.st_size)
        if key in _cache:
            return _cache[key]
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PresetFileError(f"OPENI2V_PRESETS_FILE: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetFileError(f"{path}: cannot be read ({exc})") from None
    _cache.clear()
    _cache[key] = _parse(path, text, built_in)
    return _cache[key]


def _parse(path: Path, text: str, built_in: dict[str, Preset]) -> dict[str, Preset]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # its message ends "(at line L, column C)"
        raise PresetFileError(f"{path}: not valid TOML: {exc}") from None
    where = _Locator(path, text)
    for key in doc:
        if key != "preset":
            raise PresetFileError(f"{where.at(None, key)}: unknown table or key {key!r}; presets go in "
                                  "[[preset]] tables")
    entries = doc.get("preset", [])
    if not isinstance(entries, list):
        raise PresetFileError(f"{where.at(None, 'preset')}: presets go in [[preset]] tables (an array of tables)")
    catalog = dict(built_in)
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        preset = _preset(entry, i, catalog, built_in, where, path.parent)
        if preset.name in seen:
            raise PresetFileError(f"{where.at(i, 'name')}: preset {preset.name!r} is defined twice")
        seen.add(preset.name)
        catalog[preset.name] = preset
    for i, entry in enumerate(entries):
        chain = [entry["name"]]
        while (base := catalog[chain[-1]].base) is not None:
            if base not in catalog or base in chain:
                rule = f"no preset named {base!r}" if base not in catalog else f"a cycle: {' -> '.join(chain + [base])}"
                raise PresetFileError(f"{where.at(i, 'base')}: preset {entry['name']!r}, field 'base': {rule}")
            chain.append(base)
    return catalog


def _preset(entry: dict, i: int, catalog: dict[str, Preset], built_in: dict[str, Preset], where: "_Locator",
            root: Path) -> Preset:
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in RESERVED:
        raise PresetFileError(f"{where.at(i, 'name')}: field 'name': must be 1-64 letters, digits, '.', '_' or "
                              f"'-', and not {', '.join(sorted(RESERVED))} (got {name!r})")

    def fail(field: str, rule: str, value: Any, lora: int | None = None) -> PresetFileError:
        got = "" if value is None else f" (got {value!r})"  # TOML has no null: None is a field not given
        return PresetFileError(f"{where.at(i, field, lora)}: preset {name!r}, field {field!r}: {rule}{got}")

    fields = {f.name: f for f in dataclasses.fields(Preset)}
    for key in entry:
        if key not in fields and key not in ("inherit", "lora") or key in NOT_SETTABLE - {"name"}:
            raise fail(key, "unknown field; known: inherit, lora, " +
                       ", ".join(f for f in fields if f not in NOT_SETTABLE), entry[key])
    parent_name = entry.get("inherit", name if name in built_in else None)
    if parent_name is not None and parent_name not in catalog:
        raise fail("inherit", f"no preset of that name (known: {', '.join(catalog)})", parent_name)
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in ("name", "inherit", "lora"):
            continue
        values[key] = _field(key, value, fail, root)
    if "lora" in entry:
        values["loras"] = _loras(entry["lora"], fail, root)
    if parent_name is None:
        missing = [f for f in NEEDED if f not in values] + ([] if "repo" in values or "path" in values
                                                             else ["repo or path"])
        if missing:
            raise fail(missing[0], "a new preset needs it (or inherit = \"PRESET\" to start from one)", None)
        preset = Preset(name=name, repo=values.pop("repo", ""), **values)
    else:
        parent = catalog[parent_name]
        if "path" in values or "repo" in values:  # weights of its own, not its parent's
            values = {"base": None, "path": None, "repo": "", **values}
        elif parent.name != name and not parent.path:  # its parent's weights, pulled once for both
            values.setdefault("base", parent.weights_name)
        preset = dataclasses.replace(parent, name=name, **values)
    if preset.width % preset.size_multiple or preset.height % preset.size_multiple:
        raise fail("width", f"width and height must be multiples of size_multiple ({preset.size_multiple})",
                   f"{preset.width}x{preset.height}")
    return preset


def _field(key: str, value: Any, fail, root: Path) -> Any:
    """One preset field, checked against its rule (the same rules the built-in presets meet)."""
    if key in ("width", "height", "fps", "frames", "steps", "size_multiple"):
        if type(value) is not int or not 1 <= value <= 100_000:
            raise fail(key, "must be a whole number from 1 to 100000", value)
        return value
    if key in ("cfg", "flow_shift", "gpu_gib"):
        if type(value) not in (int, float) or not (value >= 1 if key == "cfg" else value > 0) or value > 1e6:
            raise fail(key, "must be a number, at least 1" if key == "cfg" else "must be a number above 0", value)
        return float(value)
    if key in ("distilled", "last_image", "gpu_gib_measured"):
        if type(value) is not bool:
            raise fail(key, "must be true or false", value)
        return value
    if key == "family":
        if value not in FAMILIES:
            raise fail(key, f"must be one of {', '.join(FAMILIES)}", value)
        return value
    if key == "speedups":
        from openi2v.engines.accel import Speedups

        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, 'must be a list of names, e.g. ["bf16", "sdpa", "compile"]', value)
        try:
            Speedups.parse(value)
        except ValueError as exc:
            raise fail(key, str(exc), value) from None
        return tuple(value)
    if key == "extra":
        if not isinstance(value, dict):
            raise fail(key, "must be a table of pipeline call arguments", value)
        return value
    if key == "path":
        return str(_local(key, value, fail, root))
    if key in ("repo", "base", "description"):
        if not isinstance(value, str) or (key != "description" and not value):
            raise fail(key, "must be a string" + ("" if key == "description" else ", not empty"), value)
        if key == "repo" and not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
            raise fail(key, "must be a Hugging Face repo id, owner/name", value)
        return value
    raise AssertionError(key)  # _preset refused unknown keys


def _local(key: str, value: Any, fail, root: Path, lora: int | None = None) -> Path:
    if not isinstance(value, str) or not value:
        raise fail(key, "must be a path, absolute or relative to the preset file", value, lora)
    return (root / Path(value).expanduser()).resolve()


def _loras(value: Any, fail, root: Path) -> tuple[Lora, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise fail("lora", "LoRAs go in [[preset.lora]] tables", value)
    out = []
    for n, table in enumerate(value):
        for key in table:
            if key not in LORA_FIELDS:
                raise fail(key, f"unknown LoRA field; known: {', '.join(LORA_FIELDS)}", table[key], n)
        into = table.get("into", "transformer")
        if into not in EXPERTS:
            raise fail("into", f"must be one of {', '.join(EXPERTS)}", into, n)
        scale = table.get("scale", 1.0)
        if type(scale) not in (int, float) or not -100 <= scale <= 100:
            raise fail("scale", "must be a number from -100 to 100", scale, n)
        if "path" in table:
            if "repo" in table or "file" in table:
                raise fail("path", "give path, or repo and file, not both", table["path"], n)
            out.append(Lora(path=str(_local("path", table["path"], fail, root, n)), into=into, scale=float(scale)))
            continue
        for key in ("repo", "file"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise fail(key, "a LoRA needs repo and file (a Hub repo and the file in it), or path",
                           table.get(key), n)
        out.append(Lora(table["repo"], table["file"], into, float(scale)))
    return tuple(out)


class _Locator:
    """File and line of a field: TOML parsers give no positions, so the text is scanned for the
    i-th ``[[preset]]`` header and the field's ``key =`` line within its tables (``[[preset.lora]]``
    and ``[preset.extra]`` belong to it), or for a top-level table's own header."""

    PRESET = re.compile(r"\s*\[\[\s*preset\s*\]\]")
    LORA = re.compile(r"\s*\[\[\s*preset\s*\.\s*lora\s*\]\]")
    SUB_TABLE = re.compile(r"\s*\[{1,2}\s*preset\s*\.")

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def at(self, preset: int | None, field: str, lora: int | None = None) -> str:
        if preset is None:  # a top-level key, or the header of a table of that name
            top = re.compile(rf"\s*(\[{{1,2}}\s*)?[\"']?{re.escape(field)}[\"']?\s*(=|\]|\.)")
            return self._line(next((n for n, line in enumerate(self.lines) if top.match(line)), 0))
        headers = [n for n, line in enumerate(self.lines) if self.PRESET.match(line)]
        if preset >= len(headers):
            return self._line(0)
        start = headers[preset]
        end = next((n for n in range(start + 1, len(self.lines))
                    if self.lines[n].lstrip().startswith("[") and not self.SUB_TABLE.match(self.lines[n])),
                   len(self.lines))
        loras = [n for n in range(start + 1, end) if self.LORA.match(self.lines[n])]
        if lora is not None and lora < len(loras):
            start, end = loras[lora], next((n for n in range(loras[lora] + 1, end)
                                            if self.lines[n].lstrip().startswith("[")), end)
        pattern = re.compile(rf"\s*[\"']?({re.escape(field)}|lora)[\"']?\s*=")
        exact = re.compile(rf"\s*[\"']?{re.escape(field)}[\"']?\s*=")
        lines = range(start, end)
        found = next((n for n in lines if exact.match(self.lines[n])), None)
        if found is None:  # a LoRA written inline (lora = [{...}]): the line that starts it
            found = next((n for n in lines if pattern.match(self.lines[n])), start)
        return self._line(found)

    def _line(self, n: int) -> str:
        return f"{self.path}, line {n + 1}"
