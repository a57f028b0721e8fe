"""What the routes share: built once by ``create_app`` from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from openi2v.config import Settings
from openi2v.engines.registry import ServedModel, served_models
from openi2v.media.images import MediaFetcher
from openi2v.outbound import OutboundGuard
from openi2v.proxies import FORWARDED_HOST, FORWARDED_PROTO, Proxies, forwarded, host as well_formed
from openi2v.storage import Storage, from_settings
from openi2v.store import AccountStore, Database, PredictionStore, UploadStore
from openi2v.store.retention import RetentionStore
from openi2v.store.usage import UsageStore

T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    db: Database
    predictions: PredictionStore
    accounts: AccountStore
    uploads: UploadStore
    storage: Storage
    fetcher: MediaFetcher
    models: dict[str, ServedModel]  # the models served: listed and validated here, run by the workers
    retention: RetentionStore
    usage: UsageStore
    proxies: Proxies  # whose X-Forwarded-Host and -Proto base_url believes

    @classmethod
    def build(cls, settings: Settings, db: Database) -> "Context":
        storage = from_settings(settings)
        return cls(settings, db, PredictionStore.from_settings(db, settings), AccountStore(db),
                   UploadStore(db, settings.retention_s),
                   storage, MediaFetcher(storage, settings.fetch_timeout_s, OutboundGuard.from_settings(settings)),
                   served_models(settings), RetentionStore(db, settings.retention_s), UsageStore(db),
                   Proxies.parse(settings.forwarded_allow_ips))

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store read from a route.

        A read of the local SQLite file takes tens of microseconds and never waits on a
        writer (WAL), so it runs right on the event loop: a threadpool hop would cost
        more than the read. A networked database's reads go to the threadpool.
        """
        return fn(*args) if self.db.is_sqlite else await run_in_threadpool(fn, *args)

    def base_url(self, request: Request) -> str:
        """Absolute base for every URL we hand out, ending in '/'.

        ``public_url`` when set (behind a proxy); otherwise the request's own scheme and
        Host, read straight from the ASGI scope (this runs on every poll), or what a trusted
        proxy (``forwarded_allow_ips``) says they were in X-Forwarded-Proto and X-Forwarded-Host.
        """
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/") + "/"
        scope, headers = request.scope, request.headers
        host, scheme = well_formed(headers.get("host")), scope.get("scheme", "http")  # a malformed Host: ours
        forwarded_host, forwarded_proto = headers.get("x-forwarded-host"), headers.get("x-forwarded-proto")
        if (forwarded_host or forwarded_proto) and self.proxies.trust(scope.get("client")):
            host = forwarded(forwarded_host, FORWARDED_HOST) or host
            scheme = (forwarded(forwarded_proto, FORWARDED_PROTO) or scheme).lower()
        if not host:
            server_host, server_port = scope.get("server") or ("localhost", 80)
            host = f"{server_host}:{server_port}"
        return f"{scheme}://{host}{scope.get('root_path', '').rstrip('/')}/"


def ctx(request: Request) -> Context:
    return request.app.state.ctx


async def api_key(request: Request) -> int:
    """The caller's key id (401 if missing or unknown)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    c = ctx(request)
    return await c.read(c.accounts.authenticate, token.strip() if scheme.lower() == "bearer" else None)
