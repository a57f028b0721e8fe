"""Cancel: a queued prediction ends at once, a running one at its engine's next check; either way
``cancelled``, nothing charged, the quote released, the webhook queued. An ended one is a 409."""

from __future__ import annotations

import threading
import time

import pytest

from openi2v.config import KLING_MODEL
from openi2v.store import WebhookStore
from openi2v.worker import loop
from openi2v.worker.loop import Worker
from tests import pictures
from openi2v.engines.registry import build_engines
from tests.engine_fixtures import Gated, HeldUntilCancelled
from tests.integration.test_api import Api


def submit(api: Api, **params) -> str:
    r = api.client.post(f"/api/v3/{KLING_MODEL}", params=params,
                        json={"image": pictures.data_uri(), "prompt": "pan left"}, headers=api.h())
    assert r.status_code == 200, r.text
    return r.json()["data"]["id"]


def cancel(api: Api, pid: str, key: str | None = None):
    return api.client.post(f"/api/v3/predictions/{pid}/cancel", headers=api.h(key))


def test_a_queued_prediction_is_cancelled_at_once_and_costs_nothing(api):
    pid = submit(api, webhook="https://example.com/hook")
    assert api.balance() == pytest.approx(10.0 - 0.35)  # the quote is held while it waits
    r = cancel(api, pid)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["status"], data["cost"], data["outputs"]) == ("cancelled", 0.0, [])
    assert api.balance() == pytest.approx(10.0)  # released
    assert not api.worker.run_once()  # nothing left to run
    assert api.result(pid).json()["data"]["status"] == "cancelled"
    assert WebhookStore(api.db).status(pid)["url"] == "https://example.com/hook"  # its webhook is queued
    history = api.client.post("/api/v3/predictions", json={"status": "cancelled"}, headers=api.h()).json()["data"]
    assert [p["id"] for p in history["items"]] == [pid]


def test_a_running_prediction_stops_at_its_engines_next_check(api, tmp_path, monkeypatch):
    monkeypatch.setenv("GATED_ENGINE_GATE", str(tmp_path / "never-opened"))  # it holds mid-render until cancelled
    worker = Worker(api.settings, api.db, {KLING_MODEL: Gated()})
    pid = submit(api)
    running = threading.Thread(target=worker.run_once, daemon=True)
    running.start()
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
    while api.result(pid).json()["data"]["progress"] == 0:
        assert time.monotonic() < deadline, "the job never started rendering"
        time.sleep(0.05)
    assert cancel(api, pid).json()["data"]["status"] == "cancelled"
    running.join(60)
    assert not running.is_alive(), "the engine did not stop"  # it would hold for ever: the gate never opens
    data = api.result(pid).json()["data"]
    assert (data["status"], data["cost"], data["outputs"]) == ("cancelled", 0.0, [])
    assert api.balance() == pytest.approx(10.0)


def test_a_cancel_reaches_the_engine_between_heartbeats(settings, tmp_path, monkeypatch):
    """The engine's own checks read the row: with a heartbeat that never comes in the test's time, the
    cancelled render still stops."""
    api = Api(settings.model_copy(update={"heartbeat_s": 3600.0, "lease_s": 7200.0}))
    monkeypatch.setenv("GATED_ENGINE_GATE", str(tmp_path / "never-opened"))
    worker = Worker(api.settings, api.db, {KLING_MODEL: Gated()})
    pid = submit(api)
    running = threading.Thread(target=worker.run_once, daemon=True)
    running.start()
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
    while api.app.state.ctx.predictions.get(pid).status.value != "processing":
        assert time.monotonic() < deadline, "the job was never claimed"
        time.sleep(0.05)
    assert cancel(api, pid).json()["data"]["status"] == "cancelled"
    running.join(120)
    assert not running.is_alive(), "the engine did not stop"
    api.client.close()


def test_the_camera_engine_stops_at_its_next_frame_after_a_cancel(api):
    engine = HeldUntilCancelled(build_engines(api.settings)[KLING_MODEL])
    worker = Worker(api.settings, api.db, {KLING_MODEL: engine})
    pid = submit(api)
    running = threading.Thread(target=worker.run_once, daemon=True)
    running.start()
    assert engine.started.wait(120), "the render never started"
    assert cancel(api, pid).json()["data"]["status"] == "cancelled"
    running.join(120)
    assert not running.is_alive()
    assert engine.ended == "Cancelled" and engine.reports_after <= 1  # stopped at the next frame's check
    data = api.result(pid).json()["data"]
    assert (data["status"], data["cost"], data["outputs"]) == ("cancelled", 0.0, [])
    assert api.balance() == pytest.approx(10.0)
    outputs = api.settings.data_dir / "outputs"
    assert not outputs.exists() or not any(outputs.rglob("*"))


def test_cancelling_an_ended_prediction_is_409_naming_its_status(api):
    pid = submit(api)
    api.drain()
    r = cancel(api, pid)
    assert r.status_code == 409
    assert r.json()["message"] == f"prediction {pid} has already ended: completed"
    assert api.balance() == pytest.approx(10.0 - 0.35)  # charged once, as completed
    assert cancel(api, pid).status_code == 409  # and again


def test_another_keys_prediction_cannot_be_cancelled(api):
    pid = submit(api)
    other = api.new_key(5.0)
    assert cancel(api, pid, other).status_code == 404
    assert cancel(api, "0" * 32).status_code == 404
    assert api.result(pid).json()["data"]["status"] == "created"


def test_a_render_that_ends_after_its_cancel_is_not_recorded_charged_or_kept(api, tmp_path, monkeypatch, caplog):
    """The engine misses the cancel (its gate opens at the same moment) and finishes: the store refuses
    the result, nothing is charged, and the worker removes the files it had stored."""
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATED_ENGINE_GATE", str(gate))
    engine = Gated()
    engine.load()
    worker = Worker(api.settings, api.db, {KLING_MODEL: engine})
    pid = submit(api)
    claimed = api.app.state.ctx.predictions
    p = worker.store.claim(worker.owner, [KLING_MODEL], api.settings.lease_s)
    assert cancel(api, pid).json()["data"]["status"] == "cancelled"
    gate.touch()
    monkeypatch.setattr(loop._Heartbeat, "_loop", lambda self: None)  # the cancel is not noticed in time
    caplog.set_level("INFO")
    worker._process(p)
    assert f"prediction {pid}: no longer ours" in caplog.text  # it rendered, and the store refused the result
    assert claimed.get(pid).status.value == "cancelled" and api.balance() == pytest.approx(10.0)
    outputs = api.settings.data_dir / "outputs"
    assert not outputs.exists() or not any(outputs.rglob("*.mp4"))
