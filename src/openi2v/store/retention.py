"""Retention's records: which ended predictions and which uploads have expired, and the files it
removed, so that fetching one is a 410 that says so rather than a bare 404.

``sweeper.py`` deletes the files; this module decides which. Every API process sweeps, so each
step is taken by one of them only: a prediction is marked swept, an upload's row deleted, by
whichever gets there first. An upload that a queued or running prediction names is never swept.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update

from openi2v.domain.prediction import Status
from openi2v.storage.local import UPLOAD_URL, upload_url_path
from openi2v.store.accounts import OPEN_STATUSES
from openi2v.store.database import Database, insert_once
from openi2v.store.predictions import stored_files
from openi2v.store.schema import expired_files, predictions, uploads

ENDED = [s.value for s in Status if s.terminal]


@dataclass(frozen=True)
class Expired:
    """An ended prediction or an upload whose time has passed, and its files (URL paths)."""

    id: str  # the prediction's id, or the upload's token
    files: list[str]


class RetentionStore:
    def __init__(self, db: Database, retention_s: float) -> None:
        self.db = db
        self.retention_s = retention_s

    def assign_expiry(self) -> None:
        """Give an expiry to what has none: predictions that ended and uploads made while retention
        was off (or before it existed) expire ``retention_s`` after they ended or were made."""
        with self.db.write() as conn:
            conn.execute(update(predictions).where(
                predictions.c.swept_at.is_(None), predictions.c.expires_at.is_(None), predictions.c.status.in_(ENDED),
            ).values(expires_at=predictions.c.completed_at + self.retention_s))
            conn.execute(update(uploads).where(uploads.c.expires_at.is_(None))
                         .values(expires_at=uploads.c.created_at + self.retention_s))

    def expired_predictions(self, t: float, limit: int) -> list[Expired]:
        query = (select(predictions.c.id, predictions.c.outputs, predictions.c.details)
                 .where(predictions.c.swept_at.is_(None), predictions.c.expires_at < t).limit(limit))
        with self.db.read() as conn:
            return [Expired(r.id, stored_files(r.outputs, r.details)) for r in conn.execute(query)]

    def mark_swept(self, expired: Expired, t: float) -> bool:
        """The prediction's files are gone (the sweeper deleted them first); False when another
        sweeper marked it first, or it was deleted meanwhile."""
        with self.db.write() as conn:
            mine = update(predictions).where(predictions.c.id == expired.id, predictions.c.swept_at.is_(None))
            if conn.execute(mine.values(swept_at=t)).rowcount != 1:
                return False
            self._remember(conn, expired.files, t)
            return True

    def expired_uploads(self, t: float, limit: int) -> list[Expired]:
        """Uploads whose time has passed, but none that a queued or running prediction names."""
        with self.db.read() as conn:
            needed = set()
            for inputs in conn.execute(select(predictions.c.inputs).where(predictions.c.status.in_(OPEN_STATUSES))
                                       ).scalars():
                needed.update(m.group(1) for v in inputs.values() if isinstance(v, str)
                              for m in [UPLOAD_URL.search(v)] if m)
            query = select(uploads.c.token, uploads.c.filename).where(uploads.c.expires_at < t)
            if needed:
                query = query.where(uploads.c.token.notin_(needed))
            return [Expired(r.token, [upload_url_path(r.token, r.filename)])
                    for r in conn.execute(query.limit(limit))]

    def forget_upload(self, expired: Expired, t: float) -> bool:
        """Delete the upload's row, unless a submit has used it since (``UploadStore.use``); True when
        this call did, and its file is the caller's to delete."""
        with self.db.write() as conn:
            gone = conn.execute(delete(uploads).where(uploads.c.token == expired.id, uploads.c.expires_at < t))
            if gone.rowcount != 1:
                return False
            self._remember(conn, expired.files, t)
            return True

    def expired_file(self, path: str) -> float | None:
        """When retention removed the file at this URL path, if it did."""
        with self.db.read() as conn:
            return conn.execute(select(expired_files.c.expired_at).where(expired_files.c.path == path)).scalar()

    def prune(self, t: float) -> None:
        """Forget files removed more than one retention period ago (a fetch of one is then a 404)."""
        with self.db.write() as conn:
            conn.execute(delete(expired_files).where(expired_files.c.expired_at < t - self.retention_s))

    @staticmethod
    def _remember(conn, files: list[str], t: float) -> None:
        for path in files:
            insert_once(conn, expired_files, ["path"], path=path[:300], expired_at=t)
