"""kill -9 the server with jobs queued and running: after a restart none is lost or charged twice."""

from __future__ import annotations

import time

import httpx
import pytest

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("api_processes", [1, 2])
def test_kill_9_loses_nothing_and_charges_once(tmp_path, api_processes):
    # with 2 API processes the restart on the same port also proves none outlived the kill
    server = Server(tmp_path, workers=1, OPENI2V_API_PROCESSES=str(api_processes)).start()
    key = server.new_key(10.0)
    h = {"Authorization": f"Bearer {key}"}
    image = "data:image/png;base64," + __import__("base64").b64encode(pictures.png(800, 600)).decode()
    ids = [httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image, "prompt": f"zoom in {i}"},
                      headers=h).json()["data"]["id"] for i in range(4)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until one is mid-render
        d = httpx.get(f"{server.url}/api/v3/predictions/{ids[0]}/result", headers=h).json()["data"]
        if d["status"] == "processing" and d["progress"] > 0:
            break
        time.sleep(0.05)
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
