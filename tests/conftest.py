from __future__ import annotations

import pytest

from openi2v.config import Settings
from tests import pictures


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", workers=0, lease_s=5.0, heartbeat_s=0.2, poll_s=0.05,
                    short_side=480)


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    return pictures.png()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database of each kind the store supports. PostgreSQL is the real server that
    `make test` starts (scripts/test-postgres.sh); each test gets its own database, dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db.sqlite'}"
        return
    yield from _postgres_database()


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database, dropped after the test."""
    yield from _postgres_database()


def unavailable(what: str, reason: str) -> None:
    """A server a test needs cannot start: skip, saying why; with OPENI2V_TEST_REQUIRE_SERVERS=1 (`make
    test` sets it) fail instead, so that CI never passes by skipping."""
    import os

    if os.environ.get("OPENI2V_TEST_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{what}: {reason} (OPENI2V_TEST_REQUIRE_SERVERS=1)")
    pytest.skip(f"{what}: {reason}")


def _postgres_database():
    import os
    import secrets

    from sqlalchemy import create_engine, text

    admin_url = os.environ.get("OPENI2V_TEST_POSTGRES_URL")
    if not admin_url:
        unavailable("PostgreSQL", "OPENI2V_TEST_POSTGRES_URL is not set: run `make test`, which starts it")
    name = f"openi2v_t_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
