"""Scenarios: the API made to fail on purpose, so that an app can test its unhappy paths.

Two ways in, both reachable through the official SDKs unchanged:

- per API key (``openi2v keys create --scenario SPEC``, ``keys set-scenario``): every prediction of
  the key follows the scenario, each outcome drawn from the prediction's seed (the same seed, the
  same outcome);
- per request, on a server started with ``OPENI2V_SANDBOX=true``: a reserved seed (``TEST_SEEDS``,
  in the spirit of payment test card numbers) forces one outcome for that prediction only.

A SPEC is a name from ``NAMED``, or comma-separated settings (``fail=0.2,render=2-8``):

    fail=P              fails with probability P (0..1), with error=TEXT and code=N (task code)
    nsfw=P              completes with has_nsfw_contents [true] with probability P
    render=S | A-B      takes S seconds (or between A and B) longer to render, with progress
    queue=S | A-B       held in the queue that long before a worker may start it
    submit429=P         a submit is refused with 429 (Retry-After: 1) with probability P (each try anew)
    poll_errors=N       the first N polls of each prediction answer 503, then 429 (the SDKs retry both)
    webhook_failures=N  the first N deliveries of each webhook fail (and are retried as any failure)

What a scenario decides for one prediction is a ``Plan``, stored with the prediction when it is
made; the worker, the poll and the webhook sender read it there. A plan's outcomes are billed as
real ones: a failed prediction costs nothing, a flagged one costs its price.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields, replace

from openi2v.errors import OpenI2VError

SIMULATED_ERROR = "simulated failure (scenario)"


@dataclass(frozen=True)
class Plan:
    """What happens to one prediction. Empty (``not plan``) when nothing is simulated."""

    fail: bool = False
    error: str = SIMULATED_ERROR
    code: int = 1403
    nsfw: bool = False
    render_s: float = 0.0
    queue_s: float = 0.0
    submit_429: bool = False
    poll_errors: int = 0
    webhook_failures: int = 0

    def __bool__(self) -> bool:
        return self != Plan()

    def to_json(self) -> dict:
        """The fields that differ from an empty plan (as stored with the prediction)."""
        empty = Plan()
        return {k: v for k, v in asdict(self).items() if v != getattr(empty, k)}

    @classmethod
    def from_json(cls, data: dict | None) -> "Plan":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass(frozen=True)
class Scenario:
    """Rates and ranges; ``plan(seed)`` draws one prediction's outcomes from them."""

    fail: float = 0.0
    error: str = SIMULATED_ERROR
    code: int = 1403
    nsfw: float = 0.0
    render: tuple[float, float] = (0.0, 0.0)
    queue: tuple[float, float] = (0.0, 0.0)
    submit429: float = 0.0
    poll_errors: int = 0
    webhook_failures: int = 0
    spec: str = field(default="", compare=False)  # as given: what a key's label shows

    def plan(self, seed: int) -> Plan:
        """One prediction's outcomes, from its seed (the same seed, the same outcomes); but a refused submit
        is drawn afresh each time, so that a client's retry of the same request may pass."""
        rng = random.Random(seed)  # the draws in a fixed order: one seed, one plan
        fail, nsfw = rng.random() < self.fail, rng.random() < self.nsfw
        submit = _fresh.random() < self.submit429
        render, queue = rng.uniform(*self.render), rng.uniform(*self.queue)
        return Plan(fail=fail, error=self.error, code=self.code, nsfw=nsfw and not fail, render_s=round(render, 3),
                    queue_s=round(queue, 3), submit_429=submit, poll_errors=self.poll_errors,
                    webhook_failures=self.webhook_failures)

    @classmethod
    def parse(cls, spec: str) -> "Scenario":
        """A name from NAMED or comma-separated settings; ValueError naming the part that is wrong."""
        text = spec.strip()
        if text in NAMED:
            return replace(cls.parse(NAMED[text]), spec=text)
        values: dict = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip()
            if not sep or name not in _PARSERS:
                raise ValueError(f"{part!r}: expected one of {', '.join(NAMED)}, or settings name=value with "
                                 f"name one of {', '.join(_PARSERS)}")
            try:
                values[name] = _PARSERS[name](value.strip())
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        if not values:
            raise ValueError(f"empty: give a name ({', '.join(NAMED)}) or settings such as fail=0.2")
        return cls(**values, spec=text)


def _rate(value: str) -> float:
    rate = float(value)
    if not 0 <= rate <= 1:
        raise ValueError(f"must be a rate between 0 and 1 (got {value})")
    return rate


def _seconds(value: str) -> tuple[float, float]:
    low, _, high = value.partition("-")
    a, b = float(low), float(high or low)
    if not 0 <= a <= b <= MAX_SECONDS:
        raise ValueError(f"must be seconds S or a range A-B with 0 <= A <= B <= {MAX_SECONDS} (got {value})")
    return a, b


def _count(value: str) -> int:
    n = int(value)
    if not 0 <= n <= 10:
        raise ValueError(f"must be a whole number from 0 to 10 (got {value})")
    return n


def _code(value: str) -> int:
    code = int(value)
    if not 1000 <= code <= 9999:
        raise ValueError(f"must be a four-digit task code such as 1403 (got {value})")
    return code


def _text(value: str) -> str:
    if not value or len(value) > 500:
        raise ValueError("must be 1 to 500 characters")
    return value


_fresh = random.Random()  # draws that are not the seed's (a submit's 429)
MAX_SECONDS = 3600.0
_PARSERS = {"fail": _rate, "error": _text, "code": _code, "nsfw": _rate, "render": _seconds, "queue": _seconds,
            "submit429": _rate, "poll_errors": _count, "webhook_failures": _count}

# Named scenarios (the README's table).
NAMED = {
    "failing": "fail=1",
    "nsfw": "nsfw=1",
    "slow": "render=20-40",
    "queued": "queue=10-30",
    "rate-limited": "submit429=0.5",
    "flaky": "poll_errors=2,webhook_failures=2",
    "realistic": "fail=0.05,nsfw=0.02,render=2-8,queue=0-5,poll_errors=1",
}

# Reserved seeds (OPENI2V_SANDBOX=true): each forces one outcome for its prediction.
TEST_SEEDS = {
    4000000001: Plan(fail=True),
    4000000002: Plan(nsfw=True),
    4000000003: Plan(render_s=30.0),
    4000000004: Plan(queue_s=30.0),
    4000000005: Plan(submit_429=True),
    4000000006: Plan(poll_errors=2),
    4000000007: Plan(webhook_failures=2),
}


class SimulatedFailure(OpenI2VError):
    """A prediction that fails because its plan says so, with the plan's message and task code."""

    def __init__(self, message: str, task_code: int) -> None:
        super().__init__(message)
        self.task_code = task_code


def plan_for(seed: int, key_scenario: str | None, sandbox: bool) -> Plan:
    """What is simulated for a prediction: a reserved seed's outcome (sandbox only), else the key's
    scenario drawn from the seed, else nothing."""
    if sandbox and seed in TEST_SEEDS:
        return TEST_SEEDS[seed]
    return Scenario.parse(key_scenario).plan(seed) if key_scenario else Plan()
