"""International Bank Account Numbers (ISO 13616): country lengths, mod-97 check, bank code, SEPA reach.

Pure. A full IBAN is validated and fingerprinted, its bank code and last four characters kept, and then dropped:
it is never stored (a debit is made with the provider's mandate, which holds the account).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from billing.domain.errors import FieldError, IbanCountryUnsupported, IbanInvalid

# IBAN length per country (the SWIFT IBAN registry).
IBAN_LENGTHS: Final[dict[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "BY": 28,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip

# Countries whose accounts the SEPA Direct Debit scheme reaches (EU, EEA, and the scheme's other members).
SEPA_COUNTRIES: Final = frozenset({
    "AD", "AT", "BE", "BG", "CH", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GB", "GI", "GR", "HR", "HU", "IE",
    "IS", "IT", "LI", "LT", "LU", "LV", "MC", "MT", "NL", "NO", "PL", "PT", "RO", "SE", "SI", "SK", "SM", "VA",
})  # fmt: skip

# Where the bank code sits in the BBAN (offset, length), for the countries whose layout we know; others: first 4.
_BANK_CODE: Final[dict[str, tuple[int, int]]] = {
    "AT": (0, 5), "BE": (0, 3), "CH": (0, 5), "CY": (0, 3), "CZ": (0, 4), "DE": (0, 8), "DK": (0, 4), "EE": (0, 2),
    "ES": (0, 4), "FI": (0, 3), "FR": (0, 5), "GB": (0, 4), "GR": (0, 3), "HR": (0, 7), "HU": (0, 3), "IE": (0, 4),
    "IT": (1, 5), "LI": (0, 5), "LT": (0, 5), "LU": (0, 3), "LV": (0, 4), "MC": (0, 5), "NL": (0, 4), "NO": (0, 4),
    "PL": (0, 8), "PT": (0, 4), "SE": (0, 3), "SI": (0, 5), "SK": (0, 4), "SM": (1, 5), "VA": (0, 3),
}  # fmt: skip

_SPACES: Final = re.compile(r"[ \t]")
_SHAPE: Final = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def mod97(iban: str) -> int:
    """ISO 7064 MOD 97-10 of an IBAN (country and check digits moved to the end, letters as 10..35)."""
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for char in rearranged:
        value = int(char, 36)
        remainder = (remainder * (100 if value > 9 else 10) + value) % 97
    return remainder


def with_check_digits(country: str, bban: str) -> str:
    """The IBAN of a country and BBAN, with its check digits computed (tests, the sandbox's test accounts)."""
    check = 98 - mod97(f"{country}00{bban}")
    return f"{country}{check:02d}{bban}"


@dataclass(frozen=True, slots=True)
class Iban:
    """A validated IBAN. `value` is the full account number: dropped after use, never stored (repr hides it)."""

    value: str = field(repr=False)

    @property
    def country(self) -> str:
        return self.value[:2]

    @property
    def last4(self) -> str:
        return self.value[-4:]

    @property
    def bank_code(self) -> str:
        offset, length = _BANK_CODE.get(self.country, (0, 4))
        return self.value[4 + offset : 4 + offset + length]


def normalise_iban(raw: str) -> str:
    """Upper case, without the spaces of its printed form."""
    return _SPACES.sub("", raw).upper()


def parse_iban(raw: str, *, field_name: str = "sepa_debit.iban", sepa_only: bool = True) -> Iban:
    """The IBAN in `raw`, or IbanInvalid (shape, country, length, mod 97) / IbanCountryUnsupported (not SEPA)."""
    value = normalise_iban(raw)
    if not value.isascii() or not _SHAPE.fullmatch(value):
        raise IbanInvalid([FieldError(field_name, "format", "an IBAN is a country code, 2 check digits and a BBAN")])
    expected = IBAN_LENGTHS.get(value[:2])
    if expected is None:
        raise IbanInvalid([FieldError(field_name, "country", "no IBAN is issued in this country")])
    if len(value) != expected:
        raise IbanInvalid([FieldError(field_name, "length", f"an IBAN of {value[:2]} has {expected} characters")])
    if mod97(value) != 1:
        raise IbanInvalid([FieldError(field_name, "checksum", "the IBAN's check digits are wrong")])
    if sepa_only and value[:2] not in SEPA_COUNTRIES:
        raise IbanCountryUnsupported([FieldError(field_name, "country", "SEPA Direct Debit does not reach it")])
    return Iban(value)
