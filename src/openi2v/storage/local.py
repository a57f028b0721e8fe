"""Files on local disk, under unguessable tokens; the API serves them without a key.

    {data_dir}/uploads/{token}/{filename}   -> /media/{token}/{filename}
    {data_dir}/outputs/{token}/{filename}   -> /files/{token}/{filename}
"""

from __future__ import annotations

import re
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO

from openi2v.errors import NotFound, PayloadTooLarge, StorageError

KINDS = {"uploads": "media", "outputs": "files"}
_DIRS = {url_kind: kind for kind, url_kind in KINDS.items()}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
UPLOAD_URL = re.compile(rf"/media/({_TOKEN.pattern})/([^/?#]+)")  # an upload's URL: its token and name


def url_path(url_kind: str, token: str, filename: str) -> str:
    """Where a file is served, relative to the public base: "files/<token>/<name>"."""
    return f"{url_kind}/{token}/{filename}"


def upload_url_path(token: str, filename: str) -> str:
    return url_path("media", token, filename)


def safe_name(filename: str) -> str:
    name = _UNSAFE.sub("_", Path(filename or "upload").name).strip("._") or "upload"
    return name[:120]


def is_safe_name(filename: str) -> bool:
    """A name as this storage writes it (so never a NUL, a slash or a dot-dot)."""
    return safe_name(filename) == filename


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def upload_path(self, token: str, filename: str) -> Path:
        return self._path("uploads", token, filename)

    def write_upload(self, token: str, filename: str, stream: BinaryIO, max_bytes: int) -> int:
        """Copy a stream to disk, refusing more than ``max_bytes``; returns the size."""
        with self.upload_writer(token, filename, max_bytes) as writer:
            while chunk := stream.read(1 << 20):
                writer.write(chunk)
        return writer.size

    def upload_writer(self, token: str, filename: str, max_bytes: int) -> "CappedWriter":
        """A file to write an upload into chunk by chunk as it arrives (see ``CappedWriter``)."""
        return CappedWriter(self.upload_path(token, filename), max_bytes)

    def save_output(self, src: Path, filename: str) -> str:
        """Move a finished file into place; return its URL path (relative to the public base)."""
        token = secrets.token_urlsafe(24)
        dest = self._path("outputs", token, filename)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise StorageError(f"could not store output: {exc}") from exc
        return url_path("files", token, dest.name)

    def delete_file(self, rel: str) -> None:
        """Remove an output or an upload by its URL path; a missing one is already gone."""
        try:
            shutil.rmtree(self.file(rel).parent)
        except (NotFound, FileNotFoundError):  # gone already, or just now by another process
            pass
        except OSError as exc:
            raise StorageError(f"could not delete {rel}: {exc}") from exc

    def public_path(self, url_kind: str, token: str, filename: str) -> str:
        """The URL path ("files/<token>/<name>") of a file this storage could hold; NotFound for any
        other, so that nothing else (a NUL, a name it would never write) goes further."""
        if url_kind not in _DIRS or not _TOKEN.fullmatch(token) or not is_safe_name(filename):
            raise NotFound("file not found")
        return url_path(url_kind, token, filename)

    def file(self, rel: str) -> Path:
        """The file at a URL path (as ``save_output`` returns, or ``upload_url_path`` makes)."""
        return self.resolve(*(rel.split("/", 2) + ["", ""])[:3])

    def resolve(self, url_kind: str, token: str, filename: str) -> Path:
        """The file behind /media/... or /files/...; NotFound for anything else."""
        kind = _DIRS.get(url_kind)
        if kind is None:
            raise NotFound("file not found")
        path = self._path(kind, token, filename)
        if not path.is_file():
            raise NotFound("file not found")
        return path

    def _path(self, kind: str, token: str, filename: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise NotFound("file not found")
        return self.root / kind / token / safe_name(filename)


class CappedWriter:
    """Writes chunks to a new file and refuses the one that takes it past ``max_bytes``
    (413); on any error the partial file is removed."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path, self.max_bytes, self.size = path, max_bytes, 0

    def __enter__(self) -> "CappedWriter":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")
        except OSError as exc:
            raise StorageError(f"could not store upload: {exc}") from exc
        return self

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise PayloadTooLarge(f"file: must be at most {self.max_bytes // 2**20} MB")
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise StorageError(f"could not store upload: {exc}") from exc

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)
