"""S3Storage against a real S3 endpoint over HTTP (moto's server, tests/s3_server.py): the storage on its
own, then the whole API and a worker keeping every file in the bucket and none on disk."""

from __future__ import annotations

import asyncio
import tempfile
import time
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from openi2v.config import Settings
from openi2v.errors import NotFound, PayloadTooLarge, StorageError
from openi2v.media.video import probe
from openi2v.storage import new_token, upload_key
from openi2v.storage.s3 import MAX_URL_TTL_S, MIN_URL_TTL_S, S3Storage
from openi2v.store.database import now
from openi2v.sweeper import Sweeper
from tests import pictures
from tests.integration.test_api import Api, data_uri
from tests.s3_server import Bucket, s3_bucket, s3_endpoint  # noqa: F401 (fixtures)

PREFIX = "openi2v/"
HTML = b"<!doctype html><title>x</title><script>alert(document.domain)</script>"
DAY = 86400


@pytest.fixture
def storage(settings, s3_bucket) -> S3Storage:
    return S3Storage.from_settings(_settings(s3_bucket, settings, s3_prefix=PREFIX))


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """Where receive spools an upload (the process's temporary directory), to look into."""
    path = tmp_path / "spool"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def _settings(bucket: Bucket, base: Settings, **update) -> Settings:
    """``base`` keeping its files in ``bucket``."""
    return base.model_copy(update={"storage": "s3", "s3_bucket": bucket.name, "s3_endpoint_url": bucket.endpoint,
                                   **update})


def _expires_in(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


# The storage on its own.

def test_an_output_is_stored_under_the_prefix_with_its_type_read_located_and_deleted(storage, s3_bucket, tmp_path):
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"\0\0\0\x18ftypisom" + bytes(range(256)))
    key = storage.save_output(src, "clip.mp4")
    assert key.startswith("files/") and key.endswith("/clip.mp4")
    assert s3_bucket.names() == [PREFIX + key]
    assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=PREFIX + key)["ContentType"] == "video/mp4"
    assert storage.read(key, 10_000) == src.read_bytes()

    located = storage.locate(key)
    assert located.startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/{PREFIX}{key}?")
    assert _expires_in(located) == 300
    r = httpx.get(located)
    assert r.status_code == 200 and r.content == src.read_bytes() and r.headers["content-type"] == "video/mp4"

    storage.delete(key)
    assert s3_bucket.names() == []
    assert storage.read(key, 10_000) is None and storage.locate(key) is None
    storage.delete(key)  # gone already: no error


def test_a_poster_is_a_jpeg_and_any_other_output_a_download(storage, s3_bucket, tmp_path):
    src = tmp_path / "out"
    src.write_bytes(b"\xff\xd8\xff\xe0 not much of a picture")
    for filename, content_type in (("p.jpg", "image/jpeg"), ("notes.txt", "application/octet-stream")):
        key = storage.save_output(src, filename)
        assert s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=PREFIX + key)["ContentType"] == content_type


def test_an_output_that_cannot_be_read_from_disk_is_a_storage_error(storage, s3_bucket, tmp_path):
    with pytest.raises(StorageError):
        storage.save_output(tmp_path / "missing.mp4", "v.mp4")
    assert s3_bucket.names() == []


def test_what_is_not_there_is_none(storage):
    for key in (upload_key(new_token(), "a.png"), f"files/{new_token()}/a.mp4"):
        assert storage.read(key, 100) is None
        assert storage.locate(key) is None


def test_a_read_stops_one_byte_past_the_limit_and_an_empty_file_reads_empty(storage):
    key, empty = upload_key(new_token(), "big.bin"), upload_key(new_token(), "empty.bin")
    data = bytes(range(100))
    storage.put(key, data)
    storage.put(empty, b"")
    assert storage.read(key, 10) == data[:11]
    assert storage.read(key, 99) == data
    assert storage.read(key, 1000) == data
    assert storage.read(empty, 10) == b""  # S3 refuses a range on an empty object (416): still a file


def test_receive_stores_what_arrives_and_leaves_no_spool(storage, spool):
    key = upload_key(new_token(), "in.png")
    size = asyncio.run(storage.receive(key, _chunks(b"abc", b"defg"), max_bytes=7))
    assert size == 7 and storage.read(key, 100) == b"abcdefg"
    assert list(spool.iterdir()) == []


def test_receive_over_the_cap_is_413_and_stores_nothing(storage, s3_bucket, spool):
    key = upload_key(new_token(), "in.png")
    with pytest.raises(PayloadTooLarge):
        asyncio.run(storage.receive(key, _chunks(b"abc", b"defg", b"h"), max_bytes=7))
    assert s3_bucket.names() == [] and list(spool.iterdir()) == []


def test_a_result_url_is_presigned_until_the_file_expires_within_sigv4s_limits(storage, tmp_path):
    src = tmp_path / "v.mp4"
    src.write_bytes(b"video bytes")
    key = storage.save_output(src, "v.mp4")
    url = storage.url(key, "http://api.example/", time.time() + 3600)
    assert 3590 <= _expires_in(url) <= 3600
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"video bytes"
    assert _expires_in(storage.url(key, "http://api.example/", None)) == MAX_URL_TTL_S  # kept for ever
    assert _expires_in(storage.url(key, "http://api.example/", time.time() + 30 * DAY)) == MAX_URL_TTL_S
    assert _expires_in(storage.url(key, "http://api.example/", time.time() - 10)) == MIN_URL_TTL_S


def test_api_file_urls_are_the_apis_own(settings, s3_bucket):
    storage = S3Storage.from_settings(_settings(s3_bucket, settings, file_urls="api"))
    key = f"files/{new_token()}/v.mp4"
    assert storage.url(key, "http://api.example/", time.time() + 60) == f"http://api.example/{key}"


def test_an_upload_target_is_a_presigned_put_that_signs_the_content_type_and_the_declared_size(storage):
    key = upload_key(new_token(), "in.png")
    png = pictures.png(300, 300)
    target = storage.upload_target(key, "http://api.example/", "image/png", len(png), ttl_s=900)
    query = parse_qs(urlsplit(target).query)
    assert query["X-Amz-Expires"] == ["900"]
    # moto does not check signatures: that the bucket would refuse another length is S3's rule for a
    # signed header; what is checked here is that the length is among them
    assert {"content-type", "content-length"} <= set(query["X-Amz-SignedHeaders"][0].split(";"))
    undeclared = storage.upload_target(key, "http://api.example/", "image/png", 0, ttl_s=900)
    assert "content-length" not in parse_qs(urlsplit(undeclared).query)["X-Amz-SignedHeaders"][0]
    r = httpx.put(target, content=png, headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    assert storage.read(key, len(png)) == png


@pytest.mark.parametrize("data,media_type,disposition", [
    (HTML, "application/octet-stream", "attachment"),
    (pictures.png(300, 300), "image/png", "inline"),
])
def test_an_upload_is_served_as_its_bytes_show_and_a_non_media_one_as_a_download(storage, data, media_type,
                                                                                  disposition):
    key = upload_key(new_token(), "page.html")
    storage.put(key, data)
    r = httpx.get(storage.locate(key))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == media_type
    assert r.headers["content-disposition"] == f'{disposition}; filename="page.html"'


def test_bucket_failures_are_storage_errors_that_carry_no_secrets(s3_endpoint, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id="AKIDSECRETID", aws_secret_access_key="very-secret-value")
    storage = S3Storage(client, "no-such-bucket")
    src = tmp_path / "v.mp4"
    src.write_bytes(b"x")
    key = upload_key(new_token(), "in.png")
    for attempt in (lambda: storage.save_output(src, "v.mp4"), lambda: storage.put(key, b"x"),
                    lambda: storage.read(key, 10), lambda: storage.delete(key)):
        with pytest.raises(StorageError) as caught:
            attempt()
        assert "NoSuchBucket" in caught.value.message
        assert "SECRET" not in caught.value.message and "secret" not in caught.value.message


def test_a_key_storage_never_writes_is_refused_before_the_bucket(storage):
    with pytest.raises(NotFound):
        storage.read("../etc/passwd", 10)
    storage.delete("media/x/../../y")  # nothing it could hold: nothing to delete


# The API and a worker, every file in the bucket.

@pytest.fixture
def s3_api(settings, s3_bucket):
    a = Api(_settings(s3_bucket, settings, s3_prefix=PREFIX))
    yield a
    a.client.close()


def ticket_upload(api: Api, filename: str, data: bytes, content_type: str) -> str:
    """The SDKs' flow: a ticket, then a PUT straight to the bucket; the upload's download URL."""
    t = api.client.post("/api/v3/media/uploads", json={"filename": filename, "size": len(data),
                                                       "content_type": content_type}, headers=api.h())
    assert t.status_code == 200, t.text
    ticket = t.json()["data"]
    assert ticket["upload"]["url"].startswith(f"{api.settings.s3_endpoint_url}/{api.settings.s3_bucket}/{PREFIX}media/")
    r = httpx.put(ticket["upload"]["url"], content=data, headers=ticket["upload"]["headers"])
    assert r.status_code == 200, r.text
    return ticket["download_url"]


def completed(api: Api, image: str) -> dict:
    r = api.submit({"image": image, "prompt": "slow zoom in", "duration": 5})
    assert r.status_code == 200, r.text
    api.drain()
    data = api.result(r.json()["data"]["id"]).json()["data"]
    assert data["status"] == "completed", data
    return data


def test_a_ticket_upload_to_the_bucket_becomes_a_video_in_the_bucket(s3_api, tmp_path):
    image = ticket_upload(s3_api, "in.png", pictures.png(), "image/png")
    assert image.startswith("http://testserver/media/")  # an API URL: the worker reads it through storage
    data = completed(s3_api, image)
    video_url, poster_url = data["outputs"][0], data["details"]["poster"]
    bucket_url = f"{s3_api.settings.s3_endpoint_url}/{s3_api.settings.s3_bucket}/{PREFIX}files/"
    assert video_url.startswith(bucket_url) and poster_url.startswith(bucket_url)

    video = httpx.get(video_url)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "out.mp4").write_bytes(video.content)
    info = probe(tmp_path / "out.mp4")
    assert info.codec == "h264" and min(info.width, info.height) == 480 and info.frames > 24
    poster = httpx.get(poster_url)
    assert poster.headers["content-type"] == "image/jpeg" and poster.content[:3] == b"\xff\xd8\xff"
    assert not (s3_api.settings.data_dir / "uploads").exists()
    assert not (s3_api.settings.data_dir / "outputs").exists()


def test_the_playground_may_load_videos_from_the_bucket(s3_api):
    policy = s3_api.client.get("/playground").headers["content-security-policy"]
    media = next(d for d in policy.split("; ") if d.startswith("media-src "))
    assert media == f"media-src 'self' {s3_api.settings.s3_endpoint_url}"


def test_an_uploaded_page_redirects_to_a_download_from_the_bucket(s3_api):
    url = ticket_upload(s3_api, "page.html", HTML, "text/html")
    r = s3_api.client.get(url, follow_redirects=False)
    assert r.status_code == 302 and r.headers["cache-control"] == "no-store"
    assert r.headers["location"].startswith(s3_api.settings.s3_endpoint_url + "/")
    served = httpx.get(r.headers["location"])
    assert served.content == HTML and served.headers["content-type"] == "application/octet-stream"
    assert served.headers["content-disposition"] == 'attachment; filename="page.html"'


def test_a_multipart_upload_lands_in_the_bucket_and_one_over_the_cap_nowhere(settings, s3_bucket):
    api = Api(_settings(s3_bucket, settings, max_upload_mb=1))

    def upload(name: str, data: bytes):
        return api.client.post("/api/v3/media/upload/binary", files={"file": (name, data, "image/png")},
                               headers=api.h())

    with api.client:
        r = upload("in.png", b"\x89PNG\r\n\x1a\n")
        assert r.status_code == 200 and r.json()["data"]["size"] == 8
        token = r.json()["data"]["download_url"].split("/media/", 1)[1].split("/")[0]
        assert s3_bucket.names() == [f"media/{token}/in.png"]
        assert upload("big.png", b"x" * (2**20 + 1)).status_code == 413
        assert s3_bucket.names() == [f"media/{token}/in.png"]


def test_api_urls_redirect_to_the_bucket_until_retention_removes_the_files(settings, s3_bucket):
    api = Api(_settings(s3_bucket, settings, file_urls="api"))
    with api.client:
        data = completed(api, data_uri(pictures.png()))
        video = data["outputs"][0]
        assert video.startswith("http://testserver/files/")
        r = api.client.get(video, follow_redirects=False)
        assert r.status_code == 302
        assert r.headers["location"].startswith(f"{s3_bucket.endpoint}/{s3_bucket.name}/files/")
        followed = httpx.get(r.headers["location"])
        assert followed.status_code == 200 and followed.content[4:8] == b"ftyp"
        names = s3_bucket.names()
        assert sum(n.startswith("files/") for n in names) == 2 and sum(n.startswith("media/") for n in names) == 1

        swept = Sweeper(api.db, api.app.state.ctx.storage, api.settings).sweep(now() + 8 * DAY)
        assert (swept.predictions, swept.uploads) == (1, 1)
        assert s3_bucket.names() == []
        r = api.client.get(video)
        assert r.status_code == 410 and r.json()["message"].startswith("this file expired at ")
