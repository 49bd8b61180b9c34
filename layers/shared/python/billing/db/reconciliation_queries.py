"""SQL of the reconciliation worker: claiming executions that wait on a provider, across tenants, under leases.

The worker (billing.services.reconciliation) works in three phases: claim a batch and lease it in one short
transaction; ask the provider with no transaction open; record each answer in a short transaction of its own,
which ends that execution's lease. A lease is a row of billing.reconciliation_leases naming the worker run and
when the lease lapses (sql/20261202_billing_work_leases.sql). While it is live no other worker claims the
execution; once it lapses (the worker died) the execution can be claimed again.

Each sweep claims in two walks, fresh executions before those waiting for a next check:

* fresh: in the swept status, old enough, and without a schedule in that status (never asked, or the last worker
  died before it recorded anything), oldest first, from billing_executions' own partial indexes. FOR UPDATE SKIP
  LOCKED on the execution row keeps concurrent claims apart; the lease upsert's condition, evaluated on the
  committed lease row, is what guarantees one live lease per execution.
* due: asked before and left as they were (still pending, provider unavailable, an error), whose backoff has
  passed, earliest due first, from reconciliation_leases_due; FOR UPDATE SKIP LOCKED on the lease row.

So an execution that keeps failing waits behind the ones nobody has asked about yet, and backs off further each time.
Each walk follows a keyset cursor from where the previous batch of the same run stopped: a run visits an
execution at most once per walk, and a dry run, which leases and writes nothing, walks the backlog once. The fresh
walk passes over executions that already have a schedule (one primary-key probe of the lease table each), so it
reads the sweep's partial index once per run, as the single walk before the leases did.

A webhook that settles an execution while a worker asks the provider about it no longer waits for the worker: it
wins, and the worker's transition then finds the execution settled and writes nothing (the status guard).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

from billing.db.connection import Connection
from billing.db.planner import walk_in_index_order


@dataclass(frozen=True, slots=True)
class SweepSql:
    """What one sweep selects: the execution status, the column its age runs from, and when one is old enough."""

    status: str
    since: str
    # Conditions on `e` (billing_executions) beyond the status; %(cutoff)s is the age limit.
    old_enough: str


# Uses billing_executions_awaiting_settlement (submitted_at, tenant_id, id) where status = 'pending' and
# submitted_at is not null: the fresh walk's order.
AWAITING_SETTLEMENT: Final = SweepSql(
    status="pending",
    since="submitted_at",
    old_enough="e.submitted_at is not null and e.submitted_at < %(cutoff)s",
)
# Uses billing_executions_processing_since (updated_at, tenant_id, id) where status = 'processing'. A processing
# execution with a retry on the queue is not stuck until that retry is overdue by as long as an ordinary one may take.
STUCK_PROCESSING: Final = SweepSql(
    status="processing",
    since="updated_at",
    old_enough="e.updated_at < %(cutoff)s and (e.next_attempt_at is null or e.next_attempt_at < %(cutoff)s)",
)

# "Fresh": no schedule in the current status and no live lease. The plain `>= after_at` repeats the row
# comparison's first column so the index can bound the scan.
_FRESH_CANDIDATES = """
select e.*
  from billing.billing_executions e
 where e.status = '{status}'
   and {old_enough}
   and e.payment_provider <> all(%(unpolled)s::text[])
   and e.{since} >= %(after_at)s
   and (e.{since}, e.tenant_id, e.id) > (%(after_at)s, %(after_tenant)s::uuid, %(after_id)s::uuid)
   and not exists (
       select 1
         from billing.reconciliation_leases l
        where l.tenant_id = e.tenant_id and l.execution_id = e.id and l.status = e.status
          and (l.next_check_at is not null or l.lease_expires_at > %(now)s)
   )
 order by e.{since}, e.tenant_id, e.id
 limit %(limit)s
"""

# The upsert decides: a lease row committed by another worker since this statement's snapshot (a live lease, or a
# schedule in this status) fails the WHERE, and the execution comes back with leased false: the walk passes it
# rather than ending there, since a batch lost whole to a concurrent worker says nothing about the rows after it. A
# row about another status (the execution moved on) starts afresh once its lease has lapsed.
_CLAIM_FRESH = """
with candidates as materialized (
{candidates}
   for update of e skip locked
), leased as (
    insert into billing.reconciliation_leases as l (tenant_id, execution_id, status, lease_owner, lease_expires_at)
    select c.tenant_id, c.id, c.status, %(owner)s, %(lease_until)s from candidates c
    on conflict (tenant_id, execution_id) do update
       set status = excluded.status,
           lease_owner = excluded.lease_owner,
           lease_expires_at = excluded.lease_expires_at,
           attempts = 0,
           next_check_at = null,
           updated_at = clock_timestamp()
     where (l.lease_expires_at is null or l.lease_expires_at <= %(now)s)
       and (l.status <> excluded.status or l.next_check_at is null)
    returning l.tenant_id, l.execution_id
)
select c.*, 0 as lease_attempts, c.{since} as walk_at, leased.execution_id is not null as leased
  from candidates c
  left join leased on leased.tenant_id = c.tenant_id and leased.execution_id = c.id
 order by c.{since}, c.tenant_id, c.id
"""

_PEEK_FRESH = """
select c.*, 0 as lease_attempts, c.{since} as walk_at, true as leased
  from ({candidates}) c
 order by c.{since}, c.tenant_id, c.id
"""

# "Due": scheduled in this status, the schedule passed, no live lease, and still old enough to be swept (a stuck
# execution whose retry started meanwhile is not, until it is stuck again).
_DUE_CANDIDATES = """
select l.tenant_id, l.execution_id, l.attempts, l.next_check_at
  from billing.reconciliation_leases l
  join billing.billing_executions e on e.tenant_id = l.tenant_id and e.id = l.execution_id
 where l.status = '{status}'
   and l.next_check_at <= %(now)s
   and (l.lease_expires_at is null or l.lease_expires_at <= %(now)s)
   and l.next_check_at >= %(after_at)s
   and (l.next_check_at, l.tenant_id, l.execution_id) > (%(after_at)s, %(after_tenant)s::uuid, %(after_id)s::uuid)
   and e.status = l.status
   and {old_enough}
   and e.payment_provider <> all(%(unpolled)s::text[])
 order by l.next_check_at, l.tenant_id, l.execution_id
 limit %(limit)s
"""

_CLAIM_DUE = """
with candidates as materialized (
{candidates}
   for update of l skip locked
), leased as (
    update billing.reconciliation_leases l
       set lease_owner = %(owner)s, lease_expires_at = %(lease_until)s, updated_at = clock_timestamp()
      from candidates c
     where l.tenant_id = c.tenant_id and l.execution_id = c.execution_id
    returning l.tenant_id
)
select e.*, c.attempts as lease_attempts, c.next_check_at as walk_at, true as leased
  from candidates c
  join billing.billing_executions e on e.tenant_id = c.tenant_id and e.id = c.execution_id
 order by c.next_check_at, c.tenant_id, c.execution_id
"""

_PEEK_DUE = """
select e.*, c.attempts as lease_attempts, c.next_check_at as walk_at, true as leased
  from ({candidates}) c
  join billing.billing_executions e on e.tenant_id = c.tenant_id and e.id = c.execution_id
 order by c.next_check_at, c.tenant_id, c.execution_id
"""


def _statements(sweep: SweepSql) -> dict[tuple[bool, bool], str]:
    """(due walk?, dry run?) -> the claim (or, for a dry run, the read-only peek) of one sweep."""
    parts = {"status": sweep.status, "since": sweep.since, "old_enough": sweep.old_enough}
    fresh = _FRESH_CANDIDATES.format(**parts)
    due = _DUE_CANDIDATES.format(**parts)
    return {
        (False, False): _CLAIM_FRESH.format(candidates=fresh, **parts),
        (False, True): _PEEK_FRESH.format(candidates=fresh, **parts),
        (True, False): _CLAIM_DUE.format(candidates=due, **parts),
        (True, True): _PEEK_DUE.format(candidates=due, **parts),
    }


_STATEMENTS: Final = {sweep.status: _statements(sweep) for sweep in (AWAITING_SETTLEMENT, STUCK_PROCESSING)}

# The caller's lease, locked for the recording transaction; none when it lapsed and another worker took over.
_HOLD = """
select attempts
  from billing.reconciliation_leases
 where tenant_id = %(tenant_id)s and execution_id = %(execution_id)s and lease_owner = %(owner)s
   for update
"""

# The worker changed the execution, or found it changed: nothing more to ask in this status.
_FINISH = """
update billing.reconciliation_leases
   set lease_owner = null, lease_expires_at = null, attempts = 0, next_check_at = null,
       last_outcome = %(outcome)s, updated_at = clock_timestamp()
 where tenant_id = %(tenant_id)s and execution_id = %(execution_id)s and lease_owner = %(owner)s
"""

# Left as it was: ask again at next_check_at.
_BACK_OFF = """
update billing.reconciliation_leases
   set lease_owner = null, lease_expires_at = null, attempts = attempts + 1, next_check_at = %(next_check_at)s,
       last_outcome = %(outcome)s, updated_at = clock_timestamp()
 where tenant_id = %(tenant_id)s and execution_id = %(execution_id)s and lease_owner = %(owner)s
"""

# Claimed but not asked about (the run ran out of time): free at once, schedule and attempts unchanged.
_RELEASE = """
update billing.reconciliation_leases l
   set lease_owner = null, lease_expires_at = null, updated_at = clock_timestamp()
  from unnest(%(tenant_ids)s::uuid[], %(execution_ids)s::uuid[]) as r(tenant_id, execution_id)
 where l.tenant_id = r.tenant_id and l.execution_id = r.execution_id and l.lease_owner = %(owner)s
"""

# Schedules of executions that left the status without the worker (a webhook settled them): they would otherwise
# stay in reconciliation_leases_due for ever. Once per run and sweep, through that index, and only those due: a
# schedule that is not due costs nothing until it is (the due walk would step over it then), so a run reads the
# schedules it is about to walk anyway, not every schedule there is. A statement walks at most RETIRE_STEP of them in
# the index's order from a keyset cursor (the walk reads the index, the retirement probes each walked execution by
# its primary key), so however many are due (every schedule, after a worker outage) no statement grows past a
# bounded step: the caller repeats it from the last schedule walked until a step walks fewer than its limit.
_RETIRE_STALE = """
with walked as materialized (
    select l.tenant_id, l.execution_id, l.next_check_at
      from billing.reconciliation_leases l
     where l.status = %(status)s
       and l.next_check_at <= %(now)s
       and l.next_check_at >= %(after_at)s
       and (l.next_check_at, l.tenant_id, l.execution_id) > (%(after_at)s, %(after_tenant)s::uuid, %(after_id)s::uuid)
     order by l.next_check_at, l.tenant_id, l.execution_id
     limit %(limit)s
), retired as (
    update billing.reconciliation_leases l
       set attempts = 0, next_check_at = null, last_outcome = 'left_' || l.status, updated_at = clock_timestamp()
      from walked w
      join billing.billing_executions e on e.tenant_id = w.tenant_id and e.id = w.execution_id
     where l.tenant_id = w.tenant_id and l.execution_id = w.execution_id
       and l.status = %(status)s
       and l.next_check_at <= %(now)s
       -- the same test on the execution alone: only a stale schedule's lease row is looked up again
       and e.status <> %(status)s
       and e.status <> l.status
       and (l.lease_expires_at is null or l.lease_expires_at <= %(now)s)
    returning 1
), last as (
    select w.next_check_at, w.tenant_id, w.execution_id
      from walked w
     order by w.next_check_at desc, w.tenant_id desc, w.execution_id desc
     limit 1
)
select (select count(*) from walked) as walked, (select count(*) from retired) as retired,
       last.next_check_at, last.tenant_id, last.execution_id
  from (values (1)) one (n)
  left join last on true
"""
# Schedules one retirement statement walks: a few milliseconds of primary-key probes at most.
RETIRE_STEP: Final = 250

# last_outcome keeps the start of the text: exception messages can be long.
_MAX_OUTCOME_CHARS = 1_000
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


@dataclass(frozen=True, slots=True)
class Claimed:
    """One execution of a claimed batch: its row and its earlier checks in this status."""

    row: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """What one claim leased, and where its walk stands: None once the walk has nothing left to pass."""

    claimed: list[Claimed]
    # The last candidate walked, leased or lost to a concurrent worker: the next batch starts after it.
    walked_to: Cursor | None


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this worker run holds, or would hold (until is None in a dry run, which leases nothing)."""

    owner: str
    until: datetime | None


def claim(
    conn: Connection,
    sweep: SweepSql,
    *,
    due: bool,
    now: datetime,
    cutoff: datetime,
    after: Cursor,
    limit: int,
    lease: Lease,
    unpolled: Sequence[str] = (),
) -> ClaimedBatch:
    """Lease up to `limit` executions of the sweep (fresh ones, or those `due` for a next check), in walk order.

    With lease.until None (a dry run) the same executions are only read: nothing is locked past the statement
    and nothing written. Runs inside the caller's system-scoped transaction, which must commit before the
    provider is asked. Executions of `unpolled` providers (which have no status endpoint: Adyen) are never
    claimed: their webhooks and settlement reports tell, asking could not.
    """
    statement = _STATEMENTS[sweep.status][(due, lease.until is None)]
    # Each walk's index is in the walk's order: read it so, a batch at a time, not every candidate sorted.
    walk_in_index_order(conn)
    params = {
        "now": now,
        "cutoff": cutoff,
        "limit": limit,
        "owner": lease.owner,
        "lease_until": lease.until,
        "unpolled": list(unpolled),
        **after.params(),
    }
    rows = conn.execute(statement, params).fetchall()
    return ClaimedBatch(
        claimed=[Claimed(row=row, attempts=int(row["lease_attempts"])) for row in rows if row["leased"]],
        walked_to=Cursor(rows[-1]["walk_at"], rows[-1]["tenant_id"], rows[-1]["id"]) if rows else None,
    )


def hold(conn: Connection, tenant_id: UUID, execution_id: UUID, owner: str) -> bool:
    """Lock the caller's lease on the execution for the open transaction; False if it is no longer the caller's."""
    params = {"tenant_id": tenant_id, "execution_id": execution_id, "owner": owner}
    return conn.execute(_HOLD, params).fetchone() is not None


def finish(conn: Connection, tenant_id: UUID, execution_id: UUID, owner: str, *, outcome: str) -> None:
    """End the caller's lease and the execution's schedule in this status (it was settled, or moved on)."""
    conn.execute(_FINISH, _bookkeeping(tenant_id, execution_id, owner, outcome))


def back_off(
    conn: Connection, tenant_id: UUID, execution_id: UUID, owner: str, *, outcome: str, next_check_at: datetime
) -> bool:
    """End the caller's lease, count the check, and schedule the next one; False if the lease was not the caller's."""
    params = {**_bookkeeping(tenant_id, execution_id, owner, outcome), "next_check_at": next_check_at}
    return conn.execute(_BACK_OFF, params).rowcount == 1


def release(conn: Connection, claimed: Sequence[Claimed], owner: str) -> None:
    """Free the caller's leases on executions it claimed and did not ask about, leaving their schedules."""
    if claimed:
        conn.execute(
            _RELEASE,
            {
                "tenant_ids": [c.row["tenant_id"] for c in claimed],
                "execution_ids": [c.row["id"] for c in claimed],
                "owner": owner,
            },
        )


@dataclass(frozen=True, slots=True)
class RetireStep:
    """One bounded retirement statement: schedules walked and retired, and where the next step starts (None when
    this one walked the last due schedule)."""

    walked: int
    retired: int
    after: Cursor | None


def retire_stale_schedules_step(
    conn: Connection, sweep: SweepSql, *, now: datetime, after: Cursor, limit: int = RETIRE_STEP
) -> RetireStep:
    """Walk up to `limit` due schedules of the sweep after `after`, clearing those whose execution left its status."""
    walk_in_index_order(conn)
    row = conn.execute(_RETIRE_STALE, {"status": sweep.status, "now": now, "limit": limit, **after.params()}).fetchone()
    assert row is not None, "the statement returns one row"
    walked = int(row["walked"])
    last = Cursor(row["next_check_at"], row["tenant_id"], row["execution_id"]) if walked else None
    return RetireStep(walked=walked, retired=int(row["retired"]), after=last if walked >= limit else None)


def retire_stale_schedules(conn: Connection, sweep: SweepSql, *, now: datetime, step: int = RETIRE_STEP) -> int:
    """Clear the due schedules of the sweep's executions that left its status without the worker; how many.

    Step by bounded step (retire_stale_schedules_step), all in the caller's transaction."""
    retired = 0
    after: Cursor | None = Cursor.start()
    while after is not None:
        done = retire_stale_schedules_step(conn, sweep, now=now, after=after, limit=step)
        retired += done.retired
        after = done.after
    return retired


def _bookkeeping(tenant_id: UUID, execution_id: UUID, owner: str, outcome: str) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "execution_id": execution_id,
        "owner": owner,
        "outcome": outcome[:_MAX_OUTCOME_CHARS],
    }
