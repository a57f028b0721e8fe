"""Servers we fetch from or call back cannot hold a worker or the webhook sender, nor blow up in
memory: each download and each delivery attempt has a deadline for the whole of it, not only for
each read (a real server on loopback sends one byte at a time, well inside httpx's per-read
timeout), and a compressed answer nobody asked for is refused, not inflated."""

from __future__ import annotations

import socket
import threading
import time

import gzip

import httpx
import pytest

from openi2v.errors import MediaUnavailable
from openi2v.media.images import MediaFetcher
from openi2v.outbound import OutboundGuard
from openi2v.storage.local import LocalStorage
from tests.integration.test_ssrf import outbox_factory  # noqa: F401 (a fixture)


class Trickle:
    """Answers every connection with a status line, then one more header byte every ``gap_s``
    until the client goes away (or ``limit_s`` passes, a guard for the test itself)."""

    def __init__(self, gap_s: float = 0.2, limit_s: float = 60.0) -> None:
        self.gap_s, self.limit_s = gap_s, limit_s
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.open_connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        self.open_connections += 1
        end = time.monotonic() + self.limit_s
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while time.monotonic() < end:
                time.sleep(self.gap_s)
                conn.sendall(b"a")
        except OSError:
            pass  # the client gave up: what the deadline is for
        finally:
            self.open_connections -= 1
            conn.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def trickle():
    t = Trickle()
    yield t
    t.close()


def test_a_trickling_image_server_fails_the_download_at_its_deadline(tmp_path, trickle):
    fetcher = MediaFetcher(LocalStorage(tmp_path), timeout_s=1.0, guard=OutboundGuard(allow_all=True))
    with pytest.raises(MediaUnavailable, match=r"^image: could not download .* \(not done within 1 s\)"):
        fetcher.fetch("image", f"{trickle.url}/a.png", 10 * 2**20)


def test_a_trickling_webhook_receiver_is_one_failed_attempt(outbox_factory, trickle):  # noqa: F811
    outbox = outbox_factory(f"{trickle.url}/hook", fetch_allow_private=True, webhook_timeout_s=1.0,
                            webhook_retry_delays=(3600,))
    assert outbox.attempt()
    status = outbox.status()
    assert status["attempts"] == 1 and status["delivered_at"] is None
    assert status["last_error"] == "no answer within 1 s" and status["gave_up_at"] is None  # retried later


def test_a_compressed_answer_is_refused_not_inflated(tmp_path):
    bomb = gzip.compress(b"\0" * (64 * 2**20))  # 64 MB of zeros in 64 KB

    def serve(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "identity"
        return httpx.Response(200, content=bomb, headers={"content-encoding": "gzip"})

    fetcher = MediaFetcher(LocalStorage(tmp_path), 5.0, OutboundGuard(allow_all=True), httpx.MockTransport(serve))
    with pytest.raises(MediaUnavailable, match=r"sent compressed, which was not asked for"):
        fetcher.fetch("image", "http://127.0.0.1:9/a.png", 10 * 2**20)
