"""Oversized and costly requests, sent as an attacker would, with the API process's peak memory
measured while each runs. Used by tests/e2e/test_memory.py (bounds) and bench/api_memory.py (figures)."""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import httpx
from PIL import Image

from openi2v.config import KLING_MODEL

MB = 2**20


class PeakRss:
    """The highest resident set size of a process while the ``with`` block runs, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self.status = Path(f"/proc/{pid}/status")
        self.peak = self.start = rss(self.status)
        self._done = threading.Event()

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, rss(self.status))

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss(self.status))

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / MB


def rss(status: Path) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in {status}")


def _chunks(total: int, size: int = MB) -> Iterator[bytes]:
    block = b"\0" * size
    for _ in range(total // size):
        yield block


def _send(call: Callable[[], httpx.Response]) -> int | None:
    """The answer's status, or None when the server closed the connection while the body was still
    being sent (it answers 413 and stops reading; a client that writes first may see only the close)."""
    try:
        return call().status_code
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        return None


def chunked_put(url: str, key: str, total: int = 1024 * MB) -> int | None:
    """A ticket's PUT with no Content-Length (chunked), ``total`` bytes long."""
    h = {"Authorization": f"Bearer {key}"}
    ticket = httpx.post(f"{url}/api/v3/media/uploads", json={"filename": "big.png", "content_type": "image/png"},
                        headers=h).json()["data"]["upload"]["url"]
    return _send(lambda: httpx.put(ticket, content=_chunks(total), timeout=120))


def big_json(url: str, key: str, total: int = 300 * MB, chunked: bool = False) -> int | None:
    """A submit whose JSON body is ``total`` bytes: a prompt of that length."""
    head, tail = b'{"image":"https://example.com/a.png","prompt":"', b'"}'
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def body() -> Iterator[bytes]:
        yield head
        yield from _chunks(total, MB) if chunked else ()
        yield tail

    content = body() if chunked else head + b"a" * total + tail
    return _send(lambda: httpx.post(f"{url}/api/v3/{KLING_MODEL}", content=content, headers=h, timeout=120))


def many_values(url: str, key: str, total: int = 30 * MB) -> int | None:
    """A submit under the size limit made of tiny values (``[{},{},...]``): a few bytes each on the
    wire, about a hundred once parsed."""
    h = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    content = b'{"prompt":[' + b"{}," * (total // 3) + b"{}]}"
    return _send(lambda: httpx.post(f"{url}/api/v3/{KLING_MODEL}", content=content, headers=h, timeout=120))


def many_pixels_png() -> bytes:
    """A small PNG (tens of KB) just under the 40-megapixel cap: 160 MB of pixels once decoded."""
    buf = io.BytesIO()
    Image.new("L", (7300, 5470), 128).save(buf, "PNG")
    return buf.getvalue()


def many_pixels_submits(url: str, key: str, n: int = 10) -> list[int]:
    """``n`` submits at once, each with a many-pixel PNG inline."""
    uri = "data:image/png;base64," + base64.b64encode(many_pixels_png()).decode()
    h = {"Authorization": f"Bearer {key}"}

    def one(i: int) -> int:
        return httpx.post(f"{url}/api/v3/{KLING_MODEL}", json={"image": uri, "prompt": f"zoom {i}"}, headers=h,
                          timeout=120).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))
