"""Balance, the model list with input schemas, price quotes and the webhook secret."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from openi2v.api.bodies import json_body
from openi2v.api.context import api_key, ctx
from openi2v.api.schemas import envelope
from openi2v.domain.billing import billed_seconds, price_micros, to_usd, unit_price_usd
from openi2v.domain.inputs import REQUEST_SCHEMA, parse_duration
from openi2v.errors import InvalidInput, NotFound

router = APIRouter()


@router.get("/api/v3/balance")
def balance(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """As hosted; ours: ``scenario``, when the key's predictions are simulated (the playground labels it)."""
    accounts = ctx(request).accounts
    data = {"balance": to_usd(accounts.balance(key_id)), "currency": "USD"}
    if scenario := accounts.scenario(key_id):
        data["scenario"] = scenario
    return envelope(data)


@router.get("/api/v3/account/balance")
def balance_alias(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    return balance(request, key_id)


@router.get("/api/v3/models")
def models(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    c = ctx(request)
    return envelope([{
        "model_id": model_id,
        "name": model_id,
        "description": model.description,
        "engine": model.engine,
        "type": "image-to-video",
        "base_price": c.settings.price_for(model_id),
        "api_schema": {"api_schemas": [{"type": "model_run", "method": "POST", "api_path": f"/api/v3/{model_id}",
                                        "request_schema": REQUEST_SCHEMA}]},
    } for model_id, model in c.models.items()])


@router.post("/api/v3/model/pricing")
@router.post("/api/v3/model/price")
async def pricing(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    c = ctx(request)
    body = await json_body(request, required=True)
    model_id = body.get("model_id") or body.get("model")
    if not isinstance(model_id, str):
        raise InvalidInput("model_id", "is required: a model id (a string), as GET /api/v3/models lists them")
    if model_id not in c.models:
        raise NotFound(f"model not found: {model_id}")
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise InvalidInput("inputs", "must be a JSON object")
    duration = parse_duration(inputs.get("duration"))
    per_5s = c.settings.price_for(model_id)
    price = to_usd(price_micros(per_5s, duration))
    return envelope({"model_id": model_id, "unit_price": unit_price_usd(per_5s), "unit": "second",
                     "billed_seconds": billed_seconds(duration), "price": price, "discounted_price": price,
                     "currency": "USD"})


@router.get("/api/v3/webhook/secret")
async def webhook_secret(request: Request, key_id: int = Depends(api_key)) -> JSONResponse:
    """The secret that signs this key's webhooks (``whsec_`` + hex; strip the prefix to verify)."""
    c = ctx(request)
    return envelope({"secret": await run_in_threadpool(c.accounts.webhook_secret, key_id)})
