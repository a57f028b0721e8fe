"""openi2v.testing as an app's suite uses it: the example suite (examples/) run as a user would, with
pytest -n 2; and the server's life: its own port and directory, gone after it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from openi2v.config import KLING_MODEL
from openi2v.testing import TestServer
from tests import pictures

ROOT = Path(__file__).resolve().parents[2]


def test_the_example_suite_passes_under_pytest_n(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2",
                          str(ROOT / "examples" / "test_app_with_openi2v.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout


def test_two_servers_at_once_share_nothing_and_leave_nothing():
    with TestServer() as one, TestServer(scenario="failing") as two:
        assert one.url != two.url and one.data_dir != two.data_dir
        h = {"Authorization": f"Bearer {two.key}"}
        balance = httpx.get(f"{two.url}/api/v3/balance", headers=h).json()["data"]
        assert balance == {"balance": 100.0, "currency": "USD", "scenario": "failing"}
        r = httpx.post(f"{one.url}/api/v3/{KLING_MODEL}", headers={"Authorization": f"Bearer {one.key}"},
                       json={"image": pictures.data_uri(400, 300), "prompt": "pan left"})
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPStatusError):  # a key of one server is unknown to the other
            httpx.get(f"{two.url}/api/v3/balance", headers={"Authorization": f"Bearer {one.key}"}).raise_for_status()
    for server in (one, two):
        assert not server.data_dir.exists()
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/healthz")


def test_the_environment_never_reaches_the_test_server(monkeypatch, tmp_path):
    """A developer's own OPENI2V_* settings (their database, say) are not the test server's."""
    monkeypatch.setenv("OPENI2V_DATABASE_URL", f"sqlite:///{tmp_path / 'production.db'}")
    monkeypatch.setenv("OPENI2V_PUBLIC_URL", "https://production.example")
    with TestServer() as server:
        r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", headers={"Authorization": f"Bearer {server.key}"},
                       json={"image": pictures.data_uri(400, 300), "prompt": "pan left"})
        assert r.json()["data"]["urls"]["get"].startswith(server.url)
    assert not (tmp_path / "production.db").exists()


def test_a_webhook_to_the_apps_own_receiver_on_this_machine_arrives():
    from tests.e2e.test_webhooks import Receiver

    receiver = Receiver()
    with TestServer() as server:
        r = httpx.post(f"{server.url}/api/v3/{KLING_MODEL}", params={"webhook": receiver.url},
                       headers={"Authorization": f"Bearer {server.key}"},
                       json={"image": pictures.data_uri(400, 300), "prompt": "pan left"})
        (_, body), = receiver.wait(1)
    assert r.json()["data"]["id"] in body.decode()
