"""A bounded load test on loopback: 300 submits from 30 concurrent clients, with idempotent retries and
cancels mixed in, while every client polls, against two API processes and two workers sharing one
database. Every prediction is made once, ends once, and is charged at most once (only when completed);
each key's balance equals its top-ups minus its completed predictions' prices, to the micro-dollar."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import select

from openi2v.config import KLING_MODEL
from openi2v.domain.billing import to_micros
from openi2v.store import Database
from openi2v.store.schema import ledger
from tests import pictures
from tests.e2e.server import Server, cli
from tests.e2e.test_webhooks import Receiver

pytestmark = pytest.mark.e2e
CLIENTS, SUBMITS_EACH, KEYS = 30, 10, 3
PRICE = {5: to_micros("0.35"), 10: to_micros("0.70")}
ENDED = {"completed", "failed", "cancelled"}


def test_300_submits_with_retries_and_cancels_lose_nothing_and_charge_exactly(tmp_path):
    receiver = Receiver()
    server = Server(tmp_path / "data", workers=2, OPENI2V_API_PROCESSES="2", OPENI2V_FETCH_ALLOW="127.0.0.1",
                    OPENI2V_ENGINES=json.dumps({KLING_MODEL: "tests.engine_fixtures:Flaky"})).start()
    try:
        keys = [server.new_key(40.0) for _ in range(KEYS)]
        topups = Counter({k: to_micros(40) for k in keys})
        image = pictures.data_uri()
        asked: dict[str, int] = {}  # prediction id -> duration
        retries = cancels = 0
        lock = threading.Lock()

        def client(n: int) -> dict[str, str]:
            nonlocal retries, cancels
            key = keys[n % KEYS]
            ended: dict[str, str] = {}
            with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
                mine = []
                for i in range(SUBMITS_EACH):
                    duration = 10 if (n + i) % 3 == 0 else 5
                    submit = dict(url=f"/api/v3/{KLING_MODEL}", params={"webhook": receiver.url},
                                  json={"image": image, "prompt": "pan left", "duration": duration},
                                  headers={"Idempotency-Key": f"client-{n}-submit-{i}"})
                    r = http.post(**submit)
                    assert r.status_code == 200, r.text
                    pid = r.json()["data"]["id"]
                    if i % 4 == 1:  # its answer was lost: the client sends it again
                        again = http.post(**submit)
                        assert again.status_code == 200 and again.json()["data"]["id"] == pid
                        with lock:
                            retries += 1
                    if i % 5 == 2:  # the user changes their mind; it may have ended already
                        c = http.post(f"/api/v3/predictions/{pid}/cancel")
                        assert c.status_code in (200, 409), c.text
                        with lock:
                            cancels += 1
                    with lock:
                        asked[pid] = duration
                    mine.append(pid)
                    for earlier in mine:  # polling all the while
                        http.get(f"/api/v3/predictions/{earlier}/result")
                for pid in mine:
                    deadline = time.monotonic() + 300  # a guard against a hang, not a speed limit
                    while (status := http.get(f"/api/v3/predictions/{pid}/result").json()["data"]["status"]) \
                            not in ENDED:
                        assert time.monotonic() < deadline, f"{pid} never ended"
                        time.sleep(0.05)
                    ended[pid] = status
            return ended

        with ThreadPoolExecutor(CLIENTS) as pool:
            running = [pool.submit(client, n) for n in range(CLIENTS)]
            cli(server.env, "keys", "topup", "1", "5")  # money added while it all runs
            topups[keys[0]] += to_micros(5)
            ended = {pid: status for f in running for pid, status in f.result().items()}

        # made once: every submit is one prediction, retries made none
        assert len(asked) == CLIENTS * SUBMITS_EACH and set(ended) == set(asked)
        # ended once: one webhook per prediction, saying how it ended, and nothing changes after
        receiver.wait(len(asked))
        hooks = Counter(h["webhook-id"] for h, _ in receiver.calls)
        assert set(hooks) == set(asked)
        assert {json.loads(body)["id"]: json.loads(body)["status"] for _, body in receiver.calls} == ended

        db = Database(f"sqlite:///{tmp_path / 'data' / 'openi2v.db'}")
        with db.read() as conn:
            charges = Counter(r.prediction_id for r in conn.execute(select(ledger).where(ledger.c.kind == "charge")))
            charged = {r.prediction_id: -r.amount_micros for r in conn.execute(
                select(ledger).where(ledger.c.kind == "charge"))}
        db.dispose()
        completed = {pid for pid, status in ended.items() if status == "completed"}
        double = sum(1 for n in charges.values() if n > 1)
        assert double == 0 and set(charges) == completed
        assert all(charged[pid] == PRICE[asked[pid]] for pid in completed)

        errors = {}
        for key in keys:
            owned = {pid for pid in ended if pid in _ids_of(server, key)}
            expected = topups[key] - sum(PRICE[asked[pid]] for pid in owned & completed)
            balance = httpx.get(f"{server.url}/api/v3/balance", headers={"Authorization": f"Bearer {key}"})
            errors[key] = to_micros(balance.json()["data"]["balance"]) - expected
        assert set(errors.values()) == {0}
        statuses = Counter(ended.values())
        print(f"\nload: {len(asked)} predictions from {CLIENTS} clients ({retries} idempotent retries, {cancels} "
              f"cancels): {dict(statuses)}; lost 0, double-charged {double}, balance error "
              f"{sum(abs(e) for e in errors.values())} micro-dollars")
        assert statuses["cancelled"] > 0 and statuses["completed"] > 0
    finally:
        server.stop()


def _ids_of(server: Server, key: str) -> set[str]:
    ids, page = set(), 1
    while True:
        data = httpx.post(f"{server.url}/api/v3/predictions", json={"page": page, "page_size": 100},
                          headers={"Authorization": f"Bearer {key}"}).json()["data"]
        ids.update(p["id"] for p in data["items"])
        if len(ids) >= data["total"]:
            return ids
        page += 1
