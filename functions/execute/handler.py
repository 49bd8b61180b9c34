"""Execute API: create-and-drive, read, list and cancel billing executions (API Gateway REST, Powertools)."""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.http import answer_errors_as_problems, guard_request, with_correlation_header
from billing.api.parameters import Rfc3339DateTime
from billing.api.request_context import RequestContext
from billing.api.resources import (
    AuthenticationResource,
    EventResource,
    ExecutionDetail,
    ExecutionPage,
    ExecutionResource,
    NextActionResource,
    RefundResource,
    ReviewBody,
    ReviewResource,
    RiskAssessmentResource,
    RiskRuleSetResource,
    WorkflowPhaseResource,
    documented_responses,
)
from billing.aws.cold_start import lazy_module, preload
from billing.domain.errors import ExecutionNotFound, MalformedRequest
from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH
from billing.wiring import ExecuteRuntime, ExecuteSettings

# What only some routes use, imported by the first request that needs it (or at init when it is paid ahead), and
# Powertools' parameter markers: they bring its validation machinery, which the first validated request loads.
if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi import params

    from billing.api import cursor as cursors
    from billing.db import execution_repository, reversal_repository
    from billing.risk import gate, reviews
    from billing.services import refunds
else:
    params = lazy_module("aws_lambda_powertools.event_handler.openapi.params")
    cursors = lazy_module("billing.api.cursor")
    execution_repository = lazy_module("billing.db.execution_repository")
    reversal_repository = lazy_module("billing.db.reversal_repository")
    gate = lazy_module("billing.risk.gate")
    reviews = lazy_module("billing.risk.reviews")
    refunds = lazy_module("billing.services.refunds")

# Validation is switched on route by route, never on the resolver: a validating resolver builds Powertools' request
# and response validation at import (a fifth of it), a validating route on its first request.
app = APIGatewayRestResolver()
runtime = ExecuteRuntime(ExecuteSettings.from_environment())
EXECUTIONS = f"{API_BASE_PATH}/executions"
RISK_RULES = f"{API_BASE_PATH}/risk/rules"
BEARER = "bearerAuth"


def _request() -> RequestContext:
    request: RequestContext = app.context["request"]
    return request


def _json(status: int, model: Any) -> Response[Any]:
    # Powertools validates the model against the route's return type, then serialises it.
    return Response(status, "application/json", model)


@app.post(
    EXECUTIONS,
    enable_validation=True,
    responses=documented_responses({201: "Created and driven", 200: "Replay: the execution this key created"}, 400),
)
def create_execution(
    body: ExecutionRequest,
    idempotency_key: Annotated[str | None, params.Header(alias="Idempotency-Key")] = None,
    device_fingerprint: Annotated[
        str | None, params.Header(alias="X-Device-Fingerprint", description="The client's device fingerprint, for risk")
    ] = None,
) -> Response[ExecutionResource]:
    request = _request()
    outcome = runtime.execution_service().execute(
        request.tenant_id,
        body,
        idempotency_key=idempotency_key or "",
        payment_provider=None,  # routed by the instrument
        correlation_id=request.correlation_id,
        context=WorkflowWriteContext.user(request.actor),
        signals=gate.ClientSignals.of(device_fingerprint, _source_ip()),
    )
    return _json(201 if outcome.created else 200, ExecutionResource.of(outcome.execution, outcome.next_action))


@app.get(EXECUTIONS, enable_validation=True, responses=documented_responses({200: "One page, newest first"}, 400))
def list_executions(
    status: Annotated[ExecutionStatus | None, params.Query()] = None,
    payment_rail: Annotated[PaymentRail | None, params.Query()] = None,
    entity_contract_id: Annotated[str | None, params.Query(max_length=128)] = None,
    plan_contract_id: Annotated[str | None, params.Query(max_length=128)] = None,
    created_from: Annotated[Rfc3339DateTime | None, params.Query()] = None,
    created_to: Annotated[Rfc3339DateTime | None, params.Query()] = None,
    cursor: Annotated[str | None, params.Query(max_length=512)] = None,
    limit: Annotated[int, params.Query(ge=1, le=100)] = 20,
) -> Response[ExecutionPage]:
    query = execution_repository.ExecutionListQuery(
        status, payment_rail, entity_contract_id, plan_contract_id, created_from, created_to,
        cursors.decode_cursor(cursor) if cursor else None, limit,
    )  # fmt: skip
    items, more = runtime.execution_service().list_page(_request().tenant_id, query)
    next_cursor = cursors.encode_cursor(items[-1].created_at, items[-1].id) if more else None
    return _json(200, ExecutionPage(items=[ExecutionResource.of(e) for e in items], next_cursor=next_cursor))


@app.get(
    f"{EXECUTIONS}/<execution_id>",
    enable_validation=True,
    responses=documented_responses({200: "The execution and its timeline"}, 404),
)
def get_execution(execution_id: str) -> Response[ExecutionDetail]:
    view = runtime.execution_service().view(_request().tenant_id, _uuid(execution_id))
    # Read through the repository alone: showing an execution needs no payment provider (nor its SDK).
    tenant = _request().tenant_id
    refunds_of_execution = runtime.reversals().of_execution(tenant, view.execution.id)
    risk = runtime.risk_view(tenant, view.execution)
    next_action = NextActionResource.stored(view.events) if view.execution.awaiting_settlement else None
    if risk.next_action is not None:
        next_action = NextActionResource.of(risk.next_action)
    detail = ExecutionDetail(
        **ExecutionResource.of(view.execution).model_dump(exclude={"next_action"}),
        next_action=next_action,
        refunded_amount=reversal_repository.refunded_amount(refunds_of_execution),
        refunds=[RefundResource.of(refund) for refund in refunds_of_execution],
        risk_assessments=[RiskAssessmentResource.of(record) for record in risk.assessments],
        review=ReviewResource.of(risk.review) if risk.review else None,
        authentication=AuthenticationResource.of(risk.authentication) if risk.authentication else None,
        liability_shift=bool(risk.authentication and risk.authentication.liability_shift),
        events=[EventResource.of(event) for event in view.events],
        workflow=[WorkflowPhaseResource.model_validate(row) for row in view.workflow],
    )
    return _json(200, detail)


@app.post(
    f"{EXECUTIONS}/<execution_id>/cancel",
    enable_validation=True,
    responses=documented_responses({200: "Canceled"}, 404, 409),
)
def cancel_execution(execution_id: str) -> Response[ExecutionResource]:
    request = _request()
    canceled = runtime.execution_service().cancel(
        request.tenant_id,
        _uuid(execution_id),
        correlation_id=request.correlation_id,
        context=WorkflowWriteContext.user(request.actor),
    )
    return _json(200, ExecutionResource.of(canceled))


@app.post(
    f"{EXECUTIONS}/<execution_id>/review",
    enable_validation=True,
    responses=documented_responses({200: "Decided: approved and driven on, or rejected"}, 400, 404, 409),
)
def review_execution(execution_id: str, body: ReviewBody) -> Response[ExecutionResource]:
    request = _request()
    outcome = runtime.execution_service().review(
        request.tenant_id,
        _uuid(execution_id),
        reviews.ReviewDecision(body.decision),
        note=body.note,
        correlation_id=request.correlation_id,
        context=WorkflowWriteContext.user(request.actor),
    )
    return _json(200, ExecutionResource.of(outcome.execution, outcome.next_action))


@app.post(
    f"{EXECUTIONS}/<execution_id>/refunds",
    enable_validation=True,
    responses=documented_responses(
        {201: "Requested and sent to the provider", 200: "Replay: the refund this key created"}, 400, 404, 409
    ),
)
def refund_execution(
    execution_id: str,
    body: refunds.RefundBody,
    idempotency_key: Annotated[str | None, params.Header(alias="Idempotency-Key")] = None,
) -> Response[RefundResource]:
    request = _request()
    outcome = runtime.refund_service().request(
        request.tenant_id,
        _uuid(execution_id),
        body,
        idempotency_key=idempotency_key or "",
        correlation_id=request.correlation_id,
        context=WorkflowWriteContext.user(request.actor),
    )
    return _json(201 if outcome.created else 200, RefundResource.of(outcome.refund))


@app.get(
    RISK_RULES,
    enable_validation=True,
    responses=documented_responses({200: "The tenant's current rule set (version 0: the defaults)"}),
)
def get_risk_rules() -> Response[RiskRuleSetResource]:
    stored = runtime.rule_sets().current(_request().tenant_id)
    return _json(200, RiskRuleSetResource.of(stored))


@app.put(
    RISK_RULES,
    enable_validation=True,
    responses=documented_responses({200: "Stored as the next version"}, 400, 409),
)
def replace_risk_rules(
    if_match: Annotated[str | None, params.Header(alias="If-Match", description="The version being replaced")] = None,
) -> Response[RiskRuleSetResource]:
    request = _request()
    # Read raw: the rule format's own validation names every wrong field (422), beyond what a schema can say.
    try:
        body = app.current_event.json_body
    except ValueError:  # json.JSONDecodeError; anything that parses is judged by the rule format
        raise MalformedRequest("request body is not JSON") from None
    stored = runtime.rule_sets().replace(
        request.tenant_id, body, actor=WorkflowWriteContext.user(request.actor).actor,
        expected_version=_version(if_match),
    )  # fmt: skip
    return _json(200, RiskRuleSetResource.of(stored))


def _source_ip() -> str | None:
    # API Gateway's own view of the caller's address (not a client-supplied X-Forwarded-For).
    identity = (app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}
    source = identity.get("sourceIp")
    return source if isinstance(source, str) else None


def _version(if_match: str | None) -> int | None:
    if if_match is None:
        return None
    text = if_match.strip().strip('"')
    if not text.isdigit() or len(text) > 9:
        raise MalformedRequest("If-Match must be the version number of the rule set being replaced")
    return int(text)


@app.get(f"{API_BASE_PATH}/openapi.json", include_in_schema=False, enable_validation=True)
def openapi_document() -> Response[str]:
    return Response(200, "application/json", openapi_json())


@cache
def openapi_json() -> str:
    """The OpenAPI 3 document generated from the routes and models (docs/openapi.json is a committed copy): this
    function's routes and the payment instrument routes the vault function serves, so one document covers the API."""
    # Deferred: Powertools' OpenAPI models cost a third of this module's import, and only this route uses them.
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    from billing.instruments.api import with_instrument_routes

    document = app.get_openapi_json_schema(
        title="Billing execution API",
        version="1.0.0",
        security_schemes={BEARER: HTTPBearer(bearerFormat="JWT", description="A token the authorizer accepts")},
        security=[{BEARER: []}],
    )
    return json.dumps(with_instrument_routes(json.loads(document)), indent=4)


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ExecutionNotFound(f"execution {value[:64]} not found") from None


def _log_and_reconnect(_: Exception) -> None:
    logger.exception("unhandled error")
    runtime.connections.discard()  # the connection may be mid-transaction or broken


# Every route here is an execution resource: a path none matches (an id with characters no id has) names an
# execution that cannot exist.
answer_errors_as_problems(
    app,
    lambda: _request().correlation_id,
    no_route=ExecutionNotFound("no execution under this path"),
    on_unexpected=_log_and_reconnect,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = guard_request(event)
    if isinstance(request, dict):
        return request
    logger.set_correlation_id(request.correlation_id)
    logger.append_keys(tenant_id=str(request.tenant_id))
    app.append_context(request=request)
    return with_correlation_header(app.resolve(event, context), request.correlation_id)


preload(
    params,
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    cursors,
    execution_repository,
    reversal_repository,
    gate,
    reviews,
    refunds,
    *ExecuteRuntime.DEFERRED_MODULES,
)
