"""Worker processes, supervised: beside the API (``openi2v serve``) or on their own (``openi2v worker``).

Processes, not threads, so rendering never holds the API's GIL. Each dies with its parent
(PR_SET_PDEATHSIG); one that dies is started again (at most every ``RESTART_S``), and a job it
held is reclaimed when its lease expires. SIGTERM drains a worker: it claims nothing more, and
the job in hand finishes or, after ``drain_s``, goes back to the queue.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass

from openi2v import metrics
from openi2v.config import Settings
from openi2v.system import die_with_parent

log = logging.getLogger("openi2v.worker")
RESTART_S = 5.0  # a worker that dies is started again, but not more often than this

# Rendering is batch work; answering a poll is interactive. Beside the API the workers run at a
# lower CPU priority, so polls stay fast while every core renders.
BESIDE_API_NICENESS = 10


@dataclass(frozen=True)
class WorkerSpec:
    """One worker process: its settings (the device its engines use), the model ids it claims (None:
    every one served) and its CPU priority."""

    settings: Settings
    models: tuple[str, ...] | None = None
    niceness: int = 0


def plan(settings: Settings, concurrency: int, models: tuple[str, ...] | None = None,
         devices: tuple[str, ...] = (), niceness: int = 0) -> list[WorkerSpec]:
    """``concurrency`` worker processes on each of ``devices`` (default: the configured device), each
    with an engine child of its own on that device."""
    return [WorkerSpec(settings.model_copy(update={"device": device}), models, niceness)
            for device in devices or (settings.device,) for _ in range(concurrency)]


class WorkerPool:
    def __init__(self, specs: list[WorkerSpec]) -> None:
        self.specs = specs
        self._mp = multiprocessing.get_context("spawn")
        self._procs: list = [None] * len(specs)
        self._started = [0.0] * len(specs)
        self._ready = [self._mp.RawValue("b", 0) for _ in specs]  # set by the worker once its engines loaded
        self._stopping = threading.Event()

    def start(self) -> None:
        for i in range(len(self.specs)):
            self._start(i)

    def ready(self) -> bool:
        """Every worker is alive and has loaded its engines."""
        return all(p is not None and p.is_alive() and flag.value for p, flag in zip(self._procs, self._ready))

    def supervise(self) -> None:
        """Start again the workers that died (a crash outside the engine's own child), until ``stop``."""
        while not self._stopping.wait(1.0):
            for i, p in enumerate(self._procs):
                if not p.is_alive() and time.monotonic() - self._started[i] >= RESTART_S and not self._stopping.is_set():
                    log.error("worker process %s exited with code %s; starting it again", p.pid, p.exitcode)
                    metrics.WORKER_RESTARTS.inc()
                    self._start(i)

    def stop(self) -> None:
        """SIGTERM each worker (it drains), then SIGKILL those still running ``drain_s`` + 10 s later.

        A signal, not a shared multiprocessing Event: a worker already killed by the terminal's
        Ctrl-C would leave such an Event's waiters count wrong, and setting it would block forever.
        """
        self._stopping.set()
        for p in self._procs:
            if p is not None and p.is_alive():
                p.terminate()
        deadline = time.monotonic() + max((s.settings.drain_s for s in self.specs), default=0) + 10
        for p in self._procs:
            if p is None:
                continue
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5)

    def _start(self, i: int) -> None:
        self._ready[i].value = 0
        self._started[i] = time.monotonic()
        self._procs[i] = self._mp.Process(target=_worker_main, args=(self.specs[i], self._ready[i]),
                                          name=f"openi2v-worker-{i}", daemon=True)
        self._procs[i].start()


def _worker_main(spec: WorkerSpec, ready) -> None:
    import signal

    from openi2v.engines.registry import build_engines
    from openi2v.logs import setup_logging
    from openi2v.store import Database
    from openi2v.worker.loop import Worker

    die_with_parent()
    os.nice(spec.niceness)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides, then SIGTERMs us
    setup_logging(spec.settings)
    worker = Worker(spec.settings, Database(spec.settings.db_url),
                    build_engines(spec.settings, list(spec.models) if spec.models else None))
    # drain() takes the stop event's lock, which this (main) thread may hold when the signal lands: from a
    # thread of its own, it waits for it instead of deadlocking
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=worker.drain).start())

    def loaded() -> None:
        ready.value = 1

    worker.run(loaded)
