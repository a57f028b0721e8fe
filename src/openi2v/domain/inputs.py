"""The ONE validation of user input: the API, the CLI and the playground all come here.

Rules (from the Kling 2.5 Turbo Pro page):
- ``image``: required; an http(s) URL (scheme in any case, a valid host and port, at most
  2,048 characters), a ``data:`` URI, or one of our upload URLs.
  The bytes must be JPEG or PNG (judged by content, not name), at most 10 MB (10 MiB), at least
  300x300 px, at most 40 megapixels, aspect ratio between 1:2.5 and 2.5:1 inclusive, and
  decodable. EXIF orientation is applied; CMYK, 16-bit, grayscale, palette and alpha images
  become RGB (alpha composited on white); an animated PNG gives its first frame.
- ``prompt``: required, non-empty, at most 2,500 characters. Every text must be valid Unicode
  (a lone surrogate such as ``"\ud800"`` is refused: it cannot be stored or sent as UTF-8).
- ``negative_prompt``: optional, at most 2,500 characters.
- ``guidance_scale``: a number in [0, 1], default 0.5.
- ``duration``: 5 or 10 (also "5" or "10"), default 5.
- ``seed`` (ours): an integer in [0, 2**32 - 1]; absent or -1 means the server picks one. The hosted
  model has no seed and ignores one, so a seed is never refused: a numeric string is read as its
  integer, one outside the range is reduced modulo 2**32, anything else is ignored (a random seed is
  used), each with a note.
- ``last_image`` (optional): same rules as ``image``; the clip ends on it.
- ``audio`` (ours, optional): mp3, wav, aac or m4a, at most 20 MB, and decodable. A value that is not an
  http(s) URL or a data URI is ignored with a note (the hosted model has no audio input).
- ``enable_sync_mode``, ``enable_base64_output``: true or false (also "true"/"false", 1/0).
- ``webhook`` (query string): an http(s) URL of at most 2,048 characters.
Unknown keys are ignored, as the hosted API does. Notes on what was read otherwise than sent are
stored with the inputs (under ``NOTES``) and shown in the prediction's ``details["notes"]``.

A multipart upload (``check_upload``) must not be empty and is held to the hosted limit of the type
its bytes show: image 20 MB, video 100 MB, audio 50 MB (MiB, as above), any other file the server's.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import io
import json
import math
import re
import secrets
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import httpx
from PIL import Image, ImageOps

from openi2v.errors import InvalidInput, PayloadTooLarge
from openi2v.media.filetypes import HEAD_BYTES, sniff

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MIN_IMAGE_SIDE = 300
MAX_ASPECT = 2.5
MAX_PIXELS = 40_000_000  # far below Pillow's bomb limit; a photo never needs more
MAX_PROMPT = 2500
MAX_AUDIO_BYTES = 20 * 1024 * 1024
DURATIONS = (5, 10)
MAX_SEED = 2**32 - 1
MAX_URL = 2048
NOTES = "_notes"  # the stored inputs' list of notes on fields read otherwise than sent
_INTEGER = re.compile(r"[+-]?[0-9]{1,4000}")  # int() reads up to 4,300 digits
EPOCH_DAY = dt.date(1970, 1, 1).toordinal()  # day numbers count from 1970-01-01 (UTC)
# A progressive JPEG has about 10 scans; each costs a pass over the whole picture to decode, so
# thousands in a small file would hold a decoder for minutes.
MAX_JPEG_SCANS = 100
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
MEDIA_FIELDS = ("image", "last_image", "audio")
# What the demuxer is told for each audio type the bytes can show (an MP4 with a video brand may hold audio).
AUDIO_CONTAINERS = {"audio/wav": "wav", "audio/mp4": "mp4", "video/mp4": "mp4", "audio/mpeg": "mp3", "audio/aac": "aac"}
DECODED_SHORT_SIDE = 2160  # what the worker keeps of a large JPEG (see _downscale_early)
# Decoding a large image holds its pixels (up to 160 MB at 40 MP): at most this many at once per
# process, so a burst of big images queues here instead of multiplying a process's memory.
_DECODES = threading.BoundedSemaphore(2)


@dataclass(frozen=True)
class VideoRequest:
    image: str
    prompt: str
    negative_prompt: str = ""
    guidance_scale: float = 0.5
    duration: int = 5
    seed: int = 0
    last_image: str | None = None
    audio: str | None = None
    notes: tuple[str, ...] = ()  # what was read otherwise than sent (a coerced seed, an ignored audio)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None and k != "notes"}
        if self.notes:
            data[NOTES] = list(self.notes)
        return data


def parse_request(body: Any) -> VideoRequest:
    """Check every field of a submit body; raise InvalidInput naming the first bad one."""
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object")
    notes: list[str] = []
    return VideoRequest(
        image=_media_ref(body, "image", required=True),
        prompt=_text(body, "prompt", required=True),
        negative_prompt=_text(body, "negative_prompt", required=False),
        guidance_scale=_guidance(body.get("guidance_scale")),
        duration=_duration(body.get("duration")),
        seed=_seed(body.get("seed"), notes),
        last_image=_media_ref(body, "last_image", required=False),
        audio=_audio(body, notes),
        notes=tuple(notes),  # last: the calls above have added theirs
    )


def parse_duration(value: Any) -> int:
    """The duration rule alone, for price quotes."""
    return _duration(value)


def _media_ref(body: dict, field: str, required: bool) -> str | None:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string: an http(s) URL or a data URI")
    if value.startswith("data:"):
        return value
    if not value[:8].lower().startswith(("http://", "https://")):
        raise InvalidInput(field, "must be an http(s) URL or a data URI")
    check_url(field, value)
    return value


def _audio(body: dict, notes: list[str]) -> str | None:
    """Ours: the hosted model has no audio input, so a value that is not a URL is ignored, with a note."""
    try:
        return _media_ref(body, "audio", required=False)
    except InvalidInput:  # a data URI is never refused here: its bytes are judged at submit
        notes.append(f"audio: {_shown(body['audio'])} is not a valid http(s) URL or a data URI and was ignored")
        return None


def _shown(value: Any) -> str:
    """A value as a note quotes it: JSON, at most 40 characters."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_url(field: str, value: Any) -> httpx.URL:
    """An absolute http(s) URL with a host and a port in 1-65535, parsed by httpx: the parser that
    later sends it (``outbound.py``), so what passes here is what is fetched or called back."""
    if not isinstance(value, str) or len(value) > MAX_URL:
        raise InvalidInput(field, f"must be an http(s) URL of at most {MAX_URL} characters")
    check_text(field, value)
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidInput(field, "is not a valid URL (check the host and port)") from exc
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise InvalidInput(field, f"must be an http(s) URL of at most {MAX_URL} characters")
    if b"%" in url.raw_host:  # httpx escapes what no host name holds ("http://[" has the host "%5B")
        raise InvalidInput(field, "is not a valid URL (check the host and port)")
    if url.port is not None and not 1 <= url.port <= 65535:
        raise InvalidInput(field, "is not a valid URL (the port must be between 1 and 65535)")
    return url


def optional_str(body: dict, field: str) -> str | None:
    """A field that, when present and not empty, must be a string (filters, ids)."""
    value = body.get(field)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if "\x00" in value:  # never sent to the database: PostgreSQL refuses a NUL in text
        raise InvalidInput(field, "must not contain a NUL character")
    return value


def parse_content_type(field: str, value: Any) -> str | None:
    """A client's declared media type, kept only as a label (files are served by what their bytes
    are); parameters such as ``charset=`` are dropped."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        value = value.split(";", 1)[0].strip()
    if not isinstance(value, str) or not MEDIA_TYPE.fullmatch(value):
        raise InvalidInput(field, "must be a media type such as image/png")
    return value.lower()


MAX_IDS = 100


def parse_ids(body: dict, field: str = "ids") -> list[str]:
    """``{"ids": [...]}``: 1 to 100 prediction ids (strings)."""
    ids = body.get(field)
    if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS or not all(isinstance(i, str) for i in ids):
        raise InvalidInput(field, f"must be a list of 1 to {MAX_IDS} prediction ids")
    return ids


MAX_PAGED = 10_000  # entries a listing pages through (OFFSET reads all it skips): narrow with times beyond


def page_fields(body: dict, default_size: int = 20) -> tuple[int, int]:
    """``page`` and ``page_size`` (1-100) of a listing, within its first ``MAX_PAGED`` entries."""
    page, page_size = int_field(body, "page", 1, 1, MAX_PAGED), int_field(body, "page_size", default_size, 1, 100)
    if (page - 1) * page_size >= MAX_PAGED:
        raise InvalidInput("page", f"pages reach the first {MAX_PAGED:,} entries only (page {page} of "
                                   f"{page_size} starts past them): narrow the time range instead")
    return page, page_size


def int_field(body: dict, field: str, default: int, lo: int, hi: int) -> int:
    """An integer in [lo, hi] (paging); ``default`` when absent."""
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(field, f"must be an integer between {lo} and {hi}")
    return value


def time_field(body: dict, field: str) -> float | None:
    """An ISO-8601 time (UTC when it names no zone; a date is its midnight) as UNIX seconds."""
    value = body.get(field)
    if value in (None, ""):
        return None
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInput(field, "must be an ISO-8601 time such as 2025-05-18T06:00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def day_field(body: dict, field: str) -> int | None:
    """A date (``2025-05-18``; an ISO-8601 time gives its UTC date) as days since 1970-01-01."""
    value = body.get(field)
    if value in (None, ""):
        return None
    if isinstance(value, str) and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).toordinal() - EPOCH_DAY
        except ValueError:
            pass
    try:
        day = math.floor(time_field(body, field) / 86400)
    except (InvalidInput, OverflowError) as exc:
        raise InvalidInput(field, "must be a date such as 2025-05-18") from exc
    if not 1 <= day + EPOCH_DAY <= dt.date.max.toordinal():  # a time whose UTC date leaves the calendar
        raise InvalidInput(field, "must be a date between 0001-01-01 and 9999-12-31")
    return day


def parse_idempotency_key(value: str) -> str:
    """The ``Idempotency-Key`` header: 1 to 255 printable ASCII characters (a UUID, say)."""
    if not 1 <= len(value) <= 255 or not all(" " < ch <= "~" for ch in value):
        raise InvalidInput("Idempotency-Key", "must be 1 to 255 printable ASCII characters, such as a UUID")
    return value


def parse_flag(body: dict, field: str) -> bool:
    """A platform flag: a boolean, or "true"/"false" and 1/0 as loosely typed clients send them."""
    value = body.get(field)
    if value in (None, False, 0, "", "false", "False", "0"):
        return False
    if value in (True, 1, "true", "True", "1"):
        return True
    raise InvalidInput(field, "must be true or false")


def check_text(field: str, value: str) -> str:
    """Text that can be stored and sent: UTF-8 encodable (no lone surrogates)."""
    if value.isascii():  # O(1) in CPython, and most text is: a 13 MB data URI is not copied to be checked
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(field, "must be valid Unicode text (it holds a lone surrogate)") from exc
    return value


def _text(body: dict, field: str, required: bool) -> str:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if required and not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > MAX_PROMPT:
        raise InvalidInput(field, f"must be at most {MAX_PROMPT} characters (got {len(value)})")
    return check_text(field, value)


def _guidance(value: Any) -> float:
    if value is None:
        return 0.5
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("guidance_scale", "must be a number between 0 and 1")
    if not 0 <= value <= 1:
        raise InvalidInput("guidance_scale", f"must be between 0 and 1 (got {value})")
    return float(value)


def _duration(value: Any) -> int:
    if value is None:
        return 5
    if isinstance(value, str) and value.strip() in ("5", "10"):
        return int(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in DURATIONS:
        return int(value)  # 5.0 is 5, as the hosted API takes it
    raise InvalidInput("duration", f"must be 5 or 10 (got {value!r})")


def _seed(value: Any, notes: list[str]) -> int:
    """Never refused (the hosted model ignores a seed): see the module's rules."""
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        notes.append(f"seed: the string {_shown(value)} was read as the integer {_shown(int(value))}")
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # 42.0 is 42, as for duration
    if value is None or value == -1:
        return secrets.randbelow(MAX_SEED + 1)
    if isinstance(value, bool) or not isinstance(value, int):
        notes.append(f"seed: {_shown(value)} is not an integer and was ignored; a random seed was used")
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= value <= MAX_SEED:
        used = value % (MAX_SEED + 1)
        notes.append(f"seed: {_shown(value)} is outside 0 to {MAX_SEED}; {used} (the seed modulo 2**32) was used")
        return used
    return value


# --- media bytes -----------------------------------------------------------------


def decode_data_uri(field: str, uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or ";base64" not in header:
        raise InvalidInput(field, "data URI must be base64-encoded (data:<type>;base64,<data>)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(field, "data URI holds invalid base64") from exc


def inspect_image(field: str, data: bytes) -> None:
    """Judge image bytes under the page's rules without holding their pixels (the API, at submit).

    Headers first (type, size, pixel count, geometry); then the file is read through: a PNG's
    chunks and their checksums, a JPEG decoded at 1/8 scale. A PNG whose compressed pixel data
    is damaged under valid checksums passes here and fails its job with code 1401.
    """
    img = _open_image(field, data)
    with _DECODES:
        try:
            if img.format == "PNG":
                img.verify()
            else:
                img.draft("RGB", (img.width // 8, img.height // 8))
                img.load()
        except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError ... on bad files
            raise InvalidInput(field, "is truncated or not a decodable image") from exc
        finally:
            img.close()


def check_image(field: str, data: bytes) -> Image.Image:
    """Decode image bytes under the page's rules; return an RGB image, upright (the worker, the CLI)."""
    img = _open_image(field, data)
    with _DECODES:
        try:
            _downscale_early(img)
            img.load()
        except Exception as exc:
            raise InvalidInput(field, "is truncated or not a decodable image") from exc
        return to_rgb(ImageOps.exif_transpose(img))


def _downscale_early(img: Image.Image) -> None:
    """A large JPEG is decoded at the smallest 1/2, 1/4 or 1/8 scale that keeps its short side at least
    ``DECODED_SHORT_SIDE``: no engine uses more (1080p output, zoomed in up to 2x), and the pixels
    held shrink up to 64 times. A PNG has no such scale and is decoded whole."""
    scale = DECODED_SHORT_SIDE / min(img.size)
    if img.format == "JPEG" and scale < 0.5:
        img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))


def _open_image(field: str, data: bytes) -> Image.Image:
    """The image's headers, judged before any pixel is decoded."""
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(field, f"must be at most 10 MB (10,485,760 bytes; got {len(data):,})")
    kind = sniff(data[:HEAD_BYTES])
    if kind not in ("image/jpeg", "image/png"):
        raise InvalidInput(field, "must be a JPEG or PNG image")
    scans = data.count(b"\xff\xda") if kind == "image/jpeg" else 0  # in coded data 0xff is escaped: markers only
    if scans > MAX_JPEG_SCANS:
        raise InvalidInput(field, f"has too many progressive scans ({scans}); at most {MAX_JPEG_SCANS}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["JPEG", "PNG"])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidInput(field, "has too many pixels (decompression bomb)") from exc
    except Exception as exc:
        raise InvalidInput(field, "is truncated or not a decodable image") from exc
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise InvalidInput(field, f"has too many pixels ({w}x{h}); at most 40 megapixels")
    _check_geometry(field, w, h)
    return img


def _check_geometry(field: str, w: int, h: int) -> None:
    if min(w, h) < MIN_IMAGE_SIDE:
        raise InvalidInput(field, f"must be at least 300x300 pixels (got {w}x{h})")
    if max(w / h, h / w) > MAX_ASPECT:
        raise InvalidInput(field, f"aspect ratio must be between 1:2.5 and 2.5:1 (got {w}x{h})")


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if img.mode == "I;16" or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return img.convert("RGB")


# The hosted per-type upload limits ("MB" read as MiB, as every size rule here), judged by the bytes.
UPLOAD_LIMITS = {"image": 20 * 2**20, "video": 100 * 2**20, "audio": 50 * 2**20}


def check_upload(head: bytes, size: int, max_bytes: int) -> None:
    """A multipart upload: not empty, and within the limit of the type its first bytes show (a type
    not judged from the bytes has only the server's ``max_bytes``); a 413 names the limit in bytes."""
    if size == 0:
        raise InvalidInput("file", "is empty")
    kind = sniff(head[:HEAD_BYTES]).split("/", 1)[0]
    limit = min(UPLOAD_LIMITS.get(kind, max_bytes), max_bytes)
    if size > limit:
        what = {"image": "an image", "video": "a video", "audio": "an audio file"}.get(kind, "a file")
        raise PayloadTooLarge(f"file: {what} must be at most {limit / 2**20:g} MB ({limit:,} bytes; got {size:,})")


def audio_format(field: str, data: bytes) -> str:
    """Judge audio by its first bytes; return the container name for the demuxer."""
    if len(data) > MAX_AUDIO_BYTES:
        raise InvalidInput(field, f"must be at most 20 MB (20,971,520 bytes; got {len(data):,})")
    fmt = AUDIO_CONTAINERS.get(sniff(data[:HEAD_BYTES])) or ("mp4" if data[4:8] == b"ftyp" else None)
    if fmt is None:
        raise InvalidInput(field, "must be an mp3, wav, aac or m4a audio file")
    return fmt


def check_audio(field: str, data: bytes) -> str:
    """Judge audio by its bytes, and decode its first second to prove it is audio."""
    fmt = audio_format(field, data)
    import av  # here, not at the top: only a submit with audio pays for the import

    try:
        with av.open(io.BytesIO(data), format=fmt) as container:
            if not container.streams.audio:
                raise InvalidInput(field, "holds no audio stream")
            decoded = 0.0
            for frame in container.decode(audio=0):
                decoded += frame.samples / (frame.sample_rate or 1)
                if decoded >= 1.0:
                    break
    except InvalidInput:
        raise
    except Exception as exc:  # PyAV's FFmpegError family, and ValueError on a nonsense header
        raise InvalidInput(field, f"could not be decoded as {fmt} audio") from exc
    if decoded <= 0:
        raise InvalidInput(field, f"could not be decoded as {fmt} audio (no samples)")
    return fmt


# --- schema for GET /api/v3/models ------------------------------------------------

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "description": "First frame: URL or data URI. JPEG/PNG, <=10 MB, >=300x300 px, aspect 1:2.5 to 2.5:1."},
        "prompt": {"type": "string", "maxLength": MAX_PROMPT, "description": "The positive prompt for the generation."},
        "negative_prompt": {"type": "string", "maxLength": MAX_PROMPT, "description": "The negative prompt for the generation."},
        "guidance_scale": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5},
        "duration": {"type": "integer", "enum": list(DURATIONS), "default": 5},
        "seed": {"type": "integer", "minimum": -1, "maximum": MAX_SEED,
                 "description": "Empty or -1: random. Other values are read with a note in details.notes."},
        "last_image": {"type": "string", "description": "Optional last frame, same rules as image."},
        "audio": {"type": "string", "description": "Optional soundtrack: mp3, wav, aac or m4a."},
    },
    "required": ["image", "prompt"],
    "x-order-properties": ["image", "prompt", "negative_prompt", "guidance_scale", "duration", "seed", "last_image", "audio"],
}
