"""The numeric currency table against ISO 4217 (the `iso4217` package, a dev dependency) and the money table."""

from __future__ import annotations

import iso4217

from billing.authentication.currency_numbers import ALPHA_BY_NUMBER, alpha_currency
from billing.domain.money import CURRENCY_EXPONENTS, WITHDRAWN_CURRENCY_EXPONENTS

ISO_NUMBERS: dict[str, str] = {currency.code: f"{currency.number:03d}" for currency in iso4217.Currency}


def test_every_currency_the_engine_charges_in_has_its_number() -> None:
    assert sorted(ALPHA_BY_NUMBER.values()) == sorted(CURRENCY_EXPONENTS)


def test_every_number_is_the_one_iso_assigns() -> None:
    wrong = {code: number for number, code in ALPHA_BY_NUMBER.items() if ISO_NUMBERS.get(code) != number}

    assert wrong == {}


def test_numbers_are_three_digits_and_unique() -> None:
    assert all(len(number) == 3 and number.isdigit() for number in ALPHA_BY_NUMBER)
    assert len(set(ALPHA_BY_NUMBER.values())) == len(ALPHA_BY_NUMBER)


def test_a_withdrawn_or_unlisted_number_maps_to_nothing() -> None:
    assert alpha_currency("978") == "EUR"
    assert alpha_currency("975") is None  # BGN, withdrawn when Bulgaria adopted the euro
    assert alpha_currency("999") is None  # XXX, no currency
    assert alpha_currency("978 ") is None
    assert set(WITHDRAWN_CURRENCY_EXPONENTS).isdisjoint(ALPHA_BY_NUMBER.values())
