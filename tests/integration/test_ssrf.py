"""The outbound guard against real servers on this machine's loopback, which count every hit.

Every connection made here is to 127.0.0.x. Names are answered by a resolver double where a
test needs one; a public address is only ever "reached" through an httpx.MockTransport.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from openi2v.api.webhooks import WebhookSender
from openi2v.config import KLING_MODEL, Settings
from openi2v.domain.prediction import Status
from openi2v.errors import MediaUnavailable
from openi2v.media.images import MediaFetcher
from openi2v.outbound import AllowList, OutboundGuard, resolve_host
from openi2v.storage.local import LocalStorage
from openi2v.store import AccountStore
from openi2v.domain.prediction import Outcome
from tests import pictures
from tests.integration.test_api import Api

PUBLIC = "93.184.216.34"  # never connected to: only a MockTransport sees it
MAX = 10 * 2**20


class Site:
    """A tiny web server on a loopback address: ``/img.png`` answers ``body``, ``/go?to=URL``
    redirects there, POST answers 200. Every request is recorded (path, Host, TLS server name)."""

    def __init__(self, body: bytes, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.hits: list[dict[str, str]] = []
        self.server_names: list[str | None] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                site.hits.append({"method": "GET", "path": self.path, "host": self.headers.get("host", "")})
                if self.path.startswith("/go?to="):
                    self.send_response(302)
                    self.send_header("location", self.path.removeprefix("/go?to="))
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", "0")))
                site.hits.append({"method": "POST", "path": self.path, "host": self.headers.get("host", ""),
                                  "webhook-id": self.headers.get("webhook-id", "")})
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_port
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def png() -> bytes:
    return pictures.png(400, 300)


@pytest.fixture
def site(png):
    s = Site(png)
    yield s
    s.close()


class Counting:
    """A resolver double: each name's answers in turn (the last one repeats), every call recorded."""

    def __init__(self, answers: dict[str, list[str] | list[list[str]]]) -> None:
        self.answers = {k: v if isinstance(v[0], list) else [v] for k, v in answers.items()}
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        seen = self.calls.count(host)
        answers = self.answers[host]
        return answers[min(seen, len(answers)) - 1]


def fetcher(tmp_path, allow: str = "", resolve=resolve_host, transport=None) -> MediaFetcher:
    return MediaFetcher(LocalStorage(tmp_path / "data"), 5.0, OutboundGuard(AllowList.parse(allow), False, resolve),
                        transport)


def refusal(f: MediaFetcher, url: str) -> str:
    with pytest.raises(MediaUnavailable) as err:
        f.fetch("image", url, MAX)
    assert err.value.task_code == 1402
    return err.value.message


def not_public(host: str) -> str:
    return f"image: the host {host} is not a public address (set OPENI2V_FETCH_ALLOW to allow it)"


# Every way of writing this machine's own address that a URL allows (and some it does not).
LOOPBACK_FORMS = [
    ("http://127.0.0.1:{port}/img.png", "127.0.0.1"),
    ("HTTP://127.0.0.1:{port}/img.png", "127.0.0.1"),  # the scheme is case-insensitive
    ("http://localhost:{port}/img.png", "localhost"),
    ("http://LOCALHOST:{port}/img.png", "localhost"),
    ("http://127.1:{port}/img.png", "127.1"),
    ("http://127.0.0.2:{port}/img.png", "127.0.0.2"),
    ("http://0.0.0.0:{port}/img.png", "0.0.0.0"),  # Linux connects that to loopback
    ("http://2130706433:{port}/img.png", "2130706433"),  # decimal
    ("http://0x7f.1:{port}/img.png", "0x7f.1"),  # hex
    ("http://0x7f000001:{port}/img.png", "0x7f000001"),
    ("http://evil.example@127.0.0.1:{port}/img.png", "127.0.0.1"),  # userinfo is not the host
    ("http://[::1]:{port}/img.png", "::1"),
    ("http://[::ffff:127.0.0.1]:{port}/img.png", "::ffff:127.0.0.1"),  # IPv4-mapped
    ("http://[::ffff:7f00:1]:{port}/img.png", "::ffff:7f00:1"),
    ("http://[::7f00:1]:{port}/img.png", "::7f00:1"),  # IPv4-compatible
    ("http://[::ffff:0:7f00:1]:{port}/img.png", "::ffff:0:7f00:1"),  # IPv4-translated
    ("http://[64:ff9b::7f00:1]:{port}/img.png", "64:ff9b::7f00:1"),  # NAT64
    ("http://[64:ff9b:1::7f00:1]:{port}/img.png", "64:ff9b:1::7f00:1"),  # local-use NAT64
    ("http://[2002:7f00:1::]:{port}/img.png", "2002:7f00:1::"),  # 6to4
    ("http://[2001:0:808:808::80ff:fffe]:{port}/img.png", "2001:0:808:808::80ff:fffe"),  # Teredo, client 127.0.0.1
]


@pytest.mark.parametrize("form,host", LOOPBACK_FORMS)
def test_every_form_of_loopback_is_refused_before_any_connection(tmp_path, site, form, host):
    assert refusal(fetcher(tmp_path), form.format(port=site.port)) == not_public(host)
    assert site.hits == []


def test_octal_loopback_is_refused_as_a_malformed_url(tmp_path, site):
    assert refusal(fetcher(tmp_path), f"http://0177.0.0.1:{site.port}/img.png").startswith("image: is not a valid URL")
    assert site.hits == []


def test_the_same_server_is_reachable_once_allowed(tmp_path, site, png):
    """The control for the table above: the refusals are the guard's, not a dead server."""
    assert fetcher(tmp_path, "127.0.0.1").fetch("image", f"{site.url}/img.png", MAX) == png
    assert site.hits == [{"method": "GET", "path": "/img.png", "host": f"127.0.0.1:{site.port}"}]


@pytest.mark.parametrize("allow,url", [
    ("trusted.test", "http://trusted.test:{port}/img.png"),  # by name (whatever it resolves to)
    ("127.0.0.1", "http://2130706433:{port}/img.png"),  # by IP (however the URL spells it)
    ("10.0.0.0/8,127.0.0.0/30", "http://trusted.test:{port}/img.png"),  # by CIDR
])
def test_the_allow_list_admits_a_trusted_local_host(tmp_path, site, png, allow, url):
    named = "trusted.test" in url  # the numeric spelling goes to getaddrinfo, which parses it without DNS
    f = fetcher(tmp_path, allow, Counting({"trusted.test": ["127.0.0.1"]}) if named else resolve_host)
    assert f.fetch("image", url.format(port=site.port), MAX) == png
    assert len(site.hits) == 1


def test_an_allow_entry_admits_only_what_it_names(tmp_path, site):
    assert refusal(fetcher(tmp_path, "127.0.0.2,localhost.example,10.0.0.0/8"),
                   f"{site.url}/img.png") == not_public("127.0.0.1")
    assert site.hits == []


def test_a_redirect_into_loopback_is_refused_at_the_hop(tmp_path, site, png):
    redirector = Site(b"", host="127.0.0.2")
    try:
        start = f"{redirector.url}/go?to={site.url}/img.png"
        assert refusal(fetcher(tmp_path, "127.0.0.2"), start) == not_public("127.0.0.1")
        assert [h["path"] for h in redirector.hits] == [f"/go?to={site.url}/img.png"] and site.hits == []
        # the control: with both allowed, the same redirect is followed to the picture
        assert fetcher(tmp_path, "127.0.0.2,127.0.0.1").fetch("image", start, MAX) == png
        assert len(site.hits) == 1
    finally:
        redirector.close()


def test_a_relative_redirect_stays_on_the_pinned_name(tmp_path, site, png):
    resolver = Counting({"media.test": ["127.0.0.1"]})
    f = fetcher(tmp_path, "media.test", resolver)
    assert f.fetch("image", f"http://media.test:{site.port}/go?to=/img.png", MAX) == png
    assert [h["host"] for h in site.hits] == [f"media.test:{site.port}"] * 2
    assert resolver.calls == ["media.test", "media.test"]  # each hop resolved once


def test_a_rebinding_name_cannot_swap_in_loopback_after_the_check(tmp_path, site, png):
    """The name answers a public address to the check and loopback to anyone asking again: the
    request goes to the address that was checked, so the second answer is never used."""
    resolver = Counting({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    sent: list[httpx.Request] = []

    def public_host(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, content=png)

    f = fetcher(tmp_path, resolve=resolver, transport=httpx.MockTransport(public_host))
    assert f.fetch("image", f"http://rebind.test:{site.port}/img.png", MAX) == png
    assert resolver.calls == ["rebind.test"]
    (request,) = sent
    assert (request.url.host, request.url.port) == (PUBLIC, site.port)
    assert request.headers["host"] == f"rebind.test:{site.port}"
    assert request.extensions["sni_hostname"] == "rebind.test"
    assert site.hits == []


def test_a_redirect_back_to_a_rebinding_name_is_resolved_and_refused(tmp_path, site):
    resolver = Counting({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    sent: list[httpx.Request] = []

    def bounce(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(302, headers={"location": f"http://rebind.test:{site.port}/img.png"})

    f = fetcher(tmp_path, resolve=resolver, transport=httpx.MockTransport(bounce))
    assert refusal(f, f"http://rebind.test:{site.port}/start") == not_public("rebind.test")
    assert resolver.calls == ["rebind.test", "rebind.test"] and len(sent) == 1 and site.hits == []


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for the name ``trusted.test`` only (not for 127.0.0.1)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = str(d / "cert.pem"), str(d / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=trusted.test",
                    "-addext", "subjectAltName=DNS:trusted.test"], check=True, capture_output=True)
    return cert, key


def test_tls_to_a_pinned_address_checks_the_certificate_against_the_name(tmp_path, png, certificate):
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    secure = Site(png, tls=server_tls)
    try:
        client_tls = ssl.create_default_context(cafile=cert)
        f = fetcher(tmp_path, "trusted.test", Counting({"trusted.test": ["127.0.0.1"]}),
                    httpx.AsyncHTTPTransport(verify=client_tls))
        assert f.fetch("image", f"https://trusted.test:{secure.port}/img.png", MAX) == png
        assert secure.server_names == ["trusted.test"]
        assert secure.hits[0]["host"] == f"trusted.test:{secure.port}"
        # the certificate does not name 127.0.0.1: asked for by address, the handshake fails
        g = OutboundGuard(AllowList.parse("127.0.0.1"))
        with pytest.raises(MediaUnavailable, match="could not download"):
            MediaFetcher(LocalStorage(tmp_path / "data"), 5.0, g, httpx.AsyncHTTPTransport(verify=client_tls)).fetch(
                "image", f"https://127.0.0.1:{secure.port}/img.png", MAX)
    finally:
        secure.close()


# --- through the API and a worker ----------------------------------------------------------------

def test_a_refused_image_fails_the_prediction_with_1402_and_no_address(settings, site):
    api = Api(settings)
    try:
        pid = api.submit({"image": f"http://localhost:{site.port}/img.png", "prompt": "x"}).json()["data"]["id"]
        api.drain()
        d = api.result(pid).json()["data"]
        assert d["status"] == "failed" and d["code"] == 1402
        assert d["error"] == not_public("localhost") and "127.0.0.1" not in d["error"]
        assert site.hits == []
    finally:
        api.client.close()


# --- webhooks ---------------------------------------------------------------------------------------

class Outbox:
    """A prediction that ended with a webhook due, and the sender that delivers it, attempt by attempt."""

    def __init__(self, settings, url: str) -> None:
        self.api = Api(settings)
        ctx = self.api.app.state.ctx
        key_id = AccountStore(ctx.db).create_key("hooks", 10**6)[0]
        self.pid = ctx.predictions.create(key_id, KLING_MODEL, {"prompt": "x"}, 1, 0,
                                          webhook={"url": url, "base": "http://testserver/"}).id
        assert ctx.predictions.finish(self.pid, None, Outcome(Status.FAILED, error="x", error_code=1403))
        self.sender = WebhookSender(ctx)

    def attempt(self, transport: httpx.AsyncBaseTransport | None = None) -> bool:
        """One delivery attempt if one is due; False when none is."""
        delivery = self.sender.store.claim("test", 60.0)
        if delivery is None:
            return False

        async def send() -> None:
            async with httpx.AsyncClient(timeout=5.0, transport=transport) as client:
                await self.sender.deliver(client, delivery)

        asyncio.run(send())
        return True

    def until_done(self, transport: httpx.AsyncBaseTransport | None = None, most: int = 10) -> int:
        """Attempts until none is due; raises if the schedule has not ended after ``most``."""
        for n in range(most):
            if not self.attempt(transport):
                return n
        raise AssertionError(f"still due after {most} attempts: {self.status()}")

    def status(self) -> dict:
        return self.sender.store.status(self.pid)

    def close(self) -> None:
        self.api.client.close()


@pytest.fixture
def outbox_factory(settings):
    made: list[Outbox] = []

    def make(url: str, **overrides) -> Outbox:
        made.append(Outbox(settings.model_copy(update=overrides), url))
        return made[-1]

    yield make
    for o in made:
        o.close()


def test_a_webhook_to_loopback_is_refused_and_its_schedule_ends(outbox_factory, site, monkeypatch):
    monkeypatch.setenv("OPENI2V_WEBHOOK_RETRY_DELAYS", "0,0")
    outbox = outbox_factory(f"{site.url}/hook", webhook_retry_delays=Settings().webhook_retry_delays)
    assert outbox.until_done() == 3  # the first attempt and two retries
    s = outbox.status()
    assert s["attempts"] == 3 and s["gave_up_at"] is not None and s["delivered_at"] is None
    assert s["last_error"] == "webhook: the host 127.0.0.1 is not a public address (set OPENI2V_FETCH_ALLOW to allow it)"
    assert site.hits == []


def test_a_webhook_to_an_allowed_local_host_is_delivered(outbox_factory, site):
    outbox = outbox_factory(f"{site.url}/hook", fetch_allow="127.0.0.0/8")
    assert outbox.until_done() == 1
    assert outbox.status()["delivered_at"] is not None
    assert site.hits == [{"method": "POST", "path": "/hook", "host": f"127.0.0.1:{site.port}",
                          "webhook-id": outbox.pid}]


def test_a_webhook_to_port_99999_is_a_failed_attempt_and_its_schedule_ends(outbox_factory):
    outbox = outbox_factory("http://127.0.0.1:99999/hook", fetch_allow="127.0.0.1", webhook_retry_delays=(0, 0))
    assert outbox.until_done() == 3
    s = outbox.status()
    assert s["gave_up_at"] is not None and s["last_error"] == "webhook: is not a valid URL (the port must be between 1 and 65535)"


def test_any_error_in_a_delivery_is_a_failed_attempt(outbox_factory, site):
    """Not only httpx's errors: whatever the sending raises, the attempt counts and the schedule ends."""

    def explode(request: httpx.Request) -> httpx.Response:
        raise OverflowError("getsockaddrarg: port must be 0-65535.")

    outbox = outbox_factory(f"{site.url}/hook", fetch_allow="127.0.0.1", webhook_retry_delays=(0,))
    assert outbox.until_done(httpx.MockTransport(explode)) == 2
    s = outbox.status()
    assert s["attempts"] == 2 and s["gave_up_at"] is not None
    assert s["last_error"] == "OverflowError: getsockaddrarg: port must be 0-65535."


def test_a_failed_webhook_waits_the_configured_delay(outbox_factory, site):
    outbox = outbox_factory(f"{site.url}/hook", webhook_retry_delays=(3600,))
    assert outbox.until_done() == 1  # refused, then not due again for an hour
    s = outbox.status()
    assert s["gave_up_at"] is None and s["next_at"] - s["created_at"] >= 3599
