"""Scheduled daily and weekly: reconciles provider settlement files with our executions and writes the report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.aws.cold_start import lazy_module
from billing.observability import logger, metrics, tracer
from billing.settlement.wiring import SettlementReportCommand, SettlementReportRuntime, SettlementReportSettings

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy_module("psycopg")  # read only when a run fails

runtime = SettlementReportRuntime(SettlementReportSettings.from_environment())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    command = SettlementReportCommand.model_validate(event or {})
    period = command.settlement_period(runtime.today())
    # Daily and weekly runs cover the same days: the dimension keeps their discrepancy counts apart.
    metrics.add_dimension(name="period", value=period.kind.value)
    try:
        run = runtime.service().run(period)
    except psycopg.Error:
        runtime.connections.discard()  # the connection may be mid-transaction or broken
        raise
    return run.summary()
