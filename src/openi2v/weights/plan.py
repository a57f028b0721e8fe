"""What a pull fetches: the files a diffusers pipeline loads, from the repo's listing and model_index.json."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from openi2v.engines.catalog import Lora, Preset
from openi2v.weights.hub import INDEX, OFFLINE, PullError, bar_class, hub_errors

if TYPE_CHECKING:
    from openi2v.config import Settings

PARTIALS = Path(".openi2v") / "partial"  # downloads under way, kept across pulls
OTHER_FRAMEWORKS = {".msgpack", ".h5", ".onnx", ".onnx_data", ".tflite", ".ot", ".pb"}  # Flax, TF, ONNX: never read
PICKLES = {".bin", ".pt", ".pth", ".ckpt"}  # read only from a folder without safetensors
_PLAIN = re.compile(r"^(?P<stem>[^.]+?)(-\d+-of-\d+)?\.safetensors(\.index\.json)?$")
_VARIANT = re.compile(r"^(?P<stem>[^.]+)\.[^.-]+(-\d+-of-\d+)?\.safetensors$"  # model.fp16.safetensors
                      r"|^(?P<index>[^.]+)\.safetensors\.index\.[^.]+\.json$")  # model.safetensors.index.fp16.json


@dataclass(frozen=True)
class Remote:
    """One file of a plan: where it is on the Hub, what the listing says of it, where it goes."""

    repo: str
    commit: str
    path: str  # in the repo
    size: int
    sha256: str | None  # a Git LFS file's content hash
    blob_id: str | None  # another file's git blob sha1
    local_dir: Path

    @property
    def dest(self) -> Path:
        return self.local_dir / self.path

    @property
    def label(self) -> str:
        """How output names it: relative to the weights root."""
        return f"{self.local_dir.name}/{self.path}"

    def entry(self, verified: list[int] | None) -> dict:
        """Its manifest entry; ``verified`` is the file's [size, mtime_ns] when its hash was checked."""
        return dict(repo=self.repo, commit=self.commit, size=self.size, sha256=self.sha256, blob_id=self.blob_id,
                    verified=verified)

    @property
    def partial(self) -> Path:
        """Where its download grows, named by its content hash: a partial of another revision is never resumed."""
        return self.local_dir / PARTIALS / self.path / f"{self.sha256 or self.blob_id}"

    def complete(self) -> bool:
        return self.dest.is_file() and self.dest.stat().st_size == self.size

    def resumable(self) -> int:
        """The bytes its partial holds (none when that is longer than the file)."""
        held = (stamp(self.partial) or [0])[0]
        return held if held <= self.size else 0

    def mismatch(self) -> str | None:
        """None when the file on disk is the listed one; else what was expected and what was got."""
        size = self.dest.stat().st_size
        if size != self.size:
            return f"expected {self.size} bytes, got {size}"
        h = hashlib.sha256() if self.sha256 else hashlib.sha1(b"blob %d\0" % size)
        with self.dest.open("rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        kind, want = ("sha256", self.sha256) if self.sha256 else ("git blob sha1", self.blob_id)
        return None if h.hexdigest() == want else f"expected {kind} {want}, got {h.hexdigest()}"


@dataclass(frozen=True)
class Plan:
    files: tuple[Remote, ...]  # the pipeline's (model_index.json last), then the LoRAs
    skipped: tuple[tuple[str, int], ...]  # (path, size) in the pipeline repo, never read by the pipeline
    repo_bytes: int  # all the pipeline repo holds

    def lines(self, fetch: list["Remote"]) -> list[str]:
        """What ``models pull --dry-run`` prints: each file to fetch (``fetch``, less what its partial
        holds), have or skip, then the totals."""
        out = [f"{'fetch' if r in fetch else 'have'}\t{r.label}\t{r.size}" for r in self.files]
        out += [f"skip\t{path}\t{size}" for path, size in self.skipped]
        need = sum(r.size - r.resumable() for r in fetch)
        out.append(f"to fetch: {len(fetch)} of {len(self.files)} files, {need} bytes ({size_text(need)}); "
                   f"the repo holds {self.repo_bytes} bytes ({size_text(self.repo_bytes)}), "
                   f"{len(self.skipped)} files skipped")
        return out


def size_text(n: float) -> str:
    """Bytes for people: 1.2 GB."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def plan(settings: "Settings", preset: Preset, *, endpoint: str | None = None, token: str | None = None) -> Plan:
    """What ``pull`` fetches, from the Hub's listings and model_index.json; writes nothing.
    ``endpoint`` and ``token``: None reads HF_ENDPOINT and HF_TOKEN (or the stored login)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    files: list[Remote] = []
    skipped: list[tuple[str, int]] = []
    repo_bytes = 0
    source = source_of(settings, preset)
    if not source.path:
        info = _listing(api, source.repo, "repo")
        sizes = {s.rfilename: s for s in info.siblings or ()}
        if INDEX not in sizes:
            raise PullError(f"{source.repo} has no {INDEX}: not a diffusers pipeline")
        keep = _loaded(list(sizes), _index(source.repo, info.sha, endpoint, token))
        target = settings.weights_root / source.name
        files = [_remote(source.repo, info.sha, s, target) for name, s in sizes.items() if name in keep]
        files.sort(key=lambda r: r.path == INDEX)
        skipped = [(name, s.size or 0) for name, s in sizes.items() if name not in keep]
        repo_bytes = sum(s.size or 0 for s in sizes.values())
    files += [_lora(api, lora, settings.weights_root / "loras") for lora in preset.loras if not lora.path]
    return Plan(tuple(files), tuple(skipped), repo_bytes)


def source_of(settings: "Settings", preset: Preset) -> Preset:
    """The preset whose weights ``preset`` runs (its ``base``, followed to the end)."""
    from openi2v.engines.catalog import presets, weights_of

    return weights_of(preset, presets(settings))


def _listing(api, repo: str, role: str):
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PullError(OFFLINE)
    with hub_errors(repo, api.endpoint, role):
        return api.model_info(repo, files_metadata=True)


def _index(repo: str, commit: str, endpoint: str | None, token: str | None) -> dict:
    from huggingface_hub import hf_hub_download

    with tempfile.TemporaryDirectory() as tmp, hub_errors(repo, endpoint):
        path = hf_hub_download(repo, INDEX, revision=commit, local_dir=tmp, token=token, endpoint=endpoint,
                               tqdm_class=bar_class(lambda n: None))
        return json.loads(Path(path).read_text())


def _remote(repo: str, commit: str, sibling, local_dir: Path) -> Remote:
    name = PurePosixPath(sibling.rfilename)
    if name.is_absolute() or ".." in name.parts or "\\" in sibling.rfilename or name.parts[0].startswith("."):
        raise PullError(f"{repo} lists a file name that would land outside its folder: {sibling.rfilename!r}")
    lfs = sibling.lfs
    return Remote(repo, commit, sibling.rfilename, sibling.size or 0, lfs.sha256 if lfs else None,
                  sibling.blob_id, local_dir)


def _lora(api, lora: Lora, local_dir: Path) -> Remote:
    info = _listing(api, lora.repo, "LoRA repo")
    for sibling in info.siblings or ():
        if sibling.rfilename == lora.file:
            return _remote(lora.repo, info.sha, sibling, local_dir)
    held = [s.rfilename for s in info.siblings or () if s.rfilename.endswith(".safetensors")]
    raise PullError(f"LoRA file {lora.file} is not in {lora.repo}; it holds "
                    f"{', '.join(held) if held else 'no .safetensors files'}")


def _loaded(names: list[str], index: dict) -> set[str]:
    """The files of a repo that the pipeline's ``from_pretrained`` reads."""
    folders = components(index)
    by_dir: dict[PurePosixPath, list[str]] = {}
    for name in names:
        path = PurePosixPath(name)
        if len(path.parts) > 1 and path.parts[0] in folders:
            by_dir.setdefault(path.parent, []).append(path.name)
    keep = {INDEX}
    for folder, files in by_dir.items():
        plain = {m["stem"] for f in files if (m := _PLAIN.match(f))}
        keep |= {str(folder / f) for f in files if _read(f, plain)}
    return keep


def components(index: dict) -> set[str]:
    """The folders model_index.json names: entries that are a [library, class] pair, not null."""
    return {k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and None not in v}


def _read(name: str, plain: set[str]) -> bool:
    """Whether ``from_pretrained`` reads this file of a folder whose plain safetensors stems are ``plain``."""
    suffix = PurePosixPath(name).suffix
    if suffix in OTHER_FRAMEWORKS or (plain and suffix in PICKLES):
        return False
    variant = _VARIANT.match(name)
    return not (variant and (variant["stem"] or variant["index"]) in plain)


def stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]
