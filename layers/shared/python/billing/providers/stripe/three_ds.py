"""3-D Secure at Stripe: what a charge's ThreeDSecureInstruction becomes in a PaymentIntent, and what Stripe reports
of the authentication it ran. Pure: intents and charges are plain dicts, as the SDK's to_dict() gives them.

    mode            sent (payment_method_options.card)
    NONE            nothing: Stripe's SCA engine and Radar decide, as always
    REQUEST         request_three_d_secure=any: authenticate whenever the card supports it
    EXEMPT          nothing: Stripe has no exemption parameter for PaymentIntents; it claims exemptions itself
    AUTHENTICATED   three_d_secure: the engine's result imported (version, ECI, cryptogram, dsTransID, transStatus)

What Stripe reports: the charge's payment_method_details.card.three_d_secure (latest_charge, expanded), an intent
waiting for the customer's authentication (transStatus C), or an intent whose authentication failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, assert_never

from stripe.params import (
    PaymentIntentCreateParamsPaymentMethodOptionsCard,
    PaymentIntentCreateParamsPaymentMethodOptionsCardThreeDSecure,
)

from billing.providers.stripe.statuses import PaymentIntentStatus, StripeObject, intent_status
from billing.rails.three_ds import AuthenticationData, ProviderAuthentication, ThreeDSecureInstruction, ThreeDSecureMode

# What a PaymentIntent request asks Stripe to expand, so the answer carries the charge and its 3-D Secure details
# (unexpanded, latest_charge is only the charge's id). Lists and searches expand each of their items.
EXPAND_LATEST_CHARGE: Final = ("latest_charge",)
EXPAND_LISTED_LATEST_CHARGE: Final = ("data.latest_charge",)

# "Request 3DS whenever the card supports it" (docs.stripe.com/payments/3d-secure/authentication-flow#manual-three-ds);
# "challenge" would also demand a challenge where the issuer would let the customer through frictionlessly.
REQUEST_ANY: Final = "any"

# EMV transStatus while the customer still has to act.
CHALLENGE_PENDING: Final = "C"

# Stripe's three_d_secure.result as an EMV transStatus. "exempted" and "data_share_only" authenticated nobody, so
# they have none: an exemption is reported as such, and data-only (the issuer got the data, nobody was asked)
# shifts no liability either.
TRANS_STATUS_BY_RESULT: Final[Mapping[str, str | None]] = MappingProxyType(
    {
        "authenticated": "Y",
        "attempt_acknowledged": "A",
        "failed": "N",
        "exempted": None,
        "data_share_only": None,
        "not_supported": "U",
        "processing_error": "U",
    }
)
# result "failed" with result_reason "rejected": the issuer refused outright (EMV R), not a failed challenge.
_REJECTED_REASON: Final = "rejected"
_EXEMPTED: Final = "exempted"
# Stripe's exemption_indicator when no exemption was requested or accepted.
_NO_EXEMPTION: Final = "none"
# The last_payment_error code of an intent whose 3-D Secure failed before any charge was made.
AUTHENTICATION_FAILURE_CODE: Final = "payment_intent_authentication_failure"
# next_action types that are 3-D Secure for a card: Stripe.js's challenge or fingerprint, or a redirect to the ACS.
_AUTHENTICATION_ACTIONS: Final = frozenset({"use_stripe_sdk", "redirect_to_url"})


class ThreeDSecureNotSendable(ValueError):
    """The engine's authentication cannot be imported into Stripe (a field Stripe requires is missing)."""


def card_options_for(instruction: ThreeDSecureInstruction) -> PaymentIntentCreateParamsPaymentMethodOptionsCard | None:
    """payment_method_options.card for the instruction, or None when nothing is to be sent. Raises
    ThreeDSecureNotSendable for an authentication Stripe cannot import."""
    match instruction.mode:
        case ThreeDSecureMode.NONE:
            return None
        case ThreeDSecureMode.REQUEST:
            return {"request_three_d_secure": REQUEST_ANY}
        case ThreeDSecureMode.EXEMPT:
            # No PaymentIntent parameter claims a PSD2 exemption (moto is for mail and telephone orders, which
            # these are not): Stripe requests exemptions itself, by its own risk analysis, and the issuer grants
            # them or not. Merchant-initiated charges already say so with off_session=true (params.py). Inventing
            # a parameter would only get the request refused.
            return None
        case ThreeDSecureMode.AUTHENTICATED:
            assert instruction.data is not None  # ThreeDSecureInstruction guarantees it
            return {"three_d_secure": imported_three_d_secure(instruction.data)}
        case _:
            assert_never(instruction.mode)


def imported_three_d_secure(data: AuthenticationData) -> PaymentIntentCreateParamsPaymentMethodOptionsCardThreeDSecure:
    """An authentication the engine ran, as Stripe imports it (docs.stripe.com/payments/payment-intents/
    three-d-secure-import). The cryptogram is the single-use authentication value: it goes in this request only."""
    if not data.ds_trans_id:
        # Stripe's transaction_id is, for 3-D Secure 2, the Directory Server's transaction id, and required.
        raise ThreeDSecureNotSendable("the authentication has no dsTransID, which Stripe requires to import it")
    return {
        "version": data.message_version,
        "electronic_commerce_indicator": data.eci,
        "cryptogram": data.authentication_value,
        "transaction_id": data.ds_trans_id,
        # The outcome the engine holds: the ARes' for a frictionless authentication, the RReq's after a challenge
        # (AuthenticationData keeps only the final one).
        "ares_trans_status": data.trans_status,
    }


def authentication_for(intent: StripeObject) -> ProviderAuthentication | None:
    """What the intent tells of 3-D Secure; None when it says nothing (no authentication ran, or the server does
    not report it: localstripe's charges carry no payment_method_details)."""
    if intent_status(intent) is PaymentIntentStatus.REQUIRES_ACTION and _awaits_authentication(intent):
        return ProviderAuthentication(trans_status=CHALLENGE_PENDING)
    reported = charge_three_d_secure(intent.get("latest_charge"))
    if reported is not None:
        return authentication_from(reported)
    last_error = intent.get("last_payment_error")
    if isinstance(last_error, Mapping) and last_error.get("code") == AUTHENTICATION_FAILURE_CODE:
        # The customer failed (or abandoned) the challenge: Stripe made no charge to report it on.
        return ProviderAuthentication(trans_status="N")
    return None


def charge_three_d_secure(charge: object) -> Mapping[str, Any] | None:
    """A charge's payment_method_details.card.three_d_secure; None for an unexpanded charge (its id) or none."""
    if not isinstance(charge, Mapping):
        return None
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, Mapping) else None
    reported = card.get("three_d_secure") if isinstance(card, Mapping) else None
    return reported if isinstance(reported, Mapping) and reported else None


def authentication_from(reported: Mapping[str, Any]) -> ProviderAuthentication:
    """Stripe's three_d_secure object (a charge's payment_method_details.card) as a ProviderAuthentication."""
    result = _text(reported.get("result"))
    trans_status = TRANS_STATUS_BY_RESULT.get(result) if result is not None else None
    if result == "failed" and reported.get("result_reason") == _REJECTED_REASON:
        trans_status = "R"
    indicator = _text(reported.get("exemption_indicator"))
    exemption = indicator if indicator not in (None, _NO_EXEMPTION) else None
    if result == _EXEMPTED and exemption is None:
        exemption = _EXEMPTED
    return ProviderAuthentication(
        trans_status=trans_status,
        eci=_text(reported.get("electronic_commerce_indicator")),
        message_version=_text(reported.get("version")),
        flow=_text(reported.get("authentication_flow")),
        exemption=exemption,
        ds_trans_id=_text(reported.get("transaction_id")),
        # Stripe never returns the cryptogram of an authentication it ran.
        authentication_value_present=False,
    )


def _awaits_authentication(intent: StripeObject) -> bool:
    next_action = intent.get("next_action")
    return isinstance(next_action, Mapping) and next_action.get("type") in _AUTHENTICATION_ACTIONS


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
