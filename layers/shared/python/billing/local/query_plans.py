"""The engine's hot queries, run through the engine's own code, and what their plans are (dev-only code).

One catalogue for bench/query_plans.py (latency and EXPLAIN (ANALYZE, BUFFERS) at a million executions) and
tests/integration/test_query_plans.py (no sequential scan on the big tables): each entry calls the repository or
query function the engine calls, with parameters drawn from the seeded tables, so both follow the code. A plan is
read by recording the statements a call sends (Recorder) and replaying them with every data statement explained,
scope statements as they were, in a transaction that is rolled back (claims write leases). What the plans of
functions hide (a SECURITY DEFINER lookup, the velocity counter's PL/pgSQL) the table access counters of the
transaction show: pg_stat_xact_user_tables counts every sequential scan, wherever it ran.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, cast
from uuid import UUID, uuid4

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionListQuery, ExecutionRepository
from billing.db.reconciliation_queries import (
    AWAITING_SETTLEMENT,
    RETIRE_STEP,
    STUCK_PROCESSING,
    Cursor,
    Lease,
    SweepSql,
    retire_stale_schedules_step,
)
from billing.db.reconciliation_queries import claim as claim_executions
from billing.db.reversal_repository import ReversalRepository
from billing.db.roles import DatabaseRole
from billing.db.settlement_queries import PostgresExecutionLookup, providers_in_period
from billing.db.tenancy import apply_timeouts, system_transaction
from billing.db.webhook_inbox import WebhookInbox
from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.domain.reversals import REFUND_KINDS
from billing.domain.status import ExecutionStatus
from billing.outbox import relay
from billing.outbox.events import OutboundEvent, PublishResult
from billing.rails.ports import ChargeInitiator
from billing.risk.velocity import AttemptKeys, VelocityCounter
from billing.services.reconciliation import ReconcileConfig

# The tables a hot query must never scan whole.
BIG_TABLES: Final = ("billing_executions", "billing_execution_events", "billing_outbox")


class Kind(StrEnum):
    """Where a query runs: in a request (an API or webhook call waits on it), in a worker's claim or run (per
    minute), or in a batch (a settlement file: thousands of rows per statement, judged per row)."""

    REQUEST = "request"
    WORKER = "worker"
    BATCH = "batch"


@dataclass(frozen=True, slots=True)
class SeededExecution:
    tenant_id: UUID
    id: UUID
    idempotency_key: str
    provider: str
    provider_reference: str | None
    customer: str
    instrument: str
    amount: int
    currency: str
    rail: str


@dataclass(frozen=True, slots=True)
class Sample:
    """Realistic parameters, drawn from the seeded tables by the admin before anything is measured."""

    now: datetime
    executions: list[SeededExecution]
    big_tenant: UUID
    other_tenants: list[UUID]
    customers: list[str]
    plans: list[str]
    # (created_at, id) of the big tenant's rows at random depths, all of them and the failed ones.
    deep_cursors: list[tuple[datetime, UUID]]
    deep_failed_cursors: list[tuple[datetime, UUID]]
    refunds: list[tuple[UUID, str, str]]
    attempted: list[SeededExecution]
    settlement_provider: str
    settlement_day: tuple[datetime, datetime]
    settlement_references: list[str]


def draw_sample(admin: Connection, *, size: int = 200, references: int = 2_000, seed: int = 7) -> Sample:
    """Parameters for every hot query, drawn at random (repeatably) from what is seeded."""
    rng = random.Random(seed)  # noqa: S311 (parameters, not secrets)
    now_row = admin.execute("select now() as now").fetchone()
    assert now_row is not None
    now: datetime = now_row["now"]
    columns = (
        "tenant_id, id, idempotency_key, payment_provider, provider_reference, entity_contract_id, "
        "payment_instrument_id, amount, currency, payment_rail"
    )
    fraction = _fraction(admin, "billing_executions", size * 4)
    rows = admin.execute(
        f"select {columns} from billing.billing_executions tablesample bernoulli (%s) repeatable (%s) limit %s",
        [fraction, seed, size * 4],
    ).fetchall()
    executions = [_seeded(row) for row in rows]
    rng.shuffle(executions)
    tenants = admin.execute(
        "select tenant_id, count(*) as n from billing.billing_executions group by tenant_id order by n desc"
    ).fetchall()
    big = tenants[0]["tenant_id"]
    depth = int(tenants[0]["n"])
    customers = [
        r["entity_contract_id"]
        for r in admin.execute(
            "select distinct entity_contract_id from billing.billing_executions where tenant_id = %s", [big]
        ).fetchall()
    ]
    plans = sorted(
        r["plan_contract_id"]
        for r in admin.execute(
            "select distinct plan_contract_id from billing.billing_executions where tenant_id = %s", [big]
        ).fetchall()
    )
    deep = _cursors(admin, big, depth, rng, size, "")
    failed = admin.execute(
        "select count(*) as n from billing.billing_executions where tenant_id = %s and status = 'failed'", [big]
    ).fetchone()
    deep_failed = _cursors(admin, big, int(failed["n"]) if failed else 0, rng, size, "and status = 'failed'")
    refunds = [
        (r["tenant_id"], r["provider"], r["provider_reference"])
        for r in admin.execute(
            "select tenant_id, provider, provider_reference from billing.execution_reversals"
            " where provider_reference is not null order by md5(id::text) limit %s",
            [size],
        ).fetchall()
    ]
    attempted = [
        _seeded(row)
        for row in admin.execute(
            f"select {columns} from billing.billing_executions e"
            " where exists (select 1 from billing.risk_attempts a where a.tenant_id = e.tenant_id"
            "               and a.execution_id = e.id)"
            "   and e.id = any(%s)",
            [[e.id for e in executions]],
        ).fetchall()
    ]
    # The last full day's file (yesterday's, at scale) of the provider with the most completed charges in it: what
    # a daily settlement run reads.
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    last = admin.execute(
        "select max(finished_at) as at from billing.billing_executions"
        " where status = 'completed' and provider_reference is not null and finished_at < %s",
        [today],
    ).fetchone()
    start = ((last and last["at"]) or today - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    busiest = admin.execute(
        "select payment_provider, count(*) as n from billing.billing_executions"
        " where status = 'completed' and provider_reference is not null and finished_at >= %s and finished_at < %s"
        " group by 1 order by 2 desc limit 1",
        [start, end],
    ).fetchone()
    provider = busiest["payment_provider"] if busiest else "stripe"
    settlement_references = [
        r["provider_reference"]
        for r in admin.execute(
            "select provider_reference from billing.billing_executions"
            " where payment_provider = %s and provider_reference is not null and finished_at >= %s"
            "   and finished_at < %s limit %s",
            [provider, start, end, references],
        ).fetchall()
    ]
    return Sample(
        now=now,
        executions=executions[:size],
        big_tenant=big,
        other_tenants=[t["tenant_id"] for t in tenants[1:]][:size] or [big],
        customers=rng.sample(customers, min(size, len(customers))),
        plans=plans,
        deep_cursors=deep,
        deep_failed_cursors=deep_failed or deep,
        refunds=refunds,
        attempted=attempted or executions[:1],
        settlement_provider=provider,
        settlement_day=(start, end),
        settlement_references=settlement_references,
    )


def _fraction(admin: Connection, table: str, wanted: int) -> float:
    row = admin.execute(
        "select greatest(reltuples, 1) as n from pg_class where oid = %s::regclass", [f"billing.{table}"]
    ).fetchone()
    total = float(row["n"]) if row else 1.0
    return min(100.0, 100.0 * wanted * 2 / total)


def _seeded(row: dict[str, Any]) -> SeededExecution:
    return SeededExecution(
        tenant_id=row["tenant_id"],
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        provider=row["payment_provider"],
        provider_reference=row["provider_reference"],
        customer=row["entity_contract_id"],
        instrument=row["payment_instrument_id"],
        amount=row["amount"],
        currency=row["currency"],
        rail=row["payment_rail"],
    )


def _cursors(
    admin: Connection, tenant: UUID, depth: int, rng: random.Random, size: int, condition: str
) -> list[tuple[datetime, UUID]]:
    """Keyset cursors of `tenant`'s list at random depths from 1 % to 90 % of its `depth` rows."""
    if depth < 2:
        return []
    offsets = sorted(rng.randint(max(1, depth // 100), max(1, depth * 9 // 10)) for _ in range(min(size, 50)))
    cursors: list[tuple[datetime, UUID]] = []
    for offset in offsets:
        row = admin.execute(
            f"select created_at, id from billing.billing_executions where tenant_id = %s {condition}"
            " order by created_at desc, id desc offset %s limit 1",
            [tenant, offset],
        ).fetchone()
        if row:
            cursors.append((row["created_at"], row["id"]))
    return cursors


@dataclass(frozen=True, slots=True)
class HotQuery:
    """One hot query: which code runs it, as which role, with which parameters. `call` runs it once and returns
    the rows it got; `rollback`: it writes (a claim), so it always runs in a transaction that is rolled back."""

    name: str
    code: str
    role: DatabaseRole
    kind: Kind
    params: Callable[[Sample], Sequence[Any]]
    call: Callable[[Connection, Any], int]
    rollback: bool = False


def _list(tenant: UUID, **filters: Any) -> Callable[[Connection, Any], int]:
    def call(conn: Connection, _: Any) -> int:
        return len(ExecutionRepository(conn).list_page(tenant, ExecutionListQuery(**filters))[0])

    return call


def _list_with(make: Callable[[Any], ExecutionListQuery], tenant: Callable[[Any], UUID]) -> Callable[..., int]:
    def call(conn: Connection, param: Any) -> int:
        return len(ExecutionRepository(conn).list_page(tenant(param), make(param))[0])

    return call


def _get(conn: Connection, e: SeededExecution) -> int:
    return 1 if ExecutionRepository(conn).get(e.tenant_id, e.id) else 0


def _idempotency(conn: Connection, e: SeededExecution) -> int:
    return 1 if ExecutionRepository(conn).find_by_idempotency_key(e.tenant_id, e.idempotency_key) else 0


def _events(conn: Connection, e: SeededExecution) -> int:
    return len(ExecutionRepository(conn).events(e.tenant_id, e.id))


def _workflow(conn: Connection, e: SeededExecution) -> int:
    return len(ExecutionRepository(conn).workflow_phases(e.tenant_id, e.id))


def _view(conn: Connection, e: SeededExecution) -> int:
    # ExecutionService.view: the execution, its timeline and its workflow rows, one round trip each.
    repository = ExecutionRepository(conn)
    found = repository.get(e.tenant_id, e.id)
    return (
        int(found is not None)
        + len(repository.events(e.tenant_id, e.id))
        + len(repository.workflow_phases(e.tenant_id, e.id))
    )


def _by_reference(conn: Connection, e: SeededExecution) -> int:
    # As WebhookProcessor._process_event runs it: inside the event's transaction, timeouts applied.
    assert e.provider_reference is not None
    with conn.transaction():
        apply_timeouts(conn)
        return len(WebhookInbox(conn).executions_with_reference(e.provider, e.provider_reference))


def _refund_by_reference(conn: Connection, refund: tuple[UUID, str, str]) -> int:
    tenant, provider, reference = refund
    return int(ReversalRepository(conn).by_provider_reference(tenant, provider, reference, REFUND_KINDS) is not None)


def _reversals(conn: Connection, e: SeededExecution) -> int:
    return len(ReversalRepository(conn).of_execution(e.tenant_id, e.id))


def _refundable(conn: Connection, e: SeededExecution) -> int:
    return int(ReversalRepository(conn).refundable(e.tenant_id, e.id) is not None)


def _velocity(conn: Connection, e: SeededExecution) -> int:
    # A resubmission's count (record=False): the counters of the execution's own attempt row, every window.
    keys = AttemptKeys(
        tenant_id=e.tenant_id,
        execution_id=e.id,
        instrument_key=f"token:{e.customer}:{e.instrument}",
        customer_key=e.customer,
        amount=Money(e.amount, e.currency),
        rail=PaymentRail(e.rail),
        initiator=ChargeInitiator.CUSTOMER,
    )
    return int(VelocityCounter(conn).count_recorded(keys) is not None)


class _NoPublisher:
    """The claim never publishes; a relay needs a publisher to be built."""

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        raise AssertionError("a claim publishes nothing")


def _relay_claim(conn: Connection, _: Any) -> int:
    # OutboxRelay's phase 1 as a run's first batch makes it (the relay's own claim, parameters and scope).
    outbox_relay = relay.OutboxRelay(conn, _NoPublisher())
    state = relay._Run(lease_owner=f"relay:{uuid4()}", time_budget=lambda: 1.0)
    claimed = outbox_relay._claim(state, record=None)
    return 0 if claimed is None else len(claimed.claimed)


def _relay_backlog(conn: Connection, _: Any) -> int:
    with system_transaction(conn):
        row = conn.execute(relay._BACKLOG, {"max_attempts": relay.DEFAULT_MAX_ATTEMPTS}).fetchone()
    return 1 if row else 0


_RECONCILE: Final = ReconcileConfig()


def _sweep(sweep: SweepSql, age: timedelta, *, due: bool) -> Callable[[Connection, Any], int]:
    def call(conn: Connection, _: Any) -> int:
        # ReconciliationWorker._batch's claim of a run's first batch (adyen does not poll: unpolled), on the worker's
        # own clock.
        now = datetime.now(UTC)
        with system_transaction(conn):
            claimed = claim_executions(
                conn, sweep, due=due, now=now, cutoff=now - age, after=Cursor.start(), limit=_RECONCILE.batch_size,
                lease=Lease(f"bench:{uuid4()}", now + _RECONCILE.lease_duration), unpolled=["adyen"],
            )  # fmt: skip
        return len(claimed.claimed)

    return call


def _retire_step(conn: Connection, _: Any) -> int:
    # One bounded statement of the retirement (the first: the earliest due schedules), as the worker repeats it.
    now = datetime.now(UTC)
    with system_transaction(conn):
        return retire_stale_schedules_step(conn, AWAITING_SETTLEMENT, now=now, after=Cursor.start()).walked


def _retire_pass(conn: Connection, _: Any) -> int:
    # The whole pass a run makes before its first due batch, step after step: judged per schedule walked.
    now = datetime.now(UTC)
    walked = 0
    with system_transaction(conn):
        after: Cursor | None = Cursor.start()
        while after is not None:
            step = retire_stale_schedules_step(conn, AWAITING_SETTLEMENT, now=now, after=after)
            walked += step.walked
            after = step.after
    return walked


def _refunds_due(conn: Connection, _: Any) -> int:
    return len(ReversalRepository(conn).claim_due(limit=_RECONCILE.batch_size, lease=_RECONCILE.lease_duration))


def _settlement_find(conn: Connection, s: Sample) -> int:
    return len(PostgresExecutionLookup(conn).find(s.settlement_provider, s.settlement_references, ()))


def _settlement_completed(conn: Connection, s: Sample) -> int:
    start, end = s.settlement_day
    return sum(len(page) for page in PostgresExecutionLookup(conn).completed(s.settlement_provider, start, end))


def _settlement_providers(conn: Connection, s: Sample) -> int:
    start, end = s.settlement_day
    return len(providers_in_period(conn, start=start, end=end))


def _executions(s: Sample) -> Sequence[Any]:
    return s.executions


def _referenced(s: Sample) -> Sequence[Any]:
    return [e for e in s.executions if e.provider_reference] or s.executions[:1]


def _once(s: Sample) -> Sequence[Any]:
    return [s]


def _nothing(_: Sample) -> Sequence[Any]:
    return [None]


def hot_queries(sample: Sample) -> list[HotQuery]:
    """Every hot query of the engine, with `sample`'s parameters (the baseline first: a primary-key lookup)."""
    app, worker = DatabaseRole.APP, DatabaseRole.WORKER
    big = sample.big_tenant
    repo = "ExecutionRepository"
    executions, referenced, once, nothing = _executions, _referenced, _once, _nothing
    week = (sample.now - timedelta(days=7), sample.now)
    quarter_ago = (sample.now - timedelta(days=91), sample.now - timedelta(days=90))
    R = Kind.REQUEST  # noqa: N806
    queries = [
        HotQuery("baseline: primary-key lookup", f"{repo}.get", app, R, executions, _get),
        HotQuery("idempotency lookup", f"{repo}.find_by_idempotency_key", app, R, executions, _idempotency),
        HotQuery("GET: timeline events", f"{repo}.events", app, R, executions, _events),
        HotQuery("GET: workflow phases", f"{repo}.workflow_phases", app, R, executions, _workflow),
        HotQuery("GET with timeline (3 round trips)", "ExecutionService.view", app, R, executions, _view),
        HotQuery("list: first page, big tenant", f"{repo}.list_page", app, R, nothing, _list(big)),
        HotQuery(
            "list: first page, other tenants", f"{repo}.list_page", app, R, (lambda s: s.other_tenants),
            _list_with(lambda _: ExecutionListQuery(), lambda t: t),
        ),
    ]  # fmt: skip
    for status in ExecutionStatus:
        queries.append(
            HotQuery(f"list: status={status.value}", f"{repo}.list_page", app, R, nothing, _list(big, status=status))
        )
    for rail in (PaymentRail.SEPA_DEBIT, PaymentRail.ACH_DEBIT):
        queries.append(
            HotQuery(f"list: rail={rail.value}", f"{repo}.list_page", app, R, nothing, _list(big, payment_rail=rail))
        )
    queries += [
        HotQuery(
            "list: customer", f"{repo}.list_page", app, R, (lambda s: s.customers),
            _list_with(lambda c: ExecutionListQuery(entity_contract_id=c), lambda _: big),
        ),
        HotQuery(
            "list: plan", f"{repo}.list_page", app, R, (lambda s: s.plans),
            _list_with(lambda p: ExecutionListQuery(plan_contract_id=p), lambda _: big),
        ),
        HotQuery("list: created in the last 7 days", f"{repo}.list_page", app, R, nothing,
                 _list(big, created_from=week[0], created_to=week[1])),
        HotQuery("list: created on one day 90 days ago", f"{repo}.list_page", app, R, nothing,
                 _list(big, created_from=quarter_ago[0], created_to=quarter_ago[1])),
        HotQuery(
            "list: deep cursor (1-90 % deep)", f"{repo}.list_page", app, R, (lambda s: s.deep_cursors),
            _list_with(lambda c: ExecutionListQuery(after=c), lambda _: big),
        ),
        HotQuery(
            "list: deep cursor, status=failed", f"{repo}.list_page", app, R,
            (lambda s: s.deep_failed_cursors),
            _list_with(lambda c: ExecutionListQuery(status=ExecutionStatus.FAILED, after=c), lambda _: big),
        ),
        HotQuery("webhook: provider-reference lookup", "WebhookInbox.executions_with_reference", app, R,
                 referenced, _by_reference),
        HotQuery("webhook: refund by provider reference", "ReversalRepository.by_provider_reference", app, R,
                 (lambda s: s.refunds or [(big, "stripe", "none")]), _refund_by_reference),
        HotQuery("GET refunds: reversals of execution", "ReversalRepository.of_execution", app, R, executions,
                 _reversals),
        HotQuery("refund: refundable amount", "ReversalRepository.refundable", app, R, executions, _refundable),
        HotQuery("risk: velocity count", "VelocityCounter.count_recorded", app, R, (lambda s: s.attempted),
                 _velocity),
        # The backlog count first: the claims after it leave dead versions (rolled back) in the index it reads.
        HotQuery("relay: backlog count", "outbox.relay._BACKLOG", worker, Kind.WORKER, nothing, _relay_backlog),
        HotQuery("relay: claim a batch (100)", "OutboxRelay._claim", worker, Kind.WORKER, nothing, _relay_claim,
                 rollback=True),
        HotQuery("reconcile: claim awaiting settlement", "reconciliation_queries.claim", worker, Kind.WORKER,
                 nothing, _sweep(AWAITING_SETTLEMENT, _RECONCILE.pending_after, due=False), rollback=True),
        HotQuery("reconcile: claim settlement rechecks due", "reconciliation_queries.claim", worker, Kind.WORKER,
                 nothing, _sweep(AWAITING_SETTLEMENT, _RECONCILE.pending_after, due=True), rollback=True),
        HotQuery("reconcile: claim stuck processing", "reconciliation_queries.claim", worker, Kind.WORKER,
                 nothing, _sweep(STUCK_PROCESSING, _RECONCILE.stuck_after, due=False), rollback=True),
        HotQuery("reconcile: claim stuck rechecks due", "reconciliation_queries.claim", worker, Kind.WORKER,
                 nothing, _sweep(STUCK_PROCESSING, _RECONCILE.stuck_after, due=True), rollback=True),
        HotQuery(f"reconcile: retire stale schedules ({RETIRE_STEP})",
                 "reconciliation_queries.retire_stale_schedules_step", worker, Kind.WORKER, nothing, _retire_step,
                 rollback=True),
        HotQuery("reconcile: retire stale schedules, whole pass", "reconciliation_queries.retire_stale_schedules",
                 worker, Kind.BATCH, nothing, _retire_pass, rollback=True),
        HotQuery("reconcile: claim refunds due", "ReversalRepository.claim_due", worker, Kind.WORKER, nothing,
                 _refunds_due, rollback=True),
        HotQuery("settlement: executions of a day's references", "PostgresExecutionLookup.find", worker,
                 Kind.BATCH, once, _settlement_find),
        HotQuery("settlement: a day's completed executions", "PostgresExecutionLookup.completed", worker,
                 Kind.BATCH, once, _settlement_completed),
        HotQuery("settlement: providers of a day", "settlement_queries.providers_in_period", worker, Kind.BATCH,
                 once, _settlement_providers),
    ]  # fmt: skip
    return queries


# --- Recording and explaining -------------------------------------------------------------------------------------


class Recorder:
    """A connection that remembers every statement sent through it or its cursors, in order, and sends it on."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.statements: list[tuple[Any, Any]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        self.statements.append((query, params))
        return self._conn.execute(query, params, **kwargs)

    def cursor(self, *args: Any, **kwargs: Any) -> _RecordingCursor:
        return _RecordingCursor(self._conn.cursor(*args, **kwargs), self.statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _RecordingCursor:
    """A cursor of a Recorder: its statements go into the recorder's list."""

    def __init__(self, cursor: Any, statements: list[tuple[Any, Any]]) -> None:
        self._cursor = cursor
        self._statements = statements

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _RecordingCursor:
        self._statements.append((query, params))
        self._cursor.execute(query, params, **kwargs)
        return self

    def __enter__(self) -> _RecordingCursor:
        self._cursor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextmanager
def rolled_back(conn: Connection) -> Iterator[Connection]:
    """A transaction that is always rolled back; the engine's own transactions become savepoints of it."""
    with conn.transaction(force_rollback=True):
        yield conn


def recorded(conn: Connection, query: HotQuery, param: Any) -> list[tuple[Any, Any]]:
    """The statements `query` sends for `param`, recorded from a real call that is rolled back."""
    recorder = Recorder(conn)
    with rolled_back(conn):
        query.call(cast(Connection, recorder), param)
    return recorder.statements


_CONTROL = re.compile(r"^\s*(begin|commit|rollback)\s*;?\s*$", re.IGNORECASE)
_SCOPE = re.compile(r"^\s*select\s+(set_config|current_setting)\b", re.IGNORECASE)


def is_data_statement(statement: str) -> bool:
    return not (_CONTROL.match(statement) or _SCOPE.match(statement))


@dataclass(frozen=True, slots=True)
class Scan:
    node: str
    relation: str | None
    index: str | None

    def __str__(self) -> str:
        where = self.relation or ""
        return f"{self.node} {where}" + (f" ({self.index})" if self.index else "")


@dataclass(frozen=True, slots=True)
class Plan:
    """One explained statement: its plan (EXPLAIN's JSON) and what walking it found."""

    statement: str
    document: dict[str, Any]

    @property
    def root(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.document["Plan"])

    def nodes(self) -> Iterator[dict[str, Any]]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.get("Plans", [])))

    def scans(self) -> list[Scan]:
        return [
            Scan(node["Node Type"], node.get("Relation Name") or node.get("Function Name"), node.get("Index Name"))
            for node in self.nodes()
            if "Relation Name" in node or "Function Name" in node
        ]

    def seq_scanned(self, tables: Sequence[str] = BIG_TABLES) -> list[str]:
        return [s.relation for s in self.scans() if s.node == "Seq Scan" and s.relation in tables and s.relation]

    @property
    def top(self) -> str:
        root = self.root
        return str(root["Node Type"]) + (f" on {root['Relation Name']}" if "Relation Name" in root else "")

    @property
    def execution_ms(self) -> float:
        return float(self.document.get("Execution Time", 0.0))

    def buffers(self) -> tuple[int, int]:
        """Shared buffers hit and read by the statement: the root counts its children's, but not those of a
        data-modifying CTE the main query never reads (a claim's lease update), which runs on its own at the end."""
        root = self.root
        read_ctes = {node["CTE Name"] for node in self.nodes() if "CTE Name" in node}
        counted = [root] + [
            child
            for child in root.get("Plans", [])
            if str(child.get("Subplan Name", "")).startswith("CTE ")
            and child["Subplan Name"].removeprefix("CTE ") not in read_ctes
        ]
        return (
            sum(int(node.get("Shared Hit Blocks", 0)) for node in counted),
            sum(int(node.get("Shared Read Blocks", 0)) for node in counted),
        )


@dataclass(frozen=True, slots=True)
class Explained:
    """The plans of one call's data statements, and the sequential scans the transaction counted (functions too)."""

    plans: list[Plan]
    seq_scans: dict[str, int] = field(default_factory=dict)


_COUNTERS = """
select relname, seq_scan from pg_stat_xact_user_tables where schemaname = 'billing' and relname = any(%s)
"""


def _counted(conn: Connection, tables: Sequence[str]) -> dict[str, int]:
    return {r["relname"]: int(r["seq_scan"]) for r in conn.execute(_COUNTERS, [list(tables)]).fetchall()}


def _since(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # Differences: the backend's pending counters may still hold earlier transactions' scans (they are flushed
    # when it is idle, at most once a second), never flushed within a transaction.
    return {table: count - before.get(table, 0) for table, count in after.items()}


def explain(
    conn: Connection, statements: Sequence[tuple[Any, Any]], *, analyze: bool, tables: Sequence[str] = BIG_TABLES
) -> Explained:
    """Replay `statements` in a rolled-back transaction, each data statement under EXPLAIN (FORMAT JSON) (with
    ANALYZE and BUFFERS if `analyze`: then it also runs, and the counters count it)."""
    options = "analyze, buffers, format json" if analyze else "format json"
    plans: list[Plan] = []
    with rolled_back(conn):
        before = _counted(conn, tables)
        for recorded_statement, params in statements:
            # A composed statement (psycopg.sql) explains as the text it renders to on this connection.
            statement = (
                recorded_statement if isinstance(recorded_statement, str) else recorded_statement.as_string(conn)
            )
            if _CONTROL.match(statement):
                continue
            if not is_data_statement(statement):
                conn.execute(statement, params)
                continue
            row = conn.execute(f"explain ({options}) {statement}", params).fetchone()
            assert row is not None
            document = row["QUERY PLAN"][0]
            plans.append(Plan(statement, document))
        counted = _since(before, _counted(conn, tables))
    return Explained(plans, counted)


def sequential_scans_of_a_call(
    conn: Connection, query: HotQuery, param: Any, tables: Sequence[str] = BIG_TABLES
) -> dict[str, int]:
    """Sequential scans of `tables` while `query` really runs (inside functions and triggers too), rolled back."""
    with rolled_back(conn):
        before = _counted(conn, tables)
        query.call(conn, param)
        return _since(before, _counted(conn, tables))
