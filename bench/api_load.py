"""Result-poll throughput and latency on loopback, 50 concurrent clients, while jobs run.

Starts a real server (1 in-process worker) with jobs queued so the worker renders
throughout, then polls GET /api/v3/predictions/{id}/result from 50 concurrent clients.
Baseline, same server, same run: GET /healthz (no key, no database).
Run: .venv/bin/python bench/api_load.py
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.config import KLING_MODEL  # noqa: E402
from tests import pictures  # noqa: E402
from tests.e2e.server import Server  # noqa: E402

CLIENTS, SECONDS = 50, 8.0


async def hammer(url: str, headers: dict) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.perf_counter() + SECONDS
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def one() -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.get(url, headers=headers)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t)
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(CLIENTS)))
        return time.perf_counter() - start, latencies


def report(name: str, elapsed: float, lat: list[float]) -> float:
    lat.sort()
    rate = len(lat) / elapsed
    print(f"{name:8s} {rate:7.0f} req/s   p50 {statistics.median(lat) * 1000:6.1f} ms   "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:6.1f} ms   ({len(lat)} requests)")
    return rate


def main() -> None:
    server = Server(Path(tempfile.mkdtemp()), workers=1).start()
    try:
        key = server.new_key(100.0)
        h = {"Authorization": f"Bearer {key}"}
        image = "data:image/png;base64," + base64.b64encode(pictures.png(800, 600)).decode()
        ids = [httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", json={"image": image, "prompt": "zoom in",
                          "duration": 10}, headers=h).json()["data"]["id"] for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 6)]
        base_rate = report("healthz", *asyncio.run(hammer(f"{server.url}/healthz", {})))
        poll_rate = report("poll", *asyncio.run(hammer(f"{server.url}/api/v3/predictions/{ids[0] if ids else 'x'}/result", h)))
        states = [httpx.get(f"{server.url}/api/v3/predictions/{i}/result", headers=h).json()["data"]["status"]
                  for i in ids]
        print(f"ratio poll/healthz {poll_rate / base_rate:.2f}; jobs during the run: {states}")
        print("target on 2 cores: >= 1000 polls/s, p99 < 50 ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
