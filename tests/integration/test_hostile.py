"""Hostile input: every one a 4xx in the v3 envelope naming the field, never a 500, nothing stored or
charged. Each case here answered 500, or was accepted, before the checks it names existed."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from openi2v.domain.inputs import MAX_IMAGE_BYTES, check_image
from tests import pictures
from tests.integration.test_api import SUBMIT, Api, data_uri

GOOD = pictures.png(640, 426)


def raw(api: Api, path: str, text: str, **kw):
    """A body sent exactly as written: JSON text may hold escapes (\\ud800) no encoder would produce."""
    return api.client.post(path, content=text.encode(), headers={**api.h(), "Content-Type": "application/json"},
                           **kw)


def refused(r, status: int, message: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and body["data"] is None
    assert body["message"].startswith(message), body["message"]


def nothing_stored_or_charged(api: Api) -> None:
    assert api.client.post("/api/v3/predictions", json={}, headers=api.h()).json()["data"]["total"] == 0
    assert api.client.get("/api/v3/balance", headers=api.h()).json()["data"]["balance"] == 10.0


# --- text that is not Unicode ----------------------------------------------------

def test_a_prompt_with_a_lone_surrogate_is_400_and_not_stored(api):
    image = data_uri(GOOD)
    refused(raw(api, SUBMIT, f'{{"image":"{image}","prompt":"pan \\ud800"}}'), 400,
            "prompt: must be valid Unicode text")
    nothing_stored_or_charged(api)


@pytest.mark.parametrize("path,text,field", [
    ("/api/v3/model/pricing", '{"model_id":"\\udfff"}', "model_id"),
    ("/api/v3/media/uploads", '{"filename":"a\\ud800.png"}', "filename"),
    ("/api/v3/predictions", '{"model":"x\\ud800"}', "model"),
    ("/api/v3/predictions", '{"\\ud800":1}', "body"),
])
def test_lone_surrogates_anywhere_in_a_body_are_400(api, path, text, field):
    refused(raw(api, path, text), 400, f"{field}: must be valid Unicode text")


def test_a_surrogate_already_stored_never_breaks_a_read(api):
    """Stored before inputs were checked: the result and history still answer, the text escaped."""
    p = api.app.state.ctx.predictions.create(1, SUBMIT.removeprefix("/api/v3/"),
                                             {"image": "https://example.com/a.png", "prompt": "pan \ud800",
                                              "duration": 5}, 7, 0, False, None)
    r = api.result(p.id)
    assert r.status_code == 200 and r.json()["data"]["input"]["prompt"] == "pan \ud800"
    history = api.client.post("/api/v3/predictions", json={}, headers=api.h())
    assert history.status_code == 200 and history.json()["data"]["items"][0]["id"] == p.id


# --- JSON of the wrong shape ------------------------------------------------------

@pytest.mark.parametrize("depth,field", [(17, "prompt"), (1000, "body")])  # 1000: past the parser's own limit
def test_deeply_nested_json_is_400(api, depth, field):
    refused(raw(api, SUBMIT, '{"prompt":' + "[" * depth + "]" * depth + "}"), 400,
            f"{field}: must be nested at most 16 levels deep")
    history_field = "status" if field == "prompt" else "body"
    refused(raw(api, "/api/v3/predictions", '{"status":' + "[" * depth + "]" * depth + "}"), 400,
            f"{history_field}: must be nested at most 16 levels deep")


def test_nesting_at_the_limit_passes_the_depth_rule(api):
    """16 levels are allowed: the prompt's own rule answers instead."""
    body = '{"image":"https://example.com/a.png","prompt":' + "[" * 16 + "]" * 16 + "}"
    refused(raw(api, SUBMIT, body), 400, "prompt: must be a string")


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a":[' + "{}," * 20_000 + "{}]}",
                                  '{"a":[' + "1," * 20_000 + "1]}"])
def test_a_body_of_many_small_values_is_400_before_it_is_parsed(api, body):
    """A few hundred KB of tiny values would cost tens of MB once parsed (and the parser's stack)."""
    refused(raw(api, SUBMIT, body), 400, "body: must hold at most 10,000 values")


@pytest.mark.parametrize("path,body,message", [
    ("/api/v3/predictions", {"status": ["completed"]}, "status: must be a string"),
    ("/api/v3/predictions", {"model": 7}, "model: must be a string"),
    ("/api/v3/predictions", {"created_after": {"a": 1}}, "created_after: must be an ISO-8601 time"),
    ("/api/v3/model/pricing", {"model_id": ["x"]}, "model_id: is required"),
    ("/api/v3/model/pricing", {"model_id": {"a": 1}}, "model_id: is required"),
    ("/api/v3/media/uploads", {"filename": "a.png", "content_type": 7}, "content_type: must be a media type"),
    ("/api/v3/media/uploads", {"filename": "a.png", "content_type": "text/html\r\nX: y"},
     "content_type: must be a media type"),
    ("/api/v3/media/uploads", {"filename": ["a.png"]}, "filename: is required"),
])
def test_values_of_the_wrong_type_are_400_naming_the_field(api, path, body, message):
    refused(api.client.post(path, json=body, headers=api.h()), 400, message)


# --- URLs -----------------------------------------------------------------------------

BAD_URLS = ["http://[::1:9911/x", "http://[", "http://a]b/", "http://example.com:99999/a.png",
            "http://example.com:0/a.png", "http://exa\tmple.com/a.png", "http://example.com:x/a", "http:///a.png",
            "ftp://example.com/a.png", "http://" + "a" * 2100 + ".com/"]


@pytest.mark.parametrize("field", ["image", "last_image"])
@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_media_urls_are_400_at_submit(api, field, url):
    body = {"image": data_uri(GOOD), "prompt": "zoom", field: url}
    r = api.submit(body)
    assert r.status_code == 400 and r.json()["message"].startswith(f"{field}: "), r.text
    nothing_stored_or_charged(api)


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_audio_url_is_ignored_with_a_note(api, url):
    """The hosted model has no audio input: what is no URL there is ignored, never fetched, and said so."""
    d = api.submit({"image": data_uri(GOOD), "prompt": "zoom", "audio": url}).json()["data"]
    assert "audio" not in d["input"]
    [note] = d["details"]["notes"]
    assert note.startswith("audio: ") and note.endswith(" is not a valid http(s) URL or a data URI and was ignored")


@pytest.mark.parametrize("url", ["http://[::1:9911/x", "http://example.com:99999/hook", "javascript:alert(1)"])
def test_bad_webhook_urls_are_400_at_submit(api, url):
    r = api.client.post(SUBMIT, params={"webhook": url}, json={"image": data_uri(GOOD), "prompt": "zoom"},
                        headers=api.h())
    refused(r, 400, "webhook: ")


def test_url_schemes_are_case_insensitive_for_images_and_webhooks(api):
    r = api.client.post(SUBMIT, params={"webhook": "HTTPS://example.com/hook"},
                        json={"image": "HTTP://example.com/a.png", "prompt": "zoom"}, headers=api.h())
    assert r.status_code == 200, r.text


# --- flags ------------------------------------------------------------------------------

@pytest.mark.parametrize("value,on", [(True, True), ("true", True), (1, True), (False, False), ("false", False),
                                      ("0", False), (None, False)])
def test_base64_flag_means_what_it_says(api, value, on):
    """"false" used to turn base64 output on (any non-empty string was true); a webhook tells which it is."""
    r = api.client.post(SUBMIT, params={"webhook": "https://example.com/hook"},
                        json={"image": data_uri(GOOD), "prompt": "zoom", "enable_base64_output": value},
                        headers=api.h())
    assert r.status_code == (400 if on else 200), r.text


@pytest.mark.parametrize("field", ["enable_base64_output", "enable_sync_mode"])
def test_a_flag_that_is_not_a_boolean_is_400(api, field):
    refused(api.submit({"image": data_uri(GOOD), "prompt": "zoom", field: "maybe"}), 400,
            f"{field}: must be true or false")


# --- files ------------------------------------------------------------------------------

def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h and whose pixel data is a few bytes: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


JPEG = pictures.encode(pictures.photo(640, 426), "JPEG")
HOSTILE = {
    "bomb": (png_header_only(50_000, 50_000), "has too many pixels"),
    "just over 40 MP": (png_header_only(8000, 5001), "has too many pixels"),
    "truncated png": (GOOD[: len(GOOD) // 2], "is truncated or not a decodable image"),
    "truncated jpeg": (JPEG[: len(JPEG) // 2], "is truncated or not a decodable image"),
    "jpeg of 150 scans": (JPEG[:-2] + b"\xff\xda\x00\x08" * 150 + b"\xff\xd9", "has too many progressive scans"),
    "png without its end": (GOOD[:-12], "is truncated or not a decodable image"),
    "html then png (polyglot)": (b"<html><script>alert(1)</script>" + GOOD, "must be a JPEG or PNG image"),
    "gif named png": (pictures.encode(Image.new("RGB", (400, 400)), "GIF"), "must be a JPEG or PNG image"),
    "webp named png": (pictures.encode(Image.new("RGB", (400, 400)), "WEBP"), "must be a JPEG or PNG image"),
    "empty": (b"", "is required"),
    "one byte over 10 MB": (GOOD + b"\0" * (MAX_IMAGE_BYTES + 1 - len(GOOD)), "must be at most 10 MB"),
    "299 px": (pictures.png(299, 400), "must be at least 300x300 pixels (got 299x400)"),
    "2.51:1": (pictures.png(753, 300), "aspect ratio must be between 1:2.5 and 2.5:1 (got 753x300)"),
}


@pytest.mark.parametrize("field,name", [(f, n) for f in ("image", "last_image") for n in HOSTILE
                                        if (f, n) != ("last_image", "empty")])  # an empty last_image means none
def test_hostile_images_are_400_at_submit_naming_the_field(api, name, field):
    data, message = HOSTILE[name]
    body = {"image": data_uri(GOOD), "prompt": "zoom", field: data_uri(data) if data else ""}
    refused(api.submit(body), 400, f"{field}: {message}")
    nothing_stored_or_charged(api)


def test_one_byte_over_10_mb_says_the_limit_in_bytes(api):
    data = GOOD + b"\0" * (MAX_IMAGE_BYTES + 1 - len(GOOD))
    assert api.submit({"image": data_uri(data), "prompt": "zoom"}).json()["message"] == (
        "image: must be at most 10 MB (10,485,760 bytes; got 10,485,761)")


def cmyk_jpeg() -> bytes:
    return pictures.encode(pictures.photo(480, 360).convert("CMYK"), "JPEG")


def png16() -> bytes:
    return pictures.encode(Image.new("I;16", (400, 320), 40000), "PNG")


def apng() -> bytes:
    frames = [Image.new("RGB", (400, 320), c) for c in ((200, 10, 10), (10, 200, 10))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


@pytest.mark.parametrize("make,pixel", [(cmyk_jpeg, None), (png16, (156, 156, 156)), (apng, (200, 10, 10))],
                         ids=["cmyk jpeg", "16-bit png", "animated png"])
def test_unusual_but_valid_images_are_accepted_and_rendered(api, make, pixel):
    """Photos as cameras and editors write them: converted to RGB (an animated PNG gives its first frame)."""
    data = make()
    img = check_image("image", data)
    assert img.mode == "RGB"
    if pixel:
        assert img.getpixel((10, 10)) == pixel
    pid = api.submit({"image": data_uri(data), "prompt": "zoom in"}).json()["data"]["id"]
    api.drain()
    assert api.result(pid).json()["data"]["status"] == "completed"


def test_audio_that_does_not_decode_is_400_at_submit(api):
    junk = b"RIFF\0\0\0\0WAVE" + bytes(range(256)) * 64
    refused(api.submit({"image": data_uri(GOOD), "prompt": "zoom", "audio": data_uri(junk, "audio/wav")}), 400,
            "audio: could not be decoded as wav audio")
    nothing_stored_or_charged(api)


# --- uploads ------------------------------------------------------------------------------

def test_a_chunked_put_over_the_limit_is_413_and_leaves_nothing(api):
    api.settings.max_upload_mb = 1
    ticket = api.client.post("/api/v3/media/uploads", json={"filename": "a.png"}, headers=api.h()).json()["data"]
    r = api.client.put(ticket["upload"]["url"], content=iter([b"\0" * 2**19] * 4))  # no Content-Length
    refused(r, 413, "file: must be at most 1 MB")  # the stream stopped at the cap, whoever counted first
    assert not list((api.settings.data_dir / "uploads").rglob("a.png"))


def test_a_multipart_upload_over_the_limit_is_413(api):
    api.app.state.ctx.settings.max_upload_mb = 1
    r = api.client.post("/api/v3/media/upload/binary", files={"file": ("a.png", b"\0" * (2 * 2**20), "image/png")},
                        headers=api.h())
    assert r.status_code == 413, r.text


def test_a_multipart_upload_without_a_file_part_is_400(api):
    r = api.client.post("/api/v3/media/upload/binary", files={"other": ("a.png", GOOD, "image/png")},
                        headers=api.h())
    refused(r, 400, "file: is required")


def test_a_server_fault_tells_the_client_nothing_of_it(api, monkeypatch, caplog):
    """A 5xx of ours (a full disk, say) is logged with its detail; the client reads no path."""
    from openi2v.errors import StorageError

    async def full_disk(*args, **kwargs):
        raise StorageError("could not store upload: [Errno 28] No space left on device: '/srv/secret/uploads'")

    monkeypatch.setattr(api.app.state.ctx.storage, "receive", full_disk)
    r = api.client.post("/api/v3/media/upload/binary", files={"file": ("a.png", GOOD, "image/png")}, headers=api.h())
    assert r.status_code == 500 and r.json() == {"code": 500, "message": "internal server error", "data": None}
    assert "/srv/secret/uploads" in caplog.text
