"""The HTTP server (api/server.py) against raw sockets: a connection that does not finish its request
headers within OPENI2V_HEADER_TIMEOUT_S is closed (slowloris); a slow body is not cut short."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e
HEADER_TIMEOUT_S = 2.0
SYNC_S = 2 * HEADER_TIMEOUT_S  # a sync-mode submit with no worker answers 5004 after this: a long answer
GUARD_S = 60  # a guard against a hang, not a speed limit: without the bound a server waits for ever


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "two-processes"])
def server(request, tmp_path_factory):
    """Both ways `serve` runs uvicorn: the app in-process, and a factory in several worker processes."""
    s = Server(tmp_path_factory.mktemp("http"), workers=0, OPENI2V_API_PROCESSES=str(request.param),
               OPENI2V_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S), OPENI2V_SYNC_TIMEOUT_S=str(SYNC_S)).start()
    yield s
    s.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=GUARD_S)


def closed_by_server(sock: socket.socket) -> bool:
    """Wait for the server to close the connection (True), or for it to send something (False)."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection before answering: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        body += chunk
    return int(head.split()[1]), body


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as sock:
        assert closed_by_server(sock)


def test_a_request_line_left_unfinished_is_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HT")
        assert closed_by_server(sock)


def test_headers_left_unfinished_on_a_kept_alive_connection_are_closed(server):
    with connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next request's headers never end
        assert closed_by_server(sock)


def test_a_slow_but_complete_request_is_answered(server):
    key = server.new_key(1.0)
    body = json.dumps({"model_id": KLING_MODEL, "inputs": {"duration": 10}}).encode()
    with connect(server) as sock:
        for part in (b"POST /api/v3/model/pri", b"cing HTTP/1.1\r\nHost: x\r\n",
                     f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n".encode(),
                     f"Content-Length: {len(body)}\r\n\r\n".encode()):
            sock.sendall(part)
            time.sleep(0.05)  # headers in pieces, well within the bound
        time.sleep(HEADER_TIMEOUT_S * 1.5)  # the body later than the bound: only headers are bounded
        sock.sendall(body)
        status, answer = read_response(sock)
    assert status == 200, answer
    assert json.loads(answer)["data"]["price"] == pytest.approx(0.70)


def test_a_long_answer_is_not_cut_by_a_request_pipelined_behind_it(server):
    """The bound is on a client's own headers: a request queued behind one still being answered
    waits on the server, and must not start the clock that would close the connection."""
    key = server.new_key(1.0)
    body = json.dumps({"image": pictures.data_uri(), "prompt": "x", "enable_sync_mode": True}).encode()
    with connect(server) as sock:
        sock.sendall(f"POST /api/v3/{KLING_MODEL} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.5)  # the submit is being answered (it waits SYNC_S) ...
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # ... when the next request's first line arrives
        status, answer = read_response(sock)
    assert status == 200 and json.loads(answer)["data"]["code"] == 5004, answer


def test_urls_follow_the_forwarded_host_of_a_proxy_on_loopback(server):
    """uvicorn's own proxy handling is off: with it, X-Forwarded-For would replace the peer the app
    checks against OPENI2V_FORWARDED_ALLOW_IPS (127.0.0.1 by default), and the forwarded host be ignored."""
    key = server.new_key(1.0)
    headers = {"Authorization": f"Bearer {key}", "X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "203.0.113.7"}
    r = httpx.post(f"{server.url}/api/v3/media/uploads", json={"filename": "a.png"}, headers=headers, timeout=GUARD_S)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["download_url"].startswith("https://api.example.com/media/")
