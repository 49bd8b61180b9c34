"""The reconciliation worker on real PostgreSQL and the sandbox provider.

The worker scans every tenant, so each test gets a private database cloned from a migrated template: in the shared
test database it would settle other tests' executions. Roles as in production: the worker runs as billing_worker
(`db`); executions are created and driven as the execute and webhook functions do, as billing_app (`app_db`); raw
rows are read for assertions as the admin (`private_admin`). The worker's clock is moved forward instead of
waiting for executions to age or leases to lapse; nothing sleeps, except fake providers playing a slow one.
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
from psycopg import pq
from pydantic import ValidationError

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.reconciliation_queries import (
    AWAITING_SETTLEMENT,
    Cursor,
    retire_stale_schedules,
    retire_stale_schedules_step,
)
from billing.db.tenancy import system_transaction
from billing.domain.errors import ProviderUnavailable, TransitionConflict
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import build_rail_adapter
from billing.rails.ports import (
    PaymentProvider,
    ProviderCharge,
    ProviderRefund,
    provider_cancel_key,
    provider_idempotency_key,
)
from billing.rails.results import Decision, RefundResult, StatusCheck, StatusOutcome, SubmitOutcome, SubmitResult
from billing.rails.sandbox import (
    CANCELED_CODE,
    ChargeStatus,
    SandboxCharge,
    SandboxProvider,
    Settlement,
    connections_to,
)
from billing.resource_names import FunctionName
from billing.services.execution_driver import ExecutionDriver
from billing.services.reconciliation import (
    AUTHENTICATION_EXPIRED_CODE,
    CANCELED_AT_PROVIDER_CODE,
    CHARGE_NOT_FOUND_CODE,
    Action,
    ReconcileConfig,
    ReconciliationReport,
    ReconciliationWorker,
    StopReason,
)
from tests.factories import QuietObserver, RecordingRetryScheduler, create_execution
from tests.lambda_harness import FakeLambdaContext, load_handler, set_function_environment

CTX = WorkflowWriteContext.service_default()
RECONCILED = "billing.execution.reconciled"
CONFIRMED = "billing.execution.confirmed"
DEFAULTS = ReconcileConfig()
# Far below the slow provider's answer time: a provider call inside a transaction would end the worker's session.
IDLE_LIMIT = timedelta(milliseconds=250)
SLOW_ANSWER_SECONDS = 0.75


def plenty_of_time() -> float:
    return 60_000.0


def an_hour_later() -> datetime:
    """Past the 5-minute pending threshold and the 10-minute stuck threshold of everything made just now."""
    return datetime.now(UTC) + timedelta(hours=1)


class Clock:
    """A worker clock that stands still until a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or an_hour_later()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> Clock:
        self.now += delta
        return self


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

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        return self.inner.cancel(reference, idempotency_key)

    def decision_for(self, error_code: str) -> Decision:
        return self.inner.decision_for(error_code)

    def for_tenant(self, tenant_id: UUID) -> PaymentProvider:
        # The interception must survive the adapter's per-tenant view: one account here.
        return self

    @property
    def polls_status(self) -> bool:
        return self.inner.polls_status

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        return self.inner.refund(refund, idempotency_key)

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        return self.inner.check_refund(refund, refund_reference=refund_reference)


class Recording(Delegating):
    """Keeps the reference (or key) of every check_status in call order; `on_call` may intercept one."""

    def __init__(self, inner: PaymentProvider, on_call: Callable[[str], None] = lambda _looked_up: None) -> None:
        super().__init__(inner)
        self.calls: list[str] = []
        self.on_call = on_call

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        looked_up = provider_reference or idempotency_key
        assert looked_up is not None
        self.calls.append(looked_up)
        self.on_call(looked_up)
        return super().check_status(provider_reference=provider_reference, idempotency_key=idempotency_key)


class WorkerDied(BaseException):
    """Ends a run the way a killed Lambda does: nothing after it runs, not even the worker's error handling."""


def worker(
    conn: Connection,
    provider: PaymentProvider,
    *,
    clock: Callable[[], datetime] = an_hour_later,
    idle_in_transaction_timeout: timedelta | None = None,
    **config: Any,
) -> ReconciliationWorker:
    return ReconciliationWorker(
        conn,
        {"sandbox": provider},
        config=ReconcileConfig(**config),
        clock=clock,
        idle_in_transaction_timeout=idle_in_transaction_timeout,
    )


def submitted(
    app_db: Connection, provider: PaymentProvider, tenant_id: UUID, *, rail: PaymentRail, instrument: str
) -> Execution:
    """An execution driven as the execute function (billing_app) drives it (attempt 1)."""
    execution = create_execution(app_db, tenant_id, payment_rail=rail, payment_instrument_id=instrument, metadata={})
    driver = ExecutionDriver(
        ExecutionRepository(app_db), {"sandbox": provider}, RecordingRetryScheduler(), QuietObserver()
    )
    return driver.drive(execution, correlation_id=f"corr-{execution.id}", context=CTX)


def pending_debit(app_db: Connection, provider: PaymentProvider, tenant_id: UUID, instrument: str) -> Execution:
    execution = submitted(app_db, provider, tenant_id, rail=PaymentRail.SEPA_DEBIT, instrument=instrument)
    assert execution.awaiting_settlement, execution
    return execution


def died_mid_submit(
    app_db: Connection, provider: PaymentProvider, tenant_id: UUID, instrument: str, **kw: Any
) -> Execution:
    """An execution whose driver marked it processing, sent the charge and died before recording any answer."""
    rail = kw.pop("rail", PaymentRail.CARD)
    repository = ExecutionRepository(app_db)
    created = create_execution(app_db, tenant_id, payment_rail=rail, payment_instrument_id=instrument, metadata={})
    repository.mark_pending(tenant_id, created.id, CTX)
    processing = repository.mark_processing(tenant_id, created.id, CTX)
    result = build_rail_adapter(rail, provider).submit(processing)
    assert result.outcome is SubmitOutcome.UNKNOWN, result
    return processing


def current(app_db: Connection, execution: Execution) -> Execution:
    found = ExecutionRepository(app_db).get(execution.tenant_id, execution.id)
    assert found is not None
    return found


def event_types(app_db: Connection, execution: Execution) -> list[str]:
    return [e.type for e in ExecutionRepository(app_db).events(execution.tenant_id, execution.id)]


def snapshot(admin: Connection, *, leases: bool = True) -> dict[str, Any]:
    """What the worker may write, across every tenant (the admin bypasses row-level security)."""
    tables = ["billing_execution_events", "billing_outbox", "contract_term_datetimes"]
    return {
        "executions": admin.execute(
            "select id, status, updated_at, last_error_code from billing.billing_executions order by id"
        ).fetchall(),
        **{table: admin.execute(f"select count(*) as n from billing.{table}").fetchone() for table in tables},
        **(
            {"leases": admin.execute("select * from billing.reconciliation_leases order by execution_id").fetchall()}
            if leases
            else {}
        ),
    }


def lease_of(admin: Connection, execution: Execution) -> dict[str, Any]:
    row = admin.execute(
        "select status, lease_owner, lease_expires_at, attempts, next_check_at, last_outcome"
        " from billing.reconciliation_leases where tenant_id = %s and execution_id = %s",
        [execution.tenant_id, execution.id],
    ).fetchone()
    assert row is not None, f"no lease row for {execution.id}"
    return row


def settlement_events(admin: Connection, execution_id: UUID) -> Counter[str]:
    rows = admin.execute(
        "select type from billing.billing_execution_events where execution_id = %s and type = any(%s)",
        [execution_id, [RECONCILED, CONFIRMED]],
    ).fetchall()
    return Counter(row["type"] for row in rows)


def actions(report: ReconciliationReport) -> dict[UUID, Action]:
    return {finding.execution_id: finding.action for finding in report.findings}


def session_state(admin: Connection, conn: Connection) -> str:
    """What the server says `conn`'s session is doing: 'idle', or 'idle in transaction' when a transaction is open."""
    row = admin.execute("select state from pg_stat_activity where pid = %s", [conn.info.backend_pid]).fetchone()
    assert row is not None
    return str(row["state"])


# -- settlement of pending executions ------------------------------------------------------------------------------


def test_pending_debits_are_reconciled_paid_to_completed_and_failed_with_the_provider_code(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    paid = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    bounced = pending_debit(app_db, sandbox, tenant_id, "iban_settles_failed")

    report = worker(db, sandbox).run(plenty_of_time)

    assert actions(report) == {paid.id: Action.COMPLETED, bounced.id: Action.FAILED}
    assert current(app_db, paid).status is ExecutionStatus.COMPLETED
    failed = current(app_db, bounced)
    assert (failed.status, failed.last_error_code) == (ExecutionStatus.FAILED, "AM04")
    for execution in (paid, bounced):
        assert event_types(app_db, execution)[-1] == RECONCILED
        (phase,) = [
            w
            for w in ExecutionRepository(app_db).workflow_phases(tenant_id, execution.id)
            if w["phase_code"] == "reconciled"
        ]
        assert (phase["source"], phase["actor_id"]) == ("system", "billing-system")
    assert (report.stop_reason, report.counts()["completed"], report.counts()["failed"]) == (StopReason.DRAINED, 1, 1)


def test_pending_younger_than_the_threshold_is_not_asked_about(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")

    report = worker(db, sandbox, clock=lambda: datetime.now(UTC)).run(plenty_of_time)

    assert report.findings == ()


def test_still_pending_is_left_as_is_and_flagged_once_older_than_the_maximum_age(
    db: Connection, app_db: Connection, private_admin: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(app_db, slow_sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(private_admin, leases=False)

    young = worker(db, slow_sandbox).run(plenty_of_time)
    old = worker(db, slow_sandbox, clock=lambda: datetime.now(UTC) + timedelta(days=8)).run(plenty_of_time)

    assert [(f.action, f.flagged) for f in young.findings] == [(Action.STILL_PENDING, False)]
    assert [(f.action, f.flagged, f.execution_id) for f in old.findings] == [(Action.STILL_PENDING, True, execution.id)]
    assert old.flagged[0].waited_seconds > timedelta(days=7).total_seconds()
    assert snapshot(private_admin, leases=False) == before
    lease = lease_of(private_admin, execution)
    assert (lease["attempts"], lease["last_outcome"], lease["lease_owner"]) == (2, "still_pending", None)
    assert lease["next_check_at"] == old.findings[0].next_check_at


def test_provider_unavailable_backs_the_execution_off_and_it_is_asked_again_once_the_backoff_passed(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class Down(Delegating):
        def check_status(self, **lookup: Any) -> StatusCheck:
            raise ProviderUnavailable("sandbox unreachable", provider="sandbox")

    execution = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(private_admin, leases=False)
    clock = Clock()

    down = worker(db, Down(sandbox), clock=clock).run(plenty_of_time)
    assert [(f.action, f.next_check_at) for f in down.findings] == [
        (Action.PROVIDER_UNAVAILABLE, clock.now + DEFAULTS.recheck_after)
    ]
    assert snapshot(private_admin, leases=False) == before

    too_soon = worker(db, sandbox, clock=clock.advance(DEFAULTS.recheck_after / 2)).run(plenty_of_time)
    assert too_soon.findings == ()

    back = worker(db, sandbox, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)
    assert actions(back) == {execution.id: Action.COMPLETED}
    assert lease_of(private_admin, execution) | {"lease_expires_at": None} == {
        "status": "pending",
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": 0,
        "next_check_at": None,
        "last_outcome": "completed",
    }


def test_a_provider_without_a_status_endpoint_is_never_asked_and_its_executions_never_claimed(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class Unpollable(Recording):
        """Adyen's shape: webhooks and the settlement report tell, check_status cannot."""

        @property
        def polls_status(self) -> bool:
            return False

    pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    died_mid_submit(app_db, sandbox, tenant_id, "tok_timeout")
    before = snapshot(private_admin)
    provider = Unpollable(sandbox)

    run = worker(db, provider).run(plenty_of_time)

    assert (run.findings, provider.calls) == ((), [])
    assert snapshot(private_admin) == before  # not even a lease


def test_run_again_after_settling_changes_nothing(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    for instrument in ("iban_settles_paid", "iban_settles_failed"):
        pending_debit(app_db, sandbox, tenant_id, instrument)
    died_mid_submit(app_db, sandbox, tenant_id, "tok_timeout")
    first = worker(db, sandbox).run(plenty_of_time)
    after_first = snapshot(private_admin)

    second = worker(db, sandbox).run(plenty_of_time)

    assert len(first.changes) == 3
    assert second.findings == ()
    assert snapshot(private_admin) == after_first


def test_run_inside_an_open_transaction_is_refused(db: Connection, sandbox: SandboxProvider) -> None:
    with db.transaction(), pytest.raises(RuntimeError, match="outside any transaction"):
        worker(db, sandbox).run(plenty_of_time)


# -- dry run ---------------------------------------------------------------------------------------------------------


def test_dry_run_reports_the_changes_a_run_would_make_and_writes_nothing(
    db: Connection,
    app_db: Connection,
    private_admin: Connection,
    sandbox: SandboxProvider,
    slow_sandbox: SandboxProvider,
    tenant_id: UUID,
) -> None:
    for instrument in ("iban_settles_paid", "iban_settles_failed"):
        pending_debit(app_db, sandbox, tenant_id, instrument)
    pending_debit(app_db, slow_sandbox, tenant_id, "iban_settles_paid")
    died_mid_submit(app_db, sandbox, tenant_id, "tok_timeout_no_charge")
    before = snapshot(private_admin)

    planned = worker(db, sandbox, batch_size=2).run(plenty_of_time, dry_run=True)

    assert snapshot(private_admin) == before  # leases included: a dry run leases nothing
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


# -- no provider call inside a transaction -------------------------------------------------------------------------


def test_provider_slower_than_the_idle_limit_costs_no_answer_and_no_session(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given three pending debits in one batch, and a provider that takes three idle limits to answer the second
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(3)]
    slow = executions[1].provider_reference
    states: list[tuple[pq.TransactionStatus, str]] = []

    def answer(looked_up: str) -> None:
        states.append((db.info.transaction_status, session_state(private_admin, db)))
        if looked_up == slow:
            time.sleep(SLOW_ANSWER_SECONDS)

    provider = Recording(sandbox, on_call=answer)

    # When a worker whose transactions may idle for a third of that runs
    report = worker(db, provider, batch_size=3, idle_in_transaction_timeout=IDLE_LIMIT).run(plenty_of_time)

    # Then no call was made inside a transaction, every answer was recorded, and the session survived
    assert states == [(pq.TransactionStatus.IDLE, "idle")] * 3
    assert (report.batches, report.stop_reason) == (1, StopReason.DRAINED)
    assert actions(report) == {e.id: Action.COMPLETED for e in executions}
    assert all(current(app_db, e).status is ExecutionStatus.COMPLETED for e in executions)
    assert not db.broken
    assert db.execute("select 1 as alive").fetchone() == {"alive": 1}


def test_provider_timing_out_on_one_execution_settles_the_rest_of_the_batch_and_retries_it_later(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a batch of four, where the provider hangs past the idle limit on the second, then the client gives up
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(4)]
    stuck = executions[1]

    def hang(looked_up: str) -> None:
        if looked_up == stuck.provider_reference:
            time.sleep(SLOW_ANSWER_SECONDS)
            raise ProviderUnavailable("read timed out", provider="sandbox")

    clock = Clock()

    # When the worker runs
    first = worker(db, Recording(sandbox, on_call=hang), clock=clock, idle_in_transaction_timeout=IDLE_LIMIT).run(
        plenty_of_time
    )

    # Then the others are settled, and only the one that timed out waits for its next check
    assert actions(first) == {e.id: Action.COMPLETED for e in executions} | {stuck.id: Action.PROVIDER_UNAVAILABLE}
    assert [current(app_db, e).status for e in executions] == [
        ExecutionStatus.COMPLETED,
        ExecutionStatus.PENDING,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.COMPLETED,
    ]
    lease = lease_of(private_admin, stuck)
    assert (lease["attempts"], lease["next_check_at"], lease["lease_owner"]) == (
        1,
        clock.now + DEFAULTS.recheck_after,
        None,
    )
    assert str(lease["last_outcome"]).startswith("provider_unavailable: read timed out")

    # And a later run, once the provider answers again, settles it
    later = worker(db, sandbox, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)
    assert actions(later) == {stuck.id: Action.COMPLETED}


# -- leases ----------------------------------------------------------------------------------------------------------


def test_two_workers_never_hold_the_same_execution_while_its_lease_is_live(
    private_db_url: str, db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider
) -> None:
    # Given six pending debits and a worker that has leased the first three and is waiting on the provider
    executions = [pending_debit(app_db, sandbox, uuid4(), "iban_settles_paid") for _ in range(6)]
    asking, answer = threading.Event(), threading.Event()
    first_state: list[str] = []

    def hold_first(_looked_up: str) -> None:
        if not asking.is_set():
            asking.set()
            assert answer.wait(timeout=10)

    def run_first() -> ReconciliationReport:
        return worker(db, Recording(sandbox, on_call=hold_first), batch_size=3).run(plenty_of_time)

    with ThreadPoolExecutor(max_workers=1) as pool:
        first_run = pool.submit(run_first)
        assert asking.wait(timeout=10)
        first_state.append(session_state(private_admin, db))
        leased = {
            row["execution_id"]
            for row in private_admin.execute(
                "select execution_id from billing.reconciliation_leases where lease_owner is not null"
            ).fetchall()
        }

        # When a second worker runs meanwhile
        with connect(private_db_url) as other:
            second = worker(other, sandbox, batch_size=3).run(plenty_of_time)
        answer.set()
        first = first_run.result(timeout=10)

    # Then it took none of the leased executions, and each execution was settled once, by one of them
    assert first_state == ["idle"], "the first worker waits on the provider with no transaction open"
    assert leased == {e.id for e in executions[:3]}
    assert set(actions(second)) == {e.id for e in executions[3:]}
    assert set(actions(first)) == leased
    for execution in executions:
        assert settlement_events(private_admin, execution.id) == {RECONCILED: 1}


def test_executions_leased_by_a_worker_that_died_are_claimed_again_once_the_lease_lapses(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a worker that leased a batch and died while asking the provider about its first execution
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(3)]
    clock = Clock()

    def die(_looked_up: str) -> None:
        raise WorkerDied

    with pytest.raises(WorkerDied):
        worker(db, Recording(sandbox, on_call=die), clock=clock).run(plenty_of_time)
    leases = [lease_of(private_admin, e) for e in executions]
    assert all(lease["lease_expires_at"] == clock.now + DEFAULTS.lease_duration for lease in leases)

    # When another worker runs while the leases are live, then once they lapsed
    while_live = worker(db, sandbox, clock=clock.advance(DEFAULTS.lease_duration / 2)).run(plenty_of_time)
    after_lapse = worker(db, sandbox, clock=clock.advance(DEFAULTS.lease_duration)).run(plenty_of_time)

    # Then the first finds nothing to do and the second settles them all
    assert while_live.findings == ()
    assert actions(after_lapse) == {e.id: Action.COMPLETED for e in executions}
    assert all(lease_of(private_admin, e)["lease_owner"] is None for e in executions)


def test_an_execution_left_as_it_was_backs_off_exponentially_and_waits_behind_fresh_ones(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given an execution the provider cannot answer for
    failing = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")

    def refuse(looked_up: str) -> None:
        if looked_up == failing.provider_reference:
            raise ProviderUnavailable("sandbox unreachable", provider="sandbox")

    provider = Recording(sandbox, on_call=refuse)
    clock = Clock()
    worker(db, provider, clock=clock).run(plenty_of_time)
    first_check = lease_of(private_admin, failing)

    # When a fresh one arrives and the worker runs once the first backoff passed, then twice more
    fresh = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    provider.calls.clear()
    second = worker(db, provider, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)
    second_at, second_calls = clock.now, list(provider.calls)
    second_check = lease_of(private_admin, failing)
    provider.calls.clear()
    within_doubled = worker(db, provider, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)
    after_doubled = worker(db, provider, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)

    # Then the fresh one is asked first, and the failing one's wait doubles with each check that fails
    assert second_calls == [fresh.provider_reference, failing.provider_reference]
    assert actions(second) == {fresh.id: Action.COMPLETED, failing.id: Action.PROVIDER_UNAVAILABLE}
    assert (first_check["attempts"], second_check["attempts"]) == (1, 2)
    assert second_check["next_check_at"] == second_at + 2 * DEFAULTS.recheck_after
    assert within_doubled.findings == ()
    assert actions(after_doubled) == {failing.id: Action.PROVIDER_UNAVAILABLE}
    assert lease_of(private_admin, failing)["attempts"] == 3


def test_backoff_stops_doubling_at_the_cap(
    db: Connection, app_db: Connection, private_admin: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(app_db, slow_sandbox, tenant_id, "iban_settles_paid")
    clock = Clock()
    waits: list[timedelta] = []

    for _ in range(6):
        report = worker(db, slow_sandbox, clock=clock).run(plenty_of_time)
        (finding,) = report.findings
        assert finding.next_check_at is not None
        waits.append(finding.next_check_at - clock.now)
        clock.advance(finding.next_check_at - clock.now)

    assert waits == [timedelta(minutes=m) for m in (4, 8, 16, 32, 60, 60)]
    assert lease_of(private_admin, execution)["attempts"] == 6


def test_one_execution_whose_check_raises_unexpectedly_neither_stops_the_sweep_nor_blocks_the_others(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(3)]
    broken = executions[0]

    def crash(looked_up: str) -> None:
        if looked_up == broken.provider_reference:
            raise KeyError("settlement_date")

    report = worker(db, Recording(sandbox, on_call=crash), batch_size=2).run(plenty_of_time)

    assert report.stop_reason is StopReason.DRAINED
    assert actions(report) == {e.id: Action.COMPLETED for e in executions} | {broken.id: Action.ERROR}
    [error] = [f for f in report.findings if f.action is Action.ERROR]
    assert (error.flagged, error.detail) == (True, "KeyError: 'settlement_date'")
    assert lease_of(private_admin, broken)["attempts"] == 1


def test_schedule_of_an_execution_a_webhook_settled_is_retired(
    db: Connection, app_db: Connection, private_admin: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(app_db, slow_sandbox, tenant_id, "iban_settles_paid")
    clock = Clock()
    worker(db, slow_sandbox, clock=clock).run(plenty_of_time)
    assert lease_of(private_admin, execution)["next_check_at"] is not None
    ExecutionRepository(app_db).confirm_from_pending(tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox"))

    report = worker(db, slow_sandbox, clock=clock.advance(timedelta(hours=2))).run(plenty_of_time)

    assert report.findings == ()
    lease = lease_of(private_admin, execution)
    assert (lease["attempts"], lease["next_check_at"], lease["last_outcome"]) == (0, None, "left_pending")


def test_stale_schedules_are_retired_step_by_bounded_step(
    db: Connection, app_db: Connection, private_admin: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given three scheduled debits, two of which a webhook then settled
    executions = [pending_debit(app_db, slow_sandbox, tenant_id, "iban_settles_paid") for _ in range(3)]
    clock = Clock()
    worker(db, slow_sandbox, clock=clock).run(plenty_of_time)
    settled, still_pending = executions[:2], executions[2]
    for execution in settled:
        ExecutionRepository(app_db).confirm_from_pending(
            tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox")
        )
    now = clock.advance(timedelta(hours=2)).now

    # When the retirement walks one due schedule per statement
    with system_transaction(db):
        first = retire_stale_schedules_step(db, AWAITING_SETTLEMENT, now=now, after=Cursor.start(), limit=1)
        retired = retire_stale_schedules(db, AWAITING_SETTLEMENT, now=now, step=1)

    # Then a step walks no more than its limit and says where the next starts, and the pass retires exactly the
    # settled ones
    assert (first.walked, first.after is not None) == (1, True)
    assert first.retired + retired == 2
    assert [lease_of(private_admin, e)["last_outcome"] for e in settled] == ["left_pending", "left_pending"]
    assert lease_of(private_admin, still_pending)["next_check_at"] is not None


def test_execution_recovered_to_settlement_pending_starts_its_checks_afresh(
    db: Connection, app_db: Connection, private_admin: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = died_mid_submit(app_db, slow_sandbox, tenant_id, "tok_timeout", rail=PaymentRail.SEPA_DEBIT)
    clock = Clock()

    recovered = worker(db, slow_sandbox, clock=clock).run(plenty_of_time)
    after_recovery = lease_of(private_admin, execution)
    checked = worker(db, slow_sandbox, clock=clock.advance(timedelta(minutes=1))).run(plenty_of_time)

    assert actions(recovered) == {execution.id: Action.SETTLEMENT_PENDING}
    assert (after_recovery["status"], after_recovery["attempts"], after_recovery["next_check_at"]) == (
        "processing",
        0,
        None,
    )
    assert actions(checked) == {execution.id: Action.STILL_PENDING}
    after_check = lease_of(private_admin, execution)
    assert (after_check["status"], after_check["attempts"]) == ("pending", 1)


# -- parallel workers and webhooks -------------------------------------------------------------------------------


def test_two_workers_in_parallel_reconcile_each_execution_exactly_once(
    private_db_url: str, db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider
) -> None:
    # Given 50 pending debits across five tenants
    tenants = [uuid4() for _ in range(5)]
    executions = [pending_debit(app_db, sandbox, tenants[n % 5], "iban_settles_paid") for n in range(50)]

    # And two workers that each hold a leased batch at the same time before asking the provider
    class MeetFirst(Delegating):
        barrier = threading.Barrier(2, timeout=10)
        local = threading.local()

        def check_status(self, **lookup: Any) -> StatusCheck:
            if not getattr(self.local, "met", False):
                self.local.met = True
                self.barrier.wait()  # breaks (and fails the run) if one worker waits for the other
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
        assert settlement_events(private_admin, execution.id) == {RECONCILED: 1}
        assert current(app_db, execution).status is ExecutionStatus.COMPLETED


def test_a_batch_lost_whole_to_another_worker_does_not_end_the_walk(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given six pending debits, the first three under live leases the candidate read cannot rule out: another run
    # leased them while they were still processing (so, too, a claim committed between this one's read and its upsert)
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(6)]
    for execution in executions[:3]:
        private_admin.execute(
            "insert into billing.reconciliation_leases (tenant_id, execution_id, status, lease_owner, lease_expires_at)"
            " values (%s, %s, 'processing', 'reconcile:other', now() + interval '1 day')",
            [execution.tenant_id, execution.id],
        )

    # When a worker claims three at a time
    report = worker(db, sandbox, batch_size=3).run(plenty_of_time)

    # Then the batch it lost whole is passed over, not taken for the end of the backlog
    assert actions(report) == {e.id: Action.COMPLETED for e in executions[3:]}
    assert report.batches == 1
    assert all(lease_of(private_admin, e)["lease_owner"] == "reconcile:other" for e in executions[:3])


def test_webhook_arriving_while_the_worker_asks_the_provider_wins_and_the_worker_writes_nothing(
    private_app_url: str,
    db: Connection,
    app_db: Connection,
    private_admin: Connection,
    sandbox: SandboxProvider,
    tenant_id: UUID,
) -> None:
    # Given a worker that has leased the execution and is waiting for the provider's answer
    execution = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    asking, answer = threading.Event(), threading.Event()

    def held(_looked_up: str) -> None:
        asking.set()
        assert answer.wait(timeout=10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        worker_run = pool.submit(worker(db, Recording(sandbox, on_call=held)).run, plenty_of_time)
        assert asking.wait(timeout=10)
        # When the provider's webhook confirms the same execution: it does not wait for the worker
        with connect(private_app_url) as webhook_conn:
            ExecutionRepository(webhook_conn).confirm_from_pending(
                tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox")
            )
        answer.set()
        report = worker_run.result(timeout=10)

    # Then one transition happened, the webhook's, and the worker's lease ended without a schedule
    assert actions(report) == {execution.id: Action.CONFLICT}
    assert settlement_events(private_admin, execution.id) == {CONFIRMED: 1}
    lease = lease_of(private_admin, execution)
    assert (lease["lease_owner"], lease["next_check_at"], lease["last_outcome"]) == (None, None, "conflict")


def test_webhook_before_the_worker_leaves_the_worker_nothing_to_do(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    ExecutionRepository(app_db).confirm_from_pending(tenant_id, execution.id, WorkflowWriteContext.webhook("sandbox"))

    report = worker(db, sandbox).run(plenty_of_time)

    assert report.findings == ()
    assert settlement_events(private_admin, execution.id) == {CONFIRMED: 1}


def test_worker_and_webhooks_racing_over_many_executions_settle_each_exactly_once(
    private_db_url: str,
    private_app_url: str,
    app_db: Connection,
    private_admin: Connection,
    sandbox: SandboxProvider,
    tenant_id: UUID,
) -> None:
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(20)]
    start = threading.Barrier(2, timeout=10)

    def run_worker() -> ReconciliationReport:
        with connect(private_db_url) as conn:
            start.wait()
            return worker(conn, sandbox, batch_size=3).run(plenty_of_time)

    def webhooks() -> Counter[str]:
        outcomes: Counter[str] = Counter()
        with connect(private_app_url) as conn:
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
        assert sum(settlement_events(private_admin, execution.id).values()) == 1
        assert current(app_db, execution).status is ExecutionStatus.COMPLETED


# -- recovery of executions stuck in processing ----------------------------------------------------------------


def test_stuck_processing_that_was_charged_is_completed_without_a_second_charge(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a card whose submit charged but whose answer was lost, and whose driver then died
    execution = died_mid_submit(app_db, sandbox, tenant_id, "tok_timeout")

    report = worker(db, sandbox).run(plenty_of_time)

    charge = sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert charge is not None
    assert actions(report) == {execution.id: Action.COMPLETED}
    final = current(app_db, execution)
    assert (final.status, final.provider_reference) == (ExecutionStatus.COMPLETED, charge.reference)
    assert (charge.attempts, charge.status.value) == (1, "succeeded")  # asked about, never resubmitted
    assert event_types(app_db, execution)[-1] == "billing.execution.completed"


def test_stuck_processing_that_was_never_charged_fails_with_charge_not_found(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = died_mid_submit(app_db, sandbox, tenant_id, "tok_timeout_no_charge")

    report = worker(db, sandbox).run(plenty_of_time)

    assert actions(report) == {execution.id: Action.FAILED}
    final = current(app_db, execution)
    assert (final.status, final.last_error_code) == (ExecutionStatus.FAILED, CHARGE_NOT_FOUND_CODE)
    charge = sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert charge is not None
    assert (charge.reference, charge.attempts) == (None, 1)  # nothing charged, and nothing submitted again


def test_stuck_debit_accepted_by_the_provider_moves_to_settlement_pending(
    db: Connection, app_db: Connection, slow_sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = died_mid_submit(app_db, slow_sandbox, tenant_id, "tok_timeout", rail=PaymentRail.SEPA_DEBIT)

    report = worker(db, slow_sandbox).run(plenty_of_time)

    assert actions(report) == {execution.id: Action.SETTLEMENT_PENDING}
    final = current(app_db, execution)
    assert final.awaiting_settlement
    assert final.provider_reference is not None


def test_processing_with_a_retry_still_due_is_not_treated_as_stuck(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given an execution whose next retry is due in an hour
    scheduled = RecordingRetryScheduler()
    execution = create_execution(
        app_db, tenant_id, payment_rail=PaymentRail.CARD, payment_instrument_id="tok_transient_1"
    )
    driver = ExecutionDriver(
        ExecutionRepository(app_db), {"sandbox": sandbox}, scheduled, QuietObserver(), jitter=lambda low, high: 3600.0
    )
    driver.drive(execution, correlation_id=None, context=CTX)
    (request,) = scheduled.requests

    # When the worker looks 20 minutes later, then two hours later (the retry never came)
    early = worker(db, sandbox, clock=lambda: datetime.now(UTC) + timedelta(minutes=20)).run(plenty_of_time)
    late = worker(db, sandbox, clock=lambda: request.not_before + timedelta(hours=1)).run(plenty_of_time)

    assert early.findings == ()
    assert actions(late) == {execution.id: Action.FAILED}
    assert current(app_db, execution).last_error_code == CHARGE_NOT_FOUND_CODE


# -- time budget -----------------------------------------------------------------------------------------------------


class Budget:
    """Plenty of time for the first `checks` checks, none after."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def __call__(self) -> float:
        self.left -= 1
        return 1_000.0 if self.left >= 0 else 0.0


def test_run_stops_when_the_time_budget_is_spent_keeps_what_it_did_and_releases_the_rest(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    executions = [pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid") for _ in range(6)]

    # One check before the claim, then one per execution: time for the claim and three provider calls.
    cut_short = worker(db, sandbox, batch_size=5).run(Budget(4))

    assert cut_short.stop_reason is StopReason.TIME_BUDGET
    assert len(cut_short.changes) == 3
    statuses = Counter(current(app_db, e).status for e in executions)
    assert statuses == {ExecutionStatus.COMPLETED: 3, ExecutionStatus.PENDING: 3}
    leases = private_admin.execute("select lease_owner, attempts from billing.reconciliation_leases").fetchall()
    assert leases == [{"lease_owner": None, "attempts": 0}] * 5, "claimed and not asked: released, not counted"

    # The next run, on the same clock (a lease left behind would still be live), takes the rest at once.
    rest = worker(db, sandbox, batch_size=5).run(plenty_of_time)
    assert (rest.stop_reason, len(rest.changes)) == (StopReason.DRAINED, 3)


def test_run_with_no_time_left_claims_nothing(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(private_admin)

    report = worker(db, sandbox).run(lambda: 0.0)

    assert (report.stop_reason, report.findings, report.batches) == (StopReason.TIME_BUDGET, (), 0)
    assert snapshot(private_admin) == before


# -- the reconcile function ------------------------------------------------------------------------------------------


@pytest.fixture
def reconcile_function(private_db_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # A worker function: it connects as billing_worker.
    set_function_environment(
        monkeypatch,
        FunctionName.RECONCILE,
        {"DATABASE_URL": private_db_url, "RECONCILE_PENDING_AFTER_SECONDS": "0"},
    )
    return load_handler("reconcile")


def test_function_dry_run_returns_planned_changes_then_a_scheduled_run_applies_them(
    reconcile_function: ModuleType,
    app_db: Connection,
    private_admin: Connection,
    sandbox: SandboxProvider,
    tenant_id: UUID,
) -> None:
    execution = pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")
    before = snapshot(private_admin)

    planned = reconcile_function.lambda_handler({"dry_run": True}, FakeLambdaContext())
    assert snapshot(private_admin) == before
    assert planned["dry_run"]
    assert [(c["execution_id"], c["to_status"]) for c in planned["planned_changes"]] == [
        (str(execution.id), "completed")
    ]

    applied = reconcile_function.lambda_handler({}, FakeLambdaContext())
    assert (applied["dry_run"], applied["counts"]["completed"], applied["planned_changes"]) == (False, 1, None)
    assert current(app_db, execution).status is ExecutionStatus.COMPLETED


def test_function_stops_before_the_lambda_timeout(
    reconcile_function: ModuleType, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    pending_debit(app_db, sandbox, tenant_id, "iban_settles_paid")

    result = reconcile_function.lambda_handler({}, FakeLambdaContext(remaining_ms=10_000))

    assert (result["stop_reason"], result["examined"]) == ("time_budget", 0)


def test_function_refuses_an_unknown_command(reconcile_function: ModuleType) -> None:
    with pytest.raises(ValidationError):
        reconcile_function.lambda_handler({"dryrun": True}, FakeLambdaContext())


# -- a pending reference the provider does not know ------------------------------------------------------------------


def test_pending_execution_whose_reference_the_provider_does_not_know_is_flagged_and_never_failed(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given an execution pending at the provider under a reference the sandbox holds no charge for
    repository = ExecutionRepository(app_db)
    created = create_execution(app_db, tenant_id, payment_rail=PaymentRail.SEPA_DEBIT, metadata={})
    repository.mark_pending(tenant_id, created.id, CTX)
    repository.mark_processing(tenant_id, created.id, CTX)
    unknown = f"sbx_{uuid4().hex[:24]}"
    execution = repository.settle_from_processing(tenant_id, created.id, CTX, provider_reference=unknown)
    assert sandbox.check_status(provider_reference=unknown).outcome is StatusOutcome.NOT_FOUND
    before = snapshot(private_admin, leases=False)
    clock = Clock()

    # When the worker runs, and again once the backoff passed
    first = worker(db, sandbox, clock=clock).run(plenty_of_time)
    again = worker(db, sandbox, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)

    # Then each run flags it for a human and leaves it pending, writing nothing but its own bookkeeping
    for report in (first, again):
        (finding,) = report.findings
        assert (finding.action, finding.flagged, finding.to_status, finding.error_code) == (
            Action.MISSING_AT_PROVIDER,
            True,
            None,
            None,
        )
        assert (finding.provider_outcome, finding.provider_reference) == (StatusOutcome.NOT_FOUND, unknown)
        assert report.flagged == (finding,)
        assert report.changes == ()
    assert snapshot(private_admin, leases=False) == before
    final = current(app_db, execution)
    assert (final.status, final.last_error_code, final.finished_at) == (ExecutionStatus.PENDING, None, None)
    lease = lease_of(private_admin, execution)
    assert (lease["attempts"], lease["last_outcome"], lease["lease_owner"]) == (2, "missing_at_provider", None)


# -- customer actions that expire (3-D Secure) ---------------------------------------------------------------------

TIMEOUT = DEFAULTS.customer_action_timeout


class Canceling(Delegating):
    """Records each cancel with the worker connection's transaction status; `before` acts just before it arrives."""

    def __init__(
        self, inner: PaymentProvider, worker_conn: Connection, before: Callable[[str], object] = lambda _ref: None
    ) -> None:
        super().__init__(inner)
        self.worker_conn = worker_conn
        self.before = before
        self.cancels: list[tuple[str, str, pq.TransactionStatus]] = []

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        self.cancels.append((reference, idempotency_key, self.worker_conn.info.transaction_status))
        self.before(reference)
        return super().cancel(reference, idempotency_key)


def awaiting_customer(app_db: Connection, provider: PaymentProvider, tenant_id: UUID) -> Execution:
    """A card charge waiting for 3-D Secure, as the execute function leaves it: pending at the provider."""
    execution = submitted(app_db, provider, tenant_id, rail=PaymentRail.CARD, instrument="tok_3ds")
    assert execution.awaiting_settlement, execution
    return execution


def deadline_of(execution: Execution) -> datetime:
    assert execution.submitted_at is not None
    return execution.submitted_at + TIMEOUT


def charge_of(sandbox: SandboxProvider, execution: Execution) -> SandboxCharge:
    found = sandbox.find_charge(idempotency_key=provider_idempotency_key(execution))
    assert found is not None
    return found


def test_customer_action_younger_than_the_timeout_is_left_then_expires_when_its_time_is_up(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a 3-D Secure charge whose customer still has two minutes
    execution = awaiting_customer(app_db, sandbox, tenant_id)
    provider = Canceling(sandbox, db)
    clock = Clock(deadline_of(execution) - timedelta(minutes=2))
    before = snapshot(private_admin, leases=False)

    # When the worker runs
    young = worker(db, provider, clock=clock).run(plenty_of_time)

    # Then it is left as it was, nothing is canceled, and it is asked again when its time is up, not after the backoff
    (finding,) = young.findings
    assert (finding.action, finding.provider_outcome, finding.to_status, finding.flagged) == (
        Action.STILL_PENDING,
        StatusOutcome.REQUIRES_ACTION,
        None,
        False,
    )
    assert finding.next_check_at == deadline_of(execution) < clock.now + DEFAULTS.recheck_after
    assert provider.cancels == []
    assert snapshot(private_admin, leases=False) == before
    assert charge_of(sandbox, execution).status is ChargeStatus.REQUIRES_ACTION

    # And the run at that moment cancels it and ends it
    due = worker(db, provider, clock=clock.advance(timedelta(minutes=2))).run(plenty_of_time)
    assert actions(due) == {execution.id: Action.EXPIRED}
    assert current(app_db, execution).last_error_code == AUTHENTICATION_EXPIRED_CODE


def test_customer_action_older_than_the_timeout_is_canceled_at_the_provider_and_ends_failed(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a 3-D Secure charge the customer did not complete within the hour
    execution = awaiting_customer(app_db, sandbox, tenant_id)
    provider = Canceling(sandbox, db)
    clock = Clock(deadline_of(execution) + timedelta(seconds=1))

    # When the worker runs
    report = worker(db, provider, clock=clock, idle_in_transaction_timeout=IDLE_LIMIT).run(plenty_of_time)

    # Then the charge was canceled at the provider, with no transaction open, under the cancel's own key
    assert provider.cancels == [
        (execution.provider_reference, provider_cancel_key(execution), pq.TransactionStatus.IDLE)
    ]
    charge = charge_of(sandbox, execution)
    assert (charge.status, charge.failure_code) == (ChargeStatus.FAILED, CANCELED_CODE)
    # And the execution ended failed with authentication_expired through the reconcile transition
    (finding,) = report.findings
    assert (finding.action, finding.to_status, finding.error_code, finding.provider_outcome) == (
        Action.EXPIRED,
        ExecutionStatus.FAILED,
        AUTHENTICATION_EXPIRED_CODE,
        StatusOutcome.CANCELED,
    )
    assert (report.counts()["expired"], report.changes) == (1, (finding,))
    final = current(app_db, execution)
    assert (final.status, final.last_error_code) == (ExecutionStatus.FAILED, AUTHENTICATION_EXPIRED_CODE)
    assert final.finished_at is not None
    # And its timeline, outbox and workflow show the reconciled event
    event = ExecutionRepository(app_db).events(tenant_id, execution.id)[-1]
    assert (event.type, event.old_status, event.new_status) == (RECONCILED, ExecutionStatus.PENDING, final.status)
    assert {key: event.metadata.get(key) for key in ("error_code", "provider_outcome", "cancel_requested")} == {
        "error_code": AUTHENTICATION_EXPIRED_CODE,
        "provider_outcome": "canceled",
        "cancel_requested": True,
    }
    assert event.metadata["customer_action_timeout_seconds"] == TIMEOUT.total_seconds()
    announced = private_admin.execute(
        "select payload from billing.billing_outbox where tenant_id = %s and event_id = %s", [tenant_id, event.id]
    ).fetchall()
    assert [(row["payload"]["new_status"], row["payload"]["error_code"]) for row in announced] == [
        ("failed", AUTHENTICATION_EXPIRED_CODE)
    ]
    assert ExecutionRepository(app_db).workflow_phases(tenant_id, execution.id)[-1]["event_id"] == event.id
    lease = lease_of(private_admin, execution)
    assert (lease["lease_owner"], lease["next_check_at"], lease["last_outcome"]) == (None, None, "expired")
    # And a later run finds nothing left to do
    assert worker(db, provider, clock=clock.advance(timedelta(hours=1))).run(plenty_of_time).findings == ()


def test_customer_completing_the_action_just_before_the_cancel_wins_and_the_execution_completes(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    # Given a customer who finishes 3-D Secure at the last second, while the worker's cancel is on its way
    execution = awaiting_customer(app_db, sandbox, tenant_id)
    provider = Canceling(sandbox, db, before=lambda reference: sandbox.settle(reference, Settlement.PAID))

    # When the worker, past the timeout, cancels
    report = worker(db, provider, clock=Clock(deadline_of(execution) + timedelta(minutes=1))).run(plenty_of_time)

    # Then the provider's answer wins: the payment stands and the execution completes
    assert len(provider.cancels) == 1
    (finding,) = report.findings
    assert (finding.action, finding.to_status, finding.provider_outcome, finding.detail) == (
        Action.COMPLETED,
        ExecutionStatus.COMPLETED,
        StatusOutcome.PAID,
        "the customer completed the action before the cancel",
    )
    assert charge_of(sandbox, execution).status is ChargeStatus.SUCCEEDED
    final = current(app_db, execution)
    assert (final.status, final.last_error_code) == (ExecutionStatus.COMPLETED, None)
    event = ExecutionRepository(app_db).events(tenant_id, execution.id)[-1]
    assert (event.type, event.new_status, event.metadata["cancel_requested"]) == (
        RECONCILED,
        ExecutionStatus.COMPLETED,
        True,
    )


def test_dry_run_reports_the_expiry_and_neither_writes_nor_cancels(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = awaiting_customer(app_db, sandbox, tenant_id)
    provider = Canceling(sandbox, db)
    clock = Clock(deadline_of(execution) + timedelta(minutes=1))
    before = snapshot(private_admin)

    planned = worker(db, provider, clock=clock).run(plenty_of_time, dry_run=True)

    assert snapshot(private_admin) == before  # leases included
    assert provider.cancels == []
    assert charge_of(sandbox, execution).status is ChargeStatus.REQUIRES_ACTION
    expected = [(execution.id, Action.EXPIRED, ExecutionStatus.FAILED, AUTHENTICATION_EXPIRED_CODE)]
    assert [(f.execution_id, f.action, f.to_status, f.error_code) for f in planned.changes] == expected
    assert planned.changes[0].detail == "a run cancels the charge at the provider first"

    applied = worker(db, provider, clock=clock).run(plenty_of_time)

    assert [(f.execution_id, f.action, f.to_status, f.error_code) for f in applied.changes] == expected
    assert len(provider.cancels) == 1


def test_cancel_that_cannot_reach_the_provider_fails_nothing_and_a_later_run_expires_the_execution(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class CancelUnreachable(Delegating):
        def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
            raise ProviderUnavailable("sandbox unreachable", provider="sandbox")

    execution = awaiting_customer(app_db, sandbox, tenant_id)
    clock = Clock(deadline_of(execution) + timedelta(minutes=1))
    before = snapshot(private_admin, leases=False)

    down = worker(db, CancelUnreachable(sandbox), clock=clock).run(plenty_of_time)

    # Its time is up but the charge could still succeed: left as it was, asked again after the plain backoff
    assert [(f.action, f.next_check_at) for f in down.findings] == [
        (Action.PROVIDER_UNAVAILABLE, clock.now + DEFAULTS.recheck_after)
    ]
    assert snapshot(private_admin, leases=False) == before
    assert charge_of(sandbox, execution).status is ChargeStatus.REQUIRES_ACTION

    back = worker(db, sandbox, clock=clock.advance(DEFAULTS.recheck_after)).run(plenty_of_time)

    assert actions(back) == {execution.id: Action.EXPIRED}
    assert charge_of(sandbox, execution).failure_code == CANCELED_CODE


def test_run_out_of_time_between_the_check_and_the_cancel_releases_the_execution_for_the_next_run(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = awaiting_customer(app_db, sandbox, tenant_id)
    provider = Canceling(sandbox, db)
    clock = Clock(deadline_of(execution) + timedelta(minutes=1))

    # Time for the claim and the check; none left for the cancel
    cut_short = worker(db, provider, clock=clock).run(Budget(2))

    assert cut_short.stop_reason is StopReason.TIME_BUDGET
    assert [f.action for f in cut_short.findings] == [Action.STILL_PENDING]
    assert provider.cancels == []
    assert current(app_db, execution).status is ExecutionStatus.PENDING
    lease = lease_of(private_admin, execution)
    assert (lease["lease_owner"], lease["attempts"], lease["next_check_at"]) == (None, 0, None)

    # The next run, on the same clock, cancels and ends it at once
    rest = worker(db, provider, clock=clock).run(plenty_of_time)
    assert actions(rest) == {execution.id: Action.EXPIRED}
    assert len(provider.cancels) == 1


def test_charge_canceled_by_a_run_that_died_before_recording_it_ends_failed_on_a_later_run(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class DiesAfterCancel(Delegating):
        def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
            super().cancel(reference, idempotency_key)
            raise WorkerDied

    execution = awaiting_customer(app_db, sandbox, tenant_id)
    clock = Clock(deadline_of(execution) + timedelta(minutes=1))
    with pytest.raises(WorkerDied):
        worker(db, DiesAfterCancel(sandbox), clock=clock).run(plenty_of_time)
    assert current(app_db, execution).status is ExecutionStatus.PENDING

    # Once the dead run's lease lapsed, the next run finds the charge canceled and ends the execution
    report = worker(db, sandbox, clock=clock.advance(DEFAULTS.lease_duration)).run(plenty_of_time)

    (finding,) = report.findings
    assert (finding.action, finding.provider_outcome, finding.error_code) == (
        Action.FAILED,
        StatusOutcome.CANCELED,
        CANCELED_AT_PROVIDER_CODE,
    )
    final = current(app_db, execution)
    assert (final.status, final.last_error_code) == (ExecutionStatus.FAILED, CANCELED_AT_PROVIDER_CODE)


def test_provider_that_does_not_cancel_leaves_the_execution_flagged_and_backs_off(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    class IgnoresCancel(Delegating):
        def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
            return self.inner.check_status(provider_reference=reference)

    execution = awaiting_customer(app_db, sandbox, tenant_id)
    clock = Clock(deadline_of(execution) + timedelta(minutes=1))
    before = snapshot(private_admin, leases=False)

    report = worker(db, IgnoresCancel(sandbox), clock=clock).run(plenty_of_time)

    # The charge could still succeed: nothing is failed; a human is told, and the cancel is tried after the backoff
    (finding,) = report.findings
    assert (finding.action, finding.flagged, finding.provider_outcome, finding.next_check_at) == (
        Action.ERROR,
        True,
        StatusOutcome.REQUIRES_ACTION,
        clock.now + DEFAULTS.recheck_after,
    )
    assert snapshot(private_admin, leases=False) == before
    assert str(lease_of(private_admin, execution)["last_outcome"]).startswith("error: the provider still waits")
