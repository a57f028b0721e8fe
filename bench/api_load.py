"""Result-poll throughput and latency on loopback, 50 concurrent clients, while jobs run.

Starts a real server (``openi2v serve``, 1 worker process) with jobs queued so the worker
renders throughout, then polls GET /api/v3/predictions/{id}/result from 50
concurrent keep-alive connections. Baseline, same server, same run: GET /healthz
(no key, no database). The load generator is a lean asyncio HTTP/1.1 client (one
protocol object per connection, requests pre-encoded) so that it, not the server,
costs little of the 2 cores; wrk, when installed, is run too as a cross-check.

Both server shapes run: one API process and two (``--api-processes 2``, the default on 2 cores).

Run: .venv/bin/python bench/api_load.py [jobs]
"""

from __future__ import annotations

import asyncio
import base64
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.config import KLING_MODEL  # noqa: E402
from tests import pictures  # noqa: E402
from tests.e2e.server import Server  # noqa: E402

CLIENTS, SECONDS, WARMUP = 50, 8.0, 1.0


class Connection(asyncio.Protocol):
    """One keep-alive connection sending the same request again as soon as the answer is in."""

    def __init__(self, request: bytes, stop_at: float, record: list[float], done: asyncio.Future) -> None:
        self.request, self.stop_at, self.record, self.done = request, stop_at, record, done
        self.buffer = b""
        self.sent = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        if len(self.buffer) < head_end + 4 + length:
            return
        if not head.startswith(b"HTTP/1.1 200"):
            self.done.set_exception(RuntimeError(head.decode(errors="replace")))
            return
        self.buffer = self.buffer[head_end + 4 + length:]
        now = time.perf_counter()
        self.record.append(now - self.sent)
        if now < self.stop_at:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def hammer(url: str, headers: dict[str, str]) -> tuple[float, list[float]]:
    """(measured seconds, latencies of the requests answered after the warm-up)."""
    parts = urlsplit(url)
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    records: list[list[float]] = [[] for _ in range(CLIENTS)]
    start = time.perf_counter()
    stop_at = start + WARMUP + SECONDS
    waits = []
    for record in records:
        done = loop.create_future()
        await loop.create_connection(lambda r=record, d=done: Connection(request, stop_at, r, d),
                                     parts.hostname, parts.port)
        waits.append(done)
    await asyncio.gather(*waits)
    elapsed = time.perf_counter() - start
    # drop each connection's warm-up share, proportionally: keeps the steady state only
    kept = [lat for record in records for lat in record[int(len(record) * WARMUP / (WARMUP + SECONDS)):]]
    return elapsed * SECONDS / (WARMUP + SECONDS), kept


def report(name: str, elapsed: float, lat: list[float]) -> float:
    lat.sort()
    rate = len(lat) / elapsed
    print(f"{name:8s} {rate:7.0f} req/s   p50 {lat[len(lat) // 2] * 1000:6.1f} ms   "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:6.1f} ms   ({len(lat)} requests)")
    return rate


def wrk(url: str, headers: dict[str, str]) -> None:
    args = ["wrk", "-t1", f"-c{CLIENTS}", f"-d{SECONDS:g}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True).stdout
    rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p50, p99 = (re.search(rf"(?m)^\s+{q}%\s+(\S+)", out) for q in (50, 99))
    print(f"wrk      {float(rate.group(1)) if rate else 0:7.0f} req/s   p50 {p50.group(1) if p50 else '?'}   "
          f"p99 {p99.group(1) if p99 else '?'}")


def run(jobs: int, api_processes: int) -> None:
    print(f"--- serve --api-processes {api_processes} --workers 1, {jobs} jobs of 10 s at 720p queued")
    server = Server(Path(tempfile.mkdtemp()), workers=1, OPENI2V_SHORT_SIDE="720",
                    OPENI2V_API_PROCESSES=str(api_processes)).start()
    try:
        key = server.new_key(100.0)
        h = {"Authorization": f"Bearer {key}"}
        image = "data:image/png;base64," + base64.b64encode(pictures.png(1280, 853)).decode()
        ids = [httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image, "prompt": "zoom in",
                          "duration": 10}, headers=h, timeout=30).json()["data"]["id"] for _ in range(jobs)]
        poll_url = f"{server.url}/api/v3/predictions/{ids[0]}/result"
        base_rate = report("healthz", *asyncio.run(hammer(f"{server.url}/healthz", {})))
        poll_rate = report("poll", *asyncio.run(hammer(poll_url, h)))
        if shutil.which("wrk"):
            wrk(poll_url, h)
        states = [httpx.get(f"{server.url}/api/v3/predictions/{i}/result", headers=h).json()["data"]["status"]
                  for i in ids]
        print(f"ratio poll/healthz {poll_rate / base_rate:.2f}; jobs by the end: {states.count('completed')} completed, "
              f"{states.count('processing')} processing, {states.count('created')} queued "
              f"(a worker rendered throughout: {states.count('completed') < jobs})")
    finally:
        server.stop()


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    for api_processes in (1, 2):
        run(jobs, api_processes)
    print("target on 2 cores: >= 1000 polls/s, p99 < 50 ms")


if __name__ == "__main__":
    main()
