"""Every resultCode Checkout v71 can answer /payments with, and what the engine makes of it.

The table holds exactly the values of PaymentResponse.resultCode's enum in the OpenAPI document (a unit test loads
the enum and compares), each decided on its own; wording in the comments is the spec's description of the value.
A value outside the enum (a newer API's) is not guessed at: the charge is reconciled.

    resultCode                   handling            SubmitResult
    Authorised                   CHARGED             SUCCEEDED
    Pending, Received, Success   AWAITING_ADYEN      PENDING_SETTLEMENT (the AUTHORISATION webhook decides)
    IdentifyShopper,             AWAITING_SHOPPER    REQUIRES_ACTION with a NextAction
    ChallengeShopper,
    RedirectShopper,
    PresentToShopper
    Refused                      REFUSED             FAILED refused[_<refusalReasonCode>]
    Error                        ERRORED             FAILED error[_<refusalReasonCode>]
    Cancelled                    CANCELLED           FAILED cancelled
    AuthenticationFinished,      AUTHENTICATION_ONLY FAILED authentication_only
    AuthenticationNotRequired
    PartiallyAuthorised          PARTIALLY_CHARGED   UNKNOWN partially_authorised (reconciled)
    anything else                -                   UNKNOWN unexpected_result_code (reconciled)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class ResultHandling(StrEnum):
    """What a resultCode says about the charge, as far as the engine is concerned."""

    CHARGED = "charged"
    AWAITING_ADYEN = "awaiting_adyen"
    AWAITING_SHOPPER = "awaiting_shopper"
    REFUSED = "refused"
    ERRORED = "errored"
    CANCELLED = "cancelled"
    AUTHENTICATION_ONLY = "authentication_only"
    PARTIALLY_CHARGED = "partially_charged"


RESULT_CODES: Final[Mapping[str, ResultHandling]] = MappingProxyType(
    {
        # "The payment was successfully authorised ... This is a final state."
        "Authorised": ResultHandling.CHARGED,
        # "It is not possible to obtain the final status of the payment": Adyen knows the payment, we wait for it.
        "Pending": ResultHandling.AWAITING_ADYEN,
        # "Received by Adyen, and will be processed."
        "Received": ResultHandling.AWAITING_ADYEN,
        # In the enum without a description for /payments (it is the Orders API's answer). The payment exists
        # (there is a pspReference) and nothing says money moved: the AUTHORISATION webhook says which way it went.
        "Success": ResultHandling.AWAITING_ADYEN,
        # 3-D Secure 2: the issuer wants the device fingerprint, then maybe a challenge, before authorising.
        "IdentifyShopper": ResultHandling.AWAITING_SHOPPER,
        "ChallengeShopper": ResultHandling.AWAITING_SHOPPER,
        # "The shopper should be redirected to an external web page or app to complete the authorisation."
        "RedirectShopper": ResultHandling.AWAITING_SHOPPER,
        # "Additional information that you need to present to a shopper, so that they can use it to complete a
        # payment" (a voucher, a QR code).
        "PresentToShopper": ResultHandling.AWAITING_SHOPPER,
        # "The payment was refused ... This is a final state."
        "Refused": ResultHandling.REFUSED,
        # "There was an error when the payment was being processed ... This is a final state." Under the same key
        # Adyen replays this answer, so a resubmission cannot succeed.
        "Error": ResultHandling.ERRORED,
        # "Cancelled (either by the shopper or the merchant) before processing was completed. This is a final state."
        "Cancelled": ResultHandling.CANCELLED,
        # Answers of authentication-only 3-D Secure integrations, which this adapter never asks for: nothing was
        # authorised, and the same request would get the same answer.
        "AuthenticationFinished": ResultHandling.AUTHENTICATION_ONLY,
        "AuthenticationNotRequired": ResultHandling.AUTHENTICATION_ONLY,
        # "Authorised for a partial amount" (only for merchants who allow partial authorisations): money is held,
        # just not the charge's amount, so neither success nor failure is true.
        "PartiallyAuthorised": ResultHandling.PARTIALLY_CHARGED,
    }
)


def handling_for(result_code: object) -> ResultHandling | None:
    """How a resultCode is handled; None for a value outside the v71 enum (or no value at all)."""
    if not isinstance(result_code, str):
        return None
    return RESULT_CODES.get(result_code)
