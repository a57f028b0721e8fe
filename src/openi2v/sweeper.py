"""Retention: delete outputs and uploads whose time has passed.

Every API process runs a ``Sweeper`` (and ``openi2v sweep`` runs one pass, for cron); they may
run at once: two may delete the same files (a file already gone is no error), and
``store/retention.py`` records each expired thing once. A prediction's
files are deleted before it is marked swept (a crash in between deletes them again next time);
an upload's row goes before its file, so a submit that names it meanwhile is told it expired (and a
file that then cannot be deleted answers 410 all the same: ``api/routes/media.py``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from openi2v.config import Settings
from openi2v.errors import StorageError
from openi2v.storage import Storage, upload_key
from openi2v.store import Database
from openi2v.store.database import now
from openi2v.store.retention import RetentionStore

log = logging.getLogger("openi2v.sweeper")
BATCH = 500  # expired predictions, and uploads, handled per pass


@dataclass(frozen=True)
class Swept:
    predictions: int  # whose files this pass removed
    uploads: int
    full: bool = False  # a whole batch of either was found: more may be waiting


class Sweeper:
    def __init__(self, db: Database, storage: Storage, settings: Settings) -> None:
        self.store = RetentionStore(db, settings.retention_s)
        self.storage = storage
        self.interval_s = settings.sweep_interval_s

    def sweep(self, t: float | None = None) -> Swept:
        """One pass at time ``t`` (now by default). A file that cannot be deleted is logged and passed
        over (a prediction's is tried again next pass); it never stops the rest."""
        if not self.store.retention_s:
            self.store.clear_expiry()
            return Swept(0, 0)
        t = now() if t is None else t
        self.store.assign_expiry()
        ended, swept_predictions = self.store.expired_predictions(t, BATCH), 0
        for expired in ended:
            if self._delete(*expired.files):
                swept_predictions += self.store.mark_swept(expired, t)
        uploads, swept_uploads = self.store.expired_uploads(t, BATCH), 0
        for upload in uploads:
            path = upload_key(upload.token, upload.filename)
            if self.store.forget_upload(upload, path, t):  # the row first: a submit naming it now is told
                self._delete(path)
                swept_uploads += 1
        self.store.prune(t)
        if swept_predictions or swept_uploads:
            log.info("retention: removed the files of %d predictions and %d uploads", swept_predictions, swept_uploads)
        return Swept(swept_predictions, swept_uploads, BATCH in (len(ended), len(uploads)))

    def sweep_all(self) -> Swept:
        """Passes until one finds less than a whole batch; what they removed in all."""
        predictions = uploads = 0
        while True:
            swept = self.sweep()
            predictions, uploads = predictions + swept.predictions, uploads + swept.uploads
            if not swept.full:
                return Swept(predictions, uploads)

    def _delete(self, *paths: str) -> bool:
        try:
            for path in paths:
                self.storage.delete(path)
        except StorageError:
            log.exception("retention: could not delete %s", paths)
            return False
        return True

    async def run(self) -> None:
        """Until cancelled: all that has expired, every ``interval_s``. With retention off, one pass
        that takes back the expiry times already given."""
        while True:
            try:
                await run_in_threadpool(self.sweep_all)
            except Exception:  # the database briefly failing: the next pass tries again
                log.exception("retention sweep failed")
            if not self.store.retention_s:
                return
            await asyncio.sleep(self.interval_s)
