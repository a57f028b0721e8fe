"""Predictions: the durable job queue.

Life of a row: ``create`` (status created, money held by its quote) -> ``claim`` (one
worker, with a lease) -> ``heartbeat`` (extends the lease, records progress) -> ``finish``
(completed + charge, or failed) or ``requeue`` (back to the queue). ``cancel`` ends a
queued or running row at once; the worker running it finds out at its engine's next check
(``holds``: the row is no longer its) and stops the engine. A worker that dies stops
heart-beating; once its lease expires the row is claimed again, until ``max_attempts`` is
spent, and then it fails with "worker lost". Every status change, each of these, goes
through ``_transition``; the legal moves are in domain/prediction.py.

Limits per key (domain/limits.py) are kept here, in the rows every process shares: ``create``
counts a key's waiting predictions and its submit rate under the lock of the key's row, and
``claim`` skips a key already running its limit (locking the key's row on PostgreSQL, where
workers claim at once), so the limits hold across API processes and workers on any machine.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, or_, select, update

from openi2v import metrics
from openi2v.domain.limits import Limits
from openi2v.domain.prediction import OPEN, Outcome, Prediction, Status, can_move, expiry
from openi2v.domain.scenarios import Plan
from openi2v.errors import Conflict, InsufficientBalance, NotFound, Unauthorized
from openi2v.store.accounts import AccountStore
from openi2v.store.database import Database, insert_once, lock, now
from openi2v.store.schema import api_keys, idempotency_keys, ledger, predictions, upload_refs, webhook_deliveries


# The poll path's reads, built once (Database.fetch_one compiles each once per dialect).
_BY_ID = select(predictions).where(predictions.c.id == bindparam("id"))
_BY_ID_AND_KEY = _BY_ID.where(predictions.c.api_key_id == bindparam("key"))
_QUEUED = predictions.c.status == Status.CREATED.value
_RUNNING = predictions.c.status == Status.PROCESSING.value
_QUEUED_BEFORE = select(func.count().label("n")).select_from(predictions).where(
    _QUEUED, predictions.c.created_at < bindparam("created_at"))
_HOLDER = select(predictions.c.status, predictions.c.lease_owner).where(predictions.c.id == bindparam("id"))


def _keys_at(limit: int):
    """The keys running ``limit`` predictions or more: one pass over the running rows, not one per
    queued row."""
    return (select(predictions.c.api_key_id).where(_RUNNING).group_by(predictions.c.api_key_id)
            .having(func.count() >= limit))


PREDICTION_ID = re.compile(r"[0-9a-f]{32}")
EXHAUSTED_CHECK_S = 5.0  # how often a claiming worker fails the jobs whose workers died on every attempt
CLAIM_TRIES = 4  # keys found at their running limit while claiming, passed over before giving up a round
IDEMPOTENCY_S = 24 * 3600  # how long an Idempotency-Key names its prediction


@dataclass(frozen=True)
class Idempotency:
    """A client's Idempotency-Key and the hash of the request it came with."""

    key: str
    request_hash: str


class PredictionStore:
    def __init__(self, db: Database, max_attempts: int = 3, limits: Limits = Limits(),
                 retention_s: float = 0.0) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self.limits = limits
        self.retention_s = retention_s  # an ended prediction's files expire this long after (0: never)
        self._accounts = AccountStore(db)
        self._exhausted_at = -math.inf  # when this store last failed the jobs that ran out of attempts
        self._queued_before = _QUEUED_BEFORE
        if limits.running:  # the predictions of another key at its running limit are passed over
            self._queued_before = _QUEUED_BEFORE.where(or_(
                predictions.c.api_key_id == bindparam("key"), predictions.c.api_key_id.notin_(_keys_at(limits.running))))

    @classmethod
    def from_settings(cls, db: Database, settings) -> "PredictionStore":
        return cls(db, settings.max_attempts, Limits.from_settings(settings), settings.retention_s)

    # --- the API side -------------------------------------------------------------

    def create(self, api_key_id: int, model: str, inputs: dict, seed: int, price_micros: int,
               base64_output: bool = False, webhook: dict[str, str] | None = None,
               idempotency: Idempotency | None = None, uploads: tuple[str, ...] = (), plan: Plan = Plan()) -> Prediction:
        """Insert a queued prediction if the key can afford it (its quote is held until it ends).

        With ``idempotency``, a key already used in the last ``IDEMPOTENCY_S`` returns the prediction
        it made (the same request) or is a Conflict (another request); submits of one API key are
        serialised here, so concurrent identical submits make exactly one prediction. ``uploads``: the
        tokens of the uploads its inputs name, kept while it is open (``store/retention.py``). ``plan``: what a
        scenario decided for it (held in the queue ``plan.queue_s`` before a worker may start it)."""
        t = now()
        row = dict(
            id=secrets.token_hex(16), api_key_id=api_key_id, model=model, status=Status.CREATED.value,
            inputs=inputs, seed=seed, base64_output=base64_output, price_micros=price_micros,
            created_at=t, outputs=[], nsfw=[], error="", inference_ms=0, progress=0, details={}, attempts=0,
            webhook=webhook, scenario=plan.to_json() or None, not_before=t + plan.queue_s if plan.queue_s else None,
        )
        with self.db.write() as conn:
            # Touching the key row serialises submits of one key on every dialect; a key revoked since the
            # request was authenticated touches nothing, and nothing is created for it.
            live = and_(api_keys.c.id == api_key_id, api_keys.c.revoked_at.is_(None))
            if conn.execute(update(api_keys).where(live).values(touched_at=now())).rowcount != 1:
                raise Unauthorized("Unauthorized: invalid API key")
            if idempotency is not None and (earlier := self._replay(conn, api_key_id, idempotency, purge=True)):
                return earlier
            self._admit(conn, api_key_id, row["created_at"])
            if self._accounts.balance(api_key_id, conn) < price_micros:
                raise InsufficientBalance("insufficient balance")
            conn.execute(predictions.insert().values(**row))
            for token in dict.fromkeys(uploads):
                conn.execute(upload_refs.insert().values(token=token, prediction_id=row["id"]))
            if idempotency is not None:
                conn.execute(idempotency_keys.insert().values(
                    api_key_id=api_key_id, key=idempotency.key, request_hash=idempotency.request_hash,
                    prediction_id=row["id"], created_at=row["created_at"]))
        return Prediction(**{**row, "status": Status.CREATED})

    def check_limits(self, api_key_id: int) -> None:
        """429 now if a submit of this key would be refused: read only, so that a refused submit costs
        no media work; ``create`` decides, under the key row's lock."""
        with self.db.read() as conn:
            self._admit(conn, api_key_id, now(), count=False)

    def _admit(self, conn: Connection, api_key_id: int, t: float, count: bool = True) -> None:
        """Refuse a submit over the key's limits (429); otherwise ``count`` it against its rate."""
        limits = self.limits
        if limits.queued:
            limits.check_queued(conn.execute(select(func.count()).select_from(predictions).where(
                predictions.c.api_key_id == api_key_id, _QUEUED)).scalar_one())
        if limits.submits_per_minute:
            me = api_keys.c.id == api_key_id
            tat = limits.admit(conn.execute(select(api_keys.c.rate_tat_us).where(me)).scalar(), t)
            if count:
                conn.execute(update(api_keys).where(me).values(rate_tat_us=tat))

    def replayed(self, api_key_id: int, idempotency: Idempotency) -> Prediction | None:
        """The prediction an earlier submit with this key made (read first, so that a retry stores
        nothing); ``create`` checks again in its transaction, for retries that arrive together."""
        with self.db.read() as conn:
            return self._replay(conn, api_key_id, idempotency)

    def _replay(self, conn: Connection, api_key_id: int, idempotency: Idempotency,
                purge: bool = False) -> Prediction | None:
        """The prediction an earlier submit with this key made, if the key is still kept (an expired
        one is deleted when ``purge``: the key may name a new request)."""
        mine = and_(idempotency_keys.c.api_key_id == api_key_id, idempotency_keys.c.key == idempotency.key)
        earlier = conn.execute(select(idempotency_keys).where(mine)).first()
        if earlier is None:
            return None
        if earlier.created_at < now() - IDEMPOTENCY_S:
            if purge:
                conn.execute(delete(idempotency_keys).where(mine))
            return None
        if earlier.request_hash != idempotency.request_hash:
            raise Conflict("Idempotency-Key: already used for a different request in the last 24 hours")
        row = conn.execute(_BY_ID, {"id": earlier.prediction_id}).first()  # None: deleted meanwhile, key with it
        return Prediction.from_row(row) if row else None

    def get(self, prediction_id: str, api_key_id: int | None = None) -> Prediction:
        if not PREDICTION_ID.fullmatch(prediction_id):  # never sent to the database: a NUL breaks PostgreSQL
            raise NotFound(f"prediction not found: {prediction_id}")
        if api_key_id is None:
            row = self.db.fetch_one(_BY_ID, id=prediction_id)
        else:
            row = self.db.fetch_one(_BY_ID_AND_KEY, id=prediction_id, key=api_key_id)
        if row is None:
            raise NotFound(f"prediction not found: {prediction_id}")
        return Prediction.from_row(row)

    def cancel(self, prediction_id: str, api_key_id: int) -> Prediction:
        """End a key's queued or running prediction as cancelled: nothing charged, its quote released,
        its webhook queued. Conflict when it has already ended."""
        p = self.get(prediction_id, api_key_id)
        if not p.status.terminal:
            with self.db.write() as conn:
                self._transition(conn, p.id, Outcome(Status.CANCELLED, error="cancelled by request"))
            p = self.get(prediction_id, api_key_id)
        if p.status is not Status.CANCELLED:
            raise Conflict(f"prediction {p.id} has already ended: {p.status.value}")
        return p

    def delete(self, api_key_id: int, ids: list[str]) -> list[Prediction]:
        """Delete a key's predictions (an open one is cancelled first) and what refers to them, but
        not their ledger entries; the deleted ones, as they were, so their files can go too."""
        deleted = []
        mine = [i for i in dict.fromkeys(ids) if PREDICTION_ID.fullmatch(i)]
        for prediction_id in mine:
            owned = select(predictions).where(predictions.c.id == prediction_id, predictions.c.api_key_id == api_key_id)
            with self.db.write() as conn:
                if conn.execute(owned.with_for_update()).first() is None:
                    continue
                self._transition(conn, prediction_id, Outcome(Status.CANCELLED, error="deleted"))
                row = conn.execute(owned).one()  # as it ended: its outputs are the files to remove
                for table in (webhook_deliveries, idempotency_keys, upload_refs):  # nothing to send, replay or keep
                    conn.execute(delete(table).where(table.c.prediction_id == prediction_id))
                conn.execute(delete(predictions).where(predictions.c.id == prediction_id))
                deleted.append(Prediction.from_row(row))
        return deleted

    def cancel_open(self, api_key_id: int) -> list[str]:
        """Cancel every queued and running prediction of a key (it was revoked); their ids."""
        return self._end_each(and_(predictions.c.api_key_id == api_key_id, predictions.c.status.in_(OPEN)),
                              Outcome(Status.CANCELLED, error="the API key was revoked"))

    def queue_position(self, p: Prediction) -> int:
        """An estimate of how many queued predictions start before this one (0: none): those submitted
        earlier, but not those of another key running all it may at once (workers pass them over). One held
        by a scenario counts down its remaining seconds instead, when that is more."""
        if p.status is not Status.CREATED:
            return 0
        ahead = self.db.fetch_one(self._queued_before, created_at=p.created_at, key=p.api_key_id)["n"]
        return max(ahead, math.ceil(p.not_before - now())) if p.not_before else ahead

    def history(self, api_key_id: int, page: int, page_size: int, model: str | None = None,
                status: str | None = None, created_after: float | None = None,
                created_before: float | None = None) -> tuple[int, list[Prediction]]:
        where = [predictions.c.api_key_id == api_key_id]
        if model:
            where.append(predictions.c.model == model)
        if status:
            where.append(predictions.c.status == status)
        if created_after is not None:
            where.append(predictions.c.created_at >= created_after)
        if created_before is not None:
            where.append(predictions.c.created_at <= created_before)
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(predictions).where(*where)).scalar_one()
            rows = conn.execute(select(predictions).where(*where).order_by(predictions.c.created_at.desc())
                                .limit(page_size).offset((page - 1) * page_size)).all()
        return total, [Prediction.from_row(r) for r in rows]

    # --- the worker side ----------------------------------------------------------

    def claim(self, owner: str, models: list[str], lease_s: float) -> Prediction | None:
        """Atomically take the oldest queued job (or one whose lease expired) for these models,
        passing over keys that run all they may at once."""
        t = now()
        if t - self._exhausted_at >= EXHAUSTED_CHECK_S:  # not on every poll: half an idle poll's queries
            self._exhausted_at = t
            self._fail_exhausted(t)
        lost = and_(_RUNNING, predictions.c.lease_expires_at < t, predictions.c.attempts < self.max_attempts)
        held = predictions.c.not_before > t  # a scenario holds it in the queue until then
        common = [predictions.c.model.in_(models), or_(predictions.c.not_before.is_(None), ~held)]
        limit = self.limits.running
        with self.db.write() as conn:
            # A lost lease first (its job is older than any queued one, and claiming it adds no running
            # job, so no key limit holds it back), then the oldest queued job. Two statements, not one
            # with an OR: each reads its index in order (ix_predictions_queue), where the OR made
            # PostgreSQL scan and sort the whole queue (bench/claim_depth.py).
            found = self._pick(conn, lost, common, None, owner, lease_s)
            if found is None:
                keys = [predictions.c.api_key_id.notin_(_keys_at(limit))] if limit else []
                found = self._pick(conn, _QUEUED, common + keys, limit, owner, lease_s)
        return found

    def _pick(self, conn: Connection, claimable, where: list, limit: int | None, owner: str,
              lease_s: float) -> Prediction | None:
        """Take the oldest ``claimable`` row matching ``where`` nobody else is taking (SKIP LOCKED),
        passing over keys found at their ``limit`` of running jobs."""
        passed_over: list[int] = []
        for _ in range(CLAIM_TRIES):
            skip = [predictions.c.api_key_id.notin_(passed_over)] if passed_over else []
            pick = (select(predictions.c.id, predictions.c.api_key_id).where(claimable, *where, *skip)
                    .order_by(predictions.c.created_at).limit(1).with_for_update(skip_locked=True, of=predictions))
            picked = conn.execute(pick).first()
            if picked is None:
                return None
            if limit and self._at_limit(conn, picked.api_key_id):
                passed_over.append(picked.api_key_id)  # another worker started one of its meanwhile
                continue
            return self._transition(conn, picked.id, Outcome(Status.PROCESSING), lease=(owner, lease_s),
                                    where=[claimable])
        return None

    def _at_limit(self, conn: Connection, key_id: int) -> bool:
        """Counted again under the key row's lock: two workers picking one key's jobs at once (on
        PostgreSQL) saw the same count; the second to get the lock sees the first's claim committed."""
        lock(conn, api_keys, api_keys.c.id == key_id)
        running = select(func.count()).select_from(predictions).where(predictions.c.api_key_id == key_id, _RUNNING)
        return conn.execute(running).scalar_one() >= self.limits.running

    def take_poll_error(self, p: Prediction) -> int | None:
        """A poll its scenario answers with a transient error: which one (1, 2, ...), or None once the
        plan's ``poll_errors`` are spent. Counted in the row, so it holds across API processes."""
        if not p.scenario or p.scenario.get("polls_failed", 0) >= p.scenario.get("poll_errors", 0):
            return None  # the common case: decided on the row already read, no write
        with self.db.write() as conn:
            plan = conn.execute(select(predictions.c.scenario).where(predictions.c.id == p.id)
                                .with_for_update()).scalar_one()
            failed = plan.get("polls_failed", 0) + 1
            if failed > plan.get("poll_errors", 0):
                return None
            conn.execute(update(predictions).where(predictions.c.id == p.id)
                         .values(scenario={**plan, "polls_failed": failed}))
        return failed

    def heartbeat(self, prediction_id: str, owner: str, lease_s: float, progress: int) -> bool:
        """Extend the lease and record progress; False means the lease was lost."""
        with self.db.write() as conn:
            return conn.execute(update(predictions).where(
                predictions.c.id == prediction_id, predictions.c.lease_owner == owner, _RUNNING,
            ).values(lease_expires_at=now() + lease_s, progress=progress)).rowcount == 1

    def holds(self, prediction_id: str, owner: str) -> bool:
        """Whether this worker still holds the job (it was not cancelled, deleted or reclaimed)."""
        row = self.db.fetch_one(_HOLDER, id=prediction_id)
        return row is not None and row["status"] == Status.PROCESSING.value and row["lease_owner"] == owner

    def finish(self, prediction_id: str, owner: str | None, outcome: Outcome) -> bool:
        """Record a job's end (with its charge), in one transaction; False if the lease was lost."""
        with self.db.write() as conn:
            return self._transition(conn, prediction_id, outcome, owner=owner) is not None

    def requeue(self, prediction_id: str, owner: str, spent: bool, delay_s: float = 0.0) -> bool:
        """Hand a running job back to the queue: its worker is stopping (not ``spent``: the attempt is given
        back), or storage failed (``spent``; claimable again ``delay_s`` later). False if the lease was lost
        meanwhile."""
        stamps: dict[str, Any] = {} if spent else {"attempts": predictions.c.attempts - 1}
        if delay_s:
            stamps["not_before"] = now() + delay_s
        with self.db.write() as conn:
            return self._transition(conn, prediction_id, Outcome(Status.CREATED), owner=owner,
                                    stamps=stamps) is not None

    def _transition(self, conn: Connection, prediction_id: str, outcome: Outcome, owner: str | None = None,
                    lease: tuple[str, float] | None = None, where: list[Any] = (),
                    stamps: dict[str, Any] | None = None) -> Prediction | None:
        """THE status change, in the caller's transaction: whether the move is legal (from the status it
        has, held by ``owner`` when given, and ``where``), its stamps (a claim's lease ``(owner, lease_s)``
        and attempt; an end's time, progress and expiry), the charge of a completed one, and the webhook
        of an ended one. The row as it now is, or None when it did not move."""
        # locked (PostgreSQL) so that another move committing meanwhile cannot slip in between
        current = conn.execute(select(predictions).where(predictions.c.id == prediction_id).with_for_update()).first()
        if current is None or not can_move(Status(current.status), outcome.status):
            return None
        guard = [predictions.c.id == prediction_id, predictions.c.status == current.status, *where]
        if owner is not None:
            guard.append(predictions.c.lease_owner == owner)
        t = now()
        values: dict[str, Any] = dict(status=outcome.status.value, lease_owner=None, lease_expires_at=None)
        if outcome.status is Status.PROCESSING:  # claimed: a lease, an attempt, and the time it first started
            holder, lease_s = lease
            values.update(lease_owner=holder, lease_expires_at=t + lease_s, attempts=predictions.c.attempts + 1,
                          progress=0, started_at=func.coalesce(predictions.c.started_at, t))
        elif outcome.status is Status.CREATED:  # back in the queue, as it was (``stamps``: requeue's)
            values.update(progress=0, **(stamps or {}))
        else:
            values.update(outputs=outcome.outputs, nsfw=outcome.nsfw, error=outcome.error,
                          error_code=outcome.error_code, inference_ms=outcome.inference_ms, details=outcome.details,
                          completed_at=t, progress=100 if outcome.status is Status.COMPLETED else current.progress,
                          expires_at=expiry(t, self.retention_s))
        row = conn.execute(update(predictions).where(*guard).values(**values).returning(*predictions.c)).first()
        if row is None:
            return None
        if outcome.status.terminal:
            metrics.ENDED.labels(current.model, outcome.status.value).inc()
        if outcome.status is Status.COMPLETED:
            insert_once(conn, ledger, ["prediction_id", "kind"], api_key_id=current.api_key_id,
                        prediction_id=current.id, kind="charge", amount_micros=-current.price_micros, created_at=t)
        if outcome.status.terminal and current.webhook:
            # the outbox row commits with the status: a crash can delay the webhook, never lose it
            insert_once(conn, webhook_deliveries, ["prediction_id"], prediction_id=current.id,
                        api_key_id=current.api_key_id, url=current.webhook["url"], attempts=0, next_at=t,
                        last_error="", created_at=t)
        return Prediction.from_row(row)

    def _fail_exhausted(self, t: float) -> None:
        """Fail jobs whose worker died on every allowed attempt."""
        self._end_each(and_(_RUNNING, predictions.c.lease_expires_at < t, predictions.c.attempts >= self.max_attempts),
                       Outcome(Status.FAILED, error=f"worker lost {self.max_attempts} times while running this "
                                                    "prediction", error_code=5000))

    def _end_each(self, which: Any, outcome: Outcome) -> list[str]:
        """End every prediction ``which`` selects, each in its own transaction; the ids that moved."""
        with self.db.read() as conn:
            ids = conn.execute(select(predictions.c.id).where(which)).scalars().all()
        ended = []
        for prediction_id in ids:
            with self.db.write() as conn:  # ``which`` again as it moves: it may have changed since it was read
                if self._transition(conn, prediction_id, outcome, where=[which]):
                    ended.append(prediction_id)
        return ended

