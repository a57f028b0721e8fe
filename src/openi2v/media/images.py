"""Fetch what an input names: our own upload, a data URI, or a remote URL (through ``outbound.py``'s guard).

Bytes come back raw; ``domain/inputs.py`` judges them.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urljoin

import httpx

from openi2v.domain.inputs import decode_data_uri
from openi2v.errors import InvalidInput, MediaUnavailable
from openi2v import storage as storage_layout
from openi2v.outbound import NO_KEEPALIVE, OutboundGuard
from openi2v.storage import Storage

MAX_REDIRECTS = 3


def own_upload(ref: str) -> str | None:
    """The storage key when a URL names one of our uploads, whatever host it was given for."""
    try:
        path = httpx.URL(ref).path  # the parser check_url judged it with
    except httpx.InvalidURL:
        return None  # not ours: the guard refuses it by name
    return storage_layout.own_upload(path)


class MediaFetcher:
    def __init__(self, storage: Storage, timeout_s: float = 20.0, guard: OutboundGuard = OutboundGuard(),
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.storage = storage
        self.timeout_s = timeout_s
        self.guard = guard  # OutboundGuard.from_settings: which hosts a stranger's URL may reach
        self.transport = transport  # None: the network (a test passes an httpx.MockTransport)

    def local(self, field: str, ref: str, max_bytes: int) -> bytes | None:
        """Bytes for a data URI or one of our upload URLs (one over ``max_bytes`` cut just past it, for
        the caller's size check); None for a remote URL."""
        if ref.startswith("data:"):
            return decode_data_uri(field, ref)
        key = own_upload(ref)
        # None from read: not ours after all (no such upload): fetched like any URL
        return None if key is None else self.storage.read(key, max_bytes)

    def fetch(self, field: str, ref: str, max_bytes: int) -> bytes:
        data = self.local(field, ref, max_bytes)
        return data if data is not None else self._remote(field, ref, max_bytes)

    def _remote(self, field: str, url: str, max_bytes: int) -> bytes:
        """GET with every hop guarded, and the whole download (name lookups, redirects, headers,
        body) within ``timeout_s``: httpx's own timeout bounds each read, which a server trickling
        bytes would renew for ever. Async inside so that one deadline covers all of it."""
        try:
            return asyncio.run(self._download(field, url, max_bytes))
        except TimeoutError as exc:
            raise MediaUnavailable(f"{field}: could not download {url} (not done within {self.timeout_s:g} s)") \
                from exc

    async def _download(self, field: str, url: str, max_bytes: int) -> bytes:
        async with asyncio.timeout(self.timeout_s):
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False, trust_env=False,
                                             limits=NO_KEEPALIVE, transport=self.transport) as client:
                    for _ in range(MAX_REDIRECTS + 1):
                        # every hop is guarded: a redirect may point inward (the lookup blocks: a thread)
                        request = await asyncio.to_thread(self.guard.request, client, "GET", field, url)
                        request.headers["accept-encoding"] = "identity"  # the bytes as stored: nothing to inflate
                        resp = await client.send(request, stream=True)
                        try:
                            if not resp.is_redirect:
                                return await _read_capped(field, url, resp, max_bytes)
                            url = _next_hop(field, url, resp)
                        finally:
                            await resp.aclose()
                    raise MediaUnavailable(f"{field}: too many redirects, up to {url}")
            except httpx.HTTPError as exc:
                raise MediaUnavailable(f"{field}: could not download {url} ({type(exc).__name__}: {exc})") from exc


def _next_hop(field: str, url: str, resp: httpx.Response) -> str:
    """Where a redirect points, resolved against the URL as given (not the pinned address)."""
    try:
        return urljoin(url, resp.headers.get("location", ""))
    except ValueError as exc:
        raise MediaUnavailable(f"{field}: {url} redirects to an invalid URL") from exc


async def _read_capped(field: str, url: str, resp: httpx.Response, max_bytes: int) -> bytes:
    if resp.status_code != 200:
        raise MediaUnavailable(f"{field}: could not download {url} (HTTP {resp.status_code})")
    if resp.headers.get("content-encoding", "identity").lower() != "identity":  # we asked for none: no bombs
        raise MediaUnavailable(f"{field}: could not download {url} (sent compressed, which was not asked for)")
    data = bytearray()
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise InvalidInput(field, f"must be at most {max_bytes // 2**20} MB (the file at the URL is larger)")
    return bytes(data)
