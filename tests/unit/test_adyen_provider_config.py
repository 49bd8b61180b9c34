"""AdyenProvider's configuration: the pinned v71 URLs, credentials that never show their key, no status polling."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from Adyen import AdyenClient  # type: ignore[import-untyped]
from pydantic import ValidationError

from billing.domain.errors import StatusNotPollable
from billing.domain.execution import PaymentRail
from billing.providers.adyen import AdyenCredentials, AdyenProvider, parse_adyen_credentials
from billing.providers.adyen.endpoints import AdyenEnvironment, checkout_base_url
from billing.providers.adyen.errors import adyen_decision_for
from billing.rails.ports import ProviderCharge, ProviderRefund
from billing.rails.results import SubmitOutcome

API_KEY = "AQE1hmfxK_secret_key_value"
CREDENTIALS = AdyenCredentials(api_key=API_KEY, merchant_account="PlatformECOM")
# Nothing listens on the discard port; the tests here fail before anything is sent.
UNREACHABLE = "http://127.0.0.1:9"


def _provider(**overrides: object) -> AdyenProvider:
    settings: dict[str, object] = {"return_url": "https://shop.example/return", "api_base": UNREACHABLE}
    settings.update(overrides)
    return AdyenProvider(lambda tenant: CREDENTIALS, **settings)  # type: ignore[arg-type]


def _charge(tenant_id: UUID, **overrides: object) -> ProviderCharge:
    fields: dict[str, object] = {
        "tenant_id": tenant_id,
        "execution_id": uuid4(),
        "amount": 1000,
        "currency": "EUR",
        "rail": PaymentRail.CARD,
        "payment_instrument_id": "M5N7TQ4TG5PFWR50",
        "customer_reference": "contract-1",
    }
    fields.update(overrides)
    return ProviderCharge(**fields)  # type: ignore[arg-type]


def test_test_environment_speaks_checkout_v71() -> None:
    assert checkout_base_url(AdyenEnvironment.TEST) == "https://checkout-test.adyen.com/v71"
    assert _provider(api_base=None).base_url == "https://checkout-test.adyen.com/v71"


def test_live_url_is_the_one_the_sdk_derives_from_the_test_url() -> None:
    # Given the SDK's own rewrite of a test URL for the live platform
    sdk = AdyenClient(platform="live", live_endpoint_prefix="1797a841fbb37ca7-AdyenDemo")
    expected = sdk._determine_api_url("live", "https://checkout-test.adyen.com/v71/payments")
    # Then the adapter's live base is that URL's base, and the SDK leaves it as it is
    live = checkout_base_url(AdyenEnvironment.LIVE, live_endpoint_prefix="1797a841fbb37ca7-AdyenDemo")
    assert f"{live}/payments" == expected
    assert live == "https://1797a841fbb37ca7-AdyenDemo-checkout-live.adyenpayments.com/checkout/v71"
    provider = _provider(api_base=None, environment="live", live_endpoint_prefix="1797a841fbb37ca7-AdyenDemo")
    assert provider.base_url == live


def test_api_base_overrides_the_environment_and_keeps_the_version() -> None:
    assert _provider(api_base="http://127.0.0.1:8080").base_url == "http://127.0.0.1:8080/v71"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"api_base": None, "environment": "live"}, "live endpoint prefix"),
        ({"api_base": None, "environment": "live", "live_endpoint_prefix": "../evil"}, "live endpoint prefix"),
        # The SDK rewrites "-test" to "-live" in live URLs and "-live" to "-test" in others.
        ({"api_base": None, "environment": "live", "live_endpoint_prefix": "abc-test"}, "SDK would not send"),
        ({"api_base": "http://shop-live.example"}, "SDK would not send"),
        ({"api_base": "http://127.0.0.1:8080/v71"}, "scheme and host only"),
        ({"return_url": ""}, "returnUrl"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"environment": "staging"}, "staging"),
    ],
)
def test_misconfiguration_is_refused_at_construction(settings: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        _provider(**settings)


def test_credentials_and_provider_repr_never_show_the_key() -> None:
    assert API_KEY not in repr(CREDENTIALS)
    assert "PlatformECOM" in repr(CREDENTIALS)
    assert API_KEY not in repr(_provider())


def test_credentials_are_parsed_from_the_secret_entry_without_echoing_it() -> None:
    parsed = parse_adyen_credentials({"api_key": API_KEY, "merchant_account": "TenantECOM"})
    assert parsed == AdyenCredentials(API_KEY, "TenantECOM")
    with pytest.raises(ValidationError) as invalid:
        parse_adyen_credentials({"api_key": API_KEY, "merchant_account": "", "extra": API_KEY})
    assert API_KEY not in str(invalid.value)


def test_credentials_need_both_fields() -> None:
    with pytest.raises(ValueError, match="API key and a merchant account"):
        AdyenCredentials(api_key="", merchant_account="M")


def test_adyen_is_not_polled() -> None:
    provider = _provider()
    refund = ProviderRefund(uuid4(), uuid4(), uuid4(), "993617895204576J", 100, "EUR")
    assert provider.name == "adyen"
    assert provider.polls_status is False
    with pytest.raises(StatusNotPollable):
        provider.check_status(provider_reference="993617895204576J")
    with pytest.raises(StatusNotPollable):
        provider.check_status(idempotency_key="t:e")
    with pytest.raises(StatusNotPollable):
        provider.check_refund(refund, refund_reference=None)


def test_decision_for_is_the_adapters_table() -> None:
    provider = _provider()
    for code in ("http_401_000", "http_422_14_030", "http_500_905", "refused_12", "outcome_unknown", "whatever"):
        assert provider.decision_for(code) is adyen_decision_for(code)


def test_tenant_view_refuses_another_tenants_charge() -> None:
    # A charge sent on the wrong tenant's merchant account is a wiring fault, never a payment.
    tenant, other = uuid4(), uuid4()
    view = _provider().for_tenant(tenant)
    with pytest.raises(ValueError, match="bound to tenant"):
        view.submit(_charge(other), "k")


def test_tenant_view_asks_the_source_for_that_tenants_credentials() -> None:
    asked: list[UUID | None] = []

    def source(tenant: UUID | None) -> AdyenCredentials:
        asked.append(tenant)
        raise RuntimeError("secret billing/provider/adyen unreadable")

    tenant = uuid4()
    view = AdyenProvider(source, return_url="https://shop.example/r", api_base=UNREACHABLE).for_tenant(tenant)
    # When the source cannot give credentials, nothing is sent, and the engine may resend
    result = view.submit(_charge(tenant), "k")
    assert asked == [tenant]
    assert result.outcome is SubmitOutcome.TRANSIENT_ERROR
    assert result.error_code == "credentials_unavailable"
    assert result.error is not None
    assert "billing/provider/adyen" not in result.error.message


def test_unbound_provider_uses_the_charges_tenant_and_the_platform_for_cancels() -> None:
    asked: list[UUID | None] = []

    def source(tenant: UUID | None) -> AdyenCredentials:
        asked.append(tenant)
        raise RuntimeError("no")

    provider = AdyenProvider(source, return_url="https://shop.example/r", api_base=UNREACHABLE)
    tenant = uuid4()
    provider.submit(_charge(tenant), "k")
    with pytest.raises(Exception, match="credentials_unavailable"):
        provider.cancel("993617895204576J", "k:cancel")
    assert asked == [tenant, None]


def test_charge_adyen_cannot_take_fails_without_a_request() -> None:
    result = _provider().submit(_charge(uuid4(), customer_reference=None), "k")
    assert result.outcome is SubmitOutcome.FAILED
    assert result.error_code == "shopper_reference_missing"
