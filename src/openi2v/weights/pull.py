"""Pulling a plan: the disk checked, each file downloaded through huggingface_hub's own client,
resumed from its partial, verified, and recorded in the manifest."""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from openi2v.engines.catalog import Preset
from openi2v.weights.hub import Bar, PullError, bar_class, hub_errors
from openi2v.weights.plan import Plan, Remote, plan, size_text, source_of, stamp
from openi2v.weights.status import read_manifest, write_manifest

if TYPE_CHECKING:
    from rich.console import Console

    from openi2v.config import Settings

HF_TEMPORARIES = Path(".cache") / "huggingface" / "download"  # where hf_hub_download's *.incomplete files go
DISK_MARGIN = 64 * 2**20  # besides 1% of the bytes to fetch: filesystem overhead, manifests


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
    old, books, todo = _books(settings, preset, the_plan)
    pipeline = settings.weights_root / source_of(settings, preset).name
    for gone in set(old.get(pipeline, {})) - {r.path for r in the_plan.files}:  # another revision's, or repo's
        (pipeline / gone).unlink(missing_ok=True)  # a stale shard beside a new index would be loaded
    _tidy(books.keys(), todo)
    if todo:
        _check_disk(todo, todo[0].local_dir)
    for directory, entries in books.items():
        write_manifest(directory, entries)
    with _Display(console, sum(r.size for r in todo)) as show:
        for r in todo:
            books[r.local_dir][r.path] = r.entry(_fetch(r, show, endpoint, token))
            write_manifest(r.local_dir, books[r.local_dir])
    return the_plan


def to_fetch(settings: "Settings", preset: Preset, the_plan: Plan) -> list[Remote]:
    """The files of ``the_plan`` a pull would fetch: all but those verified and unchanged since."""
    return _books(settings, preset, the_plan)[2]


def _books(settings: "Settings", preset: Preset, the_plan: Plan) -> tuple[dict, dict, list[Remote]]:
    """Each directory's manifest as it was and as the plan makes it (a verified stamp kept only for
    the same content), and the files still to fetch."""
    old = {d: read_manifest(d) for d in {r.local_dir for r in the_plan.files}}
    pipeline = settings.weights_root / source_of(settings, preset).name
    books = {d: {} if d == pipeline else dict(entries) for d, entries in old.items()}  # loras/ is shared
    for r in the_plan.files:
        was = old[r.local_dir].get(r.path)
        same = was is not None and (was.get("sha256"), was.get("blob_id")) == (r.sha256, r.blob_id)
        books[r.local_dir][r.path] = r.entry(was.get("verified") if same else None)
    return old, books, [r for r in the_plan.files if not _verified(r, books[r.local_dir][r.path])]


def _verified(r: Remote, entry: dict) -> bool:
    checked = entry.get("verified")
    return checked is not None and checked == stamp(r.dest)


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
        with hub_errors(r.repo, endpoint, path=r.path):
            _download(r, bar, endpoint, token)
        show.verifying()
        wrong = r.mismatch()
        if wrong is None:
            show.done(r)
            return stamp(r.dest)
        r.dest.unlink()
        show.undo()
    raise PullError(f"{r.path} from {r.repo} is corrupt after two downloads: {wrong}")


def _download(r: Remote, bar: type["Bar"], endpoint: str | None, token: str | None) -> None:
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

    def start(self, r: Remote, resumed: int) -> type[Bar]:
        """A bar for ``r``, ``resumed`` bytes of it done already, and the class huggingface_hub draws into."""
        self.name = r.label if len(r.label) <= 48 else f"…{r.label[-47:]}"
        self.task, self.counted = self.bars.add_task(self.name, total=r.size, completed=resumed), resumed
        self.bars.advance(self.total, resumed)
        return bar_class(self._advance)

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
