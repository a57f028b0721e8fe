"""How an app's test suite uses OpenI2V: the official wavespeed SDK against the `openi2v` fixture, which
pytest finds by itself once openi2v is installed. Each test gets a server of its own (so `pytest -n`
works), with the instant engine, a funded key, and the scenario its marker names.

Run: pytest -n 4 examples/test_app_with_openi2v.py
"""

import io

import httpx
import pytest
import wavespeed
from PIL import Image

MODEL = "kwaivgi/kling-v2.5-turbo-pro/image-to-video"


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 140, 200)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return str(path)


def client_for(server) -> wavespeed.Client:
    return wavespeed.Client(api_key=server.key, base_url=server.url, retry_interval=0.1)


def test_the_video_comes_back(openi2v, photo):
    client = client_for(openi2v)
    out = client.run(MODEL, {"image": client.upload(photo), "prompt": "pan left"}, poll_interval=0.1)
    video = httpx.get(out["outputs"][0])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


@pytest.mark.openi2v(scenario="failing")
def test_a_failed_generation_is_reported(openi2v, photo):
    client = client_for(openi2v)
    with pytest.raises(RuntimeError, match="simulated failure"):
        client.run(MODEL, {"image": client.upload(photo), "prompt": "pan left"}, poll_interval=0.1)


def test_a_reserved_seed_flags_the_video_nsfw(openi2v, photo):
    client = client_for(openi2v)
    res = client.run_no_throw(MODEL, {"image": client.upload(photo), "prompt": "x", "seed": 4000000002},
                              poll_interval=0.1)
    result = httpx.get(f"{openi2v.url}/api/v3/predictions/{res['task_id']}/result",
                       headers={"Authorization": f"Bearer {openi2v.key}"}).json()["data"]
    assert result["has_nsfw_contents"] == [True]


@pytest.mark.openi2v(scenario="flaky")
def test_polls_that_fail_twice_are_retried_by_the_sdk(openi2v, photo):
    client = client_for(openi2v)
    out = client.run(MODEL, {"image": client.upload(photo), "prompt": "pan left"}, poll_interval=0.1)
    assert out["outputs"]
