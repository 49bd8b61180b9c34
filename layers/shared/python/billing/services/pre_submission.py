"""Everything a charge passes before the driver submits it: the risk decision, then the review or 3-D Secure it asks.

The decision (billing.risk.gate) is kept once per attempt, so asking again gives the same answer:

- block: refused (risk_blocked); nothing reaches an ACS or a provider.
- review: waits, unsubmitted, for POST /executions/{id}/review (or the timeout); approved, it goes on as an allowed
  charge would; rejected or expired, it is refused.
- require_3ds or allow: billing.authentication.flow decides exemptions and runs or requests the authentication.
"""

from __future__ import annotations

from psycopg import Cursor
from psycopg.rows import DictRow

from billing.authentication.flow import AuthenticationStep, StepKind, ThreeDSecure
from billing.db.execution_repository import ExecutionRepository, QueuedTransition
from billing.domain.execution import Execution
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.three_ds import NO_THREE_DS, Exemption, ThreeDSecureInstruction, ThreeDSecureMode
from billing.risk.gate import ClientSignals, RiskGate, Verdict
from billing.risk.reviews import REVIEW_EXPIRED_CODE, REVIEW_REJECTED_CODE, ReviewDecision, ReviewStore
from billing.risk.rules import Action

RISK_BLOCKED_CODE = "risk_blocked"


class PreSubmission:
    def __init__(self, risk: RiskGate, three_ds: ThreeDSecure, reviews: ReviewStore) -> None:
        self._risk = risk
        self._three_ds = three_ds
        self._reviews = reviews

    @property
    def three_ds(self) -> ThreeDSecure:
        return self._three_ds

    def resubmission(
        self, execution: Execution, *, context: WorkflowWriteContext, correlation_id: str | None
    ) -> ThreeDSecureInstruction:
        """A resubmission (the retry worker's attempt N under the same key) is assessed and the assessment kept, but
        never refused: the charge may already be lodged at the provider, and refusing it here could leave money
        there that the engine does not book. It asks of 3-D Secure what the first submission asked, except an
        engine-run authentication, whose single-use value went with the first submission."""
        self._risk.reassess(execution, context=context, correlation_id=correlation_id)
        record = self._three_ds.repository.of_execution(execution.tenant_id, execution.id)
        if record is None:
            return NO_THREE_DS
        if record.exemption is not None:
            return ThreeDSecureInstruction(ThreeDSecureMode.EXEMPT, exemption=Exemption(record.exemption))
        if record.performed_by == "provider":
            return ThreeDSecureInstruction(ThreeDSecureMode.REQUEST)
        return NO_THREE_DS

    def check_and_claim(
        self,
        execution: Execution,
        signals: ClientSignals,
        *,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        claim_with: ExecutionRepository | None = None,
    ) -> tuple[AuthenticationStep, QueuedTransition | None]:
        """What the charge must do before it is submitted (the step), and with `claim_with`, the claim for
        submission (pending -> processing) when a decision made now lets the charge go on without waiting: sent in
        the decision's transaction, so the decision, any exemption and the claim commit together (one transaction
        fewer per charge, and nothing can change between the decision and the claim). The claim's result (or its
        TransitionConflict) comes from the second item; None: the caller claims, if the step proceeds."""
        decided_within: list[AuthenticationStep] = []
        claims: list[QueuedTransition] = []
        low_value_usage: list[Cursor[DictRow] | None] = [None]

        def before(instrument_key: str) -> None:
            low_value_usage[0] = self._three_ds.low_value_usage_before(execution, instrument_key)

        def within(verdict: Verdict) -> bool:
            # A decision made just now that lets the charge go on: an exemption (or no 3-D Secure at all) commits
            # with it, in its transaction, and so does the claim.
            if Action(verdict.decision) not in (Action.ALLOW, Action.REQUIRE_3DS):
                return False
            step = self._three_ds.exemption_within(
                execution, verdict, context=context, correlation_id=correlation_id, low_value_usage=low_value_usage[0]
            )
            if step is None:
                return False
            decided_within.append(step)
            if claim_with is None or step.kind is not StepKind.PROCEED:
                return False
            claims.append(
                claim_with.queue_mark_processing(
                    execution.tenant_id, execution.id, context, correlation_id=correlation_id
                )
            )
            return True

        verdict = self._risk.assess(
            execution, signals, context=context, correlation_id=correlation_id, within=within, before=before
        )
        if decided_within:
            return decided_within[0], claims[0] if claims else None
        return self._after(execution, verdict, context=context, correlation_id=correlation_id), None

    def _after(
        self, execution: Execution, verdict: Verdict, *, context: WorkflowWriteContext, correlation_id: str | None
    ) -> AuthenticationStep:
        """The step for a decision kept from before, or one that asks more than its transaction could give."""
        match Action(verdict.decision):
            case Action.BLOCK:
                return AuthenticationStep(StepKind.REFUSE, error_code=RISK_BLOCKED_CODE)
            case Action.REVIEW:
                review = self._reviews.of(execution.tenant_id, execution.id)
                if review is None:
                    return AuthenticationStep(StepKind.WAIT)
                if review.decision is ReviewDecision.REJECT:
                    return AuthenticationStep(StepKind.REFUSE, error_code=REVIEW_REJECTED_CODE)
                if review.decision is ReviewDecision.EXPIRED:
                    return AuthenticationStep(StepKind.REFUSE, error_code=REVIEW_EXPIRED_CODE)
                return self._three_ds.decide(execution, verdict, context=context, correlation_id=correlation_id)
            case Action.REQUIRE_3DS | Action.ALLOW:
                return self._three_ds.decide(execution, verdict, context=context, correlation_id=correlation_id)
