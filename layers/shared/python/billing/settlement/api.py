"""HTTP glue of the settlement_api function: the finance scope, cursors, the resolve body and JSON pages. The
reads and the resolution are billing.settlement.store's.

Reports are platform-wide (one provider's file covers many tenants), so nothing here is filtered by the caller's
tenant: the `finance` token scope is the gate, and the function's database role (billing_finance) can read these
two tables and write a resolution, nothing else.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from billing import resource_names as names
from billing.api.cursor import encode_cursor
from billing.api.problems import problem_for, proxy_response
from billing.api.request_context import RequestContext
from billing.audit.api import scopes_in
from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.domain.errors import (
    FieldError,
    MalformedRequest,
    ScopeRequired,
    SettlementDiscrepancyNotFound,
    SettlementReportNotFound,
    ValidationFailed,
)
from billing.settlement.outcome import DiscrepancyClass

# The store and the connection (psycopg) are imported by the first request that needs them, not at cold start.
if TYPE_CHECKING:
    from billing.db.connection import Connection
    from billing.db.connection_provider import ConnectionProvider
    from billing.settlement.store import SettlementReportStore, StoredDiscrepancy, StoredReport

# What a provider is named in a report (settlement_reports_provider_format).
PROVIDER_PATTERN: Final = r"^[a-z0-9_-]{1,64}$"
# The database's bound on a note (settlement_discrepancies_note_length), billing.settlement.store.MAX_NOTE_LENGTH.
NOTE_MAX_LENGTH: Final = 1000


class SettlementApiRuntime:
    """The store on the container's connection, built once per container and reused while it is warm."""

    @cached_property
    def store(self) -> SettlementReportStore:
        from billing.settlement.store import SettlementReportStore

        return SettlementReportStore()

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return ConnectionProvider(role=DatabaseRole.FINANCE)

    def conn(self) -> Connection:
        return self.connections.get()


class ResolveBody(BaseModel):
    """Why finance considers the discrepancy resolved (kept with it, and never a card number)."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=NOTE_MAX_LENGTH)

    @field_validator("note")
    @classmethod
    def _says_something(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("note must say why the discrepancy is resolved")
        return value


def actor_of(request: RequestContext) -> str:
    """Who resolves, as the other operator actions name a token's subject (billing.domain.workflow)."""
    return f"user:{request.actor}"[:200]


def source_of(app: APIGatewayRestResolver) -> str | None:
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    source = identity.get("sourceIp")
    return str(source)[:200] if source else None


def scope_refusal(
    event: dict[str, Any], request: RequestContext, runtime: SettlementApiRuntime
) -> dict[str, Any] | None:
    """None for a finance token; else the 403 problem response, after recording the refused attempt (PCI DSS
    10.2.1.4)."""
    if names.FINANCE_SCOPE in scopes_in(event):
        return None
    from billing.audit.recorder import record_audit_event

    record_audit_event(
        runtime.conn(),
        AuditEvent(
            AuditEventType.AUTHENTICATION_FAILED,
            AuditOutcome.DENIED,
            actor=actor_of(request),
            tenant_id=None,
            resource_type="settlement_report",
            purpose="insufficient_scope",
            correlation_id=request.correlation_id,
            details={
                "reason": "insufficient_scope",
                "request": f"{event.get('httpMethod', 'GET')} {event.get('path', '')}"[:200],
            },
        ),
    )
    status, body = problem_for(ScopeRequired(names.FINANCE_SCOPE), request.correlation_id)
    return proxy_response(status, body, request.correlation_id)


def report_id_of(value: str) -> UUID:
    """The path's report id; 404 for anything that is not one (no such report can exist)."""
    try:
        return UUID(value)
    except ValueError:
        raise SettlementReportNotFound(f"settlement report {value[:64]} not found") from None


def discrepancy_id_of(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise SettlementDiscrepancyNotFound(f"discrepancy {value[:64]} not found") from None


def discrepancy_class_of(value: DiscrepancyClass | None) -> DiscrepancyClass | None:
    if value is DiscrepancyClass.MATCHED:
        raise ValidationFailed([FieldError("query.class", "not_a_discrepancy", "matched items are no discrepancies")])
    return value


def encode_discrepancy_cursor(item: StoredDiscrepancy) -> str:
    raw = json.dumps([item.discrepancy.discrepancy_class.value, str(item.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_discrepancy_cursor(cursor: str) -> tuple[DiscrepancyClass, UUID]:
    """The (class, id) a discrepancies page ended on; MalformedRequest (400) for a cursor this API did not issue."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        discrepancy_class, discrepancy_id = json.loads(raw)
        return DiscrepancyClass(discrepancy_class), UUID(discrepancy_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedRequest("cursor is not one this API issued") from exc


def reports_page(items: Sequence[StoredReport], more: bool) -> dict[str, Any]:
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return {"items": [item.as_dict() for item in items], "next_cursor": next_cursor}


def discrepancies_page(items: Sequence[StoredDiscrepancy], more: bool) -> dict[str, Any]:
    next_cursor = encode_discrepancy_cursor(items[-1]) if more and items else None
    return {"items": [item.as_dict() for item in items], "next_cursor": next_cursor}


def json_response(status: int, document: dict[str, Any]) -> Response[str]:
    return Response(status, "application/json", json.dumps(document))
