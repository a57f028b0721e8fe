"""The worker loop: claim -> fetch media -> run the engine -> store output -> transition.

A job's failure is data (the prediction becomes ``failed`` with a message); only
infrastructure faults (storage) put the job back in the queue. A heartbeat thread keeps
the lease alive and records progress; if the lease is lost the engine is told to stop.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from openi2v import logs, metrics, storage
from openi2v.config import Settings
from openi2v.domain.inputs import MAX_AUDIO_BYTES, MAX_IMAGE_BYTES, check_audio, check_image
from openi2v.domain.prediction import Outcome, Prediction, Status
from openi2v.domain.scenarios import Plan, SimulatedFailure
from openi2v.engines.base import Cancelled, Engine, EngineJob
from openi2v.errors import ContentBlocked, EngineError, OpenI2VError, StorageError
from openi2v.media.images import MediaFetcher
from openi2v.media.safety import SafetyChecker
from openi2v.media.video import read_frames
from openi2v.outbound import OutboundGuard
from openi2v.store import Database, PredictionStore

log = logging.getLogger("openi2v.worker")


class Worker:
    def __init__(self, settings: Settings, db: Database, engines: dict[str, Engine],
                 safety: SafetyChecker | None = None) -> None:
        """``engines``: model id -> engine, for the model ids this worker claims."""
        self.settings = settings
        self.store = PredictionStore.from_settings(db, settings)
        self.storage = storage.from_settings(settings)
        self.fetcher = MediaFetcher(self.storage, settings.fetch_timeout_s,
                                    OutboundGuard.from_settings(settings))
        self.safety = safety or SafetyChecker(settings.nsfw_threshold)
        self.engines = engines
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stopping = threading.Event()  # set by drain(): claim nothing more
        self._hand_back_at = math.inf  # then: the job in hand is handed back to the queue at this time

    def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """Load the engines, call ``ready``, then claim and run jobs until ``drain``."""
        for engine in set(self.engines.values()):
            engine.load()
        failed = [engine.name for engine in set(self.engines.values()) if getattr(engine, "load_error", None)]
        if failed:  # not ready: each job would try to load it again, and fail (task code 1403)
            log.error("worker %s: engine %s could not load; not ready", self.owner, ", ".join(failed))
        else:
            ready()
        while not self.stopping.is_set():
            try:
                if not self.run_once():
                    self.stopping.wait(self.settings.poll_s)
            except Exception:  # the store may be briefly unavailable; never let the loop die
                log.exception("worker %s: unexpected error; retrying", self.owner)
                self.stopping.wait(1.0)

    def drain(self) -> None:
        """Stop claiming; the job in hand may finish within ``drain_s``, after which its engine is
        stopped and the job handed back to the queue for another worker."""
        self._hand_back_at = min(self._hand_back_at, time.monotonic() + self.settings.drain_s)
        self.stopping.set()
        log.info("worker %s draining: it claims nothing more; a job in hand has %g s to finish", self.owner,
                 self.settings.drain_s)

    def run_once(self) -> bool:
        """Claim and finish one job; False when the queue is empty."""
        job = self.store.claim(self.owner, list(self.engines), self.settings.lease_s)
        if job is None:
            return False
        token = logs.prediction.set(job.id)  # every line logged while it runs names it
        try:
            log.info("prediction %s claimed by %s (attempt %d)", job.id, self.owner, job.attempts)
            if job.attempts == 1:
                metrics.QUEUE_WAIT.labels(job.model).observe(max(0.0, job.started_at - job.created_at))
            self._process(job)
        finally:
            logs.prediction.reset(token)
        return True

    def _handing_back(self) -> bool:
        return time.monotonic() >= self._hand_back_at

    def _process(self, p: Prediction) -> None:
        beat = _Heartbeat(self.store, p.id, self.owner, self.settings)
        work = Path(tempfile.mkdtemp(prefix=f"{p.id}-", dir=self._work_dir()))
        outcome: Outcome | None = None
        requeue: bool | None = None  # None: not handed back; else whether the attempt is spent
        try:
            outcome = self._generate(p, work, beat)
        except Cancelled:
            if self._handing_back():
                log.info("prediction %s: worker stopping; back to the queue", p.id)
                requeue = False
            else:
                log.warning("prediction %s: no longer ours (cancelled, or the lease was lost): stopped", p.id)
        except StorageError:
            if p.attempts < self.settings.max_attempts:
                log.exception("prediction %s: storage failed; back to the queue for another attempt", p.id)
                requeue = True
            else:
                log.exception("prediction %s: storage failed on its last attempt", p.id)
                outcome = Outcome(Status.FAILED, error="the result could not be stored", error_code=5000)
        except OpenI2VError as exc:
            if isinstance(exc, EngineError) and not isinstance(exc, ContentBlocked):
                metrics.ENGINE_FAILURES.labels(p.model).inc()
            outcome = Outcome(Status.FAILED, error=exc.message, error_code=exc.task_code)
        except Exception as exc:
            metrics.ENGINE_FAILURES.labels(p.model).inc()
            log.exception("prediction %s failed", p.id)
            outcome = Outcome(Status.FAILED, error=f"internal error while generating ({type(exc).__name__})",
                              error_code=5000)
        finally:
            beat.stop()
            shutil.rmtree(work, ignore_errors=True)
        if requeue is not None:
            self.store.requeue(p.id, self.owner, spent=requeue, delay_s=STORAGE_RETRY_S if requeue else 0.0)
        elif outcome is not None and not self.store.finish(p.id, self.owner, outcome):
            log.warning("prediction %s: no longer ours (cancelled, deleted, or the lease was lost) before its result "
                        "was recorded; its files are removed", p.id)
            for rel in outcome.files:
                try:
                    self.storage.delete(rel)
                except StorageError:
                    log.exception("prediction %s: could not remove %s", p.id, rel)

    def _generate(self, p: Prediction, work: Path, beat: "_Heartbeat") -> Outcome:
        job = self._engine_job(p, work)
        engine = self.engines[p.model]
        cancelled = lambda: beat.cancelled() or self._handing_back()  # noqa: E731
        started = time.perf_counter()
        plan = Plan.from_json(p.scenario)
        if plan.render_s:
            _take_time(plan.render_s, beat.report, cancelled)
        if plan.fail:
            raise SimulatedFailure(plan.error, plan.code)
        result = engine.run(job, beat.report, cancelled)
        inference_s = time.perf_counter() - started
        inference_ms = int(round(inference_s * 1000))
        metrics.INFERENCE.labels(p.model).observe(inference_s)
        if result.gpu_peak_bytes is not None:
            metrics.GPU_MEMORY.labels(self.settings.device).set(result.gpu_peak_bytes)
        nsfw = plan.nsfw or self._nsfw(job, result.video, getattr(engine, "nsfw_input_only", False))
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

    def _nsfw(self, job: EngineJob, video: Path, input_only: bool) -> bool:
        """The NSFW check on the input and two frames of the output; on the input alone for an engine
        whose frames show only the input's pixels at a size too small to show more (``instant``)."""
        import numpy as np

        if input_only:
            return self.safety.any_nsfw([np.asarray(job.image)])
        frames = read_frames(video)
        sample = [np.asarray(job.image)] + [frames[len(frames) // 2], frames[-1]]
        return self.safety.any_nsfw(sample)

    def _work_dir(self) -> Path:
        path = self.settings.data_dir / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path


def _take_time(seconds: float, progress, cancelled) -> None:
    """A scenario's render time: progress moving to 90 %, a cancel seen within a tenth of a second."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if cancelled():
            raise Cancelled()
        progress(0.9 * (1 - left / seconds))
        time.sleep(min(0.1, left))


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
                log.exception("heartbeat for %s failed", self.id, extra={"prediction_id": self.id})

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


STORAGE_RETRY_S = 5.0  # a job whose result could not be stored waits this long before it is claimed again
CANCEL_CHECK_S = 0.25  # a read of one row by its key, at most this often per running job
