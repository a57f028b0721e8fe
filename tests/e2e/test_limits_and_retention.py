"""Per-key limits and retention on a real server, with the official wavespeed SDK as the client:
a submit over the rate is an HTTP 429 the SDK reports; the server's own sweeper deletes an
expired output, whose URL then answers 410 saying so; ``openi2v sweep`` does the same from cron."""

from __future__ import annotations

import datetime as dt
import time

import httpx
import pytest
from wavespeed import Client

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e
SECOND = 1 / 86400  # in days, as OPENI2V_RETENTION_DAYS counts


def wait_for(check, what: str, limit_s: float = 120):
    deadline = time.monotonic() + limit_s  # a guard against a hang, not a speed limit
    while not (value := check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.1)
    return value


def test_the_sdk_meets_the_rate_limit_and_the_sweeper(tmp_path):
    server = Server(tmp_path / "data", OPENI2V_SUBMITS_PER_MINUTE="2", OPENI2V_RETENTION_DAYS=str(2 * SECOND),
                    OPENI2V_SWEEP_INTERVAL_S="0.2").start()
    try:
        limited = server.new_key(10.0)
        body = {"image": pictures.data_uri(), "prompt": "pan left"}
        for _ in range(2):  # a minute's worth, sent at once: nothing waits for a render in between
            r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json=body, headers={"Authorization": f"Bearer {limited}"})
            assert r.status_code == 200, r.text
        client = Client(api_key=limited, base_url=server.url)
        with pytest.raises(RuntimeError, match=r"HTTP 429: .*rate limit: at most 2 submits per minute per API key"):
            client.run(KLING_MODEL, body, poll_interval=0.2)

        out = Client(api_key=server.new_key(10.0), base_url=server.url).run(KLING_MODEL, body, poll_interval=0.2)
        gone = wait_for(lambda: (r := httpx.get(out["outputs"][0])).status_code == 410 and r, "the output expired")
        assert gone.json()["message"].startswith("this file expired at ")
        token, name = out["outputs"][0].rsplit("/", 2)[1:]
        assert not (tmp_path / "data" / "outputs" / token / name).exists()
    finally:
        server.stop()


def test_openi2v_sweep_removes_what_has_expired(tmp_path):
    server = Server(tmp_path / "data", OPENI2V_RETENTION_DAYS=str(SECOND), OPENI2V_SWEEP_INTERVAL_S="3600").start()
    try:
        key = server.new_key(10.0)
        out = Client(api_key=key, base_url=server.url).run(
            KLING_MODEL, {"image": pictures.data_uri(), "prompt": "zoom in"}, poll_interval=0.2)
        assert httpx.get(out["outputs"][0]).status_code == 200
        [made] = httpx.post(f"{server.url}/api/v3/predictions", json={},
                            headers={"Authorization": f"Bearer {key}"}).json()["data"]["items"]
        wait_for(lambda: time.time() > _epoch(made["expires_at"]), "the output's time to pass")
        assert cli(server.env, "sweep").strip() == "removed the files of 1 expired prediction(s) and 1 upload(s)"
        assert httpx.get(out["outputs"][0]).status_code == 410
    finally:
        server.stop()


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
