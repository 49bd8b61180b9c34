"""Whether an authentication shifts fraud liability to the issuer, read from the scheme's ECI.

The ECI (electronic commerce indicator) is what the issuer, through the ACS, says the authentication was worth;
the acquirer forwards it with the authentication value in the authorisation. Two conventions cover the brands we
accept: Visa's 05/06/07 (Visa, American Express, JCB, Discover, Diners Club, UnionPay) and Mastercard's 02/01/00
(Mastercard, Maestro). A shift is claimed only where the scheme grants one and a cryptogram backs it; anything
unrecognised is read as no shift, because a wrong "shifted" costs the merchant the chargeback it thought it had
passed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import assert_never

from billing.authentication.states import TransStatus
from billing.instruments.brands import CardBrand


class EciClass(StrEnum):
    FULLY_AUTHENTICATED = "fully_authenticated"
    ATTEMPTED = "attempted"
    NOT_AUTHENTICATED = "not_authenticated"
    # Mastercard 04: Identity Check Insights (data only), never sent to the ACS.
    DATA_ONLY = "data_only"
    # Mastercard 06: out of scope of SCA, or an acquirer exemption.
    SCA_EXEMPT = "sca_exempt"
    # Mastercard N0/N1/N2: a non-payment authentication (card add, say); nothing goes to authorisation.
    NON_PAYMENT = "non_payment"
    # No ECI, or one the brand's convention does not define.
    UNKNOWN = "unknown"


class EciConvention(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    # Cartes Bancaires cards authenticate on their co-brand's network: the caller passes that brand instead.
    NONE = "none"


def eci_convention(brand: CardBrand) -> EciConvention:
    """Whose ECI values a brand's authentications carry."""
    match brand:
        case (
            CardBrand.VISA | CardBrand.AMEX | CardBrand.JCB | CardBrand.DISCOVER | CardBrand.DINERS | CardBrand.UNIONPAY
        ):
            return EciConvention.VISA
        case CardBrand.MASTERCARD | CardBrand.MAESTRO:
            return EciConvention.MASTERCARD
        case CardBrand.CARTES_BANCAIRES:
            return EciConvention.NONE
        case _:
            assert_never(brand)


@dataclass(frozen=True, slots=True)
class LiabilityShift:
    shifted: bool
    eci_class: EciClass


_FULL = LiabilityShift(shifted=True, eci_class=EciClass.FULLY_AUTHENTICATED)
_ATTEMPT = LiabilityShift(shifted=True, eci_class=EciClass.ATTEMPTED)
_NONE = LiabilityShift(shifted=False, eci_class=EciClass.NOT_AUTHENTICATED)
_UNKNOWN = LiabilityShift(shifted=False, eci_class=EciClass.UNKNOWN)
_NON_PAYMENT = LiabilityShift(shifted=False, eci_class=EciClass.NON_PAYMENT)

# Mastercard 07 (a recurring payment authenticated through 3RI, which some acquirers document as shifting) is left
# out until the engine runs 3RI recurring authentications: until then it reads as unknown and never shifts.
ECI_TABLE: Mapping[EciConvention, Mapping[str, LiabilityShift]] = MappingProxyType(
    {
        EciConvention.VISA: MappingProxyType({"05": _FULL, "06": _ATTEMPT, "07": _NONE}),
        EciConvention.MASTERCARD: MappingProxyType(
            {
                "02": _FULL,
                "01": _ATTEMPT,
                "00": _NONE,
                "04": LiabilityShift(shifted=False, eci_class=EciClass.DATA_ONLY),
                "06": LiabilityShift(shifted=False, eci_class=EciClass.SCA_EXEMPT),
                "N0": _NON_PAYMENT,
                "N1": _NON_PAYMENT,
                "N2": _NON_PAYMENT,
            }
        ),
        EciConvention.NONE: MappingProxyType({}),
    }
)

# (authenticated, attempted, not authenticated) in each convention.
_ECIS: Mapping[EciConvention, tuple[str, str, str]] = MappingProxyType(
    {EciConvention.VISA: ("05", "06", "07"), EciConvention.MASTERCARD: ("02", "01", "00")}
)


def liability_for(brand: CardBrand, eci: str | None, *, has_authentication_value: bool) -> LiabilityShift:
    """The scheme's reading of an ECI. A shifting ECI without an authentication value reads as not authenticated
    (Visa 07, Mastercard 00): the issuer's guarantee is the cryptogram, and the acquirer has none to send."""
    convention = eci_convention(brand)
    entry = ECI_TABLE[convention].get(eci) if eci is not None else None
    if entry is None:
        return _UNKNOWN
    if entry.shifted and not has_authentication_value:
        return _NONE
    return entry


def liability_for_outcome(
    brand: CardBrand, trans_status: TransStatus, eci: str | None, *, has_authentication_value: bool
) -> LiabilityShift:
    """The liability of a final ARes or RReq. Only Y and A carry a cryptogram the issuer vouches for: on any other
    transStatus a shifting ECI is read as if it had none, so a self-contradictory message never shifts liability."""
    vouched = has_authentication_value and trans_status in (TransStatus.AUTHENTICATED, TransStatus.ATTEMPTED)
    return liability_for(brand, eci, has_authentication_value=vouched)


def eci_for(brand: CardBrand, trans_status: TransStatus) -> str | None:
    """The ECI a sandbox ACS sets for an outcome; None while a challenge (C, D) is still to decide it, and for a
    brand with no convention of its own."""
    convention = eci_convention(brand)
    if convention is EciConvention.NONE:
        return None
    authenticated, attempted, not_authenticated = _ECIS[convention]
    match trans_status:
        case TransStatus.AUTHENTICATED:
            return authenticated
        case TransStatus.ATTEMPTED:
            return attempted
        case TransStatus.CHALLENGE_REQUIRED | TransStatus.DECOUPLED_CHALLENGE:
            return None
        case (
            TransStatus.NOT_AUTHENTICATED | TransStatus.NOT_PERFORMED | TransStatus.REJECTED | TransStatus.INFORMATIONAL
        ):
            return not_authenticated
        case _:
            assert_never(trans_status)
