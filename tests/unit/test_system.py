"""The metrics directory: a server killed before its exit handler ran leaves no directory behind for good."""

from __future__ import annotations

import os
import subprocess
import tempfile

from openi2v import system


def test_the_next_start_removes_the_metrics_directories_of_dead_servers(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(system.atexit, "register", lambda *a, **k: None)
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid belongs to nobody now
    gone = tmp_path / f"openi2v-metrics-{dead.pid}-abc123"
    alive = tmp_path / f"openi2v-metrics-{os.getppid()}-def456"  # a running server's (our parent's pid)
    other = tmp_path / "openi2v-metrics-notapid"
    for d in (gone, alive, other):
        d.mkdir()
        (d / "counter_1.db").write_bytes(b"x")
    system.use_metrics_dir()
    ours = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert ours.startswith(str(tmp_path / f"openi2v-metrics-{os.getpid()}-"))
    assert not gone.exists()
    assert alive.exists() and other.exists()
