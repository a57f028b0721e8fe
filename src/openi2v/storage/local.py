"""Files on this machine's disk, under the data directory (the embedded default):

    {root}/uploads/{token}/{filename}   key media/{token}/{filename}
    {root}/outputs/{token}/{filename}   key files/{token}/{filename}

The API serves them itself (``locate`` gives the path); every process that uses them must share
the directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator

from openi2v.errors import NotFound, PayloadTooLarge, StorageError
from openi2v.storage import OUTPUTS, UPLOADS, output_key, parse_key

_DIRS = {UPLOADS: "uploads", OUTPUTS: "outputs"}


class LocalStorage:
    origin = None  # its files are served by the API itself

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def save_output(self, src: Path, filename: str) -> str:
        key = output_key(filename)
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise StorageError(f"could not store output: {exc}") from exc
        return key

    async def receive(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        with CappedWriter(self._path(key), max_bytes) as writer:
            async for chunk in chunks:
                writer.write(chunk)
        return writer.size

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        except OSError as exc:
            raise StorageError(f"could not store upload: {exc}") from exc

    def read(self, key: str, max_bytes: int) -> bytes | None:
        path = self.locate(key)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read(max_bytes + 1)
        except FileNotFoundError:  # removed just now
            return None

    def delete(self, key: str) -> None:
        try:
            shutil.rmtree(self._path(key).parent)
        except (NotFound, FileNotFoundError):  # gone already, or just now by another process
            pass
        except OSError as exc:
            raise StorageError(f"could not delete {key}: {exc}") from exc

    def locate(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def url(self, key: str, base: str, expires_at: float | None) -> str:
        return base + key

    def upload_target(self, key: str, base: str, content_type: str, size: int, ttl_s: int) -> str:
        return f"{base}api/v3/media/uploads/{parse_key(key)[1]}"  # api/routes/media.py's PUT receives it

    def _path(self, key: str) -> Path:
        kind, token, filename = parse_key(key)
        return self.root / _DIRS[kind] / token / filename


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
