"""Prometheus metrics, and readiness: what an operator and an autoscaler read.

Two kinds of figure:

- Facts of the shared store, read at each scrape (``StoreCollector``): the queue depth and the
  running jobs per model, the same on every replica, whichever machine is scraped. Scale GPU
  workers on ``openi2v_queue_depth``.
- Events counted where they happen: queue wait and inference time (workers), predictions ended
  by model and status, webhook deliveries by outcome, engine failures, engine child processes
  lost and started again, worker restarts, GPU memory. ``serve`` and ``openi2v worker`` run several processes, so these use prometheus-client's
  multiprocess mode: each process writes its figures under ``PROMETHEUS_MULTIPROC_DIR`` (set by
  ``system.use_metrics_dir`` before any process starts) and a scrape adds them up.

``/metrics`` and ``/readyz`` are answered by the API (api/app.py) and, for workers on their own,
on ``openi2v worker --metrics-port`` (``serve_worker_metrics``).
"""

from __future__ import annotations

import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from openi2v.domain.prediction import Status

if TYPE_CHECKING:
    from openi2v.config import Settings
    from openi2v.store import Database
    from openi2v.worker.pool import WorkerPool

log = logging.getLogger("openi2v.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_SECONDS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# Created unregistered: a scrape collects them, alone or (multiprocess) through every process's files.
QUEUE_WAIT = Histogram("openi2v_queue_wait_seconds", "Time from submit to a worker starting the job.",
                       ["model"], buckets=_SECONDS, registry=None)
INFERENCE = Histogram("openi2v_inference_seconds", "Time an engine took to generate a clip.",
                      ["model"], buckets=_SECONDS, registry=None)
ENDED = Counter("openi2v_predictions_ended_total", "Predictions that ended, by model and status.",
                ["model", "status"], registry=None)
WEBHOOKS = Counter("openi2v_webhook_deliveries_total", "Webhook delivery attempts, by outcome.",
                   ["outcome"], registry=None)
ENGINE_FAILURES = Counter("openi2v_engine_failures_total", "Jobs an engine failed (the prediction failed).",
                          ["model"], registry=None)
ENGINE_RESTARTS = Counter("openi2v_engine_restarts_total", "Engine child processes lost (a crash, out of memory) "
                          "and started afresh for the next job.", ["engine"], registry=None)
WORKER_RESTARTS = Counter("openi2v_worker_restarts_total", "Worker processes that died and were started again.",
                          registry=None)
GPU_MEMORY = Gauge("openi2v_gpu_memory_peak_bytes", "Peak GPU memory of the last job, per device.",
                   ["device"], multiprocess_mode="max", registry=None)
_EVENTS = (QUEUE_WAIT, INFERENCE, ENDED, WEBHOOKS, ENGINE_FAILURES, ENGINE_RESTARTS, WORKER_RESTARTS, GPU_MEMORY)


def exposition(db: "Database | None", models: Iterable[str] = ()) -> bytes:
    """The text a scrape gets: this process's (or every process's) events, and the store's facts."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_DIR):
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in _EVENTS:
            registry.register(metric)
    if db is not None:
        registry.register(StoreCollector(db, models))
    return generate_latest(registry)


class StoreCollector(Collector):
    """Queue depth and running jobs per model, counted in the store at each scrape; a served model
    with none is reported as 0, so an autoscaler always finds its series."""

    def __init__(self, db: "Database", models: Iterable[str]) -> None:
        self.db, self.models = db, list(models)

    def collect(self):
        from openi2v.store.schema import predictions  # not at import: the store counts events here

        depth = GaugeMetricFamily("openi2v_queue_depth", "Predictions waiting for a worker, per model.",
                                  labels=["model"])
        running = GaugeMetricFamily("openi2v_running", "Predictions being generated now, per model.",
                                    labels=["model"])
        counts = {(m, s): 0 for m in self.models for s in (Status.CREATED.value, Status.PROCESSING.value)}
        query = (select(predictions.c.model, predictions.c.status, func.count())
                 .where(predictions.c.status.in_([Status.CREATED.value, Status.PROCESSING.value]))
                 .group_by(predictions.c.model, predictions.c.status))
        with self.db.read() as conn:
            counts.update({(model, status): n for model, status, n in conn.execute(query)})
        for (model, status), n in sorted(counts.items()):
            (depth if status == Status.CREATED.value else running).add_metric([model], n)
        yield depth
        yield running


def readiness(db: "Database") -> str | None:
    """Why this process cannot serve yet (the database does not answer, or its schema is behind the one
    this code needs: run ``openi2v migrate``), or None when it can. A schema ahead of this code (a
    revision it does not know: ``migrate`` ran for the next release, which is rolling out) is ready:
    migrations add, so the replicas still running this release keep serving meanwhile."""
    try:
        current = db.revision()
    except Exception as exc:  # whatever the driver raised: the operator reads the type, never a secret
        return f"the database does not answer ({type(exc).__name__})"
    head = db.head_revision()
    if current is None or (current != head and current in db.known_revisions()):
        return f"the database schema is at {current or 'nothing'}, not {head}: run `openi2v migrate`"
    return None


def serve_worker_metrics(settings: "Settings", pool: "WorkerPool", port: int) -> ThreadingHTTPServer:
    """``/metrics`` and ``/readyz`` for workers without the API, on ``port``, from a thread. Ready when
    the database answers and every worker has loaded its engines."""
    from openi2v.store import Database

    db = Database(settings.db_url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, exposition(None), CONTENT_TYPE)
            elif self.path == "/readyz":
                reason = readiness(db) or (None if pool.ready() else "the workers are loading their engines")
                self._send(503 if reason else 200, (reason or "ready").encode() + b"\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # a scrape every few seconds is not news
            pass

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
