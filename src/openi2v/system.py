"""Process plumbing shared by the API and worker processes."""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op).

    Workers and extra API processes are children of ``openi2v serve``: when it is killed,
    even with -9, they must not linger holding the port or a job's lease.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


METRICS_PREFIX = "openi2v-metrics-"


def use_metrics_dir() -> None:
    """Before ``serve`` or ``worker`` starts its processes (and before prometheus-client is imported,
    which reads it then): the directory where every process writes its metrics, for a scrape to add
    up (metrics.py). The operator's ``PROMETHEUS_MULTIPROC_DIR``, rid of the figures a previous run left
    (its ``*.db`` files, nothing else), or a new temporary one, removed at exit. A temporary one is
    named for its process, so the next start removes those of servers killed before their exit ran."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for old in Path(path).glob("*.db"):
            old.unlink(missing_ok=True)
    else:
        for left in Path(tempfile.gettempdir()).glob(f"{METRICS_PREFIX}*-*"):
            owner = left.name.removeprefix(METRICS_PREFIX).partition("-")[0]
            if owner.isdigit() and not _alive(int(owner)):
                shutil.rmtree(left, ignore_errors=True)
        prefix = f"{METRICS_PREFIX}{os.getpid()}-"
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=prefix)
        atexit.register(shutil.rmtree, path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
