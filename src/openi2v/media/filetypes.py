"""What a stored file is, judged from its first bytes, never from its name.

Only the media this API accepts and produces have a type here (JPEG, PNG, MP4, WAV, MP3, AAC,
M4A); anything else is ``application/octet-stream``, which the API serves as a download.
"""

from __future__ import annotations

from pathlib import Path

OCTET_STREAM = "application/octet-stream"
HEAD_BYTES = 16  # enough for every signature below
# ISO base media brands (bytes 8-12 of an MP4's first box): audio-only ones, and the video ones we play.
_AUDIO_BRANDS = {b"M4A ", b"M4B "}
_VIDEO_BRANDS = {b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"M4V ", b"dash"}


def file_type(path: Path) -> str:
    """The media type of the file at ``path``, from its first bytes only."""
    with open(path, "rb") as f:
        return sniff(f.read(HEAD_BYTES))


def sniff(head: bytes) -> str:
    """The media type that a file starting with ``head`` has; OCTET_STREAM when it is no media we serve."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return _iso_media(head[8:12])
    if head[:3] == b"ID3":
        return "audio/mpeg"
    return _audio_frame(head[:3])


def _iso_media(brand: bytes) -> str:
    if brand in _AUDIO_BRANDS:
        return "audio/mp4"
    return "video/mp4" if brand in _VIDEO_BRANDS else OCTET_STREAM


def _audio_frame(head: bytes) -> str:
    """A bare MPEG audio frame: 11 sync bits, then the layer: 01 is MP3's (layer III, with a bitrate and a
    sample rate that exist), 00 is AAC's ADTS header. Anything else (a UTF-16 text's FF FE, say) is none."""
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return OCTET_STREAM
    layer = (head[1] >> 1) & 0b11
    if layer == 0b01:
        return "audio/mpeg" if head[2] >> 4 != 0b1111 and (head[2] >> 2) & 0b11 != 0b11 else OCTET_STREAM
    return "audio/aac" if layer == 0 and head[1] & 0xF0 == 0xF0 else OCTET_STREAM
