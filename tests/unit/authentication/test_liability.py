"""The liability-shift table, exhaustively: every brand x every ECI shape x with and without a cryptogram."""

from __future__ import annotations

import itertools

import pytest

from billing.authentication.liability import (
    EciClass,
    EciConvention,
    LiabilityShift,
    eci_convention,
    eci_for,
    liability_for,
    liability_for_outcome,
)
from billing.authentication.states import TransStatus
from billing.instruments.brands import CardBrand

B = CardBrand
E = EciClass
T = TransStatus

VISA_STYLE = {B.VISA, B.AMEX, B.JCB, B.DISCOVER, B.DINERS, B.UNIONPAY}
MASTERCARD_STYLE = {B.MASTERCARD, B.MAESTRO}
# Every value the parser lets through as an ECI, plus no ECI at all.
ALL_ECIS: list[str | None] = [*(f"{n:02d}" for n in range(100)), "N0", "N1", "N2", None]

# The rules, written out independently of the module: (shifted, class) with a cryptogram, and without one.
VISA_RULES = {
    "05": ((True, E.FULLY_AUTHENTICATED), (False, E.NOT_AUTHENTICATED)),
    "06": ((True, E.ATTEMPTED), (False, E.NOT_AUTHENTICATED)),
    "07": ((False, E.NOT_AUTHENTICATED), (False, E.NOT_AUTHENTICATED)),
}
MASTERCARD_RULES = {
    "02": ((True, E.FULLY_AUTHENTICATED), (False, E.NOT_AUTHENTICATED)),
    "01": ((True, E.ATTEMPTED), (False, E.NOT_AUTHENTICATED)),
    "00": ((False, E.NOT_AUTHENTICATED), (False, E.NOT_AUTHENTICATED)),
    "04": ((False, E.DATA_ONLY), (False, E.DATA_ONLY)),
    "06": ((False, E.SCA_EXEMPT), (False, E.SCA_EXEMPT)),
    "N0": ((False, E.NON_PAYMENT), (False, E.NON_PAYMENT)),
    "N1": ((False, E.NON_PAYMENT), (False, E.NON_PAYMENT)),
    "N2": ((False, E.NON_PAYMENT), (False, E.NON_PAYMENT)),
}


def expected(brand: CardBrand, eci: str | None, has_authentication_value: bool) -> tuple[bool, EciClass]:
    rules = VISA_RULES if brand in VISA_STYLE else MASTERCARD_RULES if brand in MASTERCARD_STYLE else {}
    if eci not in rules:
        return (False, E.UNKNOWN)
    with_value, without_value = rules[eci]
    return with_value if has_authentication_value else without_value


@pytest.mark.parametrize("brand", list(CardBrand))
def test_every_eci_of_every_brand_reads_as_the_scheme_rules_say(brand: CardBrand) -> None:
    for eci, has_value in itertools.product(ALL_ECIS, (True, False)):
        shift = liability_for(brand, eci, has_authentication_value=has_value)

        assert (shift.shifted, shift.eci_class) == expected(brand, eci, has_value), (eci, has_value)


def test_the_brands_fall_into_the_two_conventions_and_cartes_bancaires_into_none() -> None:
    assert {b for b in B if eci_convention(b) is EciConvention.VISA} == VISA_STYLE
    assert {b for b in B if eci_convention(b) is EciConvention.MASTERCARD} == MASTERCARD_STYLE
    assert {b for b in B if eci_convention(b) is EciConvention.NONE} == {B.CARTES_BANCAIRES}


@pytest.mark.parametrize("brand", list(CardBrand))
def test_only_four_ecis_ever_shift_and_only_with_a_cryptogram(brand: CardBrand) -> None:
    shifting = {
        (eci, has_value)
        for eci, has_value in itertools.product(ALL_ECIS, (True, False))
        if liability_for(brand, eci, has_authentication_value=has_value).shifted
    }

    if brand in VISA_STYLE:
        assert shifting == {("05", True), ("06", True)}
    elif brand in MASTERCARD_STYLE:
        assert shifting == {("02", True), ("01", True)}
    else:
        assert shifting == set()


def test_the_other_conventions_ecis_do_not_shift() -> None:
    # A Visa card reported with Mastercard's "02" (or the reverse) is a mix-up, not an authentication.
    assert liability_for(B.VISA, "02", has_authentication_value=True) == LiabilityShift(False, E.UNKNOWN)
    assert liability_for(B.MASTERCARD, "05", has_authentication_value=True) == LiabilityShift(False, E.UNKNOWN)


def test_mastercard_07_is_unknown_until_3ri_recurring_is_supported() -> None:
    assert liability_for(B.MASTERCARD, "07", has_authentication_value=True) == LiabilityShift(False, E.UNKNOWN)


@pytest.mark.parametrize(("brand", "status"), list(itertools.product(CardBrand, TransStatus)))
def test_only_y_and_a_outcomes_can_shift(brand: CardBrand, status: TransStatus) -> None:
    for eci in ALL_ECIS:
        shift = liability_for_outcome(brand, status, eci, has_authentication_value=True)

        if status in (T.AUTHENTICATED, T.ATTEMPTED):
            assert shift == liability_for(brand, eci, has_authentication_value=True)
        else:
            assert not shift.shifted
            assert shift == liability_for(brand, eci, has_authentication_value=False)


def test_a_rejection_claiming_eci_05_does_not_shift() -> None:
    shift = liability_for_outcome(B.VISA, T.REJECTED, "05", has_authentication_value=True)

    assert shift == LiabilityShift(False, E.NOT_AUTHENTICATED)


SANDBOX_ECIS = {
    EciConvention.VISA: {"Y": "05", "A": "06", "N": "07", "U": "07", "R": "07", "I": "07", "C": None, "D": None},
    EciConvention.MASTERCARD: {"Y": "02", "A": "01", "N": "00", "U": "00", "R": "00", "I": "00", "C": None, "D": None},
}


@pytest.mark.parametrize(("brand", "status"), list(itertools.product(CardBrand, TransStatus)))
def test_the_sandbox_ecis(brand: CardBrand, status: TransStatus) -> None:
    convention = eci_convention(brand)
    want = SANDBOX_ECIS[convention][status.value] if convention in SANDBOX_ECIS else None

    assert eci_for(brand, status) == want


@pytest.mark.parametrize(("brand", "status"), list(itertools.product(CardBrand, TransStatus)))
def test_a_sandbox_outcome_shifts_exactly_when_it_is_y_or_a_on_a_known_convention(
    brand: CardBrand, status: TransStatus
) -> None:
    # What the sandbox ACS will send must read back, through the same table, as the outcome it meant.
    eci = eci_for(brand, status)
    with_cryptogram = status in (T.AUTHENTICATED, T.ATTEMPTED)
    shift = liability_for_outcome(brand, status, eci, has_authentication_value=with_cryptogram)

    assert shift.shifted == (with_cryptogram and eci_convention(brand) is not EciConvention.NONE)
