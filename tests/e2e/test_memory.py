"""An API process's memory stays bounded whatever one client sends (a real server, one API process).

Before the limits, a 1 GB chunked PUT and ten many-pixel PNGs each took the process to 2.1 GB.
Where the answer may be a closed connection (``None``: the server answered 413 and closed while
the client was still sending), the server is checked alive after; the 413 itself is asserted
where the client can read it (below, and in tests/integration/test_hostile.py).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e import attacks
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e
BOUND_MB = 120  # the most any one attack may add to the process's resident memory


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("memory"), workers=0, OPENI2V_API_PROCESSES="1").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    return server.new_key(10.0)


def measured(server: Server, attack, *args, **kwargs):
    with attacks.PeakRss(server.proc.pid) as peak:
        outcome = attack(server.url, *args, **kwargs)
    assert httpx.get(server.url + "/healthz").status_code == 200  # alive and answering
    return outcome, peak


def test_a_chunked_upload_past_the_limit_is_refused_while_it_streams(server, key):
    status, peak = measured(server, attacks.chunked_put, key)
    assert status in (413, None), status
    assert peak.growth_mb < BOUND_MB, f"the API process grew by {peak.growth_mb:.0f} MB"
    assert not any((Path(server.env["OPENI2V_DATA_DIR"]) / "uploads").rglob("big.png"))  # the partial file is gone


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_json_body_is_refused_with_413(server, key, chunked):
    status, peak = measured(server, attacks.big_json, key, chunked=chunked)
    assert status in (413, None), status
    assert peak.growth_mb < BOUND_MB, f"the API process grew by {peak.growth_mb:.0f} MB"


def test_a_body_of_many_tiny_values_is_refused_before_it_is_parsed(server, key):
    status, peak = measured(server, attacks.many_values, key)
    assert status == 400, status
    assert peak.growth_mb < BOUND_MB, f"the API process grew by {peak.growth_mb:.0f} MB"


def test_a_json_body_over_the_limit_gets_the_envelope_413(server, key):
    """A body small enough for the client to finish sending sees the answer itself."""
    body = b'{"prompt":"' + b"a" * (33 * 2**20) + b'"}'
    r = httpx.post(f"{server.url}/api/v3/kwaivgi/kling-v2.5-turbo-pro/image-to-video", content=body,
                   headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413
    assert r.json() == {"code": 413, "message": "body: must be at most 32 MB", "data": None}


def test_ten_many_pixel_pngs_at_once_keep_the_api_process_small(server, key):
    statuses, peak = measured(server, attacks.many_pixels_submits, key, 10)
    assert statuses == [200] * 10  # valid images: accepted, judged without decoding their pixels
    assert peak.growth_mb < BOUND_MB, f"the API process grew by {peak.growth_mb:.0f} MB"
