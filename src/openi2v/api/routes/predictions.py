"""Submit, poll and list predictions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from openi2v.api.bodies import json_body
from openi2v.api.context import Context, api_key, ctx
from openi2v.api.schemas import envelope, iso, prediction_data
from openi2v.domain.billing import price_micros
from openi2v.domain.inputs import (MAX_AUDIO_BYTES, MAX_IMAGE_BYTES, MEDIA_FIELDS, VideoRequest, check_audio,
                                   check_url, inspect_image, optional_str, parse_flag, parse_idempotency_key,
                                   page_fields, parse_ids, parse_request, time_field)
from openi2v.domain.prediction import Prediction, Status
from openi2v.domain.scenarios import plan_for
from openi2v.errors import InvalidInput, NotFound, StorageError, TooManyRequests, Unavailable
from openi2v.media.filetypes import HEAD_BYTES, sniff
from openi2v.media.images import own_upload
from openi2v.storage import parse_key, upload_key
from openi2v.store.predictions import Idempotency

router = APIRouter()
log = logging.getLogger("openi2v.api")
SYNC_POLL_S = 0.1
# The hosted CLI's filter values; "timeout" is a status of the hosted API's own that ours never take.
HISTORY_STATUSES = (*(s.value for s in Status), "timeout")


@router.get("/api/v3/predictions/{prediction_id}/result")
@router.get("/api/v3/predictions/{prediction_id}")
async def get_prediction(prediction_id: str, request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    c = ctx(request)
    p = await c.read(c.predictions.get, prediction_id, key_id)
    if p.scenario and (n := await run_in_threadpool(c.predictions.take_poll_error, p)):
        raise _transient_error(n)
    return envelope(await _data(c, request, p))


def _transient_error(n: int) -> Unavailable | TooManyRequests:
    """A scenario's failed poll: 503 then 429, in turn (the official SDKs retry both)."""
    if n % 2:
        return Unavailable("service temporarily unavailable (simulated by a scenario): retry")
    return TooManyRequests("rate limit exceeded (simulated by a scenario): retry", 1)


@router.get("/api/v3/{path:path}", include_in_schema=False)
async def unknown(path: str) -> None:
    """After every GET route: an unknown path is the envelope's 404, not a 405 from the submit route."""
    raise NotFound(f"not found: GET /api/v3/{path}")


@router.post("/api/v3/predictions")
async def history(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    body = await json_body(request, required=False)
    page, page_size = page_fields(body)
    status = optional_str(body, "status")
    if status is not None and status not in HISTORY_STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(HISTORY_STATUSES)}")
    c = ctx(request)
    total, items = await run_in_threadpool(
        c.predictions.history, key_id, page, page_size, optional_str(body, "model"), status,
        time_field(body, "created_after"), time_field(body, "created_before"))
    base = c.base_url(request)
    return envelope({"page": page, "page_size": page_size, "total": total,
                     "items": [prediction_data(p, base, c.storage) for p in items]})


@router.post("/api/v3/predictions/delete")
async def delete(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """As hosted: ``{"ids": [...]}``. Deletes the key's predictions and their output files (a running
    one is cancelled first); the ledger keeps its entries. Ids that are not the key's are listed apart."""
    c = ctx(request)
    ids = parse_ids(await json_body(request, required=True))
    gone = await run_in_threadpool(_delete, c, key_id, ids)
    return envelope({"deleted": gone, "not_found": [i for i in dict.fromkeys(ids) if i not in gone]})


def _delete(c: Context, key_id: int, ids: list[str]) -> list[str]:
    deleted = c.predictions.delete(key_id, ids)
    for p in deleted:
        for rel in p.files:
            try:
                c.storage.delete(rel)
            except StorageError:  # the rows are gone already: a file left behind is for the log
                log.exception("prediction %s: could not delete %s", p.id, rel)
    return [p.id for p in deleted]


@router.post("/api/v3/predictions/{prediction_id}/cancel")
async def cancel(prediction_id: str, request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """Ours: stop a queued or running prediction. It ends as ``cancelled`` (nothing charged, its
    webhook sent); a running one stops at its engine's next check. 409 when it has already ended."""
    c = ctx(request)
    return envelope(await _data(c, request, await run_in_threadpool(c.predictions.cancel, prediction_id, key_id)))


@router.post("/api/v3/{model_path:path}")
async def submit(model_path: str, request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    c = ctx(request)
    if model_path not in c.models:
        raise NotFound(f"model not found: {model_path}")
    body = await json_body(request, required=True, max_bytes=c.settings.max_json_mb * 2**20)
    base64_output, sync = parse_flag(body, "enable_base64_output"), parse_flag(body, "enable_sync_mode")
    webhook = _webhook(c, request, base64_output)
    req = parse_request(body)
    idempotency = await run_in_threadpool(_idempotency, request, model_path, body)  # hashes up to 32 MB
    p = idempotency and await run_in_threadpool(c.predictions.replayed, key_id, idempotency)
    if not p:
        await c.read(c.predictions.check_limits, key_id)  # a 429 before the media work, not after it
        plan = plan_for(req.seed, await c.read(c.accounts.scenario, key_id), c.settings.sandbox)
        if plan.submit_429:
            raise TooManyRequests("rate limit exceeded (simulated by a scenario)", 1)
        inputs, uploads = await run_in_threadpool(_store_local_media, c, key_id, req)
        price = price_micros(c.settings.price_for(model_path), req.duration)
        p = await run_in_threadpool(c.predictions.create, key_id, model_path, inputs, req.seed, price,
                                    base64_output, webhook, idempotency, uploads, plan)
    if sync:
        return await _wait(c, request, p)
    return envelope(await _data(c, request, p))


async def _data(c: Context, request: Request, p: Prediction) -> dict:
    build = partial(prediction_data, p, c.base_url(request), c.storage, await c.read(c.predictions.queue_position, p))
    # base64 output reads the video file: off the event loop
    return await run_in_threadpool(build) if p.base64_output and p.outputs else build()


async def _wait(c: Context, request: Request, p: Prediction) -> JSONResponse:
    """enable_sync_mode: block until the prediction ends or the cap passes (then answer 5004)."""
    deadline = time.monotonic() + c.settings.sync_timeout_s
    while time.monotonic() < deadline:
        p = await c.read(c.predictions.get, p.id)
        if p.status.terminal:
            return envelope(await _data(c, request, p))
        await asyncio.sleep(SYNC_POLL_S)
    data = await _data(c, request, p)
    data.update(code=5004, error=(f"Sync mode timed out after {c.settings.sync_timeout_s:g} seconds. "
                                  "The prediction is still processing asynchronously."))
    return envelope(data)


def _store_local_media(c: Context, key_id: int, req: VideoRequest) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Judge media we already hold (data URIs, our uploads) now, so bad files are a 400 at submit;
    the inputs to store, and the tokens of the uploads they name.

    Data URIs are kept as uploads so the stored inputs stay small. An upload a submit names is
    kept a full retention period from now, and for as long as the prediction is open. Remote URLs
    are fetched and judged by the worker (a failure there fails the prediction).
    """
    inputs, tokens = req.to_json(), []
    for field in MEDIA_FIELDS:
        ref = inputs.get(field)
        upload = own_upload(ref) if ref and not ref.startswith("data:") else None
        data = c.fetcher.local(field, ref, MAX_AUDIO_BYTES if field == "audio" else MAX_IMAGE_BYTES) if ref else None
        if data is None:
            if upload and (gone := c.retention.expired_file(upload)):
                raise InvalidInput(field, f"the upload expired at {iso(gone)} and was deleted: upload the file again")
            continue
        if upload:
            token = parse_key(upload)[1]
            if not c.uploads.use(token):
                raise InvalidInput(field, "the upload has just expired and is being deleted: upload the file again")
            tokens.append(token)
        if field == "audio":
            check_audio(field, data)
        else:
            inspect_image(field, data)
        if ref.startswith("data:"):
            content_type = sniff(data[:HEAD_BYTES])
            name = f"{field}.{content_type.rsplit('/', 1)[-1]}"
            stored = c.uploads.create(key_id, name, content_type, len(data), 0, received=True)
            key = upload_key(stored.token, name)
            c.storage.put(key, data)
            inputs[field] = "/" + key
            tokens.append(stored.token)
    return inputs, tuple(tokens)


def _idempotency(request: Request, model_path: str, body: dict) -> Idempotency | None:
    """The ``Idempotency-Key`` header, with a hash of what this submit asks for: the same key with
    the same request returns the first prediction; with another request it is a 409."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    what = {k: v for k, v in body.items() if k != "enable_sync_mode"}  # how to wait is not what is asked
    asked = json.dumps([model_path, what, request.query_params.get("webhook")], sort_keys=True).encode()
    return Idempotency(parse_idempotency_key(key), hashlib.sha256(asked).hexdigest())


def _webhook(c: Context, request: Request, base64_output: bool) -> dict[str, str] | None:
    """``?webhook=<url>``: where the result is POSTed when the prediction ends (query string, as hosted)."""
    url = request.query_params.get("webhook")
    if not url:
        return None
    if base64_output:
        rule = "webhook callback does not support base64 output, please use the normal API to use base64 output"
        raise InvalidInput("webhook", rule, error=rule)  # the hosted body's "error" text, beside our message
    check_url("webhook", url)
    return {"url": url, "base": c.base_url(request)}

