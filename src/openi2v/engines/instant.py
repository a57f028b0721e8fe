"""The instant engine: a contract-correct clip at a tiny size, for test suites and CI.

It is the camera-motion engine (``motion.py``) with two settings changed: a 144 px short
side and x264's ``ultrafast`` preset. Everything an app checks stays as the camera engine
makes it: 5 or 10 seconds, ``duration * fps`` frames at the configured fps, frame 0 the
input image (at the clip's size), H.264 yuv420p MP4 with faststart, the soundtrack when
one is given, a poster, and the same ``details`` (the camera plan) under the name
"instant". At 144p x264 does most of the work, so there is nothing more to cut in the
renderer (bench/instant_vs_camera.py: ~20x faster than the camera engine at 720p).
"""

from __future__ import annotations

from openi2v.engines.base import INSTANT_DESCRIPTION
from openi2v.engines.motion import MotionEngine, MotionSettings

SHORT_SIDE = 144  # px; the smallest common video size (144p); H.264 needs even sides, output_size keeps them even
PRESET = "ultrafast"  # x264's fastest: at 144p it still keeps frame 0 within the CRF's quality


class InstantEngine(MotionEngine):
    name = "instant"
    description = INSTANT_DESCRIPTION
    # Its frames are the input moved, at 144p: the worker's NSFW check reads the input alone (a third of the
    # inferences, and no decoding: most of an instant job's time otherwise).
    nsfw_input_only = True

    @classmethod
    def from_settings(cls, settings) -> "InstantEngine":
        """fps and CRF from the settings (the contract and the first frame's quality); size and speed fixed."""
        return cls(MotionSettings(short_side=SHORT_SIDE, fps=settings.fps, crf=settings.crf, preset=PRESET))
