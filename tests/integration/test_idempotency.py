"""Idempotent submits: an Idempotency-Key (per API key) with the same request returns the first
prediction and creates nothing; with another request it is a 409; kept 24 hours; exactly one
prediction under concurrent identical submits, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from openi2v.errors import Conflict
from openi2v.store import AccountStore, Database, PredictionStore
from openi2v.store import predictions as store_module
from openi2v.store.predictions import Idempotency
from tests import pictures
from tests.integration.test_api import SUBMIT, Api
from tests.together import at_once

BODY = {"image": pictures.data_uri(), "prompt": "pan left"}


def submit(api: Api, body: dict, key: str | None = None, idem: str | None = "order-1", **params):
    headers = {**api.h(key), **({"Idempotency-Key": idem} if idem is not None else {})}
    return api.client.post(SUBMIT, json=body, headers=headers, params=params)


def total(api: Api, key: str | None = None) -> int:
    return api.client.post("/api/v3/predictions", json={}, headers=api.h(key)).json()["data"]["total"]


def test_a_retried_submit_returns_the_first_prediction_and_charges_once(api):
    first = submit(api, BODY).json()["data"]
    again = submit(api, BODY).json()["data"]
    assert again["id"] == first["id"] and total(api) == 1
    api.drain()
    assert submit(api, BODY).json()["data"]["status"] == "completed"  # the original, as it is now
    assert api.client.get("/api/v3/balance", headers=api.h()).json()["data"]["balance"] == pytest.approx(9.65)


def test_waiting_differently_is_the_same_request(api):
    """A sync submit that timed out, retried without sync mode, finds its prediction."""
    first = submit(api, {**BODY, "enable_sync_mode": False}).json()["data"]["id"]
    assert submit(api, BODY).json()["data"]["id"] == first and total(api) == 1


@pytest.mark.parametrize("change", [{"prompt": "pan right"}, {"duration": 10}, {"enable_base64_output": True}])
def test_the_same_key_with_another_request_is_409(api, change):
    submit(api, BODY)
    r = submit(api, {**BODY, **change})
    assert r.status_code == 409
    assert r.json()["message"] == "Idempotency-Key: already used for a different request in the last 24 hours"
    assert total(api) == 1


def test_another_webhook_is_another_request(api):
    submit(api, BODY, webhook="https://example.com/a")
    assert submit(api, BODY, webhook="https://example.com/b").status_code == 409


def test_keys_are_per_api_key_and_absent_means_no_deduplication(api):
    other = api.new_key(5.0)
    assert submit(api, BODY).json()["data"]["id"] != submit(api, BODY, key=other).json()["data"]["id"]
    submit(api, BODY, idem=None)
    submit(api, BODY, idem=None)
    assert total(api) == 3 and total(api, other) == 1


def test_a_key_older_than_24_hours_names_a_new_request(api, monkeypatch):
    first = submit(api, BODY).json()["data"]["id"]
    real_now = store_module.now
    monkeypatch.setattr(store_module, "now", lambda: real_now() + store_module.IDEMPOTENCY_S + 1)
    second = submit(api, {**BODY, "prompt": "pan right"})
    assert second.status_code == 200 and second.json()["data"]["id"] != first and total(api) == 2


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "a b"])
def test_a_malformed_key_is_400_naming_the_header(api, value):
    r = api.client.post(SUBMIT, json=BODY, headers={**api.h(), "Idempotency-Key": value.encode()})
    assert r.status_code == 400 and r.json()["message"].startswith("Idempotency-Key: must be 1 to 255 printable")
    assert total(api) == 0


def test_concurrent_identical_submits_make_exactly_one_prediction(database_url):
    """On PostgreSQL the key-row update is what serialises them (SQLite's BEGIN IMMEDIATE would anyway)."""
    db = Database(database_url)
    db.migrate()
    key_id, _ = AccountStore(db).create_key("t", 100_000_000)
    store = PredictionStore(db)
    ids, errors = at_once(lambda _: store.create(key_id, "m", {"prompt": "x"}, 1, 1,
                                                 idempotency=Idempotency("k", "h")).id, 8)
    assert errors == [] and len(ids) == 8 and len(set(ids)) == 1
    assert store.history(key_id, 1, 100)[0] == 1
    with pytest.raises(Conflict):
        store.create(key_id, "m", {"prompt": "y"}, 1, 1, idempotency=Idempotency("k", "another"))
    db.dispose()


def test_a_retry_stores_nothing_again(api):
    """An inline image is kept as an upload at submit: a replay keeps no second copy."""
    submit(api, BODY)
    uploads = sorted((api.settings.data_dir / "uploads").rglob("*"))
    submit(api, BODY)
    assert sorted((api.settings.data_dir / "uploads").rglob("*")) == uploads and uploads
