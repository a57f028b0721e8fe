"""Frames -> H.264 MP4 (yuv420p, faststart) through PyAV, and probing a file back.

The one video writer: every engine encodes through ``write_mp4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import numpy as np

AUDIO_RATE = 48_000


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    frames: int
    duration: float
    codec: str
    pix_fmt: str
    has_audio: bool


def write_mp4(path: Path, frames: Iterable[np.ndarray], *, fps: int, width: int, height: int,
              crf: int = 18, preset: str = "veryfast", audio: np.ndarray | None = None) -> int:
    """Encode RGB uint8 frames (H x W x 3); ``audio`` is float32 (channels, samples) at 48 kHz.

    Returns the number of frames written.
    """
    count = 0
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.options = {"crf": str(crf), "preset": preset}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = count
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode(None))
        if audio is not None:
            _write_audio(out, audio)
    return count


def _write_audio(out: av.container.OutputContainer, samples: np.ndarray) -> None:
    stream = out.add_stream("aac", rate=AUDIO_RATE)
    stream.layout = "stereo"
    size = stream.codec_context.frame_size or 1024
    for start in range(0, samples.shape[1], size):
        chunk = np.ascontiguousarray(samples[:, start:start + size], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def probe(path: Path) -> VideoInfo:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        return VideoInfo(
            width=v.codec_context.width, height=v.codec_context.height, fps=float(v.average_rate or 0),
            frames=frames, duration=float(c.duration or 0) / av.time_base, codec=v.codec_context.name,
            pix_fmt=v.codec_context.pix_fmt or "", has_audio=bool(c.streams.audio),
        )


def read_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def decode_audio(data: bytes, fmt: str, seconds: float) -> np.ndarray:
    """Decode any audio PyAV reads into float32 stereo at 48 kHz, trimmed or padded to ``seconds``."""
    import io

    want = int(round(seconds * AUDIO_RATE))
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), format=fmt) as c:
        for frame in c.decode(audio=0):
            for f in resampler.resample(frame):
                chunks.append(f.to_ndarray())
        for f in resampler.resample(None):
            chunks.append(f.to_ndarray())
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)
    out = np.zeros((2, want), np.float32)
    out[:, : min(want, samples.shape[1])] = samples[:, :want]
    return out
