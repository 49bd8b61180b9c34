"""The auditors' use cases. Every read of the trail is itself an audit entry (PCI DSS 10.2.1.3), written in the
transaction of the read; a refused read (no auditor scope) is recorded too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from billing.audit import queries
from billing.audit.checkpoints import Checkpoint
from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.recorder import record_audit_event
from billing.db.connection import Connection
from billing.db.tenancy import apply_timeouts


@dataclass(frozen=True)
class AuditAccess:
    """Who reads the trail, from where, and what they asked (recorded, never the answer)."""

    actor: str
    correlation_id: str | None
    source: str | None
    request: str  # e.g. "GET /audit/events"
    tenant_id: UUID | None = None

    def event(self, outcome: AuditOutcome, resource_id: str | None, details: dict[str, str]) -> AuditEvent:
        return AuditEvent(
            AuditEventType.AUDIT_LOG_ACCESSED,
            outcome,
            actor=self.actor,
            tenant_id=self.tenant_id,
            resource_type="audit_log",
            resource_id=resource_id,
            purpose="audit",
            correlation_id=self.correlation_id,
            source=self.source,
            details={"request": self.request[:200], **details},
        )


def _filters(query: queries.EventQuery) -> dict[str, str]:
    given = {
        "tenant_id": query.tenant_id,
        "resource_id": query.resource_id,
        "event_type": query.event_type,
        "from": query.occurred_from.isoformat() if query.occurred_from else None,
        "to": query.occurred_to.isoformat() if query.occurred_to else None,
    }
    return {key: str(value)[:200] for key, value in given.items() if value is not None}


class AuditReader:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def events(self, query: queries.EventQuery, access: AuditAccess) -> tuple[list[dict[str, Any]], str | None]:
        with self._conn.transaction():
            apply_timeouts(self._conn)
            page = queries.list_events(self._conn, query)
            details = {**_filters(query), "returned": str(len(page[0]))}
            # The filters go into details, not resource_id: "who touched instrument X" must not list its auditors.
            record_audit_event(self._conn, access.event(AuditOutcome.GRANTED, "events", details))
        return page

    def latest_checkpoint(self, access: AuditAccess) -> Checkpoint | None:
        with self._conn.transaction():
            apply_timeouts(self._conn)
            checkpoint = queries.latest_checkpoint(self._conn)
            record_audit_event(self._conn, access.event(AuditOutcome.GRANTED, "checkpoints/latest", {}))
        return checkpoint

    def inclusion_proof(self, seq: int, tree_size: int, access: AuditAccess) -> queries.InclusionProof:
        with self._conn.transaction():
            apply_timeouts(self._conn)
            proof = queries.inclusion_proof(self._conn, seq, tree_size)
            details = {"seq": str(seq), "tree_size": str(tree_size)}
            record_audit_event(self._conn, access.event(AuditOutcome.GRANTED, f"proofs/{seq}", details))
        return proof

    def refused(self, access: AuditAccess, reason: str) -> None:
        """Record a refused read (its own transaction: nothing else happens)."""
        record_audit_event(self._conn, access.event(AuditOutcome.DENIED, None, {"reason": reason}))
