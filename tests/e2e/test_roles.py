"""Process roles: the API alone (``serve --workers 0``) and workers alone (``openi2v worker``), as on
separate machines; a worker drains on SIGTERM; /metrics adds up every process's figures."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server, Workers
from tests.e2e.test_restart import result, submit, wait_until_finished, wait_until_rendering

pytestmark = pytest.mark.e2e
GATED = json.dumps({KLING_MODEL: "tests.engine_fixtures:Gated"})


def samples(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def wait_for_line(workers: Workers, text: str) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
    while text not in workers.log.read_text():
        assert time.monotonic() < deadline, f"{text!r} never logged: {workers.log.read_text()}"
        time.sleep(0.05)


def test_api_and_workers_apart_and_a_drain_that_finishes_or_hands_back(tmp_path):
    gate = tmp_path / "gate"
    api = Server(tmp_path, workers=0, OPENI2V_ENGINES=GATED, GATED_ENGINE_GATE=str(gate)).start()
    env = dict(api.env, OPENI2V_LOG_FORMAT="json")
    draining = Workers(dict(env, OPENI2V_DRAIN_S="120"), log=tmp_path / "workers-1.log")
    quick = Workers(dict(env, OPENI2V_DRAIN_S="0"), log=tmp_path / "workers-2.log")
    try:
        h = {"Authorization": f"Bearer {api.new_key(10.0)}"}
        assert httpx.get(api.url + "/readyz").status_code == 200
        first = submit(api, h, "pan left")
        assert result(api, h, first)["status"] == "created"  # no worker yet: the API runs none

        draining.start()
        wait_until_rendering(api, h, first)
        second = submit(api, h, "pan right")
        running = samples(api.url)
        assert running[("openi2v_running", (("model", KLING_MODEL),))] == 1
        assert running[("openi2v_queue_depth", (("model", KLING_MODEL),))] == 1

        # SIGTERM with OPENI2V_DRAIN_S: the job in hand may still finish; nothing more is claimed
        draining.signal(signal.SIGTERM)
        wait_for_line(draining, "draining")  # the worker knows before the job can end
        gate.touch()
        assert wait_until_finished(api, h, [first])[first]["status"] == "completed"
        assert draining.wait() == 0
        assert result(api, h, second)["status"] == "created"
        with pytest.raises(httpx.ConnectError):  # its port went with it
            httpx.get(draining.url + "/metrics")

        # without a drain time, the job in hand goes straight back to the queue
        gate.unlink()
        quick.start()
        wait_until_rendering(api, h, second)
        figures = samples(quick.url)  # the worker's own port: its child process's figures, added up
        assert figures[("openi2v_queue_wait_seconds_count", (("model", KLING_MODEL),))] == 1
        quick.signal(signal.SIGTERM)
        assert quick.wait() == 0
        assert result(api, h, second)["status"] == "created"
        lines = [json.loads(line) for line in quick.log.read_text().splitlines() if line.startswith("{")]
        back = [line for line in lines if line["message"].endswith("worker stopping; back to the queue")]
        assert back and back[0]["prediction_id"] == second
        claimed = [line for line in lines if "claimed by" in line["message"]]
        assert claimed and claimed[0]["prediction_id"] == second
    finally:
        for process in (draining, quick, api):
            process.stop()


def test_metrics_add_up_every_process_of_one_server(tmp_path):
    """Two API processes and a worker beside them: whichever process answers a scrape, it counts the
    worker's renders and every API process's events."""
    server = Server(tmp_path, workers=1, OPENI2V_API_PROCESSES="2").start()
    try:
        h = {"Authorization": f"Bearer {server.new_key(10.0)}"}
        ids = [submit(server, h, "pan left") for _ in range(2)]
        assert all(d["status"] == "completed" for d in wait_until_finished(server, h, ids).values())
        for _ in range(6):  # several scrapes: the connection lands on either API process
            figures = samples(server.url)
            assert figures[("openi2v_inference_seconds_count", (("model", KLING_MODEL),))] == 2
            assert figures[("openi2v_predictions_ended_total", (("model", KLING_MODEL), ("status", "completed")))] == 2
    finally:
        server.stop()


def worker_processes(parent: int) -> list[int]:
    """The worker processes ``openi2v worker`` spawned (not multiprocessing's resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == parent and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.append(int(stat.parent.name))
    return out


def test_a_worker_process_that_dies_is_started_again_and_takes_the_next_job(tmp_path):
    api = Server(tmp_path, workers=0, OPENI2V_ENGINES=json.dumps({KLING_MODEL: "instant"})).start()
    workers = Workers(api.env, "--concurrency", "1", log=tmp_path / "workers.log")
    try:
        workers.start()
        [first] = worker_processes(workers.proc.pid)
        os.kill(first, signal.SIGKILL)  # a crash outside the engine: the whole worker process
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while not (again := [p for p in worker_processes(workers.proc.pid) if p != first]):
            assert time.monotonic() < deadline, workers.log.read_text()
            time.sleep(0.1)
        assert f"worker process {first} exited with code -9; starting it again" in workers.log.read_text()
        h = {"Authorization": f"Bearer {api.new_key(10.0)}"}
        done = wait_until_finished(api, h, [submit(api, h, "pan left")])
        assert [d["status"] for d in done.values()] == ["completed"]
        assert samples(workers.url)[("openi2v_worker_restarts_total", ())] == 1
        assert worker_processes(workers.proc.pid) == again
    finally:
        workers.stop()
        api.stop()


@pytest.mark.parametrize("api_processes", ["1", "2"])
def test_the_api_processes_log_json_lines_too(tmp_path, api_processes):
    """OPENI2V_LOG_FORMAT=json reaches the API processes themselves (serving_app), one or several."""
    api = Server(tmp_path, workers=1, OPENI2V_ENGINES=json.dumps({KLING_MODEL: "instant"}), OPENI2V_LOG_FORMAT="json",
                 OPENI2V_API_PROCESSES=api_processes, OPENI2V_FETCH_ALLOW="127.0.0.1",
                 OPENI2V_WEBHOOK_RETRY_DELAYS="").start()
    try:
        h = {"Authorization": f"Bearer {api.new_key(10.0)}"}
        refused = "http://127.0.0.1:9/hook"  # nothing listens: the API's webhook sender logs a warning
        r = httpx.post(f"{api.url}/api/v3/{KLING_MODEL}", params={"webhook": refused}, headers=h,
                       json={"image": pictures.data_uri(400, 300), "prompt": "pan left"})
        assert r.status_code == 200, r.text
        pid = r.json()["data"]["id"]
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while not (lines := [line for line in api.log.read_text().splitlines() if f"webhook for {pid}" in line]):
            assert time.monotonic() < deadline, api.log.read_text()
            time.sleep(0.1)
        record = json.loads(lines[0])
        assert (record["level"], record["logger"], record["prediction_id"]) == ("warning", "openi2v.webhooks", pid)
        assert record["message"].startswith(f"webhook for {pid} to {refused} failed (attempt 1)")
    finally:
        api.stop()
