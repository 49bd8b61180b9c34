"""Powertools logger, tracer and metrics for every function, plus the structured billing log events.

Log lines never carry secrets or card numbers: the formatter masks Luhn-valid digit runs and the values of
secret-looking keys in every record, whatever a caller passed in.

The X-Ray SDK is loaded only where tracing is on (in Lambda, unless POWERTOOLS_TRACE_DISABLED): Powertools' Tracer
imports it, and botocore behind it, even when it is disabled, which is a third of a handler's import time. Where
tracing is off the tracer gets a provider that records nothing instead.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared.functions import strtobool
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from billing import resource_names as names
from billing.domain.execution import Execution, looks_like_card_number, mask_card_numbers

# "pan" only as a whole key segment: keys such as "company" or "expand" are not card numbers.
_SECRET_KEY = re.compile(
    r"password|secret|token|authorization|signature|api[_-]?key|card[_-]?number|(?:^|[_-])pan(?:$|[_-])", re.I
)
# "password=..." inside free text, e.g. an exception message quoting a connection string.
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b(password|secret|token|api[_-]?key)(\s*[=:]\s*)[^\s,;&'\"]+")
_MASK = "***"


def redact(value: Any) -> Any:
    """A copy of value with secret-looking keys and card numbers masked."""
    if isinstance(value, dict):
        return {_redact_key(k): _MASK if _SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        # A card number passed as a JSON number is still a card number.
        return _MASK if looks_like_card_number(str(value)) else value
    if not isinstance(value, str | float | bool | type(None)):
        value = str(value)  # exceptions and other objects would be str()-ed by the serialiser, unredacted
    if isinstance(value, str):
        # The same detector that refuses card numbers in input masks them here, whatever separators they carry.
        return mask_card_numbers(_SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + _MASK, value), _MASK)
    return value


def _redact_key(key: Any) -> Any:
    return mask_card_numbers(key, _MASK) if isinstance(key, str) else key


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter with redaction applied to the whole record just before serialisation."""

    def serialize(self, log: Any) -> str:
        return json.dumps(redact(dict(log)), default=str, separators=(",", ":"))


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether Powertools' Tracer would trace here: in Lambda, unless POWERTOOLS_TRACE_DISABLED, SAM local or Chalice.

    The same rule as Tracer._is_tracer_disabled (a test holds the two together across Powertools upgrades).
    """
    if strtobool(environ.get("POWERTOOLS_TRACE_DISABLED", "false")):
        return False
    in_emulator = environ.get("AWS_SAM_LOCAL") or environ.get("AWS_CHALICE_CLI_MODE")
    return bool(environ.get("LAMBDA_TASK_ROOT")) and not in_emulator


class _UnrecordedSegment(BaseSegment):
    """A (sub)segment nobody will see: annotations and metadata go nowhere."""

    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: list[Any], remote: bool = False) -> None:
        return None


class UnrecordedTracing(BaseProvider):
    """The tracer's provider where tracing is off: what a disabled X-Ray recorder does, without importing it."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Iterator[BaseSegment]:
        yield _UnrecordedSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncIterator[BaseSegment]:
        yield _UnrecordedSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


def new_tracer(service: str | None = None) -> Tracer:
    """A Powertools Tracer; with the X-Ray SDK (and its patches of botocore, psycopg, httplib) only if tracing is on.

    Powertools shares one provider between all its Tracers, so every function's tracer must come from here: a bare
    Tracer() created first would load the SDK after all.
    """
    if tracing_enabled():
        return Tracer(service=service)
    return Tracer(service=service, disabled=True, provider=UnrecordedTracing())


logger = Logger(logger_formatter=RedactingFormatter())
tracer = new_tracer()
metrics = Metrics(namespace=names.METRICS_NAMESPACE)


class PowertoolsExecutionObserver:
    """Emits billing.rail.execution per provider call and billing.execution.result per drive, with metrics."""

    def rail_call(
        self, execution: Execution, *, outcome: str, attempt: int, duration_ms: float, correlation_id: str | None
    ) -> None:
        logger.info(
            "billing.rail.execution",
            extra={
                "event": "billing.rail.execution",
                "execution_id": str(execution.id),
                "tenant_id": str(execution.tenant_id),
                "rail": execution.payment_rail.value,
                "provider": execution.payment_provider,
                "outcome": outcome,
                "attempt": attempt,
                "duration_ms": round(duration_ms, 2),
                "correlation_id": correlation_id,
            },
        )
        metrics.add_metric(name="RailCallDuration", unit=MetricUnit.Milliseconds, value=duration_ms)
        metrics.add_metric(name=f"RailOutcome_{outcome}", unit=MetricUnit.Count, value=1)

    def execution_result(self, execution: Execution, *, duration_ms: float, correlation_id: str | None) -> None:
        logger.info(
            "billing.execution.result",
            extra={
                "event": "billing.execution.result",
                "execution_id": str(execution.id),
                "tenant_id": str(execution.tenant_id),
                "status": execution.status.value,
                "awaiting_settlement": execution.awaiting_settlement,
                "duration_ms": round(duration_ms, 2),
                "rail": execution.payment_rail.value,
                "provider": execution.payment_provider,
                "correlation_id": correlation_id,
            },
        )
        metrics.add_metric(name=f"Execution_{execution.status.value}", unit=MetricUnit.Count, value=1)
