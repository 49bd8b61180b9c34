"""The sandbox's 3DS Server half: the AReq the engine sends to have a charge's cardholder authenticated.

Pure: the card comes from the vault as a CardNumber, the clock and the transaction id are arguments. The AReq is
EMV 3DS 2.2.0, browser channel (the challenge is a web page), payment category. The message necessarily carries
acctNumber and cardExpiryDate; a WireMessage never shows them in repr(), and no error here quotes either.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final
from uuid import UUID, uuid4

from billing.authentication.currency_numbers import numeric_currency
from billing.authentication.protocol import DeviceChannel, MessageCategory, MessageType, MessageVersion
from billing.authentication.wire import WireMessage
from billing.domain.money import MAX_AMOUNT_MINOR, Money, currency_exponent
from billing.instruments.cards import CardNumber

MESSAGE_VERSION: Final = MessageVersion.V2_2_0
# EMV 3DS 2.2.0 field lengths: merchantName is at most 40 characters, notificationURL at most 256.
MAX_MERCHANT_NAME: Final = 40
MAX_NOTIFICATION_URL: Final = 256
# cardExpiryDate is YYMM: only this century's years can be written in it without ambiguity.
_FIRST_YEAR: Final = 2000
_LAST_YEAR: Final = 2099


class ChallengeIndicator(StrEnum):
    """threeDSRequestorChallengeInd (EMV 3DS 2.2.0): what the 3DS Requestor asks for. Only a request: the ACS
    decides, and may challenge when asked not to (a mandate, its risk view) or answer frictionlessly when asked to
    challenge."""

    NO_PREFERENCE = "01"
    # An exemption (low value, the merchant's own transaction risk analysis) is asked for with "no challenge".
    NO_CHALLENGE = "02"
    CHALLENGE_PREFERRED = "03"
    CHALLENGE_MANDATED = "04"
    NO_CHALLENGE_RISK_ANALYSIS_PERFORMED = "05"
    NO_CHALLENGE_DATA_SHARE_ONLY = "06"
    NO_CHALLENGE_SCA_ALREADY_PERFORMED = "07"
    NO_CHALLENGE_WHITELIST_EXEMPTION = "08"
    CHALLENGE_WHITELIST_PROMPT = "09"


def build_areq(
    card: CardNumber,
    *,
    exp_month: int,
    exp_year: int,
    amount: Money,
    merchant_name: str,
    notification_url: str,
    now: datetime,
    challenge_indicator: ChallengeIndicator = ChallengeIndicator.NO_PREFERENCE,
    new_id: Callable[[], UUID] = uuid4,
) -> WireMessage:
    """The AReq for a browser payment of `amount` on `card`; `notification_url` is where the ACS posts the final
    CRes. ValueError (quoting no card data) for anything the protocol cannot carry."""
    purchase_currency, purchase_exponent = _purchase_currency(amount)
    if not 1 <= len(merchant_name) <= MAX_MERCHANT_NAME:
        raise ValueError(f"merchantName must be 1-{MAX_MERCHANT_NAME} characters")
    if not 1 <= len(notification_url) <= MAX_NOTIFICATION_URL:
        raise ValueError(f"notificationURL must be 1-{MAX_NOTIFICATION_URL} characters")
    if now.utcoffset() is None:
        # purchaseDate is UTC by definition; a naive time would be written as whatever zone the host runs in.
        raise ValueError("now must be timezone-aware")
    return WireMessage(
        {
            "messageType": MessageType.AREQ,
            "messageVersion": MESSAGE_VERSION,
            "messageCategory": MessageCategory.PAYMENT,
            "deviceChannel": DeviceChannel.BROWSER,
            "threeDSServerTransID": str(new_id()),
            "threeDSRequestorChallengeInd": challenge_indicator,
            "acctNumber": card.digits,
            "cardExpiryDate": _card_expiry_date(exp_month, exp_year),
            "purchaseAmount": str(amount.amount),
            "purchaseCurrency": purchase_currency,
            "purchaseExponent": str(purchase_exponent),
            "purchaseDate": now.astimezone(UTC).strftime("%Y%m%d%H%M%S"),
            "merchantName": merchant_name,
            "notificationURL": notification_url,
        }
    )


def _purchase_currency(amount: Money) -> tuple[str, int]:
    """purchaseCurrency (ISO 4217 numeric) and purchaseExponent for the amount, which must be chargeable."""
    if not 0 <= amount.amount <= MAX_AMOUNT_MINOR:
        raise ValueError("purchaseAmount must be between 0 and the largest amount the engine accepts")
    number = numeric_currency(amount.currency)
    if number is None:
        # Withdrawn codes (BGN, ...) are Money but have no current numeric code: nothing new is charged in them.
        raise ValueError(f"{amount.currency} has no current ISO 4217 numeric code")
    # purchaseAmount is the integer of minor units; the exponent says how many of its digits are decimals.
    return number, currency_exponent(amount.currency)


def _card_expiry_date(exp_month: int, exp_year: int) -> str:
    if not 1 <= exp_month <= 12:
        raise ValueError("the card's expiry month must be 1-12")
    if not _FIRST_YEAR <= exp_year <= _LAST_YEAR:
        raise ValueError(f"the card's expiry year must be {_FIRST_YEAR}-{_LAST_YEAR}")
    return f"{exp_year % 100:02d}{exp_month:02d}"
