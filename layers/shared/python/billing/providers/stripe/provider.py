"""StripeProvider: the PaymentProvider port on Stripe's PaymentIntents and Refunds, through the official SDK.

One PaymentIntent per execution, created and confirmed in one request under the execution's idempotency key.
An attempt above the first looks for the intent an earlier attempt may have made before creating one, so a
server that ignores the key (localstripe), or a Stripe that has forgotten it (after 24 hours), still charges once.
Errors become results through one decision table (errors.py); statuses through one table (statuses.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, NoReturn, TypeVar
from uuid import UUID

import stripe

from billing.providers.stripe.clients import (
    CredentialsSource,
    StripeClients,
    StripeTimeouts,
    silence_sdk_debug_logging,
)
from billing.providers.stripe.errors import (
    PARAMETER_MISSING,
    PAYMENT_INTENT_LOOKUP_FAILED,
    REFUND_LOOKUP_FAILED,
    classify,
    error_body,
    is_not_found,
    stripe_decision_for,
)
from billing.providers.stripe.lookup import PaymentIntentFinder, find_refund
from billing.providers.stripe.params import (
    EXECUTION_ID_KEY,
    TENANT_ID_KEY,
    payment_intent_params,
    refund_params,
)
from billing.providers.stripe.server_profile import STRIPE, StripeServerProfile
from billing.providers.stripe.statuses import (
    StripeObject,
    failed_but_open,
    refund_result_for,
    status_check_for,
    submit_result_for,
)
from billing.providers.stripe.three_ds import EXPAND_LATEST_CHARGE, ThreeDSecureNotSendable, authentication_for
from billing.rails.ports import ProviderCharge, ProviderRefund
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    ProviderError,
    RefundResult,
    StatusCheck,
    SubmitResult,
    unavailable,
)

PROVIDER_NAME: Final = "stripe"
# Suffix of the idempotency key that cancels an intent whose attempt failed (see statuses.py): not the charge's
# own key, which Stripe would answer with the charge's replayed response.
CANCEL_DECLINED_SUFFIX: Final = ":cancel-declined"

log = logging.getLogger(__name__)

_Result = TypeVar("_Result", SubmitResult, StatusCheck)


@dataclass(frozen=True, slots=True)
class _Setup:
    """What every view of one provider shares: configuration and the SDK clients."""

    credentials: CredentialsSource
    profile: StripeServerProfile
    return_url: str | None
    clients: StripeClients
    finder: PaymentIntentFinder


class StripeProvider:
    """The PaymentProvider port on Stripe. The provider itself speaks for the platform account; for_tenant(t) is
    a view speaking for tenant t's account (its override, or the platform's, as the credentials callable says)."""

    def __init__(
        self,
        credentials: CredentialsSource,
        *,
        api_base: str | None = None,
        profile: StripeServerProfile = STRIPE,
        return_url: str | None = None,
        timeouts: StripeTimeouts | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        silence_sdk_debug_logging()
        self._setup = _Setup(
            credentials=credentials,
            profile=profile,
            return_url=return_url,
            clients=StripeClients(api_base=api_base, timeouts=timeouts or StripeTimeouts()),
            finder=PaymentIntentFinder(profile, clock=clock),
        )
        self._tenant_id: UUID | None = None
        self._bound_client: stripe.StripeClient | None = None

    @classmethod
    def _view(cls, setup: _Setup, tenant_id: UUID, client: stripe.StripeClient) -> StripeProvider:
        view = cls.__new__(cls)
        view._setup = setup
        view._tenant_id = tenant_id
        view._bound_client = client
        return view

    def __repr__(self) -> str:
        account = "platform" if self._tenant_id is None else f"tenant {self._tenant_id}"
        return f"StripeProvider(profile={self._setup.profile.name!r}, account={account!r})"

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    @property
    def polls_status(self) -> bool:
        return True

    def for_tenant(self, tenant_id: UUID) -> StripeProvider:
        """A view bound to the tenant's credentials, asked for now: after a key rotation the next view has the
        new key (the SDK client is cached per key, the key by the credentials callable)."""
        client = self._setup.clients.client_for(self._setup.credentials(tenant_id))
        return StripeProvider._view(self._setup, tenant_id, client)

    def decision_for(self, error_code: str) -> Decision:
        return stripe_decision_for(error_code)

    # --- charges ----------------------------------------------------------------------------------------------

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        """Create and confirm the execution's PaymentIntent, or report the one an earlier attempt made."""
        if charge.payment_instrument_id is None:
            error = ProviderError(PARAMETER_MISSING, "the charge has no payment method (a pm_... token)")
            return SubmitResult.from_error(error, stripe_decision_for(PARAMETER_MISSING))
        client = self._client()
        cancel_key = idempotency_key + CANCEL_DECLINED_SUFFIX
        if charge.attempt > 1:
            # An earlier attempt's answer may have been lost after Stripe made the intent; never make a second.
            try:
                existing = self._setup.finder.find(
                    client,
                    execution_id=charge.execution_id,
                    tenant_id=charge.tenant_id,
                    created_not_before=charge.created_at,
                )
            except stripe.StripeError as exc:
                return SubmitResult.from_error(*_lookup_failed(exc, PAYMENT_INTENT_LOOKUP_FAILED))
            if existing is not None:
                return self._answer_for(client, existing, request_id=None, cancel_key=cancel_key)
        try:
            params = payment_intent_params(charge, profile=self._setup.profile, return_url=self._setup.return_url)
        except ThreeDSecureNotSendable as refused:
            error = ProviderError(PARAMETER_MISSING, str(refused))
            return SubmitResult.from_error(error, stripe_decision_for(PARAMETER_MISSING))
        # The charge comes back expanded: its payment_method_details say what 3-D Secure did.
        params["expand"] = list(EXPAND_LATEST_CHARGE)
        try:
            intent = client.v1.payment_intents.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            return _without_authentication_value(self._declined(client, exc, cancel_key), charge)
        except stripe.StripeError as exc:
            return _without_authentication_value(SubmitResult.from_error(*classify(exc)), charge)
        return self._answer_for(client, intent.to_dict(), request_id=_request_id(intent), cancel_key=cancel_key)

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        """The intent's state, by reference (retrieve) or by key (found by the execution id it carries).

        An intent whose attempt failed is canceled as it is reported FAILED, as at submit: the engine fails the
        execution, so no later confirm (the customer retrying with the client secret) may move money for it.
        """
        if (provider_reference is None) == (idempotency_key is None):
            raise ValueError("check_status needs exactly one of provider_reference or idempotency_key")
        client = self._client()
        if provider_reference is not None:
            try:
                intent = client.v1.payment_intents.retrieve(
                    provider_reference, params={"expand": list(EXPAND_LATEST_CHARGE)}
                )
            except stripe.StripeError as exc:
                if is_not_found(exc):
                    return StatusCheck.not_found(request_id=exc.request_id)
                _raise_unavailable("check_status", exc)
            found: StripeObject = intent.to_dict()
            request_id = _request_id(intent)
        else:
            assert idempotency_key is not None
            tenant_id, execution_id = _parse_idempotency_key(idempotency_key)
            try:
                existing = self._setup.finder.find(
                    client, execution_id=execution_id, tenant_id=tenant_id, created_not_before=None
                )
            except stripe.StripeError as exc:
                _raise_unavailable("check_status", exc)
            if existing is None:
                return StatusCheck.not_found()
            found, request_id = existing, None
        if failed_but_open(found):
            self._cancel_failed(client, found, _cancel_key_of(found))
        return _with_authentication(status_check_for(found, request_id=request_id), found)

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        """Cancel an intent still waiting for the customer; the intent's state afterwards (see the port)."""
        if not idempotency_key:
            raise ValueError("cancel needs the idempotency key of the cancel request")
        client = self._client()
        try:
            intent = client.v1.payment_intents.cancel(reference, options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            if is_not_found(exc):
                return StatusCheck.not_found(request_id=exc.request_id)
            if isinstance(exc, stripe.InvalidRequestError | stripe.IdempotencyError):
                # Refused because of the intent's state (payment_intent_unexpected_state: it succeeded, failed or
                # is processing first): report it as it stands.
                return self.check_status(provider_reference=reference)
            _raise_unavailable("cancel", exc)
        canceled = intent.to_dict()
        return _with_authentication(status_check_for(canceled, request_id=_request_id(intent)), canceled)

    # --- refunds ----------------------------------------------------------------------------------------------

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        """Refund once per reversal row: an existing refund with our refund_id is reported, never made again."""
        client = self._client()
        try:
            existing = find_refund(client, payment_intent=refund.payment_reference, refund_id=refund.refund_id)
        except stripe.StripeError as exc:
            if not is_not_found(exc):
                return RefundResult.from_error(*_lookup_failed(exc, REFUND_LOOKUP_FAILED))
            # No such intent, so no refund of it either: the create below gets Stripe's refusal.
            existing = None
        if existing is not None:
            return refund_result_for(existing, request_id=None)
        params = refund_params(refund, profile=self._setup.profile)
        try:
            created = client.v1.refunds.create(params=params, options={"idempotency_key": idempotency_key})
        except stripe.StripeError as exc:
            return RefundResult.from_error(*classify(exc))
        return refund_result_for(created.to_dict(), request_id=_request_id(created))

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        """The refund's state by its reference, else found among the intent's refunds by our refund_id."""
        client = self._client()
        try:
            if refund_reference is not None:
                found_refund = client.v1.refunds.retrieve(refund_reference)
                return refund_result_for(found_refund.to_dict(), request_id=_request_id(found_refund))
            existing = find_refund(client, payment_intent=refund.payment_reference, refund_id=refund.refund_id)
        except stripe.StripeError as exc:
            if is_not_found(exc):
                return RefundResult.not_found(request_id=exc.request_id)
            _raise_unavailable("check_refund", exc)
        if existing is None:
            return RefundResult.not_found()
        return refund_result_for(existing, request_id=None)

    # --- internals --------------------------------------------------------------------------------------------

    def _client(self) -> stripe.StripeClient:
        if self._bound_client is not None:
            return self._bound_client
        return self._setup.clients.client_for(self._setup.credentials(None))

    def _answer_for(
        self, client: stripe.StripeClient, intent: StripeObject, *, request_id: str | None, cancel_key: str
    ) -> SubmitResult:
        if failed_but_open(intent):
            # A server may answer a failed confirm with 200 and requires_payment_method instead of a 402.
            self._cancel_failed(client, intent, cancel_key)
        try:
            result = submit_result_for(intent, request_id=request_id, return_url=self._setup.return_url)
            return _with_authentication(result, intent)
        except (KeyError, TypeError, ValueError) as exc:
            # An answer we cannot read: the intent may exist, so only check_status can tell.
            error = ProviderError(OUTCOME_UNKNOWN_CODE, f"unreadable PaymentIntent: {type(exc).__name__}", 200)
            return SubmitResult.from_error(error, stripe_decision_for(OUTCOME_UNKNOWN_CODE))

    def _declined(self, client: stripe.StripeClient, exc: stripe.CardError, cancel_key: str) -> SubmitResult:
        """A decline: FAILED with Stripe's code and the intent it left, which is canceled (see statuses.py)."""
        error, decision = classify(exc)
        intent_id = self._declined_intent_id(client, exc)
        if intent_id is not None:
            self._cancel_failed(client, {"id": intent_id}, cancel_key)
        result = SubmitResult.from_error(error, decision, provider_reference=intent_id)
        # Stripe's error names the intent it left; what it holds of 3-D Secure (a failed authentication) goes along.
        declined_intent = error_body(exc).get("payment_intent")
        return _with_authentication(result, declined_intent) if isinstance(declined_intent, dict) else result

    def _declined_intent_id(self, client: stripe.StripeClient, exc: stripe.CardError) -> str | None:
        body = error_body(exc)
        intent = body.get("payment_intent")
        if isinstance(intent, dict) and isinstance(intent.get("id"), str):
            return str(intent["id"])
        # localstripe names only the failed charge; the charge names its intent.
        charge_id = body.get("charge")
        if isinstance(charge_id, str):
            try:
                charge = client.v1.charges.retrieve(charge_id).to_dict()
            except stripe.StripeError as lookup_error:
                _log_failed_call("retrieve the declined charge", lookup_error)
                return None
            intent_id = charge.get("payment_intent")
            return intent_id if isinstance(intent_id, str) else None
        return None

    def _cancel_failed(self, client: stripe.StripeClient, intent: StripeObject, cancel_key: str) -> None:
        """Best effort: an intent left open after a failed attempt is canceled; an error is logged, not raised,
        and the failure is reported all the same (the next check_status tries again)."""
        try:
            client.v1.payment_intents.cancel(str(intent["id"]), options={"idempotency_key": cancel_key})
        except stripe.StripeError as exc:
            _log_failed_call("cancel a failed PaymentIntent", exc, payment_intent=str(intent["id"]))


def _with_authentication(result: _Result, intent: StripeObject) -> _Result:
    """The result with what the intent tells of 3-D Secure (three_ds.authentication_for)."""
    authentication = authentication_for(intent)
    return result if authentication is None else replace(result, authentication=authentication)


def _without_authentication_value(result: SubmitResult, charge: ProviderCharge) -> SubmitResult:
    """The result with the imported authentication value cut out of its error message: Stripe's message could
    quote a parameter, and the message is stored with the execution."""
    data = charge.three_ds.data
    if result.error is None or data is None or not data.authentication_value:
        return result
    if data.authentication_value not in result.error.message:
        return result
    message = result.error.message.replace(data.authentication_value, "<redacted>")
    return replace(result, error=replace(result.error, message=message))


def _lookup_failed(exc: stripe.StripeError, code: str) -> tuple[ProviderError, Decision]:
    # A lookup is a read: whatever went wrong, this attempt made nothing, and the next one looks again.
    described, _ = classify(exc)
    decision = stripe_decision_for(code)
    error = ProviderError(
        code,
        f"could not look for an earlier request's result: {described.message}",
        exc.http_status,
        exc.request_id,
        retryable=decision is Decision.RETRY,
    )
    return error, decision


def _raise_unavailable(operation: str, exc: stripe.StripeError) -> NoReturn:
    described, _ = classify(exc)
    raise unavailable(PROVIDER_NAME, operation, described) from exc


def _log_failed_call(what: str, exc: stripe.StripeError, **context: str) -> None:
    # Class, status and request id only: Stripe's message could quote a parameter, and the request id is what
    # Stripe's support needs.
    log.warning(
        f"could not {what}",
        extra={"error": type(exc).__name__, "http_status": exc.http_status, "request_id": exc.request_id, **context},
    )


def _request_id(obj: stripe.StripeObject) -> str | None:
    response = obj.last_response
    return response.request_id if response is not None else None


def _parse_idempotency_key(key: str) -> tuple[UUID, UUID]:
    """(tenant id, execution id) from provider_idempotency_key's "<tenant>:<execution id>"."""
    tenant, separator, execution = key.partition(":")
    if not separator:
        raise ValueError("an execution's idempotency key is '<tenant id>:<execution id>'")
    return UUID(tenant), UUID(execution)


def _cancel_key_of(intent: StripeObject) -> str:
    """The cancel-declined key submit would use for this intent: rebuilt from our metadata when it is there."""
    metadata = intent.get("metadata") or {}
    tenant, execution = metadata.get(TENANT_ID_KEY), metadata.get(EXECUTION_ID_KEY)
    base = f"{tenant}:{execution}" if tenant and execution else str(intent["id"])
    return base + CANCEL_DECLINED_SUFFIX
