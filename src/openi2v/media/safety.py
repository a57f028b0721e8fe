"""NSFW flags with NudeNet: its wheel ships the detector model, so nothing is downloaded.

A picture is flagged when NudeNet finds an exposed intimate region with at least the
configured confidence. ``has_nsfw_contents`` is true for an output when the input or
any sampled frame of it is flagged.
"""

from __future__ import annotations

import threading
from typing import Iterable

import numpy as np

FLAGGED = frozenset({
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
    "BUTTOCKS_EXPOSED",
})


class SafetyChecker:
    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self._detector = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._detector is None:
                from nudenet import NudeDetector

                self._detector = NudeDetector()
            return self._detector

    def is_nsfw(self, rgb: np.ndarray) -> bool:
        rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])  # NudeNet converts RGBA -> BGR
        detector = self._load()
        with self._lock:  # one ONNX session, shared by worker threads
            found = detector.detect(rgba)
        return any(d["class"] in FLAGGED and d["score"] >= self.threshold for d in found)

    def any_nsfw(self, pictures: Iterable[np.ndarray]) -> bool:
        return any(self.is_nsfw(p) for p in pictures)
