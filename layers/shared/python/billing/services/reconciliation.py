"""The reconciliation worker: follows executions that wait on a provider to a final state by asking the provider.

Two sweeps per run:

* Settlement: executions pending at the provider (submitted, awaiting settlement) for longer than `pending_after`.
  check_status PAID or FAILED applies `reconcile` (pending -> completed | failed); STILL_PENDING leaves it for a
  later check, flagged as overdue once it has waited longer than `max_pending_age`. NOT_FOUND for a reference the
  provider gave us leaves it too, flagged: only a human can find out why. REQUIRES_ACTION (3-D Secure, a redirect)
  leaves it until `customer_action_timeout` after submission (measured like every age here: the worker's clock
  minus submitted_at), its next check never later than that; then the worker cancels the charge at the provider
  and applies the answer: CANCELED ends the execution failed with `authentication_expired`; PAID (the customer
  finished at the last second) completes it, the payment stands.
  An execution is failed only once the provider says the charge can no longer succeed, so money never moves behind
  a failed execution.
* Recovery: executions stuck in processing for longer than `stuck_after`: the Lambda that submitted died
  mid-call, or the last attempt's outcome was unknown. The provider is asked by idempotency key (the reference
  never came back) and its answer is applied: PAID completes, FAILED fails, STILL_PENDING / REQUIRES_ACTION move
  the execution to pending settlement. The reconciler never resubmits: a charge is only ever made by the driver.
  NOT_FOUND is the provider stating that nothing was charged under the key (providers raise, never answer
  NOT_FOUND, when they cannot look), so the execution fails with `charge_not_found`: nothing moved, the caller
  learns it, and no money moves later behind the customer's back. A charge needs a new execution.

No provider call is made inside a database transaction. Each batch goes through three phases (the SQL is in
db.reconciliation_queries):

1. Claim, one short transaction: lease up to `batch_size` executions no live lease holds (FOR UPDATE SKIP LOCKED),
   commit. While a lease is live no other worker asks about its execution; the executions of a worker that died
   are claimed again once its leases lapse (`lease_duration`).
2. Ask check_status, execution by execution, with no transaction open (and cancel, when the customer's time is
   up): a slow provider costs time and nothing else. No lock waits on it and no session limit ends it
   (idle_in_transaction_session_timeout would end the session, roll back every answer already received, and leave
   the same batch to block the next run).
3. Record each answer in its own short transaction: the transition, through the repository's status guard (a
   webhook that settled the execution meanwhile wins; the worker then writes nothing), and the end of the lease.
   An execution left as it was (still pending, provider unavailable, an error) gets its next check scheduled
   with exponential backoff (`recheck_after`, doubling up to `recheck_cap`); it is claimed after the executions
   nobody has asked about yet, so one slow or failing reference never holds up the rest.

A run is idempotent: what it settled is no longer pending or processing, and a re-run finds nothing to do for it.
A dry run reads the executions a run would claim without leasing them, asks the provider, and makes each change
in a transaction that is rolled back, so the report lists exactly the changes a real run would make and nothing
is written. It cancels nothing: an expired customer action is reported as the expiry a run would record if the
provider accepted the cancel. The run checks its time budget before every claim and every provider call; executions
it claimed and had no time to ask about are released at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, assert_never
from uuid import UUID, uuid4

from psycopg import pq

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository, execution_from_row
from billing.db.reconciliation_queries import (
    AWAITING_SETTLEMENT,
    STUCK_PROCESSING,
    Claimed,
    Cursor,
    Lease,
    SweepSql,
    back_off,
    claim,
    finish,
    hold,
    release,
    retire_stale_schedules,
)
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.backoff import BackoffPolicy
from billing.domain.errors import BillingError, ProviderUnavailable, TransitionConflict
from billing.domain.execution import Execution
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.adapters import adapter_for
from billing.rails.ports import PaymentProvider, provider_cancel_key
from billing.rails.results import StatusCheck, StatusOutcome

# Milliseconds of run time left; no claim and no provider call starts once it is zero or less.
TimeBudget = Callable[[], float]
Clock = Callable[[], datetime]

# last_error_code of an execution recovered from processing that the provider says it never charged.
CHARGE_NOT_FOUND_CODE = "charge_not_found"
# last_error_code of an execution whose customer did not act in time; its charge was canceled at the provider.
AUTHENTICATION_EXPIRED_CODE = "authentication_expired"
# last_error_code of an execution whose charge was found canceled at the provider without this run's cancel (an
# operator at the provider, or a run that died between its cancel and its record).
CANCELED_AT_PROVIDER_CODE = "canceled_at_provider"

_SET_IDLE_LIMIT: Final = "select set_config('idle_in_transaction_session_timeout', %s, true)"


@dataclass(frozen=True, slots=True)
class ReconcileConfig:
    """How old an execution must be before it is looked at, how much one batch holds, and when to ask again."""

    # Webhooks usually report a settlement within seconds; polling younger executions would mostly ask in vain.
    pending_after: timedelta = timedelta(minutes=5)
    # SEPA and ACH debits settle within a few business days; a week without an answer needs a human.
    max_pending_age: timedelta = timedelta(days=7)
    # Far beyond the longest a live submit can take (the execute function stops at 25 s, the retry consumer at
    # 60 s), so a drive still in flight is never mistaken for a dead one.
    stuck_after: timedelta = timedelta(minutes=10)
    # How long a customer has for 3-D Secure or a redirect after submission; after it the charge is canceled and the
    # execution fails. Challenge screens time out within minutes, so after an hour the customer has left the
    # checkout, and an hour cuts off nobody still authenticating.
    customer_action_timeout: timedelta = timedelta(hours=1)
    # Executions of one batch are leased together and asked about one after another; a small batch leaves less
    # leased and unasked when a run stops or dies.
    batch_size: int = 20
    # Longer than a whole run (the reconcile function stops after 4 minutes), so a live worker's leases never lapse
    # under it; a dead worker's executions wait this long before another worker takes them.
    lease_duration: timedelta = timedelta(minutes=10)
    # A little under the 5-minute schedule, so an execution left as it was is asked again on the next run, then
    # half as often each time: a debit that takes days to settle is asked about hourly, not 288 times a day.
    recheck_after: timedelta = timedelta(minutes=4)
    recheck_cap: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be positive")
        if min(self.pending_after, self.max_pending_age, self.stuck_after) < timedelta(0):
            raise ValueError("ages cannot be negative")
        if self.customer_action_timeout <= timedelta(0):
            raise ValueError("customer_action_timeout must be positive")
        if self.lease_duration <= timedelta(0):
            raise ValueError("lease_duration must be positive")
        self.recheck_policy()  # raises ValueError unless 0 < recheck_after <= recheck_cap

    def recheck_policy(self) -> BackoffPolicy:
        return BackoffPolicy(self.recheck_after.total_seconds(), self.recheck_cap.total_seconds())


class Sweep(StrEnum):
    SETTLEMENT = "settlement"  # pending at the provider
    RECOVERY = "recovery"  # stuck in processing


class Action(StrEnum):
    """What the worker did (or, in a dry run, would do) with one execution."""

    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"  # the customer did not act in time: canceled at the provider, failed authentication_expired
    SETTLEMENT_PENDING = "settlement_pending"  # recovered from processing; now awaits settlement
    STILL_PENDING = "still_pending"  # the provider has no final answer yet: left for a later check
    MISSING_AT_PROVIDER = "missing_at_provider"  # pending with a reference the provider does not know: left, flagged
    PROVIDER_UNAVAILABLE = "provider_unavailable"  # could not ask: left for a later check
    CONFLICT = "conflict"  # someone else moved it first: nothing written
    ERROR = "error"  # a domain error (misconfigured provider, refused transition) or a failed call: left, logged
    LEASE_LOST = "lease_lost"  # the lease lapsed and another worker took the execution over: nothing written


class StopReason(StrEnum):
    DRAINED = "drained"
    TIME_BUDGET = "time_budget"


class SettlementStep(StrEnum):
    """What the settlement sweep does with an execution pending at the provider, given the provider's answer."""

    COMPLETE = "complete"  # reconcile -> completed
    FAIL = "fail"  # reconcile -> failed with the provider's code
    EXPIRE = "expire"  # our cancel took: reconcile -> failed authentication_expired
    FAIL_CANCELED = "fail_canceled"  # canceled at the provider without our cancel: reconcile -> failed
    CANCEL = "cancel"  # the customer's time is up and the charge still waits: cancel it, then decide on the answer
    LEAVE = "leave"  # no final answer yet: ask again later
    CANCEL_REFUSED = "cancel_refused"  # still waiting for the customer after our cancel: left, flagged
    FLAG_MISSING = "flag_missing"  # the provider does not know the reference it gave us: left, flagged


def settlement_step(outcome: StatusOutcome, *, customer_action_expired: bool, cancel_sent: bool) -> SettlementStep:
    """The settlement sweep's decision: `outcome` is the provider's latest answer (the cancel's, once one was sent).

    The execution is failed only on an answer that says the charge can no longer succeed (FAILED, CANCELED), never
    because time ran out: a charge still waiting for the customer is canceled first, and if the customer finished
    before the cancel arrived the payment stands.
    """
    match outcome:
        case StatusOutcome.PAID:
            # After a cancel too: the customer completed the action first, the money moved.
            return SettlementStep.COMPLETE
        case StatusOutcome.FAILED:
            return SettlementStep.FAIL
        case StatusOutcome.CANCELED:
            # Without our cancel in this run it is not ours to call expired (an operator at the provider, or a run
            # that died before it recorded its cancel); either way the charge can never succeed.
            return SettlementStep.EXPIRE if cancel_sent else SettlementStep.FAIL_CANCELED
        case StatusOutcome.STILL_PENDING:
            return SettlementStep.LEAVE
        case StatusOutcome.REQUIRES_ACTION:
            if not customer_action_expired:
                return SettlementStep.LEAVE
            return SettlementStep.CANCEL_REFUSED if cancel_sent else SettlementStep.CANCEL
        case StatusOutcome.NOT_FOUND:
            # We hold a reference the provider gave us and it no longer knows it: failing the execution would be a
            # guess (the charge may exist under another account or region); a human must find out why.
            return SettlementStep.FLAG_MISSING
        case _:
            assert_never(outcome)


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
    # Waiting longer than max_pending_age, unknown to the provider, a cancel the provider did not carry out, or a
    # call that failed unexpectedly.
    flagged: bool = False
    detail: str | None = None
    # When an execution left as it was will be asked about again (None if settled, and in a dry run).
    next_check_at: datetime | None = None

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
            "next_check_at": self.next_check_at.isoformat() if self.next_check_at else None,
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


# Per sweep, the fresh walk first, then the executions due for a next check.
_WALKS: Final = ((Sweep.SETTLEMENT, False), (Sweep.SETTLEMENT, True), (Sweep.RECOVERY, False), (Sweep.RECOVERY, True))


def _sweep_sql(sweep: Sweep) -> SweepSql:
    match sweep:
        case Sweep.SETTLEMENT:
            return AWAITING_SETTLEMENT
        case Sweep.RECOVERY:
            return STUCK_PROCESSING
        case _:
            assert_never(sweep)


@dataclass(slots=True)
class _Run:
    """One run's lease owner and what it found so far."""

    lease_owner: str
    dry_run: bool
    time_budget: TimeBudget
    findings: list[Finding] = field(default_factory=list)
    batches: int = 0

    def report(self, stop_reason: StopReason) -> ReconciliationReport:
        return ReconciliationReport(self.dry_run, self.batches, stop_reason, tuple(self.findings))


@dataclass(frozen=True, slots=True)
class _Examined:
    """An execution being examined, and how to describe what happened to it."""

    sweep: Sweep
    claimed: Claimed
    execution: Execution
    waited: float

    def finding(
        self,
        action: Action,
        check: StatusCheck | None = None,
        *,
        written: Execution | None = None,
        flagged: bool = False,
        detail: str | None = None,
    ) -> Finding:
        execution = self.execution
        return Finding(
            sweep=self.sweep,
            tenant_id=execution.tenant_id,
            execution_id=execution.id,
            action=action,
            from_status=execution.status,
            to_status=written.status if written else None,
            provider_outcome=check.outcome if check else None,
            provider_reference=(check.provider_reference if check else None) or execution.provider_reference,
            # What a failure recorded (authentication_expired, charge_not_found), else the provider's code.
            error_code=written.last_error_code
            if written and written.status is ExecutionStatus.FAILED
            else (check.error_code if check else None),
            waited_seconds=self.waited,
            flagged=flagged,
            detail=detail,
        )


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
        idle_in_transaction_timeout: timedelta | None = None,
    ) -> None:
        """`idle_in_transaction_timeout` bounds the idle time inside the worker's own transactions (None keeps the
        10 s every scope sets). Nothing waits inside them, so a tight bound costs nothing; tests set one far below
        a slow provider's answer time to prove that no provider call happens inside a transaction."""
        self._conn = conn
        self._providers = providers
        self._config = config or ReconcileConfig()
        self._recheck = self._config.recheck_policy()
        self._clock = clock
        # The repository must share the connection: its transitions nest inside the recording transaction.
        self._repository = repository or ExecutionRepository(conn)
        self._context = WorkflowWriteContext.system()
        self._idle_limit_ms = (
            None
            if idle_in_transaction_timeout is None
            else max(1, idle_in_transaction_timeout // timedelta(milliseconds=1))
        )

    def run(self, time_budget: TimeBudget, *, dry_run: bool = False) -> ReconciliationReport:
        """Both sweeps, batch by batch, until nothing is left or the time budget is spent."""
        if self._conn.info.transaction_status is not pq.TransactionStatus.IDLE:
            # Inside a caller's transaction every phase would be a savepoint of it, provider calls included.
            raise RuntimeError("the reconciliation worker commits phase by phase; run it outside any transaction")
        state = _Run(lease_owner=f"reconcile:{uuid4()}", dry_run=dry_run, time_budget=time_budget)
        for sweep, due in _WALKS:
            cursor: Cursor | None = Cursor.start()
            while cursor is not None:
                if time_budget() <= 0:
                    return state.report(StopReason.TIME_BUDGET)
                cursor, out_of_time = self._batch(state, sweep, due, cursor)
                if out_of_time:
                    return state.report(StopReason.TIME_BUDGET)
        return state.report(StopReason.DRAINED)

    def _batch(self, state: _Run, sweep: Sweep, due: bool, after: Cursor) -> tuple[Cursor | None, bool]:
        """Claim one batch and examine it: (cursor of the next batch or None, out of time)."""
        config, queries = self._config, _sweep_sql(sweep)
        now = self._clock()
        age = config.pending_after if sweep is Sweep.SETTLEMENT else config.stuck_after
        # A dry run leases nothing: it only reads what a run would claim.
        lease = Lease(state.lease_owner, None if state.dry_run else now + config.lease_duration)
        # Phase 1: claim and commit, so the leases hold (and nothing stays locked) while the provider is asked.
        with self._transaction():
            if due and not state.dry_run and after == Cursor.start():
                retire_stale_schedules(self._conn, queries, now=now)
            batch = claim(
                self._conn,
                queries,
                due=due,
                now=now,
                cutoff=now - age,
                after=after,
                limit=config.batch_size,
                lease=lease,
                unpolled=[name for name, provider in self._providers.items() if not provider.polls_status],
            )
        if batch.walked_to is None:
            return None, False
        if batch.claimed:
            state.batches += 1
        for index, claimed in enumerate(batch.claimed):
            if state.time_budget() <= 0:
                if not state.dry_run:
                    # Free at once rather than when the leases lapse: the next run may ask about them straight away.
                    with self._transaction():
                        release(self._conn, batch.claimed[index:], state.lease_owner)
                return None, True
            state.findings.append(self._examine(state, sweep, claimed, now))
        return batch.walked_to, False

    def _examine(self, state: _Run, sweep: Sweep, claimed: Claimed, now: datetime) -> Finding:
        execution = execution_from_row(claimed.row)
        since = execution.submitted_at if sweep is Sweep.SETTLEMENT else execution.updated_at
        examined = _Examined(sweep, claimed, execution, (now - (since or execution.created_at)).total_seconds())
        cancel_sent = False
        # Phase 2: no transaction is open here, however long the provider takes.
        try:
            check = adapter_for(execution, self._providers).check_status(execution)
            if not state.dry_run and self._step(examined, check, cancel_sent=False) is SettlementStep.CANCEL:
                if state.time_budget() <= 0:
                    # No time for a second provider call: released as if not asked, so the next run cancels it.
                    detail = "the customer's time is up; no time left in this run to cancel the charge"
                    return self._released(state, examined, examined.finding(Action.STILL_PENDING, check, detail=detail))
                check, cancel_sent = self._cancel(execution, check), True
        except ProviderUnavailable as exc:
            return self._left(state, examined, examined.finding(Action.PROVIDER_UNAVAILABLE, detail=exc.detail))
        except BillingError as exc:
            return self._left(state, examined, examined.finding(Action.ERROR, detail=f"{exc.code}: {exc.detail}"))
        except Exception as exc:
            # One execution whose check fails unexpectedly must not end the sweep, nor (claimed first again on every
            # run) keep the executions behind it waiting: it is backed off like any other failure, and flagged.
            detail = f"{type(exc).__name__}: {exc}"
            return self._left(state, examined, examined.finding(Action.ERROR, detail=detail, flagged=True))
        return self._record(state, examined, check, cancel_sent=cancel_sent)

    def _cancel(self, execution: Execution, check: StatusCheck) -> StatusCheck:
        """Cancel the charge of an execution whose customer did not act in time; the provider's answer."""
        # check_status went through adapter_for, so the provider is configured; the check named the charge.
        provider = self._providers[execution.payment_provider].for_tenant(execution.tenant_id)
        reference = execution.provider_reference or check.provider_reference
        assert reference is not None, "a charge waiting for the customer has a reference"
        return provider.cancel(reference, provider_cancel_key(execution))

    def _record(self, state: _Run, examined: _Examined, check: StatusCheck, *, cancel_sent: bool) -> Finding:
        """Phase 3: the provider's answer and the end of the lease, in one short transaction (rolled back if dry)."""
        execution, owner = examined.execution, state.lease_owner
        try:
            with translated_guard_errors(), self._transaction(execution.tenant_id, rollback=state.dry_run):
                if not state.dry_run and not hold(self._conn, execution.tenant_id, execution.id, owner):
                    return examined.finding(
                        Action.LEASE_LOST, check, detail="the lease lapsed; another worker owns the execution"
                    )
                try:
                    action, written, detail = self._apply(
                        examined, check, cancel_sent=cancel_sent, dry_run=state.dry_run
                    )
                except TransitionConflict as exc:
                    # Moved on without this worker (a webhook, the retry consumer): nothing more to ask in this status.
                    found = examined.finding(Action.CONFLICT, check, detail=exc.detail)
                else:
                    flagged = action in (Action.MISSING_AT_PROVIDER, Action.ERROR) or (
                        action is Action.STILL_PENDING
                        and examined.waited > self._config.max_pending_age.total_seconds()
                    )
                    found = examined.finding(action, check, written=written, flagged=flagged, detail=detail)
                if state.dry_run:
                    return found
                if found.to_status is not None or found.action is Action.CONFLICT:
                    finish(self._conn, execution.tenant_id, execution.id, owner, outcome=found.action.value)
                    return found
                next_check_at = self._next_check_at(examined, check.outcome)
                outcome = found.action.value if found.detail is None else f"{found.action.value}: {found.detail}"
                back_off(
                    self._conn,
                    execution.tenant_id,
                    execution.id,
                    owner,
                    outcome=outcome,
                    next_check_at=next_check_at,
                )
                return replace(found, next_check_at=next_check_at)
        except BillingError as exc:
            # A guard refused the change, in its statement or at commit: all of it rolled back; ask again later.
            failed = examined.finding(Action.ERROR, check, detail=f"{exc.code}: {exc.detail}")
            return self._left(state, examined, failed)

    def _left(self, state: _Run, examined: _Examined, found: Finding) -> Finding:
        """The execution stays as it was: end the lease and schedule the next check, in a transaction of its own."""
        if state.dry_run:
            return found
        execution = examined.execution
        next_check_at = self._next_check_at(examined, found.provider_outcome)
        outcome = found.action.value if found.detail is None else f"{found.action.value}: {found.detail}"
        with self._transaction(execution.tenant_id):
            backed_off = back_off(
                self._conn,
                execution.tenant_id,
                execution.id,
                state.lease_owner,
                outcome=outcome,
                next_check_at=next_check_at,
            )
        if not backed_off:
            return replace(found, action=Action.LEASE_LOST, detail=f"lease lapsed before {outcome} was recorded")
        return replace(found, next_check_at=next_check_at)

    def _released(self, state: _Run, examined: _Examined, found: Finding) -> Finding:
        """End the lease, schedule and attempts unchanged: the execution is due again as if it had not been asked."""
        with self._transaction():
            release(self._conn, [examined.claimed], state.lease_owner)
        return found

    def _next_check_at(self, examined: _Examined, outcome: StatusOutcome | None) -> datetime:
        """The backoff's next check; for a charge waiting for the customer, no later than when its time is up."""
        now = self._clock()
        backoff = now + timedelta(seconds=self._recheck.ceiling(examined.claimed.attempts + 1))
        deadline = self._customer_action_deadline(examined, outcome)
        # Once the time is up (a provider that would not cancel), the plain backoff: no cancel every run for ever.
        return min(backoff, deadline) if deadline is not None and deadline > now else backoff

    def _customer_action_deadline(self, examined: _Examined, outcome: StatusOutcome | None) -> datetime | None:
        submitted_at = examined.execution.submitted_at
        if examined.sweep is not Sweep.SETTLEMENT or outcome is not StatusOutcome.REQUIRES_ACTION or not submitted_at:
            return None
        return submitted_at + self._config.customer_action_timeout

    def _step(self, examined: _Examined, check: StatusCheck, *, cancel_sent: bool) -> SettlementStep | None:
        """The settlement sweep's decision for this answer; None in the recovery sweep."""
        if examined.sweep is not Sweep.SETTLEMENT:
            return None
        # The same clock and the same start as every age of the sweep: the batch's `now` minus submitted_at.
        expired = examined.waited >= self._config.customer_action_timeout.total_seconds()
        return settlement_step(check.outcome, customer_action_expired=expired, cancel_sent=cancel_sent)

    @contextmanager
    def _transaction(self, tenant_id: UUID | None = None, *, rollback: bool = False) -> Iterator[None]:
        """One short unit of work: system-scoped for a claim, scoped to the tenant for one execution's answer."""
        with ExitStack() as stack:
            if rollback:
                stack.enter_context(self._conn.transaction(force_rollback=True))
            scope = system_transaction(self._conn) if tenant_id is None else tenant_transaction(self._conn, tenant_id)
            stack.enter_context(scope)
            if self._idle_limit_ms is not None:
                self._conn.execute(_SET_IDLE_LIMIT, [str(self._idle_limit_ms)])
            yield

    def _apply(
        self, examined: _Examined, check: StatusCheck, *, cancel_sent: bool, dry_run: bool
    ) -> tuple[Action, Execution | None, str | None]:
        """The transition the answer calls for (through the repository's status guard): what was done, the
        execution as written (None if left as it was), and a note for the report."""
        match examined.sweep:
            case Sweep.SETTLEMENT:
                step = self._step(examined, check, cancel_sent=cancel_sent)
                assert step is not None
                return self._settle(examined, check, step, cancel_sent=cancel_sent, dry_run=dry_run)
            case Sweep.RECOVERY:
                action, written = self._recover(examined.execution, check)
                return action, written, None
            case _:
                assert_never(examined.sweep)

    def _settle(
        self, examined: _Examined, check: StatusCheck, step: SettlementStep, *, cancel_sent: bool, dry_run: bool
    ) -> tuple[Action, Execution | None, str | None]:
        """A pending execution: apply a final answer, leave it otherwise."""
        execution, repo, ctx = examined.execution, self._repository, self._context
        tenant, eid = execution.tenant_id, execution.id
        metadata = _settlement_metadata(check, examined.waited)
        if cancel_sent:
            metadata["cancel_requested"] = True
        details: dict[str, Any] = {"correlation_id": execution.correlation_id, "metadata": metadata}
        timeout = self._config.customer_action_timeout
        match step:
            case SettlementStep.COMPLETE:
                written = repo.reconcile(tenant, eid, ctx, outcome=ExecutionStatus.COMPLETED, **details)
                note = "the customer completed the action before the cancel" if cancel_sent else None
                return Action.COMPLETED, written, note
            case SettlementStep.FAIL:
                written = repo.reconcile(
                    tenant, eid, ctx, outcome=ExecutionStatus.FAILED, error_code=check.error_code, **details
                )
                return Action.FAILED, written, None
            case SettlementStep.FAIL_CANCELED:
                written = repo.reconcile(
                    tenant, eid, ctx, outcome=ExecutionStatus.FAILED, error_code=CANCELED_AT_PROVIDER_CODE, **details
                )
                return Action.FAILED, written, "canceled at the provider"
            case SettlementStep.EXPIRE | SettlementStep.CANCEL:
                if step is SettlementStep.CANCEL and not dry_run:
                    # A run decides on the cancel's answer (sent in phase 2); failing a charge that may still
                    # succeed would let money move behind a failed execution.
                    raise RuntimeError(f"execution {eid}: expiry recorded without a cancel at the provider")
                # A dry run cancels nothing: it reports the expiry a run would record once the cancel took.
                metadata["customer_action_timeout_seconds"] = timeout.total_seconds()
                written = repo.reconcile(
                    tenant, eid, ctx, outcome=ExecutionStatus.FAILED, error_code=AUTHENTICATION_EXPIRED_CODE, **details
                )
                note = "a run cancels the charge at the provider first" if step is SettlementStep.CANCEL else None
                return Action.EXPIRED, written, note
            case SettlementStep.LEAVE:
                return Action.STILL_PENDING, None, None
            case SettlementStep.CANCEL_REFUSED:
                return Action.ERROR, None, "the provider still waits for the customer after the cancel"
            case SettlementStep.FLAG_MISSING:
                return Action.MISSING_AT_PROVIDER, None, None
            case _:
                assert_never(step)

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
            case StatusOutcome.CANCELED:
                # Nothing in the engine cancels a charge it has not seen waiting; someone did at the provider.
                return Action.FAILED, repo.mark_failed(
                    tenant,
                    eid,
                    ctx,
                    error_code=CANCELED_AT_PROVIDER_CODE,
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
