"""Engines that misbehave on purpose, named by import path: built in the isolation tests' child by
"tests.engine_fixtures:Flaky", and by an end-to-end server from OPENI2V_ENGINES ("tests.engine_fixtures:Gated")."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from openi2v.engines.base import CancelCheck, Cancelled, EngineJob, EngineResult, Progress
from openi2v.media.video import write_mp4


class Flaky:
    """Renders a tiny grey clip in ``steps`` steps; its prompt can make it misbehave:
    "crash" kills the process, "oom" raises CUDA's out-of-memory error, "fail" raises."""

    name = "flaky"
    description = "test engine"

    def __init__(self, steps: int = 4, step_s: float = 0.0) -> None:
        self.steps, self.step_s = steps, step_s

    def load(self) -> None:
        self.pid = os.getpid()

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        if "crash" in job.prompt:
            os._exit(137)  # what the kernel's OOM killer or a segfault looks like from outside
        if "oom" in job.prompt:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "fail" in job.prompt:
            raise ValueError("the pipeline rejected its input")
        for i in range(self.steps):
            if cancelled():
                raise Cancelled()
            time.sleep(self.step_s)
            progress((i + 1) / self.steps)
        video = job.out_dir / "video.mp4"
        n = job.duration * 8
        write_mp4(video, (np.full((32, 32, 3), 128, np.uint8) for _ in range(n)), fps=8, width=32, height=32)
        return EngineResult(video, 32, 32, 8, n, {"engine": self.name, "pid": self.pid})


class Gated(Flaky):
    """Flaky's clip, but each render holds at 10 % until the file named by $GATED_ENGINE_GATE exists,
    checking ``cancelled()`` while it waits: a test makes "mid-render" happen instead of racing for it."""

    name = "gated"

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        progress(0.1)
        gate = Path(os.environ["GATED_ENGINE_GATE"])
        while not gate.exists():
            if cancelled():
                raise Cancelled()
            time.sleep(0.05)
        return super().run(job, progress, cancelled)


class HeldUntilCancelled:
    """Wraps a real engine: at its first progress report it waits until ``cancelled()`` turns true (the
    test cancels meanwhile, and the worker learns of it at its next heartbeat), then goes on. So the
    cancel lands mid-render on any machine, and what the engine does next is what is tested: it
    must stop at its next check. ``ended`` is how its run ended; ``reports_after`` how many progress
    reports it made after the cancel was known."""

    def __init__(self, engine) -> None:
        self.engine, self.started = engine, threading.Event()
        self.ended: str | None = None
        self.reports_after = 0

    def load(self) -> None:
        self.engine.load()

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        def report(fraction: float) -> None:
            progress(fraction)
            if self.started.is_set():
                self.reports_after += 1
                return
            self.started.set()
            deadline = time.monotonic() + 120  # a guard against a hang, not a speed limit
            while not cancelled() and time.monotonic() < deadline:
                time.sleep(0.01)

        try:
            result = self.engine.run(job, report, cancelled)
        except BaseException as exc:
            self.ended = type(exc).__name__
            raise
        self.ended = "finished"
        return result
