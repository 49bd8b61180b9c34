"""Execution statuses and the one table of allowed transitions (mirrored by the SQL trigger; a test compares)."""

from __future__ import annotations

from enum import StrEnum
from typing import assert_never


class ExecutionStatus(StrEnum):
    CREATED = "created"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


S = ExecutionStatus

# The only transitions the engine (and the database trigger) accept. processing -> pending is the provider
# accepting an asynchronous payment (SEPA/ACH) that settles days later.
ALLOWED_TRANSITIONS: frozenset[tuple[ExecutionStatus, ExecutionStatus]] = frozenset(
    {
        (S.CREATED, S.PENDING),
        (S.CREATED, S.CANCELED),
        (S.PENDING, S.PROCESSING),
        (S.PENDING, S.CANCELED),
        (S.PENDING, S.COMPLETED),
        (S.PENDING, S.FAILED),
        (S.PROCESSING, S.COMPLETED),
        (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.PENDING),
    }
)


def is_terminal(status: ExecutionStatus) -> bool:
    """A terminal execution never changes again (the database rejects any update)."""
    match status:
        case S.COMPLETED | S.FAILED | S.CANCELED:
            return True
        case S.CREATED | S.PENDING | S.PROCESSING:
            return False
        case _:
            assert_never(status)


def can_transition(old: ExecutionStatus, new: ExecutionStatus) -> bool:
    """True if old -> new is one of the allowed transitions."""
    return (old, new) in ALLOWED_TRANSITIONS
