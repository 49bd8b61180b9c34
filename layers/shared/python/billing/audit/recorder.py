"""record_audit_event: one INSERT, in the caller's transaction when one is open, else in a short one of its own.

No lock is taken: the id comes from a sequence and the tree index is given later by the sequencer
(billing.audit.sequencer), so concurrent writers never wait for one another.
"""

from __future__ import annotations

from psycopg import pq
from psycopg.types.json import Jsonb

from billing.audit.events import AuditEvent
from billing.db.connection import Connection
from billing.db.tenancy import apply_timeouts

# No RETURNING: the recording roles may insert but never read the trail back. The trigger sets the id, the time,
# the writer's login and the leaf.
_INSERT = """
insert into billing_audit.entries
    (event_type, outcome, actor, tenant_id, resource_type, resource_id, purpose, correlation_id, source, details)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def _parameters(event: AuditEvent) -> list[object]:
    return [
        event.event_type.value,
        event.outcome.value,
        event.actor,
        event.tenant_id,
        event.resource_type,
        event.resource_id,
        event.purpose,
        event.correlation_id,
        event.source,
        Jsonb(dict(event.details)),
    ]


def record_audit_event(conn: Connection, event: AuditEvent) -> None:
    """Insert one audit row: within the caller's open transaction (it commits, or rolls back, with the access it
    records), otherwise in its own short transaction."""
    if conn.info.transaction_status is not pq.TransactionStatus.IDLE:
        conn.execute(_INSERT, _parameters(event))
        return
    with conn.transaction():
        apply_timeouts(conn)
        conn.execute(_INSERT, _parameters(event))
