"""Limits per API key: the rules, apart from where their counts are kept (``store/predictions.py``).

Submits per minute are a GCRA (generic cell rate algorithm): one stored number per key, the
"theoretical arrival time" ``tat``, exact and burst-tolerant, with no window edge to game. A
minute's worth of submits may arrive at once; after that they are admitted one per
``60 / per_minute`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """0 means no limit."""

    submits_per_minute: int = 0  # over it: 429 with Retry-After
    running: int = 0  # predictions of one key running at once; more wait in the queue
    queued: int = 0  # predictions of one key waiting to start; more are a 429

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        return cls(settings.submits_per_minute, settings.max_running_per_key, settings.max_queued_per_key)

    def admit(self, tat: float | None, t: float) -> tuple[float, float]:
        """A submit at time ``t`` against the key's stored ``tat``: ``(new tat, 0)`` when admitted,
        ``(tat, seconds until one would be)`` when not."""
        interval = 60.0 / self.submits_per_minute
        burst = 60.0 - interval  # how far ahead of now the tat may run: a minute's worth at once
        tat = max(tat or t, t)
        if tat - t > burst + 1e-6:  # (the sum of a minute's intervals may round above a minute)
            return tat, tat - t - burst
        return tat + interval, 0.0
