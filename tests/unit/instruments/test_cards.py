"""Card numbers: the IIN table (longest prefix wins), lengths per brand, Luhn, IIN and last4, expiry in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing.domain.errors import CardBrandUnsupported, CardExpired, CardNumberInvalid, CardSecurityCodeInvalid
from billing.instruments.brands import IIN_RANGES, CardBrand, brand_of, co_brand_of
from billing.instruments.cards import (
    expiry_end,
    is_expired,
    luhn_valid,
    parse_card_number,
    require_security_code_shape,
    require_unexpired,
)

# Public test numbers (card schemes' and Stripe's), one or more per brand.
TEST_CARDS = {
    "4242424242424242": CardBrand.VISA,
    "4000056655665556": CardBrand.VISA,
    "4222222222222": CardBrand.VISA,
    "5555555555554444": CardBrand.MASTERCARD,
    "2223003122003222": CardBrand.MASTERCARD,
    "2720990000000007": CardBrand.MASTERCARD,
    "378282246310005": CardBrand.AMEX,
    "371449635398431": CardBrand.AMEX,
    "6011111111111117": CardBrand.DISCOVER,
    "6445644564456445": CardBrand.DISCOVER,
    "3056930009020004": CardBrand.DINERS,
    "36227206271667": CardBrand.DINERS,
    "3566002020360505": CardBrand.JCB,
    "6200000000000005": CardBrand.UNIONPAY,
    "6759649826438453": CardBrand.MAESTRO,
}


@pytest.mark.parametrize(("number", "brand"), TEST_CARDS.items())
def test_parse_test_card_gives_its_brand_last4_and_iin(number: str, brand: CardBrand) -> None:
    card = parse_card_number(number)
    assert card.brand is brand
    assert card.last4 == number[-4:]
    assert card.iin == (number[:8] if len(number) >= 16 else number[:6])


def test_iin_is_8_digits_from_16_digit_pans_and_6_below() -> None:
    assert parse_card_number("4242424242424242").iin == "42424242"
    assert parse_card_number("378282246310005").iin == "378282"
    assert parse_card_number("36227206271667").iin == "362272"


@pytest.mark.parametrize(
    ("prefix", "brand"),
    [("2220", None), ("2221", CardBrand.MASTERCARD), ("2720", CardBrand.MASTERCARD), ("2721", None),
     ("50", None), ("5018", CardBrand.MAESTRO), ("51", CardBrand.MASTERCARD), ("55", CardBrand.MASTERCARD),
     ("56", None), ("6011", CardBrand.DISCOVER), ("6012", None), ("643", None), ("644", CardBrand.DISCOVER),
     ("3095", CardBrand.DINERS), ("3096", None), ("3527", None), ("3528", CardBrand.JCB), ("3589", CardBrand.JCB),
     ("3590", None), ("1", None), ("9", None)],
)  # fmt: skip
def test_iin_range_boundaries(prefix: str, brand: CardBrand | None) -> None:
    assert brand_of(prefix.ljust(16, "0")) is brand


def test_longest_prefix_wins_for_the_co_brand_but_not_the_network() -> None:
    # Cartes Bancaires' test cards: Visa and Mastercard numbers that also carry CB.
    visa_cb, mastercard_cb = parse_card_number("4000002500001001"), parse_card_number("5555552500001001")
    assert (visa_cb.brand, visa_cb.co_brand) == (CardBrand.VISA, CardBrand.CARTES_BANCAIRES)
    assert (mastercard_cb.brand, mastercard_cb.co_brand) == (CardBrand.MASTERCARD, CardBrand.CARTES_BANCAIRES)
    assert co_brand_of("4242424242424242") is None


def test_no_two_network_ranges_of_one_length_overlap() -> None:
    # Longest prefix wins only between lengths; within one length the table must be unambiguous.
    for a in IIN_RANGES:
        for b in IIN_RANGES:
            if a is not b and a.length == b.length:
                assert a.last < b.first or b.last < a.first, (a, b)


@pytest.mark.parametrize("number", ["4242 4242 4242 4242", "4242-4242-4242-4242", " 4242424242424242 "])
def test_typed_separators_are_accepted(number: str) -> None:
    assert parse_card_number(number).digits == "4242424242424242"


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("4242424242424241", "luhn"),
        ("424242424242", "length"),
        ("42424242424242424242", "length"),
        ("4242x24242424242", "characters"),
        ("4242.4242.4242.4242", "characters"),
        ("٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢", "characters"),
        # Luhn-valid, but Mastercard issues 16 digits only.
        ("55555555555544440", "length"),
        ("", "characters"),
    ],
)
def test_invalid_numbers_are_card_number_invalid_with_the_reason(number: str, reason: str) -> None:
    with pytest.raises(CardNumberInvalid) as refused:
        parse_card_number(number)
    assert [e.code for e in refused.value.errors] == [reason]
    assert number.strip() not in refused.value.detail or not number.strip()


def test_luhn_valid_number_of_no_known_brand_is_brand_unsupported() -> None:
    number = "1" * 15 + "7"  # luhn-valid, IIN 1: no brand
    assert luhn_valid(number)
    with pytest.raises(CardBrandUnsupported):
        parse_card_number(number)


def test_card_is_valid_through_the_last_moment_of_its_month_in_utc() -> None:
    assert expiry_end(2, 2028) == datetime(2028, 3, 1, tzinfo=UTC)
    assert expiry_end(12, 2028) == datetime(2029, 1, 1, tzinfo=UTC)
    assert not is_expired(2, 2028, datetime(2028, 2, 29, 23, 59, 59, 999999, tzinfo=UTC))
    assert is_expired(2, 2028, datetime(2028, 3, 1, tzinfo=UTC))


def test_expired_card_is_refused_as_card_expired() -> None:
    require_unexpired(11, 2026, datetime(2026, 11, 30, 12, tzinfo=UTC))
    with pytest.raises(CardExpired):
        require_unexpired(10, 2026, datetime(2026, 11, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("cvc", "brand", "ok"),
    [("123", CardBrand.VISA, True), ("1234", CardBrand.AMEX, True), ("1234", CardBrand.VISA, False),
     ("123", CardBrand.AMEX, False), ("12a", CardBrand.VISA, False), ("", CardBrand.VISA, False)],
)  # fmt: skip
def test_security_code_shape_depends_on_the_brand(cvc: str, brand: CardBrand, ok: bool) -> None:
    if ok:
        require_security_code_shape(cvc, brand)
    else:
        with pytest.raises(CardSecurityCodeInvalid):
            require_security_code_shape(cvc, brand)


def test_card_number_repr_never_shows_the_number() -> None:
    assert "4242424242424242" not in repr(parse_card_number("4242424242424242"))
