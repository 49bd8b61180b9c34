"""The reconciliation worker: follows executions that wait on a provider to a final state by asking the provider.

Two sweeps per run, each in batches, each batch one transaction that claims its rows with FOR UPDATE SKIP LOCKED
(db.reconciliation_queries), so parallel workers never take the same execution:

* Settlement: executions pending at the provider (submitted, awaiting settlement) for longer than `pending_after`.
  check_status PAID or FAILED applies `reconcile` (pending -> completed | failed); STILL_PENDING and REQUIRES_ACTION
  leave it for a later run, flagged as overdue once it has waited longer than `max_pending_age`.
* Recovery: executions stuck in processing for longer than `stuck_after`: the Lambda that submitted died
  mid-call, or the last attempt's outcome was unknown. The provider is asked by idempotency key (the reference
  never came back) and its answer is applied: PAID completes, FAILED fails, STILL_PENDING / REQUIRES_ACTION move
  the execution to pending settlement. The reconciler never resubmits: a charge is only ever made by the driver.
  NOT_FOUND is the provider stating that nothing was charged under the key (providers raise, never answer
  NOT_FOUND, when they cannot look), so the execution fails with `charge_not_found`: nothing moved, the caller
  learns it, and no money moves later behind the customer's back. A charge needs a new execution.

A run is idempotent: what it settled is no longer pending or processing, and a re-run finds nothing to do for it.
A dry run does the same work inside transactions that are rolled back, so the report lists exactly the changes a
real run would make and nothing is written. The run checks its time budget before every claim and every provider
call, and stops cleanly (committing what it did) when it is spent.

While a batch holds its rows, a webhook for one of them waits for the lock (up to the session's lock_timeout), then
finds the execution settled and changes nothing; `batch_size` keeps that wait short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, assert_never
from uuid import UUID

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository, execution_from_row
from billing.db.reconciliation_queries import Cursor, claim_awaiting_settlement, claim_stuck_processing
from billing.db.tenancy import system_transaction
from billing.domain.errors import BillingError, ProviderUnavailable, TransitionConflict
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import adapter_for
from billing.rails.ports import PaymentProvider
from billing.rails.results import StatusCheck, StatusOutcome

# Milliseconds of run time left; no claim and no provider call starts once it is zero or less.
TimeBudget = Callable[[], float]
Clock = Callable[[], datetime]

# last_error_code of an execution recovered from processing that the provider says it never charged.
CHARGE_NOT_FOUND_CODE = "charge_not_found"


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """How old an execution must be before it is looked at, and how much one batch holds."""

    # Webhooks usually report a settlement within seconds; polling younger executions would mostly ask in vain.
    pending_after: timedelta = timedelta(minutes=5)
    # SEPA and ACH debits settle within a few business days; a week without an answer needs a human.
    max_pending_age: timedelta = timedelta(days=7)
    # Far beyond the longest a live submit can take (the execute function stops at 25 s, the retry consumer at
    # 60 s), so a drive still in flight is never mistaken for a dead one.
    stuck_after: timedelta = timedelta(minutes=10)
    # Rows stay locked while their batch asks the provider; small batches keep a racing webhook's wait short.
    batch_size: int = 20

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")
        if min(self.pending_after, self.max_pending_age, self.stuck_after) < timedelta(0):
            raise ValueError("ages cannot be negative")


class Sweep(StrEnum):
    SETTLEMENT = "settlement"  # pending at the provider
    RECOVERY = "recovery"  # stuck in processing


class Action(StrEnum):
    """What the worker did (or, in a dry run, would do) with one execution."""

    COMPLETED = "completed"
    FAILED = "failed"
    SETTLEMENT_PENDING = "settlement_pending"  # recovered from processing; now awaits settlement
    STILL_PENDING = "still_pending"  # the provider has no final answer yet: left for a later run
    MISSING_AT_PROVIDER = "missing_at_provider"  # pending with a reference the provider does not know: left, flagged
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # could not ask: left for a later run
    CONFLICT = "conflict"  # someone else moved it first: nothing written
    ERROR = "error"  # a domain error (misconfigured provider, refused transition): left, logged


class StopReason(StrEnum):
    DRAINED = "drained"
    TIME_BUDGET = "time_budget"


@dataclass(frozen=True, slots=True)
class Finding:
    """One execution examined in a run."""

    sweep: Sweep
    tenant_id: UUID
    execution_id: UUID
    action: Action
    from_status: ExecutionStatus
    # The status written (or that a dry run would write); None when the execution was left as it was.
    to_status: ExecutionStatus | None
    provider_outcome: StatusOutcome | None
    provider_reference: str | None
    error_code: str | None
    waited_seconds: float
    # Waiting longer than max_pending_age, or unknown to the provider: a human should look.
    flagged: bool = False
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep.value,
            "tenant_id": str(self.tenant_id),
            "execution_id": str(self.execution_id),
            "action": self.action.value,
            "from_status": self.from_status.value,
            "to_status": self.to_status.value if self.to_status else None,
            "provider_outcome": self.provider_outcome.value if self.provider_outcome else None,
            "provider_reference": self.provider_reference,
            "error_code": self.error_code,
            "waited_seconds": round(self.waited_seconds, 1),
            "flagged": self.flagged,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    dry_run: bool
    batches: int
    stop_reason: StopReason
    findings: tuple[Finding, ...]

    @property
    def changes(self) -> tuple[Finding, ...]:
        """Executions whose status changed (or, in a dry run, would change)."""
        return tuple(f for f in self.findings if f.to_status is not None)

    @property
    def flagged(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.flagged)

    def counts(self) -> dict[str, int]:
        """Examined executions per action, every action present (zero included) so metrics are continuous."""
        counted = Counter(f.action for f in self.findings)
        return {action.value: counted[action] for action in Action}

    def summary(self) -> dict[str, Any]:
        """The run's one log line and the handler's result."""
        return {
            "dry_run": self.dry_run,
            "batches": self.batches,
            "stop_reason": self.stop_reason.value,
            "examined": len(self.findings),
            "changed": len(self.changes),
            "flagged": len(self.flagged),
            "counts": self.counts(),
        }


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ReconciliationWorker:
    """Runs on one connection; run several (each with its own connection) in parallel if the backlog needs it."""

    def __init__(
        self,
        conn: Connection,
        providers: Mapping[str, PaymentProvider],
        *,
        config: ReconcileConfig | None = None,
        clock: Clock = _utc_now,
        repository: ExecutionRepository | None = None,
    ) -> None:
        self._conn = conn
        self._providers = providers
        self._config = config or ReconcileConfig()
        self._clock = clock
        # The repository must share the connection: its transitions nest inside the batch's transaction.
        self._repository = repository or ExecutionRepository(conn)
        self._context = WorkflowWriteContext.system()

    def run(self, time_budget: TimeBudget, *, dry_run: bool = False) -> ReconciliationReport:
        """Both sweeps, batch by batch, until nothing is left or the time budget is spent."""
        now = self._clock()
        findings: list[Finding] = []
        batches = 0
        for sweep in (Sweep.SETTLEMENT, Sweep.RECOVERY):
            cursor: Cursor | None = Cursor.start()
            while cursor is not None:
                if time_budget() <= 0:
                    return ReconciliationReport(dry_run, batches, StopReason.TIME_BUDGET, tuple(findings))
                cursor, examined, claimed, out_of_time = self._batch(sweep, now, cursor, time_budget, dry_run=dry_run)
                batches += 1 if claimed else 0
                findings.extend(examined)
                if out_of_time:
                    return ReconciliationReport(dry_run, batches, StopReason.TIME_BUDGET, tuple(findings))
        return ReconciliationReport(dry_run, batches, StopReason.DRAINED, tuple(findings))

    def _batch(
        self, sweep: Sweep, now: datetime, after: Cursor, time_budget: TimeBudget, *, dry_run: bool
    ) -> tuple[Cursor | None, list[Finding], int, bool]:
        """Claim and settle one batch: (cursor of the next batch or None, findings, rows claimed, out of time)."""
        config = self._config
        findings: list[Finding] = []
        # A dry run's batch is rolled back whole: the changes it reports were made and undone, never committed.
        with self._conn.transaction(force_rollback=dry_run), system_transaction(self._conn):
            match sweep:
                case Sweep.SETTLEMENT:
                    rows = claim_awaiting_settlement(
                        self._conn, cutoff=now - config.pending_after, after=after, limit=config.batch_size
                    )
                case Sweep.RECOVERY:
                    rows = claim_stuck_processing(
                        self._conn, cutoff=now - config.stuck_after, after=after, limit=config.batch_size
                    )
                case _:
                    assert_never(sweep)
            if not rows:
                return None, findings, 0, False
            for row in rows:
                if time_budget() <= 0:
                    # The rest stay as they are; their locks go with this transaction.
                    return None, findings, len(rows), True
                findings.append(self._examine(sweep, execution_from_row(row), now))
            last = rows[-1]
            key = "submitted_at" if sweep is Sweep.SETTLEMENT else "updated_at"
            return Cursor(last[key], last["tenant_id"], last["id"]), findings, len(rows), False

    def _examine(self, sweep: Sweep, execution: Execution, now: datetime) -> Finding:
        since = execution.submitted_at if sweep is Sweep.SETTLEMENT else execution.updated_at
        waited = (now - (since or execution.created_at)).total_seconds()

        def finding(
            action: Action,
            check: StatusCheck | None = None,
            *,
            written: Execution | None = None,
            flagged: bool = False,
            detail: str | None = None,
        ) -> Finding:
            return Finding(
                sweep=sweep,
                tenant_id=execution.tenant_id,
                execution_id=execution.id,
                action=action,
                from_status=execution.status,
                to_status=written.status if written else None,
                provider_outcome=check.outcome if check else None,
                provider_reference=(check.provider_reference if check else None) or execution.provider_reference,
                error_code=check.error_code if check else None,
                waited_seconds=waited,
                flagged=flagged,
                detail=detail,
            )

        try:
            check = adapter_for(execution, self._providers).check_status(execution)
        except ProviderUnavailable as exc:
            return finding(Action.PROVIDER_UNAVAILABLE, detail=exc.detail)
        except BillingError as exc:
            return finding(Action.ERROR, detail=f"{exc.code}: {exc.detail}")
        try:
            match sweep:
                case Sweep.SETTLEMENT:
                    action, written = self._settle(execution, check, waited)
                case Sweep.RECOVERY:
                    action, written = self._recover(execution, check)
                case _:
                    assert_never(sweep)
        except TransitionConflict as exc:
            return finding(Action.CONFLICT, check, detail=exc.detail)
        except BillingError as exc:
            return finding(Action.ERROR, check, detail=f"{exc.code}: {exc.detail}")
        flagged = action is Action.MISSING_AT_PROVIDER or (
            action is Action.STILL_PENDING and waited > self._config.max_pending_age.total_seconds()
        )
        return finding(action, check, written=written, flagged=flagged)

    def _settle(self, execution: Execution, check: StatusCheck, waited: float) -> tuple[Action, Execution | None]:
        """A pending execution: apply a final answer, leave it otherwise."""
        repo, tenant, eid, ctx = self._repository, execution.tenant_id, execution.id, self._context
        details = {"correlation_id": execution.correlation_id}
        match check.outcome:
            case StatusOutcome.PAID:
                metadata = _settlement_metadata(check, waited)
                written = repo.reconcile(
                    tenant, eid, ctx, outcome=ExecutionStatus.COMPLETED, metadata=metadata, **details
                )
                return Action.COMPLETED, written
            case StatusOutcome.FAILED:
                metadata = _settlement_metadata(check, waited)
                written = repo.reconcile(
                    tenant,
                    eid,
                    ctx,
                    outcome=ExecutionStatus.FAILED,
                    error_code=check.error_code,
                    metadata=metadata,
                    **details,
                )
                return Action.FAILED, written
            case StatusOutcome.STILL_PENDING | StatusOutcome.REQUIRES_ACTION:
                return Action.STILL_PENDING, None
            case StatusOutcome.NOT_FOUND:
                # We hold a reference the provider gave us and it no longer knows it: a human must find out why.
                return Action.MISSING_AT_PROVIDER, None
            case _:
                assert_never(check.outcome)

    def _recover(self, execution: Execution, check: StatusCheck) -> tuple[Action, Execution]:
        """An execution stuck in processing: apply whatever the provider knows, never submit again."""
        repo, tenant, eid, ctx = self._repository, execution.tenant_id, execution.id, self._context
        details: dict[str, Any] = {
            "correlation_id": execution.correlation_id,
            "metadata": {"recovered_from": "processing", "provider_outcome": check.outcome.value},
        }
        match check.outcome:
            case StatusOutcome.PAID:
                assert check.provider_reference is not None
                return Action.COMPLETED, repo.mark_completed(
                    tenant, eid, ctx, provider_reference=check.provider_reference, **details
                )
            case StatusOutcome.FAILED:
                return Action.FAILED, repo.mark_failed(
                    tenant,
                    eid,
                    ctx,
                    error_code=check.error_code,
                    provider_reference=check.provider_reference,
                    **details,
                )
            case StatusOutcome.STILL_PENDING | StatusOutcome.REQUIRES_ACTION:
                assert check.provider_reference is not None
                if check.outcome is StatusOutcome.REQUIRES_ACTION:
                    details["metadata"]["requires_action"] = True
                return Action.SETTLEMENT_PENDING, repo.settle_from_processing(
                    tenant, eid, ctx, provider_reference=check.provider_reference, **details
                )
            case StatusOutcome.NOT_FOUND:
                details["metadata"]["previous_error_code"] = execution.last_error_code
                return Action.FAILED, repo.mark_failed(tenant, eid, ctx, error_code=CHARGE_NOT_FOUND_CODE, **details)
            case _:
                assert_never(check.outcome)


def _settlement_metadata(check: StatusCheck, waited: float) -> dict[str, Any]:
    return {
        "provider_outcome": check.outcome.value,
        "settled_at": check.settled_at.isoformat() if check.settled_at else None,
        "waited_seconds": round(waited, 1),
    }
