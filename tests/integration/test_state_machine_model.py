"""Random sequences of transitions, through the repository and through raw SQL, against one model.

Hypothesis drives an execution with any of the nine transition methods (with or without a provider reference)
and with raw statements as a run-time role would send them (a bare UPDATE, or an UPDATE with its event and
outbox row). After every step the database must agree with the model built from billing.domain.status:
same status, finish time exactly when terminal, submission never undone, and nothing written by a refused step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import EXECUTION_WRITERS, DatabaseRole, login_url
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import BillingError
from billing.domain.execution import PaymentRail
from billing.domain.status import ExecutionStatus, can_transition, is_terminal
from billing.domain.transitions import TRANSITIONS, TransitionMethod
from billing.domain.workflow import WorkflowWriteContext
from tests.factories import create_execution

CTX = WorkflowWriteContext.service_default()
S = ExecutionStatus
# Methods that record the provider's answer to a submission (submitted_at is set).
_SUBMITS = {TransitionMethod.MARK_COMPLETED, TransitionMethod.SETTLE_FROM_PROCESSING}
_UNSUBMITTED_ONLY = {TransitionMethod.MARK_PROCESSING, TransitionMethod.MARK_CANCELED, TransitionMethod.REFUSE}


@dataclass
class Model:
    status: ExecutionStatus = S.CREATED
    submitted: bool = False
    has_reference: bool = False
    events: int = 1  # the created event

    def accepts(self, old: ExecutionStatus, new: ExecutionStatus, *, reference: bool) -> bool:
        """What the database guards allow for one change old -> new (with the row's reference after it)."""
        if is_terminal(old) or not can_transition(old, new):
            return False
        if self.submitted and new is S.PROCESSING:
            return False
        return not (new is S.COMPLETED and not reference)


class ExecutionMachine(RuleBasedStateMachine):
    app: Connection
    worker: Connection

    def __init__(self) -> None:
        super().__init__()
        self.tenant = uuid4()
        self.model = Model()
        self.execution_id: UUID = uuid4()

    @initialize(rail=st.sampled_from(list(PaymentRail)))
    def create(self, rail: PaymentRail) -> None:
        self.execution_id = create_execution(self.app, self.tenant, payment_rail=rail).id

    def _row(self) -> dict[str, Any]:
        with tenant_transaction(self.app, self.tenant):
            row = self.app.execute(
                "select e.*, (select count(*) from billing.billing_execution_events ev"
                "              where ev.tenant_id = e.tenant_id and ev.execution_id = e.id) as events"
                " from billing.billing_executions e where tenant_id = %s and id = %s",
                [self.tenant, self.execution_id],
            ).fetchone()
        assert row is not None
        return row

    def _conn(self, role: DatabaseRole) -> Connection:
        return self.app if role is DatabaseRole.APP else self.worker

    @rule(
        method=st.sampled_from(list(TransitionMethod)),
        outcome=st.sampled_from(list(ExecutionStatus)),
        with_reference=st.booleans(),
        role=st.sampled_from(EXECUTION_WRITERS),
    )
    def repository_transition(
        self, method: TransitionMethod, outcome: ExecutionStatus, with_reference: bool, role: DatabaseRole
    ) -> None:
        spec = TRANSITIONS[method]
        old = self.model.status
        arguments: dict[str, Any] = {}
        if method is TransitionMethod.MARK_CANCELED:
            arguments["from_status"] = old if old in spec.from_statuses else spec.from_statuses[0]
        if method is TransitionMethod.REFUSE:
            arguments["error_code"] = "risk_blocked"
        if method is TransitionMethod.RECONCILE:
            arguments["outcome"] = outcome if outcome in spec.to_statuses else spec.to_statuses[0]
        # settle_from_processing always names the provider's charge; mark_completed may (and must, to succeed).
        reference = method is TransitionMethod.SETTLE_FROM_PROCESSING or (
            method is TransitionMethod.MARK_COMPLETED and with_reference
        )
        if reference:
            arguments["provider_reference"] = f"ref_{uuid4().hex}"
        new = arguments.get("outcome", spec.to_statuses[0])
        expected = (
            old in spec.from_statuses
            and not (method in _UNSUBMITTED_ONLY and self.model.submitted)
            and not (reference and self.model.has_reference)  # a recorded reference never changes
            and self.model.accepts(old, new, reference=reference or self.model.has_reference)
        )
        repository = ExecutionRepository(self._conn(role))
        try:
            getattr(repository, method.value)(self.tenant, self.execution_id, CTX, **arguments)
        except BillingError:
            assert not expected, f"{method} refused from {old}"
            return
        assert expected, f"{method} accepted from {old}"
        self._moved(new, submitted=method in _SUBMITS, reference=reference)

    @rule(new=st.sampled_from(list(ExecutionStatus)), role=st.sampled_from(EXECUTION_WRITERS), complete=st.booleans())
    def raw_sql_change(self, new: ExecutionStatus, role: DatabaseRole, complete: bool) -> None:
        """An UPDATE as the role would send it: bare, or with its event and outbox row (a complete write)."""
        old = self.model.status
        conn = self._conn(role)
        event_id = uuid4()
        params = {"tenant": self.tenant, "id": self.execution_id, "new": new.value, "old": old.value,
                  "terminal": is_terminal(new), "event_id": event_id,
                  "type": "billing.execution." + ("canceled" if new is S.CANCELED else new.value)}  # fmt: skip
        type_fits = any(
            spec.event_type == params["type"] and old in spec.from_statuses for spec in TRANSITIONS.values()
        )
        expected = complete and type_fits and self.model.accepts(old, new, reference=self.model.has_reference)
        try:
            with conn.transaction(), tenant_transaction(conn, self.tenant):
                conn.execute(
                    "update billing.billing_executions set status = %(new)s,"
                    " finished_at = case when %(terminal)s then now() end"
                    " where tenant_id = %(tenant)s and id = %(id)s",
                    params,
                )
                if complete:
                    conn.execute(
                        "insert into billing.billing_execution_events (tenant_id, id, execution_id, type, old_status,"
                        " new_status) values (%(tenant)s, %(event_id)s, %(id)s, %(type)s, %(old)s, %(new)s)",
                        params,
                    )
                    conn.execute(
                        "insert into billing.billing_outbox (tenant_id, event_id, aggregate_id, event_type, payload)"
                        " select e.tenant_id, %(event_id)s, e.id, %(type)s,"
                        " billing.execution_event_payload(e, %(event_id)s, %(type)s, %(old)s, null, now())"
                        " from billing.billing_executions e where e.tenant_id = %(tenant)s and e.id = %(id)s",
                        params,
                    )
        except psycopg.Error:
            assert not expected, f"raw {old}->{new} refused"
            return
        assert expected, f"raw {old}->{new} accepted (complete={complete})"
        self._moved(new, submitted=False, reference=False)

    def _moved(self, new: ExecutionStatus, *, submitted: bool, reference: bool) -> None:
        self.model.status = new
        self.model.submitted = self.model.submitted or submitted
        self.model.has_reference = self.model.has_reference or reference
        self.model.events += 1

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        if self.execution_id is None:
            return
        row = self._row()
        assert (row["status"], row["events"]) == (self.model.status.value, self.model.events)
        assert (row["finished_at"] is not None) == is_terminal(ExecutionStatus(row["status"]))
        assert (row["submitted_at"] is not None) == self.model.submitted
        assert (row["provider_reference"] is not None) == self.model.has_reference


@pytest.mark.parametrize("seed", [0])
def test_database_agrees_with_the_state_machine_on_every_step(admin_db_url: str, seed: int) -> None:
    with (
        connect(login_url(admin_db_url, DatabaseRole.APP)) as app,
        connect(login_url(admin_db_url, DatabaseRole.WORKER)) as worker,
    ):
        ExecutionMachine.app = app
        ExecutionMachine.worker = worker
        run_state_machine_as_test(
            ExecutionMachine,
            settings=settings(
                max_examples=40,
                stateful_step_count=12,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
