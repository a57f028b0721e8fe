"""Where uploads and outputs live: this package owns their names, their URLs and their bytes.

A file is named by its key, which is also its path under the API's base URL:

    media/{token}/{filename}    an upload (ticket + PUT, multipart, or a data URI kept at submit)
    files/{token}/{filename}    an output (a video, its poster)

Tokens are unguessable; filenames are made safe (``safe_name``). Two backends implement
``Storage``: ``LocalStorage`` (files under the data directory, the embedded default) and
``S3Storage`` (an S3-compatible bucket every machine shares). ``from_settings`` picks one.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, AsyncIterator, Protocol

from openi2v.errors import NotFound

if TYPE_CHECKING:
    from openi2v.config import Settings

UPLOADS, OUTPUTS = "media", "files"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
_UPLOAD_URL = re.compile(rf"/{UPLOADS}/({_TOKEN.pattern})/([^/?#]+)")


class Storage(Protocol):
    origin: str | None  # the origin of the URLs it hands out, when not the API's own

    def save_output(self, src: Path, filename: str) -> str:
        """Store a finished file under a new token; its key. StorageError when that fails."""

    async def receive(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Store an upload's bytes as they arrive, refusing more than ``max_bytes`` (413); the size."""

    def put(self, key: str, data: bytes) -> None:
        """Store an upload already in memory (a data URI kept at submit)."""

    def read(self, key: str, max_bytes: int) -> bytes | None:
        """A file's bytes, None when it is not there. At most ``max_bytes`` + 1 bytes are read: a larger
        file comes back cut there, so that the caller's size check refuses it without holding it all."""

    def delete(self, key: str) -> None:
        """Remove a file; one already gone is no error. StorageError when that fails."""

    def locate(self, key: str) -> Path | str | None:
        """Where the API's file route finds a file: a path on this disk to send, a URL to redirect to,
        or None when it is not there."""

    def url(self, key: str, base: str, expires_at: float | None) -> str:
        """The URL a result hands out for an output, valid at least until ``expires_at`` (None: kept for
        ever) where the backend allows."""

    def upload_target(self, key: str, base: str, content_type: str, size: int, ttl_s: int) -> str:
        """Where a client PUTs an upload's bytes (the ticket flow), for ``ttl_s`` seconds; ``size``: the
        ticket's declared byte count (0: not declared)."""


def from_settings(settings: "Settings") -> Storage:
    if settings.storage == "s3":
        try:
            from openi2v.storage.s3 import S3Storage
        except ImportError as exc:
            raise ValueError(f"OPENI2V_STORAGE: s3 needs {exc.name}, not installed here: "
                             "pip install 'openi2v[s3]'") from None

        return S3Storage.from_settings(settings)
    from openi2v.storage.local import LocalStorage

    return LocalStorage(settings.data_dir)


def new_token() -> str:
    return secrets.token_urlsafe(24)


def upload_key(token: str, filename: str) -> str:
    return f"{UPLOADS}/{token}/{filename}"


def output_key(filename: str) -> str:
    """A new output's key (a fresh token)."""
    return f"{OUTPUTS}/{new_token()}/{safe_name(filename)}"


def checked_key(kind: str, token: str, filename: str) -> str:
    """The key of a file storage could hold, from a request's path; NotFound for any other, so that
    nothing else (a NUL, a dot-dot, a name it would never write) goes further."""
    if kind not in (UPLOADS, OUTPUTS) or not _TOKEN.fullmatch(token) or not is_safe_name(filename):
        raise NotFound("file not found")
    return f"{kind}/{token}/{filename}"


def parse_key(key: str) -> tuple[str, str, str]:
    """(kind, token, filename) of a stored key; NotFound for anything that is not one."""
    kind, token, filename = (key.split("/", 2) + ["", ""])[:3]
    checked_key(kind, token, filename)
    return kind, token, filename


def own_upload(path: str) -> str | None:
    """The key of our upload a URL's path names (whatever host it was given for), or None."""
    m = _UPLOAD_URL.search(path)
    if m is None or not is_safe_name(m.group(2)):  # a name we never write (a NUL, say) is not ours
        return None
    return upload_key(m.group(1), m.group(2))


def safe_name(filename: str) -> str:
    name = _UNSAFE.sub("_", PurePosixPath(filename or "upload").name).strip("._") or "upload"
    return name[:120]


def is_safe_name(filename: str) -> bool:
    """A name as this storage writes it (so never a NUL, a slash or a dot-dot)."""
    return safe_name(filename) == filename
