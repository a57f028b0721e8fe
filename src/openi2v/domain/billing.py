"""Pricing by the seed's rules, in integer micro-dollars so sums never drift.

- Per-second rate = price per 5 seconds / 5.
- Billed seconds = video seconds rounded up, with a 5-second minimum.
- A prediction is charged once, when it completes; a failed one costs nothing.
"""

from __future__ import annotations

import math
from decimal import Decimal

MICROS = 1_000_000
MIN_SECONDS = 5


def to_micros(usd: float | Decimal | str) -> int:
    return int((Decimal(str(usd)) * MICROS).to_integral_value())


def to_usd(micros: int) -> float:
    return float(Decimal(micros) / MICROS)


def billed_seconds(video_seconds: float) -> int:
    if video_seconds < 0:
        raise ValueError("video_seconds must not be negative")
    return max(MIN_SECONDS, math.ceil(video_seconds))


def per_second(price_per_5s_usd: float) -> Decimal:
    """The per-second rate in micro-dollars (exact)."""
    return Decimal(to_micros(price_per_5s_usd)) / 5


def unit_price_usd(price_per_5s_usd: float) -> float:
    """The price of one second of video, in USD (the hosted ``unit_price``)."""
    return float(per_second(price_per_5s_usd) / MICROS)


def price_micros(price_per_5s_usd: float, video_seconds: float) -> int:
    return int((per_second(price_per_5s_usd) * billed_seconds(video_seconds)).to_integral_value())
