"""The ``openi2v`` pytest fixture (registered through the ``pytest11`` entry point): see
``openi2v.testing``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from openi2v.testing import TestServer


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "openi2v(**options): options of the openi2v fixture's server "
                                       "(scenario=, engine=, balance=, sandbox=, or any setting)")


@pytest.fixture
def openi2v(request: pytest.FixtureRequest) -> Iterator[TestServer]:
    """A running OpenI2V for this test (``.url``, ``.key``); options from ``@pytest.mark.openi2v(...)``."""
    from openi2v.testing import TestServer  # here: every pytest run loads this plugin, few use it

    marker = request.node.get_closest_marker("openi2v")
    with TestServer(**(marker.kwargs if marker else {})) as server:
        yield server
