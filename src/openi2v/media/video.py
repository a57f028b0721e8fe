"""Frames -> H.264 MP4 (yuv420p, faststart) through PyAV, and probing a file back.

The one video writer: every engine encodes through ``write_mp4``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import av
import cv2
import numpy as np

from openi2v.errors import InvalidInput

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
              crf: int = 18, preset: str = "veryfast", audio: np.ndarray | None = None,
              layout: str = "rgb24") -> int:
    """Encode uint8 frames; ``audio`` is float32 (channels, samples) at 48 kHz.

    ``layout`` "rgb24": H x W x 3 RGB; "yuv420p": the encoder's own (H * 3/2) x W I420
    buffer (what ``rgb_to_i420`` makes), taken as is. Returns the number of frames written.
    """
    if layout not in ("rgb24", "yuv420p"):
        raise ValueError(f"layout must be rgb24 or yuv420p, not {layout!r}")
    count = 0
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        # No B-frames: x264 codes them at lower quality than the P-frames around them, and that
        # alternation reads as a shimmer in slow camera moves (it tripled the measured zoom jitter of a
        # slow zoom at CRF 18). Without them a clip is ~1.7x the bytes at the same CRF and encodes faster.
        # cpu-independent: x264's AVX-512 macroblock-tree code (mbtree_propagate_list) takes 8 macroblocks at
        # a time, so where a row's width is not a multiple of 128 px (540 px, say) it runs past the row's end;
        # past the last row it reads costs and motion vectors from memory x264 never wrote and adds them into
        # the picture's costs. The same frames then gave other bytes whenever the heap held other leftovers.
        # This option swaps in x264's plain C mbtree functions: the same frames give the same bytes, on any
        # CPU, at no measurable cost (bench/motion_vs_ffmpeg.py; the mbtree pass works on the lowres picture).
        stream.codec_context.options = {"crf": str(crf), "preset": preset, "bf": "0",
                                        "x264-params": "cpu-independent=1"}
        # x264's frame threads, as the ffmpeg command line uses (PyAV's default, slice threads, is ~15 %
        # slower on 2 cores and splits every picture into slices)
        stream.codec_context.thread_type = "FRAME"
        sound = _audio_stream(out) if audio is not None else None  # every stream exists before muxing starts
        for pixels in frames:
            # wrapped, not copied: x264 copies each picture in as it takes it
            frame = av.VideoFrame.from_numpy_buffer(
                rgb_to_i420(pixels) if layout == "rgb24" else np.ascontiguousarray(pixels), format="yuv420p")
            frame.pts = count
            out.mux(stream.encode(frame))
            count += 1
        out.mux(stream.encode(None))
        if sound is not None:
            _write_audio(out, sound, audio)
    return count


# BT.601 limited range, the decoders' default for untagged SD/HD H.264.
_U = np.array([-0.148, -0.291, 0.439], np.float32)
_V = np.array([0.439, -0.368, -0.071], np.float32)


def rgb_to_i420(rgb: np.ndarray) -> np.ndarray:
    """RGB -> planar I420: luma from OpenCV, chroma from 2x2 averages (sharper colour edges than
    point-sampled chroma, and several times faster than swscale)."""
    h, w = rgb.shape[:2]
    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
    small = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
    u = np.clip(small @ _U + 128.5, 0, 255).astype(np.uint8)
    v = np.clip(small @ _V + 128.5, 0, 255).astype(np.uint8)
    q = (w // 2) * (h // 2)
    flat = yuv.reshape(-1)
    flat[h * w:h * w + q] = u.reshape(-1)
    flat[h * w + q:] = v.reshape(-1)
    return yuv


def _audio_stream(out: av.container.OutputContainer) -> av.AudioStream:
    stream = out.add_stream("aac", rate=AUDIO_RATE)
    stream.layout = "stereo"
    return stream


def _write_audio(out: av.container.OutputContainer, stream: av.AudioStream, samples: np.ndarray) -> None:
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
    try:
        with av.open(io.BytesIO(data), format=fmt) as c:
            for frame in c.decode(audio=0):
                for f in resampler.resample(frame):
                    chunks.append(f.to_ndarray())
            for f in resampler.resample(None):
                chunks.append(f.to_ndarray())
    except (av.FFmpegError, ValueError) as exc:  # damage past the part checked at submit
        raise InvalidInput("audio", f"could not be decoded as {fmt} audio") from exc
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32)
    out = np.zeros((2, want), np.float32)
    out[:, : min(want, samples.shape[1])] = samples[:, :want]
    return out
