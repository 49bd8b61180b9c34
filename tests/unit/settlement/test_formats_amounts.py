"""Provider amounts: major-unit decimal strings to exact integer minor units by the ISO 4217 exponent, never float."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT_MINOR, currency_exponent
from billing.settlement.formats.amounts import AmountInvalid, to_minor_units


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("1234.56", "EUR", 123456),
        ("-12.5", "EUR", -1250),
        ("0", "EUR", 0),
        ("0.01", "EUR", 1),
        ("-0.00", "EUR", 0),
        ("12.340", "EUR", 1234),  # a trailing zero adds no precision
        ("12", "EUR", 1200),
        ("1234", "JPY", 1234),  # no minor unit
        ("1234.0", "JPY", 1234),
        ("-5000", "JPY", -5000),
        ("1.234", "KWD", 1234),  # thousandths
        ("0.001", "BHD", 1),
        ("-0.5", "BHD", -500),
        ("12.3456", "CLF", 123456),  # four decimals
        ("10000000000000", "EUR", MAX_AMOUNT_MINOR),
        ("19.99", "BGN", 1999),  # withdrawn since, but a settled payment may still be in it
    ],
)
def test_to_minor_units_scales_by_the_currency_exponent_exactly(text: str, currency: str, minor: int) -> None:
    value = to_minor_units(text, currency, field="gross")

    assert value == minor
    assert type(value) is int


@pytest.mark.parametrize(
    ("text", "currency", "reason"),
    [
        ("12.345", "EUR", "more precision than EUR allows (at most 2 decimals)"),
        ("1234.5", "JPY", "more precision than JPY allows (no decimals)"),
        ("1.2345", "KWD", "more precision than KWD allows (at most 3 decimals)"),
        ("1,234.56", "EUR", "contains a comma"),
        ("12,50", "EUR", "contains a comma"),
        ("1 234", "EUR", "contains whitespace"),
        (" 12.00", "EUR", "contains whitespace"),
        ("12.00\t", "EUR", "contains whitespace"),
        ("NaN", "EUR", "no exponents, NaN or infinity"),
        ("-Infinity", "EUR", "no exponents, NaN or infinity"),
        ("inf", "EUR", "no exponents, NaN or infinity"),
        ("1e3", "EUR", "no exponents, NaN or infinity"),
        ("1.5E-2", "EUR", "no exponents, NaN or infinity"),
        ("+12", "EUR", "not a plain decimal"),
        (".5", "EUR", "not a plain decimal"),
        ("5.", "EUR", "not a plain decimal"),
        ("007", "EUR", "not a plain decimal"),
        ("--1", "EUR", "not a plain decimal"),
        ("0x10", "EUR", "not a plain decimal"),
        ("\u0661\u0662", "EUR", "not a plain decimal"),  # Arabic-Indic digits: int() would take them
        ("10000000000000.01", "EUR", f"exceeds {MAX_AMOUNT_MINOR} minor units"),
        ("1" * 33, "EUR", "longer than 32 characters"),
        ("12.00", "eur", "not an ISO 4217 code in upper case"),
        ("12.00", "XXX", "not an ISO 4217 code in upper case"),
        ("", "EUR", "is empty"),
    ],
)
def test_to_minor_units_refuses_what_is_not_an_exact_amount(text: str, currency: str, reason: str) -> None:
    with pytest.raises(AmountInvalid) as caught:
        to_minor_units(text, currency, field="Net Credit (NC)")

    assert caught.value.field == "Net Credit (NC)"
    assert reason in caught.value.reason


def test_to_minor_units_reads_an_empty_cell_as_zero_only_when_the_caller_says_so() -> None:
    assert to_minor_units("", "EUR", field="fee", empty_is_zero=True) == 0
    with pytest.raises(AmountInvalid, match="is empty"):
        to_minor_units("", "EUR", field="fee")


def test_amount_invalid_quotes_a_bounded_part_of_the_value() -> None:
    with pytest.raises(AmountInvalid) as caught:
        to_minor_units("x" * 10_000, "EUR", field="gross")

    assert caught.value.shown == "x" * 40
    assert len(str(caught.value)) < 200


def _major_units(minor: int, exponent: int) -> str:
    sign = "-" if minor < 0 else ""
    units, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{units}" if exponent == 0 else f"{sign}{units}.{fraction:0{exponent}d}"


@given(
    minor=st.integers(min_value=-MAX_AMOUNT_MINOR, max_value=MAX_AMOUNT_MINOR),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
    trailing_zeros=st.integers(min_value=0, max_value=3),
)
def test_formatting_as_major_units_and_parsing_back_is_the_identity(
    minor: int, currency: str, trailing_zeros: int
) -> None:
    exponent = currency_exponent(currency)
    text = _major_units(minor, exponent)
    if trailing_zeros:
        text += ("." if exponent == 0 else "") + "0" * trailing_zeros

    assert to_minor_units(text, currency, field="gross") == minor
