"""Scenarios through the raw API: each reserved seed and a key's scenario give the outcome the README's
table promises, billed as a real one; without a scenario, nothing changes."""

from __future__ import annotations

import threading
import time

import pytest

from openi2v.store import predictions as store_module
from tests import pictures
from tests.integration.test_api import Api


def body(seed: int | None = None, **extra) -> dict:
    b = {"image": pictures.data_uri(400, 300), "prompt": "pan left", **extra}
    return b if seed is None else {**b, "seed": seed}


@pytest.fixture
def sandbox(settings):
    return Api(settings.model_copy(update={"sandbox": True}))


def ended(api: Api, pid: str) -> dict:
    api.drain()
    return api.result(pid).json()["data"]


def test_4000000001_fails_with_its_message_and_costs_nothing(sandbox):
    pid = sandbox.submit(body(4000000001)).json()["data"]["id"]
    d = ended(sandbox, pid)
    assert (d["status"], d["error"], d["code"], d["outputs"]) == ("failed", "simulated failure (scenario)", 1403, [])
    assert d["scenario"] == {"fail": True} and sandbox.balance() == pytest.approx(10.0)


def test_4000000002_completes_flagged_nsfw_and_is_charged(sandbox):
    pid = sandbox.submit(body(4000000002)).json()["data"]["id"]
    d = ended(sandbox, pid)
    assert (d["status"], d["has_nsfw_contents"], len(d["outputs"])) == ("completed", [True], 1)
    assert sandbox.balance() == pytest.approx(10.0 - 0.35)


def test_4000000003_renders_for_a_while_with_progress(sandbox):
    pid = sandbox.submit(body(4000000003)).json()["data"]["id"]
    worker = threading.Thread(target=sandbox.worker.run_once)
    worker.start()
    try:
        seen = set()
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while len(seen) < 2:  # the progress bar moves while the render takes its 30 s
            d = sandbox.result(pid).json()["data"]
            assert d["status"] in ("created", "processing") and time.monotonic() < deadline
            if d["status"] == "processing" and 0 < d["progress"] < 90:
                seen.add(d["progress"])
            time.sleep(0.05)
        assert d["scenario"] == {"render_s": 30.0}
    finally:
        sandbox.client.post(f"/api/v3/predictions/{pid}/cancel", headers=sandbox.h())  # no need to wait 30 s
        worker.join()
    assert sandbox.result(pid).json()["data"]["status"] == "cancelled"


def test_4000000004_is_held_in_the_queue_counting_down(sandbox, monkeypatch):
    times = [store_module.now()]
    monkeypatch.setattr(store_module, "now", lambda: times[0])  # the store's clock, stopped
    pid = sandbox.submit(body(4000000004)).json()["data"]["id"]
    assert sandbox.result(pid).json()["data"]["queue_position"] == 30
    times[0] += 12
    assert sandbox.result(pid).json()["data"]["queue_position"] == 18  # counting down
    assert not sandbox.worker.run_once()  # no worker may start it yet
    other = sandbox.submit(body()).json()["data"]["id"]
    assert sandbox.worker.run_once() and sandbox.result(other).json()["data"]["status"] == "completed"
    times[0] += 18.5
    assert sandbox.result(pid).json()["data"]["queue_position"] == 0
    assert ended(sandbox, pid)["status"] == "completed"


def test_4000000005_is_a_429_on_submit_that_stores_nothing(sandbox):
    r = sandbox.submit(body(4000000005))
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json() == {"code": 429, "message": "rate limit exceeded (simulated by a scenario)", "data": None}
    history = sandbox.client.post("/api/v3/predictions", json={}, headers=sandbox.h()).json()["data"]
    assert history["total"] == 0 and sandbox.balance() == pytest.approx(10.0)


def test_4000000006_fails_two_polls_with_503_then_429_then_answers(sandbox):
    pid = sandbox.submit(body(4000000006)).json()["data"]["id"]
    first, second, third = (sandbox.result(pid) for _ in range(3))
    assert (first.status_code, first.headers["retry-after"]) == (503, "1")
    assert first.json()["message"] == "service temporarily unavailable (simulated by a scenario): retry"
    assert second.status_code == 429 and third.status_code == 200
    assert ended(sandbox, pid)["status"] == "completed"


def test_without_the_sandbox_a_reserved_seed_is_just_a_seed(api):
    pid = api.submit(body(4000000001)).json()["data"]["id"]
    d = ended(api, pid)
    assert d["status"] == "completed" and d["seed"] == 4000000001 and "scenario" not in d


def test_a_keys_scenario_governs_its_predictions_only_and_one_seed_gives_one_outcome(api):
    from openi2v.store import AccountStore

    _, failing = AccountStore(api.db).create_key("failing", 10_000_000, "failing")
    _, half = AccountStore(api.db).create_key("half", 10_000_000, "fail=0.5")
    mine = api.submit(body(11), key=failing).json()["data"]["id"]
    real = api.submit(body(11)).json()["data"]["id"]  # another key, same seed: real
    halves = {seed: api.submit(body(seed), key=half).json()["data"]["id"] for seed in range(8)}
    again = {seed: api.submit(body(seed), key=half).json()["data"]["id"] for seed in range(8)}
    api.drain()
    assert api.result(mine, key=failing).json()["data"]["status"] == "failed"
    assert api.result(real).json()["data"]["status"] == "completed"
    first = {s: api.result(pid, key=half).json()["data"]["status"] for s, pid in halves.items()}
    second = {s: api.result(pid, key=half).json()["data"]["status"] for s, pid in again.items()}
    assert first == second and set(first.values()) == {"failed", "completed"}
    assert api.client.get("/api/v3/balance", headers=api.h(failing)).json()["data"] == {
        "balance": 10.0, "currency": "USD", "scenario": "failing"}
    assert "scenario" not in api.client.get("/api/v3/balance", headers=api.h()).json()["data"]
