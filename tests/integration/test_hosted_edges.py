"""Edges of the hosted contract (issue 16, part 0): what the hosted API takes, taken here too."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from openi2v.config import KLING_MODEL, Settings
from openi2v.proxies import Proxies
from tests import pictures
from tests.integration.test_api import SUBMIT, Api


@pytest.mark.parametrize("duration, seconds", [(5.0, 5), (10.0, 10), ("10", 10)])
def test_a_whole_number_duration_in_any_spelling_is_taken(api, duration, seconds):
    r = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "duration": duration})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["input"]["duration"] == seconds
    assert api.submit({"image": pictures.data_uri(), "prompt": "x", "duration": 7.5}).status_code == 400


def test_the_history_filter_takes_the_hosted_clis_timeout(api):
    api.submit({"image": pictures.data_uri(), "prompt": "pan left"})
    page = api.client.post("/api/v3/predictions", json={"status": "timeout"}, headers=api.h())
    assert page.status_code == 200 and page.json()["data"]["total"] == 0  # ours never time out
    bad = api.client.post("/api/v3/predictions", json={"status": "done"}, headers=api.h())
    assert bad.status_code == 400 and bad.json()["message"].startswith("status: must be one of created, ")


@pytest.mark.parametrize("path", ["/api/v3/nothing", "/api/v3/kwaivgi/kling-v2.5-turbo-pro/image-to-video",
                                  "/api/v3/predictions"])
def test_an_unknown_get_is_the_envelopes_404(api, path):
    r = api.client.get(path, headers=api.h())
    assert r.status_code == 404
    assert r.json() == {"code": 404, "message": f"not found: GET {path}", "data": None}


# --- billings/search and user/usage_stats --------------------------------------------------

def search(api, body, key=None):
    return api.client.post("/api/v3/billings/search", json=body, headers=api.h(key))


def completed(api, duration=5) -> str:
    pid = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "duration": duration}).json()["data"]["id"]
    api.drain()
    assert api.result(pid).json()["data"]["status"] == "completed"
    return pid


def test_billings_search_lists_the_keys_charges_and_credits_newest_first(api):
    pid = completed(api)
    r = search(api, {"page": 1, "page_size": 10})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["page"], data["page_size"], data["total"]) == (1, 10, 2)
    charge, credit = data["items"]
    assert charge["billing_type"] == "deduct" and charge["price"] == 0.35
    assert charge["prediction"] == {"uuid": pid, "model_uuid": KLING_MODEL, "status": "completed"}
    assert charge["order"] == {"uuid": charge["uuid"], "state": "completed", "status": "completed"}
    assert charge["created_at"].endswith("Z") and charge["updated_at"] == charge["created_at"]
    assert (credit["billing_type"], credit["price"], credit["prediction"]) == ("recharge", 10.0, None)
    second = search(api, {"page": 2, "page_size": 1}).json()["data"]
    assert second["total"] == 2 and [i["uuid"] for i in second["items"]] == [credit["uuid"]]


def test_billings_search_filters_by_prediction_type_and_time(api):
    pid = completed(api)
    assert [i["prediction"]["uuid"] for i in search(api, {"prediction_uuids": [pid]}).json()["data"]["items"]] == [pid]
    assert search(api, {"prediction_uuids": ["nope"]}).json()["data"]["total"] == 0
    assert search(api, {"prediction_uuids": []}).json()["data"]["total"] == 2  # an empty list filters nothing
    assert search(api, {"billing_type": "deduct"}).json()["data"]["total"] == 1
    assert search(api, {"billing_type": "recharge"}).json()["data"]["items"][0]["price"] == 10.0
    assert search(api, {"start_time": "2999-01-01T00:00:00Z"}).json()["data"]["total"] == 0
    assert search(api, {"end_time": "2000-01-01"}).json()["data"]["total"] == 0
    assert search(api, {"start_time": "2000-01-01", "end_time": "2999-01-01T00:00:00Z"}).json()["data"]["total"] == 2


def test_billings_search_keeps_a_deleted_predictions_charge(api):
    pid = completed(api)
    assert api.client.post("/api/v3/predictions/delete", json={"ids": [pid]}, headers=api.h()).status_code == 200
    item = search(api, {"prediction_uuids": [pid]}).json()["data"]["items"][0]
    assert (item["price"], item["prediction"]) == (0.35, {"uuid": pid, "model_uuid": None, "status": "deleted"})


def test_a_key_sees_only_its_own_billings_and_usage(api):
    pid = completed(api)
    other = api.new_key(1.0)
    theirs = search(api, {}, key=other).json()["data"]
    assert theirs["total"] == 1 and theirs["items"][0]["billing_type"] == "recharge"
    assert search(api, {"prediction_uuids": [pid]}, key=other).json()["data"]["total"] == 0
    stats = api.client.post("/api/v3/user/usage_stats", json={"per_model_usage": True}, headers=api.h(other))
    assert stats.json()["data"]["summary"] == {"total_cost": 0.0, "total_requests": 0, "success_requests": 0}
    assert stats.json()["data"]["daily_usage"] == [] and stats.json()["data"]["per_model_usage"] == []


@pytest.mark.parametrize("body, message", [
    ({"page_size": 0}, "page_size: must be an integer between 1 and 100"),
    ({"page": "2"}, "page: must be an integer between 1 and 10000"),
    ({"prediction_uuids": "abc"}, "prediction_uuids: must be a list of 1 to 100 prediction ids"),
    ({"prediction_uuids": [1]}, "prediction_uuids: must be a list of 1 to 100 prediction ids"),
    ({"start_time": "yesterday"}, "start_time: must be an ISO-8601 time such as 2025-05-18T06:00:00Z"),
    ({"billing_type": "refund"}, "billing_type: must be one of deduct, recharge"),
])
def test_billings_search_refuses_a_bad_field_naming_it(api, body, message):
    r = search(api, body)
    assert r.status_code == 400 and r.json() == {"code": 400, "message": message, "data": None}


def test_usage_stats_sums_the_charges_by_day_and_model(api):
    completed(api, 5)
    completed(api, 10)
    api.submit({"image": "http://127.0.0.1:9/none.png", "prompt": "x"})  # fails: costs nothing, is not counted
    api.drain()
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    r = api.client.post("/api/v3/user/usage_stats", json={"start_date": "2024-01-01", "end_date": today,
                                                          "per_model_usage": True}, headers=api.h())
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert (data["start_date"], data["end_date"]) == ("2024-01-01", today)
    assert data["daily_usage"] == [{"date": today, "amount": 1.05, "count": 2}]
    assert data["summary"] == {"total_cost": 1.05, "total_requests": 2, "success_requests": 2}
    assert data["per_model_usage"] == [{"model_uuid": KLING_MODEL, "model_type": "image-to-video", "total_cost": 1.05,
                                        "total_count": 2, "unit_price": 0.07, "last_used_date": today}]
    default = api.client.post("/api/v3/user/usage_stats", json={}, headers=api.h()).json()["data"]
    assert default["end_date"] == today and default["summary"]["total_cost"] == 1.05
    assert default["per_model_usage"] == []  # only when asked
    before = api.client.post("/api/v3/user/usage_stats", json={"start_date": "2024-01-01", "end_date": "2024-12-31"},
                             headers=api.h()).json()["data"]
    assert before["daily_usage"] == [] and before["summary"]["total_cost"] == 0.0


@pytest.mark.parametrize("body, message", [
    ({"start_date": "2025-02-01", "end_date": "2025-01-31"}, "start_date: must not be after end_date (2025-01-31)"),
    ({"end_date": "31/01/2025"}, "end_date: must be a date such as 2025-05-18"),
    ({"start_date": ["2025-01-01"]}, "start_date: must be a date such as 2025-05-18"),
    ({"per_model_usage": "yes"}, "per_model_usage: must be true or false"),
])
def test_usage_stats_refuses_a_bad_field_naming_it(api, body, message):
    r = api.client.post("/api/v3/user/usage_stats", json=body, headers=api.h())
    assert r.status_code == 400 and r.json() == {"code": 400, "message": message, "data": None}


@pytest.mark.parametrize("path, status, message", [
    ("/api/v3/billings/search", 200, "success"),
    ("/api/v3/user/usage_stats", 200, "success"),
    ("/api/v3/upload", 400, "file: is required: a multipart/form-data part named file"),
])
def test_the_hosted_paths_are_not_taken_for_model_ids(api, path, status, message):
    r = api.client.post(path, json={}, headers=api.h())
    assert (r.status_code, r.json()["message"]) == (status, message)  # not 404 "model not found: ..."


# --- uploads ---------------------------------------------------------------------------------

def upload(api, path, data, name="a.png", mime="image/png"):
    return api.client.post(path, files={"file": (name, data, mime)}, headers=api.h())


def test_the_upload_alias_answers_data_url(api):
    png = pictures.png(400, 300)
    r = upload(api, "/api/v3/upload", png)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["url"] == data["download_url"] and data["url"].startswith("http://testserver/media/")
    assert (data["type"], data["filename"], data["size"]) == ("image", "a.png", len(png))
    assert api.client.get(data["url"]).content == png
    assert api.submit({"image": data["url"], "prompt": "pan left"}).status_code == 200


@pytest.mark.parametrize("path", ["/api/v3/upload", "/api/v3/media/upload/binary"])
def test_an_empty_upload_is_400(api, path):
    r = upload(api, path, b"")
    assert r.status_code == 400 and r.json() == {"code": 400, "message": "file: is empty", "data": None}
    assert not list((api.settings.data_dir / "uploads").rglob("a.png"))


@pytest.mark.parametrize("path", ["/api/v3/upload", "/api/v3/media/upload/binary"])
def test_an_image_one_byte_over_20_mb_is_413_saying_its_size_exactly(api, path):
    png = pictures.png(400, 300)
    r = upload(api, path, png + b"\0" * (20 * 2**20 + 1 - len(png)), name="big.png")
    assert r.status_code == 413, r.text
    assert r.json()["message"] == "file: an image must be at most 20 MB (20,971,520 bytes; got 20,971,521)"
    assert not list((api.settings.data_dir / "uploads").rglob("big.png"))


def test_the_type_is_judged_by_the_bytes_not_the_name(api):
    """A 21 MB 'image' that is no image we know has the server's cap alone (50 MB), as hosted types we do not
    judge (webp, gif ...) must not be refused for a limit that is not theirs."""
    r = upload(api, "/api/v3/upload", b"GIF89a" + b"\0" * (21 * 2**20), name="a.png")
    assert r.status_code == 200, r.text


# --- inputs the hosted model ignores -----------------------------------------------------------

@pytest.mark.parametrize("seed, used, note", [
    ("42", 42, 'seed: the string "42" was read as the integer 42'),
    (2**40 + 7, 7, "seed: 1099511627783 is outside 0 to 4294967295; 7 (the seed modulo 2**32) was used"),
])
def test_a_seed_the_hosted_api_ignores_is_read_with_a_note_in_details(api, seed, used, note):
    r = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "seed": seed})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    assert (d["seed"], d["input"]["seed"], d["details"]) == (used, used, {"notes": [note]})
    assert "_notes" not in d["input"]
    api.drain()
    done = api.result(d["id"]).json()["data"]
    assert done["status"] == "completed" and done["seed"] == used
    assert done["details"]["notes"] == [note] and "camera_plan" in done["details"]  # the worker's details kept


def test_a_seed_that_is_no_number_is_ignored_for_a_random_one(api):
    d = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "seed": "random"}).json()["data"]
    assert 0 <= d["seed"] < 2**32
    assert d["details"]["notes"] == ['seed: "random" is not an integer and was ignored; a random seed was used']


def test_an_audio_that_is_no_url_is_ignored_with_a_note(api):
    r = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "audio": "none"})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    assert "audio" not in d["input"]
    assert d["details"]["notes"] == ['audio: "none" is not a valid http(s) URL or a data URI and was ignored']


def test_a_plain_submit_has_no_notes(api):
    d = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "seed": 5}).json()["data"]
    assert "details" not in d and d["seed"] == 5


@pytest.mark.parametrize("body, message", [
    ({"guidance_scale": "0.5"}, "guidance_scale: must be a number between 0 and 1"),
    ({"duration": "7"}, "duration: must be 5 or 10 (got '7')"),
    ({"prompt": 5}, "prompt: must be a string"),
])
def test_a_bad_type_the_hosted_api_refuses_too_is_still_400(api, body, message):
    r = api.submit({"image": pictures.data_uri(), "prompt": "pan left", **body})
    assert r.status_code == 400 and r.json()["message"] == message


# --- the webhook with base64 output --------------------------------------------------------------

def test_a_webhook_with_base64_output_is_400_with_the_hosted_error_text(api):
    r = api.submit({"image": pictures.data_uri(), "prompt": "x", "enable_base64_output": True},
                   params={"webhook": "https://example.com/hook"})
    text = "webhook callback does not support base64 output, please use the normal API to use base64 output"
    assert r.status_code == 400
    assert r.json() == {"code": 400, "message": f"webhook: {text}", "data": None, "error": text}


def test_other_errors_carry_no_error_field(api):
    assert set(api.submit({"prompt": "x"}).json()) == {"code", "message", "data"}


# --- X-Forwarded-Host and -Proto ------------------------------------------------------------------

FORWARDED = {"X-Forwarded-Host": "api.example.com", "X-Forwarded-Proto": "https"}


def ticket_url(api, peer: str | None, headers: dict) -> str:
    """The download URL an upload ticket hands out, asked from the peer ``peer``."""
    client = TestClient(api.app, client=(peer, 40000)) if peer else api.client
    r = client.post("/api/v3/media/uploads", json={"filename": "a.png"}, headers={**api.h(), **headers})
    assert r.status_code == 200, r.text
    return r.json()["data"]["download_url"]


def test_a_trusted_proxys_forwarded_host_and_proto_build_the_urls(api):
    assert ticket_url(api, "127.0.0.1", FORWARDED).startswith("https://api.example.com/media/")
    assert ticket_url(api, "127.0.0.1", {"X-Forwarded-Host": "a.example, b.example:8443"}).startswith(
        "http://b.example:8443/media/")  # the nearest proxy's, the last
    assert ticket_url(api, "127.0.0.1", {"X-Forwarded-Proto": "HTTPS"}).startswith("https://testserver/media/")
    r = TestClient(api.app, client=("127.0.0.1", 40000)).post(
        SUBMIT, json={"image": pictures.data_uri(), "prompt": "x"}, headers={**api.h(), **FORWARDED})
    assert r.json()["data"]["urls"]["get"].startswith("https://api.example.com/api/v3/predictions/")


@pytest.mark.parametrize("peer, headers", [
    ("203.0.113.9", FORWARDED),  # a peer that is not the proxy
    (None, FORWARDED),  # the test client's peer, "testclient", is no address
    ("127.0.0.1", {"X-Forwarded-Host": "evil.example/path?", "X-Forwarded-Proto": "javascript"}),  # malformed
])
def test_forwarded_headers_are_ignored_unless_a_trusted_proxy_sends_them_well_formed(api, peer, headers):
    assert ticket_url(api, peer, headers).startswith("http://testserver/media/")


def test_the_trusted_proxies_are_a_setting_of_ips_and_cidrs(settings):
    settings.forwarded_allow_ips = "192.0.2.1, 10.0.0.0/8"
    api = Api(settings)
    assert ticket_url(api, "10.1.2.3", FORWARDED).startswith("https://api.example.com/")
    assert ticket_url(api, "192.0.2.1", FORWARDED).startswith("https://api.example.com/")
    assert ticket_url(api, "127.0.0.1", FORWARDED).startswith("http://testserver/")  # no longer in the list
    api.app.state.ctx.proxies = Proxies.parse("*")
    assert ticket_url(api, None, FORWARDED).startswith("https://api.example.com/")
    api.settings.public_url = "https://public.example/base"
    assert ticket_url(api, "127.0.0.1", FORWARDED).startswith("https://public.example/base/media/")  # it wins


def test_a_malformed_trusted_proxy_list_is_refused_with_the_entry():
    with pytest.raises(ValidationError, match=r"forwarded_allow_ips\n  Value error, 'localhost' is not an IP address"):
        Settings(forwarded_allow_ips="127.0.0.1,localhost")


@pytest.mark.parametrize("data, status, message", [
    (b"", 400, "file: is empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(20 * 2**20 - 7), 413,
     "file: an image must be at most 20 MB (20,971,520 bytes; got 20,971,521)"),
])
def test_a_ticket_upload_is_held_to_the_multipart_rules_and_kept_only_when_it_passes(api, data, status, message):
    t = api.client.post("/api/v3/media/uploads", json={"filename": "in.png"}, headers=api.h()).json()["data"]
    put = api.client.put(t["upload"]["url"].replace("http://testserver", ""), content=data)
    assert put.status_code == status and put.json()["message"] == message
    assert api.client.get(t["download_url"].replace("http://testserver", "")).status_code == 404  # not kept


@pytest.mark.parametrize("path", ["/api/v3/predictions", "/api/v3/billings/search"])
def test_listings_page_through_their_first_ten_thousand_entries_only(api, path):
    assert api.client.post(path, json={"page": 100, "page_size": 100}, headers=api.h()).status_code == 200
    r = api.client.post(path, json={"page": 101, "page_size": 100}, headers=api.h())
    assert r.status_code == 400 and r.json()["message"] == (
        "page: pages reach the first 10,000 entries only (page 101 of 100 starts past them): "
        "narrow the time range instead")


@pytest.mark.parametrize("host", ["evil.com/path?q=", "evil.com@x", "a b", "a:99999", "a..b", "x" * 300])
def test_a_malformed_host_header_never_shapes_a_url(api, host):
    r = api.client.post(SUBMIT, json={"image": pictures.data_uri(), "prompt": "pan left"},
                        headers={**api.h(), "Host": host})
    assert r.status_code == 200
    assert r.json()["data"]["urls"]["get"].startswith("http://testserver:80/api/v3/predictions/")  # the server's own


def test_a_busy_database_is_a_503_to_retry_not_a_500(api, monkeypatch):
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    def exhausted(*args, **kwargs):
        raise PoolTimeout("QueuePool limit of size 5 overflow 10 reached")

    monkeypatch.setattr(api.app.state.ctx.usage, "entries", exhausted)
    r = api.client.post("/api/v3/billings/search", json={}, headers=api.h())
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json() == {"code": 503, "message": "the server is busy: retry", "data": None}


def test_a_file_answers_head_as_get_without_the_body(api):
    url = api.client.post("/api/v3/media/upload/binary", files={"file": ("a.png", pictures.png(), "image/png")},
                          headers=api.h()).json()["data"]["download_url"].replace("http://testserver", "")
    head, get = api.client.head(url), api.client.get(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "image/png"
    assert head.headers["content-length"] == str(len(get.content))


def test_a_long_numeric_seed_is_noted_in_brief(api):
    r = api.submit({"image": pictures.data_uri(), "prompt": "pan left", "seed": "9" * 4000})
    note = r.json()["data"]["details"]["notes"][0]
    assert note.startswith('seed: the string "99999') and len(note) < 200


def test_a_nul_in_a_filter_never_reaches_the_database(settings, database_url):
    api = Api(settings.model_copy(update={"database_url": database_url}))
    r = api.client.post("/api/v3/billings/search", json={"prediction_uuids": ["a\u0000b"]}, headers=api.h())
    assert r.status_code == 200 and r.json()["data"]["total"] == 0  # no id of ours has one
    r = api.client.post("/api/v3/predictions", json={"model": "x\u0000"}, headers=api.h())
    assert r.status_code == 400 and r.json()["message"] == "model: must not contain a NUL character"
