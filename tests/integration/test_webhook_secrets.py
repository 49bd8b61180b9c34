"""Webhook secrets through Secrets Manager (moto): seeding, rotation overlap and the Powertools TTL cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from moto import mock_aws

from billing.domain.errors import SignatureInvalid
from billing.webhooks import gocardless, sandbox
from billing.webhooks.registry import build_registry, provider_for
from billing.webhooks.secrets import (
    DEV_WEBHOOK_SECRETS,
    WebhookSecretsMisconfigured,
    WebhookSecretStore,
    seed_webhook_secrets,
    webhook_secrets_from_env,
)
from tests.unit.webhooks.factories import NOW_UNIX, raw, sandbox_event

REGION = "eu-west-1"


@pytest.fixture
def secretsmanager(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def _store(client: Any, max_age_seconds: int) -> WebhookSecretStore:
    return WebhookSecretStore(SecretsProvider(boto3_client=client), max_age_seconds=max_age_seconds)


def _sandbox_delivery(secret: str) -> Any:
    body = sandbox_event("payment.succeeded")
    return raw("sandbox", body, {"Sandbox-Signature": sandbox.sign(body, secret, NOW_UNIX)})


def test_seed_then_read_returns_secret_list_per_provider(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, {"stripe": ["whsec_a", "whsec_b"], "gocardless": ["gc_a"]})
    store = _store(secretsmanager, 300)

    assert store.secrets_for("stripe") == ("whsec_a", "whsec_b")
    assert store.secrets_for("gocardless") == ("gc_a",)
    stored = secretsmanager.get_secret_value(SecretId="billing/webhook/stripe")["SecretString"]
    assert json.loads(stored) == ["whsec_a", "whsec_b"]


def test_seed_from_dev_defaults_lets_dev_signed_deliveries_verify(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, webhook_secrets_from_env({}))
    store = _store(secretsmanager, 300)
    delivery = _sandbox_delivery(DEV_WEBHOOK_SECRETS["sandbox"][0])

    [event] = provider_for("sandbox", build_registry()).verify_and_parse(delivery, store.secrets_for("sandbox"))

    assert event.event_id == "evt_sbx_1"


def test_seed_existing_secret_overwrites_value(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, {"sandbox": ["first"]})
    seed_webhook_secrets(secretsmanager, {"sandbox": ["second"]})

    assert _store(secretsmanager, 0).secrets_for("sandbox") == ("second",)


@pytest.mark.parametrize("signing_secret", ["whsec_sbx_old", "whsec_sbx_new"])
def test_rotation_overlap_both_old_and_new_secret_verify(secretsmanager: Any, signing_secret: str) -> None:
    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_sbx_new", "whsec_sbx_old"]})
    secrets = _store(secretsmanager, 300).secrets_for("sandbox")

    [event] = provider_for("sandbox", build_registry()).verify_and_parse(_sandbox_delivery(signing_secret), secrets)

    assert event.provider == "sandbox"


def test_rotation_completed_old_secret_no_longer_verifies(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_sbx_old"]})
    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_sbx_new"]})
    secrets = _store(secretsmanager, 0).secrets_for("sandbox")

    with pytest.raises(SignatureInvalid):
        provider_for("sandbox", build_registry()).verify_and_parse(_sandbox_delivery("whsec_sbx_old"), secrets)


def test_plain_string_secret_is_read_as_single_secret(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="billing/webhook/gocardless", SecretString="gc_plain_secret")
    body = b'{"events": [{"id": "EV1", "resource_type": "payments", "action": "paid_out", "links": {"payment": "P"}}]}'
    delivery = raw("gocardless", body, {"Webhook-Signature": gocardless.sign(body, "gc_plain_secret")})

    secrets = _store(secretsmanager, 300).secrets_for("gocardless")
    provider_for("gocardless", build_registry()).verify_and_parse(delivery, secrets)

    assert secrets == ("gc_plain_secret",)


def test_cache_within_max_age_serves_previous_value_after_rotation(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_v1"]})
    store = _store(secretsmanager, 300)
    assert store.secrets_for("sandbox") == ("whsec_v1",)

    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_v2", "whsec_v1"]})

    # Why a rotation must keep the old secret listed for at least max_age: warm functions still hold this value.
    assert store.secrets_for("sandbox") == ("whsec_v1",)
    assert _store(secretsmanager, 300).secrets_for("sandbox") == ("whsec_v2", "whsec_v1")


def test_cache_with_zero_max_age_reads_every_time(secretsmanager: Any) -> None:
    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_v1"]})
    store = _store(secretsmanager, 0)
    assert store.secrets_for("sandbox") == ("whsec_v1",)

    seed_webhook_secrets(secretsmanager, {"sandbox": ["whsec_v2", "whsec_v1"]})

    assert store.secrets_for("sandbox") == ("whsec_v2", "whsec_v1")


def test_unknown_provider_is_refused_before_any_lookup(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="billing/webhook/paypal", SecretString='["x"]')

    with pytest.raises(ValueError, match="unknown webhook provider"):
        _store(secretsmanager, 300).secrets_for("paypal")


def test_missing_secret_raises_get_parameter_error(secretsmanager: Any) -> None:
    with pytest.raises(GetParameterError):
        _store(secretsmanager, 300).secrets_for("adyen")


def test_malformed_stored_secret_raises_misconfigured(secretsmanager: Any) -> None:
    secretsmanager.create_secret(Name="billing/webhook/stripe", SecretString="[]")

    with pytest.raises(WebhookSecretsMisconfigured):
        _store(secretsmanager, 300).secrets_for("stripe")


def test_store_negative_max_age_is_refused(secretsmanager: Any) -> None:
    with pytest.raises(ValueError, match="max_age_seconds"):
        _store(secretsmanager, -1)
