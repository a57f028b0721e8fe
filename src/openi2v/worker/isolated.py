"""Run an engine in a child process that loads once and serves jobs.

A diffusion pipeline can run out of GPU memory, or crash in native code. Either must fail
one prediction, not the worker: the pipeline lives in a spawned child, the parent talks to
it over a pipe in the messages below, and when the child dies (or reports an out-of-memory
error, after which its memory is best given back whole) the prediction fails with a clear
message and a fresh child is started for the next job. Progress comes back per denoising
step; a cancel is a shared event the engine checks between steps.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from openi2v import metrics
from openi2v.engines.base import CancelCheck, Cancelled, Engine, EngineJob, EngineResult, Progress
from openi2v.errors import EngineError
from openi2v.system import die_with_parent

log = logging.getLogger("openi2v.worker.isolated")
POLL_S = 0.05


@dataclass(frozen=True)
class EngineSpec:
    """How the child builds its engine: ``factory(**kwargs)`` (a class or function importable by its
    module, as pickling sends it by name), then ``load()``."""

    name: str
    factory: Callable[..., Engine]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


# What the child sends up the pipe.
@dataclass(frozen=True)
class Ready:
    pid: int


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class Step:
    fraction: float


@dataclass(frozen=True)
class Done:
    result: EngineResult


@dataclass(frozen=True)
class Stopped:
    """The job saw the cancel event and stopped."""


@dataclass(frozen=True)
class OutOfMemory:
    detail: str


@dataclass(frozen=True)
class Failed:
    reason: str


class IsolatedEngine:
    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.name, self.description = spec.name, spec.description
        self._mp = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self._cancel = None
        self.load_error: str | None = None

    # --- the Engine protocol ------------------------------------------------------------

    def load(self) -> None:
        """Start the child and wait until its engine is loaded (a failure is kept for the next run)."""
        if self._proc is not None and self._proc.is_alive():
            return
        parent, child = self._mp.Pipe()
        self._cancel = self._mp.Event()
        self._proc = self._mp.Process(target=_serve, args=(self.spec, child, self._cancel),
                                      name=f"openi2v-engine-{self.name}", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        startup = self._receive_startup()
        self.load_error = startup.reason if isinstance(startup, LoadFailed) else None
        if self.load_error:
            log.error("engine %s failed to load: %s", self.name, self.load_error)
            self._stop()
        else:
            log.info("engine %s ready in process %d", self.name, self._proc.pid)

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        self.load()
        if self.load_error:
            raise EngineError(f"the {self.name} engine could not load: {self.load_error}")
        self._cancel.clear()
        self._conn.send(job)
        while True:
            if cancelled() and not self._cancel.is_set():
                self._cancel.set()
            if self._conn.poll(POLL_S):
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    raise self._died() from None
                match message:
                    case Step(fraction):
                        progress(fraction)
                    case Done(result):
                        return result
                    case Stopped():
                        raise Cancelled()
                    case OutOfMemory(detail):
                        self._stop()  # a fresh child gets all the memory back
                        metrics.ENGINE_RESTARTS.labels(self.name).inc()
                        raise EngineError(f"out of GPU memory while generating ({detail}); "
                                          "try a smaller size or fewer frames")
                    case Failed(reason):
                        raise EngineError(f"the {self.name} engine failed: {reason}")
                    case _:
                        raise EngineError(f"the {self.name} engine sent {type(message).__name__}, not a message")
            elif not self._proc.is_alive():
                raise self._died()

    # --- internals ------------------------------------------------------------------------

    def _receive_startup(self) -> Ready | LoadFailed:
        while not self._conn.poll(POLL_S):
            if not self._proc.is_alive():
                return LoadFailed(f"the engine process exited with code {self._proc.exitcode} while loading")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return LoadFailed("the engine process closed its pipe while loading")
    def _died(self) -> EngineError:
        self._proc.join(5)
        code = self._proc.exitcode
        self._stop()
        metrics.ENGINE_RESTARTS.labels(self.name).inc()
        log.error("engine %s process died (exit code %s); a fresh one starts with the next job", self.name, code)
        return EngineError(f"the {self.name} engine process died (exit code {code}: out of memory or a crash); "
                           "the server started a fresh one")

    def _stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._proc = self._conn = None

    def close(self) -> None:
        self._stop()


def _serve(spec: EngineSpec, conn, cancel) -> None:
    """The child: build and load the engine once, then run each job sent down the pipe."""
    import signal

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the worker cancels us between steps
    try:
        engine = spec.factory(**spec.kwargs)
        engine.load()
    except Exception as exc:
        conn.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = engine.run(job, lambda f: conn.send(Step(f)), cancel.is_set)
        except Cancelled:
            conn.send(Stopped())
        except Exception as exc:
            if _is_oom(exc):
                conn.send(OutOfMemory(str(exc).splitlines()[0][:200]))
                return
            conn.send(Failed(f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(Done(result))


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ in ("OutOfMemoryError", "MemoryError") or "out of memory" in str(exc).lower()
