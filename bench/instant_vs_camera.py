"""The instant engine against the camera engine, both with the default settings, in one run.

1. ``engine.run`` for the same 5 s clip of a 1280x853 photo: the camera engine (720p, x264
   veryfast) and the instant engine (144p, ultrafast), alternating rounds; medians, the ratio.
2. A whole prediction through a real Worker (``run_once``: fetch the image, run the engine,
   the NudeNet NSFW check, store the output, record the result) with each engine, split into
   the engine, the NSFW check and the rest. The NudeNet model loads on the first check, so a
   warm-up job runs first and its time is printed apart.

Run: .venv/bin/python bench/instant_vs_camera.py
"""

from __future__ import annotations

import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from openi2v.config import KLING_MODEL, Settings  # noqa: E402
from openi2v.engines.base import EngineJob  # noqa: E402
from openi2v.engines.registry import build_engines  # noqa: E402
from openi2v.worker.loop import Worker  # noqa: E402
from tests import pictures  # noqa: E402
from tests.integration.test_api import Api  # noqa: E402

ENGINE_ROUNDS, WORKER_ROUNDS, SECONDS, PROMPT = 7, 5, 5, "slow zoom in, then pan right"


class TimedWorker(Worker):
    """The real worker, noting how long each job's engine run and NSFW check took."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.nsfw_s: list[float] = []

    def _nsfw(self, job, video, input_only):
        t = time.perf_counter()
        try:
            return super()._nsfw(job, video, input_only)
        finally:
            self.nsfw_s.append(time.perf_counter() - t)


def median(ts: list[float]) -> str:
    return f"{statistics.median(ts) * 1000:7.1f} ms"


def engine_runs(photo, tmp: Path) -> dict[str, list[float]]:
    engines = {name: build_engines(Settings(engines={KLING_MODEL: name}))[KLING_MODEL]
               for name in ("motion", "instant")}
    for engine in engines.values():
        engine.load()
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(ENGINE_ROUNDS):  # alternate, so drift in the machine's speed hits both alike
        for name, engine in engines.items():
            job = EngineJob(photo, PROMPT, "", 1.0, SECONDS, 7, Path(tempfile.mkdtemp(dir=tmp)))
            t = time.perf_counter()
            engine.run(job, lambda f: None, lambda: False)
            times[name].append(time.perf_counter() - t)
    return times


def worker_runs(name: str, image_uri: str, tmp: Path) -> None:
    settings = Settings(data_dir=Path(tempfile.mkdtemp(dir=tmp)), workers=0, engines={KLING_MODEL: name})
    api = Api(settings)
    worker = TimedWorker(settings, api.db, build_engines(settings))
    for engine in set(worker.engines.values()):
        engine.load()
    total: list[float] = []
    inference: list[float] = []
    for i in range(WORKER_ROUNDS + 1):
        pid = api.submit({"image": image_uri, "prompt": PROMPT, "duration": SECONDS}).json()["data"]["id"]
        t = time.perf_counter()
        assert worker.run_once()
        total.append(time.perf_counter() - t)
        data = api.result(pid).json()["data"]
        assert data["status"] == "completed", data
        inference.append(data["timings"]["inference"] / 1000)
    api.client.close()
    print(f"  {name:8s} first job (NudeNet loads) {total[0] * 1000:7.1f} ms, of which NSFW check "
          f"{worker.nsfw_s[0] * 1000:7.1f} ms")
    total, inference, nsfw = total[1:], inference[1:], worker.nsfw_s[1:]
    rest = [t - e - n for t, e, n in zip(total, inference, nsfw)]
    share = statistics.median([n / t for n, t in zip(nsfw, total)])
    print(f"  {name:8s} run_once {median(total)} = engine {median(inference)} + NSFW check {median(nsfw)} "
          f"+ the rest {median(rest)}; NSFW check {share:.0%} of the job")


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    photo = pictures.photo(1280, 853, seed=5)
    print(f"engine.run, {SECONDS} s clip of a {photo.size[0]}x{photo.size[1]} photo, default settings; "
          f"{ENGINE_ROUNDS} alternating rounds, medians")
    times = engine_runs(photo, tmp)
    for name, ts in times.items():
        print(f"  {name:8s} {median(ts)}  ({', '.join(f'{t * 1000:.0f}' for t in ts)} ms)")
    ratio = statistics.median(times["motion"]) / statistics.median(times["instant"])
    print(f"  ratio camera/instant {ratio:.1f}x  (target >= 10x: {'yes' if ratio >= 10 else 'no'})")
    print(f"a whole prediction through a real Worker (run_once), {WORKER_ROUNDS} jobs after a warm-up, medians")
    uri = "data:image/png;base64," + base64.b64encode(pictures.encode(photo)).decode()
    for name in ("motion", "instant"):
        worker_runs(name, uri, tmp)


if __name__ == "__main__":
    main()
