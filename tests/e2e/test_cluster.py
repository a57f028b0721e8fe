"""A cluster on one machine: two API processes (``serve --workers 0``) and three ``openi2v worker``
processes, each with a data directory of its own, sharing only a PostgreSQL database and an S3
bucket (moto's server, spoken to over HTTP). 100 predictions go in through both APIs, uploads
included; one worker is killed with SIGKILL mid-job and one is stopped with SIGTERM. Every
prediction completes exactly once, every output downloads from the URL the API returned, and every
charge is exact.

The engine holds each render at 10 % until the test opens its gate, so the signals always find
jobs mid-render, however fast or slow the machine."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from openi2v.config import KLING_MODEL
from tests import pictures
from tests.e2e.server import Server, Workers, cli, env_for
from tests.s3_server import s3_bucket, s3_endpoint  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e
PREDICTIONS = 100
PRICE = 0.35  # 5 s of the Kling model


def test_two_apis_and_three_workers_share_only_the_database_and_the_bucket(tmp_path, postgres_url, s3_bucket):
    gate = tmp_path / "gate"
    shared = dict(OPENI2V_DATABASE_URL=postgres_url, OPENI2V_STORAGE="s3", OPENI2V_S3_BUCKET=s3_bucket.name,
                  OPENI2V_S3_ENDPOINT_URL=s3_bucket.endpoint, OPENI2V_S3_PREFIX="cluster/",
                  OPENI2V_ENGINES=json.dumps({KLING_MODEL: "tests.engine_fixtures:Gated"}),
                  GATED_ENGINE_GATE=str(gate), OPENI2V_DRAIN_S="0")
    apis = [Server(tmp_path / f"api-{i}", workers=0, **shared) for i in range(2)]
    workers = [_workers(tmp_path, i, shared) for i in range(3)]
    try:
        for process in apis + workers:
            process.start()
        key = cli(apis[0].env, "keys", "create", "--name", "cluster", "--balance", "100").strip().splitlines()[-1]
        h = {"Authorization": f"Bearer {key}"}
        ids = [_submit(apis[i % 2], h, with_upload=i % 4 == 0) for i in range(PREDICTIONS)]

        rendering = _wait_for_running(apis[0], h, ids, 3)  # each worker holds one job at its gate
        workers[0].signal(signal.SIGKILL)  # a machine lost: its job comes back when its lease expires
        workers[1].signal(signal.SIGTERM)  # a worker stopped: it hands its job back at once (drain 0 s)
        assert workers[0].wait() == -signal.SIGKILL and workers[1].wait() == 0
        workers += [_workers(tmp_path, i, shared).start() for i in (3, 4)]
        gate.touch()

        done = _wait_until_completed(apis, h, ids)
        assert {d["status"] for d in done.values()} == {"completed"}
        for pid, d in done.items():  # every output from the URL the API returned: the bucket's
            assert d["outputs"][0].startswith(s3_bucket.endpoint)
            video = httpx.get(d["outputs"][0])
            assert video.status_code == 200 and video.content[4:8] == b"ftyp", pid
        balance = httpx.get(f"{apis[1].url}/api/v3/balance", headers=h).json()["data"]["balance"]
        assert balance == pytest.approx(100 - PREDICTIONS * PRICE, abs=1e-9)

        rows = _rows(postgres_url)
        assert sorted(rows["charges"]) == sorted(ids)  # one charge per prediction: none twice, none missed
        assert all(amount == -round(PRICE * 1e6) for amount in rows["amounts"])
        attempts = {pid: rows["attempts"][pid] for pid in rendering}
        # the killed worker's job ran again; the stopped worker's was handed back with its attempt given back
        assert sum(n >= 2 for n in attempts.values()) >= 1, attempts
        outputs = {k for pid in ids for k in rows["outputs"][pid]}
        assert {n.removeprefix("cluster/") for n in s3_bucket.names() if "/files/" in f"/{n}"} == outputs
        for data_dir in tmp_path.iterdir():  # nothing of a prediction on any machine's own disk
            assert not (data_dir / "outputs").exists() and not (data_dir / "uploads").exists()
    finally:
        for process in workers + apis:
            process.stop()


def _workers(tmp_path: Path, i: int, shared: dict[str, str]) -> Workers:
    data_dir = tmp_path / f"worker-{i}"
    data_dir.mkdir(parents=True, exist_ok=True)
    return Workers(env_for(data_dir, **shared), log=data_dir / "workers.log")


def _submit(api: Server, h: dict, with_upload: bool) -> str:
    image = pictures.png(400, 300)
    if with_upload:  # the ticket flow: the bytes go straight to the bucket, never through the API
        ticket = httpx.post(f"{api.url}/api/v3/media/uploads", headers=h,
                            json={"filename": "photo.png", "content_type": "image/png", "size": len(image)})
        upload = ticket.json()["data"]
        put = httpx.put(upload["upload"]["url"], content=image, headers=upload["upload"]["headers"])
        assert put.status_code == 200, put.text
        ref = upload["download_url"]
    else:
        ref = pictures.data_uri(400, 300)
    r = httpx.post(f"{api.url}/api/v3/{KLING_MODEL}", headers=h, json={"image": ref, "prompt": "pan left"})
    assert r.status_code == 200, r.text
    return r.json()["data"]["id"]


def _result(api: Server, h: dict, pid: str) -> dict:
    return httpx.get(f"{api.url}/api/v3/predictions/{pid}/result", headers=h).json()["data"]


def _wait_for_running(api: Server, h: dict, ids: list[str], n: int) -> list[str]:
    deadline = time.monotonic() + 120  # a guard against a hang, not a speed limit
    while time.monotonic() < deadline:
        running = [pid for pid in ids if (d := _result(api, h, pid))["status"] == "processing" and d["progress"]]
        if len(running) == n:
            return running
        time.sleep(0.2)
    raise AssertionError(f"{n} jobs never ran at once")


def _wait_until_completed(apis: list[Server], h: dict, ids: list[str]) -> dict[str, dict]:
    done: dict[str, dict] = {}
    deadline = time.monotonic() + 600  # a guard against a hang, not a speed limit
    while len(done) < len(ids):
        assert time.monotonic() < deadline, f"{len(ids) - len(done)} of {len(ids)} never finished"
        for i, pid in enumerate(sorted(set(ids) - set(done))):
            d = _result(apis[i % 2], h, pid)
            if d["status"] in ("completed", "failed", "cancelled"):
                done[pid] = d
        time.sleep(0.5)
    return done


def _rows(url: str) -> dict:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            charges = conn.execute(text("SELECT prediction_id, amount_micros FROM ledger WHERE kind = 'charge'")).all()
            predictions = conn.execute(text("SELECT id, attempts, outputs, details FROM predictions")).all()
    finally:
        engine.dispose()
    return {"charges": [c.prediction_id for c in charges], "amounts": [c.amount_micros for c in charges],
            "attempts": {p.id: p.attempts for p in predictions},
            "outputs": {p.id: [*p.outputs, *([p.details["poster"]] if "poster" in p.details else [])]
                        for p in predictions}}
