"""What a key has spent, as the hosted API reports it: ``POST /api/v3/billings/search`` and
``POST /api/v3/user/usage_stats``, read from the ledger (``store/usage.py``).

No official client or doc page shows these two: their shapes are inferred from third-party clients
of the hosted API (a billing search by ``prediction_uuids``; a daily usage summed by date). Money is
USD, as everywhere in the API; a key sees only its own entries.
"""

from __future__ import annotations

import datetime as dt
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from openi2v.api.bodies import json_body
from openi2v.api.context import Context, api_key, ctx
from openi2v.api.schemas import envelope, iso
from openi2v.domain.billing import to_usd, unit_price_usd
from openi2v.domain.inputs import EPOCH_DAY, day_field, optional_str, page_fields, parse_flag, parse_ids, time_field
from openi2v.errors import InvalidInput
from openi2v.store.usage import DAY_S, Entry, Spent

router = APIRouter()
BILLING_TYPES = {"charge": "deduct", "credit": "recharge"}  # ledger kind -> billing_type ("deduct" as hosted)
KINDS = {name: kind for kind, name in BILLING_TYPES.items()}
DEFAULT_DAYS = 30  # usage_stats without a start_date: the 30 days ending on end_date


@router.post("/api/v3/billings/search")
async def billings(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """``{page, page_size, prediction_uuids, billing_type, start_time, end_time}``, all optional, to
    ``{page, page_size, total, items}``, newest first. An item: ``{uuid, billing_type ("deduct": a
    completed prediction's charge; ours "recharge": money added), price (USD, positive), created_at,
    updated_at, order: {uuid, state, status}, prediction: {uuid, model_uuid, status} or null}``. A
    prediction deleted since keeps its entry, with ``model_uuid`` null and status ``deleted``."""
    body = await json_body(request, required=False)
    page, page_size = page_fields(body)
    ids = None if body.get("prediction_uuids") in (None, []) else parse_ids(body, "prediction_uuids")
    c = ctx(request)
    total, entries = await run_in_threadpool(c.usage.entries, key_id, page, page_size, ids, _kind(body),
                                             time_field(body, "start_time"), time_field(body, "end_time"))
    return envelope({"page": page, "page_size": page_size, "total": total, "items": [_item(e) for e in entries]})


@router.post("/api/v3/user/usage_stats")
async def usage_stats(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """``{start_date, end_date, per_model_usage}`` (UTC dates, inclusive; default the 30 days ending
    today) to ``{daily_usage: [{date, amount, count}] (days with charges only), per_model_usage:
    [{model_uuid, model_type, total_cost, total_count, unit_price, last_used_date}] (when asked),
    summary: {total_cost, total_requests, success_requests}}``. Counted are charges, one per completed
    prediction: failed and cancelled ones cost nothing and are not counted."""
    body = await json_body(request, required=False)
    last = day_field(body, "end_date")
    last = int(time.time() // DAY_S) if last is None else last
    first = day_field(body, "start_date")
    first = max(last - DEFAULT_DAYS + 1, 1 - EPOCH_DAY) if first is None else first  # not before 0001-01-01
    if first > last:
        raise InvalidInput("start_date", f"must not be after end_date ({_date(last)})")
    c = ctx(request)
    days = await run_in_threadpool(c.usage.spent_by_day, key_id, first, last)
    models = await run_in_threadpool(c.usage.spent_by_model, key_id, first, last) if parse_flag(
        body, "per_model_usage") else []
    spent, count = sum(d.micros for d in days), sum(d.count for d in days)
    return envelope({
        "start_date": _date(first), "end_date": _date(last),
        "daily_usage": [{"date": _date(d.group), "amount": to_usd(d.micros), "count": d.count} for d in days],
        "per_model_usage": [_model(c, m) for m in models],
        "summary": {"total_cost": to_usd(spent), "total_requests": count, "success_requests": count},
    })


def _kind(body: dict) -> str | None:
    name = optional_str(body, "billing_type")
    if name is not None and name not in KINDS:
        raise InvalidInput("billing_type", f"must be one of {', '.join(KINDS)}")
    return KINDS.get(name)


def _item(e: Entry) -> dict:
    uuid, at = str(e.id), iso(e.created_at)
    prediction = None if e.prediction_id is None else {
        "uuid": e.prediction_id, "model_uuid": e.model, "status": e.status or "deleted"}
    return {"uuid": uuid, "billing_type": BILLING_TYPES.get(e.kind, e.kind), "price": to_usd(abs(e.amount_micros)),
            "created_at": at, "updated_at": at, "order": {"uuid": uuid, "state": "completed", "status": "completed"},
            "prediction": prediction}


def _model(c: Context, m: Spent) -> dict:
    known = m.group is not None  # None: predictions deleted since, whose model is no longer known
    return {"model_uuid": m.group, "model_type": "image-to-video" if known else None,
            "total_cost": to_usd(m.micros), "total_count": m.count,
            "unit_price": unit_price_usd(c.settings.price_for(m.group)) if known else None,
            "last_used_date": _date(int(m.last_at // DAY_S))}


def _date(day: int) -> str:
    return dt.date.fromordinal(day + EPOCH_DAY).isoformat()
