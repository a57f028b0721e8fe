"""What the routes share: built once by ``create_app`` from the settings."""

from __future__ import annotations

from dataclasses import dataclass

import json

from fastapi import Request

from openi2v.config import Settings
from openi2v.errors import InvalidInput
from openi2v.media.images import MediaFetcher
from openi2v.storage.local import LocalStorage
from openi2v.store import AccountStore, Database, PredictionStore, UploadStore


@dataclass
class Context:
    settings: Settings
    db: Database
    predictions: PredictionStore
    accounts: AccountStore
    uploads: UploadStore
    storage: LocalStorage
    fetcher: MediaFetcher
    engine_descriptions: dict[str, str]

    @classmethod
    def build(cls, settings: Settings, db: Database, engine_descriptions: dict[str, str]) -> "Context":
        storage = LocalStorage(settings.data_dir)
        return cls(settings, db, PredictionStore(db, settings.max_attempts), AccountStore(db), UploadStore(db),
                   storage, MediaFetcher(storage, settings.fetch_timeout_s, settings.fetch_allow_private),
                   engine_descriptions)

    def base_url(self, request: Request) -> str:
        """Absolute base for every URL we hand out, ending in '/'."""
        return (self.settings.public_url.rstrip("/") + "/") if self.settings.public_url else str(request.base_url)


def ctx(request: Request) -> Context:
    return request.app.state.ctx


def api_key(request: Request) -> int:
    """The caller's key id (401 if missing or unknown)."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return ctx(request).accounts.authenticate(token.strip() if scheme.lower() == "bearer" else None)


async def json_body(request: Request, required: bool) -> dict:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise InvalidInput("body", "must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput("body", "must be valid JSON") from exc
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    return body
