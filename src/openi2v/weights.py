"""A preset's weights: what to pull from the Hugging Face Hub, pulling it, and what is on disk.

``plan`` reads the repo's file listing and its ``model_index.json`` and keeps what the pipeline
loads: model_index.json and the component folders it names, safetensors over pickles, plain files
over variants; never the root's original-format checkpoints. The preset's LoRAs come from their
own repos. ``pull`` checks the disk has room, downloads each file with huggingface_hub's own
client (``get_hf_file_metadata`` for its redirects and ETag, ``http_get`` for the bytes and its
Range retries; it reads HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE), checks it against the listing's
size and hash, and records it in a manifest (``.openi2v/manifest.json`` in the directory) so that a
re-pull hashes nothing unchanged and ``status`` answers offline. Every failure is a ``PullError``
of one line: huggingface_hub's exceptions are translated here, nowhere else.

A file grows in ``.openi2v/partial/<path>/<its listed hash>`` and moves into place when whole, so
a pull interrupted in any way (a dropped connection, Ctrl-C, a killed process) resumes where it
stopped, in the run or the next one; a partial of another revision is deleted. A Xet-backed file
(when hf_xet is installed) is left to ``hf_hub_download``, whose temporary file is its own: it
starts again when interrupted; those temporary files, which no run reuses, are deleted when a pull
starts. model_index.json goes in last, so a directory left half-pulled is never taken for a
loadable pipeline (``registry.local_weights`` looks for it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Callable, Iterator

from openi2v.engines.catalog import Lora, Preset
from openi2v.errors import OpenI2VError

if TYPE_CHECKING:
    from rich.console import Console

    from openi2v.config import Settings

INDEX = "model_index.json"
MANIFEST = Path(".openi2v") / "manifest.json"
PARTIALS = Path(".openi2v") / "partial"  # downloads under way, kept across pulls
HF_TEMPORARIES = Path(".cache") / "huggingface" / "download"  # where hf_hub_download's *.incomplete files go
OTHER_FRAMEWORKS = {".msgpack", ".h5", ".onnx", ".onnx_data", ".tflite", ".ot", ".pb"}  # Flax, TF, ONNX: never read
PICKLES = {".bin", ".pt", ".pth", ".ckpt"}  # read only from a folder without safetensors
DISK_MARGIN = 64 * 2**20  # besides 1% of the bytes to fetch: filesystem overhead, manifests
OFFLINE = "offline mode is on (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): unset it to download"
_PLAIN = re.compile(r"^(?P<stem>[^.]+?)(-\d+-of-\d+)?\.safetensors(\.index\.json)?$")
_VARIANT = re.compile(r"^(?P<stem>[^.]+)\.[^.-]+(-\d+-of-\d+)?\.safetensors$"  # model.fp16.safetensors
                      r"|^(?P<index>[^.]+)\.safetensors\.index\.[^.]+\.json$")  # model.safetensors.index.fp16.json


class PullError(OpenI2VError):
    """A pull that cannot go on, in one line a user can act on."""


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
        held = (_stamp(self.partial) or [0])[0]
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

    def lines(self) -> list[str]:
        """What ``models pull --dry-run`` prints: each file to fetch, have or skip, then the totals."""
        fetch = [r for r in self.files if not r.complete()]
        out = [f"{'fetch' if r in fetch else 'have'}\t{r.label}\t{r.size}" for r in self.files]
        out += [f"skip\t{path}\t{size}" for path, size in self.skipped]
        need = sum(r.size for r in fetch)
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


# --- planning -------------------------------------------------------------------------------------------------------

def plan(settings: "Settings", preset: Preset, *, endpoint: str | None = None, token: str | None = None) -> Plan:
    """What ``pull`` fetches, from the Hub's listings and model_index.json; writes nothing.
    ``endpoint`` and ``token``: None reads HF_ENDPOINT and HF_TOKEN (or the stored login)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    files: list[Remote] = []
    skipped: list[tuple[str, int]] = []
    repo_bytes = 0
    source = _source(settings, preset)
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


def _source(settings: "Settings", preset: Preset) -> Preset:
    """The preset whose weights ``preset`` runs (its ``base``, followed to the end)."""
    from openi2v.engines.catalog import presets, weights_of

    return weights_of(preset, presets(settings))


def _listing(api, repo: str, role: str):
    from huggingface_hub import constants

    if constants.is_offline_mode():
        raise PullError(OFFLINE)
    with _hub(repo, api.endpoint, role):
        return api.model_info(repo, files_metadata=True)


def _index(repo: str, commit: str, endpoint: str | None, token: str | None) -> dict:
    from huggingface_hub import hf_hub_download

    with tempfile.TemporaryDirectory() as tmp, _hub(repo, endpoint):
        path = hf_hub_download(repo, INDEX, revision=commit, local_dir=tmp, token=token, endpoint=endpoint,
                               tqdm_class=_bar(lambda n: None))
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
    folders = _components(index)
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


def _components(index: dict) -> set[str]:
    """The folders model_index.json names: entries that are a [library, class] pair, not null."""
    return {k for k, v in index.items() if isinstance(v, list) and len(v) == 2 and None not in v}


def _read(name: str, plain: set[str]) -> bool:
    """Whether ``from_pretrained`` reads this file of a folder whose plain safetensors stems are ``plain``."""
    suffix = PurePosixPath(name).suffix
    if suffix in OTHER_FRAMEWORKS or (plain and suffix in PICKLES):
        return False
    variant = _VARIANT.match(name)
    return not (variant and (variant["stem"] or variant["index"]) in plain)


# --- pulling --------------------------------------------------------------------------------------------------------

def pull(settings: "Settings", preset: Preset, *, console: "Console | None" = None, endpoint: str | None = None,
         token: str | None = None) -> Plan:
    """Fetch and verify what ``plan`` lists, skipping files the manifest says are verified and
    unchanged. Progress goes to ``console``: bars on a terminal, else a line per file. One pull at a
    time per weights directory: two would append to the same partial files."""
    with _alone(settings.weights_root):
        return _pull(settings, preset, console, endpoint, token)


@contextmanager
def _alone(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".pull.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PullError(f"another `openi2v models pull` is writing to {root}: wait for it to finish") from None
        yield


def _pull(settings: "Settings", preset: Preset, console: "Console | None", endpoint: str | None,
          token: str | None) -> Plan:
    the_plan = plan(settings, preset, endpoint=endpoint, token=token)
    old = {d: _read_manifest(d) for d in {r.local_dir for r in the_plan.files}}
    pipeline = settings.weights_root / _source(settings, preset).name
    books = {d: {} if d == pipeline else dict(entries) for d, entries in old.items()}  # loras/ is shared
    for gone in set(old.get(pipeline, {})) - {r.path for r in the_plan.files}:  # another revision's, or repo's
        (pipeline / gone).unlink(missing_ok=True)  # a stale shard beside a new index would be loaded
    for r in the_plan.files:
        was = old[r.local_dir].get(r.path)
        same = was is not None and (was.get("sha256"), was.get("blob_id")) == (r.sha256, r.blob_id)
        books[r.local_dir][r.path] = r.entry(was.get("verified") if same else None)
    todo = [r for r in the_plan.files if not _verified(r, books[r.local_dir][r.path])]
    _tidy(books.keys(), todo)
    if todo:
        _check_disk(todo, todo[0].local_dir)
    for directory, entries in books.items():
        _write_manifest(directory, entries)
    with _Display(console, sum(r.size for r in todo)) as show:
        for r in todo:
            books[r.local_dir][r.path] = r.entry(_fetch(r, show, endpoint, token))
            _write_manifest(r.local_dir, books[r.local_dir])
    return the_plan


def _verified(r: Remote, entry: dict) -> bool:
    stamp = entry.get("verified")
    return stamp is not None and stamp == _stamp(r.dest)


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _tidy(directories, todo: list[Remote]) -> None:
    """Delete what earlier pulls left that none will resume: hf_hub_download's temporary files (each
    named for the process that wrote it) and the partials of another revision of a file to fetch."""
    for directory in directories:
        for orphan in (directory / HF_TEMPORARIES).rglob("*.incomplete"):
            orphan.unlink(missing_ok=True)
    for r in todo:
        for stale in r.partial.parent.glob("*"):
            if stale != r.partial or not r.resumable():
                stale.unlink()


def _check_disk(todo: list[Remote], directory: Path) -> None:
    need = sum(r.size - r.resumable() for r in todo if not r.complete())
    where = next(p for p in (directory, *directory.parents) if p.exists())
    free = shutil.disk_usage(where).free
    if need + need // 100 + DISK_MARGIN > free:
        raise PullError(f"not enough disk space: {need} bytes ({size_text(need)}) to fetch, {free} bytes "
                        f"({size_text(free)}) free in {where}")


def _fetch(r: Remote, show: "_Display", endpoint: str | None, token: str | None) -> list[int]:
    """Download one file and check it; one that fails the check is fetched once more, then fails the pull."""
    for _ in range(2):
        bar = show.start(r, r.resumable())
        with _hub(r.repo, endpoint, path=r.path):
            _download(r, bar, endpoint, token)
        show.verifying()
        wrong = r.mismatch()
        if wrong is None:
            show.done(r)
            return _stamp(r.dest)
        r.dest.unlink()
        show.undo()
    raise PullError(f"{r.path} from {r.repo} is corrupt after two downloads: {wrong}")


def _download(r: Remote, bar: type["_Bar"], endpoint: str | None, token: str | None) -> None:
    """Bring ``r`` to ``r.dest`` (one there at its listed size is left for the check to judge): over plain
    HTTP by appending to its partial, sending the token only where ``hf_hub_download`` would."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.file_download import _is_same_or_hub_host, http_get, is_xet_available
    from huggingface_hub.utils import build_hf_headers

    if r.complete():
        return
    url = hf_hub_url(r.repo, r.path, revision=r.commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    if meta.xet_file_data is not None and is_xet_available():
        r.dest.unlink(missing_ok=True)
        hf_hub_download(r.repo, r.path, revision=r.commit, local_dir=r.local_dir, token=token, endpoint=endpoint,
                        tqdm_class=bar)
        return
    headers = build_hf_headers(token=token)
    if not _is_same_or_hub_host(url, meta.location):
        headers.pop("authorization", None)  # a CDN's signed URL: the token stays on the Hub
    r.partial.parent.mkdir(parents=True, exist_ok=True)
    with r.partial.open("ab") as f:
        http_get(meta.location, f, resume_size=f.tell(), headers=headers, expected_size=r.size, tqdm_class=bar)
    r.dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(r.partial, r.dest)
    os.removedirs(r.partial.parent)  # and the folders above it that this left empty


@contextmanager
def _hub(repo: str, endpoint: str | None, role: str = "repo", path: str | None = None) -> Iterator[None]:
    """huggingface_hub's exceptions, each as the one line a user can act on."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    hub = (endpoint or constants.ENDPOINT).rstrip("/")
    try:
        yield
    except hf.GatedRepoError as exc:
        raise PullError(f"{repo} is gated: accept its licence at {hub}/{repo} while logged in, then set HF_TOKEN "
                        "to a token of that account") from exc
    except hf.RepositoryNotFoundError as exc:
        raise PullError(f"{role} {repo} not found on {hub} (if it is private, set HF_TOKEN)") from exc
    except hf.RemoteEntryNotFoundError as exc:
        raise PullError(f"{path or INDEX} not found in {repo} on {hub}") from exc
    except hf.OfflineModeIsEnabled as exc:
        raise PullError(OFFLINE) from exc
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if status == 401:
            raise PullError(f"{hub} refused the token (401 Unauthorized): check HF_TOKEN") from exc
        raise PullError(f"{hub} answered {status} for {repo}: {_first_line(exc)}") from exc
    except (hf.LocalEntryNotFoundError, httpx2.TransportError) as exc:
        raise PullError(f"cannot reach {hub}: {_first_line(exc.__cause__ or exc)}") from exc
    except hf.HFValidationError as exc:
        raise PullError(f"{role} {repo!r} is not a Hub repo id: {_first_line(exc)}") from exc
    except OSError as exc:  # disk full, permissions, a size that never matched
        raise PullError(f"{path or repo}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class _Bar:
    """What huggingface_hub reports a download's bytes to (its ``tqdm_class``), passed on to ``advance``."""

    advance: Callable[[int], None]

    def __init__(self, *args, **kwargs) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.advance(n)

    def _ignore(self, *args, **kwargs) -> None:
        """Xet's network bytes (the bar counts the bytes written), rates, redraws."""

    update_transfer = set_postfix_str = set_transfer_postfix_str = refresh = close = _ignore

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _bar(advance: Callable[[int], None]) -> type[_Bar]:
    return type("Bar", (_Bar,), {"advance": staticmethod(advance)})


class _Display:
    """A pull's one display: on a terminal a bar per file and one in total (bytes), else a line per file."""

    def __init__(self, console: "Console | None", total: int) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.console = console
        self.live = console is not None and console.is_terminal
        self.bars = Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(), console=console, disable=not self.live)
        self.total = self.bars.add_task("total", total=total)
        self.task, self.name, self.counted = None, "", 0

    def __enter__(self) -> "_Display":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start(self, r: Remote, resumed: int) -> type[_Bar]:
        """A bar for ``r``, ``resumed`` bytes of it done already, and the class huggingface_hub draws into."""
        self.name = r.label if len(r.label) <= 48 else f"…{r.label[-47:]}"
        self.task, self.counted = self.bars.add_task(self.name, total=r.size, completed=resumed), resumed
        self.bars.advance(self.total, resumed)
        return _bar(self._advance)

    def _advance(self, n: int) -> None:
        self.counted += n
        self.bars.advance(self.task, n)
        self.bars.advance(self.total, n)

    def verifying(self) -> None:
        self.bars.update(self.task, description=f"{self.name} (verifying)")

    def done(self, r: Remote) -> None:
        self.bars.advance(self.total, r.size - self.counted)  # all of it, fetched earlier or now
        self.bars.remove_task(self.task)
        if self.console is not None and not self.live:
            self.console.print(f"verified {r.label} ({size_text(r.size)})", markup=False, highlight=False,
                               soft_wrap=True)

    def undo(self) -> None:
        self.bars.advance(self.total, -self.counted)
        self.bars.remove_task(self.task)


# --- the manifest ---------------------------------------------------------------------------------------------------

def _read_manifest(directory: Path) -> dict[str, dict]:
    """Path -> entry (``Remote.entry``); empty when there is none or it cannot be read."""
    return (_json(directory / MANIFEST) or {}).get("files", {})


def _write_manifest(directory: Path, files: dict[str, dict]) -> None:
    path = directory / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    os.replace(tmp, path)


# --- status ---------------------------------------------------------------------------------------------------------

def status(settings: "Settings", preset: Preset) -> WeightsStatus:
    """What of a preset's weights is on this machine, judged offline: by the manifest a pull wrote,
    else (a directory copied by hand, a ``path`` preset, the HF cache) from model_index.json."""
    from openi2v.engines.registry import lora_file

    source = _source(settings, preset)
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
        entry = None if lora.path else _read_manifest(settings.weights_root / "loras").get(lora.file)
        if path is not None and (entry is None or path.parent != settings.weights_root / "loras" or
                                 entry.get("verified") == _stamp(path)):
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
    listed = _read_manifest(where)
    missing = [path + ("" if entry.get("repo") == repo else f" (from {entry.get('repo')})")
               for path, entry in sorted(listed.items())
               if entry.get("repo") != repo or entry.get("verified") is None
               or entry["verified"] != _stamp(where / path)]
    return missing, len(listed) - len(missing)


def _judged_missing(where: Path) -> tuple[list[str], int]:
    """Without a manifest: each component folder model_index.json names holds a config, a model's
    config.json has weights beside it, and a sharded model's index has all its shards."""
    index = _json(where / INDEX)
    if index is None:
        return [INDEX], int(any(not p.name.startswith(".") for p in where.iterdir()))
    missing = []
    for folder in sorted(_components(index)):
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
