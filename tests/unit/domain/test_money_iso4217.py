"""The currency table against a maintained copy of ISO 4217 List One: the `iso4217` package (dev dependency).

The package ships the list the ISO 4217 maintenance agency publishes, with each code's minor unit, and is released
when the list changes; its data works offline. When ISO adds, withdraws or re-denominates a code, upgrading the
package makes these tests fail until billing.domain.money follows.
"""

from __future__ import annotations

from datetime import date

import iso4217
import pytest

from billing.domain.money import CURRENCY_EXPONENTS, WITHDRAWN_CURRENCY_EXPONENTS, Money, is_known_currency

# The list the table was last reviewed against; older package data could hide a change made since.
REVIEWED_LIST: date = date(2026, 1, 1)

# X codes that are no country's currency, left out on purpose: nothing is charged in them, and all but XAD have no
# minor unit ("N.A." in ISO's list) for an integer amount to count.
NOT_CHARGEABLE: dict[str, str] = {
    "XAD": "Arab Accounting Dinar, a unit of account of the Arab Monetary Fund",
    "XDR": "SDR, the IMF's unit of account",
    "XUA": "ADB Unit of Account",
    "XSU": "Sucre, a regional clearing unit",
    "XBA": "bond-market unit (EURCO)",
    "XBB": "bond-market unit (E.M.U.-6)",
    "XBC": "bond-market unit (E.U.A.-9)",
    "XBD": "bond-market unit (E.U.A.-17)",
    "XAU": "gold",
    "XAG": "silver",
    "XPD": "palladium",
    "XPT": "platinum",
    "XTS": "reserved for testing",
    "XXX": "no currency involved",
}

ISO_EXPONENTS: dict[str, int | None] = {currency.code: currency.exponent for currency in iso4217.Currency}


def test_the_iso_list_is_at_least_as_recent_as_the_reviewed_one() -> None:
    assert iso4217.__published__ >= REVIEWED_LIST


def test_every_current_chargeable_iso_code_is_in_the_table() -> None:
    missing = sorted(set(ISO_EXPONENTS) - set(NOT_CHARGEABLE) - set(CURRENCY_EXPONENTS))

    assert missing == []


def test_every_code_in_the_table_is_current_in_iso() -> None:
    not_current = sorted(set(CURRENCY_EXPONENTS) - set(ISO_EXPONENTS))

    assert not_current == []


def test_every_exponent_in_the_table_matches_iso() -> None:
    wrong = {code: (ours, ISO_EXPONENTS[code]) for code, ours in CURRENCY_EXPONENTS.items() if code in ISO_EXPONENTS}

    assert {code: pair for code, pair in wrong.items() if pair[0] != pair[1]} == {}


def test_left_out_codes_are_current_x_codes_and_none_is_in_the_table() -> None:
    # A code ISO withdraws from this list has to leave it too, so the exclusions never outlive their reason.
    assert set(NOT_CHARGEABLE) <= set(ISO_EXPONENTS)
    assert all(code.startswith("X") for code in NOT_CHARGEABLE)
    assert set(NOT_CHARGEABLE).isdisjoint(CURRENCY_EXPONENTS)


def test_codes_without_a_minor_unit_in_iso_are_all_left_out() -> None:
    assert {code for code, exponent in ISO_EXPONENTS.items() if exponent is None} <= set(NOT_CHARGEABLE)


@pytest.mark.parametrize("code", ["ANG", "BGN", "CUC", "EEK", "HRK", "LTL", "LVL", "MRO", "SLL", "STD", "VEF", "ZWL"])
def test_withdrawn_code_is_gone_from_iso_and_refused_for_new_charges(code: str) -> None:
    assert code not in ISO_EXPONENTS
    assert not is_known_currency(code)


@pytest.mark.parametrize("code", sorted(WITHDRAWN_CURRENCY_EXPONENTS))
def test_code_the_table_used_to_accept_still_formats_a_stored_amount(code: str) -> None:
    assert code not in ISO_EXPONENTS
    assert not is_known_currency(code)
    assert Money(123, code).format() == f"1.23 {code}"  # ANG, BGN and ZWL all had two decimals
