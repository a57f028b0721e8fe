"""The CPU camera-motion engine: animate a photo the way a camera operator would film it.

Not a generative model: it moves a virtual camera over the still image, directed by the
prompt (see ``camera.py``). Frame 0 is the input image at the output size; every other
frame is a sub-pixel affine (or, for a dolly zoom, radial) resampling of it. The view
stays inside the image: pans, rolls and shake are paired with the smallest zoom that
keeps the frame covered. Only "zoom out" needs pixels beyond the photo; they are its
mirror image, softened.
"""

from __future__ import annotations

import math
import queue
import random
import threading
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
from PIL import Image

from openi2v.engines.base import MOTION_DESCRIPTION, CancelCheck, Cancelled, EngineJob, EngineResult, Progress
from openi2v.engines.camera import CameraPlan, plan_camera
from openi2v.media.video import decode_audio, rgb_to_i420, write_mp4

# How far each move goes per second of its segment at normal speed.
RATE = {"zoom": math.log(1.07), "x": 0.022, "y": 0.022, "roll": 1.4, "orbit_x": 0.018, "orbit_roll": 0.9,
        "vertigo": 0.05}
# Where each axis must stay, so every frame keeps most of the picture.
LIMITS = {"zoom": (math.log(0.8), math.log(2.5)), "x": (-0.2, 0.2), "y": (-0.2, 0.2), "roll": (-15.0, 15.0),
          "vertigo": (0.0, 0.3)}
SPEED = {"slow": 0.5, "normal": 1.0, "fast": 2.0}
RESAMPLE = cv2.INTER_LINEAR
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class MotionSettings:
    short_side: int = 720  # output short side in px: 480, 720 or 1080
    fps: int = 24
    crf: int = 18  # x264 quality: lower is better, 18 is visually lossless
    preset: str = "veryfast"  # x264 speed/size trade-off

    @classmethod
    def from_settings(cls, settings) -> "MotionSettings":
        return cls(settings.short_side, settings.fps, settings.crf, settings.preset)


@dataclass
class Trajectory:
    """Per-frame camera parameters; all zero/one at frame 0 (the exact input)."""

    zoom: np.ndarray  # total magnification (>= containment)
    x: np.ndarray  # camera centre offset, fraction of width (+ right)
    y: np.ndarray  # fraction of height (+ down)
    roll: np.ndarray  # degrees, + picture turns clockwise
    vertigo: np.ndarray  # radial dolly-zoom strength


class MotionEngine:
    name = "motion"
    description = MOTION_DESCRIPTION

    def __init__(self, settings: MotionSettings | None = None) -> None:
        self.settings = settings or MotionSettings()

    def load(self) -> None:
        cv2.setNumThreads(max(1, cv2.getNumberOfCPUs()))

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult:
        s = self.settings
        # 1. Read the prompt into a camera plan.
        plan = plan_camera(job.prompt, job.negative_prompt, job.guidance_scale, job.seed)
        # 2. Size the output: the input's aspect ratio, short side from settings, even dimensions.
        width, height = output_size(job.image.size, s.short_side)
        base = resize_rgb(job.image, width, height)
        last = cover_rgb(job.last_image, width, height) if job.last_image is not None else None
        # 3. Plan every frame's camera: eased segments, drift, shake, containment.
        n = job.duration * s.fps
        traj = trajectory(plan, n, s.fps, job.duration, job.seed, width / height)
        # 4. Decode the soundtrack, trimmed or padded to the clip.
        audio = decode_audio(job.audio[1], job.audio[0], job.duration) if job.audio else None
        # 5. Render and encode frame by frame.
        video = job.out_dir / "video.mp4"
        frames = _prefetch(_render(base, last, traj, progress, cancelled))  # warp while x264 encodes
        write_mp4(video, frames, fps=s.fps, width=width, height=height, crf=s.crf, preset=s.preset, audio=audio,
                  layout="yuv420p")
        # 6. Keep frame 0 as the poster.
        poster = job.out_dir / "poster.jpg"
        Image.fromarray(base).save(poster, quality=85)
        details = {"engine": self.name, "camera_plan": plan.to_json(), "width": width, "height": height,
                   "fps": s.fps, "frames": n}
        return EngineResult(video, width, height, s.fps, n, details, poster)


# --- geometry ------------------------------------------------------------------------


def output_size(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    w, h = size
    scale = short_side / min(w, h)
    even = lambda v: max(2, int(round(v * scale / 2)) * 2)  # noqa: E731
    return even(w), even(h)


def resize_rgb(img: Image.Image, width: int, height: int) -> np.ndarray:
    arr = np.asarray(img.convert("RGB"))
    shrink = arr.shape[1] > width
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def cover_rgb(img: Image.Image, width: int, height: int) -> np.ndarray:
    """Scale to cover width x height, then centre-crop (for a last image of another shape)."""
    w, h = img.size
    scale = max(width / w, height / h)
    rw, rh = max(width, round(w * scale)), max(height, round(h * scale))
    arr = resize_rgb(img, rw, rh)
    x0, y0 = (rw - width) // 2, (rh - height) // 2
    return np.ascontiguousarray(arr[y0:y0 + height, x0:x0 + width])


def ease(u: np.ndarray) -> np.ndarray:
    """Position along a move: zero velocity and acceleration at both ends (raised-cosine speed)."""
    u = np.clip(u, 0.0, 1.0)
    return u - np.sin(2 * np.pi * u) / (2 * np.pi)


def trajectory(plan: CameraPlan, n: int, fps: int, seconds: int, seed: int, aspect: float) -> Trajectory:
    t = np.arange(n) / max(1, n - 1)  # 0..1 across the clip
    axes = {k: np.zeros(n) for k in ("zoom", "x", "y", "roll", "vertigo")}
    ends = {k: 0.0 for k in axes}
    k = len(plan.segments)
    for i, seg in enumerate(plan.segments):
        e = ease((t - i / k) * k)
        seg_s = seconds / k * SPEED[seg.speed]
        for axis, delta in _deltas(seg.moves, seg_s).items():
            lo, hi = LIMITS[axis]
            delta = float(np.clip(ends[axis] + delta, lo, hi)) - ends[axis]
            ends[axis] += delta
            axes[axis] += delta * e
    _add_drift(axes, plan, t, seed)
    if plan.shake:
        _add_shake(axes, t * seconds, seed)
    theta = np.radians(axes["roll"])
    contain = (1 / (1 - 2 * _soft_abs(axes["x"]))) * (1 / (1 - 2 * _soft_abs(axes["y"]))) * (
        np.cos(_soft_abs(theta)) + max(aspect, 1 / aspect) * np.sin(_soft_abs(theta)))
    return Trajectory(np.exp(axes["zoom"]) * contain, axes["x"], axes["y"], axes["roll"], axes["vertigo"])


def _deltas(moves: dict[str, int], seg_s: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for axis, sign in moves.items():
        if axis == "orbit":
            out["x"] = out.get("x", 0.0) + sign * RATE["orbit_x"] * seg_s
            out["roll"] = out.get("roll", 0.0) - sign * RATE["orbit_roll"] * seg_s
        elif axis in RATE:
            out[axis] = out.get(axis, 0.0) + sign * RATE[axis] * seg_s
    return out


def _soft_abs(v: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    return np.sqrt(v * v + eps * eps) - eps


def _wave(t: np.ndarray, rng: random.Random, freqs: tuple[float, float], parts: int) -> np.ndarray:
    """A smooth random curve that is exactly 0 at t=0, roughly within [-1, 1]."""
    out = np.zeros_like(t)
    for _ in range(parts):
        f, phase = rng.uniform(*freqs), rng.uniform(0, 2 * np.pi)
        out += np.sin(2 * np.pi * f * t + phase) - np.sin(phase)
    return out / (2 * parts)


def _add_drift(axes: dict[str, np.ndarray], plan: CameraPlan, t: np.ndarray, seed: int) -> None:
    """guidance_scale < 1 leaves the camera some creative freedom: a slow seed-driven drift."""
    if plan.drift <= 0:
        return
    rng = random.Random(seed ^ 0x5EED)
    amp = {"x": 0.03, "y": 0.03, "zoom": 0.05, "roll": 1.0}
    for axis, a in amp.items():
        if axis not in plan.removed:
            axes[axis] += plan.drift * a * _wave(t, rng, (0.25, 0.7), 2)


def _add_shake(axes: dict[str, np.ndarray], seconds: np.ndarray, seed: int) -> None:
    rng = random.Random(seed ^ 0x5A4E)
    envelope = ease(seconds / 0.5)
    axes["x"] += 0.006 * envelope * _wave(seconds, rng, (0.6, 2.2), 3)
    axes["y"] += 0.006 * envelope * _wave(seconds, rng, (0.6, 2.2), 3)
    axes["roll"] += 0.4 * envelope * _wave(seconds, rng, (0.4, 1.5), 2)


# --- rendering -----------------------------------------------------------------------


def _matrix(w: int, h: int, zoom: float, x: float, y: float, roll_deg: float) -> np.ndarray:
    """Output pixel -> source pixel, about the image centre (identity at frame 0)."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    th = -math.radians(roll_deg)
    s = 1.0 / zoom
    a, b = s * math.cos(th), -s * math.sin(th)
    c, d = s * math.sin(th), s * math.cos(th)
    ox, oy = cx + x * w, cy + y * h
    return np.array([[a, b, ox - a * cx - b * cy], [c, d, oy - c * cx - d * cy]])


class I420:
    """A picture in the encoder's own layout: one (H * 3/2, W) buffer holding full-size luma,
    then half-size U and V planes. Rendering warps these planes directly, so a frame costs
    1.5 samples per pixel instead of 3 and needs no colour conversion afterwards."""

    def __init__(self, buffer: np.ndarray, width: int, height: int) -> None:
        self.buffer, self.width, self.height = buffer, width, height
        flat, q = buffer.reshape(-1), (width // 2) * (height // 2)
        luma = width * height
        self.planes = (buffer[:height], flat[luma:luma + q].reshape(height // 2, width // 2),
                       flat[luma + q:].reshape(height // 2, width // 2))

    @classmethod
    def of(cls, rgb: np.ndarray) -> "I420":
        h, w = rgb.shape[:2]
        return cls(rgb_to_i420(rgb), w, h)

    @classmethod
    def empty(cls, width: int, height: int) -> "I420":
        return cls(np.empty((height * 3 // 2, width), np.uint8), width, height)


# Luma is sampled at full size (scale 1); each chroma sample sits at the centre of a 2x2 block (scale 2).
PLANE_SCALES = (1, 2, 2)


def _plane_matrix(m: np.ndarray, scale: int) -> np.ndarray:
    """The full-size map ``m`` (output px -> source px) expressed in one plane's own pixels."""
    if scale == 1:
        return m
    o = (scale - 1) / 2  # plane pixel q is full-size position scale * q + o
    out = m.copy()
    out[:, 2] = (m[:, :2] @ np.array([o, o]) + m[:, 2] - o) / scale
    return out


def _radial_grids(width: int, height: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per plane scale: each plane pixel's full-size offset from the centre, over the half-diagonal."""
    r = math.hypot((width - 1) / 2, (height - 1) / 2)
    grids = {}
    for scale in set(PLANE_SCALES):
        o = (scale - 1) / 2
        xs = (np.arange(width // scale) * scale + o - (width - 1) / 2) / r
        ys = (np.arange(height // scale) * scale + o - (height - 1) / 2) / r
        gx, gy = np.meshgrid(xs, ys)
        grids[scale] = (gx.astype(np.float32), gy.astype(np.float32))
    return grids


def _warp(src: I420, m: np.ndarray, vertigo: float, grids: dict | None, out: I420) -> I420:
    """Resample every plane of ``src`` through ``m`` (plus the dolly zoom's radial term) into ``out``."""
    if vertigo <= 1e-6 and np.array_equal(m, IDENTITY):
        return src  # frame 0: the input itself, bit for bit
    w, h = src.width, src.height
    cx, cy, r = (w - 1) / 2, (h - 1) / 2, math.hypot((w - 1) / 2, (h - 1) / 2)
    for plane, dst, scale in zip(src.planes, out.planes, PLANE_SCALES):
        size = (plane.shape[1], plane.shape[0])
        if vertigo <= 1e-6:
            cv2.warpAffine(plane, _plane_matrix(m, scale), size, dst=dst, flags=RESAMPLE | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REFLECT_101)
            continue
        gx, gy = grids[scale]
        f = 1.0 - vertigo * (gx * gx + gy * gy)
        px, py = cx + gx * f * r, cy + gy * f * r  # the distorted full-size output position
        o = (scale - 1) / 2
        mx = ((m[0, 0] * px + m[0, 1] * py + m[0, 2] - o) / scale).astype(np.float32)
        my = ((m[1, 0] * px + m[1, 1] * py + m[1, 2] - o) / scale).astype(np.float32)
        cv2.remap(plane, mx, my, RESAMPLE, dst=dst, borderMode=cv2.BORDER_REFLECT_101)
    return out


def _render(base: np.ndarray, last: np.ndarray | None, tr: Trajectory, progress: Progress,
            cancelled: CancelCheck) -> Iterator[np.ndarray]:
    """Yield each frame as an I420 buffer, ready for the encoder."""
    h, w = base.shape[:2]
    n = len(tr.zoom)
    src, end_src = I420.of(base), (I420.of(last) if last is not None else None)
    grids = _radial_grids(w, h) if tr.vertigo.any() else None
    settle = max(1, n // 20)  # the dissolve lands a moment early and the end frame settles
    fade_to = n - settle
    fade_from = fade_to - max(2, int(n * 0.25)) if last is not None else n
    for i in range(n):
        if cancelled():
            raise Cancelled()
        m = _matrix(w, h, tr.zoom[i], tr.x[i], tr.y[i], tr.roll[i])
        frame = _warp(src, m, float(tr.vertigo[i]), grids, I420.empty(w, h)).buffer
        if end_src is not None and i >= fade_from:
            # Dissolve into the last image, which rides the same camera and lands exactly at the end.
            alpha = float(ease(np.array((i - fade_from) / (fade_to - fade_from))))
            rel = _matrix(w, h, tr.zoom[i] / tr.zoom[-1], tr.x[i] - tr.x[-1], tr.y[i] - tr.y[-1],
                          tr.roll[i] - tr.roll[-1])
            end = _warp(end_src, rel, 0.0, grids, I420.empty(w, h)).buffer
            frame = end if alpha >= 1.0 else cv2.addWeighted(frame, 1 - alpha, end, alpha, 0)
        progress((i + 1) / n)
        yield frame


def _prefetch(frames: Iterator[np.ndarray], depth: int = 8) -> Iterator[np.ndarray]:
    """Run a frame generator in its own thread (OpenCV and x264 both release the GIL)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for f in frames:
                if stop.is_set():
                    return
                q.put(f)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            while True:  # ahead of the frames still queued: a cancel need not wait for them to be encoded
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put(exc)

    thread = threading.Thread(target=produce, name="motion-render", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
