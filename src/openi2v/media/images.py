"""Fetch what an input names: our own upload, a data URI, or a remote URL (SSRF-guarded).

Bytes come back raw; ``domain/inputs.py`` judges them.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urljoin, urlsplit

import httpx

from openi2v.domain.inputs import decode_data_uri
from openi2v.errors import InvalidInput, MediaUnavailable, NotFound
from openi2v.storage.local import LocalStorage

OWN_UPLOAD = re.compile(r"/media/([A-Za-z0-9_-]{16,64})/([^/?#]+)")
MAX_REDIRECTS = 3


class MediaFetcher:
    def __init__(self, storage: LocalStorage, timeout_s: float = 20.0, allow_private: bool = False) -> None:
        self.storage = storage
        self.timeout_s = timeout_s
        self.allow_private = allow_private

    def local(self, field: str, ref: str) -> bytes | None:
        """Bytes for a data URI or one of our upload URLs; None for a remote URL."""
        if ref.startswith("data:"):
            return decode_data_uri(field, ref)
        m = OWN_UPLOAD.search(urlsplit(ref).path)
        if m is None:
            return None
        try:
            return self.storage.resolve("media", m.group(1), m.group(2)).read_bytes()
        except NotFound:
            return None  # not ours after all: fetch it like any URL

    def fetch(self, field: str, ref: str, max_bytes: int) -> bytes:
        data = self.local(field, ref)
        return data if data is not None else self._remote(field, ref, max_bytes)

    def _remote(self, field: str, url: str, max_bytes: int) -> bytes:
        try:
            with httpx.Client(timeout=self.timeout_s, follow_redirects=False) as client:
                for _ in range(MAX_REDIRECTS + 1):
                    check_public_url(field, url, self.allow_private)  # every hop: a redirect may point inward
                    with client.stream("GET", url) as resp:
                        if resp.is_redirect:
                            url = urljoin(url, resp.headers.get("location", ""))
                            continue
                        if resp.status_code != 200:
                            raise MediaUnavailable(f"{field}: could not download {url} (HTTP {resp.status_code})")
                        return _read_capped(field, resp, max_bytes)
                raise MediaUnavailable(f"{field}: too many redirects from {url}")
        except httpx.HTTPError as exc:
            raise MediaUnavailable(f"{field}: could not download {url} ({type(exc).__name__}: {exc})") from exc

def check_public_url(field: str, url: str, allow_private: bool = False) -> None:
    """Refuse non-http(s) URLs, and hosts that resolve to a private, loopback or link-local address
    (unless ``allow_private``): the server must not be a proxy into its own network."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaUnavailable(f"{field}: only http(s) URLs can be fetched")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise MediaUnavailable(f"{field}: could not resolve host {parts.hostname}") from exc
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not ip.is_global:
            raise MediaUnavailable(
                f"{field}: {parts.hostname} resolves to a non-public address ({ip}); "
                "set OPENI2V_FETCH_ALLOW_PRIVATE=true to allow it")


def _read_capped(field: str, resp: httpx.Response, max_bytes: int) -> bytes:
    data = bytearray()
    for chunk in resp.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise InvalidInput(field, f"must be at most {max_bytes // 2**20} MB (the file at the URL is larger)")
    return bytes(data)
