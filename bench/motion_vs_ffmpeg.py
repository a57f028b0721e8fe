"""The same 5 s zoom-in on a 1280-px-wide photo: our camera-motion engine vs ffmpeg's zoompan.

Both encode with libx264 at the same preset and CRF. Prints wall time, the ratio, and a
jitter figure for each: the spread (std) of the per-frame zoom rate and centre shift,
measured from the decoded frames, after removing the intended smooth motion (a 9-frame
moving average). Run: .venv/bin/python bench/motion_vs_ffmpeg.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.engines.base import EngineJob  # noqa: E402
from openi2v.engines.motion import MotionEngine, MotionSettings, output_size  # noqa: E402
from openi2v.media.video import read_frames  # noqa: E402
from tests import pictures  # noqa: E402

CRF, PRESET, FPS, SECONDS = 18, "veryfast", 24, 5


def jitter(frames: list[np.ndarray]) -> tuple[float, float]:
    m = pictures.motions(frames)
    smooth = lambda v: np.convolve(v, np.ones(9) / 9, mode="valid")  # noqa: E731
    rough = lambda v: float(np.std(v[4:-4] - smooth(v)))  # noqa: E731
    return rough(m[:, 0]) * 100, rough(np.hypot(m[:, 2], m[:, 3]))  # zoom rate in %/frame, shift in px/frame


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    photo = pictures.photo(1280, 853, seed=5)
    src = tmp / "in.png"
    photo.save(src)
    w, h = output_size(photo.size, 720)
    n = FPS * SECONDS

    engine = MotionEngine(MotionSettings(short_side=720, fps=FPS, crf=CRF, preset=PRESET))
    engine.load()
    t = time.perf_counter()
    ours = engine.run(EngineJob(photo, "zoom in", "", 1.0, SECONDS, 1, tmp), lambda f: None, lambda: False)
    t_ours = time.perf_counter() - t

    zoom_end = float(np.exp(np.log(1.07) * SECONDS))  # the same overall zoom as ours
    vf = (f"zoompan=z='1+({zoom_end - 1:.4f})*on/{n - 1}':d={n}:"
          f"x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':s={w}x{h}:fps={FPS}")
    theirs = tmp / "zoompan.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf", vf, "-frames:v", str(n),
           "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-pix_fmt", "yuv420p", str(theirs)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    t_ffmpeg = time.perf_counter() - t

    jo, jf = jitter(read_frames(ours.video)), jitter(read_frames(theirs))
    print(f"output {w}x{h}, {n} frames, x264 preset={PRESET} crf={CRF}")
    print(f"wall time   ours {t_ours:.2f} s   zoompan {t_ffmpeg:.2f} s   ratio ours/zoompan {t_ours / t_ffmpeg:.2f}")
    print(f"zoom jitter ours {jo[0]:.4f} %/frame   zoompan {jf[0]:.4f} %/frame   ratio {jo[0] / jf[0]:.3f}")
    print(f"shift jitter ours {jo[1]:.4f} px/frame   zoompan {jf[1]:.4f} px/frame   ratio {jo[1] / jf[1]:.3f}")
    print(f"target: ratio <= 1.00 on time, <= 0.10 on jitter; 720p 5 s clip under 2.5 s: "
          f"{'yes' if t_ours < 2.5 else 'no'} ({t_ours:.2f} s)")


if __name__ == "__main__":
    main()
