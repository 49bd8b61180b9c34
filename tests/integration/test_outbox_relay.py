"""The outbox relay on real PostgreSQL and moto (EventBridge bus -> rule -> SQS queue we read back).

Every test gets a private database cloned from a migrated template: the relay claims every tenant's unpublished
rows, so in the shared test database it would publish other tests' rows and they would publish its.
"""

from __future__ import annotations

import importlib.util
import json
import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from billing import resource_names as names
from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.domain.workflow import WorkflowWriteContext
from billing.outbox.chunking import MAX_CALL_BYTES, MAX_ENTRIES_PER_CALL
from billing.outbox.eventbridge import EventBridgePublisher
from billing.outbox.relay import OutboxRelay, RelayReport, StopReason
from billing.outbox.replay import main as replay_main
from billing.outbox.replay import replay
from tests.factories import create_execution

REGION = "eu-west-1"
CTX = WorkflowWriteContext.service_default()
HANDLER_PATH = Path(__file__).resolve().parents[2] / "functions" / "outbox_relay" / "handler.py"


def plenty_of_time() -> float:
    return 60_000.0


# -- databases -----------------------------------------------------------------------------------------------


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
    first on every call (the concurrency test uses it to make two relays meet).
    """

    client: Any
    fail: Callable[[int], bool] = lambda _outbox_id: False
    before_call: Callable[[], None] = lambda: None
    calls: list[list[Mapping[str, Any]]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)

    def put_events(self, *, Entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:  # noqa: N803 (boto3 name)
        self.before_call()
        self.calls.append(list(Entries))
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


def outbox_id(entry: Mapping[str, Any]) -> int:
    return int(json.loads(entry["Detail"])["outbox_id"])


def relay(db: Connection, client: EventsClient, **options: Any) -> OutboxRelay:
    return OutboxRelay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), **options)


# -- outbox rows ---------------------------------------------------------------------------------------------

# After create: each step is one transition, so one more outbox row for the execution.
_STEPS: tuple[Callable[[ExecutionRepository, UUID, UUID], object], ...] = (
    lambda repo, tenant, x: repo.mark_pending(tenant, x, CTX),
    lambda repo, tenant, x: repo.mark_processing(tenant, x, CTX),
    lambda repo, tenant, x: repo.settle_from_processing(tenant, x, CTX, provider_reference=f"ref-{x}"),
    lambda repo, tenant, x: repo.confirm_from_pending(tenant, x, CTX),
)


def make_events(
    conn: Connection, tenant_id: UUID, *, executions: int, events_each: int, seed: int | None = None
) -> list[UUID]:
    """Executions with events_each outbox rows each (1..5), interleaved round-robin or, with a seed, randomly."""
    assert 1 <= events_each <= len(_STEPS) + 1
    repo = ExecutionRepository(conn)
    ids = [create_execution(conn, tenant_id).id for _ in range(executions)]
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


def insert_outbox_row(conn: Connection, tenant_id: UUID, aggregate_id: UUID, *, padding: int = 0) -> int:
    """A raw outbox row with a payload of about `padding` bytes (the repository's payloads are all small)."""
    event_id = uuid4()
    row = conn.execute(
        "insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload)"
        " values (%s, %s, %s, 'billing.execution.created', %s) returning id",
        [tenant_id, event_id, aggregate_id, Jsonb({"event_id": str(event_id), "padding": "x" * padding})],
    ).fetchone()
    assert row is not None
    return int(row["id"])


def outbox(conn: Connection) -> list[dict[str, Any]]:
    return conn.execute("select * from billing.billing_outbox order by id").fetchall()


def by_id(conn: Connection) -> dict[int, dict[str, Any]]:
    return {int(row["id"]): row for row in outbox(conn)}


def assert_in_order_per_execution(conn: Connection, delivered_outbox_ids: Sequence[int]) -> None:
    """Each execution's events arrived in outbox id order."""
    aggregate_of = {row["id"]: row["aggregate_id"] for row in outbox(conn)}
    sequences: dict[UUID, list[int]] = defaultdict(list)
    for oid in delivered_outbox_ids:
        sequences[aggregate_of[oid]].append(oid)
    for aggregate, sequence in sequences.items():
        assert sequence == sorted(sequence), f"execution {aggregate} out of order: {sequence}"


def delivered_ids(delivered: Sequence[Mapping[str, Any]]) -> list[int]:
    return [int(event["detail"]["outbox_id"]) for event in delivered]


def assert_calls_within_limits(client: EventsClient, conn: Connection) -> None:
    aggregate_of = {row["id"]: row["aggregate_id"] for row in outbox(conn)}
    for call in client.calls:
        assert len(call) <= MAX_ENTRIES_PER_CALL
        aggregates = [aggregate_of[outbox_id(entry)] for entry in call]
        assert len(aggregates) == len(set(aggregates)), "two events of one execution in one call"
        size = sum(
            14 + len(e["Source"].encode()) + len(e["DetailType"].encode()) + len(e["Detail"].encode()) for e in call
        )
        assert size <= MAX_CALL_BYTES


# -- publishing ----------------------------------------------------------------------------------------------


def test_run_with_unpublished_rows_publishes_each_once_in_order_and_marks_them(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=6, events_each=4)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    rows = outbox(db)
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
    assert_in_order_per_execution(db, delivered_ids(delivered))
    assert all(r["published_at"] is not None and r["publish_attempts"] == 1 for r in rows)
    assert all(r["last_error"] is None for r in rows)
    assert_calls_within_limits(client, db)


def test_published_event_carries_billing_source_event_type_and_event_id(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=1, events_each=5)

    relay(db, EventsClient(bus.events)).run(plenty_of_time)

    rows = outbox(db)
    delivered = bus.received()
    assert [e["detail-type"] for e in delivered] == [r["event_type"] for r in rows]
    assert {e["source"] for e in delivered} == {"billing.execution"}
    for event, row in zip(delivered, rows, strict=True):
        assert event["detail"] == {**row["payload"], "event_id": str(row["event_id"]), "outbox_id": row["id"]}
        assert event["detail"]["execution_id"] == str(row["aggregate_id"])


def test_run_again_after_everything_was_published_sends_nothing(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    make_events(db, tenant_id, executions=3, events_each=2)
    client = EventsClient(bus.events)
    relay(db, client).run(plenty_of_time)
    calls_after_first_run = len(client.calls)
    assert len(bus.received()) == 6

    report = relay(db, client).run(plenty_of_time)

    assert (report.claimed, report.published, report.batches) == (0, 0, 0)
    assert len(client.calls) == calls_after_first_run
    assert bus.received() == []


def test_run_with_25_executions_sends_calls_of_10_10_and_5(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    make_events(db, tenant_id, executions=25, events_each=1)
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    assert [len(call) for call in client.calls] == [10, 10, 5]
    assert report.published == 25
    assert len(bus.received()) == 25


def test_run_with_100_kb_events_keeps_every_call_within_256_kb(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    ids = [insert_outbox_row(db, tenant_id, uuid4(), padding=100 * 1024) for _ in range(5)]
    client = EventsClient(bus.events)

    report = relay(db, client).run(plenty_of_time)

    assert [len(call) for call in client.calls] == [2, 2, 1]
    assert_calls_within_limits(client, db)
    assert report.published == 5
    assert sorted(delivered_ids(bus.received())) == ids


def test_run_with_a_batch_smaller_than_the_backlog_drains_it_in_several_batches(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=5, events_each=5)

    report = relay(db, EventsClient(bus.events), batch_size=7).run(plenty_of_time)

    assert report.published == 25
    assert report.batches >= 4
    assert report.unpublished == 0
    delivered = delivered_ids(bus.received())
    assert sorted(delivered) == sorted(by_id(db))
    assert_in_order_per_execution(db, delivered)


# -- failures ------------------------------------------------------------------------------------------------


def test_run_with_partial_failure_keeps_failed_row_and_holds_back_its_execution_until_next_run(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    _, b, _ = make_events(db, tenant_id, executions=3, events_each=3)
    rows = outbox(db)
    b_ids = [r["id"] for r in rows if r["aggregate_id"] == b]
    client = EventsClient(bus.events, fail=FailOnce({b_ids[1]}))

    first = relay(db, client).run(plenty_of_time)

    assert (first.claimed, first.published, first.failed, first.held_back) == (9, 7, 1, 1)
    assert (first.unpublished, first.stop_reason) == (2, StopReason.DRAINED)
    after_first = by_id(db)
    failed, later = after_first[b_ids[1]], after_first[b_ids[2]]
    assert failed["published_at"] is None
    assert failed["publish_attempts"] == 1
    assert failed["last_error"] == "InternalFailure: injected failure"
    assert (later["published_at"], later["publish_attempts"], later["last_error"]) == (None, 0, None)
    assert all(outbox_id(e) != b_ids[2] for call in client.calls for e in call), "sent after its failed predecessor"
    first_delivery = delivered_ids(bus.received())
    assert sorted(first_delivery) == sorted(set(after_first) - {b_ids[1], b_ids[2]})

    second = relay(db, client).run(plenty_of_time)

    assert (second.published, second.failed, second.unpublished) == (2, 0, 0)
    assert delivered_ids(bus.received()) == [b_ids[1], b_ids[2]]
    assert by_id(db)[b_ids[1]]["publish_attempts"] == 2
    assert sorted(client.accepted) == sorted(after_first), "every row accepted exactly once"


def test_run_when_the_put_events_call_fails_records_an_attempt_and_stops(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=15, events_each=1)
    failures = iter([ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "PutEvents")])

    def fail_first_call() -> None:
        if (error := next(failures, None)) is not None:
            raise error

    client = EventsClient(bus.events, before_call=fail_first_call)

    report = relay(db, client).run(plenty_of_time)

    assert report.stop_reason is StopReason.PUBLISHER_UNAVAILABLE
    assert (report.claimed, report.published, report.failed) == (15, 0, 10)
    rows = outbox(db)
    assert [r["publish_attempts"] for r in rows] == [1] * 10 + [0] * 5
    assert all(r["last_error"] == "ThrottlingException: Rate exceeded" for r in rows[:10])
    assert all(r["published_at"] is None for r in rows)

    retry = relay(db, client).run(plenty_of_time)

    assert (retry.published, retry.unpublished, retry.stop_reason) == (15, 0, StopReason.DRAINED)
    assert len(bus.received()) == 15


def test_run_with_oversized_event_fails_it_unsent_then_parks_it_and_holds_its_execution(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    x, y = uuid4(), uuid4()
    too_big = insert_outbox_row(db, tenant_id, x, padding=MAX_CALL_BYTES)
    x_next = insert_outbox_row(db, tenant_id, x)
    y_only = insert_outbox_row(db, tenant_id, y)
    client = EventsClient(bus.events)

    first = relay(db, client, max_attempts=2).run(plenty_of_time)

    assert (first.published, first.failed, first.held_back, first.parked) == (1, 1, 1, 0)
    assert delivered_ids(bus.received()) == [y_only]
    assert [outbox_id(e) for call in client.calls for e in call] == [y_only]
    assert str(by_id(db)[too_big]["last_error"]).startswith("EntryTooLarge: ")

    second = relay(db, client, max_attempts=2).run(plenty_of_time)
    third = relay(db, client, max_attempts=2).run(plenty_of_time)

    assert (second.failed, second.parked) == (1, 1)
    # Parked: no longer claimed or attempted, and its execution's later event still waits behind it.
    assert (third.claimed, third.failed, third.held_back, third.published, third.parked) == (1, 0, 1, 0, 1)
    rows = by_id(db)
    assert rows[too_big]["publish_attempts"] == 2
    assert (rows[x_next]["published_at"], rows[x_next]["publish_attempts"]) == (None, 0)
    assert bus.received() == []


# -- concurrency ---------------------------------------------------------------------------------------------


def _run_two_relays(db_url: str, bus: Bus, fail: Callable[[int], bool]) -> tuple[list[EventsClient], list[RelayReport]]:
    """Two relays on two connections, started together; each one's first PutEvents call waits for the other's,
    so both hold a claimed batch (and its locks) at the same moment."""
    meet = threading.Barrier(2, timeout=30)
    first_call = [True, True]

    def meeting(index: int) -> Callable[[], None]:
        def before_call() -> None:
            if first_call[index]:
                first_call[index] = False
                meet.wait()

        return before_call

    clients = [EventsClient(bus.events, fail=fail, before_call=meeting(i)) for i in range(2)]
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


def test_two_relays_at_once_publish_every_row_exactly_once_in_order_per_execution(
    private_db_url: str, db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=40, events_each=5, seed=7)

    clients, reports = _run_two_relays(private_db_url, bus, fail=lambda _oid: False)

    assert all(report.published > 0 for report in reports), "both relays took part"
    assert all(report.failed == 0 for report in reports)
    # A row held back behind the other relay's batch is left for the next run, never sent early.
    left = [r for r in outbox(db) if r["published_at"] is None]
    assert all(r["publish_attempts"] == 0 for r in left)
    assert len(left) <= sum(report.held_back for report in reports)
    sweep = EventsClient(bus.events)
    relay(db, sweep).run(plenty_of_time)

    accepted = clients[0].accepted + clients[1].accepted + sweep.accepted
    assert len(accepted) == len(set(accepted)) == 200, "a row was published twice, or not at all"
    assert sorted(sweep.accepted) == sorted(r["id"] for r in left)
    delivered = bus.received()
    assert len(delivered) == len({e["detail"]["event_id"] for e in delivered}) == 200
    assert_in_order_per_execution(db, delivered_ids(delivered))
    assert all(r["published_at"] is not None and r["publish_attempts"] == 1 for r in outbox(db))


def test_two_relays_at_once_with_injected_failures_lose_nothing_and_keep_order(
    private_db_url: str, db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=40, events_each=5, seed=11)
    chosen = set(random.Random(3).sample(sorted(by_id(db)), 20))

    clients, _ = _run_two_relays(private_db_url, bus, fail=FailOnce(chosen))
    sweep = EventsClient(bus.events)
    relay(db, sweep).run(plenty_of_time)

    accepted = clients[0].accepted + clients[1].accepted + sweep.accepted
    assert len(accepted) == len(set(accepted)) == 200, "a row was published twice, or not at all"
    delivered = bus.received()
    assert sorted(delivered_ids(delivered)) == sorted(by_id(db))
    assert_in_order_per_execution(db, delivered_ids(delivered))
    rows = outbox(db)
    assert all(r["published_at"] is not None for r in rows)
    rejected = clients[0].rejected + clients[1].rejected
    assert rejected, "failures were injected"
    assert set(rejected) <= chosen
    # A chosen row held back in both relays was first sent by the sweep, which injects no failure.
    assert {r["id"] for r in rows if r["publish_attempts"] == 2} == set(rejected)
    assert {r["publish_attempts"] for r in rows} <= {1, 2}


# -- time budget and lag -------------------------------------------------------------------------------------


def test_run_when_the_time_budget_runs_out_stops_between_calls_and_keeps_what_was_sent(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    make_events(db, tenant_id, executions=25, events_each=1)
    client = EventsClient(bus.events)

    report = relay(db, client).run(lambda: 0.0 if client.calls else 60_000.0)

    assert report.stop_reason is StopReason.TIME_BUDGET
    assert (report.batches, report.claimed, report.published, report.held_back) == (1, 25, 10, 15)
    assert len(client.calls) == 1
    rows = outbox(db)
    assert sum(r["published_at"] is not None for r in rows) == 10
    assert all(r["publish_attempts"] == 0 for r in rows if r["published_at"] is None)

    rest = relay(db, client).run(plenty_of_time)

    assert (rest.published, rest.unpublished) == (15, 0)
    assert sorted(delivered_ids(bus.received())) == [r["id"] for r in rows]


def test_run_with_no_time_left_claims_nothing(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    make_events(db, tenant_id, executions=2, events_each=1)

    report = relay(db, EventsClient(bus.events)).run(lambda: 0.0)

    assert (report.batches, report.claimed, report.stop_reason) == (0, 0, StopReason.TIME_BUDGET)
    assert report.unpublished == 2


def test_run_reports_the_age_of_the_oldest_unpublished_row_as_lag(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    make_events(db, tenant_id, executions=2, events_each=2)
    rows = outbox(db)
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


def _snapshot(conn: Connection) -> list[tuple[Any, ...]]:
    return [(r["id"], r["published_at"], r["publish_attempts"], r["last_error"]) for r in outbox(conn)]


def test_replay_of_one_execution_republishes_its_events_in_order_and_leaves_rows_untouched(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    _, chosen, _ = make_events(db, tenant_id, executions=3, events_each=4)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    before = _snapshot(db)
    originals = [r for r in outbox(db) if r["aggregate_id"] == chosen]

    report = replay(db, EventBridgePublisher(bus.events, names.EVENT_BUS_NAME), execution_id=chosen)

    assert (report.selected, report.published, report.skipped, report.failures) == (4, 4, 0, ())
    delivered = bus.received()
    assert delivered_ids(delivered) == [r["id"] for r in originals]
    assert [e["detail"]["event_id"] for e in delivered] == [str(r["event_id"]) for r in originals]
    assert all(e["detail"]["replayed"] is True for e in delivered)
    assert _snapshot(db) == before


def test_replay_of_a_time_range_republishes_published_events_of_that_range_and_tenant_only(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    other_tenant = uuid4()
    make_events(db, tenant_id, executions=3, events_each=3)
    make_events(db, other_tenant, executions=1, events_each=2)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    [last] = make_events(db, tenant_id, executions=1, events_each=1)  # in range, but not yet published
    rows = outbox(db)
    since: datetime = rows[3]["occurred_at"]
    until: datetime = max(r["occurred_at"] for r in rows) + timedelta(seconds=1)
    before = _snapshot(db)

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
    assert all(by_id(db)[oid]["aggregate_id"] != last for oid in delivered)
    assert _snapshot(db) == before


def test_replay_dry_run_counts_and_sends_nothing(db: Connection, bus: Bus, tenant_id: UUID) -> None:
    [execution] = make_events(db, tenant_id, executions=1, events_each=3)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    client = EventsClient(bus.events)

    report = replay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), execution_id=execution, dry_run=True)

    assert (report.selected, report.published, report.dry_run) == (3, 0, True)
    assert client.calls == []
    assert bus.received() == []


def test_replay_with_failed_copy_skips_later_copies_of_that_execution(
    db: Connection, bus: Bus, tenant_id: UUID
) -> None:
    [execution] = make_events(db, tenant_id, executions=1, events_each=3)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
    ids = [r["id"] for r in outbox(db)]
    client = EventsClient(bus.events, fail=lambda oid: oid == ids[1])

    report = replay(db, EventBridgePublisher(client, names.EVENT_BUS_NAME), execution_id=execution)

    assert (report.selected, report.published, report.skipped, report.complete) == (3, 1, 1, False)
    assert [f.outbox_id for f in report.failures] == [ids[1]]
    assert delivered_ids(bus.received()) == [ids[0]]


def test_replay_command_by_execution_publishes_copies_and_prints_the_report(
    db: Connection,
    bus: Bus,
    tenant_id: UUID,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    [execution] = make_events(db, tenant_id, executions=1, events_each=2)
    relay(db, EventsClient(bus.events)).run(plenty_of_time)
    bus.received()
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
    db: Connection,
    bus: Bus,
    tenant_id: UUID,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_events(db, tenant_id, executions=2, events_each=3)
    monkeypatch.setenv("DATABASE_URL", private_db_url)
    monkeypatch.setenv(names.ENV_EVENT_BUS_NAME, names.EVENT_BUS_NAME)
    handler = _load_handler()
    try:
        result = handler.lambda_handler({}, FakeLambdaContext())
    finally:
        handler.CONNECTIONS.discard()

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
