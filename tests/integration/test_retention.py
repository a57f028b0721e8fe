"""Retention: outputs and uploads expire (7 days by default, as hosted); each result says when;
the sweeper deletes them and a fetch of one is a 410 that says so; nothing a queued or running
prediction needs is swept. Sweeps run at a given time, so nothing here waits a week."""

from __future__ import annotations

import pytest

from openi2v.api.schemas import iso
from openi2v.store import uploads as uploads_module
from openi2v.store.database import now
from openi2v.sweeper import Sweeper
from tests import pictures
from tests.integration.test_api import SUBMIT, Api
from tests.together import at_once

DAY = 86400
BODY = {"image": pictures.data_uri(), "prompt": "pan left"}


@pytest.fixture
def api(settings, database_url):
    a = Api(settings.model_copy(update={"database_url": database_url}))
    yield a
    a.client.close()
    a.db.dispose()


def sweeper(api: Api) -> Sweeper:
    return Sweeper(api.db, api.app.state.ctx.storage, api.settings)


def completed(api: Api, **body) -> dict:
    pid = api.submit({**BODY, **body}).json()["data"]["id"]
    api.drain()
    data = api.result(pid).json()["data"]
    assert data["status"] == "completed"
    return data


def local(api: Api, url: str) -> str:
    return url.split("testserver/", 1)[1]


def test_outputs_expire_after_seven_days_and_then_say_so(api):
    data = completed(api)
    expires = data["expires_at"]
    video, poster = data["outputs"][0], data["details"]["poster"]
    p = api.app.state.ctx.predictions.get(data["id"])
    assert p.expires_at == pytest.approx(p.completed_at + 7 * DAY)
    assert expires == iso(p.expires_at)

    assert sweeper(api).sweep(p.expires_at - 1).predictions == 0  # not yet
    assert api.client.get(video).status_code == 200
    assert sweeper(api).sweep(p.expires_at + 1).predictions == 1
    for url in (video, poster):
        r = api.client.get(url)
        assert r.status_code == 410, r.text
        assert r.json()["message"].startswith("this file expired at ")
        assert r.json()["message"].endswith(" and was deleted (files are kept 7 days)")
        assert not (api.settings.data_dir / "outputs" / local(api, url).split("/", 1)[1]).exists()
    after = api.result(data["id"]).json()["data"]  # the prediction itself stays in the history
    assert (after["status"], after["outputs"], after["expires_at"]) == ("completed", [video], expires)
    assert api.client.post("/api/v3/predictions", json={}, headers=api.h()).json()["data"]["total"] == 1
    assert sweeper(api).sweep(p.expires_at + 2).predictions == 0  # each is swept once


def test_a_base64_result_is_empty_once_its_file_is_gone(api):
    data = completed(api, enable_base64_output=True)
    assert len(data["outputs"][0]) > 1000
    sweeper(api).sweep(now() + 8 * DAY)
    after = api.result(data["id"])
    assert after.status_code == 200 and after.json()["data"]["outputs"] == []


def upload(api: Api) -> dict:
    r = api.client.post("/api/v3/media/upload/binary", files={"file": ("in.png", pictures.png(), "image/png")},
                        headers=api.h())
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_an_upload_expires_and_a_submit_naming_it_is_told(api):
    made = upload(api)
    assert made["expires_at"] is not None
    sweep = sweeper(api).sweep(now() + 7 * DAY + 60)
    assert sweep.uploads == 1
    r = api.client.get(made["download_url"])
    assert r.status_code == 410 and r.json()["message"].startswith("this file expired at ")
    r = api.submit({"image": made["download_url"], "prompt": "x"})
    assert r.status_code == 400
    assert r.json()["message"].startswith("image: the upload expired at ")
    assert r.json()["message"].endswith(" and was deleted: upload the file again")


def test_nothing_a_waiting_or_running_prediction_needs_is_swept(api):
    made = upload(api)
    pid = api.submit({"image": made["download_url"], "prompt": "x"}).json()["data"]["id"]
    far = now() + 30 * DAY  # long past the upload's time, even counted from the submit
    assert sweeper(api).sweep(far).uploads == 0  # the queued prediction still needs it
    assert api.client.get(made["download_url"]).status_code == 200
    api.drain()
    assert api.result(pid).json()["data"]["status"] == "completed"
    assert sweeper(api).sweep(far).uploads == 1  # ended: now it goes


def test_an_upload_a_running_prediction_names_is_kept(api):
    made = upload(api)
    pid = api.submit({"image": made["download_url"], "prompt": "x"}).json()["data"]["id"]
    store = api.app.state.ctx.predictions
    assert store.claim("w", [SUBMIT.split("/api/v3/", 1)[1]], 60).id == pid  # running now
    assert sweeper(api).sweep(now() + 30 * DAY).uploads == 0
    assert api.client.get(made["download_url"]).status_code == 200


def test_a_file_name_no_storage_holds_is_a_plain_404(api):
    for url in ("/files/%00/x.mp4", "/media/AAAAAAAAAAAAAAAAAAAA/a%00b.png", "/files/AAAAAAAAAAAAAAAAAAAA/a%00"):
        r = api.client.get(url)
        assert r.status_code == 404 and r.json()["message"] == "file not found"
    r = api.submit({"image": "https://example.com/media/AAAAAAAAAAAAAAAAAAAA/a%00b.png", "prompt": "x"})
    assert r.status_code == 200  # not ours: a remote URL, for the worker to fetch (and fail)


def test_a_submit_restarts_an_uploads_time(api, monkeypatch):
    made = upload(api)
    token = made["download_url"].split("/media/", 1)[1].split("/")[0]
    first = api.app.state.ctx.uploads.get(token).expires_at
    later = now() + 3 * DAY
    monkeypatch.setattr(uploads_module, "now", lambda: later)  # the submit comes three days on
    api.submit({"image": made["download_url"], "prompt": "x"})
    assert api.app.state.ctx.uploads.get(token).expires_at == pytest.approx(later + 7 * DAY)
    assert first == pytest.approx(later + 4 * DAY, abs=60)


def test_sweepers_in_every_process_at_once_each_sweep_a_thing_once(api):
    for _ in range(3):
        completed(api)
    upload(api)
    results, errors = at_once(lambda _: sweeper(api).sweep(now() + 8 * DAY), 4)
    assert errors == []
    assert sum(r.predictions for r in results) == 3
    assert sum(r.uploads for r in results) == 4  # the 3 inline images, kept as uploads at submit, and 1 more
    assert not any((api.settings.data_dir / "outputs").rglob("*.mp4"))


def test_zero_keeps_files_for_ever_until_retention_is_turned_on(settings, database_url):
    forever = Api(settings.model_copy(update={"database_url": database_url, "retention_days": 0}))
    data = completed(forever)
    assert data["expires_at"] is None and upload(forever)["expires_at"] is None
    assert sweeper(forever).sweep(now() + 365 * DAY).predictions == 0
    forever.client.close()
    forever.db.dispose()

    api = Api(settings.model_copy(update={"database_url": database_url, "retention_days": 1}))
    assert sweeper(api).sweep(now()).predictions == 0  # given an expiry: a day after each ended
    assert api.result(data["id"], key=forever.key).json()["data"]["expires_at"] is not None
    swept = sweeper(api).sweep(now() + 2 * DAY)
    assert (swept.predictions, swept.uploads) == (1, 2)
    api.client.close()
    api.db.dispose()
