"""Provider amounts: decimal strings in a currency's major unit, converted exactly to integer minor units."""

from __future__ import annotations

import re
from typing import Final

from billing.domain.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT_MINOR,
    WITHDRAWN_CURRENCY_EXPONENTS,
    currency_exponent,
    is_known_currency,
)

# Optional minus, integer part without leading zeros, optional fraction. No "+", no exponent ("1e3"), no NaN or
# infinity, no thousands separators, no whitespace: anything else is more likely a corrupted cell than an amount.
_DECIMAL: Final = re.compile(r"(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?")
# 10^15 minor units has 16 digits; a longer cell cannot be a valid amount, and refusing it early keeps a corrupt
# file from making Decimal work on megabyte-long numbers.
_MAX_TEXT: Final = 32
_SHOWN: Final = 40


class AmountInvalid(ValueError):
    """An amount cell that is not an exact amount of the currency; `field` names the column, `reason` says why."""

    def __init__(self, field: str, reason: str, text: str) -> None:
        self.field = field
        self.reason = reason
        self.shown: str = text[:_SHOWN]
        super().__init__(f"{field} {self.shown!r}: {reason}")


def is_reportable_currency(currency: str) -> bool:
    """A current ISO 4217 code in upper case, or one withdrawn since the payments it settles were made (e.g. BGN)."""
    return is_known_currency(currency) or currency in WITHDRAWN_CURRENCY_EXPONENTS


# Exponent of every reportable currency, looked up once per amount (a provider file has millions of them).
_EXPONENTS: Final = {code: currency_exponent(code) for code in (*CURRENCY_EXPONENTS, *WITHDRAWN_CURRENCY_EXPONENTS)}
# is_reportable_currency as one set lookup, for the parsers' per-row checks.
REPORTABLE_CURRENCIES: Final = frozenset(code for code in _EXPONENTS if is_reportable_currency(code))
_ZEROS: Final = tuple("0" * n for n in range(max(_EXPONENTS.values()) + 1))


def to_minor_units(text: str, currency: str, *, field: str, empty_is_zero: bool = False) -> int:
    """Exact minor units of `text` (major units of `currency`, e.g. "12.34" EUR -> 1234); AmountInvalid if not exact."""
    if text == "":
        if empty_is_zero:
            return 0
        raise AmountInvalid(field, "is empty", text)
    exponent = _EXPONENTS.get(currency)
    if exponent is None:
        raise AmountInvalid(field, f"currency {currency[:_SHOWN]!r} is not an ISO 4217 code in upper case", text)
    if len(text) > _MAX_TEXT:
        raise AmountInvalid(field, f"is longer than {_MAX_TEXT} characters", text)
    found = _DECIMAL.fullmatch(text)
    if found is None:
        raise AmountInvalid(field, _why_not_decimal(text), text)
    sign, whole, fraction = found.groups()
    # Scaled by moving the decimal point in the digits themselves: exact, and a few times cheaper than Decimal (a
    # provider file has millions of amounts). "12.340" EUR is 12.34 exactly and converts; "12.345" EUR is not an
    # amount of euros and is refused, never rounded.
    if fraction is None:
        digits = whole + _ZEROS[exponent]
    elif len(fraction) >= exponent:
        if fraction[exponent:].strip("0"):
            allowed = "no decimals" if exponent == 0 else f"at most {exponent} decimals"
            raise AmountInvalid(field, f"has more precision than {currency} allows ({allowed})", text)
        digits = whole + fraction[:exponent]
    else:
        digits = whole + fraction + _ZEROS[exponent - len(fraction)]
    # ASCII digits only (the pattern's [0-9]), so int() reads exactly what the pattern checked.
    value = -int(digits) if sign else int(digits)
    if abs(value) > MAX_AMOUNT_MINOR:
        raise AmountInvalid(field, f"exceeds {MAX_AMOUNT_MINOR} minor units", text)
    return value


def _why_not_decimal(text: str) -> str:
    if any(character.isspace() for character in text):
        return "contains whitespace"
    if "," in text:
        # "1,234" is a thousand in one locale and 1.234 in another; guessing would misstate the amount 1000x.
        return "contains a comma (thousands separators and decimal commas are refused; write e.g. 1234.56)"
    lowered = text.lower()
    if "e" in lowered or "nan" in lowered or "inf" in lowered:
        return "is not a plain decimal (no exponents, NaN or infinity)"
    return "is not a plain decimal amount (digits, an optional leading '-' and '.', no leading zeros)"
