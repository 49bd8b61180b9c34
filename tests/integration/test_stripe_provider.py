"""StripeProvider through the real stripe SDK against a real localstripe, with a fault-injecting proxy in between
for what localstripe cannot produce (Stripe-shaped errors, lost answers, unreachable servers).

One localstripe and one proxy per module; every test makes its own executions, so tests share nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID, uuid4

import pytest
import stripe

from billing.domain.errors import ProviderUnavailable
from billing.domain.execution import PaymentRail
from billing.local.localstripe import LocalStripe, start_localstripe
from billing.providers.stripe import LOCALSTRIPE, STRIPE, StripeCredentials, StripeProvider, StripeTimeouts
from billing.rails.ports import ChargeInitiator, ProviderCharge, ProviderRefund
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    NextActionType,
    RefundOutcome,
    StatusCheck,
    StatusOutcome,
    SubmitOutcome,
    SubmitResult,
    decision_for_outcome,
)
from billing.webhooks import stripe as stripe_webhooks
from billing.webhooks.events import WebhookOutcome
from billing.webhooks.verification import RawWebhook, WebhookHeaders
from tests.stripe_fault_proxy import (
    DROP_AFTER_FORWARDING,
    HOLD_AFTER_FORWARDING,
    Fault,
    FaultProxy,
    refused_api_base,
    stripe_answer,
    stripe_error,
    unaccepting_api_base,
)

pytestmark = pytest.mark.integration

PLATFORM_KEY = "sk_test_platform_key_4242"
CARD_OK = "4242424242424242"
# localstripe: 3-D Secure required (requires_action, next_action use_stripe_sdk).
CARD_3DS = "4000002760003184"
# localstripe: declined when charged (402 card_declined).
CARD_DECLINED = "4000000000000341"
IBAN_SETTLES = "DE89370400440532013000"
# localstripe: the debit is processing, then fails about 0.5 s later.
IBAN_FAILS_LATER = "DE62370400440532013001"
PAYMENT_INTENTS = "/v1/payment_intents"
REFUNDS = "/v1/refunds"


# --- fixtures and helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LocalStripe]:
    with start_localstripe() as running:
        yield running


@pytest.fixture(scope="module")
def proxy_server(server: LocalStripe) -> Iterator[FaultProxy]:
    with FaultProxy(server.api_base) as running:
        yield running


@pytest.fixture
def proxy(proxy_server: FaultProxy) -> Iterator[FaultProxy]:
    proxy_server.reset()
    yield proxy_server
    proxy_server.reset()


@pytest.fixture(scope="module")
def sdk(server: LocalStripe) -> stripe.StripeClient:
    """A bare SDK client for setting up and inspecting localstripe's state."""
    return stripe.StripeClient("sk_test_inspector", base_addresses={"api": server.api_base}, max_network_retries=0)


def platform_credentials(tenant_id: UUID | None) -> StripeCredentials:
    return StripeCredentials(PLATFORM_KEY)


def make_provider(api_base: str, *, connect: float = 2.0, read: float = 10.0) -> StripeProvider:
    return StripeProvider(
        platform_credentials,
        api_base=api_base,
        profile=LOCALSTRIPE,
        return_url="https://shop.example/return",
        timeouts=StripeTimeouts(connect=connect, read=read),
    )


@pytest.fixture(scope="module")
def provider(server: LocalStripe) -> StripeProvider:
    return make_provider(server.api_base)


@pytest.fixture(scope="module")
def proxied(proxy_server: FaultProxy) -> StripeProvider:
    return make_provider(proxy_server.api_base)


def card(sdk: stripe.StripeClient, number: str) -> str:
    params: Any = {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    return str(sdk.v1.payment_methods.create(params=params).id)


def sepa_debit(sdk: stripe.StripeClient, iban: str) -> str:
    return str(sdk.v1.payment_methods.create(params={"type": "sepa_debit", "sepa_debit": {"iban": iban}}).id)


def new_charge(payment_method: str, **overrides: Any) -> ProviderCharge:
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "amount": 1250,
        "currency": "EUR",
        "rail": PaymentRail.CARD,
        "payment_instrument_id": payment_method,
        "metadata": {"invoice": "INV-7"},
        "created_at": datetime.now(UTC),
    }
    return ProviderCharge(**{**fields, **overrides})


def key_of(charge: ProviderCharge) -> str:
    return f"{charge.tenant_id}:{charge.execution_id}"


def intents_of(sdk: stripe.StripeClient, execution_id: UUID) -> list[dict[str, Any]]:
    """Every PaymentIntent localstripe holds for the execution (the whole list, matched by metadata)."""
    found: list[dict[str, Any]] = []
    params: Any = {"limit": 100}
    while True:
        page = sdk.v1.payment_intents.list(params=params)
        items = [item.to_dict() for item in page.data]
        found += [i for i in items if (i.get("metadata") or {}).get("execution_id") == str(execution_id)]
        if not page.has_more or not items:
            return found
        params["starting_after"] = items[-1]["id"]


def intent_status(sdk: stripe.StripeClient, reference: str) -> str:
    return str(sdk.v1.payment_intents.retrieve(reference).status)


def authenticate(sdk: stripe.StripeClient, result: SubmitResult, *, success: bool) -> None:
    """Play the customer at the 3-D Secure challenge (localstripe's test-only endpoint)."""
    assert result.next_action is not None
    assert result.next_action.client_secret is not None
    sdk.raw_request(
        "post",
        f"{PAYMENT_INTENTS}/{result.provider_reference}/_authenticate",
        client_secret=result.next_action.client_secret,
        success="true" if success else "false",
    )


def until(predicate: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait for a state change localstripe makes on its own (asynchronous debits), with a deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        pause.wait(0.05)


def assert_table_agrees(provider: StripeProvider, result: SubmitResult) -> None:
    assert result.error is not None
    assert provider.decision_for(result.error.code) is decision_for_outcome(result.outcome)


# --- PaymentIntent statuses --------------------------------------------------------------------------------------


def test_submit_card_succeeds_and_check_status_reports_paid(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_OK))

    result = provider.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.provider_reference is not None
    assert provider.check_status(provider_reference=result.provider_reference).outcome is StatusOutcome.PAID
    by_key = provider.check_status(idempotency_key=key_of(charge))
    assert (by_key.outcome, by_key.provider_reference) == (StatusOutcome.PAID, result.provider_reference)


def test_submit_sends_amount_currency_and_authoritative_metadata(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    # Given client metadata that tries to claim another execution
    charge = new_charge(card(sdk, CARD_OK), metadata={"invoice": "INV-9", "execution_id": "not-this-one"})

    result = provider.submit(charge, key_of(charge))

    assert result.provider_reference is not None
    intent = sdk.v1.payment_intents.retrieve(result.provider_reference).to_dict()
    assert (intent["amount"], intent["currency"]) == (1250, "eur")
    assert intent["metadata"] == {
        "invoice": "INV-9",
        "tenant_id": str(charge.tenant_id),
        "execution_id": str(charge.execution_id),
    }


def test_submit_in_isk_sends_stripes_two_decimal_amount(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_OK), amount=5, currency="ISK")

    result = provider.submit(charge, key_of(charge))

    assert result.provider_reference is not None
    assert sdk.v1.payment_intents.retrieve(result.provider_reference).amount == 500


def test_merchant_initiated_charge_is_sent_off_session_with_the_idempotency_key(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_OK), initiator=ChargeInitiator.MERCHANT)

    result = proxied.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.SUCCEEDED
    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    assert sent.form["off_session"] == ["true"]
    assert sent.form["confirm"] == ["true"]
    assert sent.headers["Idempotency-Key"] == key_of(charge)
    # localstripe refuses return_url (the profile says so), and an off-session charge has nobody to return.
    assert "return_url" not in sent.form


def test_three_ds_requires_action_then_authenticated_is_paid(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_3DS))

    result = provider.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.next_action is not None
    assert result.next_action.type is NextActionType.USE_PROVIDER_SDK
    assert result.next_action.client_secret is not None
    assert result.next_action.client_secret.startswith(f"{result.provider_reference}_secret_")
    assert result.provider_reference is not None
    pending = provider.check_status(provider_reference=result.provider_reference)
    assert pending.outcome is StatusOutcome.REQUIRES_ACTION

    authenticate(sdk, result, success=True)

    assert provider.check_status(provider_reference=result.provider_reference).outcome is StatusOutcome.PAID


def test_three_ds_authentication_failure_is_failed_and_the_intent_canceled(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_3DS))
    result = provider.submit(charge, key_of(charge))
    assert result.provider_reference is not None

    authenticate(sdk, result, success=False)
    status = provider.check_status(provider_reference=result.provider_reference)

    assert status.outcome is StatusOutcome.FAILED
    assert status.error_code == "payment_intent_authentication_failure"
    # No later confirm with the client secret can move money for the failed execution.
    assert intent_status(sdk, result.provider_reference) == "canceled"
    again = provider.check_status(provider_reference=result.provider_reference)
    assert (again.outcome, again.error_code) == (StatusOutcome.FAILED, "payment_intent_authentication_failure")


def test_declined_card_fails_with_card_declined_and_the_intent_is_canceled(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_DECLINED))

    result = provider.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.FAILED
    assert (result.error_code, result.http_status) == ("card_declined", 402)
    assert_table_agrees(provider, result)
    assert result.provider_reference is not None
    assert intent_status(sdk, result.provider_reference) == "canceled"
    status = provider.check_status(idempotency_key=key_of(charge))
    assert (status.outcome, status.error_code) == (StatusOutcome.FAILED, "card_declined")


def test_resubmitting_a_declined_charge_reports_the_decline_and_charges_nothing_more(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_DECLINED))
    first = provider.submit(charge, key_of(charge))

    again = provider.submit(dataclasses.replace(charge, attempt=2), key_of(charge))

    assert (again.outcome, again.error_code, again.provider_reference) == (
        SubmitOutcome.FAILED,
        "card_declined",
        first.provider_reference,
    )
    assert len(intents_of(sdk, charge.execution_id)) == 1


def test_debit_processing_is_pending_settlement_then_its_failure_is_reported(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(sepa_debit(sdk, IBAN_FAILS_LATER), rail=PaymentRail.SEPA_DEBIT)

    result = provider.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.PENDING_SETTLEMENT
    assert result.provider_reference is not None
    reference = result.provider_reference
    checks: list[StatusCheck] = []

    def settled() -> bool:
        checks.append(provider.check_status(provider_reference=reference))
        return checks[-1].outcome is not StatusOutcome.STILL_PENDING

    until(settled)
    assert checks[0].outcome is StatusOutcome.STILL_PENDING
    assert (checks[-1].outcome, checks[-1].error_code) == (StatusOutcome.FAILED, "card_declined")
    assert intent_status(sdk, reference) == "canceled"


def test_debit_that_settles_reports_paid(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(sepa_debit(sdk, IBAN_SETTLES), rail=PaymentRail.SEPA_DEBIT)

    result = provider.submit(charge, key_of(charge))

    assert result.provider_reference is not None
    assert provider.check_status(provider_reference=result.provider_reference).outcome is StatusOutcome.PAID


def test_charge_without_payment_method_fails_before_asking(provider: StripeProvider) -> None:
    charge = new_charge("unused", payment_instrument_id=None)

    result = provider.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "parameter_missing")


# --- cancel -----------------------------------------------------------------------------------------------------


def test_cancel_a_requires_action_intent_is_canceled_and_stays_canceled(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_3DS))
    result = provider.submit(charge, key_of(charge))
    assert result.provider_reference is not None

    canceled = provider.cancel(result.provider_reference, key_of(charge) + ":cancel")
    repeated = provider.cancel(result.provider_reference, key_of(charge) + ":cancel")

    assert canceled.outcome is StatusOutcome.CANCELED
    assert repeated.outcome is StatusOutcome.CANCELED
    assert provider.check_status(provider_reference=result.provider_reference).outcome is StatusOutcome.CANCELED
    assert provider.check_status(idempotency_key=key_of(charge)).outcome is StatusOutcome.CANCELED


def test_cancel_after_the_customer_paid_reports_paid(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_3DS))
    result = provider.submit(charge, key_of(charge))
    authenticate(sdk, result, success=True)
    assert result.provider_reference is not None

    after = provider.cancel(result.provider_reference, key_of(charge) + ":cancel")

    assert (after.outcome, after.provider_reference) == (StatusOutcome.PAID, result.provider_reference)


def test_cancel_of_an_unknown_intent_is_not_found(provider: StripeProvider) -> None:
    assert provider.cancel("pi_doesnotexist", "k:cancel").outcome is StatusOutcome.NOT_FOUND


def test_resubmitting_a_canceled_intent_reports_it_failed_canceled(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_3DS))
    result = provider.submit(charge, key_of(charge))
    assert result.provider_reference is not None
    provider.cancel(result.provider_reference, key_of(charge) + ":cancel")

    again = provider.submit(dataclasses.replace(charge, attempt=2), key_of(charge))

    assert (again.outcome, again.error_code, again.provider_reference) == (
        SubmitOutcome.FAILED,
        "canceled",
        result.provider_reference,
    )


# --- lost answers and resubmissions ------------------------------------------------------------------------------


def test_localstripe_ignores_the_idempotency_key(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    # Why resubmissions look first: the same key twice on a first attempt makes two intents at localstripe.
    charge = new_charge(card(sdk, CARD_OK))

    provider.submit(charge, key_of(charge))
    provider.submit(charge, key_of(charge))

    assert LOCALSTRIPE.honours_idempotency_key is False
    assert len(intents_of(sdk, charge.execution_id)) == 2


def test_answer_lost_after_sending_is_unknown_then_found_and_never_charged_twice(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    # Given the first submit's answer is lost after localstripe made the intent
    charge = new_charge(card(sdk, CARD_OK))
    proxy.inject("POST", PAYMENT_INTENTS, DROP_AFTER_FORWARDING)

    first = proxied.submit(charge, key_of(charge))

    assert (first.outcome, first.error_code) == (SubmitOutcome.UNKNOWN, OUTCOME_UNKNOWN_CODE)
    assert_table_agrees(proxied, first)
    # Then check_status by key finds it by the execution id it carries
    found = proxied.check_status(idempotency_key=key_of(charge))
    assert found.outcome is StatusOutcome.PAID
    # And resubmissions report it without making another, though localstripe ignores the key
    for attempt in (2, 3, 4):
        again = proxied.submit(dataclasses.replace(charge, attempt=attempt), key_of(charge))
        assert (again.outcome, again.provider_reference) == (SubmitOutcome.SUCCEEDED, found.provider_reference)
    assert [i["id"] for i in intents_of(sdk, charge.execution_id)] == [found.provider_reference]
    assert len(proxy.seen("POST", PAYMENT_INTENTS)) == 1


def test_read_timeout_after_sending_is_unknown_and_the_intent_is_found(
    proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    impatient = make_provider(proxy.api_base, read=0.3)
    charge = new_charge(card(sdk, CARD_3DS))
    proxy.inject("POST", PAYMENT_INTENTS, HOLD_AFTER_FORWARDING)

    first = impatient.submit(charge, key_of(charge))

    assert (first.outcome, first.error_code) == (SubmitOutcome.UNKNOWN, OUTCOME_UNKNOWN_CODE)
    assert "ReadTimeout" in (first.error.message if first.error else "")
    assert impatient.check_status(idempotency_key=key_of(charge)).outcome is StatusOutcome.REQUIRES_ACTION
    again = impatient.submit(dataclasses.replace(charge, attempt=2), key_of(charge))
    assert again.outcome is SubmitOutcome.REQUIRES_ACTION
    assert again.next_action is not None
    assert again.next_action.client_secret is not None
    assert len(intents_of(sdk, charge.execution_id)) == 1


def test_lookup_failure_on_a_resubmission_retries_and_creates_nothing(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_OK), attempt=2)
    proxy.inject("GET", PAYMENT_INTENTS, stripe_error(500, "api_error"))

    result = proxied.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.TRANSIENT_ERROR, "payment_intent_lookup_failed")
    assert_table_agrees(proxied, result)
    assert proxy.seen("POST", PAYMENT_INTENTS) == []
    assert intents_of(sdk, charge.execution_id) == []


def test_check_status_by_key_of_a_charge_never_made_is_not_found(provider: StripeProvider) -> None:
    assert provider.check_status(idempotency_key=f"{uuid4()}:{uuid4()}").outcome is StatusOutcome.NOT_FOUND


def test_check_status_by_unknown_reference_is_not_found(provider: StripeProvider) -> None:
    assert provider.check_status(provider_reference="pi_doesnotexist").outcome is StatusOutcome.NOT_FOUND


# --- lookups with what real Stripe offers (search, list filters), answered by the proxy -----------------------


def canned_intent(charge: ProviderCharge, reference: str, status: str = "succeeded") -> dict[str, Any]:
    metadata = {"tenant_id": str(charge.tenant_id), "execution_id": str(charge.execution_id)}
    return {"id": reference, "object": "payment_intent", "status": status, "metadata": metadata}


def page(*intents: dict[str, Any], has_more: bool = False, search: bool = False) -> Fault:
    kind = {"object": "search_result", "next_page": None} if search else {"object": "list"}
    return stripe_answer({**kind, "data": list(intents), "has_more": has_more, "url": PAYMENT_INTENTS})


def test_real_stripe_lookup_searches_by_execution_id_first(proxy: FaultProxy) -> None:
    real = StripeProvider(platform_credentials, api_base=proxy.api_base, profile=STRIPE)
    charge = new_charge("pm_card_visa", attempt=2)
    proxy.inject("GET", f"{PAYMENT_INTENTS}/search", page(canned_intent(charge, "pi_searched"), search=True))

    result = real.submit(charge, key_of(charge))

    assert (result.outcome, result.provider_reference) == (SubmitOutcome.SUCCEEDED, "pi_searched")
    [search] = proxy.seen("GET", f"{PAYMENT_INTENTS}/search")
    assert search.params["query"] == [f"metadata['execution_id']:'{charge.execution_id}'"]
    assert proxy.seen("POST", PAYMENT_INTENTS) == []


def test_real_stripe_lookup_lists_from_the_executions_creation_when_search_lags(proxy: FaultProxy) -> None:
    # Given search has not indexed the intent yet, and the list holds it on its second page
    real = StripeProvider(platform_credentials, api_base=proxy.api_base, profile=STRIPE)
    charge = new_charge("pm_card_visa", attempt=2)
    stranger = canned_intent(new_charge("pm_other"), "pi_stranger")
    proxy.inject("GET", f"{PAYMENT_INTENTS}/search", page(search=True))
    proxy.inject("GET", PAYMENT_INTENTS, page(stranger, has_more=True))
    proxy.inject("GET", PAYMENT_INTENTS, page(canned_intent(charge, "pi_listed", "processing")))

    result = real.submit(charge, key_of(charge))

    assert (result.outcome, result.provider_reference) == (SubmitOutcome.PENDING_SETTLEMENT, "pi_listed")
    first, second = proxy.seen("GET", PAYMENT_INTENTS)
    assert charge.created_at is not None
    since = int((charge.created_at - timedelta(minutes=10)).timestamp())
    assert first.params["created[gte]"] == second.params["created[gte]"] == [str(since)]
    assert second.params["starting_after"] == ["pi_stranger"]


def test_real_stripe_lookup_by_key_lists_the_last_two_days(proxy: FaultProxy) -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    real = StripeProvider(platform_credentials, api_base=proxy.api_base, profile=STRIPE, clock=lambda: now)
    proxy.inject("GET", f"{PAYMENT_INTENTS}/search", page(search=True))
    proxy.inject("GET", PAYMENT_INTENTS, page())

    status = real.check_status(idempotency_key=f"{uuid4()}:{uuid4()}")

    assert status.outcome is StatusOutcome.NOT_FOUND
    [listed] = proxy.seen("GET", PAYMENT_INTENTS)
    assert listed.params["created[gte]"] == [str(int((now - timedelta(hours=48)).timestamp()))]


def test_several_intents_for_one_execution_report_the_one_that_moved_money(
    proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    real = StripeProvider(platform_credentials, api_base=proxy.api_base, profile=STRIPE)
    charge = new_charge("pm_card_visa")
    duplicates = [canned_intent(charge, "pi_a", "canceled"), canned_intent(charge, "pi_b", "succeeded")]
    proxy.inject("GET", f"{PAYMENT_INTENTS}/search", page(*duplicates, search=True))

    with caplog.at_level(logging.WARNING, logger="billing.providers.stripe"):
        status = real.check_status(idempotency_key=key_of(charge))

    assert (status.outcome, status.provider_reference) == (StatusOutcome.PAID, "pi_b")
    assert "several PaymentIntents for one execution" in caplog.text


# --- errors localstripe cannot produce ----------------------------------------------------------------------------

ERROR_CASES = [
    pytest.param(stripe_error(429, "invalid_request_error", code="rate_limit"), SubmitOutcome.TRANSIENT_ERROR,
                 "rate_limit", id="429"),
    pytest.param(stripe_error(429, "invalid_request_error", code="rate_limit", should_retry=False),
                 SubmitOutcome.TRANSIENT_ERROR, "rate_limit", id="429-should-retry-false"),
    pytest.param(stripe_error(429, "invalid_request_error", code="lock_timeout", should_retry=True),
                 SubmitOutcome.TRANSIENT_ERROR, "lock_timeout", id="429-lock-timeout"),
    pytest.param(stripe_error(500, "api_error", should_retry=True), SubmitOutcome.TRANSIENT_ERROR,
                 "api_error_retry_safe", id="500-should-retry-true"),
    pytest.param(stripe_error(500, "api_error", should_retry=False), SubmitOutcome.UNKNOWN, "api_error",
                 id="500-should-retry-false"),
    pytest.param(stripe_error(500, "api_error"), SubmitOutcome.UNKNOWN, "api_error", id="500-no-header"),
    pytest.param(stripe_error(402, "card_error", code="card_declined", decline_code="insufficient_funds"),
                 SubmitOutcome.FAILED, "insufficient_funds", id="402-insufficient-funds"),
    pytest.param(stripe_error(402, "card_error", code="expired_card"), SubmitOutcome.FAILED, "expired_card",
                 id="402-expired-card"),
    pytest.param(stripe_error(402, "card_error", code="incorrect_cvc"), SubmitOutcome.FAILED, "incorrect_cvc",
                 id="402-incorrect-cvc"),
    pytest.param(stripe_error(402, "card_error", code="card_declined", decline_code="decline_invented_tomorrow"),
                 SubmitOutcome.FAILED, "card_declined", id="402-unknown-decline-code"),
    pytest.param(stripe_error(409, "invalid_request_error", code="idempotency_key_in_use"), SubmitOutcome.UNKNOWN,
                 "idempotency_key_in_use", id="409-key-in-use"),
    pytest.param(stripe_error(400, "idempotency_error", message="Keys can only be used with the same parameters"),
                 SubmitOutcome.UNKNOWN, "idempotency_error", id="400-idempotency-error"),
    pytest.param(stripe_error(401, "invalid_request_error", message="Invalid API Key provided: sk_test_****4242"),
                 SubmitOutcome.TRANSIENT_ERROR, "authentication_error", id="401"),
    pytest.param(stripe_error(403, "invalid_request_error", code="secret_key_required"),
                 SubmitOutcome.TRANSIENT_ERROR, "secret_key_required", id="403"),
    pytest.param(stripe_error(400, "invalid_request_error", code="parameter_unknown"), SubmitOutcome.FAILED,
                 "parameter_unknown", id="400-invalid-request"),
]  # fmt: skip


@pytest.mark.parametrize(("fault", "outcome", "code"), ERROR_CASES)
def test_stripe_error_is_mapped_by_the_decision_table(
    proxied: StripeProvider,
    proxy: FaultProxy,
    sdk: stripe.StripeClient,
    fault: Fault,
    outcome: SubmitOutcome,
    code: str,
) -> None:
    charge = new_charge(card(sdk, CARD_OK))
    proxy.inject("POST", PAYMENT_INTENTS, fault)

    result = proxied.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (outcome, code)
    assert result.error is not None
    assert (result.error.http_status, result.error.request_id) == (fault.status, "req_fault")
    assert result.error.retryable is (outcome is SubmitOutcome.TRANSIENT_ERROR)
    assert_table_agrees(proxied, result)
    # The SDK never retries on its own: the engine's retry queue does, after reading this outcome.
    assert len(proxy.seen("POST", PAYMENT_INTENTS)) == 1


def test_decline_naming_its_intent_fails_with_that_reference_and_cancels_it(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    # Given a real intent left open by a decline, as Stripe's 402 names it
    open_intent = sdk.v1.payment_intents.create(params={"amount": 1250, "currency": "eur"}).to_dict()
    assert open_intent["status"] == "requires_payment_method"
    decline = stripe_error(
        402, "card_error", code="card_declined", decline_code="insufficient_funds", payment_intent=open_intent
    )
    charge = new_charge(card(sdk, CARD_OK))
    proxy.inject("POST", PAYMENT_INTENTS, decline)

    result = proxied.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "insufficient_funds")
    assert result.provider_reference == open_intent["id"]
    assert intent_status(sdk, open_intent["id"]) == "canceled"
    [cancel] = proxy.seen("POST", f"{PAYMENT_INTENTS}/{open_intent['id']}/cancel")
    assert cancel.headers["Idempotency-Key"] == key_of(charge) + ":cancel-declined"


def test_cancel_failing_after_a_decline_still_reports_the_decline(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient, caplog: pytest.LogCaptureFixture
) -> None:
    open_intent = sdk.v1.payment_intents.create(params={"amount": 1250, "currency": "eur"}).to_dict()
    reference = open_intent["id"]
    proxy.inject(
        "POST", PAYMENT_INTENTS, stripe_error(402, "card_error", code="expired_card", payment_intent=open_intent)
    )
    proxy.inject("POST", f"{PAYMENT_INTENTS}/{reference}/cancel", stripe_error(500, "api_error"))
    charge = new_charge(card(sdk, CARD_OK))

    with caplog.at_level(logging.WARNING, logger="billing.providers.stripe"):
        result = proxied.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code, result.provider_reference) == (
        SubmitOutcome.FAILED,
        "expired_card",
        reference,
    )
    assert "could not cancel a failed PaymentIntent" in caplog.text
    assert intent_status(sdk, reference) == "requires_payment_method"


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(stripe_error(500, "api_error"), id="500"),
        pytest.param(stripe_error(429, "invalid_request_error", code="rate_limit"), id="429"),
        pytest.param(stripe_error(401, "invalid_request_error"), id="401"),
    ],
)
def test_check_status_raises_unavailable_when_stripe_could_not_answer(
    proxied: StripeProvider, proxy: FaultProxy, fault: Fault
) -> None:
    proxy.inject("GET", f"{PAYMENT_INTENTS}/pi_any", fault)
    proxy.inject("GET", PAYMENT_INTENTS, fault)

    with pytest.raises(ProviderUnavailable) as by_reference:
        proxied.check_status(provider_reference="pi_any")
    with pytest.raises(ProviderUnavailable):
        proxied.check_status(idempotency_key=f"{uuid4()}:{uuid4()}")

    assert by_reference.value.context["request_id"] == "req_fault"


# --- never reached ----------------------------------------------------------------------------------------------


def test_connection_refused_is_a_transient_error_and_checks_are_unavailable(sdk: stripe.StripeClient) -> None:
    unreachable = make_provider(refused_api_base())
    charge = new_charge(card(sdk, CARD_OK))

    result = unreachable.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.TRANSIENT_ERROR, "request_not_sent")
    assert_table_agrees(unreachable, result)
    with pytest.raises(ProviderUnavailable):
        unreachable.check_status(idempotency_key=key_of(charge))
    with pytest.raises(ProviderUnavailable):
        unreachable.check_status(provider_reference="pi_any")
    with pytest.raises(ProviderUnavailable):
        unreachable.cancel("pi_any", "k:cancel")


def test_connect_timeout_is_a_transient_error(sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_OK))

    with unaccepting_api_base() as api_base:
        result = make_provider(api_base, connect=0.2).submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.TRANSIENT_ERROR, "request_not_sent")
    assert "ConnectTimeout" in (result.error.message if result.error else "")


# --- accounts and secrets ---------------------------------------------------------------------------------------


def test_for_tenant_uses_the_tenants_key_asked_anew_after_rotation(proxy: FaultProxy) -> None:
    tenant = uuid4()
    keys = {None: "sk_test_platform_a", tenant: "sk_test_tenant_a"}
    asked: list[UUID | None] = []

    def credentials(tenant_id: UUID | None) -> StripeCredentials:
        asked.append(tenant_id)
        return StripeCredentials(keys[tenant_id])

    accounts = StripeProvider(credentials, api_base=proxy.api_base, profile=LOCALSTRIPE)

    accounts.check_status(provider_reference="pi_platform")
    accounts.for_tenant(tenant).check_status(provider_reference="pi_tenant")
    keys[tenant] = "sk_test_tenant_b"
    accounts.for_tenant(tenant).check_status(provider_reference="pi_tenant")

    used = [request.headers["Authorization"] for request in proxy.seen("GET")]
    assert used == ["Bearer sk_test_platform_a", "Bearer sk_test_tenant_a", "Bearer sk_test_tenant_b"]
    assert asked == [None, tenant, tenant]


def test_no_api_key_or_client_secret_reaches_a_log_line(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient, caplog: pytest.LogCaptureFixture
) -> None:
    charge = new_charge(card(sdk, CARD_3DS))

    with caplog.at_level(logging.DEBUG):
        result = proxied.submit(charge, key_of(charge))
        proxy.inject("POST", PAYMENT_INTENTS, stripe_error(500, "api_error"))
        proxied.submit(new_charge(card(sdk, CARD_DECLINED)), "t:e")
        proxied.submit(new_charge(card(sdk, CARD_DECLINED)), "t:e2")

    assert result.next_action is not None
    assert result.next_action.client_secret
    assert caplog.records  # the SDK did log (its INFO request lines)
    assert result.next_action.client_secret not in caplog.text
    assert "_secret_" not in caplog.text
    assert PLATFORM_KEY not in caplog.text
    assert CARD_3DS not in caplog.text
    assert CARD_DECLINED not in caplog.text
    assert PLATFORM_KEY not in repr(proxied)
    assert result.next_action.client_secret not in repr(result)


# --- webhooks -----------------------------------------------------------------------------------------------


class WebhookReceiver:
    """A real HTTP endpoint that keeps every delivery localstripe sends it."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.arrived:
                    receiver.deliveries.append((dict(self.headers.items()), body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/stripe"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait_for(self, reference: str, timeout: float = 15.0) -> tuple[dict[str, str], bytes]:
        def delivered() -> tuple[dict[str, str], bytes] | None:
            return next((d for d in self.deliveries if json.loads(d[1])["data"]["object"]["id"] == reference), None)

        with self.arrived:
            if not self.arrived.wait_for(lambda: delivered() is not None, timeout):
                raise AssertionError(f"no webhook for {reference}")
            found = delivered()
            assert found is not None
            return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_registered_webhook_delivers_a_signed_event_our_verifier_accepts(
    server: LocalStripe, provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    receiver = WebhookReceiver()
    try:
        server.register_webhook(receiver.url, "whsec_localstripe_test", events=["payment_intent.succeeded"])
        charge = new_charge(card(sdk, CARD_OK))
        result = provider.submit(charge, key_of(charge))
        assert result.provider_reference is not None

        headers, body = receiver.wait_for(result.provider_reference)
    finally:
        receiver.close()

    raw = RawWebhook("stripe", WebhookHeaders(headers), body, datetime.now(UTC))
    stripe_webhooks.verifier().verify(raw, ["whsec_localstripe_test"])
    [event] = stripe_webhooks.parse(body)
    assert (event.outcome, event.provider_reference) == (WebhookOutcome.SUCCEEDED, result.provider_reference)
    assert (event.amount, event.currency) == (1250, "EUR")


# --- refunds ----------------------------------------------------------------------------------------------------


def paid_charge(provider: StripeProvider, sdk: stripe.StripeClient, amount: int = 1000) -> tuple[ProviderCharge, str]:
    charge = new_charge(card(sdk, CARD_OK), amount=amount)
    result = provider.submit(charge, key_of(charge))
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.provider_reference is not None
    return charge, result.provider_reference


def refund_of(charge: ProviderCharge, reference: str, amount: int, reason: str | None = None) -> ProviderRefund:
    return ProviderRefund(
        tenant_id=charge.tenant_id,
        execution_id=charge.execution_id,
        refund_id=uuid4(),
        payment_reference=reference,
        amount=amount,
        currency=charge.currency,
        reason=reason,
    )


def refund_key(refund: ProviderRefund) -> str:
    return f"{refund.tenant_id}:{refund.execution_id}:refund:{refund.refund_id}"


def test_full_refund_succeeds_and_is_found_by_reference(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 1000, reason="requested_by_customer")

    result = provider.refund(refund, refund_key(refund))

    assert result.outcome is RefundOutcome.SUCCEEDED
    assert result.provider_reference is not None
    assert result.provider_reference.startswith("re_")
    stored = sdk.v1.refunds.retrieve(result.provider_reference).to_dict()
    assert (stored["amount"], stored["payment_intent"]) == (1000, reference)
    assert stored["metadata"] == {
        "tenant_id": str(charge.tenant_id),
        "execution_id": str(charge.execution_id),
        "refund_id": str(refund.refund_id),
    }
    by_reference = provider.check_refund(refund, refund_reference=result.provider_reference)
    assert (by_reference.outcome, by_reference.provider_reference) == (
        RefundOutcome.SUCCEEDED,
        result.provider_reference,
    )


def test_two_partial_refunds_are_two_refunds_each_found_by_its_refund_id(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge, reference = paid_charge(provider, sdk)
    first, second = refund_of(charge, reference, 300), refund_of(charge, reference, 200)

    first_result = provider.refund(first, refund_key(first))
    second_result = provider.refund(second, refund_key(second))

    assert first_result.outcome is second_result.outcome is RefundOutcome.SUCCEEDED
    assert first_result.provider_reference != second_result.provider_reference
    assert provider.check_refund(first, refund_reference=None).provider_reference == first_result.provider_reference
    assert provider.check_refund(second, refund_reference=None).provider_reference == second_result.provider_reference
    amounts = sorted(r.amount for r in sdk.v1.refunds.list(params={"payment_intent": reference}).data)
    assert amounts == [200, 300]


def test_refund_sent_again_reports_the_first_and_refunds_nothing_more(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 400)

    first = provider.refund(refund, refund_key(refund))
    again = provider.refund(refund, refund_key(refund))

    assert (again.outcome, again.provider_reference) == (RefundOutcome.SUCCEEDED, first.provider_reference)
    assert len(sdk.v1.refunds.list(params={"payment_intent": reference}).data) == 1


def test_check_refund_of_a_refund_never_made_is_not_found(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 100)

    assert provider.check_refund(refund, refund_reference=None).outcome is RefundOutcome.NOT_FOUND
    assert provider.check_refund(refund, refund_reference="re_doesnotexist").outcome is RefundOutcome.NOT_FOUND


def test_refund_of_a_failed_payment_is_refused(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_DECLINED))
    declined = provider.submit(charge, key_of(charge))
    assert declined.provider_reference is not None
    refund = refund_of(charge, declined.provider_reference, 100)

    result = provider.refund(refund, refund_key(refund))

    assert (result.outcome, result.error_code) == (RefundOutcome.FAILED, "invalid_request_error")


@pytest.mark.parametrize(
    ("fault", "outcome", "code"),
    [
        pytest.param(stripe_error(429, "invalid_request_error", code="rate_limit"), RefundOutcome.TRANSIENT_ERROR,
                     "rate_limit", id="429"),
        pytest.param(stripe_error(500, "api_error"), RefundOutcome.UNKNOWN, "api_error", id="500"),
        pytest.param(stripe_error(400, "invalid_request_error", code="charge_already_refunded"),
                     RefundOutcome.FAILED, "charge_already_refunded", id="400-already-refunded"),
    ],
)  # fmt: skip
def test_refund_errors_are_mapped_by_the_decision_table(
    provider: StripeProvider,
    proxied: StripeProvider,
    proxy: FaultProxy,
    sdk: stripe.StripeClient,
    fault: Fault,
    outcome: RefundOutcome,
    code: str,
) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 100)
    proxy.inject("POST", REFUNDS, fault)

    result = proxied.refund(refund, refund_key(refund))

    assert (result.outcome, result.error_code) == (outcome, code)
    assert result.request_id == "req_fault"


def test_refund_answer_lost_is_unknown_then_found_and_not_made_twice(
    provider: StripeProvider, proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 250)
    proxy.inject("POST", REFUNDS, DROP_AFTER_FORWARDING)

    lost = proxied.refund(refund, refund_key(refund))
    found = proxied.check_refund(refund, refund_reference=None)
    again = proxied.refund(refund, refund_key(refund))

    assert (lost.outcome, lost.error_code) == (RefundOutcome.UNKNOWN, OUTCOME_UNKNOWN_CODE)
    assert found.outcome is RefundOutcome.SUCCEEDED
    assert again.provider_reference == found.provider_reference
    assert len(sdk.v1.refunds.list(params={"payment_intent": reference}).data) == 1


def test_refund_lookup_failure_retries_and_refunds_nothing(
    provider: StripeProvider, proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge, reference = paid_charge(provider, sdk)
    refund = refund_of(charge, reference, 100)
    proxy.inject("GET", REFUNDS, stripe_error(503, "api_error"))

    result = proxied.refund(refund, refund_key(refund))

    assert (result.outcome, result.error_code) == (RefundOutcome.TRANSIENT_ERROR, "refund_lookup_failed")
    assert proxy.seen("POST", REFUNDS) == []
    with pytest.raises(ProviderUnavailable):
        make_provider(refused_api_base()).check_refund(refund, refund_reference=None)
