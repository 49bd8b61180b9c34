"""Credentials, SDK clients per key, tenant views, and the SDK's logging kept free of secrets (no network)."""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

import pytest
import stripe

from billing.providers.stripe import LOCALSTRIPE, StripeCredentials, StripeProvider, StripeTimeouts
from billing.providers.stripe.clients import StripeClients, silence_sdk_debug_logging
from billing.rails.results import Decision


def test_credentials_repr_never_shows_the_key() -> None:
    credentials = StripeCredentials("sk_live_51SuperSecret")

    assert "sk_live" not in repr(credentials)
    assert "SuperSecret" not in str(credentials)


@pytest.mark.parametrize("key", ["", "   "])
def test_empty_key_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        StripeCredentials(key)


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StripeTimeouts(connect=0)


def test_one_sdk_client_per_key_that_never_retries_by_itself() -> None:
    clients = StripeClients(api_base="http://127.0.0.1:1", timeouts=StripeTimeouts())

    first = clients.client_for(StripeCredentials("sk_test_a"))
    again = clients.client_for(StripeCredentials("sk_test_a"))
    other = clients.client_for(StripeCredentials("sk_test_b"))

    assert first is again
    assert other is not first
    assert first._requestor._options.max_network_retries == 0


def test_for_tenant_asks_the_credentials_every_time_and_reuses_the_client_per_key() -> None:
    tenant = uuid4()
    keys: dict[UUID | None, str] = {None: "sk_test_platform", tenant: "sk_test_tenant_1"}
    asked: list[UUID | None] = []

    def credentials(tenant_id: UUID | None) -> StripeCredentials:
        asked.append(tenant_id)
        return StripeCredentials(keys[tenant_id])

    provider = StripeProvider(credentials, api_base="http://127.0.0.1:1", profile=LOCALSTRIPE)

    first, again = provider.for_tenant(tenant), provider.for_tenant(tenant)
    keys[tenant] = "sk_test_tenant_2"
    rotated = provider.for_tenant(tenant)

    assert asked == [tenant, tenant, tenant]
    assert first._client() is again._client()
    assert rotated._client() is not first._client()
    assert "sk_test" not in repr(rotated)
    assert str(tenant) in repr(rotated)


def test_provider_names_itself_polls_and_decides_by_its_table() -> None:
    provider = StripeProvider(lambda _: StripeCredentials("sk_test_x"), profile=LOCALSTRIPE)

    assert (provider.name, provider.polls_status) == ("stripe", True)
    assert provider.decision_for("insufficient_funds") is Decision.FAIL
    assert provider.decision_for("no_such_code") is Decision.RECONCILE_LATER


def test_check_status_needs_exactly_one_of_reference_or_key() -> None:
    provider = StripeProvider(lambda _: StripeCredentials("sk_test_x"), profile=LOCALSTRIPE)

    with pytest.raises(ValueError, match="exactly one"):
        provider.check_status()
    with pytest.raises(ValueError, match="exactly one"):
        provider.check_status(provider_reference="pi_1", idempotency_key="a:b")


def test_sdk_debug_lines_never_reach_a_handler(caplog: pytest.LogCaptureFixture) -> None:
    silence_sdk_debug_logging()
    silence_sdk_debug_logging()  # installing twice adds one filter

    with caplog.at_level(logging.DEBUG):
        logging.getLogger("stripe").debug("API response body body=client_secret pi_1_secret_x")
        logging.getLogger("stripe").info("Request to Stripe api")

    assert [r.getMessage() for r in caplog.records if r.name == "stripe"] == ["Request to Stripe api"]
    assert len(logging.getLogger("stripe").filters) == 1


def test_sdk_console_debug_is_turned_down_to_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stripe, "log", "debug")

    silence_sdk_debug_logging()

    assert stripe.log == "info"
