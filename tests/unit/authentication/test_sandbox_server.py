"""build_areq: the AReq the engine sends for a charge, read back by the engine's own parser, card data unshown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from billing.authentication.messages import AReq, parse_message
from billing.authentication.protocol import DeviceChannel, MessageCategory, MessageType, MessageVersion
from billing.authentication.sandbox_server import ChallengeIndicator, build_areq
from billing.authentication.wire import WireMessage
from billing.domain.money import Money
from billing.instruments.brands import CardBrand
from billing.instruments.cards import parse_card_number

PAN = "4000000000003220"
CARD = parse_card_number(PAN)
SERVER_TRANS_ID = UUID("0f6b2c1e-8d3a-4c5b-9e7f-1a2b3c4d5e6f")
NOW = datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC)
AMOUNT = Money(1250, "EUR")


def _areq(
    *,
    exp_month: int = 7,
    exp_year: int = 2031,
    amount: Money = AMOUNT,
    merchant_name: str = "Sandbox Shop",
    notification_url: str = "https://merchant.example.com/3ds/done",
    now: datetime = NOW,
    challenge_indicator: ChallengeIndicator = ChallengeIndicator.NO_PREFERENCE,
    new_id: Callable[[], UUID] = lambda: SERVER_TRANS_ID,
) -> WireMessage:
    return build_areq(
        CARD,
        exp_month=exp_month,
        exp_year=exp_year,
        amount=amount,
        merchant_name=merchant_name,
        notification_url=notification_url,
        now=now,
        challenge_indicator=challenge_indicator,
        new_id=new_id,
    )


def test_build_areq_parses_back_as_the_browser_payment_it_describes() -> None:
    assert parse_message(_areq().to_json()) == AReq(
        message_version=MessageVersion.V2_2_0,
        three_ds_server_trans_id=str(SERVER_TRANS_ID),
        ds_trans_id=None,
        message_category=MessageCategory.PAYMENT,
        device_channel=DeviceChannel.BROWSER,
        challenge_indicator="01",
        purchase=Money(1250, "EUR"),
        account_last4="3220",
        account_brand=CardBrand.VISA,
    )


@pytest.mark.parametrize(
    ("amount", "digits", "number", "exponent"),
    [
        (Money(1250, "EUR"), "1250", "978", "2"),
        (Money(1000, "JPY"), "1000", "392", "0"),
        (Money(12345, "BHD"), "12345", "048", "3"),
        (Money(0, "USD"), "0", "840", "2"),
    ],
)
def test_build_areq_writes_minor_units_with_the_numeric_currency_and_its_exponent(
    amount: Money, digits: str, number: str, exponent: str
) -> None:
    areq = _areq(amount=amount)

    assert (areq.members["purchaseAmount"], areq.members["purchaseCurrency"], areq.members["purchaseExponent"]) == (
        digits,
        number,
        exponent,
    )
    parsed = parse_message(areq.to_json())
    assert isinstance(parsed, AReq)
    assert parsed.purchase == amount


def test_build_areq_writes_the_fixed_protocol_members_and_the_merchant() -> None:
    members = _areq(challenge_indicator=ChallengeIndicator.CHALLENGE_MANDATED).members

    assert members["messageType"] == "AReq"
    assert members["messageVersion"] == "2.2.0"
    assert members["messageCategory"] == "01"
    assert members["deviceChannel"] == "02"
    assert members["threeDSRequestorChallengeInd"] == "04"
    assert members["merchantName"] == "Sandbox Shop"
    assert members["notificationURL"] == "https://merchant.example.com/3ds/done"
    assert members["acctNumber"] == PAN


def test_build_areq_writes_the_expiry_as_yymm_and_the_purchase_date_in_utc() -> None:
    two_hours_east = timezone(timedelta(hours=2))
    members = _areq(exp_month=7, exp_year=2031, now=datetime(2026, 3, 1, 1, 15, 0, tzinfo=two_hours_east)).members

    assert members["cardExpiryDate"] == "3107"
    assert members["purchaseDate"] == "20260228231500"


def test_build_areq_takes_its_transaction_id_from_the_injected_source() -> None:
    ids = iter([UUID(int=1), UUID(int=2)])

    first = _areq(new_id=lambda: next(ids))
    second = _areq(new_id=lambda: next(ids))

    assert first.members["threeDSServerTransID"] == "00000000-0000-0000-0000-000000000001"
    assert second.members["threeDSServerTransID"] == "00000000-0000-0000-0000-000000000002"
    assert _areq() == _areq()


def test_build_areq_members_are_plain_strings_ready_for_json() -> None:
    members = _areq().to_json()

    assert all(type(value) is str for value in members.values())
    assert _areq().message_type is MessageType.AREQ


def test_an_areq_never_shows_the_card_number_or_expiry() -> None:
    areq = _areq()

    for shown in (repr(areq), str(areq), repr([areq])):
        assert PAN not in shown
        assert "3107" not in shown
        assert "acctNumber=<hidden>" in shown
        assert "threeDSServerTransID='0f6b2c1e-8d3a-4c5b-9e7f-1a2b3c4d5e6f'" in shown


def test_a_built_areq_cannot_be_changed_through_the_dict_it_hands_out() -> None:
    areq = _areq()

    areq.to_json()["acctNumber"] = "4242424242424242"

    assert areq.members["acctNumber"] == PAN
    with pytest.raises(TypeError):
        areq.members["acctNumber"] = "4242424242424242"  # type: ignore[index]


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (lambda: _areq(amount=Money(-1, "EUR")), "purchaseAmount"),
        (lambda: _areq(amount=Money(10**16, "EUR")), "purchaseAmount"),
        (lambda: _areq(amount=Money(100, "BGN")), "numeric code"),
        (lambda: _areq(merchant_name=""), "merchantName"),
        (lambda: _areq(merchant_name="M" * 41), "merchantName"),
        (lambda: _areq(notification_url=""), "notificationURL"),
        (lambda: _areq(exp_month=13), "expiry month"),
        (lambda: _areq(exp_month=0), "expiry month"),
        (lambda: _areq(exp_year=31), "expiry year"),
        (lambda: _areq(now=datetime(2026, 3, 1, 12, 0)), "timezone-aware"),
    ],
)
def test_build_areq_refuses_what_the_protocol_cannot_carry_without_quoting_the_card(
    build: Callable[[], WireMessage], names: str
) -> None:
    with pytest.raises(ValueError, match=names) as refused:
        build()

    assert PAN not in str(refused.value)
    assert "3220" not in str(refused.value)
