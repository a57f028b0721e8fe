"""Hostile input against the whole API: never a 5xx, always the v3 envelope.

Each test gets its own app (real SQLite, a real key whose balance never runs out). schemathesis
walks the OpenAPI document FastAPI builds, every operation. Most routes read their JSON body by
hand, so the document declares no body for them: hypothesis also POSTs arbitrary JSON to each
JSON endpoint (wrong types, huge numbers, NaN, lone surrogates, hostile URLs, nesting past the
parser's recursion limit), and the bodies once seen to crash the API are kept as plain cases.
"""

from __future__ import annotations

import base64
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from openi2v.api.app import create_app
from openi2v.config import KLING_MODEL, Settings
from openi2v.domain.billing import to_micros
from openi2v.domain.prediction import Status
from openi2v.store import AccountStore
from tests import pictures

SUBMIT = f"/api/v3/{KLING_MODEL}"
HISTORY = "/api/v3/predictions"
PRICING = "/api/v3/model/pricing"
UPLOADS = "/api/v3/media/uploads"
BILLINGS = "/api/v3/billings/search"
USAGE = "/api/v3/user/usage_stats"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@dataclass
class Served:
    app: FastAPI
    client: TestClient
    auth: dict[str, str]

    def post(self, path: str, body: bytes, **kw):
        return self.client.post(path, content=body, headers={**self.auth, "Content-Type": "application/json"}, **kw)


@pytest.fixture
def served(settings):
    settings.sync_timeout_s = 0.0  # a valid body asking for sync mode answers 5004 at once, not in 90 s
    app = create_app(settings)
    key = AccountStore(app.state.ctx.db).create_key("fuzz", to_micros(10.0**6))[1]  # never a 403 for balance
    client = TestClient(app)
    yield Served(app, client, {"Authorization": f"Bearer {key}"})
    client.close()


def assert_envelope(r, allowed: set[int], fields: set[str] = frozenset()) -> None:
    """Every answer, good or bad: {"code", "message", "data"} with code = the HTTP status; a 400
    or 413 says "<field>: <rule>" of a field the endpoint reads, one the client sent, or the body."""
    where = f"{r.request.method} {r.request.url} {r.request.content[:300]!r} -> {r.status_code} {r.text[:300]}"
    assert r.status_code < 500, where
    assert r.status_code in allowed, where
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"code", "message", "data"}, where
    assert body["code"] == r.status_code and isinstance(body["message"], str), where
    if r.status_code in (400, 413):
        assert names_a_field(body["message"], {"body", *fields, *sent_keys(r.request.content)}), where
    if r.status_code == 404:  # only pricing answers 404, for a model it does not serve
        assert body["message"].startswith("model not found: "), where


def names_a_field(message: str, names: set[str]) -> bool:
    """"<field>: <rule>" where the field is one of `names`, or a path into one (inputs.duration, items[2])."""
    return any(re.match(re.escape(name) + r"(?:[.\[].*?)?: \S", message, re.S) for name in names)


def sent_keys(raw: bytes) -> set[str]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return set()
    return set(body) if isinstance(body, dict) else set()


# --- schemathesis: every operation in the OpenAPI document -------------------------------


def openapi_document() -> dict:
    """The document of an app built in a throwaway data dir: the routes, and so the document,
    do not depend on the settings, and schemathesis needs it when pytest collects the tests."""
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp) / "data", workers=0))
        try:
            return app.openapi()
        finally:
            app.state.ctx.db.dispose()


schema = schemathesis.openapi.from_dict(openapi_document())


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_openapi_operations_never_answer_5xx_and_match_their_schema(case, served):
    r = case.call_and_validate(app=served.app, headers=served.auth, checks=[not_a_server_error,
                                                                            response_schema_conformance])
    assert r.status_code != 401, "the fuzzer must get past authentication to reach the routes"


# --- hypothesis: arbitrary JSON at each JSON endpoint ------------------------------------

def mostly(usual: st.SearchStrategy, other: st.SearchStrategy) -> st.SearchStrategy:
    """`usual` three draws in four, else `other` (st.one_of would give each of other's branches an equal share)."""
    return st.integers(0, 3).flatmap(lambda i: other if i == 0 else usual)


SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d", "\udbff\udfff\ud800"])
texts = mostly(  # mostly valid Unicode, so a value gets past the Unicode check to the rules behind it
    st.text(max_size=24) | st.sampled_from(["", " ", "5", "10", "-1", "null", "1e309", "NaN", "\x00", "%00", "../x"]),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=24) | SURROGATES)
numbers = st.one_of(st.integers(), st.floats(), st.sampled_from([2**31, 2**32, 2**63, -(2**63) - 1, 2**64, 10**300,
                                                                 1e308, -0.0, 5.0, 10.0]))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner,
                                                                                                 max_size=4),
                           max_leaves=12)
GOOD_IMAGE = "data:image/png;base64," + base64.b64encode(pictures.encode(Image.new("RGB", (320, 320)))).decode()
URLS = st.one_of(st.sampled_from([
    "https://example.com/a.png", GOOD_IMAGE,
    "http://[::1:9911/x", "http://[", "https://]/", "http://ex\uff03ample.com/a.png", "http://\ud800/a.png",
    "http://example.com:99999/a.png", "http://example.com:abc/a.png", "https://user:pw@/a.png", "http:///a.png",
    "data:", "data:image/png;base64,", "data:image/png;base64,!!!!", "data:image/png,raw", "data:;base64,AAAA",
    "data:\ud800;base64,iVBORw0KGgo=", "data:image/png;base64,iVBORw0KGgo=",
    "http://testserver/media/AAAAAAAAAAAAAAAAAAAA/a.png", "http://testserver/media/../../../etc/passwd",
    "http://testserver/files/AAAAAAAAAAAAAAAAAAAA/out.mp4",
]), st.builds("http://{}/{}".format, texts, texts), st.builds("data:{};base64,{}".format, texts, texts))
TIMES = st.sampled_from(["2025-05-18T06:00:00Z", "2025-05-18", "0001-01-01T00:00:00+01:00",
                         "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999", "2025-13-45T99:99:99Z", "Z",
                         "+002025-01-01", "2025-05-18T06:00:00+24:00", "\ud800"])
any_value = json_values | URLS | TIMES
DURATIONS = st.sampled_from([5, 10, "5", "10"])

SUBMIT_FIELDS = {
    "image": URLS, "last_image": URLS, "audio": URLS, "prompt": st.just("slow zoom in") | texts,
    "negative_prompt": st.just("blur") | texts, "duration": DURATIONS, "seed": st.sampled_from([0, 42, -1, 2**32 - 1]),
    "guidance_scale": st.sampled_from([0, 0.5, 1]), "enable_sync_mode": st.booleans(),
    "enable_base64_output": st.booleans(),
}
HISTORY_FIELDS = {
    "page": st.integers(1, 3), "page_size": st.integers(1, 100), "status": st.sampled_from([s.value for s in Status]),
    "model": st.just(KLING_MODEL), "created_after": TIMES, "created_before": TIMES,
}
PRICING_FIELDS = {
    "model_id": st.just(KLING_MODEL), "model": st.just(KLING_MODEL),
    "inputs": st.fixed_dictionaries({}, optional={"duration": mostly(DURATIONS, any_value)}),
}
UPLOAD_FIELDS = {
    "filename": st.sampled_from(["in.png", "a.jpg", "noext", ".png", "../../x.png", "a" * 300]) | texts,
    "size": st.sampled_from([0, 10, 50 * 2**20, 50 * 2**20 + 1]), "content_type": st.sampled_from(["image/png", ""]),
}
BILLING_FIELDS = {
    "page": st.integers(1, 3), "page_size": st.integers(1, 100), "prediction_uuids": st.lists(texts, max_size=3),
    "billing_type": st.sampled_from(["deduct", "recharge"]), "start_time": TIMES, "end_time": TIMES,
}
DATES = TIMES | st.sampled_from(["2024-01-01", "0001-01-01", "9999-12-31", "2024-02-30", "20240101"])
USAGE_FIELDS = {"start_date": DATES, "end_date": DATES, "per_model_usage": st.booleans()}
# path -> (the keys its bodies are made of, the fields its messages may name, the statuses it may answer)
ENDPOINTS = {
    SUBMIT: (SUBMIT_FIELDS, {*SUBMIT_FIELDS, "webhook"}, {200, 400, 413}),
    HISTORY: (HISTORY_FIELDS, set(HISTORY_FIELDS), {200, 400, 413}),  # 413: over 64 KB
    PRICING: (PRICING_FIELDS, {*PRICING_FIELDS, "duration"}, {200, 400, 404, 413}),  # inputs.duration is "duration"
    UPLOADS: (UPLOAD_FIELDS, set(UPLOAD_FIELDS), {200, 400, 413}),
    BILLINGS: (BILLING_FIELDS, set(BILLING_FIELDS), {200, 400, 413}),
    USAGE: (USAGE_FIELDS, set(USAGE_FIELDS), {200, 400, 413}),
}


def deep(depth: int) -> bytes:
    return b'{"prompt": ' + b"[" * depth + b"]" * depth + b"}"


def raw_bodies(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[bytes]:
    """Mostly objects of the endpoint's own keys, each key mostly holding a value it accepts (so
    one hostile value rides along with good ones, past the checks that come first); else any JSON
    value, or bytes no JSON encoder writes: nesting past the parser's limit, 5,000-digit numbers,
    NaN, an escaped lone surrogate, invalid UTF-8."""
    values = {k: mostly(v, any_value) for k, v in fields.items()}
    objects = st.fixed_dictionaries(values) | st.fixed_dictionaries({}, optional=values)
    encoded = mostly(objects, json_values).map(lambda v: json.dumps(v).encode())
    return mostly(encoded, st.sampled_from([10, 1000, 100_000]).map(deep) | st.sampled_from([
        b"[" * 100_000, b"9" * 5000, b'{"page": ' + b"9" * 5000 + b"}", b'{"a": NaN, "b": Infinity}', b'"\\ud800"',
        b"\xff\xfe", b"{}"]))


@pytest.mark.parametrize("path", list(ENDPOINTS))
@FUZZ
@given(data=st.data())
def test_arbitrary_json_is_answered_in_the_envelope(served, path, data):
    fields, names, allowed = ENDPOINTS[path]
    assert_envelope(served.post(path, data.draw(raw_bodies(fields), label="body")), allowed, names)


@FUZZ
@given(url=URLS | texts)
@example(url="http://[::1:9911/x")
def test_submit_webhook_query_is_answered_in_the_envelope(served, url):
    query = quote(url, safe="", errors="surrogatepass")  # a lone surrogate goes out as the bytes it would be
    r = served.client.post(f"{SUBMIT}?webhook={query}", json={"image": "https://example.com/a.png", "prompt": "x"},
                           headers=served.auth)
    assert_envelope(r, {200, 400}, {"webhook"})


# The hostile bodies seen to crash the API once: each keeps its own test so a regression names itself.
@pytest.mark.parametrize("path,body", [
    (SUBMIT, {"image": "https://example.com/a.png", "prompt": "\ud800"}),
    (SUBMIT, {"image": "https://example.com/a.png", "prompt": "x", "negative_prompt": "\udfff"}),
    (SUBMIT, {"image": "http://[::1:9911/x", "prompt": "x"}),
    (SUBMIT, {"image": "http://ex\uff03ample.com/a.png", "prompt": "x"}),
    (SUBMIT, {"image": "https://example.com/a.png", "prompt": "x", "duration": float("inf")}),
    (SUBMIT, {"image": "https://example.com/a.png", "prompt": "x", "seed": float("nan")}),
    (HISTORY, {"status": ["completed"]}),
    (HISTORY, {"status": {"a": 1}}),
    (HISTORY, {"model": ["x"]}),
    (HISTORY, {"model": {"a": 1}}),
    (HISTORY, {"created_after": "0001-01-01T00:00:00+01:00"}),
    (HISTORY, {"created_before": "9999-12-31T23:59:59-01:00"}),
    (PRICING, {"model_id": [KLING_MODEL]}),
    (PRICING, {"model_id": {"a": 1}}),
    (PRICING, {"model_id": "\ud800"}),
    (PRICING, {"model_id": KLING_MODEL, "inputs": {"duration": float("inf")}}),
    (UPLOADS, {"filename": "in.png", "size": 10, "content_type": 5}),
    (UPLOADS, {"filename": "in.png", "size": 10, "content_type": ["image/png"]}),
    (UPLOADS, {"filename": "in.png", "size": 10, "content_type": "image/png\ud800"}),
    (UPLOADS, {"filename": "\ud800.png", "size": 10}),
    (UPLOADS, {"filename": "in.png", "size": 10, "content_type": "image/\u00e9\u4e2d"}),
], ids=lambda v: v if isinstance(v, str) else json.dumps(v)[:60])
def test_hostile_body_is_a_4xx_in_the_envelope(served, path, body):
    _, names, allowed = ENDPOINTS[path]
    assert_envelope(served.post(path, json.dumps(body).encode()), allowed, names)


@pytest.mark.parametrize("path", list(ENDPOINTS))
@pytest.mark.parametrize("body", [deep(100_000), b"[" * 100_000 + b"]" * 100_000,
                                  b'{"a": ' * 50_000 + b"1" + b"}" * 50_000],
                         ids=["deep-list-in-field", "deep-list", "deep-object"])
def test_json_nested_past_the_parser_limit_is_a_400(served, path, body):
    r = served.post(path, body)
    assert_envelope(r, {400, 413}, ENDPOINTS[path][1])
    assert r.json()["message"].startswith("body: ")
