"""BillingWorkflowCompliance: proves each of the ten transition methods writes its authoritative workflow row.

It drives every method against a real database inside one transaction that is rolled back at the end, so it can
run against any environment (`make compliance`, or `python -m billing.workflow_compliance`) and leaves nothing
behind. A method that did not emit its row, or emitted it with the wrong phase, source or actor, is named.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole, login_url
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.transitions import TRANSITIONS, TransitionMethod
from billing.domain.workflow import WorkflowWriteContext

_M = TransitionMethod
_SETUP_CONTEXT = WorkflowWriteContext.system()

# How to bring a fresh execution to the state each method starts from, and the extra arguments it needs.
_ROUTES: dict[TransitionMethod, tuple[list[TransitionMethod], dict[str, Any]]] = {
    _M.MARK_PENDING: ([], {}),
    _M.MARK_PROCESSING: ([_M.MARK_PENDING], {}),
    _M.MARK_COMPLETED: ([_M.MARK_PENDING, _M.MARK_PROCESSING], {"provider_reference": "cmp_card"}),
    _M.MARK_FAILED: ([_M.MARK_PENDING, _M.MARK_PROCESSING], {"error_code": "card_declined"}),
    _M.MARK_CANCELED: ([], {"from_status": ExecutionStatus.CREATED}),
    _M.SETTLE_FROM_PROCESSING: ([_M.MARK_PENDING, _M.MARK_PROCESSING], {"provider_reference": "cmp_settle"}),
    _M.CONFIRM_FROM_PENDING: ([_M.MARK_PENDING, _M.MARK_PROCESSING, _M.SETTLE_FROM_PROCESSING], {}),
    _M.REJECT_FROM_PENDING: ([_M.MARK_PENDING, _M.MARK_PROCESSING, _M.SETTLE_FROM_PROCESSING], {}),
    _M.REFUSE: ([_M.MARK_PENDING], {"error_code": "risk_blocked"}),
    _M.RECONCILE: (
        [_M.MARK_PENDING, _M.MARK_PROCESSING, _M.SETTLE_FROM_PROCESSING],
        {"outcome": ExecutionStatus.COMPLETED},
    ),
}
_SETUP_ARGS: dict[TransitionMethod, dict[str, Any]] = {
    _M.SETTLE_FROM_PROCESSING: {"provider_reference": "cmp_setup"},
}

# The workflow row (if any) of the event the checked method wrote: its type is unique along each route.
_WORKFLOW_ROW_OF_EVENT = """
select w.phase_code, w.source, w.actor_id
  from billing.billing_execution_events ev
  left join billing.contract_term_datetimes w on w.tenant_id = ev.tenant_id and w.event_id = ev.id
 where ev.tenant_id = %s and ev.execution_id = %s and ev.type = %s
"""


@dataclass(frozen=True, slots=True)
class MethodResult:
    method: TransitionMethod
    problem: str | None

    @property
    def passed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    results: tuple[MethodResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results) and {r.method for r in self.results} == set(TransitionMethod)

    @property
    def failures(self) -> list[MethodResult]:
        return [r for r in self.results if not r.passed]

    def render(self) -> str:
        lines = [f"{'PASS' if r.passed else 'FAIL'}  {r.method.value:<24} {r.problem or ''}" for r in self.results]
        verdict = "compliant" if self.passed else "NOT compliant: " + ", ".join(f.method for f in self.failures)
        return "\n".join([*lines, f"billing workflow writes: {verdict}"])


class BillingWorkflowCompliance:
    """Drives all ten transitions and checks each emitted its workflow row with the right phase and context."""

    def __init__(self, conn: Connection, *, authoritative_write: bool | None = None) -> None:
        self._conn = conn
        self._authoritative_write = authoritative_write

    def run(self) -> ComplianceReport:
        results: list[MethodResult] = []
        tenant_id = uuid4()
        repository = ExecutionRepository(self._conn, authoritative_write=self._authoritative_write)
        # Everything happens in one transaction rolled back at the end; each check is a savepoint inside it, so
        # a method that raises cannot spoil the checks after it.
        with self._conn.transaction(force_rollback=True):
            for method in TransitionMethod:
                with self._conn.transaction(force_rollback=True):
                    results.append(self._check(repository, tenant_id, method))
        return ComplianceReport(tuple(results))

    def _check(self, repository: ExecutionRepository, tenant_id: UUID, method: TransitionMethod) -> MethodResult:
        setup, arguments = _ROUTES[method]
        execution, _ = repository.insert_idempotent(
            tenant_id,
            ExecutionRequest(
                entity_contract_id="compliance-contract",
                plan_contract_id="compliance-plan",
                amount=100,
                currency="EUR",
                payment_rail=PaymentRail.SEPA_DEBIT,
            ),
            idempotency_key=f"compliance-{uuid4()}",
            payment_provider="sandbox",
            correlation_id="compliance",
            context=_SETUP_CONTEXT,
        )
        for step in setup:
            _call(repository, step, tenant_id, execution.id, _SETUP_CONTEXT, _SETUP_ARGS.get(step, {}))
        context = WorkflowWriteContext.user(f"compliance-{method.value}")
        try:
            _call(repository, method, tenant_id, execution.id, context, arguments)
            # The database checks at commit that each event, outbox and workflow row records a change of its own
            # transaction; this transaction never commits, so run those checks now.
            self._conn.execute("set constraints all immediate")
        except Exception as exc:
            return MethodResult(method, f"raised {type(exc).__name__}: {exc}")
        with tenant_transaction(self._conn, tenant_id):
            rows = self._conn.execute(
                _WORKFLOW_ROW_OF_EVENT, [tenant_id, execution.id, TRANSITIONS[method].event_type]
            ).fetchall()
        if len(rows) != 1:
            return MethodResult(method, f"wrote {len(rows)} lifecycle events of its type, expected 1")
        row = rows[0]
        expected = (TRANSITIONS[method].phase.value, context.source.value, context.actor)
        if row["phase_code"] is None:
            return MethodResult(method, "emitted no workflow row")
        actual = (row["phase_code"], row["source"], row["actor_id"])
        if actual != expected:
            return MethodResult(method, f"workflow row {actual} != expected {expected}")
        return MethodResult(method, None)


def _call(
    repository: ExecutionRepository,
    method: TransitionMethod,
    tenant_id: UUID,
    execution_id: UUID,
    context: WorkflowWriteContext,
    arguments: dict[str, Any],
) -> None:
    transition: Callable[..., object] = getattr(repository, method.value)
    # Provider references are unique per provider, so each execution gets its own.
    if "provider_reference" in arguments:
        arguments = {**arguments, "provider_reference": f"{arguments['provider_reference']}_{execution_id.hex}"}
    transition(tenant_id, execution_id, context, **arguments)


def main(argv: list[str] | None = None) -> int:
    from billing.local.embedded_postgres import database_url

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--database-url", default=None, help="defaults to billing_app on DATABASE_URL's server or the embedded one"
    )
    args = parser.parse_args(argv)
    # As the role the functions that make these transitions connect as, so the grants and guards are checked too.
    url = args.database_url or login_url(database_url(), DatabaseRole.APP)
    with connect(url, application_name="billing-compliance") as conn:
        report = BillingWorkflowCompliance(conn).run()
    print(report.render())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
