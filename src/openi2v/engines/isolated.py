"""Run an engine in a child process that loads once and serves jobs.

A diffusion pipeline can run out of GPU memory, or crash in native code. Either must fail
one prediction, not the worker: the pipeline lives in a spawned child, the parent talks to
it over a pipe, and when the child dies (or reports an out-of-memory error, after which its
memory is best given back whole) the prediction fails with a clear message and a fresh
child is started for the next job. Progress comes back per denoising step; a cancel is a
shared event the engine checks between steps.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
from typing import Any

from openi2v.engines.base import CancelCheck, Cancelled, EngineJob, EngineResult, Progress
from openi2v.errors import EngineError
from openi2v.system import die_with_parent

log = logging.getLogger("openi2v.engines.isolated")
POLL_S = 0.05


class IsolatedEngine:
    def __init__(self, factory: str, kwargs: dict[str, Any], name: str, description: str) -> None:
        """``factory`` is "module:callable"; the child calls it with ``kwargs`` and loads the result."""
        self.factory, self.kwargs = factory, kwargs
        self.name, self.description = name, description
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
        self._proc = self._mp.Process(target=_serve, args=(self.factory, self.kwargs, child, self._cancel),
                                      name=f"openi2v-engine-{self.name}", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        kind, payload = self._receive_startup()
        self.load_error = payload if kind == "failed" else None
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
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):
                    raise self._died() from None
                if kind == "progress":
                    progress(payload)
                elif kind == "done":
                    return payload
                elif kind == "cancelled":
                    raise Cancelled()
                elif kind == "oom":
                    self._stop()  # a fresh child gets all the memory back
                    raise EngineError(f"out of GPU memory while generating ({payload}); "
                                      "try a smaller size or fewer frames")
                else:
                    raise EngineError(f"the {self.name} engine failed: {payload}")
            elif not self._proc.is_alive():
                raise self._died()

    # --- internals ------------------------------------------------------------------------

    def _receive_startup(self) -> tuple[str, Any]:
        while not self._conn.poll(POLL_S):
            if not self._proc.is_alive():
                return "failed", f"the engine process exited with code {self._proc.exitcode} while loading"
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            return "failed", "the engine process closed its pipe while loading"

    def _died(self) -> EngineError:
        self._proc.join(5)
        code = self._proc.exitcode
        self._stop()
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


def _serve(factory: str, kwargs: dict[str, Any], conn, cancel) -> None:
    """The child: build and load the engine once, then run each job sent down the pipe."""
    import signal

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the worker cancels us between steps
    try:
        engine = import_factory(factory)(**kwargs)
        engine.load()
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        try:
            result = engine.run(job, lambda f: conn.send(("progress", f)), cancel.is_set)
        except Cancelled:
            conn.send(("cancelled", None))
        except Exception as exc:
            if _is_oom(exc):
                conn.send(("oom", str(exc).splitlines()[0][:200]))
                return
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("done", result))


def import_factory(factory: str):
    """The callable a "module:attr" path names."""
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ in ("OutOfMemoryError", "MemoryError") or "out of memory" in str(exc).lower()
