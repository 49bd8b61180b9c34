"""Refunds followed to a final state after the request: by reconciliation (an answer lost, a provider that cannot
be asked) and by the provider's reversal reports (webhooks), on a private database each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import Reversal, ReversalRepository
from billing.db.webhook_inbox import ExecutionRef
from billing.domain.execution import Execution
from billing.domain.money import Money
from billing.domain.reversals import ReversalKind, ReversalReport, ReversalStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.ports import PaymentProvider, ProviderCharge, ProviderRefund, provider_idempotency_key
from billing.rails.results import OUTCOME_UNKNOWN_CODE, Decision, ProviderError, RefundResult
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.refunds import RefundBody, RefundFollower, RefundService
from billing.services.reversal_reports import ReversalApplier
from billing.webhooks.events import WebhookEvent, WebhookOutcome
from tests.integration.raw_sql import S, execution_in
from tests.integration.test_reconciliation import Delegating

pytestmark = pytest.mark.integration
CTX = WorkflowWriteContext.user("refund-follow-up")
NOW = timedelta(0)


@pytest.fixture
def sandbox(private_app_url: str) -> SandboxProvider:
    return SandboxProvider(connections_to(private_app_url))


def paid(app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID) -> Execution:
    """A completed card execution whose charge exists at the sandbox."""
    execution = execution_in(app_db, tenant_id, S.PROCESSING)
    result = sandbox.submit(ProviderCharge.from_execution(execution), provider_idempotency_key(execution))
    assert result.provider_reference is not None
    return ExecutionRepository(app_db).mark_completed(
        tenant_id, execution.id, CTX, provider_reference=result.provider_reference
    )


def service(conn: Connection, provider: PaymentProvider) -> RefundService:
    return RefundService(
        ExecutionRepository(conn), ReversalRepository(conn), {"sandbox": provider}, first_check_after=NOW
    )


def follower(conn: Connection, provider: PaymentProvider) -> RefundFollower:
    return RefundFollower(ReversalRepository(conn), service(conn, provider), lease=timedelta(minutes=5))


def refunds_at_sandbox(private_admin: Connection, execution: Execution) -> list[dict[str, Any]]:
    return private_admin.execute(
        "select amount from sandbox_provider.refunds where charge_reference = %s", [execution.provider_reference]
    ).fetchall()


class AnswerLost(Delegating):
    """Refunds reach the sandbox (the refund is made) but the answer never comes back, `times` times."""

    def __init__(self, inner: PaymentProvider, *, reaches_provider: bool, times: int = 1) -> None:
        super().__init__(inner)
        self.reaches_provider = reaches_provider
        self.left = times
        self.sent = 0

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        self.sent += 1
        if self.left > 0:
            self.left -= 1
            if self.reaches_provider:
                self.inner.refund(refund, idempotency_key)
            return RefundResult.from_error(ProviderError(OUTCOME_UNKNOWN_CODE, "no answer"), Decision.RECONCILE_LATER)
        return self.inner.refund(refund, idempotency_key)


class NotPollable(AnswerLost):
    @property
    def polls_status(self) -> bool:
        return False


def request(conn: Connection, provider: PaymentProvider, execution: Execution, amount: int) -> Reversal:
    return service(conn, provider).request(
        execution.tenant_id, execution.id, RefundBody(amount=amount), idempotency_key=f"r-{uuid4()}",
        correlation_id=None, context=CTX,
    ).refund  # fmt: skip


def test_a_refund_whose_answer_was_lost_is_found_by_reconciliation_and_made_once(
    app_db: Connection, db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    lost = AnswerLost(sandbox, reaches_provider=True)
    refund = request(app_db, lost, execution, 700)
    assert refund.status is ReversalStatus.REQUESTED

    followed = follower(db, lost).run(lambda: 1_000)

    assert followed.by_status == {"succeeded": 1}
    assert lost.sent == 1  # found by our refund id: not sent again
    assert [r["amount"] for r in refunds_at_sandbox(private_admin, execution)] == [700]
    after = ReversalRepository(app_db).get(tenant_id, refund.id)
    assert after is not None
    assert (after.status, after.provider_reference is not None) == (ReversalStatus.SUCCEEDED, True)
    # Nothing is due any more.
    assert follower(db, lost).run(lambda: 1_000).examined == 0


def test_a_refund_the_provider_never_received_is_sent_again_under_the_same_key(
    app_db: Connection, db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    lost = AnswerLost(sandbox, reaches_provider=False)
    refund = request(app_db, lost, execution, 500)

    assert follower(db, lost).run(lambda: 1_000).by_status == {"succeeded": 1}
    assert lost.sent == 2
    assert [r["amount"] for r in refunds_at_sandbox(private_admin, execution)] == [500]
    assert ReversalRepository(app_db).get(tenant_id, refund.id).status is ReversalStatus.SUCCEEDED  # type: ignore[union-attr]


def test_a_provider_that_cannot_be_asked_gets_the_same_request_again_and_it_refunds_once(
    app_db: Connection, db: Connection, private_admin: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    unpollable = NotPollable(sandbox, reaches_provider=True)
    request(app_db, unpollable, execution, 300)

    assert follower(db, unpollable).run(lambda: 1_000).by_status == {"succeeded": 1}
    # The resend carried the same idempotency key: the provider replayed its refund instead of making another.
    assert [r["amount"] for r in refunds_at_sandbox(private_admin, execution)] == [300]


def test_no_time_left_claims_nothing(
    app_db: Connection, db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    request(app_db, AnswerLost(sandbox, reaches_provider=False), execution, 100)
    assert follower(db, sandbox).run(lambda: 0).examined == 0


def report_event(report: ReversalReport, reference: str, event_type: str = "refund.updated") -> WebhookEvent:
    return WebhookEvent(
        "sandbox", f"evt_{uuid4().hex}", event_type, reference, WebhookOutcome.REVERSED, reversal=report
    )


def apply(app_db: Connection, execution: Execution, event: WebhookEvent) -> Reversal | None:
    ref = ExecutionRef(execution.tenant_id, execution.id, S.COMPLETED, execution.amount, execution.currency)
    with app_db.transaction():
        return ReversalApplier(ReversalRepository(app_db)).apply(
            ref, event, occurred_at=datetime.now(UTC), context=WorkflowWriteContext.webhook("sandbox"),
            correlation_id=None,
        )  # fmt: skip


class Pending(Delegating):
    """The provider accepts refunds as pending (Adyen always; Stripe sometimes)."""

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        made = self.inner.refund(refund, idempotency_key)
        assert made.provider_reference is not None
        return RefundResult.pending(made.provider_reference)


def test_the_providers_report_moves_our_pending_refund_to_its_final_state_once(
    app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    refund = request(app_db, Pending(sandbox), execution, 400)
    assert refund.status is ReversalStatus.PENDING
    assert refund.provider_reference is not None
    succeeded = ReversalReport(ReversalKind.REFUND, Money(400, execution.currency), ReversalStatus.SUCCEEDED,
                               reference=refund.provider_reference)  # fmt: skip

    moved = apply(app_db, execution, report_event(succeeded, execution.provider_reference or ""))
    again = apply(app_db, execution, report_event(succeeded, execution.provider_reference or ""))

    assert moved is not None
    assert (moved.id, moved.status) == (refund.id, ReversalStatus.SUCCEEDED)
    assert again is None  # final: nothing more to do
    assert len(ReversalRepository(app_db).of_execution(tenant_id, execution.id)) == 1


def test_a_failure_report_found_by_our_own_reference_fails_the_refund(
    app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    refund = request(app_db, AnswerLost(sandbox, reaches_provider=False, times=1), execution, 400)
    failed = ReversalReport(ReversalKind.REFUND, Money(400, execution.currency), ReversalStatus.FAILED,
                            our_reference=str(refund.id), reason="insufficient_balance")  # fmt: skip
    moved = apply(app_db, execution, report_event(failed, execution.provider_reference or "", "REFUND"))
    assert moved is not None
    assert (moved.status, moved.failure_code) == (ReversalStatus.FAILED, "insufficient_balance")
    # A failed refund gives its amount back to what may be refunded.
    assert ReversalRepository(app_db).refundable(tenant_id, execution.id) == execution.amount


def test_chargebacks_and_their_reversal_are_recorded_with_amounts(
    app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    money = Money(execution.amount, execution.currency)
    reference = execution.provider_reference or ""
    chargeback = ReversalReport(ReversalKind.CHARGEBACK, money, ReversalStatus.SUCCEEDED, reference="dp_1")
    won = ReversalReport(ReversalKind.CHARGEBACK_REVERSED, money, ReversalStatus.SUCCEEDED, reference="dp_1")
    apply(app_db, execution, report_event(chargeback, reference, "charge.dispute.created"))
    assert ReversalRepository(app_db).refundable(tenant_id, execution.id) == 0
    apply(app_db, execution, report_event(won, reference, "charge.dispute.funds_reinstated"))
    kinds = [(r.kind, r.money) for r in ReversalRepository(app_db).of_execution(tenant_id, execution.id)]
    assert kinds == [(ReversalKind.CHARGEBACK, money), (ReversalKind.CHARGEBACK_REVERSED, money)]
    assert ReversalRepository(app_db).refundable(tenant_id, execution.id) == execution.amount


def test_a_cumulative_refund_report_records_only_what_our_refunds_do_not_cover(
    app_db: Connection, sandbox: SandboxProvider, tenant_id: UUID
) -> None:
    execution = paid(app_db, sandbox, tenant_id)
    request(app_db, sandbox, execution, 500)  # ours, succeeded
    cumulative = ReversalReport(ReversalKind.REFUND, Money(800, execution.currency), ReversalStatus.SUCCEEDED)
    recorded = apply(app_db, execution, report_event(cumulative, execution.provider_reference or "", "charge.refunded"))
    assert recorded is not None
    assert (recorded.money, recorded.initiated_by.value) == (Money(300, execution.currency), "provider")
    covered = report_event(cumulative, execution.provider_reference or "", "charge.refunded")
    assert apply(app_db, execution, covered) is None  # 800 is now covered: nothing new
