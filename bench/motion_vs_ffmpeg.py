"""The same 5 s zoom-in on a 1280-px-wide photo: our camera-motion engine vs ffmpeg's zoompan.

Both encode with libx264 at the same preset and CRF. Ours uses no B-frames (media/video.py
says why); zoompan runs twice: with ffmpeg's defaults (B-frames on, what a user of ffmpeg
gets) and with B-frames off (our encoder settings exactly, the like-for-like timing). Prints wall time (median of
alternating rounds), the ratio, and a jitter figure for each: the spread (std) of the
per-frame zoom rate and centre shift, measured from the decoded frames (tracked features,
similarity fit), about the smooth trend (a 9-frame quadratic Savitzky-Golay fit, so
intended easing is not counted). Jitter is measured twice: at the delivered CRF, where
x264's own frame-to-frame noise sets a floor that both share, and lossless (CRF 0), which
shows the motion each renderer makes. Run: .venv/bin/python bench/motion_vs_ffmpeg.py
"""

from __future__ import annotations

import statistics
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

CRF, PRESET, FPS, SECONDS, ROUNDS = 18, "veryfast", 24, 5, 3
# Savitzky-Golay, window 9, quadratic: the intended smooth motion, eased curves included
SMOOTH = np.array([-21, 14, 39, 54, 59, 54, 39, 14, -21]) / 231


def jitter(frames: list[np.ndarray]) -> tuple[float, float]:
    """Spread of the per-frame zoom rate (%/frame) and centre shift (px/frame) about their smooth trend."""
    m = pictures.motions(frames)
    rough = lambda v: float(np.std(v[4:-4] - np.convolve(v, SMOOTH, mode="valid")))  # noqa: E731
    return rough(m[:, 0]) * 100, rough(np.hypot(m[:, 2], m[:, 3]))


def ours(photo, tmp: Path, crf: int) -> tuple[float, Path]:
    engine = MotionEngine(MotionSettings(short_side=720, fps=FPS, crf=crf, preset=PRESET))
    engine.load()
    out = Path(tempfile.mkdtemp(dir=tmp))
    t = time.perf_counter()
    result = engine.run(EngineJob(photo, "zoom in", "", 1.0, SECONDS, 1, out), lambda f: None, lambda: False)
    return time.perf_counter() - t, result.video


def zoompan(src: Path, size: tuple[int, int], tmp: Path, crf: int, bframes: bool) -> tuple[float, Path]:
    n, (w, h) = FPS * SECONDS, size
    zoom_end = float(np.exp(np.log(1.07) * SECONDS))  # the same overall zoom as ours
    vf = (f"zoompan=z='1+({zoom_end - 1:.4f})*on/{n - 1}':d={n}:"
          f"x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':s={w}x{h}:fps={FPS}")
    out = Path(tempfile.mkdtemp(dir=tmp)) / "zoompan.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-vf", vf, "-frames:v", str(n),
           "-c:v", "libx264", "-preset", PRESET, "-crf", str(crf), *([] if bframes else ["-bf", "0"]),
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(out)]  # the same container as ours
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t, out


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    photo = pictures.photo(1280, 853, seed=5)
    src = tmp / "in.png"
    photo.save(src)
    size = output_size(photo.size, 720)
    print(f"output {size[0]}x{size[1]}, {FPS * SECONDS} frames, x264 preset={PRESET} crf={CRF}; "
          f"{ROUNDS} alternating rounds, medians")
    runs = {"ours": lambda crf: ours(photo, tmp, crf),
            "zoompan, ffmpeg defaults": lambda crf: zoompan(src, size, tmp, crf, bframes=True),
            "zoompan, no B-frames": lambda crf: zoompan(src, size, tmp, crf, bframes=False)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(ROUNDS):  # alternate, so drift in the machine's speed hits all alike
        for name, run in runs.items():
            times[name].append(run(CRF)[0])
    mo = statistics.median(times["ours"])
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"wall time  {name:26s} {m:.2f} s  ratio ours/this {mo / m:.2f}  ({', '.join(f'{t:.2f}' for t in ts)})")
    for crf, why in ((CRF, "as delivered"), (0, "lossless: the motion itself, without the encoder's noise")):
        jitters = {name: jitter(read_frames(run(crf)[1])) for name, run in runs.items()}
        jo = jitters["ours"]
        print(f"crf {crf:2d} ({why})")
        for name, j in jitters.items():
            print(f"  {name:26s} zoom jitter {j[0]:.4f} %/frame (ratio ours/this {jo[0] / j[0]:.3f})   "
                  f"shift jitter {j[1]:.4f} px/frame (ratio {jo[1] / j[1]:.3f})")
    print(f"target: ratio <= 1.00 on time, <= 0.10 on jitter; 720p 5 s clip under 2.5 s: "
          f"{'yes' if mo < 2.5 else 'no'} ({mo:.2f} s)")


if __name__ == "__main__":
    main()
