"""Stripe and Adyen webhooks that report money going back: each reversal with its kind, amount, status and references.

Payloads follow the providers' published shapes (Stripe's Event, Charge, Refund and Dispute objects; Adyen's
standard notification items), trimmed of fields the parsers do not read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from billing.domain.errors import WebhookPayloadInvalid
from billing.domain.money import Money
from billing.domain.reversals import ReversalKind, ReversalReport, ReversalStatus
from billing.webhooks import adyen, stripe
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from billing.webhooks.registry import build_registry
from tests.unit.webhooks.factories import NOW_UNIX, adyen_item, adyen_notification, at, raw

_K = ReversalKind
_S = ReversalStatus

OUR_REFUND_ID = "5f0c7a52-9a4e-4d55-8a51-0c6f3b1d2e77"
STRIPE_SECRET = "whsec_test_reversals"
ADYEN_KEY = "0F1E2D3C4B5A69788796A5B4C3D2E1F00F1E2D3C4B5A69788796A5B4C3D2E1F0"


# --- Stripe payloads ----------------------------------------------------------------------------------------------


def stripe_body(event_type: str, obj: dict[str, Any], *, event_id: str = "evt_1PqR") -> bytes:
    """A Stripe Event as delivered to an endpoint."""
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "api_version": "2022-08-01",
            "created": NOW_UNIX,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {"object": obj},
        }
    ).encode()


def stripe_refund(
    refund_id: str = "re_3PqR1",
    *,
    amount: object = 1500,
    currency: object = "eur",
    status: str | None = "succeeded",
    metadata: object = None,
    payment_intent: str | None = "pi_3PqR",
    charge: str | None = "ch_3PqR",
    **extra: Any,
) -> dict[str, Any]:
    """A Refund object; `amount` or `currency` given as None is left out."""
    refund: dict[str, Any] = {
        "id": refund_id,
        "object": "refund",
        "balance_transaction": "txn_3PqR",
        "charge": charge,
        "created": NOW_UNIX,
        "metadata": {} if metadata is None else metadata,
        "payment_intent": payment_intent,
        "reason": None,
        "receipt_number": None,
        "status": status,
        **extra,
    }
    if amount is not None:
        refund["amount"] = amount
    if currency is not None:
        refund["currency"] = currency
    return refund


def stripe_charge(*, refunds: list[dict[str, Any]] | None, amount_refunded: object = 1500) -> dict[str, Any]:
    """A refunded Charge; refunds=None is the shape of API versions since 2022-11-15, which list none."""
    charge: dict[str, Any] = {
        "id": "ch_3PqR",
        "object": "charge",
        "amount": 5000,
        "amount_captured": 5000,
        "amount_refunded": amount_refunded,
        "captured": True,
        "currency": "eur",
        "paid": True,
        "payment_intent": "pi_3PqR",
        "refunded": amount_refunded == 5000,
        "status": "succeeded",
    }
    if refunds is not None:
        charge["refunds"] = {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": "/v1/charges/ch_3PqR/refunds",
        }
    return charge


def stripe_dispute(*, status: str = "needs_response", amount: object = 5000, **extra: Any) -> dict[str, Any]:
    """A Dispute object; amount=None is left out."""
    dispute: dict[str, Any] = {
        "id": "dp_1PqR",
        "object": "dispute",
        "balance_transactions": [],
        "charge": "ch_3PqR",
        "created": NOW_UNIX,
        "currency": "usd",
        "evidence_details": {"due_by": NOW_UNIX + 7 * 86400, "has_evidence": False, "past_due": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": "pi_3PqR",
        "reason": "fraudulent",
        "status": status,
        **extra,
    }
    if amount is not None:
        dispute["amount"] = amount
    return dispute


def only(events: list[WebhookEvent]) -> tuple[WebhookEvent, ReversalReport]:
    [event] = events
    assert event.reversal is not None
    return event, event.reversal


# --- Stripe: charge.refunded --------------------------------------------------------------------------------------


def test_stripe_charge_refunded_reports_each_listed_refund_as_its_own_event() -> None:
    refunds = [
        stripe_refund("re_B", amount=700, status="pending", metadata={"refund_id": OUR_REFUND_ID}),
        stripe_refund("re_A", amount=800, reason="requested_by_customer"),
    ]
    body = stripe_body("charge.refunded", stripe_charge(refunds=refunds), event_id="evt_9")

    events = stripe.parse(body)

    assert [(e.event_id, e.provider_reference, e.outcome) for e in events] == [
        ("evt_9:re_B", "pi_3PqR", WebhookOutcome.REVERSED),
        ("evt_9:re_A", "pi_3PqR", WebhookOutcome.REVERSED),
    ]
    assert [e.reversal for e in events] == [
        ReversalReport(_K.REFUND, Money(700, "EUR"), _S.PENDING, "re_B", OUR_REFUND_ID),
        ReversalReport(_K.REFUND, Money(800, "EUR"), _S.SUCCEEDED, "re_A", None, "requested_by_customer"),
    ]
    assert all(e.event_type == "charge.refunded" and e.occurred_at == at(0) for e in events)


def test_stripe_charge_refunded_with_one_refund_still_derives_its_event_id() -> None:
    body = stripe_body("charge.refunded", stripe_charge(refunds=[stripe_refund("re_1")]), event_id="evt_1")

    event, _ = only(stripe.parse(body))

    assert event.event_id == "evt_1:re_1"


def test_stripe_charge_refunded_reports_the_refund_amount_not_the_payment_amount() -> None:
    event, report = only(stripe.parse(stripe_body("charge.refunded", stripe_charge(refunds=[stripe_refund()]))))

    # The charge was 50.00 EUR; 15.00 EUR of it came back. Nothing here may be compared with the payment's amount.
    assert (event.amount, event.currency) == (None, None)
    assert report.money == Money(1500, "EUR")


@pytest.mark.parametrize("refunds", [None, []], ids=["refunds_not_listed", "empty_listing"])
def test_stripe_charge_refunded_without_listed_refunds_reports_the_cumulative_amount(
    refunds: list[dict[str, Any]] | None,
) -> None:
    body = stripe_body("charge.refunded", stripe_charge(refunds=refunds, amount_refunded=3000), event_id="evt_2")

    event, report = only(stripe.parse(body))

    # No refund id to derive from: the event's own id, and no reference, which marks the amount as the total.
    assert (event.event_id, event.event_type, event.provider_reference) == ("evt_2", "charge.refunded", "pi_3PqR")
    assert report == ReversalReport(_K.REFUND, Money(3000, "EUR"), _S.SUCCEEDED, reference=None)
    assert (event.amount, event.currency) == (None, None)


def test_stripe_charge_refunded_of_a_charge_without_intent_names_the_charge() -> None:
    charge = {**stripe_charge(refunds=[stripe_refund(payment_intent=None)]), "payment_intent": None}

    event, _ = only(stripe.parse(stripe_body("charge.refunded", charge)))

    assert event.provider_reference == "ch_3PqR"


# --- Stripe: Refund events ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", ["refund.created", "refund.updated", "refund.failed", "charge.refund.updated"])
def test_stripe_refund_event_reports_the_refund_with_our_id_from_metadata(event_type: str) -> None:
    refund = stripe_refund("re_7", amount=250, currency="usd", metadata={"refund_id": OUR_REFUND_ID, "x": "y"})

    event, report = only(stripe.parse(stripe_body(event_type, refund, event_id="evt_7")))

    assert (event.event_id, event.event_type, event.provider_reference) == ("evt_7", event_type, "pi_3PqR")
    assert report == ReversalReport(_K.REFUND, Money(250, "USD"), _S.SUCCEEDED, "re_7", OUR_REFUND_ID)
    assert (event.amount, event.currency) == (None, None)


@pytest.mark.parametrize(
    ("stripe_status", "status"),
    [
        ("succeeded", _S.SUCCEEDED),
        ("pending", _S.PENDING),
        ("requires_action", _S.PENDING),
        ("failed", _S.FAILED),
        ("canceled", _S.FAILED),
        # Nullable in Stripe's reference, and a state added later: neither may read as final.
        (None, _S.PENDING),
        ("some_future_state", _S.PENDING),
    ],
)
def test_stripe_refund_status_maps_to_reversal_status(stripe_status: str | None, status: ReversalStatus) -> None:
    _, report = only(stripe.parse(stripe_body("refund.updated", stripe_refund(status=stripe_status))))

    assert report.status is status


def test_stripe_failed_refund_says_why_it_failed() -> None:
    refund = stripe_refund(status="failed", reason="requested_by_customer", failure_reason="expired_or_canceled_card")

    event, report = only(stripe.parse(stripe_body("refund.failed", refund)))

    assert (report.status, report.reason, event.failure_code) == (
        _S.FAILED,
        "expired_or_canceled_card",
        "expired_or_canceled_card",
    )


def test_stripe_refund_without_our_metadata_has_no_our_reference() -> None:
    # A refund made in Stripe's dashboard: nothing of ours to find it by.
    _, report = only(stripe.parse(stripe_body("refund.created", stripe_refund(metadata={}))))

    assert report.our_reference is None


def test_stripe_refund_of_an_intentless_charge_names_the_charge() -> None:
    event, _ = only(stripe.parse(stripe_body("refund.updated", stripe_refund(payment_intent=None))))

    assert event.provider_reference == "ch_3PqR"


def test_stripe_refund_naming_no_payment_is_refused() -> None:
    body = stripe_body("refund.updated", stripe_refund(payment_intent=None, charge=None))

    with pytest.raises(WebhookPayloadInvalid, match=r"data\.object\.payment_intent or data\.object\.charge"):
        stripe.parse(body)


# --- Stripe: disputes ---------------------------------------------------------------------------------------------


def test_stripe_dispute_created_reports_a_chargeback_already_withdrawn() -> None:
    event, report = only(stripe.parse(stripe_body("charge.dispute.created", stripe_dispute(), event_id="evt_d")))

    assert (event.event_id, event.provider_reference, event.failure_code) == ("evt_d", "pi_3PqR", "fraudulent")
    assert report == ReversalReport(_K.CHARGEBACK, Money(5000, "USD"), _S.SUCCEEDED, "dp_1PqR", None, "fraudulent")
    assert (event.amount, event.currency) == (None, None)


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("charge.dispute.funds_withdrawn", _K.CHARGEBACK),
        ("charge.dispute.funds_reinstated", _K.CHARGEBACK_REVERSED),
    ],
)
def test_stripe_dispute_funds_movements_report_under_the_dispute_id(event_type: str, kind: ReversalKind) -> None:
    dispute = stripe_dispute(status="won" if kind is _K.CHARGEBACK_REVERSED else "needs_response", amount=1200)

    event, report = only(stripe.parse(stripe_body(event_type, dispute)))

    assert (event.outcome, event.provider_reference) == (WebhookOutcome.REVERSED, "pi_3PqR")
    assert (report.kind, report.money, report.status, report.reference) == (
        kind,
        Money(1200, "USD"),
        _S.SUCCEEDED,
        "dp_1PqR",
    )


@pytest.mark.parametrize("status", ["warning_needs_response", "warning_under_review"])
def test_stripe_inquiry_opening_is_ignored_as_nothing_was_withdrawn(status: str) -> None:
    [event] = stripe.parse(stripe_body("charge.dispute.created", stripe_dispute(status=status)))

    assert (event.outcome, event.reversal) == (WebhookOutcome.IGNORED, None)


@pytest.mark.parametrize("status", ["won", "lost"])
def test_stripe_dispute_closed_is_ignored_as_the_funds_events_carry_the_money(status: str) -> None:
    [event] = stripe.parse(stripe_body("charge.dispute.closed", stripe_dispute(status=status)))

    assert (event.outcome, event.reversal, event.provider_reference) == (WebhookOutcome.IGNORED, None, None)


def test_stripe_dispute_of_an_intentless_charge_names_the_charge() -> None:
    event, _ = only(stripe.parse(stripe_body("charge.dispute.created", stripe_dispute(payment_intent=None))))

    assert event.provider_reference == "ch_3PqR"


# --- Stripe: refused amounts --------------------------------------------------------------------------------------


BAD_STRIPE_AMOUNTS = [
    pytest.param({"amount": None}, id="no_amount"),
    pytest.param({"currency": None}, id="no_currency"),
    pytest.param({"amount": 15.0}, id="float"),
    pytest.param({"amount": True}, id="bool"),
    pytest.param({"amount": -1500}, id="negative"),
    pytest.param({"amount": "1500"}, id="string"),
    pytest.param({"currency": "zzz"}, id="unknown_currency"),
]


@pytest.mark.parametrize("fields", BAD_STRIPE_AMOUNTS)
@pytest.mark.parametrize("event_type", ["refund.updated", "charge.refunded"])
def test_stripe_refund_without_a_whole_amount_is_refused(event_type: str, fields: dict[str, Any]) -> None:
    refund = stripe_refund(**fields)
    obj = refund if event_type == "refund.updated" else stripe_charge(refunds=[stripe_refund("re_ok"), refund])
    path = r"data\.object" if event_type == "refund.updated" else r"data\.object\.refunds\.data\[1\]"

    with pytest.raises(WebhookPayloadInvalid, match=path):
        stripe.parse(stripe_body(event_type, obj))


@pytest.mark.parametrize(
    "fields",
    [pytest.param({"amount": None}, id="no_amount"), *BAD_STRIPE_AMOUNTS[2:6]],
)
@pytest.mark.parametrize("event_type", ["charge.dispute.created", "charge.dispute.funds_reinstated"])
def test_stripe_dispute_without_a_whole_amount_is_refused(event_type: str, fields: dict[str, Any]) -> None:
    with pytest.raises(WebhookPayloadInvalid, match=r"data\.object\.amount"):
        stripe.parse(stripe_body(event_type, stripe_dispute(**fields)))


@pytest.mark.parametrize("amount_refunded", [None, 30.5, -1], ids=["absent", "float", "negative"])
def test_stripe_cumulative_refund_without_a_whole_amount_is_refused(amount_refunded: object) -> None:
    charge = stripe_charge(refunds=None, amount_refunded=amount_refunded)
    if amount_refunded is None:
        del charge["amount_refunded"]

    with pytest.raises(WebhookPayloadInvalid, match=r"data\.object\.amount_refunded"):
        stripe.parse(stripe_body("charge.refunded", charge))


@pytest.mark.parametrize(
    ("refunds", "path"),
    [
        ({"object": "list"}, r"data\.object\.refunds\.data"),
        ({"object": "list", "data": ["re_1"]}, r"data\.object\.refunds\.data"),
        ("re_1,re_2", r"data\.object\.refunds"),
    ],
    ids=["no_data", "ids_not_objects", "not_a_list_object"],
)
def test_stripe_charge_with_a_malformed_refund_listing_is_refused(refunds: object, path: str) -> None:
    charge = {**stripe_charge(refunds=None), "refunds": refunds}

    with pytest.raises(WebhookPayloadInvalid, match=path):
        stripe.parse(stripe_body("charge.refunded", charge))


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"metadata": "refund_id=1"}, r"data\.object\.metadata"),
        ({"metadata": {"refund_id": 7}}, r"data\.object\.metadata\.refund_id"),
        ({"refund_id": ""}, r"data\.object\.id"),
    ],
    ids=["metadata_not_object", "our_id_not_string", "no_refund_id"],
)
def test_stripe_refund_with_malformed_references_is_refused(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(WebhookPayloadInvalid, match=path):
        stripe.parse(stripe_body("refund.updated", stripe_refund(**fields)))


def test_stripe_signed_refund_delivery_verifies_then_parses_through_the_registry() -> None:
    body = stripe_body("refund.updated", stripe_refund(metadata={"refund_id": OUR_REFUND_ID}))
    delivery = raw("stripe", body, {"Stripe-Signature": stripe.sign(body, STRIPE_SECRET, NOW_UNIX)})

    _, report = only(build_registry()["stripe"].verify_and_parse(delivery, [STRIPE_SECRET]))

    assert report.our_reference == OUR_REFUND_ID


# --- Adyen --------------------------------------------------------------------------------------------------------


def adyen_reversal_item(
    event_code: str,
    success: str = "true",
    *,
    psp_reference: str = "QFQTPCQ8HXSKGK82",
    merchant_reference: str = OUR_REFUND_ID,
    value: int = 700,
    currency: str = "EUR",
    reason: str = "",
) -> dict[str, Any]:
    """A notification item about a modification or dispute of payment 8535296650153317."""
    item = adyen_item(
        psp_reference=psp_reference,
        event_code=event_code,
        success=success,
        original_reference="8535296650153317",
        value=value,
        currency=currency,
        reason=reason,
    )
    item |= {"merchantReference": merchant_reference, "paymentMethod": "visa"}
    return item


@pytest.mark.parametrize(
    ("event_code", "success", "kind", "status", "echoes_ours"),
    [
        ("REFUND", "true", _K.REFUND, _S.SUCCEEDED, True),
        ("REFUND", "false", _K.REFUND, _S.FAILED, True),
        ("REFUND_FAILED", "true", _K.REFUND, _S.FAILED, True),
        ("CANCEL_OR_REFUND", "true", _K.CANCEL_OR_REFUND, _S.SUCCEEDED, True),
        ("CANCEL_OR_REFUND", "false", _K.CANCEL_OR_REFUND, _S.FAILED, True),
        ("CHARGEBACK", "true", _K.CHARGEBACK, _S.SUCCEEDED, False),
        ("SECOND_CHARGEBACK", "true", _K.SECOND_CHARGEBACK, _S.SUCCEEDED, False),
        ("CHARGEBACK_REVERSED", "true", _K.CHARGEBACK_REVERSED, _S.SUCCEEDED, False),
        ("REFUNDED_REVERSED", "true", _K.REFUND_REVERSED, _S.SUCCEEDED, False),
    ],
)
def test_adyen_reversal_item_reports_kind_status_amount_and_references(
    event_code: str, success: str, kind: ReversalKind, status: ReversalStatus, echoes_ours: bool
) -> None:
    # For a dispute the merchantReference is the payment's (our execution id), which names no reversal of ours.
    item = adyen_reversal_item(event_code, success, merchant_reference="exec-or-refund-id")

    event, report = only(adyen.parse(adyen_notification([item], ADYEN_KEY)))

    assert (event.event_id, event.event_type, event.provider_reference, event.outcome) == (
        f"QFQTPCQ8HXSKGK82:{event_code}:{success}",
        event_code,
        "8535296650153317",
        WebhookOutcome.REVERSED,
    )
    assert report == ReversalReport(
        kind, Money(700, "EUR"), status, "QFQTPCQ8HXSKGK82", "exec-or-refund-id" if echoes_ours else None
    )
    assert (event.amount, event.currency) == (None, None)


def test_adyen_refused_refund_keeps_its_reason() -> None:
    item = adyen_reversal_item("REFUND", "false", reason="Insufficient balance on payment")

    event, report = only(adyen.parse(adyen_notification([item])))

    assert (report.status, report.reason, report.our_reference) == (
        _S.FAILED,
        "Insufficient balance on payment",
        OUR_REFUND_ID,
    )
    assert event.failure_code == "Insufficient balance on payment"


def test_adyen_chargeback_reads_its_amount_in_the_currency_exponent_as_sent() -> None:
    item = adyen_reversal_item("CHARGEBACK", value=12345, currency="KWD", reason="Other Fraud-Card Absent Environment")

    _, report = only(adyen.parse(adyen_notification([item])))

    assert (report.money, report.reason) == (Money(12345, "KWD"), "Other Fraud-Card Absent Environment")


@pytest.mark.parametrize(
    ("event_code", "success"),
    [
        ("CHARGEBACK", "false"),
        ("REFUND_FAILED", "false"),
        ("NOTIFICATION_OF_CHARGEBACK", "true"),
        ("CAPTURE", "true"),
        ("REQUEST_FOR_INFORMATION", "true"),
    ],
)
def test_adyen_items_that_move_no_money_back_report_no_reversal(event_code: str, success: str) -> None:
    [event] = adyen.parse(adyen_notification([adyen_reversal_item(event_code, success)]))

    assert (event.outcome, event.reversal) == (WebhookOutcome.IGNORED, None)


def test_adyen_batch_keeps_payment_amounts_and_reversal_amounts_apart() -> None:
    items = [adyen_item(psp_reference="8535296650153317", value=5000), adyen_reversal_item("REFUND", value=700)]

    authorisation, refund = adyen.parse(adyen_notification(items, ADYEN_KEY))

    assert (authorisation.outcome, authorisation.amount, authorisation.reversal) == (
        WebhookOutcome.SUCCEEDED,
        5000,
        None,
    )
    assert refund.reversal is not None
    assert (refund.amount, refund.reversal.money) == (None, Money(700, "EUR"))


def test_adyen_signed_refund_delivery_verifies_then_parses_through_the_registry() -> None:
    body = adyen_notification([adyen_reversal_item("REFUND")], ADYEN_KEY)

    _, report = only(build_registry()["adyen"].verify_and_parse(raw("adyen", body), [ADYEN_KEY]))

    assert report.our_reference == OUR_REFUND_ID


@pytest.mark.parametrize(
    "amount",
    [
        None,
        {"value": 7.0, "currency": "EUR"},
        {"value": True, "currency": "EUR"},
        {"value": -700, "currency": "EUR"},
        {"value": "700", "currency": "EUR"},
        {"value": 700},
        {"currency": "EUR"},
        {"value": 700, "currency": "eur"},
    ],
    ids=["absent", "float", "bool", "negative", "string", "no_currency", "no_value", "lower_case"],
)
@pytest.mark.parametrize("event_code", ["REFUND", "CHARGEBACK"])
def test_adyen_reversal_without_a_whole_amount_is_refused(event_code: str, amount: object) -> None:
    item = adyen_reversal_item(event_code)
    if amount is None:
        del item["amount"]
    else:
        item["amount"] = amount

    with pytest.raises(WebhookPayloadInvalid, match=r"notificationItems\[0\]\.NotificationRequestItem\.amount"):
        adyen.parse(adyen_notification([item]))


def test_adyen_reversal_naming_no_payment_is_refused() -> None:
    item = adyen_reversal_item("REFUND")
    del item["originalReference"]

    with pytest.raises(WebhookPayloadInvalid, match=r"NotificationRequestItem\.originalReference"):
        adyen.parse(adyen_notification([item]))


# --- the event's invariants ---------------------------------------------------------------------------------------


REPORT = ReversalReport(_K.REFUND, Money(100, "EUR"), _S.SUCCEEDED, "re_1")


@pytest.mark.parametrize("outcome", [WebhookOutcome.SUCCEEDED, WebhookOutcome.FAILED, WebhookOutcome.IGNORED])
def test_event_reports_a_reversal_only_when_reversed(outcome: WebhookOutcome) -> None:
    with pytest.raises(ValueError, match="reports no reversal"):
        WebhookEvent("stripe", "evt_1", "charge.refunded", "pi_1", outcome, reversal=REPORT)


@pytest.mark.parametrize("outcome", [WebhookOutcome.REVERSED, WebhookOutcome.IGNORED])
def test_event_carries_a_payment_amount_only_when_it_reports_the_payment(outcome: WebhookOutcome) -> None:
    reversal = REPORT if outcome is WebhookOutcome.REVERSED else None

    with pytest.raises(ValueError, match="no payment amount"):
        WebhookEvent("stripe", "evt_1", "x", "pi_1", outcome, amount=100, currency="EUR", reversal=reversal)


def test_event_of_a_provider_that_states_no_reversal_amount_may_be_reversed_without_report() -> None:
    # GoCardless (charged_back, late_failure_settled) and the sandbox report a reversal but not its amount.
    event = WebhookEvent("gocardless", "EV1", "payments.charged_back", "PM1", WebhookOutcome.REVERSED)

    assert event.reversal is None
