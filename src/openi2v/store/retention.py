"""Retention's records: which ended predictions and which uploads have expired, and the files it
removed, so that fetching one is a 410 that says so rather than a bare 404.

``sweeper.py`` deletes the files; this module decides which. Every API process sweeps, so each
step is recorded by one of them only: a prediction is marked swept, an upload's row deleted, by
whichever gets there first. An upload that a queued or running prediction names (``upload_refs``)
is never swept.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, exists, select, update

from openi2v.domain.prediction import ENDED, OPEN
from openi2v.store.database import Database, insert_once
from openi2v.domain.prediction import stored_files
from openi2v.store.schema import expired_files, predictions, upload_refs, uploads


_EXPIRED_AT = select(expired_files.c.expired_at).where(expired_files.c.path == bindparam("path"))


@dataclass(frozen=True)
class ExpiredPrediction:
    id: str
    files: list[str]  # URL paths, as its result names them


@dataclass(frozen=True)
class ExpiredUpload:
    token: str
    filename: str


class RetentionStore:
    def __init__(self, db: Database, retention_s: float) -> None:
        self.db = db
        self.retention_s = retention_s

    def assign_expiry(self) -> None:
        """Give an expiry to what has none: predictions that ended and uploads made while retention
        was off (or before it existed) expire ``retention_s`` after they ended or were made (the
        rule of ``domain.prediction.expiry``, in SQL)."""
        with self.db.write() as conn:
            conn.execute(update(predictions).where(
                predictions.c.swept_at.is_(None), predictions.c.expires_at.is_(None), predictions.c.status.in_(ENDED),
            ).values(expires_at=predictions.c.completed_at + self.retention_s))
            conn.execute(update(uploads).where(uploads.c.expires_at.is_(None))
                         .values(expires_at=uploads.c.created_at + self.retention_s))

    def clear_expiry(self) -> None:
        """Retention is off: nothing expires any more, and no result says it will."""
        with self.db.write() as conn:
            conn.execute(update(predictions).where(predictions.c.swept_at.is_(None), predictions.c.expires_at.isnot(None))
                         .values(expires_at=None))
            conn.execute(update(uploads).where(uploads.c.expires_at.isnot(None)).values(expires_at=None))

    def expired_predictions(self, t: float, limit: int) -> list[ExpiredPrediction]:
        query = (select(predictions.c.id, predictions.c.outputs, predictions.c.details)
                 .where(predictions.c.swept_at.is_(None), predictions.c.expires_at < t)
                 .order_by(predictions.c.expires_at).limit(limit))
        with self.db.read() as conn:
            return [ExpiredPrediction(r.id, stored_files(r.outputs, r.details)) for r in conn.execute(query)]

    def mark_swept(self, expired: ExpiredPrediction, t: float) -> bool:
        """The prediction's files are gone (the sweeper deleted them first); False when another
        sweeper marked it first, or it was deleted meanwhile."""
        with self.db.write() as conn:
            mine = update(predictions).where(predictions.c.id == expired.id, predictions.c.swept_at.is_(None))
            if conn.execute(mine.values(swept_at=t)).rowcount != 1:
                return False
            self._remember(conn, expired.files, t)
            return True

    def expired_uploads(self, t: float, limit: int) -> list[ExpiredUpload]:
        """Uploads whose time has passed, but none that a queued or running prediction names."""
        needed = exists().where(upload_refs.c.token == uploads.c.token, predictions.c.id == upload_refs.c.prediction_id,
                                predictions.c.status.in_(OPEN))
        query = (select(uploads.c.token, uploads.c.filename).where(uploads.c.expires_at < t, ~needed)
                 .order_by(uploads.c.expires_at).limit(limit))
        with self.db.read() as conn:
            return [ExpiredUpload(r.token, r.filename) for r in conn.execute(query)]

    def forget_upload(self, expired: ExpiredUpload, path: str, t: float) -> bool:
        """Delete the upload's row (its file is at URL ``path``), unless a submit has used it since
        (``UploadStore.use``); True when this call did, and the file is the caller's to delete."""
        with self.db.write() as conn:
            gone = conn.execute(delete(uploads).where(uploads.c.token == expired.token, uploads.c.expires_at < t))
            if gone.rowcount != 1:
                return False
            conn.execute(delete(upload_refs).where(upload_refs.c.token == expired.token))
            self._remember(conn, [path], t)
            return True

    def expired_file(self, path: str) -> float | None:
        """When retention removed the file at this URL path (one the storage could hold), if it did."""
        row = self.db.fetch_one(_EXPIRED_AT, path=path)
        return row and row["expired_at"]

    def prune(self, t: float) -> None:
        """Forget files removed more than one retention period ago (a fetch of one is then a 404)."""
        with self.db.write() as conn:
            conn.execute(delete(expired_files).where(expired_files.c.expired_at < t - self.retention_s))

    @staticmethod
    def _remember(conn, files: list[str], t: float) -> None:
        for path in files:
            insert_once(conn, expired_files, ["path"], path=path, expired_at=t)
