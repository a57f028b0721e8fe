"""The HTTP server: uvicorn, with a bound on how long a client may take to send its request headers.

uvicorn closes a keep-alive connection left idle between requests, but waits for ever on one
that is still sending a request's headers: a client that opens connections and sends a byte
now and then (slowloris) would hold them all. Here a connection whose request headers are not
complete within ``header_timeout_s`` of its opening, or of the first byte of its next request,
is closed. The body and the app's answer are not bounded here.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openi2v.config import Settings


def run(settings: Settings, host: str, port: int) -> None:
    """Answer HTTP until interrupted: in this process, or in ``settings.http_processes`` uvicorn
    workers sharing the port, each building its own app from the environment's settings."""
    # proxy_headers off: uvicorn would rewrite the scheme and the peer from X-Forwarded-* by its own list
    # (FORWARDED_ALLOW_IPS); the app reads them by OPENI2V_FORWARDED_ALLOW_IPS alone (api/context.py).
    options: dict[str, Any] = dict(
        host=host, port=port, log_level="warning", access_log=False, proxy_headers=False,
        http=functools.partial(HeaderTimeoutProtocol, header_timeout_s=settings.header_timeout_s))
    if settings.http_processes > 1:
        uvicorn.run("openi2v.api.app:app_from_env", factory=True, workers=settings.http_processes, **options)
    else:
        from openi2v.api.app import serving_app

        uvicorn.run(serving_app(settings), **options)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (the one ``uvicorn[standard]`` runs) with a header deadline:
    armed when the connection opens and when a request on it begins, cancelled when that
    request's headers are complete."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        busy = self.cycle is not None and not self.cycle.response_complete
        super().on_message_begin()
        if not busy:  # a request pipelined behind one still being answered waits on us, not on its client
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
