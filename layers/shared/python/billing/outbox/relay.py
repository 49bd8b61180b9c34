"""The outbox relay: publishes committed billing_outbox rows to the event bus, at least once, in order per execution.

No PutEvents call is made inside a database transaction. Each batch goes through three phases:

1. Claim, one short transaction: lock up to batch_size publishable rows (unpublished, not parked, no live lease,
   backoff passed) with FOR UPDATE SKIP LOCKED, write this run's lease (lease_owner, lease_expires_at) on the ones
   it may send, commit. Rows that never failed are claimed before rows that did.
2. Publish with PutEvents, no transaction open: a slow or failing call costs its own rows and nothing else. No
   lock waits on it and no session limit ends it (idle_in_transaction_session_timeout would end the session and
   roll back what earlier calls had recorded). Calls go in waves of up to concurrent_calls at once, no execution
   in two calls of a wave (billing.outbox.chunking.next_wave); the next wave is built once this one's answers are
   in. A run's first wave, and the wave after one with a call that failed as a whole, is a single call: a bus
   that is down costs one call's rows, not a wave's.
3. Record the batch's answers in one short transaction, the one that claims the next batch (or one of its own
   after the last): accepted rows get published_at; refused rows, and every row of a call that failed as a whole,
   count a failure and get next_attempt_at (exponential backoff), so a failing row waits instead of heading the
   next batches; their leases end, and so do those of the rows the batch claimed and did not send. One commit per
   batch rather than one per call and one per claim: commits are most of what the bookkeeping costs, and a batch
   takes a fraction of the lease.

A relay that dies between a PutEvents call and its batch's record leaves those rows leased (at most one batch);
once the lease lapses another run publishes them again. Delivery is at least once and consumers de-duplicate on
event_id (docs/events.md). A batch that ends in an error (not a kill) still records what was accepted before it.

Per-execution order ("an event is never published before an earlier unpublished event of the same execution")
rests on three rules:

1. Claim: a claimed row is held back (not leased, neither published nor counted as an attempt) when an earlier
   unpublished row of its execution is not in this claim: another relay leases it or is claiming it, it waits for
   its backoff, it is parked, or this run already passed it. So a relay only ever sends an execution's oldest
   unpublished events. The check reads the claim statement's snapshot, and can only err on the safe side. An
   earlier row that another relay published after the snapshot still looks unpublished: held back needlessly,
   sent next time. And no earlier row can be invisible to the snapshot while a later one is visible: every write
   to an execution after the insert that creates it (ExecutionRepository) updates, so locks, the execution row
   before taking an outbox id, hence an execution's outbox rows commit in id order.
2. Calls: one PutEvents call carries at most one event per execution, and one wave of concurrent calls too
   (billing.outbox.chunking), because EventBridge accepts or refuses each entry on its own and a second event of
   an execution could be accepted while its first was refused. An execution's next event goes in a later wave,
   after the answer to its previous one. An execution whose oldest claimed row failed before goes after the
   executions that never failed, all its rows together and in id order.
3. Failure: once an event of an execution fails, that execution's later events are not sent in this batch and
   not counted as attempts; they are released, and neither they nor the failed one is claimed again in this run.

While its lease is live no other relay claims a row, so two relays do not publish it both. The lease outlasts a
run (lease_duration is longer than the function's timeout); if it lapses anyway while its relay is still
publishing, a second relay may publish the same rows too (at least once), and order still holds: each relay sends
an execution's later event only after its own send of the earlier one was accepted, or once the earlier one is
recorded published. published_at is set once, by whichever relay records it first; a failure is recorded only by
the relay that still holds the row's lease.

A row that failed max_attempts times (failed_attempts) is parked: no longer claimed (so an oversized or otherwise
unpublishable event is not retried forever) and, by rule 1, still holding back its execution's later events. The
run reports parked rows so an operator can act (docs/events.md).

A run that drained the outbox then archives what was published more than a day ago (billing.outbox.archive), as
long as its time budget lasts: the live table keeps only what the relay still works on and the last day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final
from uuid import UUID, uuid4

from psycopg import pq

from billing.db.connection import Connection
from billing.db.planner import walk_in_index_order
from billing.db.tenancy import system_transaction
from billing.domain.backoff import BackoffPolicy
from billing.outbox.archive import DEFAULT_ARCHIVE_AFTER, archive_while
from billing.outbox.chunking import MAX_CALL_BYTES, entry_size, next_wave, retried_last, too_large
from billing.outbox.events import OutboundEvent, PublishResult, detail_sql, event_with_detail
from billing.outbox.ports import EventPublisher, PublishUnavailable

# Milliseconds of run time left; the relay starts no claim and no PutEvents call once it is zero or less.
TimeBudget = Callable[[], float]
Clock = Callable[[], datetime]

# 100 rows is at least 10 PutEvents calls: large enough to amortise the claim and the record, small enough that a
# run which stops or dies leaves little leased and unsent.
DEFAULT_BATCH_SIZE = 100
# Claims after a full one: a backlog is drained in batches this large, which fill their PutEvents calls better (an
# execution's events go one per wave, so a small batch of a few executions makes short calls) and pay a claim and a
# commit per 500 rows, not per 100. A relay that keeps up claims a handful of rows either way.
DEFAULT_BACKLOG_BATCH_SIZE = 500
# PutEvents calls in flight at once (a wave). One by default: moto's server (the local stack's bus) answers
# concurrent PutEvents so slowly that two at once outlast the client's 3 s read timeout on a loaded machine and the
# run stops as publisher_unavailable (bench/relay_throughput.py), and against a fast endpoint two or four at once
# measured no faster here. Against EventBridge, where a call is mostly network wait, more may pay off.
DEFAULT_CONCURRENT_CALLS = 1
# With the backoff below, 25 failed attempts ride out an EventBridge incident of almost two hours before a row is
# parked (30 s, 1, 2, 4 minutes, then every 5 minutes).
DEFAULT_MAX_ATTEMPTS = 25
DEFAULT_RETRY_BACKOFF: Final = BackoffPolicy(base_seconds=30.0, cap_seconds=300.0)
# Longer than a run (the function stops after 50 s), so a live relay's leases never lapse under it; a dead relay's
# rows wait this long before another run publishes them.
DEFAULT_LEASE_DURATION: Final = timedelta(minutes=2)
# One whole failed call may be that call (a timeout, a throttled burst): the run goes on. Two in a row mean the
# bus is unavailable, and further calls would only add attempts.
_MAX_FAILED_CALLS_IN_A_ROW = 2
# last_error keeps the start of the message; EventBridge messages are short, exception texts need not be.
_MAX_ERROR_CHARS = 1_000

_CLAIM = """
with candidates as materialized (
    select o.ctid as row_version, o.tenant_id, o.id, o.event_id, o.aggregate_id, o.event_type, o.payload,
           o.occurred_at, o.failed_attempts
      from billing.billing_outbox o
     where o.published_at is null
       and o.failed_attempts < %(max_attempts)s
       and (o.lease_expires_at is null or o.lease_expires_at <= %(now)s)
       and (o.next_attempt_at is null or o.next_attempt_at <= %(now)s)
       -- rows this run already failed or held back: they wait for the next run
       and o.id <> all(%(passed)s::bigint[])
     -- billing_outbox_claim_order: rows that never failed first
     order by (o.failed_attempts > 0), o.id
     limit %(limit)s
       for update skip locked
), marked as materialized (
    select c.*,
           -- rule 1 of the module docstring: an earlier unpublished row of the execution that this claim lacks
           -- (billing_outbox_unpublished_aggregate: only unpublished rows, however long the execution's history)
           exists (
               select 1
                 from billing.billing_outbox earlier
                where earlier.tenant_id = c.tenant_id
                  and earlier.aggregate_id = c.aggregate_id
                  and earlier.id < c.id
                  and earlier.published_at is null
                  and earlier.id not in (select id from candidates)
           ) as held_back
      from candidates c
), leased as (
    -- Each row by the version the claim locked (no other transaction can move it while the lock holds): no
    -- primary-key descent per row.
    update billing.billing_outbox o
       set lease_owner = %(owner)s, lease_expires_at = %(lease_until)s
      from marked m
     where o.ctid = m.row_version and o.id = m.id and not m.held_back
)
select m.tenant_id, m.id, m.event_id, m.aggregate_id, m.event_type, {detail} as detail, m.occurred_at,
       m.failed_attempts, m.held_back
  from marked m
 order by m.id
""".replace("{detail}", detail_sql("m"))

# `published_at is null`: a relay whose lease lapsed may record after another one did; published_at is set once.
_MARK_PUBLISHED = """
update billing.billing_outbox o
   set published_at = clock_timestamp(),
       publish_attempts = o.publish_attempts + 1,
       lease_owner = null, lease_expires_at = null, next_attempt_at = null
  from unnest(%(tenant_ids)s::uuid[], %(ids)s::bigint[]) as p(tenant_id, id)
 where o.tenant_id = p.tenant_id and o.id = p.id
   and o.published_at is null
"""

# Only under this run's lease: once it lapsed, the outcome of whoever holds the row now counts.
_MARK_FAILED = """
update billing.billing_outbox o
   set publish_attempts = o.publish_attempts + 1,
       failed_attempts = o.failed_attempts + 1,
       last_error = f.error,
       next_attempt_at = f.next_attempt_at,
       lease_owner = null, lease_expires_at = null
  from unnest(%(tenant_ids)s::uuid[], %(ids)s::bigint[], %(errors)s::text[], %(next_attempts)s::timestamptz[])
       as f(tenant_id, id, error, next_attempt_at)
 where o.tenant_id = f.tenant_id and o.id = f.id
   and o.published_at is null and o.lease_owner = %(owner)s
"""

_RELEASE = """
update billing.billing_outbox o
   set lease_owner = null, lease_expires_at = null
  from unnest(%(tenant_ids)s::uuid[], %(ids)s::bigint[]) as r(tenant_id, id)
 where o.tenant_id = r.tenant_id and o.id = r.id and o.lease_owner = %(owner)s
"""

# Reads every unpublished row through the partial index: a handful when the relay keeps up, and once per run.
_BACKLOG = """
select count(*) as unpublished,
       count(*) filter (where failed_attempts >= %(max_attempts)s) as parked,
       min(occurred_at) as oldest
  from billing.billing_outbox
 where published_at is null
"""

_SET_IDLE_LIMIT: Final = "select set_config('idle_in_transaction_session_timeout', %s, true)"


class StopReason(StrEnum):
    """Why a run ended."""

    DRAINED = "drained"  # nothing left that this run may publish
    TIME_BUDGET = "time_budget"  # the Lambda's time is nearly spent
    PUBLISHER_UNAVAILABLE = "publisher_unavailable"  # PutEvents calls failed as a whole twice in a row


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
    # Published rows this run moved to the archive (only a drained run archives).
    archived: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class _Run:
    lease_owner: str
    time_budget: TimeBudget
    # Rows this run claimed and did not publish. Excluding them ends the run (every batch shrinks what is left to
    # claim), and leaves rows held back behind another relay's lease for the next run instead of polling for it.
    passed: list[int] = field(default_factory=list)
    failed_calls_in_a_row: int = 0
    # Calls the next wave may make at once: 1 for the run's first wave and after a call failed as a whole.
    wave_width: int = 1
    # The last claim was full: a backlog is waiting, and the next claim takes backlog_batch_size rows.
    behind: bool = False
    batches: int = 0
    claimed: int = 0
    published: int = 0
    failed: int = 0
    held_back: int = 0
    stop_reason: StopReason | None = None


@dataclass(slots=True)
class _Batch:
    """A claimed batch: the rows leased to this run, and the answers its calls got so far (recorded at its end)."""

    # Every claimed row's id (held back ones too), and the leased ones' events.
    claimed: list[int]
    leased: dict[int, OutboundEvent]
    failed_before: dict[int, int]
    accepted: list[OutboundEvent] = field(default_factory=list)
    refused: list[tuple[OutboundEvent, str]] = field(default_factory=list)
    published: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)

    def answered(self, accepted: Sequence[OutboundEvent], refused: Sequence[tuple[OutboundEvent, str]]) -> None:
        self.accepted.extend(accepted)
        self.refused.extend(refused)
        self.published.update(event.outbox_id for event in accepted)
        self.failed.update(event.outbox_id for event, _ in refused)

    def unsent(self) -> list[OutboundEvent]:
        return [e for oid, e in self.leased.items() if oid not in self.published and oid not in self.failed]


class OutboxRelay:
    """Drains billing_outbox to an EventPublisher, batch by batch, until nothing is left."""

    def __init__(
        self,
        conn: Connection,
        publisher: EventPublisher,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_backoff: BackoffPolicy = DEFAULT_RETRY_BACKOFF,
        lease_duration: timedelta = DEFAULT_LEASE_DURATION,
        clock: Clock = lambda: datetime.now(UTC),
        idle_in_transaction_timeout: timedelta | None = None,
        archive_after: timedelta | None = DEFAULT_ARCHIVE_AFTER,
        concurrent_calls: int = DEFAULT_CONCURRENT_CALLS,
        backlog_batch_size: int = DEFAULT_BACKLOG_BATCH_SIZE,
    ) -> None:
        """`idle_in_transaction_timeout` bounds the idle time inside the relay's own transactions (None keeps the
        10 s every scope sets). Nothing waits inside them, so a tight bound costs nothing; tests set one far below
        a slow PutEvents call to prove that no call happens inside a transaction. `archive_after`: how long a
        published row stays in the live outbox before a drained run archives it (None: never).
        `concurrent_calls`: PutEvents calls in flight at once (the publisher is called from that many threads).
        `batch_size` rows are claimed first, and `backlog_batch_size` (if larger) by every claim after a full one."""
        if batch_size < 1 or max_attempts < 1 or concurrent_calls < 1:
            raise ValueError("batch_size, max_attempts and concurrent_calls must be positive")
        if lease_duration <= timedelta(0):
            raise ValueError("lease_duration must be positive")
        self._conn = conn
        self._publisher = publisher
        self._batch_size = batch_size
        self._backlog_batch_size = max(batch_size, backlog_batch_size)
        self._max_attempts = max_attempts
        self._retry_backoff = retry_backoff
        self._lease_duration = lease_duration
        self._clock = clock
        self._archive_after = archive_after
        self._concurrent_calls = concurrent_calls
        self._idle_limit_ms = (
            None
            if idle_in_transaction_timeout is None
            else max(1, idle_in_transaction_timeout // timedelta(milliseconds=1))
        )

    def run(self, time_budget: TimeBudget) -> RelayReport:
        """Publish batches until drained, out of time, or the bus is unavailable; then measure the backlog."""
        if self._conn.info.transaction_status is not pq.TransactionStatus.IDLE:
            # Inside a caller's transaction every phase would be a savepoint of it, PutEvents calls included.
            raise RuntimeError("the outbox relay commits phase by phase; run it outside any transaction")
        state = _Run(lease_owner=f"relay:{uuid4()}", time_budget=time_budget)
        # The connection stays on this thread; only publisher calls run on the pool's.
        with ThreadPoolExecutor(max_workers=self._concurrent_calls, thread_name_prefix="outbox-relay") as calls:
            # A batch's answers are recorded in the transaction that claims the next batch: one commit per batch.
            unrecorded: _Batch | None = None
            while state.stop_reason is None:
                if time_budget() <= 0:
                    state.stop_reason = StopReason.TIME_BUDGET
                    break
                batch = self._claim(state, record=unrecorded)
                unrecorded = None
                if batch is None:
                    state.stop_reason = StopReason.DRAINED
                    break
                self._batch(state, batch, calls)
                unrecorded = batch
            if unrecorded is not None:
                with self._transaction():
                    self._record(state, unrecorded, release=True)
        archived = 0
        if state.stop_reason is StopReason.DRAINED and self._archive_after is not None:
            archived = archive_while(self._conn, time_budget, older_than=self._archive_after)
        with self._transaction():
            backlog = self._conn.execute(_BACKLOG, {"max_attempts": self._max_attempts}).fetchone()
        assert backlog is not None, "an aggregate without group by returns one row"
        oldest: datetime | None = backlog["oldest"]
        return RelayReport(
            batches=state.batches,
            claimed=state.claimed,
            published=state.published,
            failed=state.failed,
            held_back=state.held_back,
            unpublished=int(backlog["unpublished"]),
            parked=int(backlog["parked"]),
            oldest_unpublished_age_seconds=(
                None if oldest is None else max(0.0, (self._clock() - oldest).total_seconds())
            ),
            stop_reason=state.stop_reason,
            archived=archived,
        )

    def _batch(self, state: _Run, batch: _Batch, calls: ThreadPoolExecutor) -> None:
        """Publish a claimed batch and count what became of its rows (recorded with the next claim)."""
        state.batches += 1
        try:
            self._publish(state, batch, calls)
        except Exception:
            # Not a kill: what the bus accepted is recorded, so a later run does not send it again; the rest stays
            # leased until the lease lapses, as after a relay that died.
            if batch.accepted:
                with self._transaction():
                    self._record(state, batch, release=False)
            raise
        state.passed.extend(oid for oid in batch.claimed if oid not in batch.published)
        state.claimed += len(batch.claimed)
        state.published += len(batch.published)
        state.failed += len(batch.failed)
        state.held_back += len(batch.claimed) - len(batch.published) - len(batch.failed)

    def _publish(self, state: _Run, batch: _Batch, calls: ThreadPoolExecutor) -> None:
        """Phase 2: the batch's calls, wave by wave, with no transaction open; answers are kept in `batch`."""
        pending = self._sendable(batch)
        # Executions with an event refused in this batch. Oversized entries are not among them: _sendable already
        # left out what follows one, and the events before it may still be sent.
        failed_keys: set[tuple[UUID, UUID]] = set()
        while pending and state.stop_reason is None:
            wave, pending = next_wave(pending, state.wave_width)
            sent: list[tuple[list[OutboundEvent], Future[list[PublishResult]]]] = []
            for chunk in wave:
                if state.time_budget() <= 0:
                    state.stop_reason = StopReason.TIME_BUDGET
                    break
                sent.append((chunk, self._call(calls, chunk, alone=len(wave) == 1)))
            call_failed = False
            failed_before_wave = len(failed_keys)
            error: Exception | None = None
            for chunk, answer in sent:
                try:
                    results = answer.result()
                except PublishUnavailable as unavailable:
                    batch.answered([], [(event, str(unavailable)) for event in chunk])
                    failed_keys.update(event.ordering_key for event in chunk)
                    call_failed = True
                    state.failed_calls_in_a_row += 1
                except Exception as unexpected:
                    # No answer from the bus but a fault of ours: the wave's other answers are kept, then it ends
                    # the batch (its rows stay leased).
                    error = error or unexpected
                else:
                    state.failed_calls_in_a_row = 0
                    accepted = [event for event, result in zip(chunk, results, strict=True) if result.accepted]
                    refused = [(e, r.error) for e, r in zip(chunk, results, strict=True) if not r.accepted]
                    batch.answered(accepted, refused)
                    failed_keys.update(event.ordering_key for event, _ in refused)
            if error is not None:
                raise error
            # Two calls in a row (in the order they were sent) failed as a whole: the bus is unavailable.
            if state.failed_calls_in_a_row >= _MAX_FAILED_CALLS_IN_A_ROW and state.stop_reason is None:
                state.stop_reason = StopReason.PUBLISHER_UNAVAILABLE
            state.wave_width = 1 if call_failed else self._concurrent_calls
            # Rule 3: an execution with a failed event sends nothing more in this batch.
            if len(failed_keys) > failed_before_wave:
                pending = [event for event in pending if event.ordering_key not in failed_keys]

    def _call(
        self, calls: ThreadPoolExecutor, chunk: list[OutboundEvent], *, alone: bool
    ) -> Future[list[PublishResult]]:
        """One PutEvents call, on the pool when others go with it; a wave of one is made on this thread, which
        has nothing else to do meanwhile (a hand-over to the pool and back costs more than a call's serialisation
        on a fast endpoint)."""
        if not alone:
            return calls.submit(self._publisher.publish, chunk)
        answer: Future[list[PublishResult]] = Future()
        try:
            answer.set_result(self._publisher.publish(chunk))
        except Exception as failure:
            answer.set_exception(failure)
        return answer

    def _claim(self, state: _Run, *, record: _Batch | None) -> _Batch | None:
        """Phase 1: lock and lease a batch, and commit, so that nothing stays locked while the bus is called; None
        when there was nothing to claim. The previous batch's answers (`record`) go in the same transaction, first:
        the claim sees its rows as they are now, published or released."""
        now = self._clock()
        limit = self._backlog_batch_size if state.behind else self._batch_size
        with self._transaction():
            if record is not None:
                self._record(state, record, release=True)
            rows = self._conn.execute(
                _CLAIM,
                {
                    "max_attempts": self._max_attempts,
                    "now": now,
                    "passed": state.passed,
                    "limit": limit,
                    "owner": state.lease_owner,
                    "lease_until": now + self._lease_duration,
                },
            ).fetchall()
        state.behind = len(rows) >= limit
        if not rows:
            return None
        return _Batch(
            claimed=[int(row["id"]) for row in rows],
            leased={int(row["id"]): event_with_detail(row, row["detail"]) for row in rows if not row["held_back"]},
            failed_before={int(row["id"]): int(row["failed_attempts"]) for row in rows},
        )

    def _sendable(self, batch: _Batch) -> list[OutboundEvent]:
        """The leased events to send, in sending order (chunking.retried_last); entries too large for any call fail
        now (recorded with the batch).

        An oversized entry is never sent: EventBridge would refuse it, and the payload cannot change. It fails on
        every run until it is parked, holding back its execution's later events as any failure does.
        """
        sendable: list[OutboundEvent] = []
        failed_keys: set[tuple[UUID, UUID]] = set()
        oversized: list[tuple[OutboundEvent, str]] = []
        for _, event in sorted(batch.leased.items()):
            if event.ordering_key in failed_keys:
                continue
            if too_large(event):
                error = f"EntryTooLarge: {entry_size(event)} bytes; PutEvents accepts at most {MAX_CALL_BYTES}"
                oversized.append((event, error))
                failed_keys.add(event.ordering_key)
                continue
            sendable.append(event)
        batch.answered([], oversized)
        return retried_last(sendable, batch.failed_before)

    def _record(self, state: _Run, batch: _Batch, *, release: bool) -> None:
        """Phase 3, in the caller's transaction: the batch's answers, and (`release`) the end of its unsent rows'
        leases."""
        unsent = batch.unsent() if release else []
        if batch.accepted:
            self._conn.execute(_MARK_PUBLISHED, _keys(batch.accepted))
        if batch.refused:
            self._conn.execute(_MARK_FAILED, self._failure_params(batch, batch.refused, state.lease_owner))
        if unsent:
            self._conn.execute(_RELEASE, {**_keys(unsent), "owner": state.lease_owner})

    def _failure_params(
        self, batch: _Batch, failures: Sequence[tuple[OutboundEvent, str]], owner: str
    ) -> dict[str, Any]:
        now = self._clock()
        return {
            **_keys([event for event, _ in failures]),
            "errors": [error[:_MAX_ERROR_CHARS] for _, error in failures],
            "next_attempts": [
                now + timedelta(seconds=self._retry_backoff.ceiling(batch.failed_before[event.outbox_id] + 1))
                for event, _ in failures
            ],
            "owner": owner,
        }

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # The relay serves every tenant: a system scope under row-level security.
        with system_transaction(self._conn):
            if self._idle_limit_ms is not None:
                self._conn.execute(_SET_IDLE_LIMIT, [str(self._idle_limit_ms)])
            # Every statement goes by an index, in its order: the claim walks billing_outbox_claim_order and stops
            # at the batch, however long the backlog (not another partial index read whole and sorted), and the
            # record finds its rows by primary key rather than by a hash join over every unpublished row: the plans
            # the planner's misjudged selectivity under row-level security (billing.db.planner) picks otherwise.
            walk_in_index_order(self._conn, forbid_sort=True)
            yield


def _keys(events: Sequence[OutboundEvent]) -> dict[str, list[Any]]:
    return {"tenant_ids": [event.tenant_id for event in events], "ids": [event.outbox_id for event in events]}
