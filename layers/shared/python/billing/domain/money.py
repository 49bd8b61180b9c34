"""Money as an integer of minor units beside an ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

# ISO 4217 active codes and their minor-unit exponent. Codes with exponent 0 (JPY, KRW, ...) have no minor
# unit, three-decimal ones (BHD, KWD, ...) have thousandths; getting this wrong misstates amounts 100x.
_TWO_DECIMALS = """
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CNY COP
CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR
JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN
NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP
SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL
"""
_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
    "CLF": 4,
    "UYW": 4,
}
CURRENCY_EXPONENTS = MappingProxyType(_EXPONENTS)

# Largest amount accepted in minor units: fits a PostgreSQL bigint with head room for sums, and is far above
# any single subscription charge (10^15 cents = 10 trillion dollars).
MAX_AMOUNT_MINOR = 10**15


def currency_exponent(currency: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency; KeyError if unknown."""
    return CURRENCY_EXPONENTS[currency]


def is_known_currency(currency: str) -> bool:
    """True for an active ISO 4217 code written in upper case."""
    return currency in CURRENCY_EXPONENTS


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in integer minor units of one currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; True must not become one cent.
        if type(self.amount) is not int:
            raise TypeError("amount must be an int of minor units")
        if not is_known_currency(self.currency):
            raise ValueError(f"unknown currency {self.currency!r}")

    def format(self) -> str:
        """Human form for logs and the demo, e.g. '12.50 EUR' or '1000 JPY'."""
        exponent = currency_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        units, minor = divmod(abs(self.amount), 10**exponent)
        if exponent == 0:
            return f"{sign}{units} {self.currency}"
        return f"{sign}{units}.{minor:0{exponent}d} {self.currency}"
