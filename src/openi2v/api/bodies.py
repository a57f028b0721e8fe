"""Request bodies, bounded whatever a client sends.

``BodyLimit`` counts the bytes of every request body as the app reads them and stops at a 413:
a declared ``Content-Length`` over the limit is refused before a byte is read, and a chunked body
without one when its running count passes it. Uploads get the upload limit, every other body the
JSON limit (the largest submit). ``json_body`` then reads a route's JSON object under that route's
own limit, and judges its shape (size in values, depth, valid Unicode) before and after parsing,
so that parsing itself costs a bounded multiple of the body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openi2v.config import Settings
from openi2v.domain.inputs import check_text
from openi2v.errors import InvalidInput, PayloadTooLarge

SMALL_JSON = 64 * 1024  # every JSON body but a submit's (filters, quotes, upload tickets)
MAX_VALUES = 10_000  # objects, arrays and separators in one body: a submit has a few dozen
MAX_DEPTH = 16
PARSE_INLINE = 256 * 1024  # a larger body is parsed off the event loop

UPLOAD_PATHS = ("/api/v3/media/uploads/", "/api/v3/media/upload/binary")
UPLOAD_ALIAS = "/api/v3/upload"  # the hosted multipart upload's newer path (exactly this one)
MULTIPART_SLACK = 64 * 1024  # a multipart body's boundaries and part headers around the file


class BodyLimit:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(UPLOAD_PATHS) or scope["path"] == UPLOAD_ALIAS:
            field, mb = "file", self.settings.max_upload_mb
            limit = mb * 2**20 + MULTIPART_SLACK
        else:
            field, mb = "body", self.settings.max_json_mb
            limit = mb * 2**20
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
            return int(value) if value.isdigit() and len(value) <= 19 else None
    return None


async def json_body(request: Request, required: bool, max_bytes: int = SMALL_JSON) -> dict:
    """The request's JSON object, at most ``max_bytes``, ``MAX_VALUES`` values and ``MAX_DEPTH``
    levels, every text valid Unicode; a 413 or a 400 naming the field otherwise."""
    raw = await _read(request, max_bytes)
    if not raw.strip():
        if required:
            raise InvalidInput("body", "must be a JSON object")
        return {}
    values = raw.count(b"{") + raw.count(b"[") + raw.count(b",")
    if values > MAX_VALUES:
        raise InvalidInput("body", f"must hold at most {MAX_VALUES:,} values (objects, arrays and items)")
    return await run_in_threadpool(_parse, raw) if len(raw) > PARSE_INLINE else _parse(raw)


async def _read(request: Request, max_bytes: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            limit = f"{max_bytes // 2**20} MB" if max_bytes >= 2**20 else f"{max_bytes // 1024} KB"
            raise PayloadTooLarge(f"body: must be at most {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except RecursionError as exc:
        raise InvalidInput("body", f"must be nested at most {MAX_DEPTH} levels deep") from exc
    except ValueError as exc:
        raise InvalidInput("body", "must be valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    _check_tree(body, None, 0)
    return body


def _check_tree(value: Any, field: str | None, depth: int) -> None:
    """Depth and text of every value; an error names the top-level field that holds the fault
    (``field`` is None at the top, where the body itself is named)."""
    name = field or "body"
    if depth > MAX_DEPTH:
        raise InvalidInput(name, f"must be nested at most {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        check_text(name, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(name, key)
            _check_tree(item, key if field is None else field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_tree(item, field, depth + 1)
