"""Money as an integer of minor units beside an ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

# ISO 4217 current codes (List One as published 2026-01-01) and their minor-unit exponent. Codes with exponent 0
# (JPY, KRW, ...) have no minor unit, three-decimal ones (BHD, KWD, ...) have thousandths; getting this wrong
# misstates amounts 100x. tests/unit/domain/test_money_iso4217.py compares the table with the maintained `iso4217`
# package, so a code ISO adds, withdraws or re-denominates fails the tests until this table follows.
# Fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW) are in: contracts are priced in some of them (Chile's
# Unidad de Fomento) and ISO defines their exponent; whether a provider settles one is its answer at submission.
# Left out on purpose: the X codes that are no country's currency (units of account such as XDR, XUA, XSU and
# XAD, bond-market units XBA-XBD, precious metals XAU XAG XPD XPT, testing XTS, no currency XXX): nothing is
# charged in them, and all but XAD have no minor unit for an integer amount to count.
_TWO_DECIMALS = """
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BMD BND BOB BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY
COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS
INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR
MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP
STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG
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

# Codes this table accepted before ISO 4217 withdrew them. No new charge is accepted in them (is_known_currency),
# but executions stored while they were current must still format and report with the right exponent.
_WITHDRAWN_EXPONENTS: dict[str, int] = {
    "ANG": 2,  # Netherlands Antillean guilder, replaced by the Caribbean guilder (XCG) in 2025
    "BGN": 2,  # Bulgarian lev, replaced by the euro on 2026-01-01
    "ZWL": 2,  # Zimbabwe dollar, replaced by Zimbabwe Gold (ZWG) in 2024
}
WITHDRAWN_CURRENCY_EXPONENTS = MappingProxyType(_WITHDRAWN_EXPONENTS)

# Largest amount accepted in minor units: fits a PostgreSQL bigint with head room for sums, and is far above
# any single subscription charge (10^15 cents = 10 trillion dollars).
MAX_AMOUNT_MINOR = 10**15


def currency_exponent(currency: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency, current or withdrawn; KeyError if unknown."""
    exponent = CURRENCY_EXPONENTS.get(currency)
    return WITHDRAWN_CURRENCY_EXPONENTS[currency] if exponent is None else exponent


def is_known_currency(currency: str) -> bool:
    """True for a current ISO 4217 code written in upper case: the currencies a new charge may be in."""
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
        # Withdrawn codes pass: a stored amount keeps its currency; new charges are checked by is_known_currency.
        if not is_known_currency(self.currency) and self.currency not in WITHDRAWN_CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {self.currency!r}")

    def format(self) -> str:
        """Human form for logs and the demo, e.g. '12.50 EUR' or '1000 JPY'."""
        exponent = currency_exponent(self.currency)
        sign = "-" if self.amount < 0 else ""
        units, minor = divmod(abs(self.amount), 10**exponent)
        if exponent == 0:
            return f"{sign}{units} {self.currency}"
        return f"{sign}{units}.{minor:0{exponent}d} {self.currency}"
