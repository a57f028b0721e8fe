"""Request bodies are bounded whatever a client sends.

``BodyLimit`` counts the bytes of every request body as the app reads them and stops at the
route's limit with a 413: a declared ``Content-Length`` over it is refused before a byte is
read, and a chunked body without one when its running count passes it. Nothing upstream
buffers a body whole, so a process's memory never depends on what a client sends. Uploads
get the upload limit; every other body (JSON) the JSON limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openi2v.config import Settings
from openi2v.errors import PayloadTooLarge

UPLOAD_PATHS = ("/api/v3/media/uploads/", "/api/v3/media/upload/binary")
MULTIPART_SLACK = 64 * 1024  # a multipart body's boundaries and part headers around the file


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.upload_mb, self.json_mb = settings.max_upload_mb, settings.max_json_mb

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(UPLOAD_PATHS):
            field, mb, limit = "file", self.upload_mb, self.upload_mb * 2**20 + MULTIPART_SLACK
        else:
            field, mb, limit = "body", self.json_mb, self.json_mb * 2**20
        declared = _content_length(scope)
        received = 0

        async def capped() -> Message:
            nonlocal received
            if declared is not None and declared > limit:
                raise PayloadTooLarge(f"{field}: must be at most {mb} MB")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"{field}: must be at most {mb} MB")
            return message

        await self.app(scope, capped, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
