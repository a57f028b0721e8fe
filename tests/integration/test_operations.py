"""What an operator reads: /readyz, /metrics, and JSON log lines."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from openi2v import logs
from openi2v.config import KLING_MODEL
from tests.integration.test_api import data_uri


def scrape(api) -> dict[tuple[str, tuple], float]:
    r = api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def test_ready_when_the_database_answers_at_the_current_schema(api):
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_not_ready_while_the_schema_is_behind_the_code(api):
    with api.db.write() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0003'"))
    r = api.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["reason"].startswith("the database schema is at 0003, not ") and "openi2v migrate" in r.text


def test_not_ready_when_the_database_does_not_answer(api):
    from openi2v.store import Database

    # nothing listens on port 9 (discard): connecting is refused at once
    api.app.state.ctx.db = Database("postgresql+psycopg://nobody:secret@127.0.0.1:9/none?connect_timeout=2")
    r = api.client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "the database does not answer (OperationalError)"
    assert "secret" not in r.text


def test_queue_depth_counts_waiting_predictions_per_model_and_zero_for_an_idle_one(api, photo_png):
    before = scrape(api)
    assert before[("openi2v_queue_depth", (("model", KLING_MODEL),))] == 0  # served, idle: reported as 0
    for _ in range(2):
        assert api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).status_code == 200
    during = scrape(api)
    assert during[("openi2v_queue_depth", (("model", KLING_MODEL),))] == 2
    assert during[("openi2v_running", (("model", KLING_MODEL),))] == 0
    api.drain()
    after = scrape(api)
    assert after[("openi2v_queue_depth", (("model", KLING_MODEL),))] == 0
    ended = ("openi2v_predictions_ended_total", (("model", KLING_MODEL), ("status", "completed")))
    assert after[ended] - before.get(ended, 0) == 2
    waits = ("openi2v_queue_wait_seconds_count", (("model", KLING_MODEL),))
    inference = ("openi2v_inference_seconds_count", (("model", KLING_MODEL),))
    assert after[waits] - before.get(waits, 0) == 2
    assert after[inference] - before.get(inference, 0) == 2
    inference_sum = ("openi2v_inference_seconds_sum", (("model", KLING_MODEL),))
    assert after[inference_sum] > before.get(inference_sum, 0)


def test_a_cancel_is_counted_as_ended_cancelled(api, photo_png):
    key = ("openi2v_predictions_ended_total", (("model", KLING_MODEL), ("status", "cancelled")))
    before = scrape(api).get(key, 0)
    pid = api.submit({"image": data_uri(photo_png), "prompt": "pan left"}).json()["data"]["id"]
    assert api.client.post(f"/api/v3/predictions/{pid}/cancel", headers=api.h()).status_code == 200
    assert scrape(api)[key] - before == 1


def test_json_log_lines_carry_the_prediction_id(capsys):
    from openi2v.config import Settings

    logs.setup_logging(Settings(log_format="json"))
    try:
        log = logging.getLogger("openi2v.test")
        token = logs.prediction.set("a" * 32)
        try:
            log.info("rendering %d frames", 120)
        finally:
            logs.prediction.reset(token)
        log.warning("about another", extra={"prediction_id": "b" * 32})
        log.info("about none")
    finally:
        logging.basicConfig(force=True)  # back to pytest's own capture
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["message"], line.get("prediction_id")) for line in lines] == [
        ("rendering 120 frames", "a" * 32), ("about another", "b" * 32), ("about none", None)]
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "openi2v.test" and lines[0]["time"].endswith("Z")


def test_ready_while_the_schema_is_ahead_of_the_code_during_a_rolling_upgrade(api):
    with api.db.write() as conn:  # `openi2v migrate` of the next release ran before this replica was replaced
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert api.client.get("/readyz").status_code == 200
