"""Risk assessment latency with a million attempts in the velocity table, and the submission path with risk on/off.

1. Seeds RISK_BENCH_ATTEMPTS (default 1,000,000) attempts, with their executions, into billing.risk_attempts across
   TENANTS tenants; the benchmarked tenant holds BENCH_TENANT_SHARE of them. Recorded over the last 48 hours, so
   the 1 h and 24 h windows hold real rows: per tenant thousands of customers with a few cards each, a few hot
   customer+card pairs with hundreds of attempts, a third with a device and an IP digest, a tenth declined.
   Then VACUUM (ANALYZE) and a checkpoint, so the measurement starts from a table as autovacuum keeps it.
2. Latency: RiskGate.assess as billing_app, one at a time, on fresh executions of the benchmarked tenant: a quarter
   on the hot keys, half on seeded keys (with and without device/IP), a quarter on new keys. Each one is the whole
   assessment: advisory locks, the attempt row, every counter, the rules, the assessment row and its event, one
   transaction. Baseline in the same run, on the same executions and connection: the repository's mark_pending
   just before (one transition: one statement with its event, outbox and workflow rows, one transaction).
3. Throughput: ExecutionDriver.drive (created -> pending -> [risk and 3-D Secure] -> processing -> sandbox ->
   completed) on THREADS connections, each with its sandbox connection kept between charges (as a warm function
   container keeps it), risk on and off interleaved (on, off, on, off), BENCH_SECONDS per side.

    make bench                                            # embedded PostgreSQL
    DATABASE_URL=... make bench                           # any other server
    RISK_BENCH_ATTEMPTS=200000 BENCH_SECONDS=5 .venv/bin/python bench/risk_assessment.py
    .venv/bin/python bench/risk_assessment.py --reuse     # measure again on the database seeded last time
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import threading
import time
from typing import Final
from uuid import UUID, uuid4

import psycopg
from psycopg.conninfo import make_conninfo

from billing import resource_names as names
from billing.authentication.flow import ThreeDSecure, ThreeDSecureSettings, sandbox_tokens
from billing.db.connection import connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.migrations import apply_migrations
from billing.db.roles import DatabaseRole, login_url
from billing.domain.execution import Execution, ExecutionRequest, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.local.embedded_postgres import database_url, fresh_database
from billing.rails.sandbox import KeptConnections, SandboxProvider
from billing.risk.gate import NO_SIGNALS, ClientSignals, RiskGate
from billing.risk.reviews import ReviewStore
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest
from billing.services.pre_submission import PreSubmission

ATTEMPTS: Final = int(os.environ.get("RISK_BENCH_ATTEMPTS", "1000000"))
SECONDS: Final = float(os.environ.get("BENCH_SECONDS", "5"))
TENANTS: Final = 50
BENCH_TENANT_SHARE: Final = 0.3
DATABASE: Final = "billing_bench_risk"
SAMPLES: Final = 2000
WARM_UP: Final = 50
THREADS: Final = 4
SLICES_PER_SIDE: Final = 2
BATCH: Final = 20_000
SEED_CONNECTIONS: Final = max(1, min(4, os.cpu_count() or 1))
# Per tenant: customers with CARDS_PER_CUSTOMER cards each, HOT pairs taking one row in HOT_EVERY, and the device
# and IP pools a third of the rows draw from.
CUSTOMERS: Final = 20_000
CARDS_PER_CUSTOMER: Final = 5
HOT: Final = 10
HOT_EVERY: Final = 50
DEVICES: Final = 30_000
IPS: Final = 10_000
CONTEXT: Final = WorkflowWriteContext.service_default()
BENCH_TENANT: Final = UUID("00000000-0000-4000-8000-00000000be4c")

# One statement per batch, server-side (nothing crosses the wire): executions born created, each with its created
# event and outbox row (every guard and commit-time check runs), and their attempts. Keys follow the engine's own
# shapes: a token's instrument key is "token:<customer>:<token>", device and IP keys are the digests
# billing.risk.velocity makes of "<tenant>:device:<value>" and "<tenant>:ip:<value>".
_SEED = """
with src as (
    select i,
           case when i %% %(hot_every)s = 0 then 'hot-customer-' || (i / %(hot_every)s) %% %(hot)s
                else 'customer-' || i %% %(customers)s end as customer,
           case when i %% %(hot_every)s = 0 then 'tok_hot_' || (i / %(hot_every)s) %% %(hot)s
                else 'tok_seed_' || (i / %(customers)s) %% %(cards)s end as token,
           case when i %% %(hot_every)s = 0 then 'hot-device-' || (i / %(hot_every)s) %% %(hot)s
                else 'device-' || i %% %(devices)s end as device,
           case when i %% %(hot_every)s = 0 then 'hot-ip-' || (i / %(hot_every)s) %% %(hot)s
                else 'ip-' || i %% %(ips)s end as ip
      from generate_series(%(first)s::bigint, %(last)s::bigint) i
), made as (
    insert into billing.billing_executions (
        tenant_id, id, entity_contract_id, plan_contract_id, amount, currency, payment_rail, payment_provider,
        payment_instrument_id, idempotency_key, request_fingerprint, metadata
    )
    select %(tenant)s, gen_random_uuid(), s.customer, 'plan', 500 + s.i %% 5000, 'EUR', 'card', 'sandbox', s.token,
           'seed-' || s.i, encode(sha256(convert_to('seed-' || s.i, 'UTF8')), 'hex'), '{}'::jsonb
      from src s
    returning *
), events as (
    select m.tenant_id, m.id, m.created_at, row(m.*)::billing.billing_executions as execution,
           gen_random_uuid() as event_id
      from made m
), created as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select e.tenant_id, e.event_id, e.id, 'billing.execution.created', null, 'created', '{}'::jsonb, 'bench', null,
           e.created_at
      from events e
), announced as (
    insert into billing.billing_outbox (
        tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at
    )
    select e.tenant_id, e.event_id, e.id, 'billing.execution.created',
           billing.execution_event_payload(e.execution, e.event_id, 'billing.execution.created', null, null,
                                           e.created_at),
           null, e.created_at
      from events e
)
insert into billing.risk_attempts (
    tenant_id, execution_id, recorded_at, instrument_key, customer_key, device_key, ip_key, amount, currency, rail,
    initiator, declined
)
select m.tenant_id, m.id, now() - random() * interval '48 hours',
       'token:' || s.customer || ':' || s.token, s.customer,
       case when s.i %% 3 = 0 then encode(sha256(convert_to(%(tenant)s::text || ':device:' || s.device, 'UTF8')),
                                         'hex') end,
       case when s.i %% 3 = 0 then encode(sha256(convert_to(%(tenant)s::text || ':ip:' || s.ip, 'UTF8')), 'hex') end,
       m.amount, 'EUR', 'card', case when s.i %% 7 = 0 then 'merchant' else 'customer' end, s.i %% 10 = 0
  from made m join src s on m.idempotency_key = 'seed-' || s.i
"""


class _NoRetries:
    def schedule(self, request: RetryRequest) -> None:
        raise AssertionError("the bench's charges never need a retry")


class _Quiet:
    def execution_result(self, execution: Execution, *, duration_ms: float, correlation_id: str | None) -> None:
        pass

    def rail_call(
        self, execution: Execution, *, outcome: str, attempt: int, duration_ms: float, correlation_id: str | None
    ) -> None:
        pass


def _tenants() -> list[tuple[UUID, int]]:
    """Each tenant and its number of attempts: the benchmarked one BENCH_TENANT_SHARE, the rest evenly."""
    mine = int(ATTEMPTS * BENCH_TENANT_SHARE)
    others = [UUID(int=BENCH_TENANT.int + n) for n in range(1, TENANTS)]
    each, extra = divmod(ATTEMPTS - mine, len(others))
    return [(BENCH_TENANT, mine)] + [(t, each + (1 if n < extra else 0)) for n, t in enumerate(others)]


def seed(admin_url: str) -> float:
    """Seeds the attempts as the database's admin, a batch per transaction on one connection per core (row-level
    security still scoped to each batch's tenant), then vacuums; the seconds it took."""
    started = time.perf_counter()
    keys = {"hot_every": HOT_EVERY, "hot": HOT, "customers": CUSTOMERS, "cards": CARDS_PER_CUSTOMER,
            "devices": DEVICES, "ips": IPS}  # fmt: skip
    batches = queue.SimpleQueue[tuple[UUID, int, int]]()
    for tenant, count in _tenants():
        for first in range(1, count + 1, BATCH):
            batches.put((tenant, first, min(count, first + BATCH - 1)))
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with connect(admin_url, application_name="bench-risk-seed") as conn:
                while True:
                    try:
                        tenant, first, last = batches.get_nowait()
                    except queue.Empty:
                        return
                    with conn.transaction():
                        # No statement timeout (a batch is far bigger than any request); no JIT for a one-off.
                        conn.execute("select set_config('billing.tenant_id', %s, true), "
                                     "set_config('billing.scope', 'tenant', true), set_config('jit', 'off', true)",
                                     [str(tenant)])  # fmt: skip
                        conn.execute(_SEED, {**keys, "tenant": tenant, "first": first, "last": last})
        except BaseException as error:  # reported by the main thread: a half-seeded table measures nothing
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(SEED_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    # As a table autovacuum keeps looks: statistics, and the visibility map the index-only scans read. Then the
    # seed's dirty pages go to disk now, not during the measurement (CHECKPOINT needs a superuser or
    # pg_checkpoint: elsewhere the server's own checkpoints do it).
    with connect(admin_url, application_name="bench-risk-seed") as conn:  # autocommit: VACUUM
        conn.execute("vacuum (analyze) billing.risk_attempts")
        for table in ("billing_executions", "billing_execution_events", "billing_outbox"):
            conn.execute(f"analyze billing.{table}")
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
            conn.execute("checkpoint")
    return time.perf_counter() - started


def _request(instrument: str, customer: str, amount: int = 1500) -> ExecutionRequest:
    return ExecutionRequest(
        entity_contract_id=customer, plan_contract_id="plan", amount=amount, currency="EUR",
        payment_rail=PaymentRail.CARD, payment_instrument_id=instrument,
    )  # fmt: skip


def _sample_keys(n: int) -> tuple[ExecutionRequest, ClientSignals]:
    """Sample n's charge: a quarter on hot keys, half on seeded keys (with and without signals), a quarter new."""
    match n % 4:
        case 0:
            k = n // 4 % HOT
            return _request(f"tok_hot_{k}", f"hot-customer-{k}"), ClientSignals(f"hot-device-{k}", f"hot-ip-{k}")
        case 1:
            c = n % CUSTOMERS
            signals = ClientSignals(f"device-{n % DEVICES}", f"ip-{n % IPS}")
            return _request(f"tok_seed_{n % CARDS_PER_CUSTOMER}", f"customer-{c}"), signals
        case 2:
            return _request(f"tok_seed_{n % CARDS_PER_CUSTOMER}", f"customer-{n % CUSTOMERS}"), NO_SIGNALS
        case _:
            return _request(f"tok_new_{n}", f"new-customer-{n}"), ClientSignals(f"new-device-{n}", f"new-ip-{n}")


# _sample_keys's classes, by n % 4.
SAMPLE_CLASSES: Final = ("hot keys", "seeded keys with device and IP", "seeded keys without", "new keys")


def latency(app_url: str) -> tuple[list[float], list[float], list[int]]:
    """Seconds per RiskGate.assess and per baseline mark_pending, SAMPLES each after WARM_UP unrecorded, and each
    sample's class (an index of SAMPLE_CLASSES)."""
    assessed: list[float] = []
    baseline: list[float] = []
    classes: list[int] = []
    with connect(app_url, application_name="bench-risk") as conn:
        repository, gate = ExecutionRepository(conn), RiskGate(conn)
        for n in range(WARM_UP + SAMPLES):
            request, signals = _sample_keys(n)
            execution, _ = repository.insert_idempotent(
                BENCH_TENANT, request, idempotency_key=f"bench-{uuid4()}", payment_provider="sandbox",
                correlation_id="bench", context=CONTEXT,
            )  # fmt: skip
            # The baseline: the transition that precedes every assessment (one statement: the state change, its
            # event, outbox and workflow rows), on the same execution and connection.
            started = time.perf_counter()
            pending = repository.mark_pending(BENCH_TENANT, execution.id, CONTEXT, correlation_id="bench")
            transition = time.perf_counter() - started
            started = time.perf_counter()
            gate.assess(pending, signals, context=CONTEXT, correlation_id="bench")
            if n >= WARM_UP:
                assessed.append(time.perf_counter() - started)
                baseline.append(transition)
                classes.append(n % 4)
    return assessed, baseline, classes


def throughput(app_url: str, risk_on: bool, seconds: float, run: int) -> tuple[int, float]:
    """Executions driven to completed on THREADS connections in about `seconds`, and the seconds it took."""
    stop = threading.Event()
    counts = [0] * THREADS
    barrier = threading.Barrier(THREADS + 1)

    def worker(index: int) -> None:
        # A container each: its billing connection, and the sandbox's connection kept between charges as the
        # functions keep it (billing.providers.directory). A fresh sandbox connection per call would add the same
        # few milliseconds to both sides and flatter the ratio. No simulated latency: the engine's cost only.
        sandbox = KeptConnections(app_url)
        provider = SandboxProvider(sandbox)
        with connect(app_url, application_name="bench-risk") as conn, contextlib.closing(sandbox):
            repository = ExecutionRepository(conn)
            checks = None
            if risk_on:
                settings = ThreeDSecureSettings(names.DEFAULT_PUBLIC_API_URL)
                three_ds = ThreeDSecure(conn, settings, sandbox_tokens=sandbox_tokens(conn))
                checks = PreSubmission(RiskGate(conn), three_ds, ReviewStore(conn))
            driver = ExecutionDriver(repository, {"sandbox": provider}, _NoRetries(), _Quiet(), pre_submission=checks)
            n = 0

            def one() -> None:
                nonlocal n
                n += 1
                # A card and customer of its own per charge (no velocity rule fires) and below EUR 30: the charge
                # goes through on the low-value exemption, which risk on records as the real path does.
                request = _request(f"tok_bench_{run}_{index}_{n}", f"bench-customer-{run}-{index}-{n}")
                execution, _ = repository.insert_idempotent(
                    BENCH_TENANT, request, idempotency_key=f"bench-{uuid4()}", payment_provider="sandbox",
                    correlation_id="bench", context=CONTEXT,
                )  # fmt: skip
                done = driver.drive(execution, correlation_id="bench", context=CONTEXT)
                assert done.status is ExecutionStatus.COMPLETED, done

            one()  # warm-up
            barrier.wait()
            while not stop.is_set():
                one()
                counts[index] += 1

    def guarded(index: int) -> None:
        try:
            worker(index)
        except BaseException as error:  # a failed charge ends the run: a figure without it would flatter
            failures.append(error)
            barrier.abort()
            stop.set()

    failures: list[BaseException] = []
    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
        started = time.perf_counter()
        time.sleep(seconds)  # the measurement window, not a wait for a condition
        stop.set()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(counts), time.perf_counter() - started


def _at(ordered: list[float], fraction: float) -> float:
    """The sample at `fraction` (nearest rank), in ms."""
    return ordered[min(len(ordered) - 1, max(0, round(len(ordered) * fraction) - 1))] * 1000


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    return (
        f"p50 {_at(ordered, 0.5):6.2f} ms   p95 {_at(ordered, 0.95):6.2f} ms   p99 {_at(ordered, 0.99):6.2f} ms   "
        f"max {ordered[-1] * 1000:6.2f} ms"
    )


def _met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def _seeded(server_url: str) -> str | None:
    """The admin URL of an earlier run's database if it holds at least ATTEMPTS attempts (pending migrations
    applied), else None."""
    url = make_conninfo(server_url, dbname=DATABASE)
    try:
        with connect(url) as conn:
            row = conn.execute("select count(*) as n from billing.risk_attempts").fetchone()
            if row is None or row["n"] < ATTEMPTS:
                return None
            apply_migrations(conn)
    except psycopg.Error:
        return None
    return url


def main() -> None:
    run_started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reuse", action="store_true", help="measure on the database an earlier run seeded")
    args = parser.parse_args()
    admin_url = _seeded(database_url()) if args.reuse else None
    if admin_url is None:
        admin_url = fresh_database(database_url(), DATABASE)
        took = seed(admin_url)
        how = f"seeded with their executions and vacuumed in {took:.0f} s"
    else:
        how = "seeded by an earlier run (--reuse), migrations applied again"
    app_url = login_url(admin_url, DatabaseRole.APP)
    mine = _tenants()[0][1]
    print(f"risk assessment: {ATTEMPTS:,} attempts in billing.risk_attempts ({TENANTS} tenants, {mine:,} in the "
          f"benchmarked one, over 48 h), {how}")  # fmt: skip
    assessed, baseline, classes = latency(app_url)
    print(f"  RiskGate.assess, {SAMPLES} samples (1/4 hot keys, 1/2 seeded, 1/4 new):  {_summary(assessed)}")
    for index, name in enumerate(SAMPLE_CLASSES):
        of_class = [seconds for seconds, sample_class in zip(assessed, classes, strict=True) if sample_class == index]
        print(f"    {name + ':':<33} {_summary(of_class)}")
    print(f"  baseline mark_pending (one transition), same execution and connection: {_summary(baseline)}")
    p99, base_p99 = _at(sorted(assessed), 0.99), _at(sorted(baseline), 0.99)
    p50_ratio = _at(sorted(assessed), 0.5) / _at(sorted(baseline), 0.5)
    print(f"  ratio assess / mark_pending: p50 {p50_ratio:.2f}  p99 {p99 / base_p99:.2f}")
    print(f"  goal p99 <= 5 ms -> {_met(p99 <= 5)} ({p99:.2f} ms)")
    seconds = SECONDS / SLICES_PER_SIDE
    done = {True: 0, False: 0}
    elapsed = {True: 0.0, False: 0.0}
    for run in range(SLICES_PER_SIDE):
        for risk_on in (True, False):
            count, took = throughput(app_url, risk_on, seconds, 2 * run + int(not risk_on))
            done[risk_on] += count
            elapsed[risk_on] += took
    on, off = done[True] / elapsed[True], done[False] / elapsed[False]
    print(f"submission path (ExecutionDriver.drive to completed at the sandbox), {THREADS} connections, "
          f"{SECONDS:.0f} s per side in {SLICES_PER_SIDE} interleaved slices each")  # fmt: skip
    print(f"  risk on {on:7.1f} exec/s   risk off {off:7.1f} exec/s   ratio {on / off:.2f}")
    print(f"  goal on >= 0.8 x off -> {_met(on / off >= 0.8)} ({on / off:.2f})")
    print(f"whole run, migrations included: {time.perf_counter() - run_started:.0f} s")


if __name__ == "__main__":
    main()
