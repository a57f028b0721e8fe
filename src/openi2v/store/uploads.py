"""Uploads: a ticket (single-use, expiring PUT capability) and the file it receives.

An upload expires ``retention_s`` after it was made, or after the last submit that used it
(``use``), whichever is later; the sweeper (``sweeper.py``) then removes it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update

from openi2v.domain.prediction import expiry
from openi2v.errors import Conflict, NotFound
from openi2v.store.database import Database, now
from openi2v.store.schema import uploads


@dataclass(frozen=True)
class Upload:
    token: str
    api_key_id: int
    filename: str
    content_type: str
    size: int
    created_at: float
    put_expires_at: float
    received_at: float | None
    expires_at: float | None  # None: kept for ever

    @classmethod
    def from_row(cls, row: Any) -> "Upload":
        return cls(**row._mapping)


class UploadStore:
    def __init__(self, db: Database, retention_s: float = 0.0) -> None:
        self.db = db
        self.retention_s = retention_s

    def create(self, api_key_id: int, filename: str, content_type: str, size: int, ttl_s: float,
               received: bool = False) -> Upload:
        t = now()
        values = dict(token=secrets.token_urlsafe(24), api_key_id=api_key_id, filename=filename,
                      content_type=content_type, size=size, created_at=t, put_expires_at=t + ttl_s,
                      received_at=t if received else None, expires_at=self._expiry(t))
        with self.db.write() as conn:
            conn.execute(insert(uploads).values(**values))
        return Upload(**values)

    def get(self, token: str) -> Upload:
        with self.db.read() as conn:
            row = conn.execute(select(uploads).where(uploads.c.token == token)).first()
        if row is None:
            raise NotFound("upload not found")
        return Upload.from_row(row)

    def consume_ticket(self, token: str) -> Upload:
        """Mark a ticket used; a second PUT, or one after expiry, is refused."""
        upload = self.get(token)
        if upload.received_at is not None:
            raise Conflict("upload ticket already used")
        if upload.put_expires_at < now():
            raise NotFound("upload ticket expired")
        with self.db.write() as conn:
            done = conn.execute(update(uploads).where(uploads.c.token == token, uploads.c.received_at.is_(None))
                                .values(received_at=now())).rowcount
        if done != 1:
            raise Conflict("upload ticket already used")
        return upload

    def use(self, token: str) -> bool:
        """A submit names this upload: it is kept ``retention_s`` from now. False when it is gone (the
        sweeper removed it): the sweeper removes only uploads whose time has passed, so after a True
        it leaves this one alone until the prediction has ended."""
        with self.db.write() as conn:
            return conn.execute(update(uploads).where(uploads.c.token == token)
                                .values(expires_at=self._expiry(now()))).rowcount == 1

    def _expiry(self, t: float) -> float | None:
        return expiry(t, self.retention_s)

    def set_size(self, token: str, size: int) -> None:
        with self.db.write() as conn:
            conn.execute(update(uploads).where(uploads.c.token == token).values(size=size))
