"""Files in an S3-compatible bucket (AWS, MinIO, R2, Ceph) that every machine shares:

    s3://{bucket}/{prefix}media/{token}/{filename}   key media/{token}/{filename}
    s3://{bucket}/{prefix}files/{token}/{filename}   key files/{token}/{filename}

The bucket stays private: every URL handed out is a SigV4 presigned one on the bucket's own origin.
Credentials come through boto3's own chain (environment, profile, instance role), never from settings.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from openi2v.errors import NotFound, StorageError
from openi2v.media.filetypes import HEAD_BYTES, OCTET_STREAM, sniff
from openi2v.storage import UPLOADS, output_key, parse_key
from openi2v.storage.local import CappedWriter

if TYPE_CHECKING:
    from openi2v.config import Settings

LOCATE_TTL_S = 300  # the API's file route redirects here; the client follows at once
MIN_URL_TTL_S = 60
MAX_URL_TTL_S = 7 * 86400  # SigV4's limit on a presigned URL
_OUTPUT_TYPES = {".mp4": "video/mp4", ".jpg": "image/jpeg"}
_MISSING = {"NoSuchKey", "404", "NotFound"}  # a HEAD's 404 has no body, so only its status names it
_EMPTY = "InvalidRange"  # S3's answer to a ranged GET of an empty object, which has no byte 0


class S3Storage:
    """Uploads and outputs as objects in one bucket.

    Limits the S3 protocol sets, and what follows from them:

    - A presigned URL is valid for at most 7 days (SigV4), and no longer than the credentials that
      signed it (an instance role's session lasts hours). With ``file_urls="presigned"`` a result's
      URL is signed until the file's retention ends, at most 7 days from the moment the result is
      read; ``file_urls="api"`` hands out the API's own URL instead, which redirects to a fresh one.
    - ``upload_target`` is a presigned PUT: the ticket's content type is signed (the client must send
      that header), and so is its declared size, which the ticket route held to the upload limits,
      so the bucket refuses a longer body. A ticket that declares no size (``size`` 0; the official
      SDKs always send it) gets no such cap, and the URL is not single-use. What the workers read is
      still bounded: ``read`` fetches at most ``max_bytes`` + 1 bytes and the caller refuses a larger file.
    """

    def __init__(self, client, bucket: str, prefix: str = "", file_urls: str = "presigned") -> None:
        self.client, self.bucket, self.prefix, self.file_urls = client, bucket, prefix, file_urls
        # where its signed URLs point (signing is local work): the playground's pages may load media there
        try:
            probe = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": f"{prefix}-"},
                                                  ExpiresIn=60)
        except BotoCoreError as exc:  # no credentials in boto3's chain, say
            raise ValueError(f"OPENI2V_STORAGE: s3, but cannot sign URLs for the bucket ({type(exc).__name__}): "
                             "give boto3 credentials (AWS_ACCESS_KEY_ID..., a profile or a role)") from None
        parts = urlsplit(probe)
        self.origin: str | None = f"{parts.scheme}://{parts.netloc}"

    @classmethod
    def from_settings(cls, settings: "Settings") -> "S3Storage":
        config = Config(signature_version="s3v4", connect_timeout=5, read_timeout=30,
                        retries={"max_attempts": 3, "mode": "standard"},
                        # virtual: presigned URLs on the region's own host (the default signs for the
                        # global one, which redirects a new bucket outside us-east-1); path: what
                        # MinIO-like endpoints serve
                        s3={"addressing_style": "path" if settings.s3_endpoint_url else "virtual"},
                        # no checksum trailers (aws-chunked bodies), which many S3-compatible stores refuse
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        client = boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None,
                              region_name=settings.s3_region or None, config=config)
        return cls(client, settings.s3_bucket, settings.s3_prefix, settings.file_urls)

    def save_output(self, src: Path, filename: str) -> str:
        key = output_key(filename)
        self._put_file(src, key, _OUTPUT_TYPES.get(Path(key).suffix, OCTET_STREAM))
        return key

    async def receive(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Spooled to a temporary file as it arrives (memory stays bounded; over the cap, nothing is
        uploaded), then uploaded off the event loop."""
        with tempfile.TemporaryDirectory(prefix="openi2v-upload-") as tmp:
            with CappedWriter(Path(tmp) / "body", max_bytes) as writer:
                async for chunk in chunks:
                    writer.write(chunk)
            await asyncio.to_thread(self._put_file, writer.path, key, OCTET_STREAM)
        return writer.size

    def put(self, key: str, data: bytes) -> None:
        self._call("store", key, "put_object", Body=data, ContentType=OCTET_STREAM)

    def read(self, key: str, max_bytes: int) -> bytes | None:
        try:
            obj = self._call("read", key, "get_object", Range=f"bytes=0-{max_bytes}")
            return None if obj is None else obj["Body"].read()
        except StorageError as exc:
            if _code(exc.__cause__) == _EMPTY:
                return b""
            raise

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, "delete_object")  # an object already gone is no error to S3
        except NotFound:  # not a key: nothing this storage could hold
            pass

    def locate(self, key: str) -> str | None:
        """A short-lived signed GET, or None when the object is not there. An upload (a stranger's
        bytes) is served with the type its first bytes show, and as a download unless it is media,
        so it never renders as a page even on the bucket's origin; an output keeps its stored type."""
        kind, _, filename = parse_key(key)
        if kind != UPLOADS:
            found = self._call("look up", key, "head_object") is not None
            return self._presign("get_object", key, LOCATE_TTL_S) if found else None
        head = self.read(key, HEAD_BYTES - 1)
        if head is None:
            return None
        media_type = sniff(head)
        disposition = "attachment" if media_type == OCTET_STREAM else "inline"
        return self._presign("get_object", key, LOCATE_TTL_S, ResponseContentType=media_type,
                             ResponseContentDisposition=f'{disposition}; filename="{filename}"')

    def url(self, key: str, base: str, expires_at: float | None) -> str:
        if self.file_urls == "api":
            return base + key  # the API's file route redirects to a fresh signed URL
        ttl = MAX_URL_TTL_S if expires_at is None else int(expires_at - time.time())
        return self._presign("get_object", key, min(max(ttl, MIN_URL_TTL_S), MAX_URL_TTL_S))

    def upload_target(self, key: str, base: str, content_type: str, size: int, ttl_s: int) -> str:
        # the declared size signed too: the bucket refuses a body of any other length
        return self._presign("put_object", key, ttl_s, ContentType=content_type,
                             **({"ContentLength": size} if size else {}))

    def _put_file(self, path: Path, key: str, content_type: str) -> None:
        try:
            with open(path, "rb") as body:
                self._call("store", key, "put_object", Body=body, ContentType=content_type)
        except OSError as exc:
            raise StorageError(f"could not store {key}: {exc}") from exc

    def _call(self, action: str, key: str, operation: str, **params):
        """One request about ``key``'s object: its answer, or None when the object is not there;
        every other failure a StorageError."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, Key=self._name(key), **params)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise _failure(action, key, exc) from exc
        except BotoCoreError as exc:
            raise _failure(action, key, exc) from exc

    def _presign(self, operation: str, key: str, ttl_s: int, **params: str) -> str:
        try:
            return self.client.generate_presigned_url(
                operation, Params={"Bucket": self.bucket, "Key": self._name(key), **params}, ExpiresIn=ttl_s)
        except BotoCoreError as exc:  # no credentials found, say
            raise _failure("sign a URL for", key, exc) from exc

    def _name(self, key: str) -> str:
        parse_key(key)  # NotFound for anything that is not a key
        return self.prefix + key


def _code(exc: BaseException | None) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def _failure(action: str, key: str, exc: Exception) -> StorageError:
    """A StorageError naming what failed and why, in words that carry no credentials or signatures."""
    return StorageError(f"could not {action} {key} in the bucket ({_code(exc) or type(exc).__name__})")
