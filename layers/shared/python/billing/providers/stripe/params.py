"""What we send to Stripe: the parameters of a PaymentIntent and of a Refund, and the metadata that finds them.

Every parameter is derived from the charge alone, so each attempt under one idempotency key sends exactly the same
request (Stripe refuses a key replayed with other parameters). Metadata carries our ids, which is how a charge or a
refund whose answer was lost is found again (lookup.py); they are written last and win over a client's keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

from stripe.params import PaymentIntentCreateParams, RefundCreateParams

from billing.domain.execution import PaymentRail
from billing.providers.stripe.amounts import stripe_currency, to_stripe_amount
from billing.providers.stripe.server_profile import StripeServerProfile
from billing.providers.stripe.three_ds import card_options_for
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund
from billing.rails.three_ds import ThreeDSecureMode

TENANT_ID_KEY: Final = "tenant_id"
EXECUTION_ID_KEY: Final = "execution_id"
# The key billing.webhooks.stripe reads to match a refund event to our reversal row.
REFUND_ID_KEY: Final = "refund_id"

# Stripe's metadata limits (https://docs.stripe.com/metadata): 50 keys of at most 40 characters, no square
# brackets (they would read as nested form fields), values of at most 500 characters.
MAX_METADATA_KEYS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_VALUE_LENGTH: Final = 500

# One payment method type per rail, sent explicitly where the server takes it: without it Stripe turns on
# automatic payment methods, which makes a server-side confirm demand a return_url even for a card. The SDK's API
# version (its Stripe-Version header) names the parameter allowed_payment_method_types.
PAYMENT_METHOD_TYPE_BY_RAIL: Final = MappingProxyType(
    {
        PaymentRail.CARD: "card",
        PaymentRail.SEPA_DEBIT: "sepa_debit",
        PaymentRail.ACH_DEBIT: "us_bank_account",
    }
)

# The refund reasons Stripe's API takes; any other reason of ours stays in our own records only.
STRIPE_REFUND_REASONS: Final = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


def charge_metadata(charge: ProviderCharge) -> dict[str, str]:
    """The PaymentIntent's metadata: the client's string entries that fit Stripe's limits, then our ids."""
    ours = {TENANT_ID_KEY: str(charge.tenant_id), EXECUTION_ID_KEY: str(charge.execution_id)}
    return _with_client_entries(ours, charge.metadata)


def refund_metadata(refund: ProviderRefund) -> dict[str, str]:
    """The Refund's metadata: our ids only (a refund has no client metadata)."""
    return {
        TENANT_ID_KEY: str(refund.tenant_id),
        EXECUTION_ID_KEY: str(refund.execution_id),
        REFUND_ID_KEY: str(refund.refund_id),
    }


def payment_intent_params(
    charge: ProviderCharge, *, profile: StripeServerProfile, return_url: str | None
) -> PaymentIntentCreateParams:
    """Create-and-confirm parameters for the charge: one server-side request, no separate confirm. Raises
    three_ds.ThreeDSecureNotSendable for an authentication Stripe cannot import."""
    if charge.payment_instrument_id is None:
        raise ValueError("a Stripe charge needs a payment method token (pm_...) as its payment_instrument_id")
    params: PaymentIntentCreateParams = {
        "amount": to_stripe_amount(charge.amount, charge.currency),
        "currency": stripe_currency(charge.currency),
        "payment_method": charge.payment_instrument_id,
        "confirm": True,
        "metadata": charge_metadata(charge),
    }
    if profile.accepts_allowed_payment_method_types:
        params["allowed_payment_method_types"] = [PAYMENT_METHOD_TYPE_BY_RAIL[charge.rail]]
    if charge.initiator is ChargeInitiator.MERCHANT:
        # Nobody is there to authenticate: Stripe uses the stored credential's exemptions, or declines with
        # authentication_required rather than waiting for a customer who will never come.
        params["off_session"] = True
    elif profile.accepts_return_url and return_url is not None:
        params["return_url"] = return_url
    if profile.accepts_description:
        params["description"] = f"billing execution {charge.execution_id}"
    # 3-D Secure is a card's: a debit never authenticates, whatever the instruction says.
    card_options = card_options_for(charge.three_ds) if charge.rail is PaymentRail.CARD else None
    if card_options is not None:
        params["payment_method_options"] = {"card": card_options}
        if charge.three_ds.mode is ThreeDSecureMode.AUTHENTICATED and profile.accepts_error_on_requires_action:
            # Stripe's advice for imported results: the cardholder is authenticated, so a soft decline fails the
            # attempt rather than starting a second authentication nobody is waiting for.
            params["error_on_requires_action"] = True
    return params


def refund_params(refund: ProviderRefund, *, profile: StripeServerProfile) -> RefundCreateParams:
    """Refund parameters: the PaymentIntent it refunds, how much, and our ids."""
    params: RefundCreateParams = {
        "payment_intent": refund.payment_reference,
        "amount": to_stripe_amount(refund.amount, refund.currency),
        "metadata": refund_metadata(refund),
    }
    if profile.accepts_refund_reason and refund.reason in STRIPE_REFUND_REASONS:
        params["reason"] = refund.reason
    return params


def _with_client_entries(ours: dict[str, str], client: Mapping[str, Any]) -> dict[str, str]:
    # Sorted so the same charge always sends the same metadata, also when some entries must be left out.
    room = MAX_METADATA_KEYS - len(ours)
    kept = [(key, value) for key, value in sorted(client.items()) if key not in ours and _fits(key, value)][:room]
    return {**dict(kept), **ours}


def _fits(key: object, value: object) -> bool:
    return (
        isinstance(key, str)
        and isinstance(value, str)
        and 0 < len(key) <= MAX_METADATA_KEY_LENGTH
        and "[" not in key
        and "]" not in key
        and len(value) <= MAX_METADATA_VALUE_LENGTH
    )
