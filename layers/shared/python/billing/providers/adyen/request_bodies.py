"""What the adapter sends to Checkout v71: the bodies of /payments, /payments/{psp}/refunds and the cancels.

Field names and enums are the OpenAPI document's (PaymentRequest, PaymentRefundRequest, PaymentCancelRequest,
StandalonePaymentCancelRequest); the contract tests validate every body built here against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, assert_never

from billing.domain.execution import PaymentRail
from billing.providers.adyen.errors import PAYMENT_METHOD_MISSING, PAYMENT_METHOD_UNSUPPORTED, SHOPPER_REFERENCE_MISSING
from billing.providers.adyen.three_ds import three_ds_fields
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund

# The card payment method type of CardDetails; a stored card is named by its token alone.
_STORED_CARD_TYPE: Final = "scheme"


class ChargeNotSendable(Exception):
    """The charge cannot be expressed as an Adyen payment; nothing is sent. `code` is the adapter's failure code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ShopperContext:
    """How Adyen is told who starts the charge, which decides SCA and the card scheme's rules for it."""

    shopper_interaction: str
    recurring_processing_model: str


def shopper_context_for(initiator: ChargeInitiator) -> ShopperContext:
    """Customer in session on a stored card: Ecommerce + CardOnFile (3-D Secure possible). Merchant without the
    customer (a renewal): ContAuth + Subscription, a merchant-initiated transaction exempt from SCA."""
    match initiator:
        case ChargeInitiator.CUSTOMER:
            return ShopperContext("Ecommerce", "CardOnFile")
        case ChargeInitiator.MERCHANT:
            return ShopperContext("ContAuth", "Subscription")
        case _:
            assert_never(initiator)


def payment_request(charge: ProviderCharge, *, merchant_account: str, return_url: str) -> dict[str, Any]:
    """The /payments body for a charge on a stored card, with what 3-D Secure asks of it. Raises ChargeNotSendable
    when the charge has no card token, no shopper, or is not a card charge."""
    if charge.rail is not PaymentRail.CARD:
        raise ChargeNotSendable(PAYMENT_METHOD_UNSUPPORTED, f"the Adyen adapter charges cards, not {charge.rail}")
    if not charge.payment_instrument_id:
        raise ChargeNotSendable(PAYMENT_METHOD_MISSING, "an Adyen charge needs the stored card's token")
    if not charge.customer_reference:
        # Adyen stores card tokens per shopperReference and refuses a stored card without it.
        raise ChargeNotSendable(SHOPPER_REFERENCE_MISSING, "an Adyen stored-card charge needs the shopper reference")
    context = shopper_context_for(charge.initiator)
    body: dict[str, Any] = {
        "amount": {"value": charge.amount, "currency": charge.currency},
        # Our execution id: it comes back as merchantReference in every webhook and in the settlement report.
        "reference": str(charge.execution_id),
        "merchantAccount": merchant_account,
        "paymentMethod": {"type": _STORED_CARD_TYPE, "storedPaymentMethodId": charge.payment_instrument_id},
        "shopperReference": charge.customer_reference,
        "shopperInteraction": context.shopper_interaction,
        "recurringProcessingModel": context.recurring_processing_model,
        # Required by the schema even for merchant-initiated charges, which never redirect.
        "returnUrl": return_url,
        # Only ids: the execution's own metadata may hold what Adyen should not (and is limited to 20 short entries).
        "metadata": {"tenant_id": str(charge.tenant_id), "execution_id": str(charge.execution_id)},
    }
    # What the risk decision asks of 3-D Secure (three_ds.py); none of its fields is one of the above.
    body.update(three_ds_fields(charge.three_ds, return_url=return_url))
    return body


def refund_request(refund: ProviderRefund, *, merchant_account: str) -> dict[str, Any]:
    """The /payments/{pspReference}/refunds body. `reference` is our refund id: what finds a refund whose answer was
    lost, in the REFUND webhook and the settlement report."""
    return {
        "amount": {"value": refund.amount, "currency": refund.currency},
        "merchantAccount": merchant_account,
        "reference": str(refund.refund_id),
    }


def cancel_request(*, merchant_account: str) -> dict[str, Any]:
    """The /payments/{pspReference}/cancels body."""
    return {"merchantAccount": merchant_account}


def standalone_cancel_request(payment_reference: str, *, merchant_account: str) -> dict[str, Any]:
    """The /cancels body: cancels the payment we sent with `reference` = payment_reference, for a payment Adyen has
    not given a pspReference for yet."""
    return {"merchantAccount": merchant_account, "paymentReference": payment_reference}
