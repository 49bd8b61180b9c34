"""Payment instruments over HTTP through the local stack: save a card in the vault, charge it, deactivate it, and
see the charge refused; the card number appears nowhere in the database."""

from __future__ import annotations

from uuid import uuid4

import pytest
import stripe

from billing.db.connection import connect
from billing.local.stack import LOCAL_STRIPE_API_KEY
from tests.e2e.conftest import LocalApi
from tests.factories import CARD_REQUEST

pytestmark = pytest.mark.e2e
INSTRUMENTS = "/api/v1/billing/payment-instruments"
EXECUTIONS = "/api/v1/billing/executions"
PAN = "4242424242424242"


def test_save_a_card_charge_it_deactivate_it_and_the_next_charge_is_refused(local_stack: LocalApi) -> None:
    tenant = uuid4()
    token = local_stack.token(tenant)
    card = {"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2032, "cvc": "314", "holder_name": "E2E"}
    saved = local_stack.request(
        "POST", INSTRUMENTS, json={"entity_contract_id": "contract-1", "type": "card", "card": card},
        headers={"Idempotency-Key": "e2e-card"}, token=token,
    )  # fmt: skip
    assert saved.status == 201, saved.text
    instrument = saved.json()
    assert (instrument["brand"], instrument["last4"], instrument["status"]) == ("visa", "4242", "active")

    charge = {**CARD_REQUEST, "payment_instrument_id": instrument["id"]}
    paid = local_stack.request("POST", EXECUTIONS, json=charge, headers={"Idempotency-Key": "e2e-pay-1"}, token=token)
    assert paid.status == 201, paid.text
    assert paid.json()["status"] == "completed"

    read = local_stack.request("GET", f"{INSTRUMENTS}/{instrument['id']}", token=token)
    assert read.status == 200
    listed = local_stack.request("GET", f"{INSTRUMENTS}?entity_contract_id=contract-1", token=token).json()
    assert [i["id"] for i in listed["items"]] == [instrument["id"]]

    deleted = local_stack.request("DELETE", f"{INSTRUMENTS}/{instrument['id']}", token=token)
    assert (deleted.status, deleted.json()["status"]) == (200, "deactivated")
    refused = local_stack.request(
        "POST", EXECUTIONS, json=charge, headers={"Idempotency-Key": "e2e-pay-2"}, token=token
    )
    assert refused.status == 422
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["code"] == "payment_instrument_inactive"

    other = local_stack.request("GET", f"{INSTRUMENTS}/{instrument['id']}", token=local_stack.token(uuid4()))
    assert (other.status, other.json()["code"]) == (404, "payment_instrument_not_found")

    with connect(local_stack.stack.database_url) as conn:
        found = conn.execute(
            "select count(*) as n from billing.contract_term_attrs where attr_value like %s", [f"%{PAN}%"]
        ).fetchone()
        sent = conn.execute(
            "select payment_instrument_id from sandbox_provider.charges where tenant_id = %s", [tenant]
        ).fetchall()
    assert found == {"n": 0}
    # The vault provisioned the card at Stripe (localstripe here) too, and routing charged it there, by its token.
    assert (paid.json()["payment_provider"], sent) == ("stripe", [])
    intent = stripe.StripeClient(LOCAL_STRIPE_API_KEY, base_addresses={"api": local_stack.stack.stripe_api_base})
    charged = intent.v1.payment_intents.retrieve(paid.json()["provider_reference"])
    assert str(charged.payment_method).startswith("pm_")


def test_a_saved_declining_card_is_declined(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    # No security code: the local Stripe (localstripe) cannot hold the card, so it is charged through the sandbox.
    card = {"number": "4000000000000002", "exp_month": 1, "exp_year": 2033}
    saved = local_stack.request(
        "POST", INSTRUMENTS, json={"entity_contract_id": "contract-1", "type": "card", "card": card},
        headers={"Idempotency-Key": "e2e-decline"}, token=token,
    ).json()  # fmt: skip
    charge = {**CARD_REQUEST, "payment_instrument_id": saved["id"]}
    declined = local_stack.request("POST", EXECUTIONS, json=charge, headers={"Idempotency-Key": "d-1"}, token=token)
    assert (declined.json()["status"], declined.json()["last_error_code"]) == ("failed", "card_declined")


def test_a_bad_card_is_422_and_never_echoed(local_stack: LocalApi) -> None:
    response = local_stack.request(
        "POST", INSTRUMENTS,
        json={"entity_contract_id": "c-1", "type": "card", "card": {"number": "4242424242424241", "exp_month": 1,
                                                                     "exp_year": 2033}},
        headers={"Idempotency-Key": "e2e-bad"}, token=local_stack.token(uuid4()),
    )  # fmt: skip
    assert response.status == 422
    assert response.json()["code"] == "card_number_invalid"
    assert "4242424242424241" not in response.text
