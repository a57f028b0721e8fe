"""Webhooks from a real server to a real receiver on loopback: signed, bare, on success and failure, retried.

The server retries a failed delivery once, RETRY_DELAY_S later (OPENI2V_WEBHOOK_RETRY_DELAYS). That
no other call is coming is read from the server's outbox: a delivery recorded as delivered or given
up is never sent again."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from openi2v.config import KLING_MODEL
from openi2v.store import Database, WebhookStore
from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e
RETRY_DELAY_S = 1


class Receiver:
    """Records every POST; answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(500 if len(receiver.calls) <= receiver.fail_first else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, seconds: float = 60) -> list[tuple[dict, bytes]]:
        deadline = time.monotonic() + seconds  # a guard against a hang, not a speed limit
        while len(self.calls) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= n, f"{len(self.calls)} webhook calls, expected {n}"
        return self.calls

    def settled_after(self, server: Server, n: int, *ids: str) -> None:
        """Once the server has recorded each delivery as delivered or given up (its schedule over),
        exactly ``n`` calls came."""
        outbox = WebhookStore(Database(f"sqlite:///{server.env['OPENI2V_DATA_DIR']}/openi2v.db"))
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while not all(_settled(outbox.status(pid)) for pid in ids):
            assert time.monotonic() < deadline, [outbox.status(pid) for pid in ids]
            time.sleep(0.05)
        assert len(self.calls) == n, f"{len(self.calls)} webhook calls, expected {n}"


def _settled(status: dict | None) -> bool:
    return status is not None and (status["delivered_at"] is not None or status["gave_up_at"] is not None)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("webhooks"), workers=1, OPENI2V_FETCH_ALLOW_PRIVATE="true",
               OPENI2V_WEBHOOK_RETRY_DELAYS=str(RETRY_DELAY_S)).start()
    yield s
    s.stop()


def submit(server, key, webhook, **body):
    image = pictures.data_uri()
    r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", params={"webhook": webhook},
                   json={"image": image, "prompt": "zoom in", **body}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]["id"]


def verify(secret: str, headers: dict, body: bytes) -> None:
    """What a receiver does, written from WaveSpeed's documentation, not from our code."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    want = hmac.new(secret.removeprefix("whsec_").encode(), signed, hashlib.sha256).hexdigest()
    assert headers["webhook-signature"] == f"v3,{want}"
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300


def test_completed_and_failed_predictions_post_a_signed_bare_prediction(server):
    key = server.new_key(5.0)
    h = {"Authorization": f"Bearer {key}"}
    secret = httpx.get(f"{server.url}/api/v3/webhook/secret", headers=h).json()["data"]["secret"]
    assert secret.startswith("whsec_")
    receiver = Receiver()
    done = submit(server, key, receiver.url, seed=5)
    broken = submit(server, key, receiver.url, image="http://127.0.0.1:9/missing.png")
    calls = receiver.wait(2)
    by_id = {json.loads(body)["id"]: (headers, body) for headers, body in calls}
    assert set(by_id) == {done, broken}
    for pid, (headers, body) in by_id.items():
        verify(secret, headers, body)
        assert headers["webhook-id"] == pid and headers["content-type"] == "application/json"
        event = json.loads(body)
        assert "code" not in event or event["code"] != 200  # the bare object, not the {code, message, data} envelope
        assert event["urls"]["get"] == f"{server.url}/api/v3/predictions/{pid}/result"
    ok = json.loads(by_id[done][1])
    assert ok["status"] == "completed" and ok["error"] == "" and ok["seed"] == 5
    assert httpx.get(ok["outputs"][0]).headers["content-type"] == "video/mp4"
    failed = json.loads(by_id[broken][1])
    assert failed["status"] == "failed" and failed["outputs"] == [] and "could not download" in failed["error"]
    receiver.settled_after(server, 2, done, broken)  # both answered 200: neither is sent again


@pytest.mark.parametrize("fail_first", [1, 1000], ids=["then-answered", "never-answered"])
def test_a_failed_delivery_is_retried_once_with_the_same_webhook_id(server, fail_first):
    key = server.new_key(5.0)
    receiver = Receiver(fail_first=fail_first)
    pid = submit(server, key, receiver.url)
    first, second = receiver.wait(2)[:2]
    assert first[0]["webhook-id"] == second[0]["webhook-id"] == pid
    assert json.loads(first[1]) == json.loads(second[1])
    receiver.settled_after(server, 2, pid)  # delivered, or the schedule's one retry spent: not sent again


def test_webhook_rules_at_submit(server):
    key = server.new_key(5.0)
    h = {"Authorization": f"Bearer {key}"}
    image = pictures.data_uri()
    r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", params={"webhook": "ftp://example.com/x"},
                   json={"image": image, "prompt": "x"}, headers=h)
    assert r.status_code == 400 and r.json()["message"] == "webhook: must be an http(s) URL of at most 2048 characters"
    r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", params={"webhook": "https://example.com/x"},
                   json={"image": image, "prompt": "x", "enable_base64_output": True}, headers=h)
    assert r.status_code == 400 and "does not support base64 output" in r.json()["message"]
