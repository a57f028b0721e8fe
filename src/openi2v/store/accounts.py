"""API keys (stored as SHA-256 hashes) and the money ledger they own."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, func, insert, select, update

from openi2v.domain.prediction import OPEN
from openi2v.errors import NotFound, Unauthorized
from openi2v.store.database import Database, now
from openi2v.store.schema import api_keys, ledger, predictions

KEY_PREFIX = "oi2v_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_SCENARIO = select(api_keys.c.scenario).where(api_keys.c.id == bindparam("id"))
_LIVE_KEY = select(api_keys.c.id).where(api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None))


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    prefix: str
    created_at: float
    revoked: bool
    balance_micros: int
    scenario: str | None


class AccountStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create_key(self, name: str = "", balance_micros: int = 0, scenario: str | None = None) -> tuple[int, str]:
        """Return (key id, the key in clear). The clear key is shown once and never stored. ``scenario``: a
        checked SPEC its predictions follow (domain/scenarios.py)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.db.write() as conn:
            key_id = conn.execute(
                insert(api_keys).values(name=name, prefix=key[:12], key_hash=hash_key(key), created_at=now(),
                                        scenario=scenario)
            ).inserted_primary_key[0]
            if balance_micros:
                conn.execute(insert(ledger).values(
                    api_key_id=key_id, kind="credit", amount_micros=balance_micros, created_at=now()))
        return key_id, key

    def authenticate(self, key: str | None) -> int:
        """Map a bearer key to its id; the hash lookup is constant-time in the key's content."""
        if not key:
            raise Unauthorized("Unauthorized: missing API key (send Authorization: Bearer <key>)")
        row = self.db.fetch_one(_LIVE_KEY, key_hash=hash_key(key))
        if row is None:
            raise Unauthorized("Unauthorized: invalid API key")
        return row["id"]

    def scenario(self, key_id: int) -> str | None:
        """The scenario SPEC a key's predictions follow; None: they are real."""
        row = self.db.fetch_one(_SCENARIO, id=key_id)
        return row["scenario"] if row else None

    def set_scenario(self, key_id: int, scenario: str | None) -> None:
        """From the next submit on (the predictions already made keep their plans)."""
        with self.db.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(scenario=scenario))

    def find(self, key_id_or_prefix: str) -> int:
        """A key's id from its id or its prefix (as ``keys list`` shows them)."""
        name = key_id_or_prefix.rstrip("…")
        by_id = name.isascii() and name.isdecimal()
        col = api_keys.c.id if by_id else api_keys.c.prefix
        with self.db.read() as conn:
            found = conn.execute(select(api_keys.c.id).where(col == (int(name) if by_id else name))).all()
        if len(found) != 1:
            raise NotFound(f"no API key {key_id_or_prefix}" if not found else f"{key_id_or_prefix} names several keys")
        return found[0].id

    def revoke(self, key_id: int) -> None:
        """From now on the key is refused (401) by every API process: each request reads it afresh."""
        with self.db.write() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now()))

    def webhook_secret(self, key_id: int) -> str:
        """The key's webhook signing secret ("whsec_..."), made on first use.

        Every delivery asks for it, so the usual case is a plain read; only the first use
        takes the write lock (and re-reads there, in case another process made it first)."""
        query = select(api_keys.c.webhook_secret).where(api_keys.c.id == key_id)
        with self.db.read() as conn:
            secret = conn.execute(query).scalar()
        if secret:
            return secret
        with self.db.write() as conn:
            secret = conn.execute(query).scalar()
            if not secret:
                secret = "whsec_" + secrets.token_hex(24)
                conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(webhook_secret=secret))
        return secret

    def credit(self, key_id: int, micros: int) -> None:
        with self.db.write() as conn:
            conn.execute(insert(ledger).values(api_key_id=key_id, kind="credit", amount_micros=micros, created_at=now()))

    def statement(self, key_id: int, entries: int = 10) -> tuple[int, int, list[dict]]:
        """(balance, held by open predictions, the latest ``entries`` ledger entries, newest first)."""
        with self.db.read() as conn:
            rows = conn.execute(select(ledger).where(ledger.c.api_key_id == key_id)
                                .order_by(ledger.c.id.desc()).limit(entries)).all()
            return self.balance(key_id, conn), self._held(key_id, conn), [dict(r._mapping) for r in rows]

    def balance(self, key_id: int, conn=None) -> int:
        """Ledger sum minus what open predictions of this key are quoted at (held, not yet charged)."""
        if conn is None:
            with self.db.read() as conn:
                return self.balance(key_id, conn)
        total = conn.execute(
            select(func.coalesce(func.sum(ledger.c.amount_micros), 0)).where(ledger.c.api_key_id == key_id)
        ).scalar_one()
        return int(total) - self._held(key_id, conn)

    def _held(self, key_id: int, conn) -> int:
        return int(conn.execute(
            select(func.coalesce(func.sum(predictions.c.price_micros), 0)).where(
                predictions.c.api_key_id == key_id, predictions.c.status.in_(OPEN))
        ).scalar_one())

    def list_keys(self) -> list[KeyInfo]:
        with self.db.read() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.id)).all()
            return [KeyInfo(r.id, r.name, r.prefix, r.created_at, r.revoked_at is not None,
                            self.balance(r.id, conn), r.scenario) for r in rows]
