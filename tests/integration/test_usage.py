"""store/usage.py on SQLite and on a real PostgreSQL: a key's ledger read back by entry, by UTC day and by model."""

from __future__ import annotations

from sqlalchemy import insert

from openi2v.store import AccountStore, Database, PredictionStore
from openi2v.store.schema import ledger
from openi2v.store.usage import DAY_S, UsageStore

DAY = 20_000  # 2024-10-04, a UTC day number


def setup(database_url):
    db = Database(database_url)
    db.migrate()
    accounts = AccountStore(db)
    key, _ = accounts.create_key("t", 100_000_000)
    other, _ = accounts.create_key("o", 5_000_000)
    return db, key, other, PredictionStore(db, 3), UsageStore(db)


def charge(db, key, prediction_id, micros, at):
    with db.write() as conn:
        conn.execute(insert(ledger).values(api_key_id=key, prediction_id=prediction_id, kind="charge",
                                           amount_micros=-micros, created_at=at))


def test_charges_are_summed_per_utc_day_to_the_last_instant_of_each(database_url):
    db, key, other, store, usage = setup(database_url)
    a = store.create(key, "model-a", {"prompt": "a"}, 1, 1).id
    b = store.create(key, "model-b", {"prompt": "b"}, 2, 1).id
    charge(db, key, a, 350_000, DAY * DAY_S + 1)
    charge(db, key, b, 700_000, (DAY + 1) * DAY_S - 0.25)  # the day's last quarter second: still that day
    charge(db, key, "deleted0000000000000000000000000", 100_000, (DAY + 1) * DAY_S)  # the next day's first instant
    charge(db, other, None, 999_000, DAY * DAY_S + 5)  # another key's: never counted here
    days = usage.spent_by_day(key, DAY, DAY + 1)
    assert [(d.group, d.micros, d.count) for d in days] == [(DAY, 1_050_000, 2), (DAY + 1, 100_000, 1)]
    assert [(d.group, d.micros) for d in usage.spent_by_day(key, DAY + 1, DAY + 5)] == [(DAY + 1, 100_000)]
    assert usage.spent_by_day(key, DAY - 5, DAY - 1) == []
    models = usage.spent_by_model(key, DAY, DAY + 1)
    assert [(m.group, m.micros, m.count) for m in models] == [("model-b", 700_000, 1), ("model-a", 350_000, 1),
                                                              (None, 100_000, 1)]  # costliest first
    assert models[0].last_at == (DAY + 1) * DAY_S - 0.25


def test_entries_page_newest_first_with_their_predictions(database_url):
    db, key, other, store, usage = setup(database_url)
    a = store.create(key, "model-a", {"prompt": "a"}, 1, 1).id
    charge(db, key, a, 350_000, 2e9)
    total, entries = usage.entries(key, 1, 10)
    assert total == 2 and [(e.kind, e.amount_micros) for e in entries] == [("charge", -350_000), ("credit", 100_000_000)]
    assert (entries[0].prediction_id, entries[0].model, entries[0].status) == (a, "model-a", "created")
    assert usage.entries(key, 2, 1)[1][0].kind == "credit"
    assert usage.entries(key, 1, 10, prediction_ids=[a])[0] == 1
    assert usage.entries(key, 1, 10, kind="credit")[0] == 1
    assert usage.entries(key, 1, 10, start=2e9)[0] == 1 and usage.entries(key, 1, 10, end=2e9 - 1)[0] == 1
    assert usage.entries(other, 1, 10, prediction_ids=[a]) == (0, [])
