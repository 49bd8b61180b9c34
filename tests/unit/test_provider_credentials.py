"""Provider API credentials from Secrets Manager (moto): platform account, tenant overrides, rotation, bad secrets."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from moto import mock_aws
from pydantic import BaseModel, ConfigDict, Field

from billing import resource_names as names
from billing.providers.adyen import AdyenCredentials
from billing.providers.credentials import (
    DEFAULT_MAX_AGE_SECONDS,
    ProviderCredentialsMisconfigured,
    ProviderCredentialSource,
    adyen_credentials,
    credential_secret_id,
    credential_secret_value,
    stripe_credentials,
)
from billing.providers.stripe import StripeCredentials

SECRET_NAME = names.provider_secret_name("adyen")
PLATFORM_KEY = "AQEyhmfxK4PLATFORMkeyDO_NOT_LEAK9z"
TENANT_KEY = "AQEyhmfxK4TENANTkeyDO_NOT_LEAK7q"
ROTATED_KEY = "AQEyhmfxK4ROTATEDkeyDO_NOT_LEAK3x"
TENANT = UUID("6f1c2a4e-8b1d-4c47-9a0e-2f6b8d3c1a55")


@dataclass(frozen=True, slots=True)
class Account:
    """Stands in for a provider's credentials type: what `parse` returns; the key stays out of its repr."""

    merchant_account: str
    api_key: str = field(repr=False)


class _AccountFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1)
    merchant_account: str = Field(min_length=1)


def parse_account(fields: Mapping[str, Any]) -> Account:
    checked = _AccountFields.model_validate(fields)
    return Account(merchant_account=checked.merchant_account, api_key=checked.api_key)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def secretsmanager(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=aws_credentials)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _platform(api_key: str = PLATFORM_KEY) -> dict[str, str]:
    return {"api_key": api_key, "merchant_account": "PlatformECOM"}


def _store(client: Any, value: str, name: str = SECRET_NAME) -> str:
    arn: str = client.create_secret(Name=name, SecretString=value)["ARN"]
    return arn


def _source(
    client: Any, secret_id: str, clock: Clock, max_age_seconds: float = 300
) -> ProviderCredentialSource[Account]:
    return ProviderCredentialSource(
        "adyen",
        secret_id,
        parse_account,
        max_age_seconds=max_age_seconds,
        secrets=SecretsProvider(boto3_client=client),
        clock=clock,
    )


def _assert_reveals_nothing(error: BaseException, *secrets: str) -> None:
    """Neither the message nor the whole traceback as a logger would print it quotes a secret."""
    printed = "".join(traceback.format_exception(error))
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in printed


def test_provider_secret_name_follows_the_webhook_pattern_and_refuses_providers_without_credentials() -> None:
    assert names.provider_secret_name("stripe") == "billing/provider/stripe"
    assert names.provider_secret_name("adyen") == "billing/provider/adyen"
    assert set(names.ENV_PROVIDER_CREDENTIAL_SECRET_IDS) == set(names.PROVIDERS_WITH_CREDENTIALS)
    with pytest.raises(ValueError, match="no credentials"):
        names.provider_secret_name("sandbox")


def test_tenant_without_override_gets_the_platform_account(secretsmanager: Any, clock: Clock) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = _source(secretsmanager, secret_id, clock)

    assert source.for_tenant(uuid4()) == Account("PlatformECOM", PLATFORM_KEY)
    assert source.for_tenant(None) == Account("PlatformECOM", PLATFORM_KEY)


def test_tenant_with_override_gets_its_own_account_and_others_the_platform(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value(_platform(), {TENANT: {"api_key": TENANT_KEY, "merchant_account": "TenantECOM"}})
    source = _source(secretsmanager, _store(secretsmanager, value), clock)

    assert source.for_tenant(TENANT) == Account("TenantECOM", TENANT_KEY)
    assert source.for_tenant(uuid4()).api_key == PLATFORM_KEY
    # Asking for the platform's account never falls through to a tenant's.
    assert source.for_tenant(None).api_key == PLATFORM_KEY


def test_secret_can_be_found_by_name_as_well_as_arn(secretsmanager: Any, clock: Clock) -> None:
    _store(secretsmanager, credential_secret_value(_platform()))

    assert _source(secretsmanager, SECRET_NAME, clock).for_tenant(None).api_key == PLATFORM_KEY


def test_within_max_age_the_secret_is_read_once(secretsmanager: Any, clock: Clock) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = _source(secretsmanager, secret_id, clock)
    source.for_tenant(None)

    # Were it read again, the deleted secret would raise.
    secretsmanager.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    clock.advance(299)

    assert source.for_tenant(TENANT).api_key == PLATFORM_KEY


def test_rotated_key_is_used_once_max_age_has_passed_without_a_new_source(secretsmanager: Any, clock: Clock) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = _source(secretsmanager, secret_id, clock)
    assert source.for_tenant(None).api_key == PLATFORM_KEY

    secretsmanager.put_secret_value(SecretId=secret_id, SecretString=credential_secret_value(_platform(ROTATED_KEY)))
    clock.advance(299.9)
    # Warm containers keep the old key for up to max_age: why the old key must stay valid that long.
    assert source.for_tenant(None).api_key == PLATFORM_KEY

    clock.advance(0.1)
    assert source.for_tenant(None).api_key == ROTATED_KEY


def test_rotation_can_add_a_tenant_override(secretsmanager: Any, clock: Clock) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = _source(secretsmanager, secret_id, clock, max_age_seconds=60)
    assert source.for_tenant(TENANT).api_key == PLATFORM_KEY

    value = credential_secret_value(_platform(), {TENANT: {"api_key": TENANT_KEY, "merchant_account": "TenantECOM"}})
    secretsmanager.put_secret_value(SecretId=secret_id, SecretString=value)
    clock.advance(60)

    assert source.for_tenant(TENANT).api_key == TENANT_KEY


def test_zero_max_age_reads_the_secret_every_time(secretsmanager: Any, clock: Clock) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = _source(secretsmanager, secret_id, clock, max_age_seconds=0)
    assert source.for_tenant(None).api_key == PLATFORM_KEY

    secretsmanager.put_secret_value(SecretId=secret_id, SecretString=credential_secret_value(_platform(ROTATED_KEY)))

    assert source.for_tenant(None).api_key == ROTATED_KEY


def test_missing_secret_raises_get_parameter_error(secretsmanager: Any, clock: Clock) -> None:
    with pytest.raises(GetParameterError, match="ResourceNotFoundException"):
        _source(secretsmanager, SECRET_NAME, clock).for_tenant(None)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        pytest.param(f"api_key={PLATFORM_KEY}", "<document>: json_invalid", id="not-json"),
        pytest.param(f'["{PLATFORM_KEY}"]', "<document>: model_type", id="not-an-object"),
        pytest.param(f'{{"tenants": {{}}, "api_key": "{PLATFORM_KEY}"}}', "platform: missing", id="no-platform"),
        pytest.param(
            f'{{"platform": {{"api_key": "{PLATFORM_KEY}", "merchant_account": "P"}}, "{PLATFORM_KEY}": 1}}',
            "<redacted>: extra_forbidden",
            id="pasted-key-as-field",
        ),
        pytest.param(
            f'{{"platform": {{"api_key": "{PLATFORM_KEY}"}}}}',
            "platform.merchant_account: missing",
            id="platform-field-missing",
        ),
        pytest.param(
            f'{{"platform": {{"api_key": "{PLATFORM_KEY}", "merchant_account": ""}}}}',
            "platform.merchant_account: string_too_short",
            id="platform-field-empty",
        ),
        pytest.param(
            f'{{"platform": {{"api_key": "{PLATFORM_KEY}", "merchant_account": "P"}}, '
            f'"tenants": {{"{TENANT}": {{"api_key": 42, "merchant_account": "T"}}}}}}',
            f"tenants.{TENANT}.api_key: string_type",
            id="tenant-field-mistyped",
        ),
        pytest.param(
            f'{{"platform": {{"api_key": "{PLATFORM_KEY}", "merchant_account": "P"}}, '
            f'"tenants": {{"{PLATFORM_KEY}": {{"api_key": "{TENANT_KEY}", "merchant_account": "T"}}}}}}',
            "tenants.<redacted>.[key]: uuid_parsing",
            id="tenant-key-not-a-uuid",
        ),
    ],
)
def test_malformed_secret_is_refused_naming_the_problem_but_no_value(
    secretsmanager: Any, clock: Clock, value: str, problem: str
) -> None:
    source = _source(secretsmanager, _store(secretsmanager, value), clock)

    with pytest.raises(ProviderCredentialsMisconfigured, match="is malformed") as raised:
        source.for_tenant(None)

    assert problem in str(raised.value)
    _assert_reveals_nothing(raised.value, PLATFORM_KEY, TENANT_KEY)


def test_broken_tenant_entry_fails_every_tenant_not_only_its_own(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value(_platform(), {TENANT: {"api_key": TENANT_KEY}})
    source = _source(secretsmanager, _store(secretsmanager, value), clock)

    with pytest.raises(ProviderCredentialsMisconfigured, match=f"tenants.{TENANT}.merchant_account: missing"):
        source.for_tenant(uuid4())


def test_parser_error_is_reported_by_type_only(secretsmanager: Any, clock: Clock) -> None:
    def parse_quoting_its_input(fields: Mapping[str, Any]) -> Account:
        raise KeyError(f"unusable key {fields['api_key']}")

    secret_id = _store(secretsmanager, credential_secret_value(_platform()))
    source = ProviderCredentialSource(
        "adyen", secret_id, parse_quoting_its_input, secrets=SecretsProvider(boto3_client=secretsmanager), clock=clock
    )

    with pytest.raises(ProviderCredentialsMisconfigured, match="platform: KeyError") as raised:
        source.for_tenant(None)
    _assert_reveals_nothing(raised.value, PLATFORM_KEY)


def test_binary_secret_is_refused(secretsmanager: Any, clock: Clock) -> None:
    secret_id = secretsmanager.create_secret(Name=SECRET_NAME, SecretBinary=b"\x00\x01")["ARN"]
    source = _source(secretsmanager, secret_id, clock)

    with pytest.raises(ProviderCredentialsMisconfigured):
        source.for_tenant(None)


def test_repr_of_the_source_names_the_secret_never_its_value(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value(_platform(), {TENANT: {"api_key": TENANT_KEY, "merchant_account": "T"}})
    secret_id = _store(secretsmanager, value)
    source = _source(secretsmanager, secret_id, clock)
    source.for_tenant(TENANT)

    text = repr(source)
    assert secret_id in text
    assert PLATFORM_KEY not in text
    assert TENANT_KEY not in text
    # Nor does the state it caches, should anything print it.
    assert PLATFORM_KEY not in repr(vars(source))
    assert TENANT_KEY not in repr(vars(source))


def test_credential_secret_id_reads_the_providers_variable() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:billing/provider/stripe-AbCdEf"

    assert credential_secret_id("stripe", {names.ENV_STRIPE_CREDENTIALS_SECRET_ID: arn}) == arn
    assert names.ENV_STRIPE_CREDENTIALS_SECRET_ID == "STRIPE_CREDENTIALS_SECRET_ID"
    assert names.ENV_ADYEN_CREDENTIALS_SECRET_ID == "ADYEN_CREDENTIALS_SECRET_ID"


@pytest.mark.parametrize("environ", [{}, {names.ENV_ADYEN_CREDENTIALS_SECRET_ID: ""}])
def test_credential_secret_id_unset_is_a_deployment_fault(environ: dict[str, str]) -> None:
    with pytest.raises(ProviderCredentialsMisconfigured, match=names.ENV_ADYEN_CREDENTIALS_SECRET_ID):
        credential_secret_id("adyen", environ)


@pytest.mark.parametrize("provider", ["sandbox", "gocardless", "Stripe"])
def test_source_refuses_providers_without_credentials(provider: str) -> None:
    with pytest.raises(ValueError, match="no credentials"):
        ProviderCredentialSource(provider, SECRET_NAME, parse_account)
    with pytest.raises(ValueError, match="no credentials"):
        credential_secret_id(provider, {})


def test_source_refuses_negative_max_age_and_empty_secret_id() -> None:
    with pytest.raises(ValueError, match="max_age_seconds"):
        ProviderCredentialSource("adyen", SECRET_NAME, parse_account, max_age_seconds=-1)
    with pytest.raises(ValueError, match="secret_id"):
        ProviderCredentialSource("adyen", "", parse_account)


def test_source_creates_no_aws_client_until_first_use(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # Without a region boto3 cannot create a client: constructing the source must not try (cold start, import time).
    for variable in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    source = ProviderCredentialSource("stripe", SECRET_NAME, parse_account)

    assert source.max_age_seconds == DEFAULT_MAX_AGE_SECONDS


def test_stripe_source_gives_stripe_credentials_per_tenant(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value(
        {"api_key": "sk_test_51PlatformDO_NOT_LEAK"}, {TENANT: {"api_key": "sk_test_51Tenant"}}
    )
    secret_id = _store(secretsmanager, value, names.provider_secret_name("stripe"))
    source = stripe_credentials(secret_id, secrets=SecretsProvider(boto3_client=secretsmanager), clock=clock)

    assert source.for_tenant(None) == StripeCredentials(api_key="sk_test_51PlatformDO_NOT_LEAK")
    assert source.for_tenant(TENANT) == StripeCredentials(api_key="sk_test_51Tenant")
    assert "sk_test" not in repr(source.for_tenant(None))


@pytest.mark.parametrize(
    ("platform", "problem"),
    [
        ({}, "platform.api_key: missing"),
        ({"api_key": ""}, "platform.api_key: string_too_short"),
        ({"api_key": "sk_test_51PlatformDO_NOT_LEAK", "merchant_account": "X"}, "platform.merchant_account: extra"),
    ],
)
def test_stripe_source_refuses_a_malformed_entry(
    secretsmanager: Any, clock: Clock, platform: dict[str, str], problem: str
) -> None:
    secret_id = _store(secretsmanager, credential_secret_value(platform), names.provider_secret_name("stripe"))
    source = stripe_credentials(secret_id, secrets=SecretsProvider(boto3_client=secretsmanager), clock=clock)

    with pytest.raises(ProviderCredentialsMisconfigured) as raised:
        source.for_tenant(None)
    assert problem in str(raised.value)
    _assert_reveals_nothing(raised.value, "sk_test_51PlatformDO_NOT_LEAK")


def test_adyen_source_gives_adyen_credentials_per_tenant(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value(_platform(), {TENANT: {"api_key": TENANT_KEY, "merchant_account": "TenantECOM"}})
    source = adyen_credentials(
        _store(secretsmanager, value), secrets=SecretsProvider(boto3_client=secretsmanager), clock=clock
    )

    assert source.for_tenant(uuid4()) == AdyenCredentials(api_key=PLATFORM_KEY, merchant_account="PlatformECOM")
    assert source.for_tenant(TENANT) == AdyenCredentials(api_key=TENANT_KEY, merchant_account="TenantECOM")
    assert TENANT_KEY not in repr(source.for_tenant(TENANT))


def test_adyen_source_refuses_an_entry_without_merchant_account(secretsmanager: Any, clock: Clock) -> None:
    value = credential_secret_value({"api_key": PLATFORM_KEY})
    source = adyen_credentials(
        _store(secretsmanager, value), secrets=SecretsProvider(boto3_client=secretsmanager), clock=clock
    )

    with pytest.raises(ProviderCredentialsMisconfigured) as raised:
        source.for_tenant(None)
    assert "platform.merchant_account: missing" in str(raised.value)
    _assert_reveals_nothing(raised.value, PLATFORM_KEY)
