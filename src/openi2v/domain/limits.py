"""Limits per API key: the rules, apart from where their counts are kept (``store/predictions.py``).

Submits per minute are a GCRA (generic cell rate algorithm): one stored number per key, the
"theoretical arrival time" ``tat``, exact and burst-tolerant, with no window edge to game. A
minute's worth of submits may arrive at once; after that they are admitted one per
``60 / per_minute`` seconds. Times are integer microseconds, so that N intervals never add up
to more than a minute whatever the clock reads (floats at today's epoch do not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from openi2v.errors import TooManyRequests

MINUTE_US = 60_000_000
QUEUED_RETRY_S = 5.0  # Retry-After when too many wait: a guess, as nobody knows when one starts


@dataclass(frozen=True)
class Limits:
    """0 means no limit."""

    submits_per_minute: int = 0  # over it: 429 with Retry-After
    running: int = 0  # predictions of one key running at once; more wait in the queue
    queued: int = 0  # predictions of one key waiting to start; more are a 429

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        return cls(settings.submits_per_minute, settings.max_running_per_key, settings.max_queued_per_key)

    def check_queued(self, waiting: int) -> None:
        """A submit while ``waiting`` of the key's predictions wait to start."""
        if self.queued and waiting >= self.queued:
            raise TooManyRequests(f"too many predictions waiting: at most {self.queued} may wait to start per API "
                                  "key; submit again when some have started", QUEUED_RETRY_S)

    def admit(self, tat_us: int | None, t: float) -> int:
        """A submit at time ``t`` against the key's stored ``tat_us``: the tat to store once it is
        admitted; TooManyRequests (with the wait) when it is not."""
        interval = MINUTE_US // self.submits_per_minute
        burst = MINUTE_US - interval  # how far ahead of now the tat may run: a minute's worth at once
        now_us = int(t * 1_000_000)
        tat = max(tat_us or now_us, now_us)
        if tat - now_us > burst:
            wait = (tat - now_us - burst) / 1_000_000
            raise TooManyRequests(f"rate limit: at most {self.submits_per_minute} submits per minute per API key; "
                                  f"retry after {math.ceil(wait * 10) / 10:.1f} s", wait)
        return tat + interval
