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
