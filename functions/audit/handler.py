"""Audit API for auditors: list audit events, the latest signed checkpoint, and inclusion proofs (API Gateway REST).

Every route needs the `auditor` scope in the bearer token (403 otherwise, itself recorded); every read is recorded
in the trail it reads (PCI DSS 10.2.1.3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.http import answer_errors_as_problems, guard_request, with_correlation_header
from billing.api.parameters import Rfc3339DateTime
from billing.audit.api import AuditRuntime, access_of, json_response, scope_refusal
from billing.audit.events import AuditEventType
from billing.aws.cold_start import lazy_module, preload
from billing.domain.errors import AuditRecordNotFound
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH

# The queries (the Merkle tree, the audit tables through psycopg) load with the first read; Powertools' parameter
# markers bring its validation machinery, which the first validated request loads.
if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler.openapi import params

    from billing.audit import queries
else:
    params = lazy_module("aws_lambda_powertools.event_handler.openapi.params")
    queries = lazy_module("billing.audit.queries")

# Validation is switched on route by route, never on the resolver: a validating resolver builds Powertools' request
# and response validation at import, a validating route on its first request.
app = APIGatewayRestResolver()
runtime = AuditRuntime()
AUDIT = f"{API_BASE_PATH}/audit"


@app.get(f"{AUDIT}/events", enable_validation=True)
def list_events(
    tenant_id: Annotated[UUID | None, params.Query()] = None,
    resource_id: Annotated[str | None, params.Query(min_length=1, max_length=200)] = None,
    event_type: Annotated[AuditEventType | None, params.Query()] = None,
    occurred_from: Annotated[Rfc3339DateTime | None, params.Query(alias="from")] = None,
    occurred_to: Annotated[Rfc3339DateTime | None, params.Query(alias="to")] = None,
    cursor: Annotated[str | None, params.Query(max_length=512)] = None,
    limit: Annotated[int, params.Query(ge=1, le=500)] = 100,
) -> Response[str]:
    query = queries.EventQuery(
        tenant_id, resource_id, event_type, occurred_from, occurred_to,
        queries.decode_cursor(cursor) if cursor else None, limit,
    )  # fmt: skip
    items, next_cursor = runtime.reader().events(query, access_of(app))
    return json_response(200, {"items": items, "next_cursor": next_cursor})


@app.get(f"{AUDIT}/checkpoints/latest", enable_validation=True)
def latest_checkpoint() -> Response[str]:
    checkpoint = runtime.reader().latest_checkpoint(access_of(app))
    if checkpoint is None:
        raise AuditRecordNotFound("no checkpoint has been written yet")
    return json_response(200, checkpoint.as_document())


@app.get(f"{AUDIT}/proofs/<seq>", enable_validation=True)
def inclusion_proof(seq: str, tree_size: Annotated[int, params.Query(ge=1)]) -> Response[str]:
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


preload(
    params,
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    queries,
    "billing.audit.service",
    "billing.db.connection_provider",
)
