"""Settlement reports API for finance: list and read reports, page through their discrepancies and resolve them
(API Gateway REST).

Every route needs the `finance` scope in the bearer token (403 otherwise, recorded in the audit trail). Reports are
platform-wide, never filtered by the caller's tenant; each resolution is recorded as an operator action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.cursor import decode_cursor
from billing.api.http import answer_errors_as_problems, guard_request, with_correlation_header
from billing.api.parameters import CalendarDay
from billing.api.request_context import RequestContext
from billing.aws.cold_start import lazy_module, preload
from billing.domain.errors import SettlementReportNotFound
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH
from billing.settlement import api
from billing.settlement.outcome import DiscrepancyClass

# The store (the settlement tables through psycopg) loads with the first request that reads or resolves.
if TYPE_CHECKING:
    from billing.settlement import store
else:
    store = lazy_module("billing.settlement.store")

app = APIGatewayRestResolver(enable_validation=True)
runtime = api.SettlementApiRuntime()
REPORTS = f"{API_BASE_PATH}/settlement-reports"


def _request() -> RequestContext:
    request: RequestContext = app.context["request"]
    return request


@app.get(REPORTS)
def list_reports(
    provider: Annotated[str | None, Query(pattern=api.PROVIDER_PATTERN)] = None,
    period_from: Annotated[CalendarDay | None, Query()] = None,
    period_to: Annotated[CalendarDay | None, Query()] = None,
    current: Annotated[bool, Query()] = False,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> Response[str]:
    after = decode_cursor(cursor) if cursor else None
    query = store.ReportQuery(provider, period_from, period_to, current, after, limit)
    return api.json_response(200, api.reports_page(*runtime.store.list_reports(runtime.conn(), query)))


@app.get(f"{REPORTS}/<report_id>")
def get_report(report_id: str) -> Response[str]:
    report = runtime.store.get_report(runtime.conn(), api.report_id_of(report_id))
    return api.json_response(200, report.as_dict())


@app.get(f"{REPORTS}/<report_id>/discrepancies")
def list_discrepancies(
    report_id: str,
    discrepancy_class: Annotated[DiscrepancyClass | None, Query(alias="class")] = None,
    resolved: Annotated[bool | None, Query()] = None,
    tenant_id: Annotated[UUID | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response[str]:
    query = store.DiscrepancyQuery(
        api.report_id_of(report_id), api.discrepancy_class_of(discrepancy_class), resolved, tenant_id,
        api.decode_discrepancy_cursor(cursor) if cursor else None, limit,
    )  # fmt: skip
    return api.json_response(200, api.discrepancies_page(*runtime.store.discrepancies(runtime.conn(), query)))


@app.post(f"{REPORTS}/<report_id>/discrepancies/<discrepancy_id>/resolve")
def resolve_discrepancy(report_id: str, discrepancy_id: str, body: api.ResolveBody) -> Response[str]:
    request = _request()
    resolved = runtime.store.resolve(
        runtime.conn(), api.report_id_of(report_id), api.discrepancy_id_of(discrepancy_id),
        actor=api.actor_of(request), note=body.note, correlation_id=request.correlation_id,
        source=api.source_of(app),
    )  # fmt: skip
    return api.json_response(200, resolved.as_dict())


def _log_and_reconnect(_: Exception) -> None:
    logger.exception("unhandled error")
    runtime.connections.discard()


answer_errors_as_problems(
    app,
    lambda: _request().correlation_id,
    no_route=SettlementReportNotFound("no settlement report under this path"),
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
    refusal = api.scope_refusal(event, request, runtime)
    if refusal is not None:
        return refusal
    app.append_context(request=request)
    return with_correlation_header(app.resolve(event, context), request.correlation_id)


preload(store, "billing.db.connection_provider", "billing.audit.recorder")
