"""Time from a cancel request to the engine stopping, on a prediction that is rendering.

A real worker (in this process, with its heartbeat thread) runs the camera engine (10 s at 1080p)
and a tiny randomly initialised Wan on the CPU; the cancel goes through the API. The API ends the
row at once; the worker reads the row at most every ``CANCEL_CHECK_S`` and the engine stops at
its next check (a frame; a denoising step). Each try cancels at a random moment of the heartbeat
cycle (``OPENI2V_HEARTBEAT_S``, default 2 s). Baselines measured in the same run: the time between
the engine's progress reports (a frame, a step); printed against the heartbeat, which alone told
the worker before, and against the check interval plus one step, the bound.

Run: .venv/bin/python bench/cancel_latency.py [tries]
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.config import KLING_MODEL, Settings  # noqa: E402
from openi2v.engines.base import Cancelled  # noqa: E402
from openi2v.worker.isolated import IsolatedEngine  # noqa: E402
from openi2v.engines.registry import build_engines  # noqa: E402
from openi2v.worker.loop import CANCEL_CHECK_S, Worker  # noqa: E402
from tests import pictures, tiny_models  # noqa: E402
from tests.integration.test_api import Api  # noqa: E402

PRESET = "wan2.1-i2v-14b-480p"


class Timed:
    """An engine that records when it reported progress and when its run ended."""

    def __init__(self, engine) -> None:
        self.engine, self.reports, self.ended_at, self.stopped = engine, [], 0.0, False
        self.started = threading.Event()

    def load(self) -> None:
        self.engine.load()

    def run(self, job, progress, cancelled):
        def report(fraction: float) -> None:
            self.reports.append(time.perf_counter())
            self.started.set()
            progress(fraction)

        try:
            return self.engine.run(job, report, cancelled)
        except Cancelled:
            self.stopped = True
            raise
        finally:
            self.ended_at = time.perf_counter()


def measure(settings: Settings, tries: int) -> tuple[list[float], list[float]]:
    """(cancel -> engine stopped, seconds per progress report) over ``tries`` cancels."""
    api, engines = Api(settings), build_engines(settings)
    latencies, gaps = [], []
    try:
        for _ in range(tries):
            timed = Timed(engines[KLING_MODEL])
            worker = Worker(settings, api.db, {KLING_MODEL: timed})
            pid = api.submit({"image": pictures.data_uri(), "prompt": "slow zoom in", "duration": 10}).json()["data"]["id"]
            running = threading.Thread(target=worker.run_once)
            running.start()
            assert timed.started.wait(600), "the render never started"
            time.sleep(random.uniform(0, settings.heartbeat_s))  # anywhere in the heartbeat's cycle
            asked = time.perf_counter()
            status = api.client.post(f"/api/v3/predictions/{pid}/cancel", headers=api.h()).json()["data"]["status"]
            running.join(600)
            assert not running.is_alive(), "the engine never stopped"
            assert status == "cancelled" and api.result(pid).json()["data"]["status"] == "cancelled"
            assert timed.stopped, "the render ended before the cancel reached it: make it longer"
            gaps.append(statistics.median(b - a for a, b in zip(timed.reports, timed.reports[1:])))
            latencies.append(timed.ended_at - asked)
    finally:
        for e in set(engines.values()):
            if isinstance(e, IsolatedEngine):
                e.close()
        api.client.close()
    return latencies, gaps


def report(name: str, latencies: list[float], gaps: list[float], heartbeat_s: float) -> None:
    """The bound to beat: the worker's cancel check interval plus one frame or step."""
    median, worst, gap = statistics.median(latencies), max(latencies), statistics.median(gaps)
    print(f"{name:<12} cancel -> engine stopped: median {median:.3f} s, max {worst:.3f} s over {len(latencies)} "
          f"cancels | one frame/step {gap * 1000:.1f} ms | median/heartbeat ({heartbeat_s:g} s) "
          f"{median / heartbeat_s:.2f} | max/(check interval + one step) {worst / (CANCEL_CHECK_S + gap):.2f}")


def main() -> None:
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(data_dir=Path(tmp) / "camera", workers=0, short_side=1080)
        report("camera", *measure(base, tries), base.heartbeat_s)
        tiny_models.save("wan2.1", Path(tmp) / "weights" / PRESET)
        wan = Settings(data_dir=Path(tmp) / "wan", workers=0, engines={KLING_MODEL: PRESET}, device="cpu",
                       weights_dir=Path(tmp) / "weights", diffusion_steps=400, diffusion_size="48x32",
                       speedups="sdpa")
        report("tiny Wan", *measure(wan, tries), wan.heartbeat_s)


if __name__ == "__main__":
    main()
