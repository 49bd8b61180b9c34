from __future__ import annotations

import pytest

from billing.domain.money import Money, currency_exponent, is_known_currency


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1250, "EUR", "12.50 EUR"), (5, "USD", "0.05 USD"), (1000, "JPY", "1000 JPY"), (1234, "KWD", "1.234 KWD")],
)
def test_format_uses_currency_exponent(amount: int, currency: str, text: str) -> None:
    assert Money(amount, currency).format() == text


@pytest.mark.parametrize("currency", ["eur", "EURO", "XXX", "", "E1R"])
def test_unknown_or_lowercase_currency_is_rejected(currency: str) -> None:
    assert not is_known_currency(currency)
    with pytest.raises(ValueError, match="unknown currency"):
        Money(100, currency)


@pytest.mark.parametrize("amount", [1.5, 100.0, True, "100"])
def test_non_integer_amount_is_rejected(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "EUR")  # type: ignore[arg-type]


def test_exponents_of_zero_and_three_decimal_currencies() -> None:
    assert (currency_exponent("JPY"), currency_exponent("EUR"), currency_exponent("BHD")) == (0, 2, 3)


# Exponents from ISO 4217 List One (2026-01-01), the ones that are easy to get wrong or are new.
@pytest.mark.parametrize(
    ("currency", "exponent"),
    [("KWD", 3), ("JPY", 0), ("CLP", 0), ("CLF", 4), ("UYW", 4), ("UYI", 0), ("VED", 2), ("ZWG", 2), ("XCG", 2)],
)
def test_exponent_of_a_current_currency(currency: str, exponent: int) -> None:
    assert is_known_currency(currency)
    assert currency_exponent(currency) == exponent


@pytest.mark.parametrize("currency", ["ANG", "BGN", "ZWL", "HRK"])
def test_withdrawn_currency_is_refused_for_a_new_charge(currency: str) -> None:
    assert not is_known_currency(currency)
