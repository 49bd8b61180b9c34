"""One hierarchy of domain errors, each with a stable machine-readable code.

HTTP statuses and problem+json bodies are assigned in exactly one place (the API adapter), never here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


class BillingError(Exception):
    """Base of every error the engine raises on purpose. `code` is stable; clients may branch on it."""

    code: ClassVar[str] = "billing_error"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input field: where (dotted path), why (stable code) and a human message."""

    field: str
    code: str
    message: str


class ValidationFailed(BillingError):
    code = "validation_failed"

    def __init__(self, errors: list[FieldError]) -> None:
        fields = ", ".join(e.field for e in errors)
        super().__init__(f"invalid input: {fields}", errors=errors)
        self.errors = errors


class IdempotencyKeyInvalid(ValidationFailed):
    """The Idempotency-Key header is missing or not 1-255 printable ASCII characters."""

    code = "idempotency_key_invalid"


class MalformedRequest(BillingError):
    """The request could not be read at all (not JSON, not an object, unreadable query parameter)."""

    code = "malformed_request"


class UnsupportedMediaType(MalformedRequest):
    """A request body sent as something other than JSON (form data, plain text, ...): never guessed at."""

    code = "unsupported_media_type"


class PayloadTooLarge(BillingError):
    code = "payload_too_large"


class IdempotencyKeyReused(BillingError):
    """The same idempotency key came back with different parameters: never a silent replay."""

    code = "idempotency_key_reused"


class ExecutionNotFound(BillingError):
    code = "execution_not_found"


class TransitionConflict(BillingError):
    """The row was no longer in the expected status (a lost race): nothing was written."""

    code = "transition_conflict"

    def __init__(self, execution_id: str, expected: tuple[str, ...], actual: str) -> None:
        super().__init__(
            f"execution {execution_id} is {actual}, expected {' or '.join(expected)}",
            execution_id=execution_id,
            expected=expected,
            actual=actual,
        )
        self.execution_id = execution_id
        self.expected = expected
        self.actual = actual


class InvalidTransition(BillingError):
    """A transition outside the state machine, refused by the code or by the database trigger."""

    code = "invalid_transition"


class ImmutableExecution(BillingError):
    """A terminal execution or an immutable column was about to change; the database refused it."""

    code = "execution_immutable"


class LifecycleRuleViolated(BillingError):
    """A lifecycle column was about to move the wrong way (born non-created, submitted_at unset, attempt_count
    shrinking, completed without the provider's charge); the database refused it."""

    code = "lifecycle_rule_violated"


class UnrecordedChange(BillingError):
    """A lifecycle event, outbox row or workflow row without the execution change it claims to record."""

    code = "unrecorded_change"


class OutboxPublicationRefused(BillingError):
    """Publication bookkeeping moved backwards or was written by a role other than the relay's."""

    code = "outbox_publication_refused"


class WorkflowWriteFailed(BillingError):
    """The authoritative workflow row could not be written, so the whole transition was rolled back."""

    code = "workflow_write_failed"


class WorkflowWriteOutsideTransaction(WorkflowWriteFailed):
    """record_workflow_event_transactional was called with no open transaction: refused (fail closed)."""

    code = "workflow_write_outside_transaction"


class MigrationChecksumMismatch(BillingError):
    """An already-applied migration file changed on disk; applying anything else would be guesswork."""

    code = "migration_checksum_mismatch"


class SignatureInvalid(BillingError):
    """A webhook delivery whose signature is missing, malformed, stale or wrong: nothing in it is trusted or read.

    `reason` is a stable short code (missing_header, malformed_header, timestamp_out_of_tolerance, mismatch, ...)
    for the metric and the log line; the payload itself is never part of the error.
    """

    code = "signature_invalid"

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider} webhook signature rejected: {reason}", provider=provider, reason=reason)
        self.provider = provider
        self.reason = reason


class WebhookPayloadInvalid(BillingError):
    """An authentic (or undecodable) webhook body that does not have the provider's documented shape."""

    code = "webhook_payload_invalid"

    def __init__(self, provider: str, problem: str) -> None:
        super().__init__(f"{provider} webhook payload invalid: {problem}", provider=provider, problem=problem)
        self.provider = provider
        self.problem = problem


class UnknownWebhookProvider(BillingError):
    """The {provider} path segment names no provider we verify webhooks for."""

    code = "webhook_provider_unknown"

    def __init__(self, provider: str) -> None:
        # The name comes straight from the URL: bounded and repr-quoted before it reaches a log line.
        shown = repr(provider[:64])
        super().__init__(f"unknown webhook provider {shown}", provider=provider[:64])
        self.provider = provider


class WebhookRetryLater(BillingError):
    """Authentic webhook events their execution cannot take yet (still being submitted, or a reversal of a payment
    not yet completed): refused so the provider redelivers them. Other events of the same delivery were applied."""

    code = "webhook_retry_later"

    def __init__(self, provider: str, event_ids: tuple[str, ...]) -> None:
        # Event ids come from the provider's signed payload; bounded before they reach a response or a log line.
        shown = ", ".join(repr(event_id[:64]) for event_id in event_ids[:10])
        super().__init__(
            f"{provider} event(s) {shown} cannot be applied to their execution yet; redeliver later",
            provider=provider,
            event_ids=event_ids,
        )
        self.provider = provider
        self.event_ids = event_ids


class AdapterMismatch(BillingError):
    """An execution reached the rail adapter of another rail or provider; refused before any provider call.

    Asking the wrong provider about a charge would report it missing and invite a second charge elsewhere.
    """

    code = "adapter_mismatch"


class UnknownPaymentProvider(BillingError):
    """An execution names a payment provider that is not configured in this deployment."""

    code = "payment_provider_unknown"


class ProviderChargeNotFound(BillingError):
    """The provider holds no charge under the given reference."""

    code = "provider_charge_not_found"


class ProviderChargeAlreadySettled(BillingError):
    """A charge already has a different final outcome; a settled charge never changes its outcome."""

    code = "provider_charge_already_settled"


class ProviderUnavailable(BillingError):
    """A provider could not be asked (connection refused, timeout) about a charge; nothing is known, ask again.

    Raised by read-only calls such as check_status, where "no answer" must never be mistaken for "not found".
    """

    code = "provider_unavailable"


class StatusNotPollable(BillingError):
    """Asked a provider that has no status endpoint (Adyen) about a charge or refund: only webhooks and its
    settlement report tell. Callers check PaymentProvider.polls_status first; raising it is a wiring fault."""

    code = "status_not_pollable"


class AuthenticationFailed(BillingError):
    """A bearer token that is missing, malformed, expired, signed with another key or lacks a valid claim.

    `reason` is a stable short code (missing_token, malformed, expired, signature_mismatch, invalid_audience, ...)
    for the log line; clients always get the same 401 so a token cannot be probed claim by claim.
    """

    code = "unauthenticated"

    def __init__(self, reason: str) -> None:
        super().__init__(f"bearer token rejected: {reason}", reason=reason)
        self.reason = reason


class SettlementPeriodInvalid(BillingError):
    """A settlement report was asked for a period that cannot be reported on (it starts in the future)."""

    code = "settlement_period_invalid"


# --- Payment instruments and the card vault ---------------------------------------------------------------------


class PaymentInstrumentNotFound(BillingError):
    """No such instrument for the caller's tenant, or one that belongs to another entity contract.

    Also for another tenant's instrument: never confirm that it exists.
    """

    code = "payment_instrument_not_found"


class PaymentInstrumentInactive(BillingError):
    """The instrument was deactivated: it can no longer be charged."""

    code = "payment_instrument_inactive"


class PaymentInstrumentExpired(BillingError):
    """The card's expiry month has passed (checked at charge time, in UTC): it can no longer be charged."""

    code = "payment_instrument_expired"


class PaymentInstrumentRailMismatch(BillingError):
    """The instrument cannot be charged over the requested rail (a card over sepa_debit, say)."""

    code = "payment_instrument_rail_mismatch"


class CardNumberInvalid(ValidationFailed):
    """Not a card number: wrong characters, a length its brand does not issue, or a failed Luhn check."""

    code = "card_number_invalid"


class CardBrandUnsupported(ValidationFailed):
    """A well-formed card number whose IIN belongs to no brand we accept."""

    code = "card_brand_unsupported"


class CardExpired(ValidationFailed):
    """The card's expiry month is over (a card is valid through the last moment of its month, UTC)."""

    code = "card_expired"


class CardSecurityCodeInvalid(ValidationFailed):
    """A card verification code that is not 3 digits (4 for American Express)."""

    code = "card_security_code_invalid"


class IbanInvalid(ValidationFailed):
    """Not an IBAN: unknown country, wrong length for its country, or a failed mod-97 check."""

    code = "iban_invalid"


class IbanCountryUnsupported(ValidationFailed):
    """A valid IBAN of a country outside the SEPA scheme: it cannot be debited over sepa_debit."""

    code = "iban_country_unsupported"


class CardDataRefused(BillingError):
    """The database refused to store what looks like a card number, or an attribute naming sensitive
    authentication data (CVC, PIN, track data): card data lives in the vault only."""

    code = "card_data_refused"


class InstrumentLifecycleViolated(BillingError):
    """An instrument, its terms or its vault secret were about to change in a way their history forbids
    (reactivation, rewriting a closed term, rewriting or deleting a secret); the database refused it."""

    code = "instrument_lifecycle_violated"


class DetokenizationDenied(BillingError):
    """A detokenization the vault refused (no such token for the tenant, a shredded card, an undeclared purpose).

    Audited like every attempt; the caller learns nothing more than that it was refused.
    """

    code = "detokenization_denied"


class VaultIntegrityError(BillingError):
    """A stored card secret failed authentication (AES-GCM tag or KMS encryption context): tampered or misfiled."""

    code = "vault_integrity_error"


class ScopeRequired(BillingError):
    """A valid token without the scope the route needs (the audit API needs `auditor`): RFC 6750's
    insufficient_scope."""

    code = "insufficient_scope"

    def __init__(self, scope: str) -> None:
        super().__init__(f"this route requires the {scope!r} scope", scope=scope)
        self.scope = scope


class AuditRecordNotFound(BillingError):
    """No audit checkpoint of the requested tree size, or no entry at the requested tree index."""

    code = "audit_record_not_found"


class RefundExceedsCaptured(BillingError):
    """A refund would take the execution past what it captured (with the refunds and chargebacks before it), or is
    in another currency than the execution's; the database refused it and nothing was sent to the provider."""

    code = "refund_exceeds_captured"


class ExecutionNotRefundable(BillingError):
    """Only a completed execution with a charge at its provider can be refunded (not pending, failed, canceled)."""

    code = "execution_not_refundable"


class ReversalChangeRefused(BillingError):
    """A reversal's identity, amount or final status was about to change; the database refused it."""

    code = "reversal_change_refused"


# --- 3-D Secure authentication ------------------------------------------------------------------------------------


class EmvMessageInvalid(BillingError):
    """An EMV 3-D Secure message that is malformed, of an unsupported version or type, or internally contradictory.

    `reason` is a stable short code (malformed_json, malformed_base64, unsupported_version, unknown_message_type,
    missing_field:<name>, invalid_field:<name>) naming the EMV field, never its value: messages carry card numbers
    and authentication values, so no part of one is ever copied into the error.
    """

    code = "emv_message_invalid"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"EMV 3DS message refused ({reason}): {detail}", reason=reason)
        self.reason = reason


class RiskHistoryRefused(BillingError):
    """Velocity history or an assessment was about to be rewritten, or a rule set stored out of turn (a concurrent
    replacement got there first); the database refused it."""

    code = "risk_history_refused"


class SubmissionRefusedByRisk(BillingError):
    """The database refused to submit a charge against its risk decision (blocked, held for review, or 3-D Secure
    still required): a guard the application should never reach."""

    code = "submission_refused_by_risk"


class RiskReviewConflict(BillingError):
    """The execution was reviewed already, or is not waiting for a review."""

    code = "risk_review_conflict"


class AuthenticationNotFound(BillingError):
    """No 3-D Secure authentication under this address (or another tenant's)."""

    code = "authentication_not_found"


# --- Settlement reports (billing.settlement.store) -------------------------------------------------------------


class SettlementReportNotFound(BillingError):
    """No settlement report with this id."""

    code = "settlement_report_not_found"


class SettlementDiscrepancyNotFound(BillingError):
    """The report has no discrepancy with this id."""

    code = "settlement_discrepancy_not_found"


class SettlementDiscrepancyResolvedAlready(BillingError):
    """The discrepancy was resolved before: a resolution is given once and never changed."""

    code = "settlement_discrepancy_resolved_already"


class SettlementRecordChangeRefused(BillingError):
    """A saved report or discrepancy was about to change beyond what its table allows (superseded_by once, a
    resolution once); the database refused it."""

    code = "settlement_record_change_refused"
