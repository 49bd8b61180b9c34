"""Scheduled every 5 minutes: settles executions waiting on a provider, ends customer actions (3-D Secure) that
expired, and recovers executions stuck in processing."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from billing.aws.cold_start import lazy_module, preload
from billing.observability import logger, metrics, tracer
from billing.worker_wiring import ReconcileRuntime, ReconcileSettings

# Loaded by the first run (which needs the database anyway), or at init when it is paid ahead.
if TYPE_CHECKING:
    import psycopg

    from billing.services import reconciliation
    from billing.services.reconciliation import ReconciliationReport
else:
    psycopg = lazy_module("psycopg")
    reconciliation = lazy_module("billing.services.reconciliation")

# No provider call starts later than this before the timeout: the call, the transition and the commit fit in it.
SAFETY_MARGIN_MS = 15_000
runtime = ReconcileRuntime(ReconcileSettings.from_environment())


class ReconcileCommand(BaseModel):
    """The schedule sends {}; an operator may invoke with {"dry_run": true} to see what a run would change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dry_run: bool = False


def record(report: ReconciliationReport) -> None:
    for finding in report.flagged:
        logger.warning("billing.reconcile.flagged", extra={"event": "billing.reconcile.flagged", **finding.as_dict()})
    for finding in report.changes:
        logger.info("billing.reconcile.change", extra={"event": "billing.reconcile.change", **finding.as_dict()})
    logger.info("billing.reconcile.run", extra={"event": "billing.reconcile.run", **report.summary()})
    if report.dry_run:
        return  # a dry run changes nothing, so it must not move the dashboards either
    for action, count in report.counts().items():
        metrics.add_metric(name=f"Reconcile_{action}", unit=MetricUnit.Count, value=count)
    metrics.add_metric(name="ReconcileFlagged", unit=MetricUnit.Count, value=len(report.flagged))
    stopped_early = report.stop_reason is reconciliation.StopReason.TIME_BUDGET
    metrics.add_metric(name="ReconcileStoppedOnTimeBudget", unit=MetricUnit.Count, value=int(stopped_early))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    command = ReconcileCommand.model_validate(event or {})
    try:
        report = runtime.worker().run(
            lambda: context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS, dry_run=command.dry_run
        )
        # Refunds still waiting on their provider, in the time the executions left (a dry run changes nothing).
        refunds = (
            None
            if command.dry_run
            else runtime.refund_follower().run(lambda: context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS)
        )
        # Reviews nobody decided and 3-D Secure challenges nobody finished, past their deadlines.
        swept = None if command.dry_run else runtime.pre_submission_sweep().run()
    except psycopg.Error:
        runtime.connections.discard()  # the connection may be mid-transaction or broken
        raise
    record(report)
    if refunds is not None:
        logger.info("billing.reconcile.refunds", extra={"event": "billing.reconcile.refunds", **refunds.by_status})
        metrics.add_metric(name="ReconcileRefundsExamined", unit=MetricUnit.Count, value=refunds.examined)
    changes = [finding.as_dict() for finding in report.changes] if report.dry_run else None
    followed = dict(refunds.by_status) if refunds is not None else None
    if swept is not None:
        logger.info(
            "billing.reconcile.pre_submission",
            extra={"event": "billing.reconcile.pre_submission", **dataclasses.asdict(swept)},
        )
    expired = dataclasses.asdict(swept) if swept is not None else None
    return {**report.summary(), "planned_changes": changes, "refunds": followed, "expired": expired}


preload(psycopg, reconciliation, *ReconcileRuntime.DEFERRED_MODULES)
