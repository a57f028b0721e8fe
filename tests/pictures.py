"""Test pictures made in code (no files, no downloads) and measurements on decoded video."""

from __future__ import annotations

import base64
import io
import math

import cv2
import numpy as np
from PIL import Image


def photo(width: int = 960, height: int = 640, seed: int = 0) -> Image.Image:
    """A photo-like RGB picture: gradient sky, shapes with edges, fine texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.dstack([80 + 100 * x / width, 120 + 80 * y / height, 200 - 90 * x / width]).astype(np.float32)
    for _ in range(70):
        color = rng.uniform(0, 255, 3).tolist()
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        r = int(rng.uniform(8, min(width, height) / 8))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), r, color, -1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, -1, lineType=cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)  # a lens is never perfectly sharp
    grain = cv2.GaussianBlur(rng.normal(0, 14, (height, width)).astype(np.float32), (0, 0), 1.2)
    return Image.fromarray(np.clip(img + grain[..., None], 0, 255).astype(np.uint8))  # luma texture, like a photo


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png(width: int = 960, height: int = 640, seed: int = 0) -> bytes:
    return encode(photo(width, height, seed))


def data_uri(width: int = 640, height: int = 426) -> str:
    """A photo as the API's ``image`` field takes it inline."""
    return "data:image/png;base64," + base64.b64encode(png(width, height)).decode()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def step_motion(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Similarity transform a -> b from tracked features: (log scale, angle deg (+ clockwise), tx, ty),
    the translation being how far the picture's centre moved."""
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    pts = cv2.goodFeaturesToTrack(ga, maxCorners=400, qualityLevel=0.01, minDistance=8)
    nxt, status, _ = cv2.calcOpticalFlowPyrLK(ga, gb, pts, None, winSize=(21, 21), maxLevel=3)
    ok = status.ravel() == 1
    m, _ = cv2.estimateAffinePartial2D(pts[ok], nxt[ok], method=cv2.LMEDS)
    scale = math.hypot(m[0, 0], m[1, 0])
    h, w = ga.shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    tx, ty = m[:, :2] @ centre + m[:, 2] - centre
    return math.log(scale), math.degrees(math.atan2(m[1, 0], m[0, 0])), float(tx), float(ty)


def motions(frames: list[np.ndarray], stride: int = 1) -> np.ndarray:
    """Per-step motion over the clip, shape (steps, 4)."""
    return np.array([step_motion(frames[i], frames[i + stride]) for i in range(0, len(frames) - stride, stride)])
