"""Scheduled every minute: drains the outbox to the billing event bus and reports the backlog as metrics."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from billing import resource_names as names
from billing.aws.cold_start import lazy_module, preload
from billing.observability import new_tracer

# Loaded by the first run (which needs the database and the bus anyway), or at init when it is paid ahead.
if TYPE_CHECKING:
    import psycopg

    from billing.db.connection_provider import ConnectionProvider
    from billing.outbox import relay
    from billing.outbox.eventbridge import EventBridgePublisher
else:
    psycopg = lazy_module("psycopg")
    relay = lazy_module("billing.outbox.relay")

SERVICE = names.service_name(names.FunctionName.OUTBOX_RELAY)
logger = Logger(service=SERVICE)
tracer = new_tracer(SERVICE)
metrics = Metrics(namespace=names.METRICS_NAMESPACE, service=SERVICE)
# No PutEvents call starts later than this before the timeout: a call with its retry, then the commit, fit in it.
SAFETY_MARGIN_MS = 10_000


class Settings(BaseModel):
    """Environment validated at cold start: a missing variable fails loudly, never defaults."""

    model_config = ConfigDict(frozen=True)

    event_bus_name: str = Field(alias=names.ENV_EVENT_BUS_NAME, min_length=1)


SETTINGS = Settings.model_validate(dict(os.environ))


@cache
def connections() -> ConnectionProvider:
    from billing.db.connection_provider import ConnectionProvider
    from billing.db.roles import DatabaseRole

    return ConnectionProvider(role=DatabaseRole.WORKER)


@cache
def publisher() -> EventBridgePublisher:
    from billing.outbox.eventbridge import build_event_publisher

    return build_event_publisher(SETTINGS.event_bus_name)


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outbox = relay.OutboxRelay(connections().get(), publisher())
    try:
        report = outbox.run(lambda: context.get_remaining_time_in_millis() - SAFETY_MARGIN_MS)
    except psycopg.Error:
        connections().discard()
        raise
    metrics.add_metric(name="OutboxPublished", unit=MetricUnit.Count, value=report.published)
    metrics.add_metric(name="OutboxPublishFailed", unit=MetricUnit.Count, value=report.failed)
    metrics.add_metric(name="OutboxParked", unit=MetricUnit.Count, value=report.parked)
    metrics.add_metric(
        name="OutboxLagSeconds", unit=MetricUnit.Seconds, value=report.oldest_unpublished_age_seconds or 0.0
    )
    logger.info("outbox relay run", extra=report.as_dict())
    return report.as_dict()


preload(psycopg, relay, "billing.db.connection_provider", "billing.outbox.eventbridge", "boto3")
