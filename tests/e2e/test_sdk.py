"""The official wavespeed SDK (2.0.5), unchanged but for base_url, against a real server."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import requests
from wavespeed import Client

from openi2v.config import KLING_MODEL
from openi2v.media.video import probe
from tests import pictures
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # loopback image URLs allowed: the unreachable-image test reaches a refused port, not the SSRF guard
    s = Server(tmp_path_factory.mktemp("e2e"), OPENI2V_FETCH_ALLOW_PRIVATE="true").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(server):
    return server.new_key(10.0)


@pytest.fixture
def client(server, key):
    return Client(api_key=key, base_url=server.url)


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    path.write_bytes(pictures.png(800, 600))
    return path


def test_upload_then_run(client, photo_file, tmp_path):
    url = client.upload(str(photo_file))
    assert requests.get(url, timeout=10).content == photo_file.read_bytes()
    out = client.run(KLING_MODEL, {"image": url, "prompt": "slow push in, then pan right", "duration": 5},
                     poll_interval=0.2)
    assert len(out["outputs"]) == 1
    video = tmp_path / "out.mp4"
    video.write_bytes(requests.get(out["outputs"][0], timeout=10).content)  # plain GET, no key
    info = probe(video)
    assert (info.codec, info.frames, info.height) == ("h264", 120, 480)


def test_run_sync_mode(client, photo_file):
    url = client.upload(str(photo_file))
    out = client.run(KLING_MODEL, {"image": url, "prompt": "zoom in"}, enable_sync_mode=True)
    assert out["outputs"][0].endswith(".mp4")


def test_run_no_throw_on_an_unreachable_image(client, server, key):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: the port is ours and a connection is refused
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/none.png"
        res = client.run_no_throw(KLING_MODEL, {"image": url, "prompt": "x"}, poll_interval=0.2)
    assert res["status"] == "failed" and res["outputs"] is None
    d = httpx.get(f"{server.url}/api/v3/predictions/{res['task_id']}/result",
                  headers={"Authorization": f"Bearer {key}"}).json()["data"]
    assert (d["status"], d["code"]) == ("failed", 1402)
    assert d["error"].startswith(f"image: could not download {url} (ConnectError: ")
    assert d["error"] in res["error"]  # the SDK reports the server's message


def test_run_with_inputs_the_hosted_model_ignores(client, key, server):
    """A string seed and an audio that is no URL, as the hosted API takes them: the run completes, and the
    result says how each was read."""
    out = client.run(KLING_MODEL, {"image": pictures.data_uri(), "prompt": "zoom in", "seed": "42", "audio": "none"},
                     poll_interval=0.2)
    items = httpx.post(f"{server.url}/api/v3/predictions", json={"page": 1, "page_size": 100},
                       headers={"Authorization": f"Bearer {key}"}).json()["data"]["items"]
    [ran] = [p for p in items if p["outputs"] == out["outputs"]]
    assert ran["seed"] == 42
    assert ran["details"]["notes"] == ['seed: the string "42" was read as the integer 42',
                                           'audio: "none" is not a valid http(s) URL or a data URI and was ignored']


def test_get_result_of_unknown_id(client):
    with pytest.raises(RuntimeError, match="404"):
        client.get_result("f" * 32)


def test_raw_http_errors(server, key):
    h = {"Authorization": f"Bearer {key}"}
    submit = f"{server.url}/api/v3/{KLING_MODEL}"
    r = httpx.post(submit, json={"image": "https://example.com/a.png"}, headers=h)
    assert (r.status_code, r.json()) == (400, {"code": 400, "message": "prompt: is required", "data": None})
    assert httpx.post(submit, json={}).status_code == 401
    poor = server.new_key(0.0)
    r = httpx.post(submit, json={"image": "https://example.com/a.png", "prompt": "x"},
                   headers={"Authorization": f"Bearer {poor}"})
    assert (r.status_code, r.json()["message"]) == (403, "insufficient balance")
    assert httpx.get(f"{server.url}/api/v3/predictions/{'a' * 32}/result", headers=h).status_code == 404


def test_cli_submit_waits_for_the_video(server, key, photo_file):
    out = cli(dict(server.env, WAVESPEED_API_KEY=key), "submit", str(photo_file), "--prompt", "pan left",
              "--wait", "--url", server.url)
    assert out.strip().splitlines()[-1].endswith(".mp4")


def test_run_ends_when_the_prediction_is_cancelled(tmp_path):
    """The SDK's wait loop takes `cancelled` as terminal: a run whose job is cancelled mid-render
    raises at once instead of polling for ever (the gated engine holds the render until then)."""
    gated = Server(tmp_path, GATED_ENGINE_GATE=str(tmp_path / "never-opened"),
                   OPENI2V_ENGINES=json.dumps({KLING_MODEL: "tests.engine_fixtures:Gated"})).start()
    try:
        key = gated.new_key(5.0)
        h = {"Authorization": f"Bearer {key}"}
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                Client(api_key=key, base_url=gated.url).run(KLING_MODEL, {"image": pictures.data_uri(),
                                                                          "prompt": "pan left"})
            except BaseException as exc:  # noqa: BLE001 (what the SDK raised is the result)
                outcome.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        deadline = time.monotonic() + 60  # a guard against a hang, not a speed limit
        while True:
            items = httpx.post(f"{gated.url}/api/v3/predictions", json={"status": "processing"},
                               headers=h).json()["data"]["items"]
            if items:
                break
            assert time.monotonic() < deadline, "the SDK's prediction never started"
            time.sleep(0.05)
        r = httpx.post(f"{gated.url}/api/v3/predictions/{items[0]['id']}/cancel", headers=h)
        assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
        runner.join(60)
        assert not runner.is_alive(), "the SDK kept polling a cancelled prediction"
        assert len(outcome) == 1 and "Prediction cancelled" in str(outcome[0]), outcome
        assert httpx.get(f"{gated.url}/api/v3/balance", headers=h).json()["data"]["balance"] == 5.0
    finally:
        gated.stop()
