"""StripeProvider's 3-D Secure through the real stripe SDK against a real localstripe, and what localstripe makes of it.

localstripe takes payment_method_options (request_three_d_secure, an imported three_d_secure) and ignores them: a
card authenticates by its number alone, and its charges report no 3-D Secure. So these tests show what is sent (the
fault proxy records every request), that localstripe accepts it, and what comes back from localstripe as it is; what
only real Stripe answers (an expanded charge's three_d_secure, error_on_requires_action) comes from the proxy as a
canned, Stripe-shaped answer, read by the real SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from uuid import uuid4

import pytest
import stripe

from billing.local.localstripe import LocalStripe, start_localstripe
from billing.providers.stripe import LOCALSTRIPE, STRIPE, StripeProvider, StripeTimeouts
from billing.rails.ports import ChargeInitiator
from billing.rails.results import Decision, StatusOutcome, SubmitOutcome
from billing.rails.three_ds import (
    AuthenticationData,
    Exemption,
    ProviderAuthentication,
    ThreeDSecureInstruction,
    ThreeDSecureMode,
)
from tests.integration.test_stripe_provider import (
    CARD_3DS,
    CARD_OK,
    PAYMENT_INTENTS,
    authenticate,
    card,
    intent_status,
    key_of,
    make_provider,
    new_charge,
    platform_credentials,
)
from tests.stripe_fault_proxy import FaultProxy, stripe_answer, stripe_error

pytestmark = pytest.mark.integration

CAVV = "AJkBBkhgQQAAAE4gSEJydQAAAAA="
DS_TRANS_ID = "f25084f0-5b16-4c0a-ae5d-b24808a95e4b"
ENGINE_AUTHENTICATION = AuthenticationData(
    trans_status="Y",
    eci="05",
    authentication_value=CAVV,
    three_ds_server_trans_id="8a880dc0-d2d2-4067-bcb1-b08d1690b26e",
    ds_trans_id=DS_TRANS_ID,
    message_version="2.2.0",
)
REQUEST = ThreeDSecureInstruction(ThreeDSecureMode.REQUEST)
AUTHENTICATED = ThreeDSecureInstruction(ThreeDSecureMode.AUTHENTICATED, data=ENGINE_AUTHENTICATION)
CHALLENGE_PENDING = ProviderAuthentication(trans_status="C")
CARD_OPTIONS = "payment_method_options[card]"


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
    return stripe.StripeClient("sk_test_inspector", base_addresses={"api": server.api_base}, max_network_retries=0)


@pytest.fixture(scope="module")
def provider(server: LocalStripe) -> StripeProvider:
    return make_provider(server.api_base)


@pytest.fixture(scope="module")
def proxied(proxy_server: FaultProxy) -> StripeProvider:
    return make_provider(proxy_server.api_base)


@pytest.fixture(scope="module")
def as_stripe(proxy_server: FaultProxy) -> StripeProvider:
    """The provider with real Stripe's profile, for answers the proxy gives in Stripe's place."""
    return StripeProvider(
        platform_credentials,
        api_base=proxy_server.api_base,
        profile=STRIPE,
        return_url="https://shop.example/return",
        timeouts=StripeTimeouts(connect=2.0, read=10.0),
    )


def three_d_secure_sent(form: dict[str, list[str]]) -> dict[str, list[str]]:
    """The payment_method_options[card] fields of a form-encoded PaymentIntent create."""
    return {key: value for key, value in form.items() if key.startswith(CARD_OPTIONS)}


def stripe_intent(status: str, *, three_d_secure: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """A PaymentIntent as real Stripe answers a create or retrieve with expand[]=latest_charge."""
    reference = f"pi_{uuid4().hex[:24]}"
    charge = {
        "id": f"ch_{uuid4().hex[:24]}",
        "object": "charge",
        "status": "succeeded",
        "paid": True,
        "payment_intent": reference,
        "payment_method_details": {"type": "card", "card": {"brand": "visa", "three_d_secure": three_d_secure}},
    }
    return {
        "id": reference,
        "object": "payment_intent",
        "status": status,
        "amount": 1250,
        "currency": "eur",
        "client_secret": f"{reference}_secret_x",
        "latest_charge": charge,
        "metadata": {},
        **fields,
    }


# --- REQUEST -------------------------------------------------------------------------------------------------


def test_request_sends_request_three_d_secure_any_which_localstripe_takes_and_ignores(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_OK), three_ds=REQUEST)

    result = proxied.submit(charge, key_of(charge))

    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    assert three_d_secure_sent(sent.form) == {f"{CARD_OPTIONS}[request_three_d_secure]": ["any"]}
    # The charge comes back expanded, so what 3-D Secure did can be read from it.
    assert sent.form["expand[0]"] == ["latest_charge"]
    # localstripe accepted it, and, as it ignores it, charged a frictionless card without authenticating: its
    # charges say nothing of 3-D Secure, so there is nothing to report.
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.authentication is None
    assert not LOCALSTRIPE.reports_three_d_secure


def test_request_on_a_card_that_authenticates_waits_for_the_customer_as_trans_status_c(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_3DS), three_ds=REQUEST)

    result = provider.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.authentication == CHALLENGE_PENDING
    assert result.provider_reference is not None
    pending = provider.check_status(provider_reference=result.provider_reference)
    assert (pending.outcome, pending.authentication) == (StatusOutcome.REQUIRES_ACTION, CHALLENGE_PENDING)
    by_key = provider.check_status(idempotency_key=key_of(charge))
    assert by_key.authentication == CHALLENGE_PENDING

    authenticate(sdk, result, success=True)

    paid = provider.check_status(provider_reference=result.provider_reference)
    # Paid; localstripe's charge carries no payment_method_details, so the result of the challenge is not reported.
    assert (paid.outcome, paid.authentication) == (StatusOutcome.PAID, None)


def test_a_failed_challenge_is_reported_as_trans_status_n(provider: StripeProvider, sdk: stripe.StripeClient) -> None:
    charge = new_charge(card(sdk, CARD_3DS), three_ds=REQUEST)
    result = provider.submit(charge, key_of(charge))
    assert result.provider_reference is not None

    authenticate(sdk, result, success=False)
    status = provider.check_status(provider_reference=result.provider_reference)

    assert (status.outcome, status.error_code) == (StatusOutcome.FAILED, "payment_intent_authentication_failure")
    assert status.authentication == ProviderAuthentication(trans_status="N")
    # Canceled as every failed attempt is, and still reported the same way.
    assert intent_status(sdk, result.provider_reference) == "canceled"
    again = provider.check_status(provider_reference=result.provider_reference)
    assert again.authentication == ProviderAuthentication(trans_status="N")


def test_check_status_asks_for_the_expanded_charge(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_OK))
    result = proxied.submit(charge, key_of(charge))
    assert result.provider_reference is not None

    proxied.check_status(provider_reference=result.provider_reference)

    [retrieve] = proxy.seen("GET", f"{PAYMENT_INTENTS}/{result.provider_reference}")
    assert retrieve.params["expand[0]"] == ["latest_charge"]


# --- EXEMPT ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("exemption", list(Exemption))
def test_an_exemption_sends_nothing_stripe_does_not_define(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient, exemption: Exemption
) -> None:
    initiator = ChargeInitiator.MERCHANT if exemption is Exemption.MERCHANT_INITIATED else ChargeInitiator.CUSTOMER
    instruction = ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=exemption)
    charge = new_charge(card(sdk, CARD_OK), three_ds=instruction, initiator=initiator)

    result = proxied.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.SUCCEEDED
    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    assert three_d_secure_sent(sent.form) == {}
    assert ("off_session" in sent.form) is (initiator is ChargeInitiator.MERCHANT)


# --- AUTHENTICATED ---------------------------------------------------------------------------------------------


def test_an_engine_authentication_is_imported_and_localstripe_takes_it(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    charge = new_charge(card(sdk, CARD_OK), three_ds=AUTHENTICATED)

    result = proxied.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.SUCCEEDED
    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    imported = f"{CARD_OPTIONS}[three_d_secure]"
    assert three_d_secure_sent(sent.form) == {
        f"{imported}[version]": ["2.2.0"],
        f"{imported}[electronic_commerce_indicator]": ["05"],
        f"{imported}[cryptogram]": [CAVV],
        f"{imported}[transaction_id]": [DS_TRANS_ID],
        f"{imported}[ares_trans_status]": ["Y"],
    }
    # localstripe refuses error_on_requires_action, so its profile leaves it out.
    assert "error_on_requires_action" not in sent.form


def test_localstripe_ignores_an_imported_authentication_on_a_card_that_authenticates(
    provider: StripeProvider, sdk: stripe.StripeClient
) -> None:
    # Real Stripe would authorise with the imported result; localstripe, which ignores it, asks for a challenge.
    charge = new_charge(card(sdk, CARD_3DS), three_ds=AUTHENTICATED)

    result = provider.submit(charge, key_of(charge))

    assert (result.outcome, result.authentication) == (SubmitOutcome.REQUIRES_ACTION, CHALLENGE_PENDING)
    assert not LOCALSTRIPE.honours_three_d_secure_options


def test_an_authentication_stripe_cannot_import_is_refused_before_sending(
    proxied: StripeProvider, proxy: FaultProxy, sdk: stripe.StripeClient
) -> None:
    without = ThreeDSecureInstruction(
        ThreeDSecureMode.AUTHENTICATED, data=replace(ENGINE_AUTHENTICATION, ds_trans_id=None)
    )
    charge = new_charge(card(sdk, CARD_OK), three_ds=without)

    result = proxied.submit(charge, key_of(charge))

    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "parameter_missing")
    assert proxied.decision_for("parameter_missing") is Decision.FAIL
    assert proxy.seen("POST", PAYMENT_INTENTS) == []


def test_stripe_gets_error_on_requires_action_with_an_imported_authentication(
    as_stripe: StripeProvider, proxy: FaultProxy
) -> None:
    reported = {"result": "authenticated", "version": "2.2.0", "electronic_commerce_indicator": "05"}
    proxy.inject("POST", PAYMENT_INTENTS, stripe_answer(stripe_intent("succeeded", three_d_secure=reported)))
    charge = new_charge("pm_card_visa", three_ds=AUTHENTICATED)

    result = as_stripe.submit(charge, key_of(charge))

    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    assert sent.form["error_on_requires_action"] == ["true"]
    assert sent.form[f"{CARD_OPTIONS}[three_d_secure][cryptogram]"] == [CAVV]
    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.authentication is not None
    assert (result.authentication.trans_status, result.authentication.eci) == ("Y", "05")


def test_the_cryptogram_is_cut_out_of_a_stripe_error_that_quotes_it(
    as_stripe: StripeProvider, proxy: FaultProxy
) -> None:
    quoted = stripe_error(400, "invalid_request_error", code="parameter_invalid_string_blank", message=f"bad: {CAVV}")
    proxy.inject("POST", PAYMENT_INTENTS, quoted)
    charge = new_charge("pm_card_visa", three_ds=AUTHENTICATED)

    result = as_stripe.submit(charge, key_of(charge))

    assert result.outcome is SubmitOutcome.FAILED
    assert result.error is not None
    assert CAVV not in result.error.message
    assert "<redacted>" in result.error.message


# --- what real Stripe reports (canned answers read by the SDK) -------------------------------------------------


def test_stripes_expanded_charge_reports_the_authentication_it_ran(
    as_stripe: StripeProvider, proxy: FaultProxy
) -> None:
    reported = {
        "authentication_flow": "challenge",
        "electronic_commerce_indicator": "05",
        "exemption_indicator": None,
        "result": "authenticated",
        "result_reason": None,
        "transaction_id": DS_TRANS_ID,
        "version": "2.2.0",
    }
    answer = stripe_intent("succeeded", three_d_secure=reported)
    proxy.inject("POST", PAYMENT_INTENTS, stripe_answer(answer))
    proxy.inject("GET", f"{PAYMENT_INTENTS}/{answer['id']}", stripe_answer(answer))
    charge = new_charge("pm_card_visa", three_ds=REQUEST)

    submitted = as_stripe.submit(charge, key_of(charge))
    checked = as_stripe.check_status(provider_reference=answer["id"])

    expected = ProviderAuthentication(
        trans_status="Y", eci="05", message_version="2.2.0", flow="challenge", ds_trans_id=DS_TRANS_ID
    )
    assert (submitted.outcome, submitted.authentication) == (SubmitOutcome.SUCCEEDED, expected)
    assert (checked.outcome, checked.authentication) == (StatusOutcome.PAID, expected)
    [sent] = proxy.seen("POST", PAYMENT_INTENTS)
    assert sent.form[f"{CARD_OPTIONS}[request_three_d_secure]"] == ["any"]


def test_a_decline_for_failed_authentication_reports_trans_status_n(
    as_stripe: StripeProvider, proxy: FaultProxy
) -> None:
    failure = {"code": "payment_intent_authentication_failure", "message": "The provided PaymentMethod has failed"}
    declined_intent = {"id": "pi_declined3ds", "status": "requires_payment_method", "last_payment_error": failure}
    proxy.inject(
        "POST",
        PAYMENT_INTENTS,
        stripe_error(402, "card_error", code="payment_intent_authentication_failure", payment_intent=declined_intent),
    )
    proxy.inject(
        "POST", f"{PAYMENT_INTENTS}/pi_declined3ds/cancel", stripe_answer({**declined_intent, "status": "canceled"})
    )
    charge = new_charge("pm_card_visa", three_ds=REQUEST)

    result = as_stripe.submit(charge, key_of(charge))

    assert (result.outcome, result.provider_reference) == (SubmitOutcome.FAILED, "pi_declined3ds")
    assert result.authentication == ProviderAuthentication(trans_status="N")
