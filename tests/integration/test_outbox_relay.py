"""The outbox relay on real PostgreSQL and moto (EventBridge bus -> rule -> SQS queue we read back).

Every test gets a private database cloned from a migrated template: the relay claims every tenant's unpublished
rows, so in the shared test database it would publish other tests' rows and they would publish its. Roles as in
production: the relay (and the operator's replay) runs as billing_worker (`db`); the outbox rows are written by
the repository as billing_app (`app_db`), the role of the functions that change executions; rows are read for
assertions as the admin (`private_admin`). The relay's clock is moved forward instead of waiting for a backoff or
a lease to pass; nothing sleeps, except fake EventBridge calls playing a slow one.
"""

from __future__ import annotations

import importlib.util
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws
from psycopg import pq
from pydantic import ValidationError

from billing import resource_names as names
from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.domain.workflow import WorkflowWriteContext
from billing.outbox.chunking import MAX_CALL_BYTES, MAX_ENTRIES_PER_CALL
from billing.outbox.eventbridge import EventBridgePublisher
from billing.outbox.events import detail_sql
from billing.outbox.relay import DEFAULT_LEASE_DURATION, DEFAULT_RETRY_BACKOFF, OutboxRelay, RelayReport, StopReason
from billing.outbox.replay import main as replay_main
from billing.outbox.replay import replay
from billing.resource_names import FunctionName
from tests.factories import create_execution
from tests.lambda_harness import set_function_environment

REGION = "eu-west-1"
CTX = WorkflowWriteContext.service_default()
HANDLER_PATH = Path(__file__).resolve().parents[2] / "functions" / "outbox_relay" / "handler.py"
FIRST_RETRY = timedelta(seconds=DEFAULT_RETRY_BACKOFF.ceiling(1))
# Far below the slow call's duration: a PutEvents call inside a transaction would end the relay's session.
IDLE_LIMIT = timedelta(milliseconds=250)
SLOW_CALL_SECONDS = 0.75


def plenty_of_time() -> float:
    return 60_000.0


class Clock:
    """A relay clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> Clock:
        self.now += delta
        return self


class WorkerDied(BaseException):
    """Ends a run the way a killed Lambda does: nothing after it runs, not even the relay's error handling."""


# -- the bus -------------------------------------------------------------------------------------------------


@dataclass
class Bus:
    events: Any  # moto-backed boto3 "events" client
    sqs: Any
    queue_url: str

    def received(self) -> list[dict[str, Any]]:
        """Everything delivered to the queue since the last call, in delivery order."""
        delivered: list[dict[str, Any]] = []
        while messages := self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages"):
            delivered.extend(json.loads(message["Body"]) for message in messages)
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )
        return delivered


@pytest.fixture
def bus(aws_credentials: str) -> Iterator[Bus]:
    with mock_aws():
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        events.create_event_bus(Name=names.EVENT_BUS_NAME)
        queue_url = sqs.create_queue(QueueName="billing-events-observer")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(
            Name="observe-billing-events",
            EventBusName=names.EVENT_BUS_NAME,
            EventPattern=json.dumps({"source": [names.EVENT_SOURCE]}),
        )
        events.put_targets(
            Rule="observe-billing-events",
            EventBusName=names.EVENT_BUS_NAME,
            Targets=[{"Id": "observer", "Arn": queue_arn}],
        )
        yield Bus(events, sqs, queue_url)


@dataclass
class EventsClient:
    """The moto-backed client, recording every call; entries `fail(outbox_id)` picks come back failed.

    A failed entry never reaches the bus and its answer is InternalFailure in its position, exactly how
    EventBridge reports a partial failure; the others go through the real (moto) put_events. before_call runs
    first on every call, with the number of the call (1 for the first, in the order calls began: the relay makes
    several at once); it may wait, sleep or raise.
    """

    client: Any
    fail: Callable[[int], bool] = lambda _outbox_id: False
    before_call: Callable[[int], None] = lambda _call: None
    calls: list[list[Mapping[str, Any]]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    _numbering: threading.Lock = field(default_factory=threading.Lock)

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:  # noqa: N803 (boto3 name)
        with self._numbering:
            self.calls.append(list(Entries))
            number = len(self.calls)
        self.before_call(number)
        failing = [self.fail(outbox_id(entry)) for entry in Entries]
        passing = [entry for entry, fails in zip(Entries, failing, strict=True) if not fails]
        answers = iter(self.client.put_events(Entries=passing)["Entries"] if passing else [])
        merged: list[Mapping[str, Any]] = []
        for entry, fails in zip(Entries, failing, strict=True):
            if fails:
                merged.append({"ErrorCode": "InternalFailure", "ErrorMessage": "injected failure"})
                self.rejected.append(outbox_id(entry))
                continue
            answer = next(answers)
            merged.append(answer)
            if "EventId" in answer:
                self.accepted.append(outbox_id(entry))
        return {"FailedEntryCount": sum(failing), "Entries": merged}

    def sent(self) -> list[list[int]]:
        """The outbox ids of every call, in call order."""
        return [[outbox_id(entry) for entry in call] for call in self.calls]


class FailOnce:
    """Fails each chosen outbox id the first time it is sent (thread-safe: both relays may send it)."""

    def __init__(self, outbox_ids: set[int]) -> None:
        self._pending = set(outbox_ids)
        self._lock = threading.Lock()

    def __call__(self, outbox_id: int) -> bool:
        with self._lock:
            if outbox_id in self._pending:
                self._pending.discard(outbox_id)
                return True
            return False


def throttled(_call: int) -> None:
    raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "PutEvents")


def outbox_id(entry: Mapping[str, Any]) -> int:
    return int(json.loads(entry["Detail"])["outbox_id"])


def relay(db: Connection, client: EventsClient, **options: Any) -> OutboxRelay:
    return OutboxRelay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), **options)


def session_state(admin: Connection, conn: Connection) -> str:
    """What the server says `conn`'s session is doing: 'idle', or 'idle in transaction' when a transaction is open."""
    row = admin.execute("select state from pg_stat_activity where pid = %s", [conn.info.backend_pid]).fetchone()
    assert row is not None
    return str(row["state"])


# -- outbox rows ---------------------------------------------------------------------------------------------

# After create: each step is one transition, so one more outbox row for the execution.
_STEPS: tuple[Callable[[ExecutionRepository, UUID, UUID], object], ...] = (
    lambda repo, tenant, x: repo.mark_pending(tenant, x, CTX),
    lambda repo, tenant, x: repo.mark_processing(tenant, x, CTX),
    lambda repo, tenant, x: repo.settle_from_processing(tenant, x, CTX, provider_reference=f"ref-{x}"),
    lambda repo, tenant, x: repo.confirm_from_pending(tenant, x, CTX),
)


def make_events(
    app_db: Connection, tenant_id: UUID, *, executions: int, events_each: int, seed: int | None = None
) -> list[UUID]:
    """Executions with events_each outbox rows each (1..5), interleaved round-robin or, with a seed, randomly.

    Written as the functions that change executions write them: by the repository, as billing_app.
    """
    assert 1 <= events_each <= len(_STEPS) + 1
    repo = ExecutionRepository(app_db)
    ids = [create_execution(app_db, tenant_id).id for _ in range(executions)]
    remaining = {x: list(_STEPS[: events_each - 1]) for x in ids}
    if seed is None:
        for step in _STEPS[: events_each - 1]:
            for x in ids:
                step(repo, tenant_id, x)
        return ids
    rng = random.Random(seed)
    while active := [x for x in ids if remaining[x]]:
        x = rng.choice(active)
        remaining[x].pop(0)(repo, tenant_id, x)
    return ids


def with_large_event(app_db: Connection, tenant_id: UUID, *, size: int) -> UUID:
    """An execution whose created event is ordinary and whose pending event is about `size` bytes larger.

    The repository copies the correlation id into the event's payload, so a long one makes a large event.
    """
    execution = create_execution(app_db, tenant_id)
    ExecutionRepository(app_db).mark_pending(tenant_id, execution.id, CTX, correlation_id="x" * size)
    return execution.id


def outbox(admin: Connection) -> list[dict[str, Any]]:
    return admin.execute("select * from billing.billing_outbox order by id").fetchall()


def by_id(admin: Connection) -> dict[int, dict[str, Any]]:
    return {int(row["id"]): row for row in outbox(admin)}


def ids_of(admin: Connection, execution_id: UUID) -> list[int]:
    return [row["id"] for row in outbox(admin) if row["aggregate_id"] == execution_id]


def assert_in_order_per_execution(admin: Connection, delivered_outbox_ids: Sequence[int]) -> None:
    """Each execution's events arrived in outbox id order."""
    aggregate_of = {row["id"]: row["aggregate_id"] for row in outbox(admin)}
    sequences: dict[UUID, list[int]] = defaultdict(list)
    for oid in delivered_outbox_ids:
        sequences[aggregate_of[oid]].append(oid)
    for aggregate, sequence in sequences.items():
        assert sequence == sorted(sequence), f"execution {aggregate} out of order: {sequence}"


def delivered_ids(delivered: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(event["detail"]["outbox_id"]) for event in delivered]


def assert_calls_within_limits(client: EventsClient, admin: Connection) -> None:
    aggregate_of = {row["id"]: row["aggregate_id"] for row in outbox(admin)}
    for call in client.calls:
        assert len(call) <= MAX_ENTRIES_PER_CALL
        aggregates = [aggregate_of[outbox_id(entry)] for entry in call]
        assert len(aggregates) == len(set(aggregates)), "two events of one execution in one call"
        size = sum(
            14 + len(e["Source"].encode()) + len(e["DetailType"].encode()) + len(e["Detail"].encode()) for e in call
        )
        assert size <= MAX_CALL_BYTES


def leased(admin: Connection) -> list[int]:
    return [row["id"] for row in outbox(admin) if row["lease_owner"] is not None]


# -- publishing ----------------------------------------------------------------------------------------------


def test_run_with_unpublished_rows_publishes_each_once_in_order_and_marks_them(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=6, events_each=4)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    rows = outbox(private_admin)
    assert len(rows) == 24
    assert report == RelayReport(
        batches=1,
        claimed=24,
        published=24,
        failed=0,
        held_back=0,
        unpublished=0,
        parked=0,
        oldest_unpublished_age_seconds=None,
        stop_reason=StopReason.DRAINED,
    )
    delivered = bus.received()
    assert sorted(e["detail"]["event_id"] for e in delivered) == sorted(str(r["event_id"]) for r in rows)
    assert_in_order_per_execution(private_admin, delivered_ids(delivered))
    assert all(r["published_at"] is not None and r["publish_attempts"] == 1 for r in rows)
    assert all(r["last_error"] is None and r["lease_owner"] is None for r in rows)
    assert_calls_within_limits(client, private_admin)


def test_published_event_carries_billing_source_event_type_and_event_id(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=1, events_each=5)

    relay(db, EventsClient(bus.events)).run(plenty_of_time)

    rows = outbox(private_admin)
    delivered = bus.received()
    assert [e["detail-type"] for e in delivered] == [r["event_type"] for r in rows]
    assert {e["source"] for e in delivered} == {"billing.execution"}
    for event, row in zip(delivered, rows, strict=True):
        assert event["detail"] == {**row["payload"], "event_id": str(row["event_id"]), "outbox_id": row["id"]}
        assert event["detail"]["execution_id"] == str(row["aggregate_id"])


def test_detail_built_by_the_database_is_the_payload_plus_ids_in_utf8(private_admin: Connection) -> None:
    # Given a payload with a character outside ASCII and an event_id key of its own
    event_id = uuid4()
    payload = {"note": "café", "event_id": "stale", "amount": 1999}

    # When the claim's expression builds the Detail
    row = private_admin.execute(
        f"select {detail_sql('o')} as detail"
        " from (values (%s::jsonb, %s::uuid, 42::bigint)) as o (payload, event_id, id)",
        [json.dumps(payload), event_id],
    ).fetchone()

    # Then it is the payload with the row's ids over its own, and the character itself, not an escape: the entry's
    # size is counted in UTF-8 bytes of exactly this string
    assert row is not None
    assert json.loads(row["detail"]) == {**payload, "event_id": str(event_id), "outbox_id": 42}
    assert "café" in row["detail"]


def test_run_again_after_everything_was_published_sends_nothing(
    db: Connection, app_db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=3, events_each=2)
    client = EventsClient(bus.events)
    relay(db, client).run(plenty_of_time)
    calls_after_first_run = len(client.calls)
    assert len(bus.received()) == 6

    report = relay(db, client).run(plenty_of_time)

    assert (report.claimed, report.published, report.batches) == (0, 0, 0)
    assert len(client.calls) == calls_after_first_run
    assert bus.received() == []


def test_run_with_25_executions_sends_calls_of_10_10_and_5(
    db: Connection, app_db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=25, events_each=1)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    # The first call alone, then the other two (at once with concurrent calls, in either order).
    assert len(client.calls[0]) == 10
    assert sorted(len(call) for call in client.calls[1:]) == [5, 10]
    assert report.published == 25
    assert len(bus.received()) == 25


def test_run_with_100_kb_events_keeps_every_call_within_256_kb(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    for _ in range(5):
        with_large_event(app_db, tenant_id, size=100 * 1024)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    # Five small created events in one call, then the five 100 KB pending events two by two (at once).
    assert len(client.calls[0]) == 5
    assert sorted(len(call) for call in client.calls[1:]) == [1, 2, 2]
    assert_calls_within_limits(client, private_admin)
    assert report.published == 10
    assert sorted(delivered_ids(bus.received())) == sorted(by_id(private_admin))


def test_run_with_a_batch_smaller_than_the_backlog_drains_it_in_several_batches(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=5, events_each=5)

    report = relay(db, EventsClient(bus.events), batch_size=7, backlog_batch_size=7).run(plenty_of_time)

    assert report.published == 25
    assert report.batches >= 4
    assert report.unpublished == 0
    delivered = delivered_ids(bus.received())
    assert sorted(delivered) == sorted(by_id(private_admin))
    assert_in_order_per_execution(private_admin, delivered)


def test_after_its_first_call_a_run_makes_several_calls_at_once_with_no_execution_in_two_of_them(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given 30 executions with two events each: after the run's first call (ten created events) the other twenty
    # created events and ten of the pending ones can go at once, three calls that must all be in flight together
    make_events(app_db, tenant_id, executions=30, events_each=2)
    together = threading.Barrier(3, timeout=10)

    def meet(call: int) -> None:
        if call in (2, 3, 4):
            together.wait()

    client = EventsClient(bus.events, before_call=meet)

    report = relay(db, client, concurrent_calls=3).run(plenty_of_time)

    # Then the three met (a call made after another's answer would have broken the barrier), and none of them
    # shared an execution with another: each execution's second event went after the answer to its first
    aggregate_of = {row["id"]: row["aggregate_id"] for row in outbox(private_admin)}
    wave = [{aggregate_of[oid] for oid in call} for call in client.sent()[1:4]]
    assert [len(call) for call in client.sent()[:4]] == [10, 10, 10, 10]
    assert len(wave[0] | wave[1] | wave[2]) == 30
    assert (report.published, report.unpublished, len(client.calls)) == (60, 0, 6)
    assert_calls_within_limits(client, private_admin)
    assert_in_order_per_execution(private_admin, delivered_ids(bus.received()))


def test_run_whose_call_fails_with_an_error_of_ours_records_the_others_answers_and_leaves_its_rows_leased(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given 25 rows: one call alone, then two at once, the first of which the publisher fails to make (a bug)
    make_events(app_db, tenant_id, executions=25, events_each=1)

    def bug(call: int) -> None:
        if call == 2:
            raise RuntimeError("a bug in the publisher")

    client = EventsClient(bus.events, before_call=bug)
    clock = Clock()

    with pytest.raises(RuntimeError, match="a bug in the publisher"):
        relay(db, client, clock=clock, concurrent_calls=2).run(plenty_of_time)

    # Then what the bus accepted is recorded, and the failed call's rows wait for the lease to lapse, unattempted
    broken = set(client.sent()[1])
    rows = by_id(private_admin)
    assert {oid for oid, r in rows.items() if r["published_at"] is not None} == set(client.accepted)
    assert set(client.accepted) == set(rows) - broken
    assert {oid for oid, r in rows.items() if r["lease_owner"] is not None} == broken
    assert all(rows[oid]["publish_attempts"] == 0 for oid in broken)

    later = relay(db, EventsClient(bus.events), clock=clock.advance(DEFAULT_LEASE_DURATION)).run(plenty_of_time)

    assert (later.published, later.unpublished) == (len(broken), 0)
    assert sorted(delivered_ids(bus.received())) == sorted(rows)


def test_run_behind_a_backlog_claims_the_backlog_batch_size_after_a_full_claim(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=30, events_each=1)
    client = EventsClient(bus.events)

    report = relay(db, client, batch_size=5, backlog_batch_size=20).run(plenty_of_time)

    # 5 rows first; that claim was full, so the next takes 20; that one was full too, and the last finds 5.
    assert (report.batches, report.claimed, report.published, report.unpublished) == (3, 30, 30, 0)
    assert len(client.calls[0]) == 5
    assert sorted(delivered_ids(bus.received())) == sorted(by_id(private_admin))


def test_run_inside_an_open_transaction_is_refused(db: Connection, bus: Bus) -> None:
    with db.transaction(), pytest.raises(RuntimeError, match="outside any transaction"):
        relay(db, EventsClient(bus.events)).run(plenty_of_time)


# -- failures ------------------------------------------------------------------------------------------------


def test_run_with_partial_failure_keeps_failed_row_and_holds_back_its_execution_until_its_backoff_passed(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    _, b, _ = make_events(app_db, tenant_id, executions=3, events_each=3)
    b_ids = ids_of(private_admin, b)
    client = EventsClient(bus.events, fail=FailOnce({b_ids[1]}))
    clock = Clock()

    first = relay(db, client, clock=clock).run(plenty_of_time)

    assert (first.claimed, first.published, first.failed, first.held_back) == (9, 7, 1, 1)
    assert (first.unpublished, first.stop_reason) == (2, StopReason.DRAINED)
    after_first = by_id(private_admin)
    failed, later = after_first[b_ids[1]], after_first[b_ids[2]]
    assert failed["published_at"] is None
    assert (failed["publish_attempts"], failed["failed_attempts"]) == (1, 1)
    assert failed["last_error"] == "InternalFailure: injected failure"
    assert failed["next_attempt_at"] == clock.now + FIRST_RETRY
    assert (later["published_at"], later["publish_attempts"], later["last_error"]) == (None, 0, None)
    assert leased(private_admin) == [], "every lease ended: recorded or released"
    assert all(oid != b_ids[2] for call in client.sent() for oid in call), "sent after its failed predecessor"
    first_delivery = delivered_ids(bus.received())
    assert sorted(first_delivery) == sorted(set(after_first) - {b_ids[1], b_ids[2]})

    too_soon = relay(db, client, clock=clock.advance(FIRST_RETRY / 2)).run(plenty_of_time)
    second = relay(db, client, clock=clock.advance(FIRST_RETRY)).run(plenty_of_time)

    # Before its backoff passed the failed row is not claimed, and holds its execution's next row back.
    assert (too_soon.claimed, too_soon.held_back, too_soon.published) == (1, 1, 0)
    assert (second.published, second.failed, second.unpublished) == (2, 0, 0)
    assert delivered_ids(bus.received()) == [b_ids[1], b_ids[2]]
    assert by_id(private_admin)[b_ids[1]]["publish_attempts"] == 2
    assert sorted(client.accepted) == sorted(after_first), "every row accepted exactly once"


def test_run_when_one_put_events_call_fails_records_its_rows_and_publishes_the_rest(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=15, events_each=1)
    client = EventsClient(bus.events, before_call=lambda call: throttled(call) if call == 1 else None)
    clock = Clock()

    report = relay(db, client, clock=clock).run(plenty_of_time)

    assert report.stop_reason is StopReason.DRAINED
    assert (report.claimed, report.published, report.failed) == (15, 5, 10)
    rows = outbox(private_admin)
    assert [r["publish_attempts"] for r in rows] == [1] * 15
    assert all(r["last_error"] == "ThrottlingException: Rate exceeded" for r in rows[:10])
    assert [r["published_at"] is None for r in rows] == [True] * 10 + [False] * 5

    retry = relay(db, client, clock=clock.advance(FIRST_RETRY)).run(plenty_of_time)

    assert (retry.published, retry.unpublished, retry.stop_reason) == (10, 0, StopReason.DRAINED)
    assert len(bus.received()) == 15


def test_run_stops_after_two_failed_calls_in_a_row_and_releases_what_it_did_not_send(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=25, events_each=1)
    client = EventsClient(bus.events, before_call=throttled)

    report = relay(db, client).run(plenty_of_time)

    assert report.stop_reason is StopReason.PUBLISHER_UNAVAILABLE
    assert (len(client.calls), report.claimed, report.published, report.failed, report.held_back) == (2, 25, 0, 20, 5)
    rows = outbox(private_admin)
    assert [r["failed_attempts"] for r in rows] == [1] * 20 + [0] * 5
    assert leased(private_admin) == [], "the rows it did not send are free for the next run"


def fail_once_then_wait(db: Connection, bus: Bus, row_id: int, clock: Clock) -> None:
    """Run the relay once with `row_id` refused, then move the clock past its backoff."""
    relay(db, EventsClient(bus.events, fail=lambda oid: oid == row_id), clock=clock).run(plenty_of_time)
    clock.advance(FIRST_RETRY)


def test_rows_that_failed_are_claimed_after_rows_that_never_did(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given a row that failed once and whose backoff has passed, and two rows created after it, never attempted
    [x] = make_events(app_db, tenant_id, executions=1, events_each=1)
    [failed] = ids_of(private_admin, x)
    clock = Clock()
    fail_once_then_wait(db, bus, failed, clock)
    fresh = [
        oid for y in make_events(app_db, tenant_id, executions=2, events_each=1) for oid in ids_of(private_admin, y)
    ]
    client = EventsClient(bus.events)

    # When the relay runs in batches of two
    report = relay(db, client, batch_size=2, clock=clock).run(plenty_of_time)

    # Then the first batch took the fresh rows, although the failed one is older
    assert client.sent() == [fresh, [failed]]
    assert (report.batches, report.published) == (2, 3)


def test_execution_that_failed_before_goes_after_the_others_with_its_rows_in_order(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given an execution whose first row failed once (backoff passed) and whose second row is new
    [x] = make_events(app_db, tenant_id, executions=1, events_each=1)
    [x_first] = ids_of(private_admin, x)
    clock = Clock()
    fail_once_then_wait(db, bus, x_first, clock)
    ExecutionRepository(app_db).mark_pending(tenant_id, x, CTX)
    x_second = ids_of(private_admin, x)[1]
    # And an execution created after it, never attempted
    [y] = make_events(app_db, tenant_id, executions=1, events_each=1)
    [y_only] = ids_of(private_admin, y)
    client = EventsClient(bus.events)

    relay(db, client, clock=clock).run(plenty_of_time)

    # Then the new execution leads, and the failed one's rows follow in id order, one call each
    assert client.sent() == [[y_only, x_first], [x_second]]
    assert delivered_ids(bus.received()) == [y_only, x_first, x_second]


def test_failed_row_backs_off_exponentially(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    [x] = make_events(app_db, tenant_id, executions=1, events_each=1)
    [row_id] = ids_of(private_admin, x)
    client = EventsClient(bus.events, fail=lambda _oid: True)
    clock = Clock()
    waits: list[timedelta] = []

    for _ in range(6):
        relay(db, client, clock=clock).run(plenty_of_time)
        next_attempt_at = by_id(private_admin)[row_id]["next_attempt_at"]
        waits.append(next_attempt_at - clock.now)
        clock.advance(next_attempt_at - clock.now)

    assert waits == [timedelta(seconds=s) for s in (30, 60, 120, 240, 300, 300)]
    assert len(client.calls) == 6


def test_run_with_oversized_event_fails_it_unsent_then_parks_it_and_holds_its_execution(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    x = with_large_event(app_db, tenant_id, size=MAX_CALL_BYTES)
    ExecutionRepository(app_db).mark_processing(tenant_id, x, CTX)
    x_created, too_big, x_next = ids_of(private_admin, x)
    [y] = make_events(app_db, tenant_id, executions=1, events_each=1)
    [y_only] = ids_of(private_admin, y)
    client = EventsClient(bus.events)
    clock = Clock()

    first = relay(db, client, max_attempts=2, clock=clock).run(plenty_of_time)

    assert (first.published, first.failed, first.held_back, first.parked) == (2, 1, 1, 0)
    assert sorted(delivered_ids(bus.received())) == [x_created, y_only]
    assert sorted(oid for call in client.sent() for oid in call) == [x_created, y_only]
    assert str(by_id(private_admin)[too_big]["last_error"]).startswith("EntryTooLarge: ")

    second = relay(db, client, max_attempts=2, clock=clock.advance(FIRST_RETRY)).run(plenty_of_time)
    third = relay(db, client, max_attempts=2, clock=clock.advance(timedelta(hours=1))).run(plenty_of_time)

    assert (second.failed, second.parked) == (1, 1)
    # Parked: no longer claimed or attempted, and its execution's later event still waits behind it.
    assert (third.claimed, third.failed, third.held_back, third.published, third.parked) == (1, 0, 1, 0, 1)
    rows = by_id(private_admin)
    assert (rows[too_big]["publish_attempts"], rows[too_big]["failed_attempts"]) == (2, 2)
    assert (rows[x_next]["published_at"], rows[x_next]["publish_attempts"]) == (None, 0)
    assert bus.received() == []


def test_events_before_an_oversized_one_are_published_even_when_they_miss_the_first_call(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=MAX_ENTRIES_PER_CALL, events_each=1)
    x = with_large_event(app_db, tenant_id, size=MAX_CALL_BYTES)
    x_created, too_big = ids_of(private_admin, x)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    assert [len(call) for call in client.sent()] == [MAX_ENTRIES_PER_CALL, 1]
    assert client.sent()[1] == [x_created]
    assert (report.published, report.failed) == (MAX_ENTRIES_PER_CALL + 1, 1)
    assert by_id(private_admin)[too_big]["published_at"] is None


def test_parked_row_an_operator_releases_is_published_with_the_rows_it_held_back(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given a row parked after two failures, holding back its execution's next event
    [x] = make_events(app_db, tenant_id, executions=1, events_each=2)
    parked, waiting = ids_of(private_admin, x)
    refusals = iter([True, True])
    client = EventsClient(bus.events, fail=lambda oid: oid == parked and next(refusals, False))
    clock = Clock()
    relay(db, client, max_attempts=2, clock=clock).run(plenty_of_time)
    stuck = relay(db, client, max_attempts=2, clock=clock.advance(timedelta(hours=1))).run(plenty_of_time)
    assert (stuck.parked, stuck.published) == (1, 0)

    # When an operator releases it, as docs/events.md says (publish_attempts only grows; failed_attempts resets)
    private_admin.execute(
        "update billing.billing_outbox set failed_attempts = 0, next_attempt_at = null"
        " where tenant_id = %s and id = %s",
        [tenant_id, parked],
    )
    released = relay(db, client, max_attempts=2, clock=clock).run(plenty_of_time)

    # Then it and the row it held back are published, in order
    assert (released.published, released.parked, released.unpublished) == (2, 0, 0)
    assert delivered_ids(bus.received()) == [parked, waiting]
    assert by_id(private_admin)[parked]["publish_attempts"] == 3


# -- no PutEvents call inside a transaction ------------------------------------------------------------------


def test_put_events_slower_than_the_idle_limit_costs_no_answer_and_no_session(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given 25 rows (three calls), the second of which EventBridge takes three idle limits to answer
    make_events(app_db, tenant_id, executions=25, events_each=1)
    states: list[tuple[pq.TransactionStatus, str]] = []

    def slow_second(call: int) -> None:
        states.append((db.info.transaction_status, session_state(private_admin, db)))
        if call == 2:
            time.sleep(SLOW_CALL_SECONDS)

    client = EventsClient(bus.events, before_call=slow_second)

    # When a relay whose transactions may idle for a third of that runs
    report = relay(db, client, idle_in_transaction_timeout=IDLE_LIMIT).run(plenty_of_time)

    # Then no call was made inside a transaction, every accepted row was recorded, and the session survived
    assert states == [(pq.TransactionStatus.IDLE, "idle")] * 3
    assert (report.published, report.unpublished, report.stop_reason) == (25, 0, StopReason.DRAINED)
    assert all(r["published_at"] is not None for r in outbox(private_admin))
    assert not db.broken
    assert db.execute("select 1 as alive").fetchone() == {"alive": 1}


def test_put_events_call_timing_out_fails_only_its_rows_and_they_are_retried_after_their_backoff(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given 25 rows, and a first call that hangs past the idle limit before the client gives up on it
    make_events(app_db, tenant_id, executions=25, events_each=1)

    def hang_first(call: int) -> None:
        if call == 1:
            time.sleep(SLOW_CALL_SECONDS)
            raise ReadTimeoutError(endpoint_url=f"https://events.{REGION}.amazonaws.com/")

    client = EventsClient(bus.events, before_call=hang_first)
    clock = Clock()

    # When the relay runs
    first = relay(db, client, clock=clock, idle_in_transaction_timeout=IDLE_LIMIT).run(plenty_of_time)

    # Then the rows of the other calls are published, and only the timed-out call's rows wait for their backoff
    timed_out = client.sent()[0]
    assert (first.published, first.failed, first.stop_reason) == (15, 10, StopReason.DRAINED)
    rows = by_id(private_admin)
    assert {oid for oid, r in rows.items() if r["published_at"] is None} == set(timed_out)
    assert {rows[oid]["next_attempt_at"] for oid in timed_out} == {clock.now + FIRST_RETRY}
    assert all(str(rows[oid]["last_error"]).startswith("ReadTimeoutError: ") for oid in timed_out)

    early = relay(db, client, clock=clock.advance(FIRST_RETRY / 2)).run(plenty_of_time)
    retried = relay(db, client, clock=clock.advance(FIRST_RETRY)).run(plenty_of_time)

    assert (early.claimed, early.published) == (0, 0)
    assert (retried.published, retried.unpublished) == (10, 0)
    assert sorted(delivered_ids(bus.received())) == sorted(rows)


# -- leases ----------------------------------------------------------------------------------------------------


def test_rows_leased_by_a_live_relay_are_not_published_by_another(
    private_db_url: str, db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given a relay that leased a batch of five rows and is waiting on its first PutEvents call
    make_events(app_db, tenant_id, executions=10, events_each=1)
    calling, answer = threading.Event(), threading.Event()

    def hold_first(call: int) -> None:
        if call == 1:
            calling.set()
            assert answer.wait(timeout=10)

    first_client = EventsClient(bus.events, before_call=hold_first)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first_run = pool.submit(relay(db, first_client, batch_size=5).run, plenty_of_time)
        assert calling.wait(timeout=10)
        first_state = session_state(private_admin, db)
        leased_by_first = leased(private_admin)

        # When a second relay runs meanwhile
        second_client = EventsClient(bus.events)
        with connect(private_db_url) as other:
            second = relay(other, second_client, batch_size=5).run(plenty_of_time)
        answer.set()
        first = first_run.result(timeout=10)

    # Then it published only the rows the first one had not leased, and each row was published once
    assert first_state == "idle", "the first relay waits on EventBridge with no transaction open"
    assert leased_by_first == sorted(by_id(private_admin))[:5]
    assert sorted(second_client.accepted) == sorted(by_id(private_admin))[5:]
    assert sorted(first_client.accepted) == leased_by_first
    assert (first.published, second.published) == (5, 5)
    assert len(bus.received()) == 10


def test_rows_leased_by_a_relay_that_died_are_published_once_the_lease_lapses(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    # Given a relay that leased every row and died during its first PutEvents call
    make_events(app_db, tenant_id, executions=3, events_each=2)
    clock = Clock()

    def die(_call: int) -> None:
        raise WorkerDied

    with pytest.raises(WorkerDied):
        relay(db, EventsClient(bus.events, before_call=die), clock=clock).run(plenty_of_time)
    rows = outbox(private_admin)
    assert {r["lease_expires_at"] for r in rows if not r["published_at"]} == {clock.now + DEFAULT_LEASE_DURATION}

    # When another relay runs while the leases are live, then once they lapsed
    client = EventsClient(bus.events)
    while_live = relay(db, client, clock=clock.advance(DEFAULT_LEASE_DURATION / 2)).run(plenty_of_time)
    after_lapse = relay(db, client, clock=clock.advance(DEFAULT_LEASE_DURATION)).run(plenty_of_time)

    # Then the first sends nothing and the second publishes every row, in order
    assert (while_live.claimed, while_live.published, while_live.unpublished) == (0, 0, 6)
    assert (after_lapse.published, after_lapse.unpublished) == (6, 0)
    assert_in_order_per_execution(private_admin, delivered_ids(bus.received()))
    assert leased(private_admin) == []


# -- concurrency ---------------------------------------------------------------------------------------------


def _run_two_relays(db_url: str, bus: Bus, fail: Callable[[int], bool]) -> tuple[list[EventsClient], list[RelayReport]]:
    """Two relays on two connections, started together; each one's first PutEvents call waits for the other's,
    so both hold a leased batch at the same moment."""
    meet = threading.Barrier(2, timeout=30)

    def meeting(call: int) -> None:
        if call == 1:
            meet.wait()

    clients = [EventsClient(bus.events, fail=fail, before_call=meeting) for _ in range(2)]
    connections = [connect(db_url) for _ in range(2)]
    start = threading.Barrier(2, timeout=30)

    def run(index: int) -> RelayReport:
        start.wait()
        return relay(connections[index], clients[index], batch_size=7).run(plenty_of_time)

    try:
        with ThreadPoolExecutor(2) as pool:
            reports = list(pool.map(run, range(2)))
    finally:
        for conn in connections:
            conn.close()
    return clients, reports


def sweeper(db: Connection, client: EventsClient) -> OutboxRelay:
    """A later relay run, past every backoff the two relays set."""
    return relay(db, client, clock=lambda: datetime.now(UTC) + timedelta(hours=1))


def test_two_relays_at_once_publish_every_row_exactly_once_in_order_per_execution(
    private_db_url: str, db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=40, events_each=5, seed=7)

    clients, reports = _run_two_relays(private_db_url, bus, fail=lambda _oid: False)

    assert all(report.published > 0 for report in reports), "both relays took part"
    assert all(report.failed == 0 for report in reports)
    # A row held back behind the other relay's batch is left for the next run, never sent early.
    left = [r for r in outbox(private_admin) if r["published_at"] is None]
    assert all(r["publish_attempts"] == 0 and r["lease_owner"] is None for r in left)
    assert len(left) <= sum(report.held_back for report in reports)
    sweep = EventsClient(bus.events)
    sweeper(db, sweep).run(plenty_of_time)

    accepted = clients[0].accepted + clients[1].accepted + sweep.accepted
    assert len(accepted) == len(set(accepted)) == 200, "a row was published twice, or not at all"
    assert sorted(sweep.accepted) == sorted(r["id"] for r in left)
    delivered = bus.received()
    assert len(delivered) == len({e["detail"]["event_id"] for e in delivered}) == 200
    assert_in_order_per_execution(private_admin, delivered_ids(delivered))
    assert all(r["published_at"] is not None and r["publish_attempts"] == 1 for r in outbox(private_admin))


def test_two_relays_at_once_with_injected_failures_lose_nothing_and_keep_order(
    private_db_url: str, db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=40, events_each=5, seed=11)
    chosen = set(random.Random(3).sample(sorted(by_id(private_admin)), 20))

    clients, _ = _run_two_relays(private_db_url, bus, fail=FailOnce(chosen))
    sweep = EventsClient(bus.events)
    sweeper(db, sweep).run(plenty_of_time)

    accepted = clients[0].accepted + clients[1].accepted + sweep.accepted
    assert len(accepted) == len(set(accepted)) == 200, "a row was published twice, or not at all"
    delivered = bus.received()
    assert sorted(delivered_ids(delivered)) == sorted(by_id(private_admin))
    assert_in_order_per_execution(private_admin, delivered_ids(delivered))
    rows = outbox(private_admin)
    assert all(r["published_at"] is not None for r in rows)
    rejected = clients[0].rejected + clients[1].rejected
    assert rejected, "failures were injected"
    assert set(rejected) <= chosen
    # A chosen row held back in both relays was first sent by the sweep, which injects no failure.
    assert {r["id"] for r in rows if r["publish_attempts"] == 2} == set(rejected)
    assert {r["publish_attempts"] for r in rows} <= {1, 2}


# -- time budget and lag -------------------------------------------------------------------------------------


def test_run_when_the_time_budget_runs_out_stops_between_calls_keeps_what_was_sent_and_releases_the_rest(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=25, events_each=1)
    client = EventsClient(bus.events)

    report = relay(db, client).run(lambda: 0.0 if client.calls else 60_000.0)

    assert report.stop_reason is StopReason.TIME_BUDGET
    assert (report.batches, report.claimed, report.published, report.held_back) == (1, 25, 10, 15)
    assert len(client.calls) == 1
    rows = outbox(private_admin)
    assert sum(r["published_at"] is not None for r in rows) == 10
    assert all(r["publish_attempts"] == 0 for r in rows if r["published_at"] is None)
    assert leased(private_admin) == []

    # The next run, on the same clock (a lease left behind would still be live), publishes the rest at once.
    rest = relay(db, client).run(plenty_of_time)

    assert (rest.published, rest.unpublished) == (15, 0)
    assert sorted(delivered_ids(bus.received())) == [r["id"] for r in rows]


def test_run_with_no_time_left_claims_nothing(db: Connection, app_db: Connection, bus: Bus, tenant_id: UUID) -> None:
    make_events(app_db, tenant_id, executions=2, events_each=1)

    report = relay(db, EventsClient(bus.events)).run(lambda: 0.0)

    assert (report.batches, report.claimed, report.stop_reason) == (0, 0, StopReason.TIME_BUDGET)
    assert report.unpublished == 2


def test_run_reports_the_age_of_the_oldest_unpublished_row_as_lag(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(app_db, tenant_id, executions=2, events_each=2)
    rows = outbox(private_admin)
    oldest = min(r["occurred_at"] for r in rows)
    # Fail the second-oldest row: after the run it is the oldest one left.
    second = sorted(rows, key=lambda r: r["occurred_at"])[1]
    now = oldest + timedelta(seconds=90.5)

    before = relay(db, EventsClient(bus.events), clock=lambda: now).run(lambda: 0.0)
    failing = EventsClient(bus.events, fail=lambda oid: oid == second["id"])
    after = relay(db, failing, clock=lambda: now).run(plenty_of_time)

    assert before.oldest_unpublished_age_seconds == 90.5
    assert after.unpublished >= 1
    expected = (now - second["occurred_at"]).total_seconds()
    assert 0 < expected < 90.5
    assert after.oldest_unpublished_age_seconds == pytest.approx(expected)


# -- replay --------------------------------------------------------------------------------------------------


def _snapshot(admin: Connection) -> list[tuple[Any, ...]]:
    return [
        (r["id"], r["published_at"], r["publish_attempts"], r["failed_attempts"], r["last_error"], r["lease_owner"])
        for r in outbox(admin)
    ]


def test_replay_of_one_execution_republishes_its_events_in_order_and_leaves_rows_untouched(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    _, chosen, _ = make_events(app_db, tenant_id, executions=3, events_each=4)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    before = _snapshot(private_admin)
    originals = [r for r in outbox(private_admin) if r["aggregate_id"] == chosen]

    report = replay(db, EventBridgePublisher(bus.events, names.EVENT_BUS_NAME), execution_id=chosen)

    assert (report.selected, report.published, report.skipped, report.failures) == (4, 4, 0, ())
    delivered = bus.received()
    assert delivered_ids(delivered) == [r["id"] for r in originals]
    assert [e["detail"]["event_id"] for e in delivered] == [str(r["event_id"]) for r in originals]
    assert all(e["detail"]["replayed"] is True for e in delivered)
    assert _snapshot(private_admin) == before


def test_replay_publishes_with_no_transaction_open(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    [execution] = make_events(app_db, tenant_id, executions=1, events_each=3)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    states: list[tuple[pq.TransactionStatus, str]] = []
    client = EventsClient(
        bus.events,
        before_call=lambda _call: states.append((db.info.transaction_status, session_state(private_admin, db))),
    )

    report = replay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), execution_id=execution)

    assert report.published == 3
    assert states == [(pq.TransactionStatus.IDLE, "idle")] * 3


def test_replay_of_a_time_range_republishes_published_events_of_that_range_and_tenant_only(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    other_tenant = uuid4()
    make_events(app_db, tenant_id, executions=3, events_each=3)
    make_events(app_db, other_tenant, executions=1, events_each=2)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    [last] = make_events(app_db, tenant_id, executions=1, events_each=1)  # in range, but not yet published
    rows = outbox(private_admin)
    since: datetime = rows[3]["occurred_at"]
    until: datetime = max(r["occurred_at"] for r in rows) + timedelta(seconds=1)
    before = _snapshot(private_admin)

    report = replay(
        db, EventBridgePublisher(bus.events, names.EVENT_BUS_NAME), since=since, until=until, tenant_id=tenant_id
    )

    expected = [
        r["id"]
        for r in rows
        if r["tenant_id"] == tenant_id and r["published_at"] is not None and since <= r["occurred_at"] < until
    ]
    assert 0 < len(expected) < len(rows)
    assert (report.selected, report.published) == (len(expected), len(expected))
    delivered = delivered_ids(bus.received())
    assert delivered == expected
    assert all(by_id(private_admin)[oid]["aggregate_id"] != last for oid in delivered)
    assert _snapshot(private_admin) == before


def test_replay_dry_run_counts_and_sends_nothing(db: Connection, app_db: Connection, bus: Bus, tenant_id: UUID) -> None:
    [execution] = make_events(app_db, tenant_id, executions=1, events_each=3)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    client = EventsClient(bus.events)

    report = replay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), execution_id=execution, dry_run=True)

    assert (report.selected, report.published, report.dry_run) == (3, 0, True)
    assert client.calls == []
    assert bus.received() == []


def test_replay_with_failed_copy_skips_later_copies_of_that_execution(
    db: Connection, app_db: Connection, private_admin: Connection, bus: Bus, tenant_id: UUID
) -> None:
    [execution] = make_events(app_db, tenant_id, executions=1, events_each=3)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    ids = [r["id"] for r in outbox(private_admin)]
    client = EventsClient(bus.events, fail=lambda oid: oid == ids[1])

    report = replay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), execution_id=execution)

    assert (report.selected, report.published, report.skipped, report.complete) == (3, 1, 1, False)
    assert [f.outbox_id for f in report.failures] == [ids[1]]
    assert delivered_ids(bus.received()) == [ids[0]]


def test_replay_command_by_execution_publishes_copies_and_prints_the_report(
    db: Connection,
    app_db: Connection,
    bus: Bus,
    tenant_id: UUID,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [execution] = make_events(app_db, tenant_id, executions=1, events_each=2)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    # An operator tool across tenants: it connects as billing_worker.
    monkeypatch.setenv("DATABASE_URL", private_db_url)
    monkeypatch.setenv(names.ENV_EVENT_BUS_NAME, names.EVENT_BUS_NAME)

    exit_code = replay_main(["--execution-id", str(execution)])

    assert exit_code == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["selected"], printed["published"]) == (2, 2)
    assert [e["detail"]["replayed"] for e in bus.received()] == [True, True]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--since", "2026-04-01T00:00:00Z"],
        ["--since", "2026-04-01T00:00:00", "--until", "2026-04-02T00:00:00"],
        ["--since", "2026-04-02T00:00:00Z", "--until", "2026-04-01T00:00:00Z"],
    ],
    ids=["no-selector", "open-range", "no-utc-offset", "reversed-range"],
)
def test_replay_command_with_incomplete_selection_exits_with_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        replay_main(argv)
    assert exited.value.code == 2


# -- the Lambda handler --------------------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    remaining_ms: int = 50_000
    function_name: str = "billing-outbox-relay"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:billing-outbox-relay"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"outbox_relay_handler_{uuid4().hex}", HANDLER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_handler_run_publishes_and_emits_published_failed_and_lag_metrics(
    app_db: Connection,
    bus: Bus,
    tenant_id: UUID,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_events(app_db, tenant_id, executions=2, events_each=3)
    set_function_environment(
        monkeypatch,
        FunctionName.OUTBOX_RELAY,
        {"DATABASE_URL": private_db_url, names.ENV_EVENT_BUS_NAME: names.EVENT_BUS_NAME},
    )
    handler = _load_handler()
    try:
        result = handler.lambda_handler({}, FakeLambdaContext())
    finally:
        handler.connections().discard()

    assert (result["published"], result["stop_reason"]) == (6, "drained")
    assert len(bus.received()) == 6
    emf = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and "_aws" in json.loads(line)
    ]
    assert len(emf) == 1
    [directive] = emf[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Billing"
    assert {m["Name"] for m in directive["Metrics"]} == {
        "OutboxPublished",
        "OutboxPublishFailed",
        "OutboxParked",
        "OutboxLagSeconds",
    }
    # Powertools writes each metric's values as a list (one entry per add_metric call).
    assert (emf[0]["OutboxPublished"], emf[0]["OutboxPublishFailed"], emf[0]["OutboxLagSeconds"]) == (
        [6.0],
        [0.0],
        [0.0],
    )


def test_handler_without_event_bus_name_fails_at_cold_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(names.ENV_EVENT_BUS_NAME, raising=False)

    with pytest.raises(ValidationError, match=names.ENV_EVENT_BUS_NAME):
        _load_handler()
