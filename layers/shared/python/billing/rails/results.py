"""What a payment provider answers: submit results, status checks, provider errors and the decision each calls for.

Pure values, no I/O. Each outcome set is closed and every predicate over it is exhaustive (match + assert_never),
so adding an outcome fails type checking everywhere a caller has to decide what it means. The constructors
refuse impossible combinations (a success without a reference, a failure without an error), so a consumer can
rely on the fields an outcome promises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, assert_never

from billing.domain.errors import ProviderUnavailable
from billing.rails.three_ds import ProviderAuthentication


class SubmitOutcome(StrEnum):
    """What submitting a charge achieved, as far as the provider told us."""

    # Money captured; the charge is final (synchronous rails: card).
    SUCCEEDED = "succeeded"
    # The provider refused the charge for good; resubmitting the same request can never succeed.
    FAILED = "failed"
    # Accepted; the money moves (or bounces) days later, reported by webhook or check_status (SEPA, ACH).
    PENDING_SETTLEMENT = "pending_settlement"
    # The customer must act (3-D Secure) before any money moves.
    REQUIRES_ACTION = "requires_action"
    # Nothing was charged and the provider says so: resubmitting with the same idempotency key is safe.
    TRANSIENT_ERROR = "transient_error"
    # No usable answer (timeout, dropped connection): the charge may or may not exist at the provider.
    UNKNOWN = "unknown"


class StatusOutcome(StrEnum):
    """What check_status found at the provider."""

    # Captured (card) or settled as paid (debits): final.
    PAID = "paid"
    # Declined, returned or bounced: final.
    FAILED = "failed"
    # Accepted and not settled yet: ask again later.
    STILL_PENDING = "still_pending"
    # Waiting for the customer (3-D Secure): ask again later or give up after a deadline.
    REQUIRES_ACTION = "requires_action"
    # Canceled before any money moved (our cancel once the customer's time was up, or someone at the provider):
    # final, and it can never succeed afterwards.
    CANCELED = "canceled"
    # The provider holds no charge for this reference or key: nothing was charged.
    NOT_FOUND = "not_found"


class Decision(StrEnum):
    """What the engine does about a provider error code."""

    # Nothing was charged: resubmit with the same idempotency key after a backoff.
    RETRY = "retry"
    # A definitive refusal: the execution fails with the provider's code.
    FAIL = "fail"
    # We cannot tell whether money moved: leave the execution where it is and ask check_status later.
    RECONCILE_LATER = "reconcile_later"


# Code carried by UNKNOWN results when no provider answer exists to take a code from (client-side timeout,
# connection lost after the request was sent). Decision tables map it to RECONCILE_LATER.
OUTCOME_UNKNOWN_CODE = "outcome_unknown"


@dataclass(frozen=True, slots=True)
class ProviderError:
    """An error as the provider reported it: its own code kept as-is, plus what support needs to trace it.

    `retryable` is set by the provider adapter from its decision table, so it always agrees with decision_for.
    """

    code: str
    message: str
    http_status: int | None = None
    request_id: str | None = None
    retryable: bool = False

    def __post_init__(self) -> None:
        if not self.code:
            raise ValueError("a provider error needs the provider's code")


def submit_requires_reference(outcome: SubmitOutcome) -> bool:
    """True if the provider holds a charge after this outcome, so the result must name it."""
    match outcome:
        case SubmitOutcome.SUCCEEDED | SubmitOutcome.PENDING_SETTLEMENT | SubmitOutcome.REQUIRES_ACTION:
            return True
        # A decline often has a reference too (the failed charge), but need not.
        case SubmitOutcome.FAILED | SubmitOutcome.TRANSIENT_ERROR | SubmitOutcome.UNKNOWN:
            return False
        case _:
            assert_never(outcome)


def submit_carries_error(outcome: SubmitOutcome) -> bool:
    """True if the outcome is explained by a provider error (and must carry one)."""
    match outcome:
        case SubmitOutcome.FAILED | SubmitOutcome.TRANSIENT_ERROR | SubmitOutcome.UNKNOWN:
            return True
        case SubmitOutcome.SUCCEEDED | SubmitOutcome.PENDING_SETTLEMENT | SubmitOutcome.REQUIRES_ACTION:
            return False
        case _:
            assert_never(outcome)


def submit_is_final(outcome: SubmitOutcome) -> bool:
    """True if the charge's fate is decided by this answer and will never change."""
    match outcome:
        case SubmitOutcome.SUCCEEDED | SubmitOutcome.FAILED:
            return True
        case (
            SubmitOutcome.PENDING_SETTLEMENT
            | SubmitOutcome.REQUIRES_ACTION
            | SubmitOutcome.TRANSIENT_ERROR
            | SubmitOutcome.UNKNOWN
        ):
            return False
        case _:
            assert_never(outcome)


def decision_for_outcome(outcome: SubmitOutcome) -> Decision | None:
    """The decision an error outcome calls for; None when the provider accepted the charge (nothing to decide)."""
    match outcome:
        case SubmitOutcome.FAILED:
            return Decision.FAIL
        case SubmitOutcome.TRANSIENT_ERROR:
            return Decision.RETRY
        case SubmitOutcome.UNKNOWN:
            return Decision.RECONCILE_LATER
        case SubmitOutcome.SUCCEEDED | SubmitOutcome.PENDING_SETTLEMENT | SubmitOutcome.REQUIRES_ACTION:
            return None
        case _:
            assert_never(outcome)


def outcome_for_decision(decision: Decision) -> SubmitOutcome:
    """How a provider adapter reports an error its decision table classified."""
    match decision:
        case Decision.FAIL:
            return SubmitOutcome.FAILED
        case Decision.RETRY:
            return SubmitOutcome.TRANSIENT_ERROR
        case Decision.RECONCILE_LATER:
            return SubmitOutcome.UNKNOWN
        case _:
            assert_never(decision)


def status_requires_reference(outcome: StatusOutcome) -> bool:
    """True if the provider found a charge, so the check must name it."""
    match outcome:
        case (
            StatusOutcome.PAID
            | StatusOutcome.FAILED
            | StatusOutcome.STILL_PENDING
            | StatusOutcome.REQUIRES_ACTION
            | StatusOutcome.CANCELED
        ):
            return True
        case StatusOutcome.NOT_FOUND:
            return False
        case _:
            assert_never(outcome)


def status_is_final(outcome: StatusOutcome) -> bool:
    """True if the charge's fate is decided (paid, failed or canceled) and the execution can be finished."""
    match outcome:
        case StatusOutcome.PAID | StatusOutcome.FAILED | StatusOutcome.CANCELED:
            return True
        case StatusOutcome.STILL_PENDING | StatusOutcome.REQUIRES_ACTION | StatusOutcome.NOT_FOUND:
            return False
        case _:
            assert_never(outcome)


class NextActionType(StrEnum):
    """How the client completes a charge that waits for the customer (the API's `next_action.type`)."""

    # Send the customer's browser to `url` (a 3-D Secure challenge, a bank's page); they come back to return_url.
    REDIRECT_TO_URL = "redirect_to_url"
    # Let the provider's client library handle it (Stripe.js handleNextAction with the client secret).
    USE_PROVIDER_SDK = "use_provider_sdk"


@dataclass(frozen=True, slots=True)
class NextAction:
    """What the customer must do before the money moves.

    `client_secret` (Stripe's PaymentIntent client secret) or `sdk_data` (Adyen's action) lets the customer's
    browser finish the payment: it is
    handed to the client that submitted the charge and never stored or logged (Stripe: "don't store it, log it, or
    expose it to anyone other than the customer"); to_stored() is what a lifecycle event keeps.
    """

    type: NextActionType
    url: str | None = None
    return_url: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    # What the provider's client library needs to run the action (Adyen's `action` object for its Drop-in or
    # Components: a 3-D Secure 2 challenge, a POST redirect). Like the client secret, handed over and never stored.
    sdk_data: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.type is NextActionType.REDIRECT_TO_URL and not self.url:
            raise ValueError("a redirect needs the url to send the customer to")

    def to_stored(self) -> dict[str, str]:
        """The action as the execution's timeline keeps it: no client secret."""
        stored = {"type": self.type.value}
        if self.url is not None:
            stored["url"] = self.url
        if self.return_url is not None:
            stored["return_url"] = self.return_url
        return stored


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The answer to one submit. Build it with the named constructors; invalid combinations raise ValueError."""

    outcome: SubmitOutcome
    provider_reference: str | None = None
    error: ProviderError | None = None
    # Where the customer completes the required action (REQUIRES_ACTION only).
    action_url: str | None = None
    # What the client does next (REQUIRES_ACTION only); action_url is its url, kept for callers that need only that.
    next_action: NextAction | None = None
    http_status: int | None = None
    request_id: str | None = None
    # What the provider reported of the 3-D Secure it ran for this charge, when it said anything.
    authentication: ProviderAuthentication | None = None

    def __post_init__(self) -> None:
        if submit_requires_reference(self.outcome) and not self.provider_reference:
            raise ValueError(f"a {self.outcome} result must carry the provider reference")
        if submit_carries_error(self.outcome) != (self.error is not None):
            raise ValueError(f"a {self.outcome} result {'needs' if self.error is None else 'cannot carry'} an error")
        if self.outcome is SubmitOutcome.UNKNOWN and self.provider_reference is not None:
            raise ValueError("an unknown outcome cannot name a charge; with a reference the outcome is known")
        if self.outcome is SubmitOutcome.TRANSIENT_ERROR and self.provider_reference is not None:
            raise ValueError("a transient error means nothing was charged, so there is no reference")
        if self.action_url is not None and self.outcome is not SubmitOutcome.REQUIRES_ACTION:
            raise ValueError("only a requires_action result carries an action url")
        if self.next_action is not None and self.outcome is not SubmitOutcome.REQUIRES_ACTION:
            raise ValueError("only a requires_action result carries a next action")

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None

    @property
    def retryable(self) -> bool:
        """True if resubmitting with the same idempotency key is the right next step."""
        return self.outcome is SubmitOutcome.TRANSIENT_ERROR

    @classmethod
    def succeeded(
        cls, provider_reference: str, *, http_status: int | None = 200, request_id: str | None = None
    ) -> SubmitResult:
        return cls(SubmitOutcome.SUCCEEDED, provider_reference, http_status=http_status, request_id=request_id)

    @classmethod
    def pending_settlement(
        cls, provider_reference: str, *, http_status: int | None = 200, request_id: str | None = None
    ) -> SubmitResult:
        return cls(SubmitOutcome.PENDING_SETTLEMENT, provider_reference, http_status=http_status, request_id=request_id)

    @classmethod
    def requires_action(
        cls,
        provider_reference: str,
        action_url: str | None = None,
        *,
        next_action: NextAction | None = None,
        http_status: int | None = 200,
        request_id: str | None = None,
    ) -> SubmitResult:
        return cls(
            SubmitOutcome.REQUIRES_ACTION,
            provider_reference,
            action_url=action_url if action_url is not None else (next_action.url if next_action else None),
            next_action=next_action,
            http_status=http_status,
            request_id=request_id,
        )

    @classmethod
    def from_error(
        cls, error: ProviderError, decision: Decision, *, provider_reference: str | None = None
    ) -> SubmitResult:
        """The result for an error the provider's decision table classified (FAIL, RETRY or RECONCILE_LATER)."""
        outcome = outcome_for_decision(decision)
        return cls(
            outcome,
            provider_reference if outcome is SubmitOutcome.FAILED else None,
            error=error,
            http_status=error.http_status,
            request_id=error.request_id,
        )


@dataclass(frozen=True, slots=True)
class StatusCheck:
    """The answer to one check_status. Build it with the named constructors; invalid combinations raise ValueError."""

    outcome: StatusOutcome
    provider_reference: str | None = None
    error: ProviderError | None = None
    # When the provider says the charge reached its final outcome (PAID, FAILED or CANCELED only).
    settled_at: datetime | None = None
    request_id: str | None = None
    # What the provider reported of the 3-D Secure it ran for this charge, when it said anything.
    authentication: ProviderAuthentication | None = None

    def __post_init__(self) -> None:
        if status_requires_reference(self.outcome) != bool(self.provider_reference):
            need = "needs" if self.provider_reference is None else "cannot carry"
            raise ValueError(f"a {self.outcome} status check {need} a reference")
        if (self.outcome is StatusOutcome.FAILED) != (self.error is not None):
            raise ValueError("a failed status check carries the provider error, and only a failed one does")
        if self.settled_at is not None and not status_is_final(self.outcome):
            raise ValueError(f"a {self.outcome} charge has not settled")

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None

    @classmethod
    def paid(
        cls, provider_reference: str, *, settled_at: datetime | None = None, request_id: str | None = None
    ) -> StatusCheck:
        return cls(StatusOutcome.PAID, provider_reference, settled_at=settled_at, request_id=request_id)

    @classmethod
    def failed(
        cls,
        provider_reference: str,
        error: ProviderError,
        *,
        settled_at: datetime | None = None,
        request_id: str | None = None,
    ) -> StatusCheck:
        return cls(StatusOutcome.FAILED, provider_reference, error, settled_at=settled_at, request_id=request_id)

    @classmethod
    def still_pending(cls, provider_reference: str, *, request_id: str | None = None) -> StatusCheck:
        return cls(StatusOutcome.STILL_PENDING, provider_reference, request_id=request_id)

    @classmethod
    def requires_action(cls, provider_reference: str, *, request_id: str | None = None) -> StatusCheck:
        return cls(StatusOutcome.REQUIRES_ACTION, provider_reference, request_id=request_id)

    @classmethod
    def canceled(
        cls, provider_reference: str, *, settled_at: datetime | None = None, request_id: str | None = None
    ) -> StatusCheck:
        return cls(StatusOutcome.CANCELED, provider_reference, settled_at=settled_at, request_id=request_id)

    @classmethod
    def not_found(cls, *, request_id: str | None = None) -> StatusCheck:
        return cls(StatusOutcome.NOT_FOUND, request_id=request_id)


class RefundOutcome(StrEnum):
    """What asking a provider to refund (or asking it about a refund) found."""

    # The money is on its way back and the refund can no longer fail at the provider's side (Stripe "succeeded").
    SUCCEEDED = "succeeded"
    # Accepted; its final state comes by webhook (Adyen: always), or check_refund later.
    PENDING = "pending"
    # Refused for good (already refunded, disputed, too old): nothing goes back.
    FAILED = "failed"
    # Nothing was done and the provider says so: send again with the same idempotency key.
    TRANSIENT_ERROR = "transient_error"
    # No usable answer: the refund may or may not exist at the provider.
    UNKNOWN = "unknown"
    # check_refund only: the provider holds no refund for this request.
    NOT_FOUND = "not_found"


def refund_requires_reference(outcome: RefundOutcome) -> bool:
    """True if the provider holds a refund after this outcome, so the result must name it."""
    match outcome:
        case RefundOutcome.SUCCEEDED | RefundOutcome.PENDING:
            return True
        case RefundOutcome.FAILED | RefundOutcome.TRANSIENT_ERROR | RefundOutcome.UNKNOWN | RefundOutcome.NOT_FOUND:
            return False
        case _:
            assert_never(outcome)


def refund_carries_error(outcome: RefundOutcome) -> bool:
    """True if the outcome is explained by a provider error (and must carry one)."""
    match outcome:
        case RefundOutcome.FAILED | RefundOutcome.TRANSIENT_ERROR | RefundOutcome.UNKNOWN:
            return True
        case RefundOutcome.SUCCEEDED | RefundOutcome.PENDING | RefundOutcome.NOT_FOUND:
            return False
        case _:
            assert_never(outcome)


@dataclass(frozen=True, slots=True)
class RefundResult:
    """The answer to one refund or check_refund. Invalid combinations raise ValueError."""

    outcome: RefundOutcome
    provider_reference: str | None = None
    error: ProviderError | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        if refund_requires_reference(self.outcome) and not self.provider_reference:
            raise ValueError(f"a {self.outcome} refund result must carry the provider's refund reference")
        if refund_carries_error(self.outcome) != (self.error is not None):
            raise ValueError(
                f"a {self.outcome} refund result {'needs' if self.error is None else 'cannot carry'} an error"
            )
        if self.outcome in (RefundOutcome.UNKNOWN, RefundOutcome.TRANSIENT_ERROR, RefundOutcome.NOT_FOUND) and (
            self.provider_reference is not None
        ):
            raise ValueError(f"a {self.outcome} refund result cannot name a refund")

    @property
    def error_code(self) -> str | None:
        return self.error.code if self.error is not None else None

    @classmethod
    def succeeded(cls, provider_reference: str, *, request_id: str | None = None) -> RefundResult:
        return cls(RefundOutcome.SUCCEEDED, provider_reference, request_id=request_id)

    @classmethod
    def pending(cls, provider_reference: str, *, request_id: str | None = None) -> RefundResult:
        return cls(RefundOutcome.PENDING, provider_reference, request_id=request_id)

    @classmethod
    def failed(
        cls, error: ProviderError, *, provider_reference: str | None = None, request_id: str | None = None
    ) -> RefundResult:
        return cls(RefundOutcome.FAILED, provider_reference, error, request_id=request_id or error.request_id)

    @classmethod
    def not_found(cls, *, request_id: str | None = None) -> RefundResult:
        return cls(RefundOutcome.NOT_FOUND, request_id=request_id)

    @classmethod
    def from_error(cls, error: ProviderError, decision: Decision) -> RefundResult:
        """The result for an error the provider's decision table classified."""
        match decision:
            case Decision.FAIL:
                return cls(RefundOutcome.FAILED, error=error, request_id=error.request_id)
            case Decision.RETRY:
                return cls(RefundOutcome.TRANSIENT_ERROR, error=error, request_id=error.request_id)
            case Decision.RECONCILE_LATER:
                return cls(RefundOutcome.UNKNOWN, error=error, request_id=error.request_id)
            case _:
                assert_never(decision)


def unavailable(provider: str, action: str, error: ProviderError) -> ProviderUnavailable:
    """The ProviderUnavailable a read-only call raises when the provider gave no usable answer: it names the call and
    keeps the provider's code, status and request id for support."""
    return ProviderUnavailable(
        f"{provider} {action}: {error.code}: {error.message}",
        provider=provider,
        code=error.code,
        http_status=error.http_status,
        request_id=error.request_id,
    )
