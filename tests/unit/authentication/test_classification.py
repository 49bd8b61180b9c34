"""classify: an ARes or RReq read as the authentication's state, ECI, liability and what happens next."""

from __future__ import annotations

from typing import Any

import pytest

from billing.authentication.classification import Classified, classify
from billing.authentication.liability import EciClass, LiabilityShift
from billing.authentication.messages import ARes, RReq, parse_message
from billing.authentication.protocol import MessageType
from billing.authentication.states import AuthenticationState, TransStatus
from billing.instruments.brands import CardBrand
from tests.unit.authentication import factories as f

A = AuthenticationState
E = EciClass


def _ares(**overrides: Any) -> ARes:
    message = parse_message(f.ares(**overrides))
    assert isinstance(message, ARes)
    return message


def _challenge(**overrides: Any) -> ARes:
    message = parse_message(f.challenge_ares(**overrides))
    assert isinstance(message, ARes)
    return message


def _rreq(**overrides: Any) -> RReq:
    message = parse_message(f.rreq(**overrides))
    assert isinstance(message, RReq)
    return message


def test_a_frictionless_visa_success_shifts_liability() -> None:
    assert classify(_ares(), brand=CardBrand.VISA) == Classified(
        message_type=MessageType.ARES,
        trans_status=TransStatus.AUTHENTICATED,
        trans_status_reason=None,
        state=A.SUCCEEDED,
        eci="05",
        liability=LiabilityShift(shifted=True, eci_class=E.FULLY_AUTHENTICATED),
        challenge_follows=False,
        decoupled=False,
        has_authentication_value=True,
    )


def test_the_brand_decides_how_the_eci_reads() -> None:
    assert classify(_ares(eci="02"), brand=CardBrand.MASTERCARD).liability_shifted
    assert not classify(_ares(eci="02"), brand=CardBrand.VISA).liability_shifted


def test_a_challenge_leaves_liability_to_the_rreq() -> None:
    classified = classify(_challenge(), brand=CardBrand.VISA)

    assert classified.state is A.CHALLENGE_REQUIRED
    assert classified.challenge_follows
    assert not classified.decoupled
    assert classified.liability is None
    assert not classified.liability_shifted


def test_a_decoupled_challenge_is_a_challenge_held_out_of_band() -> None:
    classified = classify(_challenge(transStatus="D", acsURL=None), brand=CardBrand.VISA)

    assert classified.state is A.CHALLENGE_REQUIRED
    assert classified.challenge_follows
    assert classified.decoupled
    assert classified.liability is None


def test_an_ares_carrying_an_eci_with_its_challenge_still_defers_liability() -> None:
    classified = classify(_challenge(eci="05"), brand=CardBrand.VISA)

    assert classified.liability is None


def test_informational_only_succeeds_without_shifting() -> None:
    classified = classify(_ares(transStatus="I", eci="07"), brand=CardBrand.VISA)

    assert classified.state is A.SUCCEEDED
    assert not classified.challenge_follows
    assert classified.liability == LiabilityShift(shifted=False, eci_class=E.NOT_AUTHENTICATED)


def test_informational_only_with_a_shifting_eci_still_does_not_shift() -> None:
    classified = classify(_ares(transStatus="I", eci="05"), brand=CardBrand.VISA)

    assert classified.state is A.SUCCEEDED
    assert not classified.liability_shifted


@pytest.mark.parametrize(
    ("status", "state"),
    [("N", A.FAILED), ("R", A.REJECTED), ("U", A.UNAVAILABLE)],
)
def test_unsuccessful_outcomes_never_shift_even_when_the_eci_claims_so(status: str, state: AuthenticationState) -> None:
    classified = classify(_ares(transStatus=status, transStatusReason="01", eci="05"), brand=CardBrand.VISA)

    assert classified.state is state
    assert classified.trans_status_reason == "01"
    assert classified.liability == LiabilityShift(shifted=False, eci_class=E.NOT_AUTHENTICATED)


def test_a_success_without_a_cryptogram_does_not_shift() -> None:
    classified = classify(_ares(authenticationValue=None), brand=CardBrand.VISA)

    assert classified.state is A.SUCCEEDED
    assert not classified.has_authentication_value
    assert classified.liability == LiabilityShift(shifted=False, eci_class=E.NOT_AUTHENTICATED)


def test_a_success_without_an_eci_does_not_shift() -> None:
    classified = classify(_ares(eci=None), brand=CardBrand.MASTERCARD)

    assert classified.liability == LiabilityShift(shifted=False, eci_class=E.UNKNOWN)


_NO_SHIFT = LiabilityShift(False, E.NOT_AUTHENTICATED)


@pytest.mark.parametrize(
    ("overrides", "state", "shift"),
    [
        ({}, A.SUCCEEDED, LiabilityShift(True, E.FULLY_AUTHENTICATED)),
        ({"transStatus": "A", "eci": "06"}, A.SUCCEEDED, LiabilityShift(True, E.ATTEMPTED)),
        ({"transStatus": "N", "eci": "07", "authenticationValue": None}, A.FAILED, _NO_SHIFT),
        ({"transStatus": "R", "eci": None, "authenticationValue": None}, A.REJECTED, LiabilityShift(False, E.UNKNOWN)),
        ({"transStatus": "U", "eci": "07", "authenticationValue": None}, A.UNAVAILABLE, _NO_SHIFT),
    ],
)
def test_an_rreq_ends_the_challenge(
    overrides: dict[str, Any], state: AuthenticationState, shift: LiabilityShift
) -> None:
    classified = classify(_rreq(**overrides), brand=CardBrand.VISA)

    assert classified.message_type is MessageType.RREQ
    assert classified.state is state
    assert classified.liability == shift
    assert not classified.challenge_follows


def test_only_an_ares_or_rreq_is_classified() -> None:
    message = parse_message(f.cres())

    with pytest.raises(TypeError, match="only an ARes or an RReq"):
        classify(message, brand=CardBrand.VISA)  # type: ignore[arg-type]
