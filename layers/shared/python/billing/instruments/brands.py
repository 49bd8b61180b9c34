"""Card brands by IIN (the leading digits of a card number): the longest matching prefix wins.

Ranges as the schemes publish them (ISO/IEC 7812 issuer identification numbers). A range is given by its first
and last prefix of one length; a number matches it when its first digits of that length lie in the range. When
several ranges match, the longest prefix decides (Diners 36 vs the Discover/UnionPay 6s never overlap, but a
co-brand's 8-digit range must beat its network's 1-digit one), and the brand says which lengths it issues.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class CardBrand(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    DINERS = "diners"
    JCB = "jcb"
    UNIONPAY = "unionpay"
    MAESTRO = "maestro"
    # Only ever a co-brand here: Cartes Bancaires cards carry a Visa or Mastercard number (and route on either).
    CARTES_BANCAIRES = "cartes_bancaires"


@dataclass(frozen=True, slots=True)
class IinRange:
    """first..last: prefixes of one length (inclusive), e.g. 2221..2720 for Mastercard's 2-series."""

    first: str
    last: str
    brand: CardBrand

    def __post_init__(self) -> None:
        if len(self.first) != len(self.last) or not (self.first + self.last).isdigit() or self.first > self.last:
            raise ValueError(f"bad IIN range {self.first}..{self.last}")

    @property
    def length(self) -> int:
        return len(self.first)

    def matches(self, number: str) -> bool:
        return self.first <= number[: self.length] <= self.last


def _r(first: str, last: str | None, brand: CardBrand) -> IinRange:
    return IinRange(first, last or first, brand)


_V, _M, _A, _D, _DC, _J, _U, _MA = (
    CardBrand.VISA,
    CardBrand.MASTERCARD,
    CardBrand.AMEX,
    CardBrand.DISCOVER,
    CardBrand.DINERS,
    CardBrand.JCB,
    CardBrand.UNIONPAY,
    CardBrand.MAESTRO,
)

# The network brand of a number.
IIN_RANGES: Final[tuple[IinRange, ...]] = (
    _r("4", None, _V),
    _r("51", "55", _M),
    _r("2221", "2720", _M),
    _r("34", None, _A),
    _r("37", None, _A),
    _r("6011", None, _D),
    _r("644", "649", _D),
    _r("65", None, _D),
    _r("300", "305", _DC),
    _r("3095", None, _DC),
    _r("36", None, _DC),
    _r("38", "39", _DC),
    _r("3528", "3589", _J),
    _r("62", None, _U),
    _r("81", None, _U),
    _r("5018", None, _MA),
    _r("5020", None, _MA),
    _r("5038", None, _MA),
    _r("5893", None, _MA),
    _r("6304", None, _MA),
    _r("6759", None, _MA),
    _r("6761", "6763", _MA),
)

# Co-brands carried on another network's number. Cartes Bancaires publishes its BIN list to acquirers only; these
# are the ranges of the public test cards (Stripe's CB/Visa 4000 0025 0000 1001 and CB/Mastercard
# 5555 5525 0000 1001), enough to exercise the co-brand path end to end.
CO_BRAND_RANGES: Final[tuple[IinRange, ...]] = (
    _r("40000025", None, CardBrand.CARTES_BANCAIRES),
    _r("55555525", None, CardBrand.CARTES_BANCAIRES),
)

# Lengths each brand issues (PANs of 13-19 digits only: ISO/IEC 7812 allows 12-digit Maestro numbers, which no
# acquirer we target takes).
BRAND_LENGTHS: Final[dict[CardBrand, frozenset[int]]] = {
    CardBrand.VISA: frozenset({13, 16, 19}),
    CardBrand.MASTERCARD: frozenset({16}),
    CardBrand.AMEX: frozenset({15}),
    CardBrand.DISCOVER: frozenset(range(16, 20)),
    CardBrand.DINERS: frozenset(range(14, 20)),
    CardBrand.JCB: frozenset(range(16, 20)),
    CardBrand.UNIONPAY: frozenset(range(16, 20)),
    CardBrand.MAESTRO: frozenset(range(13, 20)),
    CardBrand.CARTES_BANCAIRES: frozenset({16}),
}


def _longest_match(number: str, ranges: tuple[IinRange, ...]) -> IinRange | None:
    matches = [r for r in ranges if r.matches(number)]
    return max(matches, key=lambda r: r.length) if matches else None


def brand_of(number: str) -> CardBrand | None:
    """The network brand of a card number (digits only), by the longest matching IIN prefix; None if unknown."""
    match = _longest_match(number, IIN_RANGES)
    return match.brand if match else None


def co_brand_of(number: str) -> CardBrand | None:
    """A co-brand the number also carries (Cartes Bancaires), or None."""
    match = _longest_match(number, CO_BRAND_RANGES)
    return match.brand if match else None


def issues_length(brand: CardBrand, length: int) -> bool:
    return length in BRAND_LENGTHS[brand]
