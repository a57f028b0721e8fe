"""What every engine implements: load once, then run validated jobs into a video file.

Engines know nothing of HTTP or the store. The worker hands them decoded media and
two callables: ``progress(fraction)`` and ``cancelled() -> bool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from PIL import Image

Progress = Callable[[float], None]
CancelCheck = Callable[[], bool]

MOTION_DESCRIPTION = ("CPU camera-motion engine: animates the input image with camera moves read from the prompt "
                      "(zoom, pan, tilt, orbit, roll, dolly zoom, handheld). Not a generative model.")
INSTANT_DESCRIPTION = ("A stand-in for tests and CI: the camera-motion engine at 144p with x264's fastest preset. "
                       "Every clip keeps the contract (duration, frame count, fps, first frame = the input, H.264 "
                       "MP4), about 20 times faster than the camera engine's 720p. Not for viewing.")


class Cancelled(Exception):
    """Raised by an engine when ``cancelled()`` turned true mid-run."""


@dataclass
class EngineJob:
    image: Image.Image  # RGB, upright, validated
    prompt: str
    negative_prompt: str
    guidance_scale: float
    duration: int  # seconds
    seed: int
    out_dir: Path
    last_image: Image.Image | None = None
    audio: tuple[str, bytes] | None = None  # (container format, bytes), validated


@dataclass
class EngineResult:
    video: Path
    width: int
    height: int
    fps: int
    frames: int
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the camera plan; reported to the user
    thumbnail: Path | None = None
    gpu_peak_bytes: int | None = None  # the most GPU memory the job held (metrics), where it ran on a GPU


class Engine(Protocol):
    name: str
    description: str

    def load(self) -> None: ...

    def run(self, job: EngineJob, progress: Progress, cancelled: CancelCheck) -> EngineResult: ...
