"""The webhook outbox: due deliveries are claimed with a lease, like jobs, so several API
processes (or machines) share the sending and a crashed sender's delivery is retried."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update

from openi2v.store.database import Database, now
from openi2v.store.schema import webhook_deliveries as wd


_NEXT_DUE = select(wd.c.next_at).where(wd.c.delivered_at.is_(None), wd.c.gave_up_at.is_(None)).order_by(
    wd.c.next_at).limit(1)


@dataclass(frozen=True)
class Delivery:
    prediction_id: str  # also the webhook-id header: the same on every retry
    api_key_id: int
    url: str
    attempts: int  # including the one now claimed


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def any_due(self) -> bool:
        """A cheap read first, so idle senders do not take the write lock to find nothing."""
        row = self.db.fetch_one(_NEXT_DUE)
        return row is not None and row["next_at"] <= now()

    def claim(self, owner: str, lease_s: float) -> Delivery | None:
        t = now()
        due = and_(wd.c.delivered_at.is_(None), wd.c.gave_up_at.is_(None), wd.c.next_at <= t,
                   or_(wd.c.lease_expires_at.is_(None), wd.c.lease_expires_at < t))
        pick = select(wd.c.prediction_id).where(due).order_by(wd.c.next_at).limit(1).with_for_update(skip_locked=True)
        with self.db.write() as conn:
            picked = conn.execute(pick).scalar()
            if picked is None:
                return None
            row = conn.execute(update(wd).where(wd.c.prediction_id == picked, due).values(
                lease_owner=owner, lease_expires_at=t + lease_s, attempts=wd.c.attempts + 1,
            ).returning(wd.c.prediction_id, wd.c.api_key_id, wd.c.url, wd.c.attempts)).first()
        return Delivery(*row) if row else None

    def delivered(self, prediction_id: str) -> None:
        self._finish(prediction_id, delivered_at=now(), last_error="")

    def failed(self, prediction_id: str, error: str, retry_in_s: float | None) -> None:
        """Record a failed attempt: retried after ``retry_in_s``, or given up when it is None."""
        if retry_in_s is None:
            self._finish(prediction_id, gave_up_at=now(), last_error=error)
        else:
            self._finish(prediction_id, next_at=now() + retry_in_s, last_error=error)

    def status(self, prediction_id: str) -> dict | None:
        with self.db.read() as conn:
            row = conn.execute(select(wd).where(wd.c.prediction_id == prediction_id)).first()
        return dict(row._mapping) if row else None

    def _finish(self, prediction_id: str, **values) -> None:
        with self.db.write() as conn:
            conn.execute(update(wd).where(wd.c.prediction_id == prediction_id).values(
                lease_owner=None, lease_expires_at=None, **values))
