"""Time from starting an OpenI2V for a test suite to its first accepted submit.

``openi2v.testing.TestServer`` (what the ``openi2v`` fixture starts: the API and a worker in the test's
own process) against the baseline measured in the same run: ``openi2v serve`` started as a process,
as a suite without the fixture would have to. Also: the first prediction's end (the instant engine
and the NSFW checker load then).

Run: .venv/bin/python bench/testing_start.py [rounds]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.config import KLING_MODEL  # noqa: E402
from openi2v.testing import TestServer  # noqa: E402
from tests import pictures  # noqa: E402
from tests.e2e.server import Server  # noqa: E402

BODY = {"image": pictures.data_uri(640, 480), "prompt": "pan left"}


def first_submit(url: str, key: str, started: float) -> tuple[float, float]:
    """Seconds from ``started`` to the first accepted submit, and to that prediction's end."""
    h = {"Authorization": f"Bearer {key}"}
    r = httpx.post(f"{url}/api/v3/{KLING_MODEL}", json=BODY, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    accepted = time.perf_counter() - started
    while httpx.get(f"{url}/api/v3/predictions/{r.json()['data']['id']}/result",
                    headers=h).json()["data"]["status"] not in ("completed", "failed"):
        time.sleep(0.02)
    return accepted, time.perf_counter() - started


def fixture_round() -> tuple[float, float]:
    started = time.perf_counter()
    with TestServer() as server:
        return first_submit(server.url, server.key, started)


def serve_round() -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        server = Server(Path(tmp), workers=1, OPENI2V_ENGINES=f'{{"{KLING_MODEL}": "instant"}}').start()
        try:
            key = server.new_key(10.0)  # a key: one more process, as a suite without the fixture would run
            return first_submit(server.url, key, started)
        finally:
            server.stop()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fixture = [fixture_round() for _ in range(rounds)]
    serve = [serve_round() for _ in range(rounds)]
    med = lambda xs, i: statistics.median(x[i] for x in xs)  # noqa: E731
    print(f"{rounds} rounds each, medians (seconds)")
    print(f"  openi2v.testing.TestServer, the first in this process (imports included): first submit accepted "
          f"{fixture[0][0]:.2f}, its video done {fixture[0][1]:.2f}")
    print(f"  openi2v.testing.TestServer: first submit accepted {med(fixture, 0):.2f}, its video done {med(fixture, 1):.2f}")
    print(f"  openi2v serve (a process):  first submit accepted {med(serve, 0):.2f}, its video done {med(serve, 1):.2f}")
    print(f"  ratio serve/fixture to the first accepted submit: {med(serve, 0) / med(fixture, 0):.1f}x")


if __name__ == "__main__":
    main()
