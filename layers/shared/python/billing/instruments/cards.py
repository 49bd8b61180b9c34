"""Card numbers and expiry dates checked the way a scheme would: characters, brand, length, Luhn, month.

Pure. The vault function is the only caller that ever holds a full card number; what leaves it is a CardNumber's
public parts (brand, IIN, last4), never the number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from billing.domain.errors import (
    CardBrandUnsupported,
    CardExpired,
    CardNumberInvalid,
    CardSecurityCodeInvalid,
    FieldError,
)
from billing.domain.execution import PAN_MAX_DIGITS, PAN_MIN_DIGITS
from billing.instruments.brands import CardBrand, brand_of, co_brand_of, issues_length

# What people type between the digit groups of a card number on a form: spaces and dashes only.
_TYPED_SEPARATORS: Final = re.compile(r"[ -]")
_CVC: Final = re.compile(r"^[0-9]{3,4}$")
# Since the 2022 move to 8-digit BINs, a 16+ digit card's IIN is its first 8 digits; shorter ones keep 6.
IIN8_FROM_LENGTH: Final = 16


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number's last digit satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class CardNumber:
    """A validated card number. `digits` is the PAN itself: it never leaves the vault (repr hides it)."""

    digits: str = field(repr=False)
    brand: CardBrand
    co_brand: CardBrand | None

    @property
    def last4(self) -> str:
        return self.digits[-4:]

    @property
    def iin(self) -> str:
        return self.digits[:8] if len(self.digits) >= IIN8_FROM_LENGTH else self.digits[:6]


def parse_card_number(raw: str, *, field_name: str = "card.number") -> CardNumber:
    """The card number in `raw` (spaces and dashes between groups allowed), or the 422 saying what is wrong.

    CardNumberInvalid for anything that is not a plausible number (characters, length, Luhn);
    CardBrandUnsupported for a well-formed number of an IIN no accepted brand issues. Messages never quote it.
    """
    digits = _TYPED_SEPARATORS.sub("", raw)
    if not digits.isascii() or not digits.isdigit():
        raise CardNumberInvalid([FieldError(field_name, "characters", "a card number has digits only")])
    if not PAN_MIN_DIGITS <= len(digits) <= PAN_MAX_DIGITS:
        raise CardNumberInvalid(
            [FieldError(field_name, "length", f"a card number has {PAN_MIN_DIGITS}-{PAN_MAX_DIGITS} digits")]
        )
    if not luhn_valid(digits):
        raise CardNumberInvalid([FieldError(field_name, "luhn", "the card number's check digit is wrong")])
    brand = brand_of(digits)
    if brand is None:
        raise CardBrandUnsupported([FieldError(field_name, "brand", "no accepted card brand issues this number")])
    if not issues_length(brand, len(digits)):
        raise CardNumberInvalid([FieldError(field_name, "length", f"{brand} does not issue numbers of this length")])
    return CardNumber(digits, brand, co_brand_of(digits))


def expiry_end(exp_month: int, exp_year: int) -> datetime:
    """The first instant after the card's validity: a card is valid through the last moment of its month (UTC)."""
    if not 1 <= exp_month <= 12:
        raise ValueError("exp_month must be 1..12")
    if exp_month == 12:
        return datetime(exp_year + 1, 1, 1, tzinfo=UTC)
    return datetime(exp_year, exp_month + 1, 1, tzinfo=UTC)


def is_expired(exp_month: int, exp_year: int, now: datetime) -> bool:
    """True once the expiry month is over, in UTC."""
    return now >= expiry_end(exp_month, exp_year)


def require_unexpired(exp_month: int, exp_year: int, now: datetime) -> None:
    """Raise CardExpired (422) for a card whose month is over."""
    if is_expired(exp_month, exp_year, now):
        raise CardExpired([FieldError("card.exp_year", "expired", "the card's expiry month is over")])


def require_security_code_shape(cvc: str, brand: CardBrand) -> None:
    """A CVC is 3 digits, American Express's CID 4. Checked only for shape: it is never stored (PCI DSS 3.3.1)."""
    expected = 4 if brand is CardBrand.AMEX else 3
    if not _CVC.fullmatch(cvc) or len(cvc) != expected:
        raise CardSecurityCodeInvalid(
            [FieldError("card.cvc", "format", f"a {brand} security code has {expected} digits")]
        )
