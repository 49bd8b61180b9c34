"""SQL of the reconciliation worker: claiming batches of executions that wait on a provider, across tenants.

Both claims run inside billing.db.tenancy.system_transaction (they span tenants by design) and lock what they
return with FOR UPDATE SKIP LOCKED: a parallel worker skips rows another one holds instead of waiting for them, so
no execution is asked about, or settled, twice at once. The locks last until the batch's transaction ends; a
webhook settling the same execution meanwhile waits for it, then finds the row moved on and changes nothing.

Each claim walks a keyset cursor (timestamp, tenant_id, id) from where the previous batch of the same run stopped:
rows left as they were (still pending at the provider, provider unavailable) are not claimed again in the run, so
a run always ends, and a dry run, which changes nothing, walks the backlog once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from billing.db.connection import Connection

# Uses billing_executions_awaiting_settlement (submitted_at) where status = 'pending' and submitted_at is not null.
# The plain `submitted_at >= after_at` repeats the row comparison's first column so the index can bound the scan.
_CLAIM_AWAITING_SETTLEMENT: Final = """
select e.*
  from billing.billing_executions e
 where e.status = 'pending'
   and e.submitted_at is not null
   and e.submitted_at < %(cutoff)s
   and e.submitted_at >= %(after_at)s
   and (e.submitted_at, e.tenant_id, e.id) > (%(after_at)s, %(after_tenant)s::uuid, %(after_id)s::uuid)
 order by e.submitted_at, e.tenant_id, e.id
 limit %(limit)s
   for update skip locked
"""

# Uses billing_executions_processing_since (updated_at) where status = 'processing'. A processing execution with
# a retry on the queue is not stuck until that retry is overdue by as long as an ordinary one may take.
_CLAIM_STUCK_PROCESSING: Final = """
select e.*
  from billing.billing_executions e
 where e.status = 'processing'
   and e.updated_at < %(cutoff)s
   and (e.next_attempt_at is null or e.next_attempt_at < %(cutoff)s)
   and e.updated_at >= %(after_at)s
   and (e.updated_at, e.tenant_id, e.id) > (%(after_at)s, %(after_tenant)s::uuid, %(after_id)s::uuid)
 order by e.updated_at, e.tenant_id, e.id
 limit %(limit)s
   for update skip locked
"""

_NIL = UUID(int=0)
# Earlier than any row: executions are created by this system, which did not exist before this date.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a claim walk stands: the last (timestamp, tenant, id) claimed; start() precedes every row."""

    at: datetime
    tenant_id: UUID
    execution_id: UUID

    @classmethod
    def start(cls) -> Cursor:
        return cls(_EPOCH, _NIL, _NIL)

    def params(self) -> dict[str, Any]:
        return {"after_at": self.at, "after_tenant": self.tenant_id, "after_id": self.execution_id}


def claim_awaiting_settlement(conn: Connection, *, cutoff: datetime, after: Cursor, limit: int) -> list[dict[str, Any]]:
    """Lock up to `limit` executions pending at the provider since before `cutoff`, oldest submission first."""
    return conn.execute(_CLAIM_AWAITING_SETTLEMENT, {"cutoff": cutoff, "limit": limit, **after.params()}).fetchall()


def claim_stuck_processing(conn: Connection, *, cutoff: datetime, after: Cursor, limit: int) -> list[dict[str, Any]]:
    """Lock up to `limit` executions in processing, untouched since before `cutoff`, oldest first."""
    return conn.execute(_CLAIM_STUCK_PROCESSING, {"cutoff": cutoff, "limit": limit, **after.params()}).fetchall()
