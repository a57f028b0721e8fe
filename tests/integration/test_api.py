"""The app in-process (real SQLite, real files), workers drained in burst mode."""

from __future__ import annotations

import base64
import socket

import pytest
from fastapi.testclient import TestClient

from openi2v.api.app import create_app
from openi2v.config import KLING_MODEL
from openi2v.domain.billing import to_micros
from openi2v.engines.registry import build_engines
from openi2v.store import AccountStore
from openi2v.worker.loop import Worker
from tests import pictures

SUBMIT = f"/api/v3/{KLING_MODEL}"


class Api:
    def __init__(self, settings):
        self.settings = settings
        self.app = create_app(settings)
        self.client = TestClient(self.app)
        self.db = self.app.state.ctx.db
        self.key = self.new_key(10.0)
        self.worker = Worker(settings, self.db, build_engines(settings))

    def new_key(self, usd: float) -> str:
        return AccountStore(self.db).create_key("test", to_micros(usd))[1]

    def h(self, key=None):
        return {"Authorization": f"Bearer {key or self.key}"}

    def submit(self, body, key=None, **kw):
        return self.client.post(SUBMIT, json=body, headers=self.h(key), **kw)

    def result(self, pid, key=None):
        return self.client.get(f"/api/v3/predictions/{pid}/result", headers=self.h(key))

    def balance(self, key=None) -> float:
        return self.client.get("/api/v3/balance", headers=self.h(key)).json()["data"]["balance"]

    def drain(self):
        while self.worker.run_once():
            pass


def data_uri(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_submit_poll_complete_and_charge(api, photo_png):
    r = api.submit({"image": data_uri(photo_png), "prompt": "slow zoom in", "duration": "5", "seed": 42,
                    "mystery": True})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"code", "message", "data"}  # the v3 envelope: nothing beside it
    d = body["data"]
    assert (body["code"], d["status"], d["outputs"], d["has_nsfw_contents"], d["error"]) == (200, "created", [], [], "")
    assert d["urls"]["get"] == f"http://testserver/api/v3/predictions/{d['id']}/result"
    assert d["created_at"].endswith("Z") and d["queue_position"] == 0 and d["seed"] == 42
    api.drain()
    done = api.result(d["id"]).json()["data"]
    assert done["status"] == "completed" and done["has_nsfw_contents"] == [False]
    assert isinstance(done["timings"]["inference"], int) and done["timings"]["inference"] > 0
    assert done["executionTime"] == done["timings"]["inference"]
    assert done["details"]["camera_plan"]["steps"] == ["slow zoom in"]
    video = api.client.get(done["outputs"][0].replace("http://testserver", ""))  # no key needed
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    assert api.client.get(f"/api/v3/predictions/{d['id']}", headers=api.h()).json()["data"]["id"] == d["id"]
    assert api.client.get("/api/v3/balance", headers=api.h()).json()["data"]["balance"] == pytest.approx(9.65)


def test_ten_seconds_costs_seventy_cents(api, photo_png):
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left", "duration": 10}).json()["data"]["id"]
    api.drain()
    assert api.result(pid).json()["data"]["status"] == "completed"
    assert api.client.get("/api/v3/balance", headers=api.h()).json()["data"]["balance"] == pytest.approx(9.30)


@pytest.mark.parametrize("body,message", [
    ({"prompt": "x"}, "image: is required"),
    ({"image": "https://example.com/a.png"}, "prompt: is required"),
    ({"image": "https://example.com/a.png", "prompt": "x", "guidance_scale": 2}, "guidance_scale: must be between 0 and 1 (got 2)"),
    ({"image": "https://example.com/a.png", "prompt": "x", "duration": 6}, "duration: must be 5 or 10 (got 6)"),
])
def test_bad_fields_are_400_naming_the_field(api, body, message):
    r = api.submit(body)
    assert r.status_code == 400
    assert r.json() == {"code": 400, "message": message, "data": None}


def test_bad_local_image_is_400_at_submit(api):
    small = pictures.png(200, 200)
    r = api.submit({"image": data_uri(small), "prompt": "x"})
    assert r.status_code == 400 and r.json()["message"] == "image: must be at least 300x300 pixels (got 200x200)"
    r = api.submit({"image": data_uri(b"GIF89a....."), "prompt": "x"})
    assert r.json()["message"] == "image: must be a JPEG or PNG image"


def test_non_json_body_is_400(api):
    r = api.client.post(SUBMIT, content=b"{nope", headers={**api.h(), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"] == "body: must be valid JSON"


def test_auth(api):
    assert api.client.post(SUBMIT, json={}).status_code == 401
    r = api.client.get("/api/v3/balance", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json() == {"code": 401, "message": "Unauthorized: invalid API key", "data": None}


def test_a_key_sees_only_its_own_predictions(api, photo_png):
    pid = api.submit({"image": data_uri(photo_png), "prompt": "x"}).json()["data"]["id"]
    other = api.new_key(1.0)
    r = api.result(pid, key=other)
    assert r.status_code == 404 and r.json()["code"] == 404
    assert api.client.post("/api/v3/predictions", json={"page": 1, "page_size": 10},
                           headers=api.h(other)).json()["data"]["total"] == 0
    assert api.result("0" * 32).status_code == 404


def test_insufficient_balance_is_403_and_holds_count(api, photo_png):
    poor = api.new_key(0.40)
    body = {"image": data_uri(photo_png), "prompt": "x"}
    assert api.submit(body, key=poor).status_code == 200  # 0.35 held
    r = api.submit(body, key=poor)
    assert r.status_code == 403 and r.json() == {"code": 403, "message": "insufficient balance", "data": None}
    assert api.submit({**body, "duration": 10}, key=api.new_key(0.5)).status_code == 403


def test_unreachable_image_fails_with_1402_and_costs_nothing(settings):
    settings.fetch_allow_private = True  # past the SSRF guard, to a loopback port where nothing listens
    api = Api(settings)
    with socket.socket() as unused, api.client:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: the port is ours and a connection is refused
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/missing.png"
        pid = api.submit({"image": url, "prompt": "x"}).json()["data"]["id"]
        api.drain()
        body = api.result(pid).json()
        d = body["data"]
        # a failed prediction is data: the answer is the plain envelope, the error inside it
        assert (body["code"], body["message"], set(body)) == (200, "success", {"code", "message", "data"})
        assert (d["status"], d["code"], d["outputs"]) == ("failed", 1402, [])
        assert d["error"].startswith(f"image: could not download {url} (ConnectError: ")
        assert api.client.get("/api/v3/balance", headers=api.h()).json()["data"]["balance"] == pytest.approx(10.0)


def test_ticket_upload_then_use_as_image(api, photo_png):
    t = api.client.post("/api/v3/media/uploads", json={"filename": "in.png", "size": len(photo_png),
                                                       "content_type": "image/png"}, headers=api.h()).json()
    assert t["code"] == 200 and t["data"]["upload"]["method"] == "PUT"
    put_url = t["data"]["upload"]["url"].replace("http://testserver", "")
    assert api.client.put(put_url, content=photo_png, headers=t["data"]["upload"]["headers"]).status_code == 200
    assert api.client.put(put_url, content=photo_png).status_code == 409  # single use
    got = api.client.get(t["data"]["download_url"].replace("http://testserver", ""))
    assert got.content == photo_png
    pid = api.submit({"image": t["data"]["download_url"], "prompt": "pan right"}).json()["data"]["id"]
    api.drain()
    assert api.result(pid).json()["data"]["status"] == "completed"


def test_expired_ticket_is_refused(api, photo_png):
    api.settings.upload_ticket_ttl_s = -1
    t = api.client.post("/api/v3/media/uploads", json={"filename": "in.png", "size": 10}, headers=api.h()).json()
    r = api.client.put(t["data"]["upload"]["url"].replace("http://testserver", ""), content=photo_png)
    assert r.status_code == 404 and "expired" in r.json()["message"]


def test_multipart_upload_and_bad_upload_is_400_at_submit(api):
    small = pictures.png(200, 200)
    r = api.client.post("/api/v3/media/upload/binary", files={"file": ("s.png", small, "image/png")}, headers=api.h())
    d = r.json()["data"]
    assert r.status_code == 200 and d["type"] == "image" and d["size"] == len(small)
    r = api.submit({"image": d["download_url"], "prompt": "x"})
    assert r.status_code == 400 and r.json()["message"].startswith("image: must be at least 300x300")


def test_upload_too_large_is_413(api):
    r = api.client.post("/api/v3/media/uploads", json={"filename": "x.png", "size": 10**10}, headers=api.h())
    assert r.status_code == 413 and r.json()["code"] == 413


def test_history_paging_and_filters(api, photo_png):
    ids = [api.submit({"image": data_uri(photo_png), "prompt": f"p{i}"}).json()["data"]["id"] for i in range(3)]
    page = api.client.post("/api/v3/predictions", json={"page": 1, "page_size": 2}, headers=api.h()).json()["data"]
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == ids[::-1][:2]
    page2 = api.client.post("/api/v3/predictions", json={"page": 2, "page_size": 2}, headers=api.h()).json()["data"]
    assert [i["id"] for i in page2["items"]] == [ids[0]]
    f = api.client.post("/api/v3/predictions", json={"page": 1, "page_size": 10, "status": "completed"},
                        headers=api.h()).json()["data"]
    assert f["total"] == 0
    later = api.client.post("/api/v3/predictions", json={"page": 1, "page_size": 10,
                                                         "created_after": "2999-01-01T00:00:00Z"}, headers=api.h())
    assert later.json()["data"]["total"] == 0
    bad = api.client.post("/api/v3/predictions", json={"page": 1, "page_size": 101}, headers=api.h())
    assert bad.status_code == 400 and bad.json()["message"] == "page_size: must be an integer between 1 and 100"


def test_models_and_pricing(api):
    models = api.client.get("/api/v3/models", headers=api.h()).json()["data"]
    assert models[0]["model_id"] == KLING_MODEL and "Not a generative model" in models[0]["description"]
    assert models[0]["api_schema"]["api_schemas"][0]["request_schema"]["required"] == ["image", "prompt"]
    q = api.client.post("/api/v3/model/pricing", json={"model_id": KLING_MODEL, "inputs": {"duration": 10}},
                        headers=api.h()).json()["data"]
    assert (q["price"], q["unit_price"], q["billed_seconds"]) == (0.7, 0.07, 10)
    r = api.client.post("/api/v3/model/pricing", json={"model_id": "nope"}, headers=api.h())
    assert r.status_code == 404


def test_unknown_model_is_404(api):
    r = api.client.post("/api/v3/some/other-model", json={"prompt": "x"}, headers=api.h())
    assert r.status_code == 404 and r.json()["message"] == "model not found: some/other-model"


def test_sync_mode_times_out_with_5004(api, photo_png):
    api.settings.sync_timeout_s = 0.3  # no worker runs: the prediction stays queued
    r = api.submit({"image": data_uri(photo_png), "prompt": "x", "enable_sync_mode": True})
    d = r.json()["data"]
    assert r.status_code == 200 and d["code"] == 5004 and d["status"] == "created"
    assert "Sync mode timed out" in d["error"]


def test_base64_output(api, photo_png):
    pid = api.submit({"image": data_uri(photo_png), "prompt": "x", "enable_base64_output": True}).json()["data"]["id"]
    api.drain()
    out = api.result(pid).json()["data"]["outputs"][0]
    assert base64.b64decode(out, validate=True)[4:8] == b"ftyp"


def test_webhook_with_base64_is_refused(api, photo_png):
    r = api.client.post(SUBMIT + "?webhook=https://example.com/h", json={"image": data_uri(photo_png), "prompt": "x",
                        "enable_base64_output": True}, headers=api.h())
    assert r.status_code == 400 and r.json()["message"].startswith("webhook:")


def test_nsfw_block_policy_fails_with_1200(api, photo_png, monkeypatch):
    api.settings.nsfw_policy = "block"
    monkeypatch.setattr(api.worker.safety, "is_nsfw", lambda rgb: True)
    pid = api.submit({"image": data_uri(photo_png), "prompt": "x"}).json()["data"]["id"]
    api.drain()
    d = api.result(pid).json()["data"]
    assert (d["status"], d["code"]) == ("failed", 1200)


def test_nsfw_flag_policy_flags(api, photo_png, monkeypatch):
    monkeypatch.setattr(api.worker.safety, "is_nsfw", lambda rgb: True)
    pid = api.submit({"image": data_uri(photo_png), "prompt": "x"}).json()["data"]["id"]
    api.drain()
    d = api.result(pid).json()["data"]
    assert (d["status"], d["has_nsfw_contents"]) == ("completed", [True])


def test_safety_checker_runs_nudenet_on_a_clean_photo():
    from openi2v.media.safety import SafetyChecker
    import numpy as np

    assert SafetyChecker().is_nsfw(np.asarray(pictures.photo(640, 480))) is False


def test_storage_that_keeps_failing_fails_the_prediction_after_its_attempts_not_for_ever(api, photo_png, monkeypatch):
    from openi2v.errors import StorageError
    from openi2v.worker import loop

    def no_permission(*args):
        raise StorageError("could not store files/x in the bucket (AccessDenied)")

    monkeypatch.setattr(api.worker.storage, "save_output", no_permission)
    monkeypatch.setattr(loop, "STORAGE_RETRY_S", 0.0)  # claimable again at once (5 s later otherwise)
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).json()["data"]["id"]
    for _ in range(api.settings.max_attempts):
        assert api.worker.run_once()
    assert not api.worker.run_once()  # nothing left to claim: not a loop
    d = api.result(pid).json()["data"]
    assert (d["status"], d["error"], d["code"]) == ("failed", "the result could not be stored", 5000)
    assert api.balance() == pytest.approx(10.0)  # its quote released, nothing charged


def test_a_storage_failure_waits_before_the_next_attempt(api, photo_png, monkeypatch):
    from openi2v.errors import StorageError

    def no_permission(*args):
        raise StorageError("could not store files/x in the bucket (AccessDenied)")

    monkeypatch.setattr(api.worker.storage, "save_output", no_permission)
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).json()["data"]["id"]
    assert api.worker.run_once() and not api.worker.run_once()  # back in the queue, held for STORAGE_RETRY_S
    d = api.result(pid).json()["data"]
    assert d["status"] == "created" and d["queue_position"] >= 4
