"""What a payment provider answers: submit results, status checks, provider errors and the decision each calls for.

Pure values, no I/O. Each outcome set is closed and every predicate over it is exhaustive (match + assert_never),
so adding an outcome fails type checking everywhere a caller has to decide what it means. The constructors
refuse impossible combinations (a success without a reference, a failure without an error), so a consumer can
rely on the fields an outcome promises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import assert_never


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


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The answer to one submit. Build it with the named constructors; invalid combinations raise ValueError."""

    outcome: SubmitOutcome
    provider_reference: str | None = None
    error: ProviderError | None = None
    # Where the customer completes the required action (REQUIRES_ACTION only).
    action_url: str | None = None
    http_status: int | None = None
    request_id: str | None = None

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
        http_status: int | None = 200,
        request_id: str | None = None,
    ) -> SubmitResult:
        return cls(
            SubmitOutcome.REQUIRES_ACTION,
            provider_reference,
            action_url=action_url,
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
