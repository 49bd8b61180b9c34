"""The outbox relay against a bare put_events loop: events/s to the same endpoint in the same run, and the lag.

For each of two endpoints, in one run:

1. Seed a backlog of unpublished outbox rows through the real tables: full lifecycles (create -> pending ->
   processing -> completed, four transactions, each writing its outbox row) by ExecutionRepository as billing_app,
   on SEED_THREADS connections at once, so the rows of concurrent executions interleave as a load leaves them;
   then VACUUM (ANALYZE) of the outbox, as autovacuum would do within the minute.
2. Baseline: a bare boto3 `put_events` loop over the same entries the relay would send (built from the seeded rows
   by billing.outbox.events), 10 entries a call (EventBridge's limit, the relay's call size), on the client the
   relay uses (billing.outbox.eventbridge.build_events_client: same timeouts, retries), one call after another.
3. The real relay (billing.outbox.relay.OutboxRelay as billing_worker, through EventBridgePublisher) drains the
   backlog, run after run as its schedule would start them: events/s, the ratio to the bare loop, and the lag
   (from the first run's start until nothing is unpublished). Every row published once: checked afterwards.

The endpoints, each in a process of its own (as the local stack's functions call moto from their containers):

- "fast": a tiny threaded HTTP server answering every PutEvents with
  `{"FailedEntryCount": 0, "Entries": [{"EventId": ...}, ...]}`: a test double of the wire endpoint (the SDK is the
  real one), cheap enough that the bench measures the client side, not the bus. The goal applies here:
  relay >= 0.7x the bare loop, and the backlog drained within a minute.
- "moto": moto's server with the bus and the tap rule (bus -> SQS) that the local stack (`make serve`,
  billing.local.stack) creates. Reported for comparison: moto's bus is the bottleneck there, for both sides.

    .venv/bin/python bench/relay_throughput.py
    RELAY_BENCH_EVENTS=4000 RELAY_BENCH_MOTO_EVENTS=400 .venv/bin/python bench/relay_throughput.py
    .venv/bin/python bench/relay_throughput.py --profile     # cProfile of the relay's drain (fast endpoint)
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing
import os
import pstats
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection as Pipe
from typing import Any, Final

from billing import resource_names as names
from billing.db.connection import connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole, login_url
from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.domain.workflow import WorkflowWriteContext
from billing.local.containers import LOCAL_REGION
from billing.local.embedded_postgres import database_url, fresh_database
from billing.local.execution_seed import vacuum_analyze
from billing.local.stack import EVENTS_TAP_QUEUE_NAME, EVENTS_TAP_RULE_NAME
from billing.outbox.eventbridge import EventBridgePublisher, build_events_client
from billing.outbox.events import OutboundEvent, detail_sql, event_with_detail
from billing.outbox.relay import OutboxRelay, StopReason

FAST_EVENTS: Final = int(os.environ.get("RELAY_BENCH_EVENTS", "20000"))
# moto's bus publishes a few hundred events/s at best on this kind of machine: a smaller backlog says as much.
MOTO_EVENTS: Final = int(os.environ.get("RELAY_BENCH_MOTO_EVENTS", "1000"))
SEED_THREADS: Final = int(os.environ.get("RELAY_BENCH_SEED_THREADS", "8"))
RATIO_GOAL: Final = 0.7
LAG_GOAL_SECONDS: Final = 60.0
CALL_ENTRIES: Final = 10
# A scheduled run's budget: the function's 60 s timeout less the handler's 10 s safety margin.
RUN_BUDGET_MS: Final = 50_000.0
DATABASE: Final = "billing_bench_relay"
EVENTS_PER_LIFECYCLE: Final = 4
CONTEXT = WorkflowWriteContext.service_default()
REQUEST = ExecutionRequest(
    entity_contract_id="bench-contract",
    plan_contract_id="bench-plan",
    amount=1999,
    currency="EUR",
    payment_rail=PaymentRail.CARD,
)
# moto accepts any credentials; fixed dummy ones keep real ones out of the bench's AWS calls.
_DUMMY_AWS_ENVIRONMENT: Final = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": LOCAL_REGION,
}


# --- endpoints, each in a process of its own ---------------------------------------------------------------------


class _PutEventsDouble(BaseHTTPRequestHandler):
    """PutEvents on the wire: every entry accepted, an EventId each (keep-alive, as the SDK's pool expects)."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, the body waits for the client's delayed ACK.
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        entries = json.loads(body).get("Entries", [])
        answer = json.dumps(
            {"FailedEntryCount": 0, "Entries": [{"EventId": str(uuid.uuid4())} for _ in entries]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve_fast_endpoint(pipe: Pipe) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PutEventsDouble)
    server.daemon_threads = True
    pipe.send(f"http://127.0.0.1:{server.server_address[1]}")
    server.serve_forever()


def _serve_moto(pipe: Pipe) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    pipe.send(f"http://{host}:{port}")
    threading.Event().wait()  # serves until the bench terminates this process


@contextmanager
def endpoint_process(target: Callable[[Pipe], None]) -> Iterator[str]:
    """`target` serving in a child process; its URL."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=target, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(60):
            raise RuntimeError(f"{target.__name__} did not start")
        yield str(parent.recv())
    finally:
        process.terminate()
        process.join(10)


def create_local_bus(endpoint_url: str) -> None:
    """The bus and the tap rule (every billing event -> an SQS queue) as billing.local.stack creates them."""
    import boto3

    events = boto3.client("events", region_name=LOCAL_REGION, endpoint_url=endpoint_url)
    sqs = boto3.client("sqs", region_name=LOCAL_REGION, endpoint_url=endpoint_url)
    events.create_event_bus(Name=names.EVENT_BUS_NAME)
    tap_url = sqs.create_queue(QueueName=EVENTS_TAP_QUEUE_NAME)["QueueUrl"]
    tap_arn = sqs.get_queue_attributes(QueueUrl=tap_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name=EVENTS_TAP_RULE_NAME,
        EventBusName=names.EVENT_BUS_NAME,
        EventPattern=json.dumps({"source": [names.EVENT_SOURCE]}),
    )
    events.put_targets(
        Rule=EVENTS_TAP_RULE_NAME, EventBusName=names.EVENT_BUS_NAME, Targets=[{"Id": "tap", "Arn": tap_arn}]
    )


@contextmanager
def aws_endpoint(endpoint_url: str) -> Iterator[None]:
    """AWS_ENDPOINT_URL (what the local stack sets for its functions) and dummy credentials, restored after."""
    settings = {**_DUMMY_AWS_ENVIRONMENT, "AWS_ENDPOINT_URL": endpoint_url}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- the backlog ----------------------------------------------------------------------------------------------


def seed_backlog(app_url: str, events: int) -> float:
    """At least `events` unpublished outbox rows from full lifecycles on SEED_THREADS connections; seconds taken."""
    lifecycles = -(-events // EVENTS_PER_LIFECYCLE)
    per_thread = [lifecycles // SEED_THREADS + (1 if n < lifecycles % SEED_THREADS else 0) for n in range(SEED_THREADS)]
    failures: list[BaseException] = []

    def worker(count: int) -> None:
        try:
            with connect(app_url, application_name="bench-relay-seed") as conn:
                repository = ExecutionRepository(conn)
                tenant_id = uuid.uuid4()
                for _ in range(count):
                    execution, _ = repository.insert_idempotent(
                        tenant_id,
                        REQUEST,
                        idempotency_key=f"bench-{uuid.uuid4()}",
                        payment_provider="sandbox",
                        correlation_id="bench",
                        context=CONTEXT,
                    )
                    repository.mark_pending(tenant_id, execution.id, CONTEXT)
                    repository.mark_processing(tenant_id, execution.id, CONTEXT)
                    repository.mark_completed(
                        tenant_id, execution.id, CONTEXT, provider_reference=f"ch_{execution.id.hex}"
                    )
        except BaseException as error:  # reported below: a half-seeded backlog measures nothing
            failures.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(count,)) for count in per_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return time.perf_counter() - started


def pending_events(admin_url: str) -> list[OutboundEvent]:
    """The entries the relay will send for the backlog, in outbox id order."""
    with connect(admin_url, application_name="bench-relay") as conn:
        rows = conn.execute(
            f"select o.*, {detail_sql('o')} as detail from billing.billing_outbox o"
            " where o.published_at is null order by o.id"
        ).fetchall()
    return [event_with_detail(row, row["detail"]) for row in rows]


def backlog_state(admin_url: str) -> tuple[int, int, int]:
    """(unpublished, published, rows published more than once) in the live outbox."""
    with connect(admin_url, application_name="bench-relay") as conn:
        row = conn.execute(
            "select count(*) filter (where published_at is null) as unpublished,"
            " count(*) filter (where published_at is not null) as published,"
            " count(*) filter (where publish_attempts > 1) as repeated"
            " from billing.billing_outbox"
        ).fetchone()
    assert row is not None
    return int(row["unpublished"]), int(row["published"]), int(row["repeated"])


# --- the two sides ---------------------------------------------------------------------------------------------


def entries_of(events: Sequence[OutboundEvent]) -> list[dict[str, Any]]:
    """The PutEvents entries EventBridgePublisher builds for `events`."""
    return [
        {
            "Source": event.source,
            "DetailType": event.detail_type,
            "Detail": event.detail,
            "Time": event.time,
            "EventBusName": names.EVENT_BUS_NAME,
        }
        for event in events
    ]


def bare_loop(events: Sequence[OutboundEvent]) -> float:
    """Events/s of put_events calls of CALL_ENTRIES entries, one after another, on the relay's client."""
    client = build_events_client()
    calls = [entries_of(events[i : i + CALL_ENTRIES]) for i in range(0, len(events), CALL_ENTRIES)]
    client.put_events(Entries=calls[0])  # warm-up: the connection and the SDK's lazy loading
    started = time.perf_counter()
    sent = 0
    for entries in calls:
        answer = client.put_events(Entries=entries)
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"the endpoint refused entries: {answer}")
        sent += len(entries)
    return sent / (time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Drain:
    events_per_second: float
    lag_seconds: float
    runs: int
    batches: int
    published: int


def run_budget(started: float) -> Callable[[], float]:
    """A scheduled run's time left, in ms, for a run started at `started` (perf_counter)."""
    return lambda: RUN_BUDGET_MS - (time.perf_counter() - started) * 1000


def drain(worker_url: str, *, profiler: cProfile.Profile | None = None) -> Drain:
    """The real relay, run after run (as its schedule starts them) until the outbox is drained."""
    publisher = EventBridgePublisher(build_events_client(), names.EVENT_BUS_NAME)
    runs = batches = published = 0
    with connect(worker_url, application_name="bench-relay") as conn:
        relay = OutboxRelay(conn, publisher)
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        while True:
            report = relay.run(run_budget(time.perf_counter()))
            runs += 1
            batches += report.batches
            published += report.published
            if report.stop_reason is StopReason.PUBLISHER_UNAVAILABLE:
                raise RuntimeError(f"the endpoint failed the relay's calls: {report}")
            if report.stop_reason is StopReason.DRAINED and report.unpublished == 0:
                break
        if profiler is not None:
            profiler.disable()
        lag = time.perf_counter() - started
    return Drain(published / lag, lag, runs, batches, published)


def warm_up_relay(worker_url: str) -> None:
    """One call's worth of the backlog through the relay first: the SDK's lazy loading, the connection."""
    publisher = EventBridgePublisher(build_events_client(), names.EVENT_BUS_NAME)
    with connect(worker_url, application_name="bench-relay") as conn:
        OutboxRelay(conn, publisher, batch_size=CALL_ENTRIES).run(lambda: 0.0)


@dataclass(frozen=True, slots=True)
class Measured:
    endpoint: str
    backlog: int
    seed_seconds: float
    bare: float
    relay: Drain
    repeated: int


def measure(label: str, endpoint_url: str, admin_url: str, events: int, profiler: cProfile.Profile | None) -> Measured:
    seed_seconds = seed_backlog(login_url(admin_url, DatabaseRole.APP), events)
    # Statistics as autovacuum keeps them: a burst of inserts is analyzed within a minute.
    vacuum_analyze(admin_url, ("billing_outbox",))
    backlog = pending_events(admin_url)
    worker_url = login_url(admin_url, DatabaseRole.WORKER)
    with aws_endpoint(endpoint_url):
        warm_up_relay(worker_url)
        bare = bare_loop(backlog)
        relay = drain(worker_url, profiler=profiler)
    unpublished, _, repeated = backlog_state(admin_url)
    if unpublished or relay.published != len(backlog):
        raise RuntimeError(f"{label}: {relay.published} published of {len(backlog)}, {unpublished} left")
    return Measured(label, len(backlog), seed_seconds, bare, relay, repeated)


def print_profile(profiler: cProfile.Profile) -> None:
    print("where the relay's drain goes (cProfile, fast endpoint; cumulative s, top 25):")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(25)


def print_row(m: Measured) -> None:
    print(
        f"  {m.endpoint:<27} backlog {m.backlog:>6,} (seeded in {m.seed_seconds:5.1f} s)  bare {m.bare:8.1f} ev/s"
        f"  relay {m.relay.events_per_second:8.1f} ev/s  ratio {m.relay.events_per_second / m.bare:.2f}  "
        f"lag (drain) {m.relay.lag_seconds:6.1f} s  runs {m.relay.runs}  batches {m.relay.batches}  "
        f"published twice {m.repeated}",
        flush=True,
    )


def print_goal(fast: Measured) -> None:
    ratio = fast.relay.events_per_second / fast.bare
    one, five, _ = os.getloadavg()
    print(
        f"goal (fast endpoint, the bus not the bottleneck): relay >= {RATIO_GOAL}x the bare loop -> "
        f"{'met' if ratio >= RATIO_GOAL else 'NOT met'} ({ratio:.2f}); backlog of {fast.backlog:,} drained within "
        f"{LAG_GOAL_SECONDS:.0f} s -> {'met' if fast.relay.lag_seconds <= LAG_GOAL_SECONDS else 'NOT met'} "
        f"({fast.relay.lag_seconds:.1f} s); load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} "
        f"cores",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true", help="profile the relay's drain to the fast endpoint")
    arguments = parser.parse_args()
    admin_url = fresh_database(database_url(), DATABASE)
    profiler = cProfile.Profile() if arguments.profile else None
    print(
        f"outbox relay vs a bare put_events loop ({CALL_ENTRIES} entries a call, same entries, same client, same "
        f"endpoint, same run); backlog from full lifecycles on {SEED_THREADS} connections:",
        flush=True,
    )
    try:
        # Each row as soon as it is measured: the moto phase is the long one, and the goal is the fast one's.
        with endpoint_process(_serve_fast_endpoint) as fast_url:
            fast = measure("fast (PutEvents double)", fast_url, admin_url, FAST_EVENTS, profiler)
        print_row(fast)
        if MOTO_EVENTS:
            with endpoint_process(_serve_moto) as moto_url:
                create_local_bus(moto_url)
                print_row(measure("moto server (local stack)", moto_url, admin_url, MOTO_EVENTS, None))
    finally:
        import psycopg

        with psycopg.connect(database_url(), autocommit=True) as server:
            server.execute(f'drop database if exists "{DATABASE}" with (force)')
    print_goal(fast)
    if profiler is not None:
        print_profile(profiler)


if __name__ == "__main__":
    main()
