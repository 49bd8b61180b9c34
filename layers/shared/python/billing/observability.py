"""Powertools logger, tracer and metrics for every function, plus the structured billing log events.

Log lines never carry secrets or card numbers: the formatter masks Luhn-valid digit runs and the values of
secret-looking keys in every record, whatever a caller passed in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

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


logger = Logger(logger_formatter=RedactingFormatter())
tracer = Tracer()
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
