"""What a key has spent, read from the ledger (and the predictions its charges name): the hosted
``billings/search`` and ``user/usage_stats``.

A charge (kind "charge", negative micro-dollars, one per completed prediction) is what was spent;
a credit (positive) is money added. A prediction deleted since keeps its charge, but its model and
status are no longer known (None). Days are UTC, numbered from 1970-01-01.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import BigInteger, cast, func, literal_column, select

from openi2v.store.database import Database
from openi2v.store.predictions import PREDICTION_ID
from openi2v.store.schema import ledger, predictions

DAY_S = 86400
CHARGE = "charge"

_ENTRY = ledger.outerjoin(predictions, predictions.c.id == ledger.c.prediction_id)


@dataclass(frozen=True)
class Entry:
    """One ledger entry, with the prediction it names (None: none, or one deleted since)."""

    id: int
    kind: str  # "charge" or "credit"
    amount_micros: int  # charges negative, credits positive
    created_at: float
    prediction_id: str | None
    model: str | None
    status: str | None


@dataclass(frozen=True)
class Spent:
    """Charges summed over a group: a day, or a model."""

    group: int | str | None  # the day number, or the model id (None: predictions deleted since)
    micros: int  # positive: what was spent
    count: int  # how many charges (completed predictions)
    last_at: float  # the latest charge's time


class UsageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def entries(self, key_id: int, page: int, page_size: int, prediction_ids: list[str] | None = None,
                kind: str | None = None, start: float | None = None, end: float | None = None
                ) -> tuple[int, list[Entry]]:
        """The key's ledger entries, newest first, a page at a time: (how many match, this page)."""
        where = [ledger.c.api_key_id == key_id]
        if prediction_ids is not None:  # ids that cannot be ours match nothing (and a NUL never reaches PostgreSQL)
            where.append(ledger.c.prediction_id.in_([i for i in prediction_ids if PREDICTION_ID.fullmatch(i)]))
        if kind is not None:
            where.append(ledger.c.kind == kind)
        if start is not None:
            where.append(ledger.c.created_at >= start)
        if end is not None:
            where.append(ledger.c.created_at <= end)
        query = (select(ledger.c.id, ledger.c.kind, ledger.c.amount_micros, ledger.c.created_at,
                        ledger.c.prediction_id, predictions.c.model, predictions.c.status)
                 .select_from(_ENTRY).where(*where)
                 .order_by(ledger.c.created_at.desc(), ledger.c.id.desc())
                 .limit(page_size).offset((page - 1) * page_size))
        with self.db.read() as conn:
            total = conn.execute(select(func.count()).select_from(ledger).where(*where)).scalar_one()
            return total, [Entry(**r._mapping) for r in conn.execute(query)]

    def spent_by_day(self, key_id: int, first_day: int, last_day: int) -> list[Spent]:
        """The key's charges from ``first_day`` to ``last_day`` (inclusive), per day that has any."""
        day = self._day(ledger.c.created_at)
        return self._spent(key_id, first_day, last_day, day, ledger, costliest_first=False)

    def spent_by_model(self, key_id: int, first_day: int, last_day: int) -> list[Spent]:
        """The same charges per model, the costliest first."""
        return self._spent(key_id, first_day, last_day, predictions.c.model, _ENTRY, costliest_first=True)

    def _spent(self, key_id: int, first_day: int, last_day: int, group, source, costliest_first: bool
               ) -> list[Spent]:
        micros = (-func.sum(ledger.c.amount_micros)).label("micros")
        query = (select(group.label("grp"), micros, func.count().label("count"),
                        func.max(ledger.c.created_at).label("last_at"))
                 .select_from(source)
                 .where(ledger.c.api_key_id == key_id, ledger.c.kind == CHARGE,
                        ledger.c.created_at >= first_day * DAY_S, ledger.c.created_at < (last_day + 1) * DAY_S)
                 .group_by(group)
                 .order_by(*((micros.desc(), group) if costliest_first else (group,))))
        with self.db.read() as conn:
            return [Spent(r.grp if r.grp is None or isinstance(r.grp, str) else int(r.grp), int(r.micros), r.count,
                          r.last_at) for r in conn.execute(query)]

    def _day(self, column):
        """The UTC day number of a UNIX time. SQLite truncates a cast (times are positive); PostgreSQL
        rounds one, so there the floor is taken first. The divisor is written into the SQL, not bound,
        so that the grouped expression and the selected one are the same text."""
        days = column / literal_column(str(DAY_S))
        return cast(days if self.db.is_sqlite else func.floor(days), BigInteger)
