"""One key's predictions, results, files, uploads and webhook secret are out of every other key's reach.

Key A drives real predictions to the end with the in-process worker and uploads a file; key B
then tries each endpoint on A's things. B gets what a stranger gets: a 404 that reads exactly
like the one for an id that never existed, a history without A, a used ticket, its own secret.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import pytest

from openi2v.config import KLING_MODEL
from tests.integration.test_api import SUBMIT, data_uri

KEYLESS = {  # capability URLs and the health check: the only routes that take no key
    ("GET", "/healthz"), ("GET", "/media/{token}/{filename}"), ("GET", "/files/{token}/{filename}"),
    ("HEAD", "/media/{token}/{filename}"), ("HEAD", "/files/{token}/{filename}"), ("PUT", "/api/v3/media/uploads/{token}"),
}


@dataclass
class KeyA:
    """What key A made: a completed prediction, a queued one, an upload, its webhook secret."""
    key: str
    done: str
    queued: str
    output: str  # the completed prediction's video URL
    upload_put: str  # the (used) ticket's PUT path
    upload_url: str  # where the uploaded file is served
    secret: str

    def secrets(self) -> list[str]:
        """Strings that must never appear in an answer to another key."""
        return [self.key, self.done, self.queued, token_of(self.output), token_of(self.upload_url), self.secret]


def token_of(url: str) -> str:
    return re.search(r"/(?:media|files)/([^/]+)/", url).group(1)


@pytest.fixture
def key_a(api, photo_png) -> KeyA:
    done = api.submit({"image": data_uri(photo_png), "prompt": "slow zoom in"}).json()["data"]["id"]
    api.drain()
    result = api.result(done).json()["data"]
    assert result["status"] == "completed", result
    queued = api.client.post(SUBMIT + "?webhook=https://example.com/hook", json={
        "image": data_uri(photo_png), "prompt": "pan left"}, headers=api.h()).json()["data"]["id"]
    ticket = api.client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": len(photo_png),
                                                           "content_type": "image/png"}, headers=api.h()).json()["data"]
    put = local(ticket["upload"]["url"])
    assert api.client.put(put, content=photo_png, headers=ticket["upload"]["headers"]).status_code == 200
    secret = api.client.get("/api/v3/webhook/secret", headers=api.h()).json()["data"]["secret"]
    return KeyA(api.key, done, queued, result["outputs"][0], put, ticket["download_url"], secret)


def local(url: str) -> str:
    assert url.startswith("http://testserver/"), url
    return url.removeprefix("http://testserver")


def assert_not_found(r) -> None:
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["code"] == 404 and body["data"] is None and isinstance(body["message"], str), body


def assert_keeps_secrets(r, a: KeyA) -> None:
    for s in a.secrets():
        assert s not in r.text, f"{r.request.method} {r.request.url} leaks {s!r}: {r.text[:300]}"


@pytest.mark.parametrize("suffix", ["", "/result"], ids=["prediction", "result"])
def test_another_keys_prediction_is_404_for_every_state(api, key_a, suffix):
    b = api.new_key(1.0)
    for pid in (key_a.done, key_a.queued):
        assert api.client.get(f"/api/v3/predictions/{pid}{suffix}", headers=api.h()).status_code == 200
        r = api.client.get(f"/api/v3/predictions/{pid}{suffix}", headers=api.h(b))
        assert_not_found(r)
        # the id asked for may be echoed back ("prediction not found: <id>"); nothing else of A's may
        assert not [s for s in key_a.secrets() if s != pid and s in r.text], r.text


@pytest.mark.parametrize("suffix", ["", "/result"], ids=["prediction", "result"])
def test_another_keys_id_answers_exactly_like_an_unknown_id(api, key_a, suffix):
    b = api.new_key(1.0)
    unknown = secrets.token_hex(16)
    assert len(unknown) == len(key_a.done)
    theirs = api.client.get(f"/api/v3/predictions/{key_a.done}{suffix}", headers=api.h(b))
    missing = api.client.get(f"/api/v3/predictions/{unknown}{suffix}", headers=api.h(b))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(key_a.done, "<id>") == missing.text.replace(unknown, "<id>")
    assert sorted(theirs.headers.keys()) == sorted(missing.headers.keys())


def test_history_of_another_key_never_lists_a_prediction(api, key_a, photo_png):
    b = api.new_key(1.0)
    mine = api.submit({"image": data_uri(photo_png), "prompt": "b's own"}, key=b).json()["data"]["id"]
    api.drain()
    for query in ({}, {"page": 1, "page_size": 100}, {"status": "completed"}, {"status": "created"},
                  {"model": KLING_MODEL}, {"created_after": "2000-01-01T00:00:00Z"}):
        r = api.client.post("/api/v3/predictions", json=query, headers=api.h(b))
        page = r.json()["data"]
        assert [i["id"] for i in page["items"]] in ([mine], []), (query, page)
        assert page["total"] == len(page["items"]), (query, page)
        assert_keeps_secrets(r, key_a)
    everything = api.client.post("/api/v3/predictions", json={"page_size": 100}, headers=api.h(b)).json()["data"]
    assert [i["id"] for i in everything["items"]] == [mine]
    a_sees = api.client.post("/api/v3/predictions", json={"page_size": 100}, headers=api.h()).json()["data"]
    assert sorted(i["id"] for i in a_sees["items"]) == sorted([key_a.done, key_a.queued])


def test_no_answer_to_another_key_carries_a_things(api, key_a):
    b = api.new_key(1.0)
    for method, path, body in [
        ("GET", "/api/v3/balance", None), ("GET", "/api/v3/account/balance", None), ("GET", "/api/v3/models", None),
        ("GET", "/api/v3/webhook/secret", None), ("POST", "/api/v3/predictions", {"page_size": 100}),
        ("POST", "/api/v3/model/pricing", {"model_id": KLING_MODEL}),
        ("POST", "/api/v3/media/uploads", {"filename": "a.png", "size": 10}),
    ]:
        r = api.client.request(method, path, json=body, headers=api.h(b))
        assert r.status_code == 200, r.text
        assert_keeps_secrets(r, key_a)


def test_another_key_cannot_reuse_a_used_upload_ticket(api, key_a, photo_png):
    b = api.new_key(1.0)
    r = api.client.put(key_a.upload_put, content=b"\x89PNG b's bytes",
                       headers={**api.h(b), "Content-Type": "image/png"})
    assert r.status_code == 409 and r.json()["code"] == 409, r.text
    assert api.client.get(local(key_a.upload_url)).content == photo_png  # A's file, untouched
    own = api.client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 10}, headers=api.h(b)).json()
    assert token_of(own["data"]["download_url"]) != token_of(key_a.upload_url)


def test_each_key_has_its_own_stable_webhook_secret(api, key_a):
    b = api.new_key(1.0)
    secret_b = api.client.get("/api/v3/webhook/secret", headers=api.h(b)).json()["data"]["secret"]
    assert secret_b.startswith("whsec_") and key_a.secret.startswith("whsec_")
    assert secret_b != key_a.secret
    assert api.client.get("/api/v3/webhook/secret", headers=api.h(b)).json()["data"]["secret"] == secret_b
    assert api.client.get("/api/v3/webhook/secret", headers=api.h()).json()["data"]["secret"] == key_a.secret


def keyed_operations(api) -> list[tuple[str, str]]:
    ops = [(method.upper(), path) for path, item in api.app.openapi()["paths"].items() for method in item]
    return [op for op in ops if op not in KEYLESS]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Bearer nope", "Basic {key}", "{key}",
                                           "Bearer {key}x", "Bearer  {key} trailing"])
def test_every_keyed_endpoint_is_401_without_a_valid_key(api, key_a, authorization):
    operations = keyed_operations(api)
    assert ("GET", "/api/v3/predictions/{prediction_id}") in operations and len(operations) >= 12
    params = {"prediction_id": key_a.done, "model_path": KLING_MODEL}
    headers = {} if authorization is None else {"Authorization": authorization.format(key=key_a.key)}
    for method, template in operations:
        path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)
        r = api.client.request(method, path, json={"image": "https://example.com/a.png", "prompt": "x"},
                               headers=headers)
        assert r.status_code == 401, (method, path, authorization, r.status_code, r.text[:200])
        body = r.json()
        assert body["code"] == 401 and body["data"] is None and body["message"].startswith("Unauthorized"), body
        assert_keeps_secrets(r, key_a)
