"""Every scenario in the README's table, reached through the official wavespeed SDK (2.0.5, unchanged
but for base_url) against a real server started with OPENI2V_SANDBOX=true: the outcome each promises."""

from __future__ import annotations

import json

import httpx
import pytest
from wavespeed import Client

from openi2v.config import KLING_MODEL
from openi2v.store import Database, WebhookStore
from tests import pictures
from tests.e2e.server import Server
from tests.e2e.test_webhooks import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("sandbox"), OPENI2V_SANDBOX="true", OPENI2V_SYNC_TIMEOUT_S="2",
               OPENI2V_WEBHOOK_RETRY_DELAYS="0.2,0.2,0.2", OPENI2V_FETCH_ALLOW_PRIVATE="true").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    return server.new_key(10.0)


@pytest.fixture(scope="module")
def image(server, key):
    path = server.env["OPENI2V_DATA_DIR"] + "/photo.png"
    open(path, "wb").write(pictures.png(800, 600))
    return Client(api_key=key, base_url=server.url).upload(path)


@pytest.fixture
def client(server, key):
    return Client(api_key=key, base_url=server.url, retry_interval=0.2)


def raw(server, key, pid: str) -> httpx.Response:
    return httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers={"Authorization": f"Bearer {key}"})


def balance(server, key) -> float:
    return httpx.get(f"{server.url}/api/v3/balance", headers={"Authorization": f"Bearer {key}"}).json()["data"][
        "balance"]


def test_4000000001_failed(client, server, key, image):
    before = balance(server, key)
    with pytest.raises(RuntimeError, match=r"Prediction failed .*simulated failure \(scenario\)"):
        client.run(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000001}, poll_interval=0.2)
    assert balance(server, key) == pytest.approx(before)  # a failure costs nothing


def test_4000000002_nsfw_flag(client, server, key, image):
    before = balance(server, key)
    res = client.run_no_throw(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000002},
                              poll_interval=0.2)
    assert res["status"] == "completed" and len(res["outputs"]) == 1
    assert raw(server, key, res["task_id"]).json()["data"]["has_nsfw_contents"] == [True]
    assert balance(server, key) == pytest.approx(before - 0.35)  # charged as a real one


def test_4000000003_render_time_meets_the_sync_mode_timeout(client, server, key, image):
    with pytest.raises(Exception, match="5004|timed out|timeout") as e:
        client.run(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000003}, enable_sync_mode=True)
    pid = next(w for w in str(e.value).replace(")", " ").replace(":", " ").split() if len(w) == 32)
    d = raw(server, key, pid).json()["data"]
    assert d["status"] in ("created", "processing") and d["scenario"] == {"render_s": 30.0}
    httpx.post(f"{server.url}/api/v3/predictions/{pid}/cancel", headers={"Authorization": f"Bearer {key}"})


def test_4000000004_held_in_the_queue(client, server, key, image):
    with pytest.raises(TimeoutError):
        client.run(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000004}, timeout=1.0,
                   poll_interval=0.2)
    history = httpx.post(f"{server.url}/api/v3/predictions", json={"page_size": 1},
                         headers={"Authorization": f"Bearer {key}"}).json()["data"]["items"]
    d = raw(server, key, history[0]["id"]).json()["data"]
    assert d["status"] == "created" and 20 <= d["queue_position"] <= 30  # counting down from 30
    httpx.post(f"{server.url}/api/v3/predictions/{d['id']}/cancel", headers={"Authorization": f"Bearer {key}"})


def test_4000000005_a_429_on_submit(client, image):
    with pytest.raises(RuntimeError, match="HTTP 429"):
        client.run(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000005}, poll_interval=0.2)


def test_4000000006_transient_poll_errors_that_the_sdk_retries(client, server, key, image):
    out = client.run(KLING_MODEL, {"image": image, "prompt": "pan left", "seed": 4000000006}, poll_interval=0.2)
    assert out["outputs"][0].endswith(".mp4")
    log = server.log.read_text()
    history = httpx.post(f"{server.url}/api/v3/predictions", json={"page_size": 1},
                         headers={"Authorization": f"Bearer {key}"}).json()["data"]["items"]
    assert history[0]["scenario"] == {"poll_errors": 2}
    assert raw(server, key, history[0]["id"]).status_code == 200  # both spent: on the SDK's polls
    assert "Traceback" not in log


def test_4000000007_a_webhook_whose_first_deliveries_fail(server, key, image):
    receiver = Receiver()
    r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", params={"webhook": receiver.url},
                   json={"image": image, "prompt": "pan left", "seed": 4000000007},
                   headers={"Authorization": f"Bearer {key}"})
    pid = r.json()["data"]["id"]
    (headers, body), = receiver.wait(1)
    assert json.loads(body)["id"] == pid and json.loads(body)["status"] == "completed"
    receiver.settled_after(server, 1, pid)  # delivered at the third attempt: the first two failed on our side
    outbox = WebhookStore(Database(f"sqlite:///{server.env['OPENI2V_DATA_DIR']}/openi2v.db")).status(pid)
    assert outbox["attempts"] == 3 and outbox["delivered_at"] is not None


def test_a_key_whose_scenario_is_failing(server, image):
    failing = Client(api_key=server.new_key(1.0, scenario="failing"), base_url=server.url)
    with pytest.raises(RuntimeError, match=r"simulated failure \(scenario\)"):
        failing.run(KLING_MODEL, {"image": image, "prompt": "pan left"}, poll_interval=0.2)


def test_poll_errors_are_counted_once_across_api_processes_under_concurrent_polls(tmp_path):
    """The flaky scenario's first two polls of each prediction fail, however many processes and
    concurrent polls share them: the count is in the row, taken under its lock."""
    from concurrent.futures import ThreadPoolExecutor

    s = Server(tmp_path, workers=0, OPENI2V_API_PROCESSES="2").start()  # no worker: the polls find it queued
    try:
        h = {"Authorization": f"Bearer {s.new_key(10.0, scenario='flaky')}"}
        ids = [httpx.post(f"{s.url}/api/v3/{KLING_MODEL}", headers=h, json={
            "image": pictures.data_uri(400, 300), "prompt": f"pan left {i}"}).json()["data"]["id"] for i in range(6)]
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(
                lambda pid: (pid, httpx.get(f"{s.url}/api/v3/predictions/{pid}/result", headers=h).status_code),
                [pid for pid in ids for _ in range(20)]))
        for pid in ids:
            codes = sorted(code for p, code in answers if p == pid)
            assert codes == [200] * 18 + [429, 503], (pid, codes)
    finally:
        s.stop()
