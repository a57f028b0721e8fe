"""Webhook delivery: each API process sends what the outbox holds, signed, and retries.

The body is the bare prediction object (no envelope), as WaveSpeed sends it, on completed
and on failed. Headers follow Standard Webhooks: ``webhook-id`` (the prediction id, the same
on every retry, so receivers can de-duplicate), ``webhook-timestamp`` and
``webhook-signature: v3,<hex HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed by the key's
secret from ``GET /api/v3/webhook/secret`` with ``whsec_`` stripped, as WaveSpeed signs.
With ``OPENI2V_WEBHOOK_STANDARD_SIGNATURE`` the standard ``v1,<base64>`` entry (keyed by the
base64-decoded secret) is added, so the standardwebhooks and svix libraries verify it too.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import socket
import time

import httpx
from starlette.concurrency import run_in_threadpool

from openi2v import metrics
from openi2v.api.context import Context
from openi2v.api.schemas import prediction_data
from openi2v.domain.scenarios import SIMULATED_ERROR, Plan, SimulatedFailure
from openi2v.errors import OpenI2VError
from openi2v.outbound import NO_KEEPALIVE, OutboundGuard
from openi2v.store import Delivery, WebhookStore

log = logging.getLogger("openi2v.webhooks")
LEASE_S = 60.0


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = secret.removeprefix("whsec_").encode()
    return "v3," + hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


class WebhookSender:
    def __init__(self, c: Context) -> None:
        self.c = c
        self.store = WebhookStore(c.db)
        self.guard = OutboundGuard.from_settings(c.settings)  # webhook URLs are strangers' too
        self.owner = f"{socket.gethostname()}:{os.getpid()}:webhooks"

    async def run(self) -> None:
        """Until cancelled: send due deliveries, or wait a moment when none is due."""
        async with httpx.AsyncClient(timeout=self.c.settings.webhook_timeout_s, follow_redirects=False,
                                     trust_env=False, limits=NO_KEEPALIVE) as client:
            while True:
                try:
                    delivery = None
                    if await self.c.read(self.store.any_due):
                        delivery = await run_in_threadpool(self.store.claim, self.owner, LEASE_S)
                    if delivery is None:
                        await asyncio.sleep(self.c.settings.poll_s)
                    else:
                        await self.deliver(client, delivery)
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store may be briefly unavailable: never let the loop die
                    log.exception("webhook sender: unexpected error; retrying")
                    await asyncio.sleep(1.0)

    async def deliver(self, client: httpx.AsyncClient, d: Delivery) -> None:
        """One attempt; any error (a refused or malformed URL too) is a failed attempt, retried on
        the schedule of ``webhook_retry_delays`` and given up after its last entry."""
        try:
            # httpx's timeout bounds each read; this bounds the attempt (a receiver trickling bytes)
            async with asyncio.timeout(self.c.settings.webhook_timeout_s):
                resp = await client.send(await self._request(client, d), stream=True)
                await resp.aclose()  # the status is the answer: the body is never read
            error = "" if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"
        except TimeoutError:
            error = f"no answer within {self.c.settings.webhook_timeout_s:g} s"
        except OpenI2VError as exc:
            error = exc.message
        except Exception as exc:  # whatever it is, the schedule must end: never a retry for ever
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            metrics.WEBHOOKS.labels("delivered").inc()
            await run_in_threadpool(self.store.delivered, d.prediction_id)
            return
        delays = self.c.settings.webhook_retry_delays
        retry = delays[d.attempts - 1] if d.attempts <= len(delays) else None
        metrics.WEBHOOKS.labels("failed" if retry is not None else "gave_up").inc()
        log.warning("webhook for %s to %s failed (attempt %d): %s", d.prediction_id, d.url, d.attempts, error,
                    extra={"prediction_id": d.prediction_id})
        await run_in_threadpool(self.store.failed, d.prediction_id, error, retry)

    async def _request(self, client: httpx.AsyncClient, d: Delivery) -> httpx.Request:
        """The signed POST, addressed to the checked IP (the guard resolves: a thread's work)."""
        c = self.c
        p = await run_in_threadpool(c.predictions.get, d.prediction_id)
        if d.attempts <= Plan.from_json(p.scenario).webhook_failures:
            raise SimulatedFailure(SIMULATED_ERROR, 0)  # a scenario's failing receiver: retried as any
        body = json.dumps(prediction_data(p, p.webhook["base"], c.storage), separators=(",", ":")).encode()
        secret = await run_in_threadpool(c.accounts.webhook_secret, d.api_key_id)
        timestamp = int(time.time())
        signature = sign(secret, d.prediction_id, timestamp, body)
        if c.settings.webhook_standard_signature:
            signature += " " + sign_standard(secret, d.prediction_id, timestamp, body)
        headers = {"content-type": "application/json", "webhook-id": d.prediction_id,
                   "webhook-timestamp": str(timestamp), "webhook-signature": signature}
        return await run_in_threadpool(self.guard.request, client, "POST", "webhook", d.url, headers, body)
