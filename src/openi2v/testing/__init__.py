"""A running OpenI2V for an app's own test suite: one fixture, no set-up.

With openi2v installed, pytest finds the ``openi2v`` fixture by itself (``pytest_plugin.py`` is
registered as a pytest plugin). Each test that asks for it gets a server of its own: a free port, a fresh data directory,
a funded API key, the ``instant`` engine (a contract-correct clip in tens of milliseconds) and,
when asked, a scenario; all of it is torn down after the test. Nothing is shared between tests,
so it works with ``pytest -n``::

    import pytest
    import wavespeed

    def test_my_app_shows_the_video(openi2v):
        client = wavespeed.Client(api_key=openi2v.key, base_url=openi2v.url)
        out = client.run("kwaivgi/kling-v2.5-turbo-pro/image-to-video",
                         {"image": client.upload("photo.jpg"), "prompt": "pan left"})
        assert out["outputs"][0].endswith(".mp4")

    @pytest.mark.openi2v(scenario="failing")
    def test_my_app_tells_the_user_it_failed(openi2v):
        ...

The marker's keywords are ``TestServer``'s: ``scenario`` (a name or settings, README: Scenarios),
``engine``, ``balance`` (USD), ``sandbox`` (reserved test seeds; on by default), and any other
setting by name (``sync_timeout_s=2``). Outside pytest: ``with TestServer(...) as server:``.
Nothing comes from the environment (``OPENI2V_*``): a developer's own database, bucket or public
URL is never touched. Image and webhook URLs on this machine are allowed (an app's own webhook
receiver in its tests).
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

START_S = 60.0  # a guard against a hang
STOP_S = 30.0


class TestServer:
    """The API and a worker in this process (threads), on 127.0.0.1 and a port of its own."""

    __test__ = False  # not a test class, whatever its name says to pytest

    def __init__(self, scenario: str | None = None, engine: str = "instant", balance: float = 100.0,
                 sandbox: bool = True, **settings: Any) -> None:
        self.scenario, self.engine, self.balance = scenario, engine, balance
        self.overrides = dict(sandbox=sandbox, fetch_allow_private=True, **settings)
        self.url = self.key = ""
        self.data_dir: Path | None = None

    def start(self) -> "TestServer":
        import uvicorn

        from openi2v.api.app import create_app
        from openi2v.config import KLING_MODEL
        from openi2v.engines.registry import build_engines
        from openi2v.worker.loop import Worker

        self.data_dir = Path(tempfile.mkdtemp(prefix="openi2v-test-"))
        try:
            settings = _isolated_settings()(**{
                "data_dir": self.data_dir, "engines": {KLING_MODEL: self.engine}, "workers": 0, "short_side": 480,
                "poll_s": 0.05, "heartbeat_s": 0.5, **self.overrides})
            app = create_app(settings)
            self._db = db = app.state.ctx.db
            self.key = self.new_key(self.balance, self.scenario)  # a malformed scenario: refused here
        except BaseException:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))  # the port is ours before the server starts: no race for it
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        # a request still in flight at stop (a sync-mode wait) is given a second, not an unbounded wait
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                     timeout_graceful_shutdown=1))
        self._worker = Worker(settings, db, build_engines(settings))
        self._threads = [threading.Thread(target=lambda: asyncio.run(self._server.serve(sockets=[self._socket])),
                                          name="openi2v-api", daemon=True),
                         threading.Thread(target=self._worker.run, name="openi2v-worker", daemon=True)]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + START_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._threads[0].is_alive():
                self.stop()
                raise RuntimeError("the OpenI2V test server did not start")
            time.sleep(0.01)
        return self

    def new_key(self, balance: float = 100.0, scenario: str | None = None) -> str:
        """Another funded key on the same server (with a scenario of its own, if given)."""
        from openi2v.domain.billing import to_micros
        from openi2v.domain.scenarios import Scenario
        from openi2v.store import AccountStore

        spec = Scenario.parse(scenario).spec if scenario else None
        return AccountStore(self._db).create_key("openi2v.testing", to_micros(balance), spec)[1]

    def stop(self) -> None:
        """Stop the worker and the API, then delete the data directory: nothing of the server is left."""
        self._worker.drain()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(STOP_S)
        self._socket.close()
        alive = [thread.name for thread in self._threads if thread.is_alive()]
        if alive:  # its files are kept: something still uses them
            raise RuntimeError(f"the OpenI2V test server did not stop within {STOP_S:g} s: {', '.join(alive)}")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "TestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@functools.cache
def _isolated_settings():
    from openi2v.config import Settings

    class Isolated(Settings):
        """Settings from the arguments alone: never from the environment or a .env file."""

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **others):
            return (init_settings,)

    return Isolated
