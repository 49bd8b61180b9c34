"""Consumes the retry queue with partial batch responses; on an operator's request, redrives the dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from billing.aws.cold_start import lazy_module, preload
from billing.domain.workflow import WorkflowWriteContext
from billing.observability import logger, metrics, tracer
from billing.worker_wiring import RetryRuntime, RetrySettings

# Loaded by the first message or redrive (which needs the database anyway), or at init when it is paid ahead.
if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy_module("psycopg")

# A record is not started with less time left than one resubmit (provider call and two commits) needs.
SAFETY_MARGIN_MS = 10_000
# One failing record never fails its neighbours; a batch that fails whole is reported record by record too.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
runtime = RetryRuntime(RetrySettings.from_environment())


class RedriveCommand(BaseModel):
    """An operator's invocation: {"redrive": true} moves every parked message, or only `message_ids`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redrive: Literal[True]
    message_ids: list[str] | None = Field(default=None, min_length=1)
    operator: str | None = Field(default=None, min_length=1, max_length=100)


class OutOfTime(Exception):
    """Raised instead of starting a record the function may not finish; the record comes back later."""


def record_handler(record: SQSRecord, lambda_context: LambdaContext | None = None) -> None:
    if lambda_context is not None and lambda_context.get_remaining_time_in_millis() < SAFETY_MARGIN_MS:
        raise OutOfTime(f"message {record.message_id} left for the next delivery")
    try:
        result = runtime.retry_worker().handle_message(record.body)
    except psycopg.Error:
        runtime.connections.discard()  # the connection may be mid-transaction or broken
        raise
    log = {"event": "billing.retry.handled", "message_id": record.message_id, **result.as_log()}
    logger.info("billing.retry.handled", extra=log)
    metrics.add_metric(name=f"Retry_{result.outcome.value}", unit=MetricUnit.Count, value=1)


def redrive(command: RedriveCommand) -> dict[str, Any]:
    context = WorkflowWriteContext.user(command.operator) if command.operator else None
    report = runtime.dead_letter_tool(context).redrive(command.message_ids)
    metrics.add_metric(name="DeadLettersRedriven", unit=MetricUnit.Count, value=len(report.redriven))
    return report.as_dict()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" not in event:
        return redrive(RedriveCommand.model_validate(event))
    return dict(
        process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
    )


preload(psycopg, *RetryRuntime.DEFERRED_MODULES)
