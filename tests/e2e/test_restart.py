"""kill -9 or Ctrl-C the server with a job mid-render and others queued: after a restart none is lost
or charged twice. The engine holds every render at 10 % until the test opens its gate, so the signal
always finds a job mid-render, however fast the machine."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


def gated_server(tmp_path: Path, **extra: str) -> tuple[Server, Path]:
    """A server whose engine holds each render at 10 % until the returned gate file exists."""
    gate = tmp_path / "gate"
    engines = json.dumps({KLING_MODEL: "tests.engine_fixtures:Gated"})
    return Server(tmp_path, workers=1, OPENI2V_ENGINES=engines, GATED_ENGINE_GATE=str(gate), **extra), gate


def submit(server: Server, h: dict, prompt: str, **body) -> str:
    image = pictures.data_uri(800, 600)
    return httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image, "prompt": prompt, **body},
                      headers=h).json()["data"]["id"]


def result(server: Server, h: dict, pid: str) -> dict:
    return httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]


def wait_until_rendering(server: Server, h: dict, pid: str) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
    while time.monotonic() < deadline:
        d = result(server, h, pid)
        if d["status"] == "processing" and d["progress"] > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"prediction {pid} never rendered: {d['status']} at {d['progress']} %")


def wait_until_finished(server: Server, h: dict, ids: list[str]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + 180  # a guard against a hang, not a speed limit
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(ids) - len(done)} of {len(ids)} predictions never finished")
        for pid in set(ids) - set(done):
            d = result(server, h, pid)
            if d["status"] in ("completed", "failed"):
                done[pid] = d
        time.sleep(0.2)
    return done


@pytest.mark.parametrize("api_processes", [1, 2])
def test_kill_9_mid_render_loses_nothing_and_charges_once(tmp_path, api_processes):
    # with 2 API processes the restart on the same port also proves none outlived the kill
    server, gate = gated_server(tmp_path, OPENI2V_API_PROCESSES=str(api_processes))
    server.start()
    try:
        key = server.new_key(10.0)
        h = {"Authorization": f"Bearer {key}"}
        ids = [submit(server, h, f"pan left {i}") for i in range(4)]
        wait_until_rendering(server, h, ids[0])
        assert [result(server, h, pid)["status"] for pid in ids[1:]] == ["created"] * 3  # queued behind it
        server.kill9()

        gate.touch()
        server.start()
        done = wait_until_finished(server, h, ids)
        assert [done[pid]["status"] for pid in ids] == ["completed"] * 4
        balance = httpx.get(f"{server.url}/api/v3/balance", headers=h).json()["data"]["balance"]
        assert balance == pytest.approx(10.0 - 4 * 0.35)
    finally:
        server.stop()


def stopped_whole(server: Server) -> None:
    """Wait for the server, then for every process of its group, to be gone."""
    group = server.proc.pid
    server.proc.wait(60)  # a guard against the shutdown hanging, not a speed limit
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return  # no process of the group is left
        time.sleep(0.1)
    raise AssertionError("processes of the server's group outlived Ctrl-C")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_whole_group_stops_an_idle_server(tmp_path, sig):
    server = Server(tmp_path, workers=2).start()
    time.sleep(1.0)  # the workers are waiting for jobs
    server.interrupt(sig)
    stopped_whole(server)


def test_ctrl_c_mid_render_stops_everything_and_hands_the_job_back(tmp_path):
    """SIGINT reaches every process of the group at once, as a terminal sends it."""
    server, gate = gated_server(tmp_path)
    server.start()
    try:
        key = server.new_key(10.0)
        h = {"Authorization": f"Bearer {key}"}
        pid = submit(server, h, "pan left", duration=10)
        wait_until_rendering(server, h, pid)
        server.interrupt()
        stopped_whole(server)
        assert f"prediction {pid}: worker stopping; back to the queue" in server.log.read_text()

        server.start()  # the gate still shut: a job claimed again is held, so it cannot have finished yet
        assert result(server, h, pid)["status"] in ("created", "processing")  # handed back, not failed
        gate.touch()
        assert wait_until_finished(server, h, [pid])[pid]["status"] == "completed"
        balance = httpx.get(f"{server.url}/api/v3/balance", headers=h).json()["data"]["balance"]
        assert balance == pytest.approx(10.0 - 0.70)
    finally:
        server.stop()
