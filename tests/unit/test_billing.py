from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openi2v.domain.billing import billed_seconds, price_micros, to_micros, to_usd


def test_the_seed_prices():
    assert to_usd(price_micros(0.35, 5)) == 0.35
    assert to_usd(price_micros(0.35, 10)) == 0.70


@pytest.mark.parametrize("seconds,billed", [(0, 5), (1, 5), (4.2, 5), (5, 5), (5.01, 6), (9.5, 10), (10, 10)])
def test_billed_seconds_round_up_with_a_five_second_minimum(seconds, billed):
    assert billed_seconds(seconds) == billed


@given(st.floats(0, 600, allow_nan=False), st.decimals("0.01", "10", places=2))
def test_price_is_billed_seconds_times_the_per_second_rate(seconds, per_5s):
    expected = to_micros(per_5s) * billed_seconds(seconds) / Decimal(5)
    assert price_micros(float(per_5s), seconds) == int(expected.to_integral_value())
    assert price_micros(float(per_5s), seconds) >= price_micros(float(per_5s), 0)


def test_negative_length_is_refused():
    with pytest.raises(ValueError):
        billed_seconds(-1)
