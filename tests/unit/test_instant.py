"""The instant engine: the clip contract (duration, frames, fps, first frame, H.264 MP4) at 144p,
judged on decoded output; its registry name; one prediction through the API."""

from __future__ import annotations

import io
import tempfile
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from openi2v.config import KLING_MODEL, Settings
from openi2v.engines.base import EngineJob
from openi2v.engines.instant import InstantEngine
from openi2v.engines.motion import resize_rgb
from openi2v.engines.registry import build_engines, resolve, served_models
from openi2v.media.video import probe, read_frames
from tests import pictures

PHOTO = pictures.photo(960, 640, seed=1)


def render(tmp_path, *, duration=5, fps=24, image=PHOTO, prompt="fast pan right then roll clockwise", **kw):
    engine = InstantEngine.from_settings(Settings(fps=fps))
    engine.load()
    job = EngineJob(image, prompt, "", 1.0, duration, 3, Path(tempfile.mkdtemp(dir=tmp_path)), **kw)
    return engine.run(job, lambda f: None, lambda: False)


def same_picture(decoded: np.ndarray, expected: np.ndarray) -> bool:
    """Equal up to H.264 at a high quality. Luma at full size, colour at half size: 4:2:0 keeps one
    colour sample per 2x2 pixels, which alone costs a 144p picture with fine colour detail ~10 dB of
    full-size RGB PSNR (CRF 18 measured ~42 dB on both counts; a 2 px shift ~24 dB, another photo ~15 dB)."""
    luma = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2YUV)[..., 0]  # noqa: E731
    half = lambda a: cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)  # noqa: E731
    return pictures.psnr(luma(decoded), luma(expected)) >= 38 and pictures.psnr(half(decoded), half(expected)) >= 36


@pytest.mark.parametrize("duration,frames", [(5, 120), (10, 240)])
def test_clip_has_the_duration_frames_and_fps_of_the_contract(tmp_path, duration, frames):
    result = render(tmp_path, duration=duration)
    info = probe(result.video)
    assert (info.codec, info.pix_fmt, info.fps, info.has_audio) == ("h264", "yuv420p", 24.0, False)
    assert info.frames == len(read_frames(result.video)) == frames == result.frames
    assert info.duration == pytest.approx(duration, abs=1e-3)
    assert (info.width, info.height) == (result.width, result.height) == (216, 144)  # 3:2 at 144p, even sides
    data = result.video.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # faststart MP4


def test_fps_comes_from_the_settings(tmp_path):
    result = render(tmp_path, fps=30)
    info = probe(result.video)
    assert (info.fps, info.frames, result.fps) == (30.0, 150, 30)
    assert info.duration == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("size,clip", [((960, 640), (216, 144)), ((640, 960), (144, 216)),
                                       ((1001, 333), (432, 144)), ((300, 300), (144, 144))])
def test_first_frame_is_the_input_at_the_clips_size(tmp_path, size, clip):
    photo = pictures.photo(*size, seed=1)
    result = render(tmp_path, image=photo)
    first = read_frames(result.video)[0]
    assert first.shape[1::-1] == clip
    assert same_picture(first, resize_rgb(photo, *clip))
    assert not same_picture(first, resize_rgb(pictures.photo(*size, seed=2), *clip))  # another photo
    assert not same_picture(first, np.roll(resize_rgb(photo, *clip), 2, axis=1))  # the photo moved 2 px


def test_details_and_poster_are_the_camera_engines(tmp_path):
    result = render(tmp_path)
    assert result.details["engine"] == "instant"
    assert result.details["camera_plan"]["steps"] == ["fast pan right", "roll clockwise"]
    assert {k: result.details[k] for k in ("width", "height", "fps", "frames")} == dict(
        width=216, height=144, fps=24, frames=120)
    with Image.open(result.thumbnail) as poster:
        assert (poster.format, poster.size) == ("JPEG", (216, 144))


def test_a_soundtrack_is_kept(tmp_path):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(22050)
        w.writeframes(np.zeros(22050 * 2, np.int16).tobytes())
    assert probe(render(tmp_path, audio=("wav", buf.getvalue())).video).has_audio


def test_registry_serves_instant_and_names_it_for_an_unknown_engine():
    settings = Settings(engines={KLING_MODEL: "instant"})
    assert resolve(settings) == {KLING_MODEL: "instant"}
    assert "stand-in for tests" in served_models(settings)[KLING_MODEL].description
    engine = build_engines(settings)[KLING_MODEL]
    assert isinstance(engine, InstantEngine) and engine.name == "instant"
    assert (engine.settings.short_side, engine.settings.preset) == (144, "ultrafast")
    with pytest.raises(ValueError, match=r"unknown engine 'instnat'.*choose motion, instant"):
        resolve(Settings(engines={KLING_MODEL: "instnat"}))


def test_a_prediction_through_the_api_completes_with_an_instant_clip(settings, photo_png, tmp_path):
    from tests.integration.test_api import Api, data_uri

    api = Api(settings.model_copy(update={"engines": {KLING_MODEL: "instant"}}))
    with api.client:
        models = api.client.get("/api/v3/models", headers=api.h()).json()["data"]
        assert [(m["model_id"], m["engine"]) for m in models] == [(KLING_MODEL, "instant")]
        pid = api.submit({"image": data_uri(photo_png), "prompt": "zoom in", "duration": 10}).json()["data"]["id"]
        api.drain()
        done = api.result(pid).json()["data"]
        assert done["status"] == "completed" and done["details"]["engine"] == "instant"
        video = api.client.get(done["outputs"][0].replace("http://testserver", ""))
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    path = tmp_path / "out.mp4"
    path.write_bytes(video.content)
    info = probe(path)
    assert (info.codec, info.fps, info.frames, info.width, info.height) == ("h264", 24.0, 240, 216, 144)
    assert info.duration == pytest.approx(10.0, abs=1e-3)


def test_the_nsfw_check_of_an_instant_job_reads_the_input_alone(settings, monkeypatch):
    """Its frames are the input moved at 144p: one inference on the input, no decoding of the clip."""
    from tests.integration.test_api import Api

    api = Api(settings.model_copy(update={"engines": {KLING_MODEL: "instant"}}))
    seen: list[tuple] = []
    monkeypatch.setattr(api.worker.safety, "is_nsfw", lambda rgb: seen.append(rgb.shape) or False)
    monkeypatch.setattr("openi2v.worker.loop.read_frames", lambda *_: pytest.fail("the clip was decoded"))
    pid = api.submit({"image": pictures.data_uri(1200, 800), "prompt": "pan left"}).json()["data"]["id"]
    api.drain()
    assert api.result(pid).json()["data"]["has_nsfw_contents"] == [False]
    assert seen == [(800, 1200, 3)]  # the input, at its own size
