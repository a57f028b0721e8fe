from __future__ import annotations

import pytest

from tests.integration.test_api import Api


@pytest.fixture
def api(settings):
    """The app in-process on a fresh data dir, with a key holding $10 and a worker to drain by hand."""
    a = Api(settings)
    yield a
    a.client.close()
