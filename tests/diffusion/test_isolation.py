"""Engines in a child process: crashes and out-of-memory errors fail one job, never the worker."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from openi2v import metrics
from openi2v.engines.base import Cancelled, EngineJob
from openi2v.worker.isolated import EngineSpec, IsolatedEngine
from tests.engine_fixtures import Flaky
from openi2v.errors import EngineError
from openi2v.media.video import probe
from tests import pictures

PHOTO = pictures.photo(400, 300, seed=1)


def _broken():
    """An engine factory that fails in the child, as a bad import or missing weights would."""
    raise AttributeError("no engine here")


@pytest.fixture
def engine():
    e = IsolatedEngine(EngineSpec("flaky", Flaky, {"steps": 4, "step_s": 0.02}))
    e.load()
    yield e
    e.close()


def job(tmp_path, prompt="pan left", duration=5):
    return EngineJob(PHOTO, prompt, "", 0.5, duration, 1, Path(tempfile.mkdtemp(dir=tmp_path)))


def test_a_job_runs_in_the_child_with_progress_per_step(engine, tmp_path):
    seen = []
    result = engine.run(job(tmp_path), seen.append, lambda: False)
    assert seen == [0.25, 0.5, 0.75, 1.0]
    assert probe(result.video).frames == 40
    assert result.details["pid"] != __import__("os").getpid()  # rendered in the child


def restarts() -> float:
    return metrics.ENGINE_RESTARTS.labels("flaky")._value.get()


def test_a_crash_fails_the_job_and_a_fresh_child_serves_the_next(engine, tmp_path):
    first = engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"]
    before = restarts()
    with pytest.raises(EngineError, match=r"process died \(exit code 137"):
        engine.run(job(tmp_path, "crash now"), lambda f: None, lambda: False)
    after = engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"]
    assert after != first
    assert restarts() == before + 1  # what an operator's dashboard counts


def test_out_of_memory_fails_the_job_and_restarts_the_child(engine, tmp_path):
    first = engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"]
    with pytest.raises(EngineError, match="out of GPU memory"):
        engine.run(job(tmp_path, "oom"), lambda f: None, lambda: False)
    assert engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"] != first


def test_an_ordinary_error_fails_the_job_and_keeps_the_child(engine, tmp_path):
    first = engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"]
    with pytest.raises(EngineError, match="rejected its input"):
        engine.run(job(tmp_path, "fail"), lambda f: None, lambda: False)
    assert engine.run(job(tmp_path), lambda f: None, lambda: False).details["pid"] == first


def test_cancel_reaches_the_child_between_steps(engine, tmp_path):
    seen = []
    with pytest.raises(Cancelled):
        engine.run(job(tmp_path), seen.append, lambda: len(seen) >= 1)
    assert 1 <= len(seen) < 4
    assert probe(engine.run(job(tmp_path), lambda f: None, lambda: False).video).frames == 40  # still serving


def test_a_load_failure_becomes_a_clear_job_error(tmp_path):
    e = IsolatedEngine(EngineSpec("broken", _broken))
    e.load()
    with pytest.raises(EngineError, match="could not load: AttributeError"):
        e.run(job(tmp_path), lambda f: None, lambda: False)
