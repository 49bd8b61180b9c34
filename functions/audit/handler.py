"""Audit API for auditors: list audit events, the latest signed checkpoint, and inclusion proofs (API Gateway REST).

Every route needs the `auditor` scope in the bearer token (403 otherwise, itself recorded); every read is recorded
in the trail it reads (PCI DSS 10.2.1.3).
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.http import answer_errors_as_problems, guard_request, with_correlation_header
from billing.api.parameters import Rfc3339DateTime
from billing.audit.api import AuditRuntime, access_of, json_response, scope_refusal
from billing.audit.events import AuditEventType
from billing.audit.queries import EventQuery, decode_cursor
from billing.domain.errors import AuditRecordNotFound
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH

app = APIGatewayRestResolver(enable_validation=True)
runtime = AuditRuntime()
AUDIT = f"{API_BASE_PATH}/audit"


@app.get(f"{AUDIT}/events")
def list_events(
    tenant_id: Annotated[UUID | None, Query()] = None,
    resource_id: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    event_type: Annotated[AuditEventType | None, Query()] = None,
    occurred_from: Annotated[Rfc3339DateTime | None, Query(alias="from")] = None,
    occurred_to: Annotated[Rfc3339DateTime | None, Query(alias="to")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response[str]:
    query = EventQuery(
        tenant_id, resource_id, event_type, occurred_from, occurred_to,
        decode_cursor(cursor) if cursor else None, limit,
    )  # fmt: skip
    items, next_cursor = runtime.reader().events(query, access_of(app))
    return json_response(200, {"items": items, "next_cursor": next_cursor})


@app.get(f"{AUDIT}/checkpoints/latest")
def latest_checkpoint() -> Response[str]:
    checkpoint = runtime.reader().latest_checkpoint(access_of(app))
    if checkpoint is None:
        raise AuditRecordNotFound("no checkpoint has been written yet")
    return json_response(200, checkpoint.as_document())


@app.get(f"{AUDIT}/proofs/<seq>")
def inclusion_proof(seq: str, tree_size: Annotated[int, Query(ge=1)]) -> Response[str]:
    proof = runtime.reader().inclusion_proof(runtime.tree_index(seq, tree_size), tree_size, access_of(app))
    return json_response(200, proof.as_document())


def _log_and_reconnect(_: Exception) -> None:
    logger.exception("unhandled error")
    runtime.connections.discard()


answer_errors_as_problems(
    app,
    lambda: access_of(app).correlation_id,
    no_route=AuditRecordNotFound("no audit resource under this path"),
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
    refusal = scope_refusal(event, request, runtime)
    if refusal is not None:
        return refusal
    app.append_context(request=request)
    return with_correlation_header(app.resolve(event, context), request.correlation_id)
