"""A real server in a subprocess on a free port, as a user would run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = Path(__file__).resolve().parents[2]


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    # ROOT on the path: OPENI2V_ENGINES may name a test engine ("tests.engine_fixtures:Gated")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OPENI2V_DATA_DIR=str(data_dir), OPENI2V_SHORT_SIDE="480", OPENI2V_LEASE_S="3",
               OPENI2V_HEARTBEAT_S="0.5", OPENI2V_POLL_S="0.1", PYTHONPATH=path)
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "openi2v.cli", *args], env=env, check=True, capture_output=True,
                         text=True, timeout=120)
    return out.stdout


def answering(proc: subprocess.Popen, url: str, log: Path) -> None:
    """Wait until ``url`` answers 200 (the process started and is ready)."""
    deadline = time.monotonic() + 120  # a guard against a hang, not a speed limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode}: {log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered: {log.read_text()}")


class Server:
    def __init__(self, data_dir: Path, workers: int = 1, **extra: str) -> None:
        self.env = env_for(data_dir, **extra)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / f"server-{self.port}.log"

    def start(self) -> "Server":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openi2v.cli", "serve", "--port", str(self.port), "--workers", str(self.workers)],
            env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group, as a terminal gives it
        answering(self.proc, self.url + "/healthz", self.log)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def interrupt(self, sig: int = signal.SIGINT) -> None:
        """A signal to the server's whole process group: Ctrl-C in its terminal (SIGINT), or a service
        manager stopping it (systemd's default sends SIGTERM to every process of the unit)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def new_key(self, usd: float = 10.0, scenario: str | None = None) -> str:
        extra = ("--scenario", scenario) if scenario else ()
        return cli(self.env, "keys", "create", "--name", "e2e", "--balance", str(usd), *extra).strip().splitlines()[-1]


class Workers:
    """``openi2v worker`` in a subprocess (workers without the API), with its /metrics and /readyz port."""

    def __init__(self, env: dict[str, str], *args: str, log: Path) -> None:
        self.env, self.args, self.log = env, args, log
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.metrics_port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Workers":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openi2v.cli", "worker", "--metrics-port", str(self.metrics_port), *self.args],
            env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        answering(self.proc, self.url + "/readyz", self.log)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
