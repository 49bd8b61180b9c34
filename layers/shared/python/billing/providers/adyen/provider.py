"""AdyenProvider: the PaymentProvider port over Checkout v71, sent by Adyen's official SDK.

- submit: POST /payments with the stored card token; the resultCode decides the outcome (result_codes).
- refund: POST /payments/{pspReference}/refunds; always PENDING, the REFUND webhook decides.
- cancel: POST /payments/{pspReference}/cancels (or /cancels by our reference when Adyen gave no pspReference);
  always STILL_PENDING, the CANCELLATION (TECHNICAL_CANCEL) webhook decides.
- check_status / check_refund: Adyen has no status endpoint; they raise StatusNotPollable and polls_status is False.
  Charges and refunds are followed by webhooks, then by the settlement report (docs/providers.md).

Every request carries an Idempotency-Key derived from the port's key, the same on every attempt. The SDK sends with
urllib (forced, so behaviour does not depend on whether `requests` happens to be installed), one attempt per call:
it never retries on its own, the engine does, with the same key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Final, NoReturn
from uuid import UUID

from Adyen import AdyenClient  # type: ignore[import-untyped]
from Adyen.exceptions import AdyenAPIResponseError  # type: ignore[import-untyped]
from Adyen.services.checkout import AdyenCheckoutApi  # type: ignore[import-untyped]

from billing.domain.errors import StatusNotPollable
from billing.providers.adyen.credentials import AdyenCredentials, AdyenCredentialsSource
from billing.providers.adyen.endpoints import AdyenEnvironment, checkout_base_url
from billing.providers.adyen.errors import (
    CREDENTIALS_UNAVAILABLE,
    UNEXPECTED_RESPONSE,
    adyen_decision_for,
    http_error,
    provider_error,
    transport_error,
)
from billing.providers.adyen.idempotency import adyen_idempotency_key
from billing.providers.adyen.request_bodies import (
    ChargeNotSendable,
    cancel_request,
    payment_request,
    refund_request,
    standalone_cancel_request,
)
from billing.providers.adyen.responses import modification_reference, refund_result, submit_result
from billing.rails.ports import PaymentProvider, ProviderCharge, ProviderRefund
from billing.rails.results import Decision, ProviderError, RefundResult, StatusCheck, SubmitResult, unavailable

PROVIDER_NAME: Final = "adyen"
# The SDK's default, and long enough for a /payments call that runs 3-D Secure 2 or waits on a slow issuer; urllib
# applies it to the connect and to each read, not to the whole exchange.
DEFAULT_TIMEOUT_SECONDS: Final = 30.0
# The SDK picks requests or pycurl when importable; urllib is always there, and errors.transport_error relies on
# how it reports failures.
_HTTP_CLIENT: Final = "urllib"


class _SdkAnswer:
    """The status and parsed body of one 2xx answer (the SDK's AdyenResult, typed)."""

    __slots__ = ("body", "http_status")

    def __init__(self, result: Any) -> None:
        self.body: object = result.message
        self.http_status: int = int(result.status_code)


class _RequestFailed(Exception):
    """One Adyen call ended without a 2xx answer; `error` says why, classified by the decision table."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.code)
        self.error = error


class AdyenProvider:
    """The Adyen PSP; implements the PaymentProvider port. Thread-safe: each call builds its own SDK client."""

    def __init__(
        self,
        credentials: AdyenCredentialsSource,
        *,
        return_url: str,
        environment: AdyenEnvironment | str = AdyenEnvironment.TEST,
        live_endpoint_prefix: str | None = None,
        api_base: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        tenant_id: UUID | None = None,
    ) -> None:
        if not return_url:
            raise ValueError("Adyen requires a returnUrl on every payment")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._credentials = credentials
        self._return_url = return_url
        self._environment = AdyenEnvironment(environment)
        self._live_endpoint_prefix = live_endpoint_prefix
        self._api_base = api_base
        self._timeout_seconds = timeout_seconds
        self._tenant_id = tenant_id
        # The one place the API version is chosen (endpoints.CHECKOUT_API_VERSION).
        self._base_url = checkout_base_url(
            self._environment, live_endpoint_prefix=live_endpoint_prefix, api_base=api_base
        )
        self._require_sdk_keeps_base_url()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(environment={self._environment.value!r}, base_url={self._base_url!r}, "
            f"tenant_id={self._tenant_id!r})"
        )

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def base_url(self) -> str:
        """Where the Checkout calls go, version included."""
        return self._base_url

    @property
    def polls_status(self) -> bool:
        return False

    def decision_for(self, error_code: str) -> Decision:
        return adyen_decision_for(error_code)

    def for_tenant(self, tenant_id: UUID) -> PaymentProvider:
        """This provider on `tenant_id`'s account: its override when it has one, else the platform's. Credentials
        are looked up on each call, so a rotated key is picked up as soon as the source has it."""
        return AdyenProvider(
            self._credentials,
            return_url=self._return_url,
            environment=self._environment,
            live_endpoint_prefix=self._live_endpoint_prefix,
            api_base=self._api_base,
            timeout_seconds=self._timeout_seconds,
            tenant_id=tenant_id,
        )

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        """POST /payments once per idempotency key; Adyen replays the first answer to a repeated key."""
        merchant_reference = str(charge.execution_id)
        key = adyen_idempotency_key(idempotency_key)
        try:
            credentials = self._credentials_for(charge.tenant_id)
            body = payment_request(charge, merchant_account=credentials.merchant_account, return_url=self._return_url)
            answer = self._call(
                credentials,
                lambda checkout: checkout.payments_api.payments(body, idempotency_key=key),
            )
        except ChargeNotSendable as refused:
            error = provider_error(refused.code, refused.message, http_status=None, request_id=None)
            return SubmitResult.from_error(error, adyen_decision_for(refused.code))
        except _RequestFailed as failed:
            return SubmitResult.from_error(failed.error, adyen_decision_for(failed.error.code))
        return submit_result(
            answer.body,
            merchant_reference=merchant_reference,
            return_url=self._return_url,
            http_status=answer.http_status,
        )

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        """Adyen has no payment status endpoint: its webhooks and settlement report tell."""
        self._not_pollable("a payment")

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        """Ask Adyen to cancel the charge; STILL_PENDING, since the outcome only comes by webhook.

        Adyen answers a cancel with "received" and reports the result in a CANCELLATION webhook (TECHNICAL_CANCEL for
        /cancels): a charge the shopper completed first stays paid, which that webhook, or the AUTHORISATION one,
        says. Raises ProviderUnavailable when Adyen was not reached, did not answer, or refused the request.
        """
        if not reference or not idempotency_key:
            raise ValueError("cancel needs the charge's reference and the cancel's idempotency key")
        key = adyen_idempotency_key(idempotency_key)
        try:
            credentials = self._credentials_for(None)
            if _is_merchant_reference(reference):
                # No pspReference came back (3-D Secure 2 before authorisation): cancel by the reference we sent.
                body = standalone_cancel_request(reference, merchant_account=credentials.merchant_account)
                answer = self._call(
                    credentials,
                    lambda checkout: checkout.modifications_api.cancel_authorised_payment(body, idempotency_key=key),
                )
            else:
                body = cancel_request(merchant_account=credentials.merchant_account)
                answer = self._call(
                    credentials,
                    lambda checkout: checkout.modifications_api.cancel_authorised_payment_by_psp_reference(
                        body, reference, idempotency_key=key
                    ),
                )
        except _RequestFailed as failed:
            raise unavailable(PROVIDER_NAME, "cancel", failed.error) from None
        cancel_reference = modification_reference(answer.body)
        if cancel_reference is None:
            error = provider_error(
                UNEXPECTED_RESPONSE,
                "cancel answer without status received",
                http_status=answer.http_status,
                request_id=None,
            )
            raise unavailable(PROVIDER_NAME, "cancel", error)
        return StatusCheck.still_pending(reference, request_id=cancel_reference)

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        """POST /payments/{pspReference}/refunds once per idempotency key; PENDING with the refund's pspReference."""
        key = adyen_idempotency_key(idempotency_key)
        try:
            credentials = self._credentials_for(refund.tenant_id)
            body = refund_request(refund, merchant_account=credentials.merchant_account)
            answer = self._call(
                credentials,
                lambda checkout: checkout.modifications_api.refund_captured_payment(
                    body, refund.payment_reference, idempotency_key=key
                ),
            )
        except _RequestFailed as failed:
            return RefundResult.from_error(failed.error, adyen_decision_for(failed.error.code))
        return refund_result(answer.body, http_status=answer.http_status)

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        """Adyen has no refund status endpoint: the REFUND webhook and the settlement report tell."""
        self._not_pollable("a refund")

    def _credentials_for(self, tenant_id: UUID | None) -> AdyenCredentials:
        """The bound tenant's credentials; a charge of another tenant is a wiring fault, never sent on the wrong
        account. Unbound: the charge's tenant's (None, the platform's)."""
        if self._tenant_id is not None and tenant_id is not None and tenant_id != self._tenant_id:
            raise ValueError(f"this Adyen provider is bound to tenant {self._tenant_id}, not {tenant_id}")
        try:
            return self._credentials(self._tenant_id or tenant_id)
        except Exception as exc:
            # Nothing was sent. Only the type: the source's message is its own business, and may name the secret.
            error = provider_error(
                CREDENTIALS_UNAVAILABLE,
                f"Adyen credentials could not be read ({type(exc).__name__})",
                http_status=None,
                request_id=None,
            )
            raise _RequestFailed(error) from None

    def _checkout(self, credentials: AdyenCredentials) -> Any:
        client = AdyenClient(
            xapikey=credentials.api_key,
            merchant_account=credentials.merchant_account,
            platform=self._sdk_platform,
            live_endpoint_prefix=self._live_endpoint_prefix,
            http_force=_HTTP_CLIENT,
            # Annotated int by the SDK; urllib takes a float.
            http_timeout=self._timeout_seconds,
        )
        checkout = AdyenCheckoutApi(client=client)
        checkout.payments_api.baseUrl = self._base_url
        checkout.modifications_api.baseUrl = self._base_url
        return checkout

    def _call(self, credentials: AdyenCredentials, send: Callable[[Any], Any]) -> _SdkAnswer:
        """One SDK call; any failure becomes _RequestFailed with the error classified."""
        try:
            return _SdkAnswer(send(self._checkout(credentials)))
        except AdyenAPIResponseError as exc:
            raise _RequestFailed(http_error(exc)) from None
        except Exception as exc:
            # Whatever else escaped the SDK (urllib's errors, http.client's, a bug): errors.transport_error tells
            # "never sent" from "sent, no answer", and anything it does not know is the latter.
            raise _RequestFailed(transport_error(exc)) from None

    @property
    def _sdk_platform(self) -> str:
        # The SDK rewrites URLs by platform; an api_base (a contract server) is treated like the test platform,
        # whose rewrite (-live to -test) leaves a host without "-live" as it is.
        return AdyenEnvironment.TEST.value if self._api_base is not None else self._environment.value

    def _require_sdk_keeps_base_url(self) -> None:
        """Refuse a configuration whose URL the SDK would rewrite behind our back (a prefix holding "-test")."""
        probe = AdyenClient(platform=self._sdk_platform, live_endpoint_prefix=self._live_endpoint_prefix)
        endpoint = f"{self._base_url}/payments"
        if probe._determine_api_url(self._sdk_platform, endpoint) != endpoint:
            raise ValueError(f"the Adyen SDK would not send to {endpoint}; check api_base and live_endpoint_prefix")

    def _not_pollable(self, what: str) -> NoReturn:
        raise StatusNotPollable(
            f"Adyen has no status endpoint for {what}: its webhooks, then its settlement report, tell",
            provider=PROVIDER_NAME,
        )


def _is_merchant_reference(reference: str) -> bool:
    """True for our own reference (an execution id, a UUID); Adyen's pspReferences are 16 letters and digits."""
    try:
        uuid.UUID(reference)
    except ValueError:
        return False
    return True
