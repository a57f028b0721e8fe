"""An operator's accounts, through the CLI as they type it: top up, show, and revoke (which
cancels the key's open predictions so they are never run or charged)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from openi2v.cli import app
from tests import pictures
from tests.integration.test_api import Api


@pytest.fixture
def api(settings, monkeypatch):
    monkeypatch.setenv("OPENI2V_DATA_DIR", str(settings.data_dir))  # the CLI reads the environment
    a = Api(settings)
    yield a
    a.client.close()


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def key_id(api: Api) -> str:
    return str(api.app.state.ctx.accounts.authenticate(api.key))


def submit(api: Api) -> str:
    return api.submit({"image": pictures.data_uri(), "prompt": "pan left"}).json()["data"]["id"]


def test_topup_adds_a_credit_the_api_sees_at_once(api):
    code, out = cli("keys", "topup", key_id(api), "2.5")
    assert code == 0 and out.strip() == f"added $2.50 to {key_id(api)}; balance $12.50"
    assert api.balance() == pytest.approx(12.5)


@pytest.mark.parametrize("usd", ["0", "-1", "nan", "inf", "2000000"])
def test_topup_refuses_amounts_that_are_not_money(api, usd):
    code, out = cli("keys", "topup", "--", key_id(api), usd)
    assert code == 2 and "USD must be more than 0" in out
    assert api.balance() == 10.0


def test_show_prints_balance_holds_and_ledger(api):
    done = submit(api)
    api.drain()
    submit(api)  # queued: its quote is held
    cli("keys", "topup", key_id(api), "1")
    code, out = cli("keys", "show", key_id(api))
    lines = out.rstrip("\n").splitlines()
    assert code == 0 and lines[0] == "balance $10.30 (after $0.35 held by open predictions)"
    assert re.fullmatch(r"\S+ \S+\tcredit\t\+1\.00\t", lines[1])  # newest first
    assert re.fullmatch(rf"\S+ \S+\tcharge\t-0\.35\t{done}", lines[2])
    assert re.fullmatch(r"\S+ \S+\tcredit\t\+10\.00\t", lines[3])


def test_an_unknown_key_is_named(api):
    code, out = cli("keys", "show", "oi2v_nothing")
    assert code == 2 and out.strip() == "error: no API key oi2v_nothing"


def test_revoke_refuses_the_key_at_once_and_cancels_its_open_predictions(api):
    queued = [submit(api), submit(api)]
    other = api.new_key(5.0)
    theirs = api.submit({"image": pictures.data_uri(), "prompt": "pan left"}, key=other).json()["data"]["id"]
    revoked = key_id(api)
    code, out = cli("keys", "revoke", revoked)
    assert code == 0 and out.strip() == f"revoked {revoked}; cancelled 2 open prediction(s)"
    assert api.client.get("/api/v3/balance", headers=api.h()).status_code == 401
    store = api.app.state.ctx.predictions
    assert [store.get(pid).status.value for pid in queued] == ["cancelled", "cancelled"]
    api.drain()  # the worker runs only the other key's job
    assert store.get(theirs).status.value == "completed"
    assert [store.get(pid).status.value for pid in queued] == ["cancelled", "cancelled"]
    assert api.app.state.ctx.accounts.balance(int(revoked)) == 10_000_000  # nothing charged, nothing held
    assert api.submit({"image": pictures.data_uri(), "prompt": "x"}).status_code == 401


def test_a_submit_in_flight_when_its_key_is_revoked_creates_nothing(api):
    """Authenticated just before the revoke, stored just after: refused in the store, never run."""
    from openi2v.errors import Unauthorized

    kid = int(key_id(api))
    cli("keys", "revoke", str(kid))
    with pytest.raises(Unauthorized):
        api.app.state.ctx.predictions.create(kid, "m", {"prompt": "x"}, 1, 1)
    assert api.app.state.ctx.predictions.history(kid, 1, 10)[0] == 0
