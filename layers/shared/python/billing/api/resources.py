"""What the API returns: pydantic models that also generate the OpenAPI document."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal
from uuid import UUID

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field

from billing.api.input_safety import MAX_JSON_DEPTH
from billing.api.problems import PROBLEM_CONTENT_TYPE
from billing.domain.status import ExecutionStatus
from billing.resource_names import MAX_REQUEST_BODY_BYTES

# What the resources are built from, named only in annotations: importing them here would load the repositories
# (and psycopg) into every API function's cold start, before a request needs a database.
if TYPE_CHECKING:
    from billing.authentication.store import AuthenticationRecord
    from billing.db.reversal_repository import Reversal
    from billing.domain.execution import Execution, ExecutionEvent
    from billing.rails.results import NextAction
    from billing.risk.postgres import AssessmentRecord, StoredRuleSet
    from billing.risk.reviews import Review


class NextActionResource(BaseModel):
    """What the customer must do before the money moves (a pending execution waiting for them)."""

    type: str = Field(
        description="redirect_to_url: send the customer to `url`; use_provider_sdk: finish it with the "
        "provider's client library (Stripe.js handleNextAction with `client_secret`)"
    )
    url: str | None = None
    return_url: str | None = None
    client_secret: str | None = Field(
        default=None, description="Only in the response of the request that submitted the charge; never stored"
    )
    sdk_data: dict[str, Any] | None = Field(
        default=None,
        description="For the provider's client library (Adyen's `action` for Drop-in / Components); only in the "
        "response of the request that submitted the charge; never stored",
    )

    @classmethod
    def of(cls, action: NextAction) -> NextActionResource:
        return cls(type=action.type.value, url=action.url, return_url=action.return_url,
                   client_secret=action.client_secret,
                   sdk_data=dict(action.sdk_data) if action.sdk_data is not None else None)  # fmt: skip

    @classmethod
    def stored(cls, events: list[ExecutionEvent]) -> NextActionResource | None:
        """The action the timeline recorded for the charge, if the execution still waits for it (no secret)."""
        for event in reversed(events):
            stored = event.metadata.get("next_action")
            if isinstance(stored, dict):
                return cls(type=str(stored.get("type")), url=stored.get("url"), return_url=stored.get("return_url"))
        return None


class ExecutionResource(BaseModel):
    id: UUID
    status: ExecutionStatus
    awaiting_settlement: bool = Field(description="Pending at the provider (submitted), not merely pending")
    amount: int = Field(description="Integer minor units of `currency`")
    currency: str
    amount_display: str = Field(description="Human-readable amount, e.g. '19.99 EUR'")
    entity_contract_id: str
    plan_contract_id: str
    payment_rail: str
    payment_provider: str
    payment_instrument_id: str | None
    provider_reference: str | None
    idempotency_key: str | None
    correlation_id: str | None
    attempt_count: int
    last_error_code: str | None
    next_attempt_at: datetime | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None
    next_action: NextActionResource | None = Field(
        default=None, description="Set while a pending execution waits for the customer (3-D Secure, a redirect)"
    )

    @classmethod
    def of(cls, execution: Execution, next_action: NextAction | None = None) -> ExecutionResource:
        return cls(
            id=execution.id,
            status=execution.status,
            awaiting_settlement=execution.awaiting_settlement,
            amount=execution.amount,
            currency=execution.currency,
            amount_display=execution.money.format(),
            entity_contract_id=execution.entity_contract_id,
            plan_contract_id=execution.plan_contract_id,
            payment_rail=execution.payment_rail.value,
            payment_provider=execution.payment_provider,
            payment_instrument_id=execution.payment_instrument_id,
            provider_reference=execution.provider_reference,
            idempotency_key=execution.idempotency_key,
            correlation_id=execution.correlation_id,
            attempt_count=execution.attempt_count,
            last_error_code=execution.last_error_code,
            next_attempt_at=execution.next_attempt_at,
            metadata=execution.metadata,
            created_at=execution.created_at,
            updated_at=execution.updated_at,
            submitted_at=execution.submitted_at,
            finished_at=execution.finished_at,
            next_action=NextActionResource.of(next_action) if next_action else None,
        )


class EventResource(BaseModel):
    id: UUID
    type: str
    old_status: ExecutionStatus | None
    new_status: ExecutionStatus
    metadata: dict[str, Any]
    user_id: str | None
    correlation_id: str | None
    occurred_at: datetime

    @classmethod
    def of(cls, event: ExecutionEvent) -> EventResource:
        return cls(
            id=event.id,
            type=event.type,
            old_status=event.old_status,
            new_status=event.new_status,
            metadata=event.metadata,
            user_id=event.user_id,
            correlation_id=event.correlation_id,
            occurred_at=event.occurred_at,
        )


class WorkflowPhaseResource(BaseModel):
    phase_code: str
    term_at: datetime
    source: str
    actor_id: str
    correlation_id: str | None


class RefundResource(BaseModel):
    """One reversal of an execution: a refund the engine requested, or a reversal its provider reported."""

    id: UUID
    execution_id: UUID
    kind: str = Field(description="refund, cancel_or_refund, chargeback, second_chargeback, chargeback_reversed, ...")
    status: str = Field(description="requested, pending, succeeded or failed")
    initiated_by: str = Field(description="merchant (through this API) or provider (a dispute, a dashboard refund)")
    amount: int | None = Field(
        description="Integer minor units of `currency`; null on reversals recorded before amounts"
    )
    currency: str | None
    provider: str
    provider_reference: str | None
    reason: str | None
    failure_code: str | None
    idempotency_key: str | None
    recorded_at: datetime
    updated_at: datetime | None

    @classmethod
    def of(cls, reversal: Reversal) -> RefundResource:
        return cls(
            id=reversal.id,
            execution_id=reversal.execution_id,
            kind=reversal.kind.value,
            status=reversal.status.value,
            initiated_by=reversal.initiated_by.value,
            amount=reversal.money.amount if reversal.money else None,
            currency=reversal.money.currency if reversal.money else None,
            provider=reversal.provider,
            provider_reference=reversal.provider_reference,
            reason=reversal.reason,
            failure_code=reversal.failure_code,
            idempotency_key=reversal.idempotency_key,
            recorded_at=reversal.recorded_at,
            updated_at=reversal.updated_at,
        )


class RiskRuleSetResource(BaseModel):
    """A tenant's risk rules: the engine's defaults (version 0) until the tenant stores its own."""

    version: int
    rules: list[dict[str, Any]] = Field(description="Rule objects: id, description, action, score, applies_to, when")
    settings: dict[str, Any] = Field(
        description="review_timeout_minutes, on_authentication_unavailable (proceed|fail), tra_score_threshold "
        "(0: never), tra_ceiling (per currency, minor units)"
    )
    created_at: datetime | None = Field(description="When this version was stored; null for the defaults")
    created_by: str | None

    @classmethod
    def of(cls, stored: StoredRuleSet) -> RiskRuleSetResource:
        document = stored.rule_set.document()
        return cls(
            version=stored.rule_set.version,
            rules=list(document["rules"]),
            settings=dict(document["settings"]),
            created_at=stored.created_at,
            created_by=stored.created_by,
        )


class RiskAssessmentResource(BaseModel):
    """One risk assessment of the execution (one per attempt)."""

    id: UUID
    attempt: int
    decision: str = Field(description="allow, review, require_3ds or block")
    score: int = Field(description="0-100: the weights of every rule that fired, capped")
    fired: list[dict[str, Any]] = Field(description="Every rule that fired, with its action, weight and inputs")
    rule_set_version: int = Field(description="The tenant's rule set version that decided (0: the defaults)")
    assessed_at: datetime
    duration_us: int

    @classmethod
    def of(cls, record: AssessmentRecord) -> RiskAssessmentResource:
        return cls(id=record.id, attempt=record.attempt, decision=record.decision, score=record.score,
                   fired=record.fired, rule_set_version=record.rule_set_version, assessed_at=record.assessed_at,
                   duration_us=record.duration_us)  # fmt: skip


class ReviewResource(BaseModel):
    decision: str = Field(description="approve, reject, or expired (nobody decided in time)")
    decided_by: str
    note: str | None = None
    decided_at: datetime

    @classmethod
    def of(cls, review: Review) -> ReviewResource:
        return cls(decision=review.decision.value, decided_by=review.decided_by, note=review.note,
                   decided_at=review.decided_at)  # fmt: skip


class AuthenticationResource(BaseModel):
    """The execution's 3-D Secure authentication, or the exemption claimed instead. Never the authentication value."""

    id: UUID
    state: str = Field(
        description="started, challenge_required, succeeded, failed, rejected, unavailable, expired, or exempted"
    )
    performed_by: str = Field(description="engine (the sandbox's EMV flow) or provider (Stripe, Adyen)")
    exemption: str | None = Field(
        default=None, description="low_value, merchant_initiated or transaction_risk_analysis: no liability shift"
    )
    liability_shift: bool = Field(description="Whether fraud chargebacks move to the issuer (from the scheme's ECI)")
    trans_status: str | None = None
    trans_status_reason: str | None = None
    eci: str | None = None
    message_version: str | None = None
    three_ds_server_trans_id: str | None = None
    acs_trans_id: str | None = None
    ds_trans_id: str | None = None
    challenge_indicator: str | None = None
    scheme: str | None = None
    created_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime | None = None

    @classmethod
    def of(cls, record: AuthenticationRecord) -> AuthenticationResource:
        return cls(id=record.id, state=record.state, performed_by=record.performed_by, exemption=record.exemption,
                   liability_shift=bool(record.liability_shift), trans_status=record.trans_status,
                   trans_status_reason=record.trans_status_reason, eci=record.eci,
                   message_version=record.message_version, three_ds_server_trans_id=record.three_ds_server_trans_id,
                   acs_trans_id=record.acs_trans_id, ds_trans_id=record.ds_trans_id,
                   challenge_indicator=record.challenge_indicator, scheme=record.scheme,
                   created_at=record.created_at, finished_at=record.finished_at,
                   expires_at=record.expires_at)  # fmt: skip


class ReviewBody(BaseModel):
    """An operator's decision on an execution held for review."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    note: str | None = Field(default=None, max_length=500)


class ExecutionDetail(ExecutionResource):
    refunded_amount: int = Field(description="Minor units refunded so far: succeeded refunds, less returned ones")
    refunds: list[RefundResource] = Field(description="Refunds and other reversals, oldest first")
    risk_assessments: list[RiskAssessmentResource] = Field(
        default_factory=list, description="Risk assessments, one per attempt, oldest first"
    )
    review: ReviewResource | None = Field(default=None, description="The review decision, if one was held")
    authentication: AuthenticationResource | None = Field(
        default=None, description="3-D Secure (or the exemption claimed), if the charge is a card charge that had one"
    )
    liability_shift: bool = Field(
        default=False, description="Whether 3-D Secure moved fraud liability to the issuer for this charge"
    )
    events: list[EventResource] = Field(description="Lifecycle timeline, oldest first")
    workflow: list[WorkflowPhaseResource] = Field(description="Authoritative workflow phases, oldest first")


class ExecutionPage(BaseModel):
    items: list[ExecutionResource]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page")


class FieldErrorResource(BaseModel):
    field: str = Field(description="Dotted path of the offending input, e.g. `metadata.note` or `query.cursor`")
    code: str = Field(description="Why it was refused, e.g. `string_type`, `unstorable_character`, `too_deep`")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem: the body of every error response, served as application/problem+json."""

    type: str = Field(description="A URI naming the error code")
    title: str
    status: int
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Stable machine-readable code; branch on this")
    detail: str
    correlation_id: str | None = Field(None, description="Quote it when reporting a problem; it finds the logs")
    errors: list[FieldErrorResource] | None = Field(None, description="validation_failed: the offending fields")
    current_status: ExecutionStatus | None = Field(None, description="transition_conflict: the status found")
    execution_id: UUID | None = Field(None, description="idempotency_key_reused: the execution holding the key")


# Why each status can be answered; the routes list the ones that apply to them.
_PROBLEMS: Final[dict[int, str]] = {
    400: "malformed_request (body not JSON, cursor not issued by this API) or idempotency_key_invalid",
    401: "unauthenticated: no valid bearer token",
    404: "execution_not_found: no such execution for the caller's tenant",
    409: "transition_conflict: the execution's status does not allow it",
    413: f"payload_too_large: the body exceeds {MAX_REQUEST_BODY_BYTES} bytes",
    415: "unsupported_media_type: a body that is not application/json",
    422: (
        "validation_failed (the fields in `errors`; NUL characters and lone surrogates anywhere, JSON nested deeper "
        f"than {MAX_JSON_DEPTH} levels and integers beyond ±(2**53-1) included) or idempotency_key_reused"
    ),
}
# Answered on every route: by the gateway and authorizer (401, 413) or by the guard before routing (415, 422).
_EVERY_ROUTE: Final = (401, 413, 415, 422)


def documented_responses(success: dict[int, str], *problems: int) -> dict[int, OpenAPIResponse]:
    """The OpenAPI responses of a route: its success statuses (the route's return model) and its problems."""
    responses: dict[int, OpenAPIResponse] = {status: {"description": text} for status, text in success.items()}
    for status in sorted({*problems, *_EVERY_ROUTE}):
        responses[status] = {"description": _PROBLEMS[status], "content": {PROBLEM_CONTENT_TYPE: {"model": Problem}}}
    return responses
