"""The job store on SQLite and on a real PostgreSQL: atomic claims, leases, reclaim after a dead worker,
charge-once, the webhook outbox."""

from __future__ import annotations

import threading
import time

from sqlalchemy import func, select

from openi2v.domain.prediction import Status
from openi2v.store import AccountStore, Database, PredictionStore
from openi2v.domain.prediction import Outcome
from openi2v.store.schema import ledger

MODEL = "m"


def setup(database_url, max_attempts=3):
    db = Database(database_url)
    db.migrate()
    key_id, _ = AccountStore(db).create_key("t", 100_000_000)
    return db, key_id, PredictionStore(db, max_attempts)


def test_only_one_worker_claims_each_job(database_url):
    db, key, store = setup(database_url)
    for i in range(20):
        store.create(key, MODEL, {"prompt": str(i)}, i, 1)
    claimed: list[str] = []
    lock = threading.Lock()

    def grab(owner):
        while (p := store.claim(owner, [MODEL], 60)) is not None:
            with lock:
                claimed.append(p.id)

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 20 == len(set(claimed))


def test_expired_lease_is_reclaimed_and_the_zombie_cannot_finish(database_url):
    db, key, store = setup(database_url)
    p = store.create(key, MODEL, {}, 1, 350_000)
    first = store.claim("dead", [MODEL], lease_s=0.05)
    assert first.id == p.id and store.claim("other", [MODEL], 60) is None  # lease still held
    time.sleep(0.1)
    second = store.claim("alive", [MODEL], 60)
    assert second.id == p.id and second.attempts == 2
    assert not store.heartbeat(p.id, "dead", 60, 50)
    assert not store.finish(p.id, "dead", Outcome(Status.COMPLETED, outputs=["x"]))
    assert store.finish(p.id, "alive", Outcome(Status.COMPLETED, outputs=["y"]))
    assert store.get(p.id).outputs == ["y"]


def test_a_job_that_keeps_losing_its_worker_fails_cleanly_and_costs_nothing(database_url, monkeypatch):
    from openi2v.store import predictions as store_module

    monkeypatch.setattr(store_module, "EXHAUSTED_CHECK_S", 0.0)  # checked at every claim (5 s apart otherwise)
    db, key, store = setup(database_url, max_attempts=2)
    p = store.create(key, MODEL, {}, 1, 350_000)
    for _ in range(2):
        assert store.claim("dying", [MODEL], lease_s=0.01) is not None
        time.sleep(0.03)
    assert store.claim("next", [MODEL], 60) is None
    done = store.get(p.id)
    assert done.status is Status.FAILED and "worker lost" in done.error
    assert AccountStore(db).balance(key) == 100_000_000


def test_charge_is_recorded_once_even_if_finish_is_repeated(database_url):
    db, key, store = setup(database_url)
    p = store.create(key, MODEL, {}, 1, 350_000)
    store.claim("w", [MODEL], 60)
    assert store.finish(p.id, "w", Outcome(Status.COMPLETED, outputs=["a"]))
    assert not store.finish(p.id, "w", Outcome(Status.COMPLETED, outputs=["a"]))
    with db.read() as conn:
        charges = conn.execute(select(func.count()).select_from(ledger).where(ledger.c.kind == "charge")).scalar()
    assert charges == 1
    assert AccountStore(db).balance(key) == 100_000_000 - 350_000


def test_queue_position_counts_earlier_waiting_jobs(database_url):
    db, key, store = setup(database_url)
    ps = [store.create(key, MODEL, {}, i, 1) for i in range(3)]
    assert [store.queue_position(p) for p in ps] == [0, 1, 2]
    store.claim("w", [MODEL], 60)
    assert store.queue_position(store.get(ps[2].id)) == 1


def test_a_webhook_is_queued_with_the_end_of_its_prediction_once(database_url):
    from openi2v.store import WebhookStore

    db, key, store = setup(database_url)
    hooks = WebhookStore(db)
    ok = store.create(key, MODEL, {"prompt": "a"}, 1, 1, webhook={"url": "https://h/1", "base": "http://b/"})
    plain = store.create(key, MODEL, {"prompt": "b"}, 1, 1)
    assert hooks.status(ok.id) is None and not hooks.any_due()  # nothing until the prediction ends
    for p in (store.claim("w", [MODEL], 60), store.claim("w", [MODEL], 60)):
        assert store.finish(p.id, "w", Outcome(Status.COMPLETED, outputs=["files/x/y.mp4"]))
    assert not store.finish(ok.id, "w", Outcome(Status.COMPLETED))  # a second end records nothing
    assert hooks.status(plain.id) is None
    row = hooks.status(ok.id)
    assert (row["url"], row["attempts"], row["delivered_at"]) == ("https://h/1", 0, None)
    d = hooks.claim("s1", 60)
    assert (d.prediction_id, d.attempts) == (ok.id, 1)
    assert hooks.claim("s2", 60) is None  # leased to s1
    hooks.failed(ok.id, "HTTP 500", retry_in_s=0)
    assert hooks.claim("s2", 60).attempts == 2  # due again, under a new lease
    hooks.delivered(ok.id)
    assert hooks.claim("s3", 60) is None and hooks.status(ok.id)["delivered_at"] is not None


def test_a_job_handed_back_by_a_stopping_worker_keeps_its_attempts(database_url):
    """A drain is no lost worker: after many rolling restarts the job still has all its attempts."""
    db, key, store = setup(database_url, max_attempts=2)
    p = store.create(key, MODEL, {}, 1, 350_000)
    for _ in range(3):  # more hand-backs than attempts
        assert store.claim("stopping", [MODEL], 60).attempts == 1
        assert store.requeue(p.id, "stopping", spent=False)
    assert store.get(p.id).attempts == 0 and store.get(p.id).status is Status.CREATED
    assert store.claim("w", [MODEL], 60).attempts == 1
    assert store.requeue(p.id, "w", spent=True)  # storage failed: that one counts
    assert store.claim("w2", [MODEL], 60).attempts == 2
