"""Charges through Stripe over HTTP: the local stack's localstripe, its signed webhooks, routing by instrument.

The customer's side (Stripe.js making a PaymentMethod, passing 3-D Secure) is played against localstripe with the
official SDK; everything else goes through the API Gateway emulation and the real handlers.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
import stripe

from billing.local.stack import LOCAL_STRIPE_API_KEY
from tests.e2e.conftest import ApiResponse, LocalApi
from tests.factories import CARD_REQUEST

pytestmark = pytest.mark.e2e
EXECUTIONS = "/api/v1/billing/executions"
INSTRUMENTS = "/api/v1/billing/payment-instruments"


def browser(local_stack: LocalApi) -> stripe.StripeClient:
    return stripe.StripeClient(LOCAL_STRIPE_API_KEY, base_addresses={"api": local_stack.stack.stripe_api_base})


def payment_method(local_stack: LocalApi, number: str) -> str:
    params: Any = {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    return str(browser(local_stack).v1.payment_methods.create(params=params).id)


def charge(local_stack: LocalApi, token: str, instrument: str, key: str | None = None) -> ApiResponse:
    body = {**CARD_REQUEST, "payment_instrument_id": instrument}
    headers = {"Idempotency-Key": key or f"stripe-{uuid4()}"}
    return local_stack.request("POST", EXECUTIONS, json=body, headers=headers, token=token)


def intents_of(local_stack: LocalApi, execution_id: str) -> list[str]:
    """Every PaymentIntent at the Stripe server carrying the execution id (the whole list: localstripe has no
    search)."""
    found: list[str] = []
    page = browser(local_stack).v1.payment_intents.list(params={"limit": 100})
    while True:
        found += [pi.id for pi in page.data if pi.metadata.to_dict().get("execution_id") == execution_id]
        if not page.has_more:
            return found
        page = browser(local_stack).v1.payment_intents.list(params={"limit": 100, "starting_after": page.data[-1].id})


def eventually(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    """Wait for asynchronous work (a webhook localstripe sends about a second later) by polling a condition."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_a_stripe_payment_method_is_charged_through_stripe(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    created = charge(local_stack, token, payment_method(local_stack, "4242424242424242"))
    assert created.status == 201, created.text
    body = created.json()
    assert (body["status"], body["payment_provider"]) == ("completed", "stripe")
    assert intents_of(local_stack, body["id"]) == [body["provider_reference"]]


def test_a_saved_instrument_with_a_stripe_token_is_routed_to_stripe(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    saved = local_stack.request(
        "POST", INSTRUMENTS, token=token, headers={"Idempotency-Key": f"pm-{uuid4()}"},
        json={"type": "card", "entity_contract_id": CARD_REQUEST["entity_contract_id"],
              "provider_token": {"provider": "stripe", "token": payment_method(local_stack, "4242424242424242")}},
    )  # fmt: skip
    assert saved.status == 201, saved.text
    body = charge(local_stack, token, saved.json()["id"]).json()
    assert (body["status"], body["payment_provider"]) == ("completed", "stripe")
    # The sandbox's magic tokens still go to the sandbox.
    sandbox = charge(local_stack, token, "tok_visa").json()
    assert sandbox["payment_provider"] == "sandbox"


def test_3ds_card_waits_for_the_customer_then_the_signed_webhook_completes_it(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    created = charge(local_stack, token, payment_method(local_stack, "4000002760003184")).json()
    assert (created["status"], created["awaiting_settlement"]) == ("pending", True)
    action = created["next_action"]
    assert action["type"] == "use_provider_sdk"
    assert action["client_secret"].startswith(created["provider_reference"] + "_secret_")
    shown = local_stack.request("GET", f"{EXECUTIONS}/{created['id']}", token=token).json()
    assert shown["next_action"]["client_secret"] is None  # handed out once, never stored

    form = urllib.parse.urlencode({"client_secret": action["client_secret"], "success": "true"}).encode()
    authenticate = urllib.request.Request(  # noqa: S310 - the local Stripe server
        f"{local_stack.stack.stripe_api_base}/v1/payment_intents/{created['provider_reference']}/_authenticate",
        data=form, method="POST", headers={"Authorization": f"Bearer {LOCAL_STRIPE_API_KEY}"},
    )  # fmt: skip
    with urllib.request.urlopen(authenticate, timeout=10):  # noqa: S310
        pass

    def completed() -> bool:
        detail = local_stack.request("GET", f"{EXECUTIONS}/{created['id']}", token=token).json()
        return bool(detail["status"] == "completed")

    eventually(completed, "payment_intent.succeeded from localstripe")
    events = local_stack.request("GET", f"{EXECUTIONS}/{created['id']}", token=token).json()["events"]
    assert events[-1]["type"] == "billing.execution.confirmed"
    assert events[-1]["user_id"] == "provider:stripe"


def test_declined_card_keeps_stripes_code(local_stack: LocalApi) -> None:
    body = charge(local_stack, local_stack.token(uuid4()), payment_method(local_stack, "4000000000000341")).json()
    assert (body["status"], body["last_error_code"], body["payment_provider"]) == ("failed", "card_declined", "stripe")


def test_20_parallel_posts_make_one_execution_and_one_payment_intent(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    method = payment_method(local_stack, "4242424242424242")
    barrier = threading.Barrier(20)

    def post(_: int) -> ApiResponse:
        barrier.wait()
        return charge(local_stack, token, method, key="stripe-parallel")

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted(r.status for r in responses) == [200] * 19 + [201], [r.text for r in responses if r.status >= 300]
    [execution_id] = {r.json()["id"] for r in responses}
    assert len(intents_of(local_stack, execution_id)) == 1


def test_partial_refunds_through_stripe_up_to_the_captured_amount(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    paid = charge(local_stack, token, payment_method(local_stack, "4242424242424242")).json()
    refunds = f"{EXECUTIONS}/{paid['id']}/refunds"

    def refund(amount: int) -> ApiResponse:
        headers = {"Idempotency-Key": f"refund-{uuid4()}"}
        return local_stack.request("POST", refunds, json={"amount": amount}, headers=headers, token=token)

    first, second, over = refund(1000), refund(999), refund(1)
    assert (first.status, second.status, over.status) == (201, 201, 422), (first.text, second.text, over.text)
    assert over.json()["code"] == "refund_exceeds_captured"
    at_stripe = browser(local_stack).v1.refunds.list(params={"payment_intent": paid["provider_reference"]})
    # localstripe would take more than the charge; the engine never asked it to.
    assert sorted(r.amount for r in at_stripe.data) == [999, 1000]
    detail = local_stack.request("GET", f"{EXECUTIONS}/{paid['id']}", token=token).json()
    assert detail["refunded_amount"] == paid["amount"] == 1999
