"""kill -9 the server with jobs queued and running: after a restart none is lost or charged twice."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


def submit(server: Server, h: dict, prompt: str, **body) -> str:
    image = pictures.data_uri(800, 600)
    return httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image, "prompt": prompt, **body},
                      headers=h).json()["data"]["id"]


def wait_until_rendering(server: Server, h: dict, pid: str) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
    while time.monotonic() < deadline:
        d = httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]
        if d["status"] == "processing" and d["progress"] > 0:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("api_processes", [1, 2])
def test_kill_9_loses_nothing_and_charges_once(tmp_path, api_processes):
    # with 2 API processes the restart on the same port also proves none outlived the kill
    server = Server(tmp_path, workers=1, OPENI2V_API_PROCESSES=str(api_processes)).start()
    key = server.new_key(10.0)
    h = {"Authorization": f"Bearer {key}"}
    ids = [submit(server, h, f"zoom in {i}") for i in range(4)]
    wait_until_rendering(server, h, ids[0])
    server.kill9()

    server.start()
    try:
        results = {}
        deadline = time.monotonic() + 180
        while len(results) < len(ids) and time.monotonic() < deadline:
            for pid in ids:
                d = httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]
                if d["status"] in ("completed", "failed"):
                    results[pid] = d
            time.sleep(0.2)
        assert {d["status"] for d in results.values()} == {"completed"} and len(results) == 4
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


def test_ctrl_c_stops_everything_and_hands_the_running_job_back(tmp_path):
    """SIGINT reaches every process of the group at once, as a terminal sends it."""
    server = Server(tmp_path, workers=1).start()
    key = server.new_key(10.0)
    h = {"Authorization": f"Bearer {key}"}
    pid = submit(server, h, "pan left", duration=10)
    wait_until_rendering(server, h, pid)
    server.interrupt()
    stopped_whole(server)
    assert f"prediction {pid}: worker stopping; back to the queue" in server.log.read_text()

    server.start()
    try:
        d = httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]
        assert d["status"] in ("created", "processing")  # handed back, not failed
        deadline = time.monotonic() + 120
        while d["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.2)
            d = httpx.get(f"{server.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]
        assert d["status"] == "completed"
    finally:
        server.stop()
