"""The whole API on each database the store supports: submit, poll, complete, charge, history."""

from __future__ import annotations


from fastapi.testclient import TestClient

from openi2v.api.app import create_app
from openi2v.config import KLING_MODEL
from openi2v.domain.billing import to_micros
from openi2v.engines.registry import build_engines
from openi2v.store import AccountStore
from openi2v.worker.loop import Worker
from tests import pictures


def test_a_prediction_round_trip(settings, database_url):
    settings = settings.model_copy(update={"database_url": database_url})
    app = create_app(settings)
    db = app.state.ctx.db
    key = AccountStore(db).create_key("t", to_micros(1.0))[1]
    h = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        image = pictures.data_uri()
        created = client.post(f"/api/v3/{KLING_MODEL}", json={"image": image, "prompt": "pan left", "seed": 9},
                              headers=h).json()["data"]
        assert client.get(created["urls"]["get"], headers=h).json()["data"]["queue_position"] == 0
        assert Worker(settings, db, build_engines(settings)).run_once()
        done = client.get(created["urls"]["get"], headers=h).json()["data"]
        assert (done["status"], done["seed"], done["cost"]) == ("completed", 9, 0.35)
        assert client.get(done["outputs"][0]).content[4:8] == b"ftyp"
        assert client.get("/api/v3/balance", headers=h).json()["data"]["balance"] == 0.65
        page = client.post("/api/v3/predictions", json={"status": "completed"}, headers=h).json()["data"]
        assert [p["id"] for p in page["items"]] == [created["id"]]
        poor = client.post(f"/api/v3/{KLING_MODEL}", json={"image": image, "prompt": "x", "duration": 10}, headers=h)
        assert poor.status_code == 403 and poor.json()["message"] == "insufficient balance"
    db.dispose()


def test_the_migrations_build_the_schema_the_code_uses(database_url):
    """Alembic's own comparison: after every migration, the tables, columns and indexes are
    exactly those of store/schema.py (a column added to one and not the other fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from openi2v.store import Database
    from openi2v.store.schema import metadata

    db = Database(database_url)
    db.migrate()
    with db.write() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    db.dispose()
    assert diff == []
