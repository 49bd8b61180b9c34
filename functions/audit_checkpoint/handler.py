"""Scheduled every minute: records the authorizer's rejected tokens and credential rotations, sequences new audit
entries into the Merkle tree and checkpoints the tree when it grew."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing import resource_names as names
from billing.audit.wiring import CheckpointRuntime, CheckpointSettings
from billing.aws.cold_start import lazy_module, preload
from billing.observability import new_tracer

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy_module("psycopg")  # loaded by the first run, which needs the database anyway

SERVICE = names.service_name(names.FunctionName.AUDIT_CHECKPOINT)
logger = Logger(service=SERVICE)
tracer = new_tracer(SERVICE)
metrics = Metrics(namespace=names.METRICS_NAMESPACE, service=SERVICE)
runtime = CheckpointRuntime(CheckpointSettings.from_environment())


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        auth_failures = runtime.record_auth_failures()
        rotated = runtime.record_rotations()
        run = runtime.checkpointer().run()
    except psycopg.Error:
        runtime.connections.discard()
        raise
    metrics.add_metric(name="AuditAuthFailuresRecorded", unit=MetricUnit.Count, value=auth_failures)
    metrics.add_metric(name="AuditCredentialRotations", unit=MetricUnit.Count, value=len(rotated))
    metrics.add_metric(name="AuditEntriesSequenced", unit=MetricUnit.Count, value=run.sequenced)
    metrics.add_metric(name="AuditTreeSize", unit=MetricUnit.Count, value=run.tree_size)
    metrics.add_metric(name="AuditCheckpointsExported", unit=MetricUnit.Count, value=len(run.exported))
    result = {**run.as_dict(), "rotations": rotated, "auth_failures": auth_failures}
    logger.info("audit checkpoint run", extra=result)
    return result


preload(psycopg, *CheckpointRuntime.DEFERRED_MODULES)
