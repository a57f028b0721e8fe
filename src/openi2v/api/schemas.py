"""Wire shapes: the v3 envelope and the prediction object, exactly as the clients read them."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from fastapi.responses import JSONResponse

from openi2v.domain.billing import to_usd
from openi2v.domain.inputs import NOTES
from openi2v.domain.prediction import Prediction, Status
from openi2v.storage import UPLOADS, Storage

MAX_OUTPUT_BYTES = 2**31  # an output sent back as base64 (a 10 s 1080p clip is tens of MB)


class V3Response(JSONResponse):
    """JSON as UTF-8; text that cannot be UTF-8 (a lone surrogate stored before inputs were checked
    for it) is sent escaped (``\\ud800``) instead of failing the answer."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def envelope(data: Any, code: int = 200, message: str = "success") -> JSONResponse:
    """The 2xx answer. Returned as a ready response: the data is plain JSON already, so
    FastAPI's response-model encoding (a third of a poll's cost) is skipped."""
    return V3Response({"code": code, "message": message, "data": data}, status_code=code)


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def prediction_data(p: Prediction, base: str, storage: Storage, queue_position: int | None = None) -> dict:
    """The ``data`` object of submit, result and history answers.

    Hosted-API fields first; ours (seed, progress, queue_position, cost, expires_at, details with the
    notes on inputs read otherwise than sent) are additive. Once retention has removed the files, output URLs stay (fetching one is a 410 that
    says so) and base64 outputs are empty.
    """
    if p.base64_output:
        outputs = _b64(p.outputs, storage)
    else:
        outputs = [storage.url(o, base, p.expires_at) for o in p.outputs]
    data: dict[str, Any] = {
        "id": p.id,
        "model": p.model,
        "outputs": outputs,
        "urls": {"get": f"{base}api/v3/predictions/{p.id}/result"},
        "has_nsfw_contents": list(p.nsfw),
        "status": p.status.value,
        "created_at": iso(p.created_at),
        "error": p.error or "",
        "executionTime": p.inference_ms,
        "timings": {"inference": p.inference_ms},
        "seed": p.seed,
        "progress": p.progress,
        "cost": to_usd(p.price_micros) if p.status.billable else 0.0,
        "input": _public_inputs(p.inputs, base),
        "expires_at": iso(p.expires_at) if p.expires_at else None,
    }
    if p.status is Status.FAILED and p.error_code:
        data["code"] = p.error_code
    if queue_position is not None and not p.status.terminal:
        data["queue_position"] = queue_position
    if p.scenario:  # ours: what a scenario simulated, so that nobody takes it for a real outcome
        data["scenario"] = {k: v for k, v in p.scenario.items() if k != "polls_failed"}
    notes = p.inputs.get(NOTES)  # stored with the inputs at submit: the worker's details replace, not add
    if p.details or notes:
        details = dict(p.details)
        if "poster" in details:
            details["poster"] = storage.url(details["poster"], base, p.expires_at)
        if notes:
            details["notes"] = notes
        data["details"] = details
    return data


def _b64(outputs: list[str], storage: Storage) -> list[str]:
    """The outputs' bytes as base64; none once retention has removed them (or is removing them now)."""
    files = [storage.read(key, MAX_OUTPUT_BYTES) for key in outputs]
    return [] if None in files else [base64.b64encode(data).decode() for data in files]


def _public_inputs(inputs: dict, base: str) -> dict:
    """Inputs as the user can reuse them: our stored upload paths become absolute URLs (notes go to details)."""
    return {k: (base + v.lstrip("/") if isinstance(v, str) and v.startswith(f"/{UPLOADS}/") else v)
            for k, v in inputs.items() if k != NOTES}
