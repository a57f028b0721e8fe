"""Scenario specs and the plans they draw (domain/scenarios.py)."""

from __future__ import annotations

import pytest

from openi2v.domain.scenarios import NAMED, TEST_SEEDS, Plan, Scenario, plan_for


def test_a_spec_of_settings_parses_into_rates_and_ranges():
    s = Scenario.parse("fail=0.25, error=boom, code=1200, nsfw=0.5, render=2-8, queue=3, submit429=0.1, "
                       "poll_errors=2, webhook_failures=3")
    assert (s.fail, s.error, s.code, s.nsfw, s.render, s.queue) == (0.25, "boom", 1200, 0.5, (2.0, 8.0), (3.0, 3.0))
    assert (s.submit429, s.poll_errors, s.webhook_failures) == (0.1, 2, 3)


@pytest.mark.parametrize("name", list(NAMED))
def test_every_named_scenario_parses_and_keeps_its_name(name):
    assert Scenario.parse(name).spec == name


@pytest.mark.parametrize("spec, message", [
    ("fail=2", "fail: must be a rate between 0 and 1 (got 2)"),
    ("render=9-3", "render: must be seconds S or a range A-B with 0 <= A <= B <= 3600.0 (got 9-3)"),
    ("poll_errors=11", "poll_errors: must be a whole number from 0 to 10 (got 11)"),
    ("code=12", "code: must be a four-digit task code such as 1403 (got 12)"),
    ("explode=1", "'explode=1': expected one of failing"),
    ("failing!", "'failing!': expected one of failing"),
    ("", "empty: give a name"),
])
def test_a_bad_spec_says_which_part_is_wrong(spec, message):
    with pytest.raises(ValueError) as e:
        Scenario.parse(spec)
    assert str(e.value).startswith(message)


def test_one_seed_one_plan_and_rates_hold_over_many_seeds():
    s = Scenario.parse("fail=0.3,nsfw=0.2,render=1-3")
    assert all(s.plan(seed) == s.plan(seed) for seed in range(50))
    plans = [s.plan(seed) for seed in range(2000)]
    failed = sum(p.fail for p in plans) / len(plans)
    assert 0.25 < failed < 0.35
    assert not any(p.fail and p.nsfw for p in plans)  # a failed prediction has no output to flag
    assert all(1 <= p.render_s <= 3 for p in plans)


def test_a_plan_stores_only_what_it_simulates_and_reads_back():
    plan = Plan(fail=True, render_s=2.5)
    assert plan.to_json() == {"fail": True, "render_s": 2.5}
    assert Plan.from_json(plan.to_json()) == plan
    assert Plan.from_json({**plan.to_json(), "polls_failed": 1}) == plan  # the poll counter kept beside it
    assert not Plan() and plan


def test_reserved_seeds_act_only_in_the_sandbox_and_win_over_the_keys_scenario():
    assert plan_for(4000000001, None, sandbox=True) == TEST_SEEDS[4000000001]
    assert not plan_for(4000000001, None, sandbox=False)  # a server without scenarios: a seed is a seed
    assert plan_for(4000000002, "failing", sandbox=True) == Plan(nsfw=True)
    assert plan_for(7, "failing", sandbox=False).fail
