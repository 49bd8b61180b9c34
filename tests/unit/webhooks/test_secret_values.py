from __future__ import annotations

import json

import pytest

from billing.resource_names import WEBHOOK_PROVIDERS
from billing.webhooks.registry import build_registry
from billing.webhooks.secrets import (
    DEV_WEBHOOK_SECRETS,
    WebhookSecretsMisconfigured,
    parse_secret_value,
    webhook_secrets_from_env,
)


def test_registry_covers_exactly_the_providers_resource_names_declares() -> None:
    assert set(build_registry()) == set(WEBHOOK_PROVIDERS)


def test_parse_secret_value_json_list_returns_all_secrets_in_order() -> None:
    assert parse_secret_value("n", '["new", "old"]') == ("new", "old")


def test_parse_secret_value_plain_string_returns_single_secret() -> None:
    assert parse_secret_value("n", "whsec_plain") == ("whsec_plain",)


def test_parse_secret_value_binary_value_is_decoded() -> None:
    assert parse_secret_value("n", b'["a"]') == ("a",)


@pytest.mark.parametrize("value", ["", "[]", '["ok", ""]', '["ok", 3]', "[not json", '[{"k": "v"}]'])
def test_parse_secret_value_malformed_raises_without_echoing_value(value: str) -> None:
    with pytest.raises(WebhookSecretsMisconfigured) as excinfo:
        parse_secret_value("billing/webhook/stripe", value)
    assert "billing/webhook/stripe" in str(excinfo.value)
    if value not in ("", "[]"):
        assert value not in str(excinfo.value)


def test_webhook_secrets_from_env_unset_returns_dev_defaults_for_every_provider() -> None:
    secrets = webhook_secrets_from_env({})

    assert set(secrets) == set(build_registry())
    assert secrets == {p: tuple(v) for p, v in DEV_WEBHOOK_SECRETS.items()}


def test_dev_adyen_secret_is_a_usable_hex_key() -> None:
    assert len(bytes.fromhex(DEV_WEBHOOK_SECRETS["adyen"][0])) == 32


def test_webhook_secrets_from_env_set_overrides_defaults() -> None:
    environ = {"BILLING_WEBHOOK_SECRETS": json.dumps({"sandbox": ["new", "old"]})}

    assert webhook_secrets_from_env(environ) == {"sandbox": ("new", "old")}


@pytest.mark.parametrize(
    "value", ["", "not json", "[]", "{}", '{"stripe": "one"}', '{"stripe": []}', '{"stripe": [1]}', '{"paypal": ["x"]}']
)
def test_webhook_secrets_from_env_malformed_raises_instead_of_defaulting(value: str) -> None:
    with pytest.raises(WebhookSecretsMisconfigured):
        webhook_secrets_from_env({"BILLING_WEBHOOK_SECRETS": value})
