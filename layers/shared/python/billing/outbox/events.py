"""What the relay puts on the bus: one PutEvents entry per outbox row (pure, no AWS or database imports)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from billing.resource_names import EVENT_SOURCE


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    """One PutEvents entry, tagged with the outbox row it came from."""

    outbox_id: int
    tenant_id: UUID
    aggregate_id: UUID
    event_id: UUID
    source: str
    detail_type: str
    detail: str
    time: datetime

    @property
    def ordering_key(self) -> tuple[UUID, UUID]:
        """Events with the same key must reach the bus in outbox id order (one execution of one tenant)."""
        return (self.tenant_id, self.aggregate_id)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The bus's answer for one entry; error_code is EventBridge's (InternalFailure, ThrottlingException, ...)."""

    accepted: bool
    error_code: str | None = None
    error_message: str | None = None

    @property
    def error(self) -> str:
        """One line for billing_outbox.last_error."""
        return f"{self.error_code or 'unknown'}: {self.error_message or 'no message'}"


def detail_sql(row: str) -> str:
    """The same Detail built by the database, from the payload, event_id and id columns of `row` (an alias of
    billing_outbox or of a selection of its columns): the relay's claim reads it as text, so no payload is parsed
    and serialised again per event. jsonb's text form is UTF-8 (no \\u escapes), with keys in jsonb's order and a
    space after each separator: other bytes than json.dumps's, the same object."""
    return f"({row}.payload || jsonb_build_object('event_id', {row}.event_id::text, 'outbox_id', {row}.id))::text"


def event_from_outbox_row(row: Mapping[str, Any], *, replayed: bool = False) -> OutboundEvent:
    """The entry for a billing_outbox row: Detail is the stored payload plus event_id and outbox_id.

    event_id is what consumers de-duplicate on (delivery is at least once); outbox_id increases with every event
    of an execution, so a consumer can tell an older event from a newer one. A replayed copy says so.
    """
    detail: dict[str, Any] = {**row["payload"], "event_id": str(row["event_id"]), "outbox_id": int(row["id"])}
    if replayed:
        detail["replayed"] = True
    # Compact and UTF-8 (not \u escapes): the 256 KB limit is counted in UTF-8 bytes of exactly this string.
    return event_with_detail(row, json.dumps(detail, separators=(",", ":"), ensure_ascii=False))


def event_with_detail(row: Mapping[str, Any], detail: str) -> OutboundEvent:
    """The entry for a billing_outbox row whose Detail is already built (by event_from_outbox_row, or detail_sql
    read as the row's `detail`)."""
    return OutboundEvent(
        outbox_id=int(row["id"]),
        tenant_id=row["tenant_id"],
        aggregate_id=row["aggregate_id"],
        event_id=row["event_id"],
        source=EVENT_SOURCE,
        detail_type=row["event_type"],
        detail=detail,
        time=row["occurred_at"],
    )
