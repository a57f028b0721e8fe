"""The worker loop: claim -> fetch media -> run the engine -> store output -> transition.

A job's failure is data (the prediction becomes ``failed`` with a message); only
infrastructure faults (storage) put the job back in the queue. A heartbeat thread keeps
the lease alive and records progress; if the lease is lost the engine is told to stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

from openi2v.config import Settings
from openi2v.domain.inputs import MAX_AUDIO_BYTES, MAX_IMAGE_BYTES, check_audio, check_image
from openi2v.domain.prediction import Status
from openi2v.engines.base import Cancelled, Engine, EngineJob
from openi2v.errors import ContentBlocked, OpenI2VError, StorageError
from openi2v.media.images import MediaFetcher
from openi2v.media.safety import SafetyChecker
from openi2v.media.video import read_frames
from openi2v.outbound import OutboundGuard
from openi2v.storage.local import LocalStorage
from openi2v.store import Database, Prediction, PredictionStore
from openi2v.store.predictions import Outcome
from openi2v.system import die_with_parent

log = logging.getLogger("openi2v.worker")


class Worker:
    def __init__(self, settings: Settings, db: Database, engines: dict[str, Engine],
                 safety: SafetyChecker | None = None) -> None:
        self.settings = settings
        self.store = PredictionStore.from_settings(db, settings)
        self.storage = LocalStorage(settings.data_dir)
        self.fetcher = MediaFetcher(self.storage, settings.fetch_timeout_s,
                                    OutboundGuard.from_settings(settings))
        self.safety = safety or SafetyChecker(settings.nsfw_threshold)
        self.engines = engines
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()  # set: cancel the job in hand and hand it back to the queue

    def run(self, stop: threading.Event) -> None:
        self.stopping = stop
        for engine in set(self.engines.values()):
            engine.load()
        while not stop.is_set():
            try:
                if not self.run_once():
                    stop.wait(self.settings.poll_s)
            except Exception:  # the store may be briefly unavailable; never let the loop die
                log.exception("worker %s: unexpected error; retrying", self.owner)
                stop.wait(1.0)

    def run_once(self) -> bool:
        """Claim and finish one job; False when the queue is empty."""
        job = self.store.claim(self.owner, list(self.engines), self.settings.lease_s)
        if job is None:
            return False
        log.info("prediction %s claimed by %s (attempt %d)", job.id, self.owner, job.attempts)
        self._process(job)
        return True

    def _process(self, p: Prediction) -> None:
        beat = _Heartbeat(self.store, p.id, self.owner, self.settings)
        work = Path(tempfile.mkdtemp(prefix=f"{p.id}-", dir=self._work_dir()))
        outcome: Outcome | None = None
        try:
            outcome = self._generate(p, work, beat)
        except Cancelled:
            if self.stopping.is_set():
                log.info("prediction %s: worker stopping; back to the queue", p.id)
                outcome = Outcome(Status.CREATED)
            else:
                log.warning("prediction %s: no longer ours (cancelled, or the lease was lost): stopped", p.id)
        except StorageError:
            log.exception("prediction %s: storage failed; requeueing", p.id)
            outcome = Outcome(Status.CREATED)
        except OpenI2VError as exc:
            outcome = Outcome(Status.FAILED, error=exc.message, error_code=exc.task_code)
        except Exception as exc:
            log.exception("prediction %s failed", p.id)
            outcome = Outcome(Status.FAILED, error=f"internal error while generating ({type(exc).__name__})",
                              error_code=5000)
        finally:
            beat.stop()
            shutil.rmtree(work, ignore_errors=True)
        if outcome is not None and not self.store.finish(p.id, self.owner, outcome):
            log.warning("prediction %s: no longer ours (cancelled, deleted, or the lease was lost) before its result "
                        "was recorded; its files are removed", p.id)
            for rel in outcome.files:
                self.storage.delete_file(rel)

    def _generate(self, p: Prediction, work: Path, beat: "_Heartbeat") -> Outcome:
        job = self._engine_job(p, work)
        engine = self.engines[p.model]
        started = time.perf_counter()
        result = engine.run(job, beat.report, lambda: beat.cancelled() or self.stopping.is_set())
        inference_ms = int(round((time.perf_counter() - started) * 1000))
        nsfw = self._nsfw(job, result.video)
        if nsfw and self.settings.nsfw_policy == "block":
            raise ContentBlocked("the output was flagged by the NSFW checker and blocked by this server's policy")
        video = self.storage.save_output(result.video, f"{p.id}.mp4")
        details = dict(result.details)
        if result.thumbnail is not None:
            details["poster"] = self.storage.save_output(result.thumbnail, f"{p.id}.jpg")
        return Outcome(Status.COMPLETED, outputs=[video], nsfw=[nsfw], inference_ms=inference_ms, details=details)

    def _engine_job(self, p: Prediction, work: Path) -> EngineJob:
        inputs = p.inputs
        image = check_image("image", self.fetcher.fetch("image", inputs["image"], MAX_IMAGE_BYTES))
        last = inputs.get("last_image")
        last_image = check_image("last_image", self.fetcher.fetch("last_image", last, MAX_IMAGE_BYTES)) if last else None
        audio = None
        if inputs.get("audio"):
            data = self.fetcher.fetch("audio", inputs["audio"], MAX_AUDIO_BYTES)
            audio = (check_audio("audio", data), data)
        return EngineJob(image=image, prompt=inputs["prompt"], negative_prompt=inputs.get("negative_prompt", ""),
                         guidance_scale=float(inputs.get("guidance_scale", 0.5)), duration=int(inputs["duration"]),
                         seed=p.seed, out_dir=work, last_image=last_image, audio=audio)

    def _nsfw(self, job: EngineJob, video: Path) -> bool:
        import numpy as np

        frames = read_frames(video)
        sample = [np.asarray(job.image)] + [frames[len(frames) // 2], frames[-1]]
        return self.safety.any_nsfw(sample)

    def _work_dir(self) -> Path:
        path = self.settings.data_dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path


class _Heartbeat:
    """Extends the lease every ``heartbeat_s`` and records the latest progress. Between beats the
    engine's checks look at the row at most every ``CANCEL_CHECK_S``, so a cancel stops a render
    within that and one step, not a whole heartbeat."""

    def __init__(self, store: PredictionStore, prediction_id: str, owner: str, settings: Settings) -> None:
        self.store, self.id, self.owner, self.settings = store, prediction_id, owner, settings
        self.progress = 0
        self.lost = threading.Event()
        self._checked = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{prediction_id[:8]}", daemon=True)
        self._thread.start()

    def report(self, fraction: float) -> None:
        self.progress = max(self.progress, min(99, int(fraction * 100)))

    def cancelled(self) -> bool:
        """Whether the job is no longer ours (cancelled, deleted, or the lease lost): the engine's check."""
        t = time.monotonic()
        if not self.lost.is_set() and t - self._checked >= CANCEL_CHECK_S:
            self._checked = t
            try:
                if not self.store.holds(self.id, self.owner):
                    self.lost.set()
            except Exception:  # the store briefly unavailable: the heartbeat decides
                log.exception("cancel check for %s failed", self.id)
        return self.lost.is_set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                if not self.store.heartbeat(self.id, self.owner, self.settings.lease_s, self.progress):
                    self.lost.set()
                    return
            except Exception:
                log.exception("heartbeat for %s failed", self.id)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


CANCEL_CHECK_S = 0.25  # a read of one row by its key, at most this often per running job

# Rendering is batch work; answering a poll is interactive. Beside the API the workers
# run at a lower CPU priority, so polls stay fast while every core renders.
WORKER_NICENESS = 10


class WorkerPool:
    """N worker processes beside the API (the embedded default).

    Processes, not threads, so rendering never holds the API's GIL; each dies with its
    parent (PR_SET_PDEATHSIG), and a job it held is reclaimed when its lease expires.
    They run at a lower CPU priority than the API (``WORKER_NICENESS``).
    """

    def __init__(self, settings: Settings, size: int) -> None:
        import multiprocessing

        mp = multiprocessing.get_context("spawn")
        self._procs = [mp.Process(target=_worker_main, args=(settings,), name=f"openi2v-worker-{i}", daemon=True)
                       for i in range(size)]

    def start(self) -> None:
        for p in self._procs:
            p.start()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM each worker (it hands its job back to the queue and exits); SIGKILL the slow ones.

        A signal, not a shared multiprocessing Event: a worker already killed by the
        terminal's Ctrl-C would leave such an Event's waiters count wrong, and setting it
        would block forever.
        """
        for p in self._procs:
            if p.is_alive():
                p.terminate()
        for p in self._procs:
            p.join(timeout)
            if p.is_alive():
                p.kill()
                p.join(timeout)


def _worker_main(settings: Settings) -> None:
    import signal

    die_with_parent()
    os.nice(WORKER_NICENESS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: serve decides, then SIGTERMs us
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from openi2v.engines.registry import build_engines

    db = Database(settings.db_url)
    Worker(settings, db, build_engines(settings)).run(stop)
