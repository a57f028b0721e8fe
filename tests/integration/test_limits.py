"""Limits per API key: submits per minute (429 + Retry-After), predictions waiting (429), and
predictions running at once (the rest wait with a true queue_position, and never fail), held in
the shared database: on SQLite and on a real PostgreSQL, with workers claiming at once."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from openi2v.domain.limits import Limits
from openi2v.domain.prediction import Status
from openi2v.errors import TooManyRequests
from openi2v.store import AccountStore, Database, PredictionStore
from openi2v.store import predictions as store_module
from openi2v.domain.prediction import Outcome
from openi2v.store.schema import predictions
from tests import pictures
from tests.integration.test_api import SUBMIT, Api
from tests.together import at_once

BODY = {"image": pictures.data_uri(), "prompt": "pan left"}


def limited(settings, **limits) -> Api:
    return Api(settings.model_copy(update=limits))


@pytest.fixture
def clock(monkeypatch):
    """The store's clock, stopped: rate tests see the same times however fast the machine runs them."""
    times = [store_module.now()]
    monkeypatch.setattr(store_module, "now", lambda: times[0])
    return times


def test_a_minutes_worth_of_submits_then_429_with_retry_after(settings, clock):
    api = limited(settings, submits_per_minute=3)
    assert [api.submit(BODY).status_code for _ in range(3)] == [200] * 3
    r = api.submit(BODY)
    assert r.status_code == 429
    assert r.json() == {"code": 429, "data": None,
                        "message": "rate limit: at most 3 submits per minute per API key; retry after 20.0 s"}
    assert r.headers["retry-after"] == "20"  # one submit is admitted every 20 s
    other = api.new_key(10.0)
    assert api.submit(BODY, key=other).status_code == 200  # the limit is per key
    assert api.client.get("/api/v3/balance", headers=api.h()).status_code == 200  # reads are not limited

    clock[0] += 19.9
    assert api.submit(BODY).status_code == 429
    clock[0] += 0.2  # one interval on: exactly one more is admitted
    assert api.submit(BODY).status_code == 200
    assert api.submit(BODY).status_code == 429
    api.client.close()


def test_a_refused_submit_stores_nothing(settings, clock):
    api = limited(settings, submits_per_minute=1)
    assert api.submit(BODY).status_code == 200
    kept = sorted((api.settings.data_dir / "uploads").rglob("*"))
    assert [api.submit(BODY).status_code for _ in range(5)] == [429] * 5
    assert sorted((api.settings.data_dir / "uploads").rglob("*")) == kept  # the inline image was never stored
    api.client.close()


def test_a_replayed_submit_is_not_counted(settings, clock):
    api = limited(settings, submits_per_minute=1)
    retry = {**api.h(), "Idempotency-Key": "k1"}
    first = api.client.post(SUBMIT, json=BODY, headers=retry)
    assert first.status_code == 200
    again = api.client.post(SUBMIT, json=BODY, headers=retry)
    assert again.status_code == 200 and again.json()["data"]["id"] == first.json()["data"]["id"]
    assert api.submit(BODY).status_code == 429
    api.client.close()


def test_too_many_waiting_is_429_until_one_starts_or_ends(settings):
    api = limited(settings, max_queued_per_key=2)
    ids = [api.submit(BODY).json()["data"]["id"] for _ in range(2)]
    r = api.submit(BODY)
    assert r.status_code == 429 and "retry-after" in r.headers
    assert r.json()["message"] == ("too many predictions waiting: at most 2 may wait to start per API key; "
                                   "submit again when some have started")
    assert api.client.post(f"/api/v3/predictions/{ids[0]}/cancel", headers=api.h()).status_code == 200
    assert api.submit(BODY).status_code == 200
    assert api.submit(BODY).status_code == 429
    assert api.worker.run_once()  # one starts (and ends): room for one more
    assert api.submit(BODY).status_code == 200
    api.client.close()


def store_with(database_url, **limits) -> tuple[Database, PredictionStore, int, int]:
    db = Database(database_url)
    db.migrate()
    accounts = AccountStore(db)
    a, _ = accounts.create_key("a", 100_000_000)
    b, _ = accounts.create_key("b", 100_000_000)
    return db, PredictionStore(db, limits=Limits(**limits)), a, b


def test_a_key_at_its_running_limit_is_passed_over_never_failed(database_url):
    db, store, a, b = store_with(database_url, running=1)
    a1, a2, a3 = (store.create(a, "m", {"prompt": str(i)}, i, 1) for i in range(3))
    b1 = store.create(b, "m", {"prompt": "b"}, 0, 1)
    assert [store.queue_position(p) for p in (a1, a2, a3, b1)] == [0, 1, 2, 3]
    assert store.claim("w1", ["m"], 60).id == a1.id
    # a2 and a3 wait for a1; b1 is next although submitted after them
    assert [store.queue_position(store.get(p.id)) for p in (a2, a3, b1)] == [0, 1, 0]
    assert store.claim("w2", ["m"], 60).id == b1.id
    assert store.claim("w3", ["m"], 60) is None  # only a's are left, and a runs all it may
    assert store.finish(a1.id, "w1", Outcome(Status.COMPLETED))
    assert store.claim("w3", ["m"], 60).id == a2.id
    assert store.get(a3.id).status is Status.CREATED and store.queue_position(store.get(a3.id)) == 0
    db.dispose()


def test_a_lost_lease_of_a_key_at_its_limit_is_claimed_again(database_url):
    """The row being reclaimed is not counted against its own key."""
    db, store, a, _ = store_with(database_url, running=1)
    p = store.create(a, "m", {"prompt": "x"}, 0, 1)
    assert store.claim("dead", ["m"], -1).id == p.id  # a lease already expired: its worker is gone
    again = store.claim("w2", ["m"], 60)
    assert again is not None and (again.id, again.attempts) == (p.id, 2)
    db.dispose()


def test_workers_claiming_at_once_never_run_more_than_the_limit(database_url):
    db, store, a, b = store_with(database_url, running=2)
    for i in range(12):
        store.create(a, "m", {"prompt": str(i)}, i, 1)
    for i in range(3):
        store.create(b, "m", {"prompt": str(i)}, i, 1)
    def claim(i: int) -> list:
        return [p for _ in range(3) if (p := store.claim(f"w{i}", ["m"], 60)) is not None]

    runs, errors = at_once(claim, 8)
    claimed = [p for run in runs for p in run]
    assert errors == []
    while (p := store.claim("late", ["m"], 60)) is not None:  # whatever the race left unclaimed
        claimed.append(p)
    per_key = {k: sum(1 for p in claimed if p.api_key_id == k) for k in (a, b)}
    assert per_key == {a: 2, b: 2}
    assert len({p.id for p in claimed}) == len(claimed)
    db.dispose()


def test_the_submit_limits_hold_under_concurrent_submits(database_url, clock):
    """Every API process submits through the key's row: concurrent submits cannot overshoot."""
    db, store, a, _ = store_with(database_url, submits_per_minute=5, queued=100)
    def submit(_: int) -> list:
        outcomes = []
        for _ in range(2):
            try:
                outcomes.append(store.create(a, "m", {"prompt": "x"}, 0, 1))
            except TooManyRequests as exc:
                outcomes.append(exc)
        return outcomes

    runs, errors = at_once(submit, 8)
    outcomes = [o for run in runs for o in run]
    made = [o for o in outcomes if not isinstance(o, TooManyRequests)]
    refused = [o for o in outcomes if isinstance(o, TooManyRequests)]
    assert errors == []
    assert (len(made), len(refused)) == (5, 11)
    assert all(exc.retry_after_s == pytest.approx(12) for exc in refused)  # 5 in a minute: every 12 s
    db.dispose()


@pytest.mark.parametrize("per_minute", [1, 7, 14, 19, 21, 600, 997])
def test_the_rate_admits_a_minutes_worth_then_one_per_interval(per_minute):
    """At today's clock (floats there round at a quarter microsecond), all N of a minute's worth pass."""
    limits, t, tat = Limits(submits_per_minute=per_minute), 1_790_000_000.123456, None
    for _ in range(per_minute):
        tat = limits.admit(tat, t)
    with pytest.raises(TooManyRequests) as refused:
        limits.admit(tat, t)
    assert refused.value.retry_after_s == pytest.approx(60 / per_minute, abs=per_minute * 1e-6)  # whole µs
    assert limits.admit(tat, t + 60 / per_minute + 1e-6) > tat


def test_a_key_with_more_lost_leases_than_its_limit_gets_them_claimed_again(database_url):
    """Restarted with a lower limit: re-running a lost lease adds no running job, so it is never held back."""
    db, store, a, _ = store_with(database_url, running=4)
    for i in range(3):
        store.create(a, "m", {"prompt": str(i)}, i, 1)
    assert all(store.claim(f"dead{i}", ["m"], 60) for i in range(3))
    with db.write() as conn:  # their workers are gone: the leases run out
        conn.execute(update(predictions).values(lease_expires_at=0.0))
    lowered = PredictionStore(db, limits=Limits(running=2))
    again = [lowered.claim(f"w{i}", ["m"], 60) for i in range(3)]
    assert all(p is not None and p.attempts == 2 for p in again)
    db.dispose()
