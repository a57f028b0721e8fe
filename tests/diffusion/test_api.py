"""Diffusion presets behind the v3 API: a tiny Wan model serving the Kling id, through a worker."""

from __future__ import annotations


import pytest
from fastapi.testclient import TestClient

from openi2v.api.app import create_app
from openi2v.config import KLING_MODEL, Settings
from openi2v.domain.billing import to_micros
from openi2v.engines.registry import build_engines, resolve
from openi2v.media.video import probe
from openi2v.store import AccountStore
from openi2v.worker.isolated import EngineSpec, IsolatedEngine
from openi2v.worker.loop import Worker
from tests import pictures, tiny_models
from tests.engine_fixtures import Flaky

PRESET = "wan2.1-i2v-14b-480p"


@pytest.fixture(scope="module")
def weights_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    tiny_models.save("wan2.1", root / PRESET)
    return root


@pytest.fixture
def diffusion_settings(settings, weights_root) -> Settings:
    return settings.model_copy(update=dict(engines={KLING_MODEL: PRESET}, weights_dir=weights_root, device="cpu",
                                           diffusion_steps=2, diffusion_size="48x32", speedups="sdpa"))


def image_uri() -> str:
    return pictures.data_uri()


class Service:
    def __init__(self, settings, engines=None):
        self.app = create_app(settings)
        self.client = TestClient(self.app)
        db = self.app.state.ctx.db
        self.key = AccountStore(db).create_key("t", to_micros(10))[1]
        self.engines = engines or build_engines(settings)
        self.worker = Worker(settings, db, self.engines)

    def submit(self, model, **body):
        r = self.client.post(f"/api/v3/{model}", json={"image": image_uri(), "prompt": "slow zoom in", **body},
                             headers={"Authorization": f"Bearer {self.key}"})
        assert r.status_code == 200, r.text
        return r.json()["data"]["id"]

    def result(self, pid):
        return self.client.get(f"/api/v3/predictions/{pid}/result",
                               headers={"Authorization": f"Bearer {self.key}"}).json()["data"]

    def drain(self):
        while self.worker.run_once():
            pass

    def close(self):
        for e in set(self.engines.values()):
            if isinstance(e, IsolatedEngine):
                e.close()
        self.client.close()


def download(svc, url, tmp_path):
    path = tmp_path / url.rsplit("/", 1)[-1]
    path.write_bytes(svc.client.get(url).content)
    return probe(path)


def test_a_tiny_wan_serves_the_kling_id_for_5_and_10_seconds(diffusion_settings, tmp_path):
    svc = Service(diffusion_settings)
    try:
        five, ten = svc.submit(KLING_MODEL, duration=5, seed=3), svc.submit(KLING_MODEL, duration=10, seed=3)
        svc.drain()
        for pid, frames in ((five, 81), (ten, 161)):
            d = svc.result(pid)
            assert d["status"] == "completed", d["error"]
            info = download(svc, d["outputs"][0], tmp_path)
            assert (info.codec, info.frames, info.fps, info.width, info.height) == ("h264", frames, 16, 48, 32)
            assert abs(info.duration - frames / 16) < 0.1
            assert d["details"]["engine"] == PRESET and d["details"]["cfg"] == 5.0
        assert svc.result(ten)["cost"] == 0.70
    finally:
        svc.close()


def test_each_preset_is_also_served_under_its_own_id(diffusion_settings):
    svc = Service(diffusion_settings)
    try:
        models = svc.client.get("/api/v3/models", headers={"Authorization": f"Bearer {svc.key}"}).json()["data"]
        ids = {m["model_id"]: m for m in models}
        own = f"openi2v/{PRESET}/image-to-video"
        assert set(ids) == {KLING_MODEL, own}
        assert ids[own]["engine"] == PRESET and "Diffusion engine" in ids[own]["description"]
        pid = svc.submit(own, seed=1)
        svc.drain()
        assert svc.result(pid)["status"] == "completed"
    finally:
        svc.close()


def test_auto_serves_a_preset_only_with_its_weights_and_device(settings, weights_root):
    assert resolve(settings.model_copy(update=dict(engines={KLING_MODEL: "auto"})))[KLING_MODEL] == "motion"
    with_weights = settings.model_copy(update=dict(engines={KLING_MODEL: "auto"}, auto_preset=PRESET,
                                                   weights_dir=weights_root))
    assert resolve(with_weights)[KLING_MODEL] == "motion"  # no GPU here for the default device, cuda
    assert resolve(with_weights.model_copy(update={"device": "cpu"}))[KLING_MODEL] == PRESET


def test_a_crashing_engine_fails_its_prediction_and_the_next_one_runs(settings):
    flaky = IsolatedEngine(EngineSpec("flaky", Flaky))
    svc = Service(settings, engines={KLING_MODEL: flaky})
    try:
        crashed, fine = svc.submit(KLING_MODEL, prompt="crash"), svc.submit(KLING_MODEL, prompt="pan left")
        svc.drain()
        d = svc.result(crashed)
        assert d["status"] == "failed" and d["code"] == 1403 and "process died" in d["error"]
        assert d["cost"] == 0.0
        assert svc.result(fine)["status"] == "completed"
    finally:
        svc.close()


def test_a_running_tiny_wan_stops_at_its_next_step_when_cancelled(diffusion_settings):
    """In this process, so that holding its first progress report holds its denoising loop too."""
    import threading

    from openi2v.engines.registry import in_process_engine
    from tests.engine_fixtures import HeldUntilCancelled

    settings = diffusion_settings.model_copy(update={"diffusion_steps": 6})
    held = HeldUntilCancelled(in_process_engine(settings, PRESET))
    held.load()  # as Worker.run does before its first claim
    svc = Service(settings, engines={KLING_MODEL: held})
    try:
        pid = svc.submit(KLING_MODEL)
        running = threading.Thread(target=svc.worker.run_once, daemon=True)
        running.start()
        assert held.started.wait(120), "the first step never ended"
        r = svc.client.post(f"/api/v3/predictions/{pid}/cancel", headers={"Authorization": f"Bearer {svc.key}"})
        assert r.json()["data"]["status"] == "cancelled"
        running.join(300)
        assert not running.is_alive()
        assert held.ended == "Cancelled" and held.reports_after == 0  # of 6 steps, one ran: it stopped at the next
        data = svc.result(pid)
        assert (data["status"], data["cost"], data["outputs"]) == ("cancelled", 0.0, [])
    finally:
        svc.close()
