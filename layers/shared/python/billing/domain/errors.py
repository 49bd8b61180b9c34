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


class WorkflowWriteFailed(BillingError):
    """The authoritative workflow row could not be written, so the whole transition was rolled back."""

    code = "workflow_write_failed"


class WorkflowWriteOutsideTransaction(WorkflowWriteFailed):
    """record_workflow_event_transactional was called with no open transaction: refused (fail closed)."""

    code = "workflow_write_outside_transaction"


class MigrationChecksumMismatch(BillingError):
    """An already-applied migration file changed on disk; applying anything else would be guesswork."""

    code = "migration_checksum_mismatch"
