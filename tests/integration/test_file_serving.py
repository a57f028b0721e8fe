"""User files can never run as a page on the API's origin; the playground carries its own strict CSP.

The app in-process, files uploaded through both upload paths and made by a real worker.
"""

from __future__ import annotations

import io
import mimetypes
import tempfile
import wave
from html.parser import HTMLParser
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from openi2v.api.app import WEB
from openi2v.media.video import write_mp4
from tests import pictures
from tests.integration.test_api import Api, data_uri

OCTET = "application/octet-stream"
DOWNLOAD_CSP = "default-src 'none'; sandbox"
MEDIA_CSP = "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; sandbox allow-same-origin"
HTML = b"<!doctype html><title>x</title><script>localStorage.setItem('pwned', document.cookie)</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>fetch("/api/v3/balance")</script></svg>'


def upload_ticket(api: Api, name: str, data: bytes) -> str:
    """The SDKs' flow, declaring the type the name suggests: the declaration must not matter."""
    declared = mimetypes.guess_type(name)[0] or OCTET
    t = api.client.post("/api/v3/media/uploads", json={"filename": name, "size": len(data), "content_type": declared},
                        headers=api.h()).json()["data"]
    r = api.client.put(local(t["upload"]["url"]), content=data, headers=t["upload"]["headers"])
    assert r.status_code == 200, r.text
    return local(r.json()["data"]["download_url"])


def upload_binary(api: Api, name: str, data: bytes) -> str:
    declared = mimetypes.guess_type(name)[0] or OCTET
    r = api.client.post("/api/v3/media/upload/binary", files={"file": (name, data, declared)}, headers=api.h())
    assert r.status_code == 200, r.text
    return local(r.json()["data"]["download_url"])


def local(url: str) -> str:
    return url.replace("http://testserver", "")


def assert_user_file(r, media_type: str, name: str) -> None:
    assert r.headers["content-type"] == media_type
    assert r.headers["x-content-type-options"] == "nosniff"
    download = media_type == OCTET
    assert r.headers["content-security-policy"] == (DOWNLOAD_CSP if download else MEDIA_CSP)
    assert r.headers["content-disposition"] == f'{"attachment" if download else "inline"}; filename="{name}"'


def audio(fmt: str, codec: str, **options: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options) as out:
        stream = out.add_stream(codec, rate=44100)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44100
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def wav() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    return buf.getvalue()


def mp4() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        write_mp4(path, [np.zeros((64, 64, 3), np.uint8)] * 3, fps=24, width=64, height=64)
        return path.read_bytes()


CASES = [  # (name, bytes, served type): the name never decides
    ("x.html", HTML, OCTET),
    ("x.svg", SVG, OCTET),
    ("x.html", pictures.png(96, 96), "image/png"),
    ("x.png", HTML, OCTET),
    ("x.jpg", SVG, OCTET),
    ("photo.txt", pictures.encode(pictures.photo(96, 96), "JPEG"), "image/jpeg"),
    ("clip.html", mp4(), "video/mp4"),
    ("sound.html", wav(), "audio/wav"),
    ("sound.svg", audio("mp3", "mp3"), "audio/mpeg"),  # with an ID3 tag
    ("bare.html", audio("mp3", "mp3", id3v2_version="0"), "audio/mpeg"),  # a bare frame
    ("sound.aac", audio("adts", "aac"), "audio/aac"),
    ("sound.m4a", audio("ipod", "aac"), "audio/mp4"),
    ("x.gif", b"GIF89a\x01\x00\x01\x00", OCTET),  # an image, but not one this API accepts
    ("x.heic", b"\0\0\0\x18ftypheic\0\0\0\0", OCTET),  # an ISO file that is no MP4 we serve
    ("one-byte.png", b"\x89", OCTET),
    ("utf16.mp3", "\ufeff<html><script>alert(1)</script>".encode("utf-16-le"), OCTET),  # FF FE: no MPEG frame
]

# (an empty upload is a 400 either way: tests/integration/test_hosted_edges.py)
UPLOADS = [(upload, *case) for case in CASES for upload in (upload_ticket, upload_binary)]


@pytest.mark.parametrize("upload,name,data,served", UPLOADS, ids=[f"{n}-{s}-{u.__name__}" for u, n, _, s in UPLOADS])
def test_an_upload_is_served_with_the_type_its_bytes_have(api, upload, name, data, served):
    r = api.client.get(upload(api, name, data))
    assert r.status_code == 200 and r.content == data
    assert_user_file(r, served, name)


def test_an_output_video_is_inline_sandboxed_and_served_in_ranges(api, photo_png):
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).json()["data"]["id"]
    api.drain()
    url = local(api.result(pid).json()["data"]["outputs"][0])
    whole = api.client.get(url)
    assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
    assert_user_file(whole, "video/mp4", url.rsplit("/", 1)[1])
    part = api.client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == whole.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(whole.content)}"
    assert_user_file(part, "video/mp4", url.rsplit("/", 1)[1])


def test_an_output_poster_is_a_jpeg(api, photo_png):
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).json()["data"]["id"]
    api.drain()
    poster = local(api.result(pid).json()["data"]["details"]["poster"])
    assert_user_file(api.client.get(poster), "image/jpeg", poster.rsplit("/", 1)[1])


def csp(header: str) -> dict[str, list[str]]:
    directives = [d.split() for d in header.split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


@pytest.mark.parametrize("path", ["/", "/playground", "/web/index.html", "/web/playground.js", "/web/playground.css"])
def test_the_playground_is_served_with_a_strict_csp(api, path):
    r = api.client.get(path)
    assert r.status_code == 200
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
    policy = csp(r.headers["content-security-policy"])
    assert policy == {
        "default-src": ["'none'"], "script-src": ["'self'"], "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"], "media-src": ["'self'"], "connect-src": ["'self'"],
        "object-src": ["'none'"], "base-uri": ["'none'"], "form-action": ["'self'"], "frame-ancestors": ["'none'"],
    }


def test_behind_a_public_url_the_playground_may_show_its_videos(settings):
    settings.public_url = "https://i2v.example.com/base/"
    with TestClient(Api(settings).app) as client:
        policy = csp(client.get("/").headers["content-security-policy"])
    assert policy["media-src"] == ["'self'", "https://i2v.example.com"]
    assert policy["img-src"] == ["'self'", "https://i2v.example.com", "data:", "blob:"]
    assert policy["script-src"] == ["'self'"] and policy["connect-src"] == ["'self'"]


class _Inline(HTMLParser):
    """Collects whatever a page would run or style inline: what its CSP forbids."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        self.found += [f"{tag} {k}=" for k in names if k.startswith("on") or k == "style"]
        self.found += ["<style>"] if tag == "style" else []
        self.scripts += [names.get("src") or "(inline)"] if tag == "script" else []
        self.found += [f"{tag} javascript:"] if any("javascript:" in (v or "") for v in names.values()) else []
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline script text")

    def handle_endtag(self, tag):
        self._in_script = False


def test_the_playground_page_has_nothing_inline():
    parser = _Inline()
    parser.feed((WEB / "index.html").read_text())
    assert parser.found == [] and parser.scripts == ["/web/playground.js"]
