"""Edges of the hosted contract (issue 16, part 0): what the hosted API takes, taken here too."""

from __future__ import annotations

import pytest

from tests import pictures


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
