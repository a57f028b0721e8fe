"""Uploads (ticket + PUT, and multipart at two paths) and the public file URLs."""

from __future__ import annotations

import mimetypes
from typing import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from openi2v.api import headers
from openi2v.api.bodies import json_body
from openi2v.api.context import Context, api_key, ctx
from openi2v.api.schemas import envelope, iso
from openi2v.domain.inputs import check_upload, parse_content_type
from openi2v.errors import Gone, InvalidInput, NotFound, PayloadTooLarge
from openi2v.media.filetypes import HEAD_BYTES, OCTET_STREAM, file_type
from openi2v.storage import OUTPUTS, UPLOADS, checked_key, safe_name, upload_key
from openi2v.store import Upload

router = APIRouter()
MULTIPART_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}}}}}


@router.post("/api/v3/media/uploads")
async def create_ticket(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    c = ctx(request)
    body = await json_body(request, required=True)
    filename = body.get("filename")
    if not isinstance(filename, str) or not filename.strip():
        raise InvalidInput("filename", "is required")
    size = body.get("size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInput("size", "must be a non-negative integer")
    _check_size(c, size)
    content_type = _content_type(body.get("content_type"), filename)
    upload = await run_in_threadpool(c.uploads.create, key_id, safe_name(filename), content_type, size,
                                     c.settings.upload_ticket_ttl_s)
    base = c.base_url(request)
    data = _upload_data(upload, base)
    target = c.storage.upload_target(upload_key(upload.token, upload.filename), base, content_type, size,
                                     c.settings.upload_ticket_ttl_s)
    data["upload"] = {"method": "PUT", "url": target, "headers": {"Content-Type": content_type},
                      "expires_at": iso(upload.put_expires_at)}
    return envelope(data)


@router.put("/api/v3/media/uploads/{token}")
async def put_upload(token: str, request: Request) -> JSONResponse:
    """The capability URL: no key; single use; expires."""
    c = ctx(request)
    upload = await run_in_threadpool(c.uploads.consume_ticket, token)
    key, max_bytes = upload_key(upload.token, upload.filename), c.settings.max_upload_mb * 2**20
    # stored as it arrives (the cap holds with or without a Content-Length), then judged as a multipart one
    size = await c.storage.receive(key, request.stream(), max_bytes)
    try:
        check_upload(await run_in_threadpool(c.storage.read, key, HEAD_BYTES - 1) or b"", size, max_bytes)
    except (InvalidInput, PayloadTooLarge):
        await run_in_threadpool(c.storage.delete, key)
        raise
    await run_in_threadpool(c.uploads.set_size, token, size)
    return envelope({"download_url": _upload_data(upload, c.base_url(request))["download_url"], "size": size})


@router.post("/api/v3/media/upload/binary", openapi_extra=MULTIPART_SCHEMA)
async def upload_binary(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """The legacy multipart upload: one part named ``file``."""
    return envelope(await _multipart(request, key_id))


@router.post("/api/v3/upload", openapi_extra=MULTIPART_SCHEMA)
async def upload(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """The same upload at the path of the hosted docs' newer page, which answers ``data.url``."""
    data = await _multipart(request, key_id)
    return envelope({"url": data["download_url"], **data})


async def _multipart(request: Request, key_id: int) -> dict:
    """Store the part named ``file``: not empty, and within the hosted limit of its type (judged by its
    bytes: ``check_upload``). The form is parsed here rather than by FastAPI, whose parse errors (an
    over-long body among them) all become one 400."""
    c = ctx(request)
    async with request.form(max_files=1, max_fields=8) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("file", "is required: a multipart/form-data part named file")
        head = await file.read(HEAD_BYTES)
        await file.seek(0)
        # Starlette's parser counts the part's bytes (file.size): judged before anything is stored
        check_upload(head, file.size, c.settings.max_upload_mb * 2**20)
        return await _store_binary(c, request, key_id, file)


async def _store_binary(c: Context, request: Request, key_id: int, file: UploadFile) -> dict:
    content_type = _content_type(file.content_type, file.filename or "")
    upload = await run_in_threadpool(c.uploads.create, key_id, safe_name(file.filename or "upload"), content_type,
                                     0, 0, True)
    size = await c.storage.receive(upload_key(upload.token, upload.filename), _chunks(file),
                                   c.settings.max_upload_mb * 2**20)
    await run_in_threadpool(c.uploads.set_size, upload.token, size)
    data = _upload_data(upload, c.base_url(request))
    data["size"] = size
    return data


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(1 << 20):
        yield chunk


@router.get(f"/{UPLOADS}/{{token}}/{{filename}}")
@router.get(f"/{OUTPUTS}/{{token}}/{{filename}}")
@router.head(f"/{UPLOADS}/{{token}}/{{filename}}", include_in_schema=False)
@router.head(f"/{OUTPUTS}/{{token}}/{{filename}}", include_in_schema=False)
def serve_file(token: str, filename: str, request: Request) -> Response:
    """A user's file, which must never run as a page on our origin: its type comes from its bytes,
    anything but media we accept is a download, and a sandbox CSP covers whatever a browser renders.
    A file in a bucket is a redirect to a short-lived signed URL there (another origin)."""
    kind = request.url.path.split("/", 2)[1]
    c = ctx(request)
    key = checked_key(kind, token, filename)
    where = c.storage.locate(key)
    # an upload is looked up even when its file is there: swept, the file may not have been deletable
    if (where is None or kind == UPLOADS) and (gone := c.retention.expired_file(key)):
        raise Gone(f"this file expired at {iso(gone)} and was deleted (files are kept "
                   f"{c.settings.retention_days:g} days)")
    if where is None:
        raise NotFound("file not found")
    if isinstance(where, str):
        return RedirectResponse(where, status_code=302, headers={"Cache-Control": "no-store"})
    path = where
    media_type = file_type(path)
    media = media_type != OCTET_STREAM
    return FileResponse(path, media_type=media_type, filename=path.name, headers=headers.user_file(media),
                        content_disposition_type="inline" if media else "attachment")


def _upload_data(upload: Upload, base: str) -> dict:
    kind = upload.content_type.split("/", 1)[0]
    return {"type": kind if kind in ("image", "video", "audio") else "file",
            "download_url": base + upload_key(upload.token, upload.filename),
            "filename": upload.filename, "size": upload.size,
            "expires_at": iso(upload.expires_at) if upload.expires_at else None}


def _content_type(declared: str | None, filename: str) -> str:
    """The client's label for an upload (checked), else one guessed from its name."""
    return parse_content_type("content_type", declared) or mimetypes.guess_type(filename)[0] or OCTET_STREAM


def _check_size(c: Context, size: int) -> None:
    if size > c.settings.max_upload_mb * 2**20:
        raise PayloadTooLarge(f"size: must be at most {c.settings.max_upload_mb} MB")


