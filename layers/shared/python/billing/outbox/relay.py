"""The outbox relay: publishes committed billing_outbox rows to the event bus, at least once, in order per execution.

Each batch is one transaction: claim rows (FOR UPDATE SKIP LOCKED), publish them with PutEvents, record which
were accepted and which failed, commit. A relay that dies mid-batch rolls back its bookkeeping, so rows it had
already published are published again by the next run: delivery is at least once and consumers de-duplicate on
event_id (docs/events.md).

Per-execution order ("an event is never published before an earlier unpublished event of the same execution")
rests on three rules:

1. Claim: a claimed row is held back (locked, but neither published nor counted as an attempt) when an earlier
   unpublished row of its execution is not in this relay's claimed set: another relay holds it, it is parked,
   or this run already failed it. So a relay only ever sends an execution's oldest unpublished events.
   The check reads the claim statement's snapshot, and can only err on the safe side. An earlier row that
   another relay published after the snapshot still looks unpublished: held back needlessly, sent next time.
   And no earlier row can be invisible to the snapshot while a later one is visible: every write to an
   execution after the insert that creates it (ExecutionRepository) updates, so locks, the execution row
   before taking an outbox id, hence an execution's outbox rows commit in id order.
2. Calls: one PutEvents call carries at most one event per execution (billing.outbox.chunking), because
   EventBridge accepts or refuses each entry on its own and a call's second event of an execution could be
   accepted while its first was refused.
3. Failure: once an event of an execution fails, that execution's later events are not sent in this batch and
   not counted as attempts; the rows they and the failed one came from are not claimed again in this run.

Two relays never publish the same row: a row is claimed under its lock, stays locked until its published_at
commits, and a relay claiming after that re-checks `published_at is null` on the committed row and skips it.

A row that failed max_attempts times is parked: no longer claimed (so an oversized or otherwise unpublishable
event is not retried forever) and, by rule 1, still holding back its execution's later events. The run reports
parked rows so an operator can act (docs/events.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from billing.db.connection import Connection
from billing.db.tenancy import system_transaction
from billing.outbox.chunking import MAX_CALL_BYTES, entry_size, next_chunk, too_large
from billing.outbox.events import OutboundEvent, event_from_outbox_row
from billing.outbox.ports import EventPublisher, PublishUnavailable

# Milliseconds of run time left; the relay starts no claim and no PutEvents call once it is zero or less.
TimeBudget = Callable[[], float]

# 100 rows is at least 10 PutEvents calls: large enough to amortise the claim and the commit, small enough that
# the transaction (which spans the calls) stays short.
DEFAULT_BATCH_SIZE = 100
# At one run a minute, 25 attempts ride out an EventBridge incident of about 25 minutes before a row is parked.
DEFAULT_MAX_ATTEMPTS = 25
# last_error keeps the start of the message; EventBridge messages are short, exception texts need not be.
_MAX_ERROR_CHARS = 1_000

_CLAIM = """
with claimed as materialized (
    select o.tenant_id, o.id, o.event_id, o.aggregate_id, o.event_type, o.payload, o.occurred_at
      from billing.billing_outbox o
     where o.published_at is null
       and o.publish_attempts < %(max_attempts)s
       -- rows this run already failed or held back: they wait for the next run
       and o.id <> all(%(passed)s::bigint[])
     order by o.id
     limit %(limit)s
       for update skip locked
)
select c.*,
       -- rule 1 of the module docstring: an earlier unpublished row of the execution that this relay does not hold
       exists (
           select 1
             from billing.billing_outbox earlier
            where earlier.aggregate_id = c.aggregate_id
              and earlier.tenant_id = c.tenant_id
              and earlier.id < c.id
              and earlier.published_at is null
              and earlier.id not in (select id from claimed)
       ) as held_back
  from claimed c
 order by c.id
"""

# clock_timestamp(), not now(): now() is the claim time, before the PutEvents calls of this transaction.
_MARK_PUBLISHED = """
update billing.billing_outbox o
   set published_at = clock_timestamp(),
       publish_attempts = o.publish_attempts + 1
  from unnest(%(tenant_ids)s::uuid[], %(ids)s::bigint[]) as p(tenant_id, id)
 where o.tenant_id = p.tenant_id and o.id = p.id
"""

_MARK_FAILED = """
update billing.billing_outbox o
   set publish_attempts = o.publish_attempts + 1,
       last_error = f.error
  from unnest(%(tenant_ids)s::uuid[], %(ids)s::bigint[], %(errors)s::text[]) as f(tenant_id, id, error)
 where o.tenant_id = f.tenant_id and o.id = f.id
"""

# Reads every unpublished row through the partial index: a handful when the relay keeps up, and once per run.
_BACKLOG = """
select count(*) as unpublished,
       count(*) filter (where publish_attempts >= %(max_attempts)s) as parked,
       min(occurred_at) as oldest
  from billing.billing_outbox
 where published_at is null
"""


class StopReason(StrEnum):
    """Why a run ended."""

    DRAINED = "drained"  # nothing left that this run may publish
    TIME_BUDGET = "time_budget"  # the Lambda's time is nearly spent
    PUBLISHER_UNAVAILABLE = "publisher_unavailable"  # a whole PutEvents call failed; the next run tries again


@dataclass(frozen=True, slots=True)
class RelayReport:
    """What one run did, and the backlog it left (the handler turns this into metrics and one log line).

    held_back counts claimed rows neither published nor failed: waiting behind an earlier event of their
    execution, or left when the run stopped. unpublished, parked (at max_attempts) and the age of the oldest
    unpublished row describe the whole outbox after the run; the age is None when nothing is unpublished.
    """

    batches: int
    claimed: int
    published: int
    failed: int
    held_back: int
    unpublished: int
    parked: int
    oldest_unpublished_age_seconds: float | None
    stop_reason: StopReason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _BatchOutcome:
    claimed: int = 0
    published: int = 0
    failed: int = 0
    held_back: int = 0
    stop_reason: StopReason | None = None


class OutboxRelay:
    """Drains billing_outbox to an EventPublisher in batches, one transaction each, until nothing is left."""

    def __init__(
        self,
        conn: Connection,
        publisher: EventPublisher,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be positive")
        self._conn = conn
        self._publisher = publisher
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._clock = clock

    def run(self, time_budget: TimeBudget) -> RelayReport:
        """Publish batches until drained, out of time, or the bus is unavailable; then measure the backlog."""
        # Rows this run claimed and did not publish. Excluding them ends the run (every batch shrinks what is
        # left to claim), leaves failed rows for the next run instead of retrying them at once, and leaves rows
        # held back behind another relay's batch for the next run instead of polling until that batch commits.
        passed: list[int] = []
        totals = _BatchOutcome()
        batches = 0
        stop_reason = StopReason.DRAINED
        while True:
            if time_budget() <= 0:
                stop_reason = StopReason.TIME_BUDGET
                break
            outcome = self._batch(time_budget, passed)
            if outcome.claimed == 0:
                break
            batches += 1
            totals.claimed += outcome.claimed
            totals.published += outcome.published
            totals.failed += outcome.failed
            totals.held_back += outcome.held_back
            if outcome.stop_reason is not None:
                stop_reason = outcome.stop_reason
                break
        with system_transaction(self._conn):
            backlog = self._conn.execute(_BACKLOG, {"max_attempts": self._max_attempts}).fetchone()
        assert backlog is not None, "an aggregate without group by returns one row"
        oldest: datetime | None = backlog["oldest"]
        return RelayReport(
            batches=batches,
            claimed=totals.claimed,
            published=totals.published,
            failed=totals.failed,
            held_back=totals.held_back,
            unpublished=int(backlog["unpublished"]),
            parked=int(backlog["parked"]),
            oldest_unpublished_age_seconds=(
                None if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
            ),
            stop_reason=stop_reason,
        )

    def _batch(self, time_budget: TimeBudget, passed: list[int]) -> _BatchOutcome:
        outcome = _BatchOutcome()
        published: list[OutboundEvent] = []
        failures: dict[int, tuple[OutboundEvent, str]] = {}
        # The relay serves every tenant: a system scope under row-level security.
        with system_transaction(self._conn):
            rows = self._conn.execute(
                _CLAIM, {"max_attempts": self._max_attempts, "passed": passed, "limit": self._batch_size}
            ).fetchall()
            outcome.claimed = len(rows)
            pending = self._eligible(rows, failures)
            failed_keys = {event.ordering_key for event, _ in failures.values()}
            while pending:
                if time_budget() <= 0:
                    outcome.stop_reason = StopReason.TIME_BUDGET
                    break
                chunk, pending = next_chunk(pending)
                try:
                    results = self._publisher.publish(chunk)
                except PublishUnavailable as unavailable:
                    failures.update((event.outbox_id, (event, str(unavailable))) for event in chunk)
                    outcome.stop_reason = StopReason.PUBLISHER_UNAVAILABLE
                    break
                for event, result in zip(chunk, results, strict=True):
                    if result.accepted:
                        published.append(event)
                    else:
                        failures[event.outbox_id] = (event, result.error)
                        failed_keys.add(event.ordering_key)
                # Rule 3: an execution with a failed event sends nothing more in this batch.
                pending = [event for event in pending if event.ordering_key not in failed_keys]
            self._record(published, failures)
        published_ids = {event.outbox_id for event in published}
        passed.extend(int(row["id"]) for row in rows if int(row["id"]) not in published_ids)
        outcome.published = len(published)
        outcome.failed = len(failures)
        outcome.held_back = outcome.claimed - outcome.published - outcome.failed
        return outcome

    @staticmethod
    def _eligible(
        rows: Sequence[Mapping[str, Any]], failures: dict[int, tuple[OutboundEvent, str]]
    ) -> list[OutboundEvent]:
        """Events that may be sent in this batch, in id order; entries too large for any call fail at once."""
        eligible: list[OutboundEvent] = []
        failed_keys: set[tuple[UUID, UUID]] = set()
        for row in rows:
            if row["held_back"]:
                continue
            event = event_from_outbox_row(row)
            if event.ordering_key in failed_keys:
                continue
            if too_large(event):
                # Never sent: EventBridge would refuse it, and the payload cannot change. It fails on every run
                # until it is parked, holding back its execution's later events as any failure does.
                failures[event.outbox_id] = (
                    event,
                    f"EntryTooLarge: {entry_size(event)} bytes; PutEvents accepts at most {MAX_CALL_BYTES}",
                )
                failed_keys.add(event.ordering_key)
                continue
            eligible.append(event)
        return eligible

    def _record(self, published: Sequence[OutboundEvent], failures: Mapping[int, tuple[OutboundEvent, str]]) -> None:
        if published:
            self._conn.execute(
                _MARK_PUBLISHED,
                {"tenant_ids": [e.tenant_id for e in published], "ids": [e.outbox_id for e in published]},
            )
        if failures:
            failed = list(failures.values())
            self._conn.execute(
                _MARK_FAILED,
                {
                    "tenant_ids": [event.tenant_id for event, _ in failed],
                    "ids": [event.outbox_id for event, _ in failed],
                    "errors": [error[:_MAX_ERROR_CHARS] for _, error in failed],
                },
            )
