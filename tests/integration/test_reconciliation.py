"""The reconciliation worker on real PostgreSQL and the sandbox provider.

The worker scans every tenant, so each test gets a private database cloned from a migrated template: in the shared
test database it would settle other tests' executions. The worker's clock is moved forward instead of waiting for
executions to age; nothing sleeps.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from billing import resource_names as names
from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import ProviderUnavailable, TransitionConflict
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import build_rail_adapter
from billing.rails.ports import PaymentProvider, ProviderCharge, provider_idempotency_key
from billing.rails.results import Decision, StatusCheck, SubmitOutcome, SubmitResult
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.execution_driver import ExecutionDriver
from billing.services.reconciliation import (
    CHARGE_NOT_FOUND_CODE,
    Action,
    ReconcileConfig,
    ReconciliationReport,
    ReconciliationWorker,
    StopReason,
)
from tests.factories import QuietObserver, RecordingRetryScheduler, create_execution
from tests.lambda_harness import FakeLambdaContext, load_handler

CTX = WorkflowWriteContext.service_default()
RECONCILED = "billing.execution.reconciled"
CONFIRMED = "billing.execution.confirmed"


def plenty_of_time() -> float:
    return 60_000.0


def an_hour_later() -> datetime:
    """Past the 5-minute pending threshold and the 10-minute stuck threshold of everything made just now."""
    return datetime.now(UTC) + timedelta(hours=1)


# -- databases and providers ---------------------------------------------------------------------------------------


@pytest.fixture
def sandbox(private_db_url: str) -> SandboxProvider:
    return SandboxProvider(connections_to(private_db_url))


@pytest.fixture
def slow_sandbox(private_db_url: str) -> SandboxProvider:
    """Debits charged through it settle 30 days after the charge: check_status keeps saying STILL_PENDING."""
    return SandboxProvider(connections_to(private_db_url), settle_delay=timedelta(days=30))


class Delegating:
    """A PaymentProvider that passes everything to the sandbox; subclasses intercept check_status."""

    def __init__(self, inner: PaymentProvider) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        return self.inner.submit(charge, idempotency_key)

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        return self.inner.check_status(provider_reference=provider_reference, idempotency_key=idempotency_key)

    def decision_for(self, error_code: str) -> Decision:
        return self.inner.decision_for(error_code)


def worker(
    conn: Connection,
    provider: PaymentProvider,
    *,
    clock: Callable[[], datetime] = an_hour_later,
    **config: Any,
) -> ReconciliationWorker:
    return ReconciliationWorker(conn, {"sandbox": provider}, config=ReconcileConfig(**config), clock=clock)


def submitted(
    conn: Connection, provider: PaymentProvider, tenant_id: UUID, *, rail: PaymentRail, instrument: str
) -> Execution:
    """An execution driven as the execute function drives it (attempt 1)."""
    execution = create_execution(conn, tenant_id, payment_rail=rail, payment_instrument_id=instrument, metadata={})
    driver = ExecutionDriver(
        ExecutionRepository(conn), {"sandbox": provider}, RecordingRetryScheduler(), QuietObserver()
    )
    return driver.drive(execution, correlation_id=f"corr-{execution.id}", context=CTX)


def pending_debit(conn: Connection, provider: PaymentProvider, tenant_id: UUID, instrument: str) -> Execution:
    execution = submitted(conn, provider, tenant_id, rail=PaymentRail.SEPA_DEBIT, instrument=instrument)
    assert execution.awaiting_settlement, execution
    return execution


def died_mid_submit(
    conn: Connection, provider: PaymentProvider, tenant_id: UUID, instrument: str, **kw: Any
) -> Execution:
    """An execution whose driver marked it processing, sent the charge and died before recording any answer."""
    rail = kw.pop("rail", PaymentRail.CARD)
    repository = ExecutionRepository(conn)
    created = create_execution(conn, tenant_id, payment_rail=rail, payment_instrument_id=instrument, metadata={})
    repository.mark_pending(tenant_id, created.id, CTX)
    processing = repository.mark_processing(tenant_id, created.id, CTX)
    result = build_rail_adapter(rail, provider).submit(processing)
    assert result.outcome is SubmitOutcome.UNKNOWN, result
    return processing


def current(conn: Connection, execution: Execution) -> Execution:
    found = ExecutionRepository(conn).get(execution.tenant_id, execution.id)
    assert found is not None
    return found


def event_types(conn: Connection, execution: Execution) -> list[str]:
    return [e.type for e in ExecutionRepository(conn).events(execution.tenant_id, execution.id)]


def snapshot(conn: Connection) -> dict[str, Any]:
    """Everything the worker may write, across every tenant (the test role bypasses row-level security)."""
    return {
        "executions": conn.execute(
            "select id, status, updated_at, last_error_code from billing.billing_executions order by id"
        ).fetchall(),
        **{
            table: conn.execute(f"select count(*) as n from billing.{table}").fetchone()
            for table in ("billing_execution_events", "billing_outbox", "contract_term_datetimes")
        },
    }


def settlement_events(conn: Connection, execution_id: UUID) -> Counter[str]:
    rows = conn.execute(
        "select type from billing.billing_execution_events where execution_id = %s and type = any(%s)",
        [execution_id, [RECONCILED, CONFIRMED]],
    ).fetchall()
    return Counter(row["type"] for row in rows)


def actions(report: ReconciliationReport) -> dict[UUID, Action]:
    return {finding.execution_id: finding.action for finding in report.findings}


# -- settlement of pending executions ------------------------------------------------------------------------------


def test_pending_debits_are_reconciled_paid_to_completed_and_failed_with_the_provider_code(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    paid = pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    bounced = pending_debit(db, sandbox, tenant_id, "iban_settles_failed")

    report = worker(db, sandbox).run(plenty_of_time)

    assert actions(report) == {paid.id: Action.COMPLETED, bounced.id: Action.FAILED}
    assert current(db, paid).status is ExecutionStatus.COMPLETED
    failed = current(db, bounced)
    assert (failed.status, failed.last_error_code) == (ExecutionStatus.FAILED, "AM04")
    for execution in (paid, bounced):
        assert event_types(db, execution)[-1] == RECONCILED
        (phase,) = [
            w
            for w in ExecutionRepository(db).workflow_phases(tenant_id, execution.id)
            if w["phase_code"] == "reconciled"
        ]
        assert (phase["source"], phase["actor_id"]) == ("system", "billing-system")
    assert (report.stop_reason, report.counts()["completed"], report.counts()["failed"]) == (StopReason.DRAINED, 1, 1)


def test_pending_younger_than_the_threshold_is_not_asked_about(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    pending_debit(db, sandbox, tenant_id, "iban_settles_paid")

    report = worker(db, sandbox, clock=lambda: datetime.now(UTC)).run(plenty_of_time)

    assert report.findings == ()


def test_still_pending_is_left_as_is_and_flagged_once_older_than_the_maximum_age(
    db: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(db, slow_sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(db)

    young = worker(db, slow_sandbox).run(plenty_of_time)
    old = worker(db, slow_sandbox, clock=lambda: datetime.now(UTC) + timedelta(days=8)).run(plenty_of_time)

    assert [(f.action, f.flagged) for f in young.findings] == [(Action.STILL_PENDING, False)]
    assert [(f.action, f.flagged, f.execution_id) for f in old.findings] == [(Action.STILL_PENDING, True, execution.id)]
    assert old.flagged[0].waited_seconds > timedelta(days=7).total_seconds()
    assert snapshot(db) == before


def test_provider_unavailable_leaves_the_execution_for_the_next_run(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class Down(Delegating):
        def check_status(self, **lookup: Any) -> StatusCheck:
            raise ProviderUnavailable("sandbox unreachable", provider="sandbox")

    execution = pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(db)

    down = worker(db, Down(sandbox)).run(plenty_of_time)
    assert [f.action for f in down.findings] == [Action.PROVIDER_UNAVAILABLE]
    assert snapshot(db) == before

    back = worker(db, sandbox).run(plenty_of_time)
    assert actions(back) == {execution.id: Action.COMPLETED}


def test_run_again_after_settling_changes_nothing(db: Connection, sandbox: SandboxProvider, tenant_id: UUID) -> None:
    for instrument in ("iban_settles_paid", "iban_settles_failed"):
        pending_debit(db, sandbox, tenant_id, instrument)
    died_mid_submit(db, sandbox, tenant_id, "tok_timeout")
    first = worker(db, sandbox).run(plenty_of_time)
    after_first = snapshot(db)

    second = worker(db, sandbox).run(plenty_of_time)

    assert len(first.changes) == 3
    assert second.findings == ()
    assert snapshot(db) == after_first


# -- dry run ---------------------------------------------------------------------------------------------------------


def test_dry_run_reports_the_changes_a_run_would_make_and_writes_nothing(
    db: Connection, sandbox: SandboxProvider, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    for instrument in ("iban_settles_paid", "iban_settles_failed"):
        pending_debit(db, sandbox, tenant_id, instrument)
    pending_debit(db, slow_sandbox, tenant_id, "iban_settles_paid")
    died_mid_submit(db, sandbox, tenant_id, "tok_timeout_no_charge")
    before = snapshot(db)

    planned = worker(db, sandbox, batch_size=2).run(plenty_of_time, dry_run=True)

    assert snapshot(db) == before
    assert planned.dry_run
    assert Counter(f.action for f in planned.findings) == {
        Action.COMPLETED: 1,
        Action.FAILED: 2,
        Action.STILL_PENDING: 1,
    }

    applied = worker(db, sandbox, batch_size=2).run(plenty_of_time)

    def outcome(report: ReconciliationReport) -> set[tuple[UUID, ExecutionStatus | None, str | None]]:
        return {(f.execution_id, f.to_status, f.error_code) for f in report.changes}

    assert outcome(applied) == outcome(planned)
    assert len(applied.changes) == 3


# -- parallel workers and webhooks -------------------------------------------------------------------------------


def test_two_workers_in_parallel_reconcile_each_execution_exactly_once(
    private_db_url: str, db: Connection, sandbox: SandboxProvider
) -> None:
    # Given 50 pending debits across five tenants
    tenants = [uuid4() for _ in range(5)]
    executions = [pending_debit(db, sandbox, tenants[n % 5], "iban_settles_paid") for n in range(50)]

    # And two workers that each hold a claimed batch at the same time before asking the provider
    class MeetFirst(Delegating):
        barrier = threading.Barrier(2, timeout=10)
        local = threading.local()

        def check_status(self, **lookup: Any) -> StatusCheck:
            if not getattr(self.local, "met", False):
                self.local.met = True
                self.barrier.wait()  # breaks (and fails the run) if one worker waits for the other's locks
            return super().check_status(**lookup)

    def run_worker(_: int) -> ReconciliationReport:
        with connect(private_db_url) as conn:
            return worker(conn, MeetFirst(sandbox), batch_size=5).run(plenty_of_time)

    # When both run
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(run_worker, range(2)))

    # Then every execution was reconciled by exactly one of them, once
    by_worker = [{f.execution_id for f in report.findings} for report in reports]
    assert all(by_worker), "both workers took part"
    assert by_worker[0].isdisjoint(by_worker[1])
    assert by_worker[0] | by_worker[1] == {e.id for e in executions}
    for execution in executions:
        assert settlement_events(db, execution.id) == {RECONCILED: 1}
        assert current(db, execution).status is ExecutionStatus.COMPLETED


def test_webhook_arriving_while_the_worker_holds_the_execution_changes_nothing(
    private_db_url: str, db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a worker that has claimed the execution and is waiting for the provider's answer
    execution = pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    asking, answer = threading.Event(), threading.Event()

    class Held(Delegating):
        def check_status(self, **lookup: Any) -> StatusCheck:
            asking.set()
            assert answer.wait(timeout=10)
            return super().check_status(**lookup)

    def run_worker() -> ReconciliationReport:
        with connect(private_db_url) as conn:
            return worker(conn, Held(sandbox)).run(plenty_of_time)

    def webhook() -> Execution:
        with connect(private_db_url) as conn:
            return ExecutionRepository(conn).confirm_from_pending(
                tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox")
            )

    with ThreadPoolExecutor(max_workers=2) as pool:
        worker_run = pool.submit(run_worker)
        assert asking.wait(timeout=10)
        # When the provider's webhook confirms the same execution and blocks on the worker's row lock
        webhook_call = pool.submit(webhook)
        wait_until_blocked_on_a_lock(db)
        answer.set()
        report = worker_run.result(timeout=10)
        with pytest.raises(TransitionConflict):
            webhook_call.result(timeout=10)

    # Then one transition happened: the worker's
    assert actions(report) == {execution.id: Action.COMPLETED}
    assert settlement_events(db, execution.id) == {RECONCILED: 1}


def test_webhook_before_the_worker_leaves_the_worker_nothing_to_do(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    ExecutionRepository(db).confirm_from_pending(tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox"))

    report = worker(db, sandbox).run(plenty_of_time)

    assert report.findings == ()
    assert settlement_events(db, execution.id) == {CONFIRMED: 1}


def test_worker_and_webhooks_racing_over_many_executions_settle_each_exactly_once(
    private_db_url: str, db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    executions = [pending_debit(db, sandbox, tenant_id, "iban_settles_paid") for _ in range(20)]
    start = threading.Barrier(2, timeout=10)

    def run_worker() -> ReconciliationReport:
        with connect(private_db_url) as conn:
            start.wait()
            return worker(conn, sandbox, batch_size=3).run(plenty_of_time)

    def webhooks() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        with connect(private_db_url) as conn:
            repository = ExecutionRepository(conn)
            start.wait()
            for execution in reversed(executions):
                try:
                    repository.confirm_from_pending(tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox"))
                    outcomes["confirmed"] += 1
                except TransitionConflict:
                    outcomes["already_settled"] += 1
        return outcomes

    with ThreadPoolExecutor(max_workers=2) as pool:
        worker_run, webhook_run = pool.submit(run_worker), pool.submit(webhooks)
        report, webhook_outcomes = worker_run.result(timeout=30), webhook_run.result(timeout=30)

    reconciled = sum(1 for f in report.findings if f.action is Action.COMPLETED)
    assert reconciled + webhook_outcomes["confirmed"] == 20
    for execution in executions:
        assert sum(settlement_events(db, execution.id).values()) == 1
        assert current(db, execution).status is ExecutionStatus.COMPLETED


def wait_until_blocked_on_a_lock(conn: Connection, *, within_seconds: float = 5.0) -> None:
    """Return once another session of this database waits for a row lock (polls the server, never sleeps)."""
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        row = conn.execute(
            "select count(*) as n from pg_stat_activity "
            "where datname = current_database() and wait_event_type = 'Lock' and pid <> pg_backend_pid()"
        ).fetchone()
        if row and row["n"]:
            return
    raise AssertionError("no session started waiting for the lock")


# -- recovery of executions stuck in processing ----------------------------------------------------------------


def test_stuck_processing_that_was_charged_is_completed_without_a_second_charge(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a card whose submit charged but whose answer was lost, and whose driver then died
    execution = died_mid_submit(db, sandbox, tenant_id, "tok_timeout")

    report = worker(db, sandbox).run(plenty_of_time)

    charge = sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert charge is not None
    assert actions(report) == {execution.id: Action.COMPLETED}
    final = current(db, execution)
    assert (final.status, final.provider_reference) == (ExecutionStatus.COMPLETED, charge.reference)
    assert (charge.attempts, charge.status.value) == (1, "succeeded")  # asked about, never resubmitted
    assert event_types(db, execution)[-1] == "billing.execution.completed"


def test_stuck_processing_that_was_never_charged_fails_with_charge_not_found(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = died_mid_submit(db, sandbox, tenant_id, "tok_timeout_no_charge")

    report = worker(db, sandbox).run(plenty_of_time)

    assert actions(report) == {execution.id: Action.FAILED}
    final = current(db, execution)
    assert (final.status, final.last_error_code) == (ExecutionStatus.FAILED, CHARGE_NOT_FOUND_CODE)
    charge = sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert charge is not None
    assert (charge.reference, charge.attempts) == (None, 1)  # nothing charged, and nothing submitted again


def test_stuck_debit_accepted_by_the_provider_moves_to_settlement_pending(
    db: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = died_mid_submit(db, slow_sandbox, tenant_id, "tok_timeout", rail=PaymentRail.SEPA_DEBIT)

    report = worker(db, slow_sandbox).run(plenty_of_time)

    assert actions(report) == {execution.id: Action.SETTLEMENT_PENDING}
    final = current(db, execution)
    assert final.awaiting_settlement
    assert final.provider_reference is not None


def test_processing_with_a_retry_still_due_is_not_treated_as_stuck(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given an execution whose next retry is due in an hour
    scheduled = RecordingRetryScheduler()
    execution = create_execution(db, tenant_id, payment_rail=PaymentRail.CARD, payment_instrument_id="tok_transient_1")
    driver = ExecutionDriver(
        ExecutionRepository(db), {"sandbox": sandbox}, scheduled, QuietObserver(), jitter=lambda low, high: 3600.0
    )
    driver.drive(execution, correlation_id=None, context=CTX)
    (request,) = scheduled.requests

    # When the worker looks 20 minutes later, then two hours later (the retry never came)
    early = worker(db, sandbox, clock=lambda: datetime.now(UTC) + timedelta(minutes=20)).run(plenty_of_time)
    late = worker(db, sandbox, clock=lambda: request.not_before + timedelta(hours=1)).run(plenty_of_time)

    assert early.findings == ()
    assert actions(late) == {execution.id: Action.FAILED}
    assert current(db, execution).last_error_code == CHARGE_NOT_FOUND_CODE


# -- time budget -----------------------------------------------------------------------------------------------------


class Budget:
    """Plenty of time for the first `checks` checks, none after."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def __call__(self) -> float:
        self.left -= 1
        return 1_000.0 if self.left >= 0 else 0.0


def test_run_stops_when_the_time_budget_is_spent_and_keeps_what_it_did(
    db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    executions = [pending_debit(db, sandbox, tenant_id, "iban_settles_paid") for _ in range(6)]

    # One check before the claim, then one per execution: time for the claim and three provider calls.
    cut_short = worker(db, sandbox, batch_size=5).run(Budget(4))

    assert cut_short.stop_reason is StopReason.TIME_BUDGET
    assert len(cut_short.changes) == 3
    statuses = Counter(current(db, e).status for e in executions)
    assert statuses == {ExecutionStatus.COMPLETED: 3, ExecutionStatus.PENDING: 3}

    rest = worker(db, sandbox, batch_size=5).run(plenty_of_time)
    assert (rest.stop_reason, len(rest.changes)) == (StopReason.DRAINED, 3)


def test_run_with_no_time_left_claims_nothing(db: Connection, sandbox: SandboxProvider, tenant_id: UUID) -> None:
    pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(db)

    report = worker(db, sandbox).run(lambda: 0.0)

    assert (report.stop_reason, report.findings, report.batches) == (StopReason.TIME_BUDGET, (), 0)
    assert snapshot(db) == before


# -- the reconcile function ------------------------------------------------------------------------------------------


@pytest.fixture
def reconcile_function(private_db_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for name, value in {
        "DATABASE_URL": private_db_url,
        "RECONCILE_PENDING_AFTER_SECONDS": "0",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": names.service_name(names.FunctionName.RECONCILE),
        "POWERTOOLS_METRICS_NAMESPACE": names.METRICS_NAMESPACE,
    }.items():
        monkeypatch.setenv(name, value)
    return load_handler("reconcile")


def test_function_dry_run_returns_planned_changes_then_a_scheduled_run_applies_them(
    reconcile_function: ModuleType, db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(db)

    planned = reconcile_function.lambda_handler({"dry_run": True}, FakeLambdaContext())
    assert snapshot(db) == before
    assert planned["dry_run"]
    assert [(c["execution_id"], c["to_status"]) for c in planned["planned_changes"]] == [
        (str(execution.id), "completed")
    ]

    applied = reconcile_function.lambda_handler({}, FakeLambdaContext())
    assert (applied["dry_run"], applied["counts"]["completed"], applied["planned_changes"]) == (False, 1, None)
    assert current(db, execution).status is ExecutionStatus.COMPLETED


def test_function_stops_before_the_lambda_timeout(
    reconcile_function: ModuleType, db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    pending_debit(db, sandbox, tenant_id, "iban_settles_paid")

    result = reconcile_function.lambda_handler({}, FakeLambdaContext(remaining_ms=10_000))

    assert (result["stop_reason"], result["examined"]) == ("time_budget", 0)


def test_function_refuses_an_unknown_command(reconcile_function: ModuleType) -> None:
    with pytest.raises(ValidationError):
        reconcile_function.lambda_handler({"dryrun": True}, FakeLambdaContext())
