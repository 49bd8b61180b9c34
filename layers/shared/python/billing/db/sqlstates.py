"""The SQLSTATEs the database's guards raise, and the domain error each one means.

The triggers in sql/ raise their own class-BE codes so that the application maps a refusal by its code, never
by reading the message. One table here, used wherever a guarded statement runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from types import MappingProxyType

import psycopg

from billing.domain.errors import (
    BillingError,
    CardDataRefused,
    ImmutableExecution,
    InstrumentLifecycleViolated,
    InvalidTransition,
    LifecycleRuleViolated,
    OutboxPublicationRefused,
    RefundExceedsCaptured,
    ReversalChangeRefused,
    RiskHistoryRefused,
    SettlementRecordChangeRefused,
    SubmissionRefusedByRisk,
    UnrecordedChange,
)


class GuardState(StrEnum):
    TERMINAL_IMMUTABLE = "BE001"
    TRANSITION_NOT_ALLOWED = "BE002"
    IMMUTABLE_COLUMN = "BE003"
    EXECUTION_NOT_DELETABLE = "BE004"
    APPEND_ONLY = "BE005"
    WEBHOOK_EVENT_UNRESOLVED = "BE006"
    NOT_BORN_CREATED = "BE007"
    LIFECYCLE_RULE = "BE008"
    UNRECORDED_CHANGE = "BE009"
    OUTBOX_PUBLICATION = "BE010"
    # The audit tree: indexes contiguous from 0, checkpoints of a tree that exists and only grows. Raised only by
    # the sequencer and checkpoint writer (billing.audit), never in answer to a request, so no domain error.
    AUDIT_TREE = "BE011"
    # Payment instruments and the vault (sql/20261211_billing_payment_instruments.sql). BE012 is left to the audit
    # trail. A card number in a guarded column, or an attribute key naming sensitive authentication data:
    CARD_DATA_REFUSED = "BE013"
    # Contracts are born active, move active -> expired | deactivated only, keep their identity, are never deleted:
    CONTRACT_LIFECYCLE = "BE014"
    # Contract terms are born open, only closed, never rewritten or deleted, frozen once the contract is inactive:
    TERM_HISTORY = "BE015"
    # Vault secrets are shredded, never rewritten (only their data key re-wrapped) or deleted:
    SEALED_CARD_IMMUTABLE = "BE016"
    # Refunds (sql/20261213_billing_refunds.sql): a requested refund past what the execution still has captured:
    REFUND_EXCEEDS_CAPTURED = "BE017"
    # A reversal's identity and amount never change, its status only moves forward, a final one never changes:
    REVERSAL_CHANGE = "BE018"
    # Risk (sql/20261214_billing_risk.sql): velocity attempts change only to mark a decline; rule sets take the next
    # version only:
    RISK_HISTORY = "BE019"
    # 3-D Secure and submission after risk (sql/20261215_billing_authentications.sql): an authentication's states
    # only move forward, its value is used once; nothing is submitted against the risk decision:
    AUTHENTICATION_OR_SUBMISSION = "BE020"
    # Settlement reports (sql/20261216_billing_settlement_reports.sql): a report changes only to be superseded, once;
    # a discrepancy only to be resolved, once, its three resolution columns together:
    SETTLEMENT_RECORD_CHANGE = "BE021"


GUARD_ERRORS: Mapping[str, type[BillingError]] = MappingProxyType(
    {
        GuardState.TERMINAL_IMMUTABLE: ImmutableExecution,
        GuardState.TRANSITION_NOT_ALLOWED: InvalidTransition,
        GuardState.IMMUTABLE_COLUMN: ImmutableExecution,
        GuardState.EXECUTION_NOT_DELETABLE: ImmutableExecution,
        GuardState.APPEND_ONLY: ImmutableExecution,
        GuardState.NOT_BORN_CREATED: LifecycleRuleViolated,
        GuardState.LIFECYCLE_RULE: LifecycleRuleViolated,
        GuardState.UNRECORDED_CHANGE: UnrecordedChange,
        GuardState.OUTBOX_PUBLICATION: OutboxPublicationRefused,
        GuardState.CARD_DATA_REFUSED: CardDataRefused,
        GuardState.CONTRACT_LIFECYCLE: InstrumentLifecycleViolated,
        GuardState.TERM_HISTORY: InstrumentLifecycleViolated,
        GuardState.SEALED_CARD_IMMUTABLE: InstrumentLifecycleViolated,
        GuardState.REFUND_EXCEEDS_CAPTURED: RefundExceedsCaptured,
        GuardState.REVERSAL_CHANGE: ReversalChangeRefused,
        GuardState.RISK_HISTORY: RiskHistoryRefused,
        GuardState.AUTHENTICATION_OR_SUBMISSION: SubmissionRefusedByRisk,
        GuardState.SETTLEMENT_RECORD_CHANGE: SettlementRecordChangeRefused,
    }
)


@contextmanager
def translated_guard_errors() -> Iterator[None]:
    """Raise the domain error of a guard's refusal (by SQLSTATE); any other database error passes through."""
    try:
        yield
    except psycopg.Error as exc:
        error_type = GUARD_ERRORS.get(exc.sqlstate or "")
        if error_type is None:
            raise
        raise error_type(exc.diag.message_primary or str(exc)) from exc
