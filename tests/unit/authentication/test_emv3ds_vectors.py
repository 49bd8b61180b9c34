"""The third-party EMV 3DS test cases (../shared/fixtures/emv3ds, rbkmoney/three-ds-server's Mastercard and Visa
compliance vectors): every ARes and RReq classified as the table below says, read off the fixtures by hand; every
AReq parsed with its Money; the messages of one case agreeing with each other; the messages the engine does not
read (PReq/PRes and rbkmoney's own pArq/pArs/pPrq/pPrs) refused as unknown.

The scheme is the folder's (mastercard/ or visa/): an ARes names no brand, and the Visa cases' card numbers are
placeholders of zeros that no IIN table recognises.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from billing.authentication.classification import classify
from billing.authentication.liability import EciClass, eci_for
from billing.authentication.messages import AReq, ARes, CReq, CRes, RReq, RRes, parse_message
from billing.authentication.protocol import DeviceChannel, MessageCategory
from billing.authentication.states import AuthenticationState, TransStatus
from billing.domain.errors import EmvMessageInvalid
from billing.domain.money import Money
from billing.instruments.brands import CardBrand
from tests.shared_material import shared_dir

FIXTURES = shared_dir() / "fixtures" / "emv3ds"
BRANDS = {"mastercard": CardBrand.MASTERCARD, "visa": CardBrand.VISA}
READ_BY_THE_ENGINE = {"areq.json", "ares.json", "rreq.json", "rres.json", "creq.json", "cres.json"}

A = AuthenticationState
E = EciClass


class Outcome(NamedTuple):
    """What a case's ARes (or RReq) must classify as; eci_class None: a challenge follows, liability undecided."""

    trans_status: str
    state: AuthenticationState
    eci: str | None
    shifted: bool
    eci_class: EciClass | None


_MC_Y = Outcome("Y", A.SUCCEEDED, "02", True, E.FULLY_AUTHENTICATED)
_MC_A = Outcome("A", A.SUCCEEDED, "01", True, E.ATTEMPTED)
# Mastercard's non-payment authentications (messageCategory 02) carry N0/N2: nothing goes to authorisation.
_MC_NPA_Y = Outcome("Y", A.SUCCEEDED, "N2", False, E.NON_PAYMENT)
_MC_NPA_N = Outcome("N", A.FAILED, "N0", False, E.NON_PAYMENT)
_MC_NPA_U = Outcome("U", A.UNAVAILABLE, "N0", False, E.NON_PAYMENT)
_CHALLENGE = Outcome("C", A.CHALLENGE_REQUIRED, None, False, None)
_VISA_Y = Outcome("Y", A.SUCCEEDED, "05", True, E.FULLY_AUTHENTICATED)
_VISA_A = Outcome("A", A.SUCCEEDED, "06", True, E.ATTEMPTED)
_VISA_N = Outcome("N", A.FAILED, None, False, E.UNKNOWN)
_VISA_I = Outcome("I", A.SUCCEEDED, "07", False, E.NOT_AUTHENTICATED)

ARES_OUTCOMES: dict[str, Outcome] = {
    "mastercard/TC_SERVER_00001_001": _MC_Y,
    "mastercard/TC_SERVER_00001_002": _MC_Y,
    "mastercard/TC_SERVER_00002_001": _MC_NPA_Y,
    "mastercard/TC_SERVER_00002_002": _MC_NPA_Y,
    "mastercard/TC_SERVER_00003_001": _MC_NPA_N,
    "mastercard/TC_SERVER_00004_001": _MC_A,
    "mastercard/TC_SERVER_00004_002": _MC_A,
    "mastercard/TC_SERVER_00005_001": _MC_NPA_N,
    "mastercard/TC_SERVER_00005_002": _MC_NPA_N,
    "mastercard/TC_SERVER_00006_001": _MC_NPA_N,
    "mastercard/TC_SERVER_00007_001": _CHALLENGE,
    "mastercard/TC_SERVER_00007_002": _CHALLENGE,
    "mastercard/TC_SERVER_00008_001": _CHALLENGE,
    "mastercard/TC_SERVER_00008_002": _CHALLENGE,
    "mastercard/TC_SERVER_00009_001": _MC_A,
    "mastercard/TC_SERVER_00009_002": _MC_A,
    "mastercard/TC_SERVER_00010_001": _MC_NPA_U,
    "mastercard/TC_SERVER_00010_002": _MC_NPA_U,
    "mastercard/TC_SERVER_00011_001": _MC_NPA_U,
    "visa/3DSS-210-101": _VISA_Y,
    "visa/3DSS-210-102": _VISA_N,
    "visa/3DSS-210-103": _VISA_A,
    "visa/3DSS-210-104": Outcome("U", A.UNAVAILABLE, None, False, E.UNKNOWN),
    "visa/3DSS-210-105": Outcome("R", A.REJECTED, None, False, E.UNKNOWN),
    "visa/3DSS-210-106": _CHALLENGE,
    # A non-payment authentication: authenticated, but with neither ECI nor cryptogram.
    "visa/3DSS-210-301": Outcome("Y", A.SUCCEEDED, None, False, E.UNKNOWN),
    "visa/3DSS-210-302": _VISA_Y,
    # Not authenticated, yet with an ECI 07 and a cryptogram: still no shift.
    "visa/3DSS-210-401": Outcome("N", A.FAILED, "07", False, E.NOT_AUTHENTICATED),
    "visa/3DSS-220-101": _VISA_Y,
    "visa/3DSS-220-102": _VISA_N,
    "visa/3DSS-220-103": Outcome("U", A.UNAVAILABLE, None, False, E.UNKNOWN),
    "visa/3DSS-220-104": Outcome("R", A.REJECTED, None, False, E.UNKNOWN),
    "visa/3DSS-220-105": _VISA_I,
    "visa/3DSS-220-106": _VISA_A,
    "visa/3DSS-220-107": _CHALLENGE,
    "visa/3DSS-220-301": _VISA_Y,
    "visa/3DSS-220-401": _VISA_I,
    "visa/3DSS-220-402": _VISA_N,
    "visa/3DSS-220-403": _VISA_N,
    "visa/3DSS-220-404": _VISA_I,
    "visa/3DSS-220-501": _CHALLENGE,
    "visa/3DSS-220-502": _VISA_Y,
    "visa/3DSS-220-503": _VISA_N,
    "visa/3DSS-220-504": _VISA_N,
    "visa/3DSS-220-505": _VISA_N,
    "visa/3DSS-220-601": _VISA_I,
    "visa/3DSS-220-602": _VISA_N,
    "visa/3DSS-220-603": _CHALLENGE,
    "visa/3DSS-220-701": _VISA_I,
}
# The three challenges that were carried through: each ended in a successful RReq.
RREQ_OUTCOMES: dict[str, Outcome] = {
    "visa/3DSS-220-107": _VISA_Y,
    "visa/3DSS-220-501": _VISA_Y,
    "visa/3DSS-220-603": _VISA_Y,
}
# numeric ISO 4217 code -> alphabetic, for the currencies the cases use, written out here rather than looked up.
CURRENCIES = {"840": "USD", "643": "RUB"}


def _case(path: Path) -> str:
    return path.parent.relative_to(FIXTURES).as_posix()


def _files(name: str) -> list[Path]:
    return sorted(FIXTURES.glob(f"*/*/{name}"))


@cache
def _raw(path: Path) -> dict[str, Any]:
    """The fixture's JSON, unwrapped by the test's own means, to check the parser against."""
    document: dict[str, Any] = json.loads(path.read_bytes())
    if set(document) == {"body"}:
        body = document["body"]
        document = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return document


def _brand(path: Path) -> CardBrand:
    return BRANDS[path.relative_to(FIXTURES).parts[0]]


def _parsed(path: Path) -> Any:
    return parse_message(path.read_bytes())


def test_the_fixtures_are_there_and_the_tables_cover_every_case() -> None:
    assert {_case(p) for p in _files("ares.json")} == set(ARES_OUTCOMES)
    assert {_case(p) for p in _files("rreq.json")} == set(RREQ_OUTCOMES)
    assert {_case(p) for p in _files("areq.json")} == set(ARES_OUTCOMES)
    # Both envelopes occur: Mastercard's cases wrap their messages in {"body": base64url}, Visa's are plain JSON.
    wrapped = {_case(p) for p in _files("ares.json") if set(json.loads(p.read_bytes())) == {"body"}}
    assert wrapped == {case for case in ARES_OUTCOMES if case.startswith("mastercard/")}


def _check(path: Path, outcome: Outcome, message_type: type[ARes] | type[RReq]) -> None:
    message = _parsed(path)
    assert isinstance(message, message_type)

    classified = classify(message, brand=_brand(path))

    assert classified.trans_status == outcome.trans_status == _raw(path)["transStatus"]
    assert classified.state is outcome.state
    assert classified.eci == outcome.eci == _raw(path).get("eci")
    assert classified.liability_shifted is outcome.shifted
    assert (classified.liability.eci_class if classified.liability else None) is outcome.eci_class
    assert classified.has_authentication_value == ("authenticationValue" in _raw(path))


@pytest.mark.parametrize("path", _files("ares.json"), ids=_case)
def test_every_ares_classifies_as_the_table_says(path: Path) -> None:
    _check(path, ARES_OUTCOMES[_case(path)], ARes)


@pytest.mark.parametrize("path", _files("rreq.json"), ids=_case)
def test_every_rreq_classifies_as_the_table_says(path: Path) -> None:
    _check(path, RREQ_OUTCOMES[_case(path)], RReq)


@pytest.mark.parametrize("path", _files("ares.json"), ids=_case)
def test_an_ares_state_agrees_with_its_trans_status(path: Path) -> None:
    message = _parsed(path)
    classified = classify(message, brand=_brand(path))
    status = message.trans_status

    assert classified.challenge_follows == (status in (TransStatus.CHALLENGE_REQUIRED, TransStatus.DECOUPLED_CHALLENGE))
    assert (classified.state is A.SUCCEEDED) == (status in "YAI")
    if classified.liability_shifted:
        assert status in "YA"
        assert message.has_authentication_value


@pytest.mark.parametrize("path", [p for p in _files("ares.json") if _raw(p)["transStatus"] == "C"], ids=_case)
def test_a_challenge_ares_names_the_way_in_for_its_channel(path: Path) -> None:
    # Browsers are sent to acsURL; an app SDK opens acsSignedContent, which carries the ACS URL inside a JWS.
    message = _parsed(path)
    areq = _parsed(path.with_name("areq.json"))

    assert isinstance(message, ARes)
    assert isinstance(areq, AReq)
    assert classify(message, brand=_brand(path)).state is A.CHALLENGE_REQUIRED
    assert message.acs_challenge_mandated is True
    if areq.device_channel is DeviceChannel.BROWSER:
        assert message.acs_url is not None
        assert message.acs_url.startswith("https://")
    else:
        assert areq.device_channel is DeviceChannel.APP
        assert message.acs_url is None
        assert message.acs_signed_content is not None


@pytest.mark.parametrize("path", _files("areq.json"), ids=_case)
def test_every_areq_parses_with_its_money_and_without_its_card_number(path: Path) -> None:
    raw = _raw(path)
    message = _parsed(path)

    assert isinstance(message, AReq)
    assert message.three_ds_server_trans_id == raw["threeDSServerTransID"]
    assert message.message_category == raw["messageCategory"]
    if "purchaseAmount" in raw:
        assert message.purchase == Money(int(raw["purchaseAmount"]), CURRENCIES[raw["purchaseCurrency"]])
    else:
        assert message.message_category is MessageCategory.NON_PAYMENT
        assert message.purchase is None
    assert message.account_last4 == raw["acctNumber"][-4:]
    assert message.account_brand == (CardBrand.MASTERCARD if _brand(path) is CardBrand.MASTERCARD else None)
    assert raw["acctNumber"] not in repr(message)


@pytest.mark.parametrize("path", _files("ares.json"), ids=_case)
def test_the_messages_of_a_case_belong_to_one_transaction(path: Path) -> None:
    ares = _parsed(path)
    areq = _parsed(path.with_name("areq.json"))
    assert isinstance(ares, ARes)
    assert isinstance(areq, AReq)

    assert ares.three_ds_server_trans_id == areq.three_ds_server_trans_id
    assert ares.message_version == areq.message_version
    for name, kind in (("creq.json", CReq), ("cres.json", CRes), ("rreq.json", RReq), ("rres.json", RRes)):
        if path.with_name(name).exists():
            follow_up = _parsed(path.with_name(name))
            assert isinstance(follow_up, kind)
            assert follow_up.three_ds_server_trans_id == ares.three_ds_server_trans_id
            assert follow_up.acs_trans_id == ares.acs_trans_id


@pytest.mark.parametrize("path", _files("ares.json") + _files("rreq.json"), ids=_case)
def test_the_cryptogram_is_kept_but_never_shown(path: Path) -> None:
    message = _parsed(path)
    value = _raw(path).get("authenticationValue")

    assert message.authentication_value == value
    if value is not None:
        assert value not in repr(message)
        assert value not in repr(classify(message, brand=_brand(path)))


def _payment_cases_with_an_eci() -> list[Path]:
    # Mastercard's non-payment cases carry N0/N2, which no sandbox outcome produces.
    return [
        path
        for path in _files("ares.json") + _files("rreq.json")
        if "eci" in _raw(path) and _raw(path.with_name("areq.json"))["messageCategory"] == MessageCategory.PAYMENT
    ]


@pytest.mark.parametrize("path", _payment_cases_with_an_eci(), ids=_case)
def test_the_sandbox_eci_matches_every_payment_case_that_carries_one(path: Path) -> None:
    message = _parsed(path)

    assert eci_for(_brand(path), message.trans_status) == message.eci


@pytest.mark.parametrize(
    "path",
    sorted(p for p in FIXTURES.glob("*/*/*.json") if p.name not in READ_BY_THE_ENGINE),
    ids=lambda p: p.relative_to(FIXTURES).as_posix(),
)
def test_the_messages_the_engine_does_not_read_are_refused_as_unknown(path: Path) -> None:
    with pytest.raises(EmvMessageInvalid) as refused:
        parse_message(path.read_bytes())

    assert refused.value.reason == "unknown_message_type"
