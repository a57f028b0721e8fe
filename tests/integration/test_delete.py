"""POST /api/v3/predictions/delete {"ids": [...]}, as hosted: a key's predictions and their output
files go (an open one is cancelled first); the ledger keeps its entries; other keys' ids are untouched."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from openi2v.store import WebhookStore
from tests import pictures
from tests.integration.test_api import SUBMIT, Api

BODY = {"image": pictures.data_uri(), "prompt": "pan left"}


def submit(api: Api, key: str | None = None, **params) -> str:
    return api.client.post(SUBMIT, json=BODY, headers=api.h(key), params=params).json()["data"]["id"]


def delete(api: Api, ids, key: str | None = None) -> httpx.Response:
    return api.client.post("/api/v3/predictions/delete", json={"ids": ids}, headers=api.h(key))


def test_a_completed_prediction_and_its_files_go_and_its_charge_stays(api):
    pid = submit(api)
    api.drain()
    video = api.result(pid).json()["data"]["outputs"][0]
    assert api.client.get(video).status_code == 200
    r = delete(api, [pid])
    assert r.status_code == 200 and r.json()["data"] == {"deleted": [pid], "not_found": []}
    assert api.result(pid).status_code == 404
    assert api.client.get(video).status_code == 404  # the file is gone too
    assert api.client.post("/api/v3/predictions", json={}, headers=api.h()).json()["data"]["total"] == 0
    assert api.balance() == pytest.approx(9.65)  # the ledger keeps the charge


def test_an_open_prediction_is_cancelled_then_deleted(api):
    pid = submit(api, webhook="https://example.com/hook")
    assert delete(api, [pid]).json()["data"]["deleted"] == [pid]
    assert api.balance() == pytest.approx(10.0)  # its quote released, nothing charged
    assert not api.worker.run_once()  # nothing left to run
    assert WebhookStore(api.db).status(pid) is None  # nothing left to send about


def test_other_keys_ids_and_unknown_ids_are_not_found_and_untouched(api):
    other = api.new_key(5.0)
    theirs = submit(api, key=other)
    mine = submit(api)
    r = delete(api, [theirs, "0" * 32, mine, mine])
    assert r.json()["data"] == {"deleted": [mine], "not_found": [theirs, "0" * 32]}
    assert api.result(theirs, key=other).json()["data"]["status"] == "created"


def test_an_idempotency_key_of_a_deleted_prediction_makes_a_new_one(api):
    h = {**api.h(), "Idempotency-Key": "k1"}
    first = api.client.post(SUBMIT, json=BODY, headers=h).json()["data"]["id"]
    delete(api, [first])
    again = api.client.post(SUBMIT, json=BODY, headers=h)
    assert again.status_code == 200 and again.json()["data"]["id"] != first


@pytest.mark.parametrize("body", [{}, {"ids": "abc"}, {"ids": []}, {"ids": [1]}, {"ids": ["a"] * 101}])
def test_a_malformed_list_is_400_naming_ids(api, body):
    r = api.client.post("/api/v3/predictions/delete", json=body, headers=api.h())
    assert r.status_code == 400 and r.json()["message"] == "ids: must be a list of 1 to 100 prediction ids"


@pytest.mark.parametrize("bad", ["\x00" * 32, "x", "A" * 32])
def test_ids_that_cannot_be_ours_are_not_found_without_a_query(api, bad):
    """A NUL would make PostgreSQL refuse the query: such ids never reach the database."""
    assert delete(api, [bad]).json()["data"] == {"deleted": [], "not_found": [bad]}
    assert api.client.post(f"/api/v3/predictions/{quote(bad)}/cancel", headers=api.h()).status_code == 404
