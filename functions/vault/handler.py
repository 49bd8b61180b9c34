"""Card vault: save, read, list and deactivate payment instruments (API Gateway REST, Powertools).

The only function that ever sees a card number. Its request and response bodies never reach the logs: each request
is logged with the card fields erased (Powertools data masking), responses are not logged at all.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.http import answer_errors_as_problems, guard_request, with_correlation_header
from billing.aws.cold_start import preload
from billing.domain.errors import PaymentInstrumentNotFound
from billing.domain.workflow import WorkflowWriteContext
from billing.instruments.api import instrument_routes
from billing.instruments.model import Caller
from billing.observability import logger, metrics, tracer
from billing.vault.wiring import VaultRuntime, VaultSettings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_masking import DataMasking

# The instrument routes validate one by one (billing.instruments.api): a validating resolver would build Powertools'
# validation machinery at import, a validating route builds it on its first request.
app = APIGatewayRestResolver()
runtime = VaultRuntime(VaultSettings.from_environment())
app.include_router(instrument_routes(runtime.instrument_service))

# Everything in a body that is cardholder data or personal: erased before the request is logged.
MASKED_FIELDS: Final = (
    "card.number",
    "card.cvc",
    "card.holder_name",
    "provider_token.token",
    "sepa_debit.iban",
    "sepa_debit.holder_name",
    "sepa_debit.mandate_reference",
)


@cache
def masking() -> DataMasking:
    # Built by the first body that holds card data: Powertools' data masking is a sixth of this module's import.
    from aws_lambda_powertools.utilities.data_masking import DataMasking

    return DataMasking(raise_on_missing_field=False)


def _caller() -> Caller:
    found: Caller = app.context["caller"]
    return found


def masked_body(event: dict[str, Any]) -> Any:
    """The request body as it may be logged: card fields erased, anything unreadable not shown at all."""
    try:
        body = json.loads(event.get("body") or "null")
    except ValueError:
        return "<not JSON>"
    if not isinstance(body, dict):
        return "<not an object>"
    present = [path for path in MASKED_FIELDS if _has(body, path.split("."))]
    return masking().erase(body, fields=present) if present else body


def _has(document: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(document, dict) or key not in document:
            return False
        document = document[key]
    return True


def _log_type_and_reconnect(error: Exception) -> None:
    # The type only: a message may quote what was being processed.
    logger.error("unhandled error", extra={"error_type": type(error).__name__})
    runtime.connections.discard()


answer_errors_as_problems(
    app,
    lambda: _caller().correlation_id,
    no_route=PaymentInstrumentNotFound("no payment instrument under this path"),
    on_unexpected=_log_type_and_reconnect,
)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = guard_request(event)
    if isinstance(request, dict):
        return request
    logger.set_correlation_id(request.correlation_id)
    logger.append_keys(tenant_id=str(request.tenant_id))
    logger.info(
        "billing.vault.request",
        extra={"method": event.get("httpMethod"), "resource": event.get("resource"), "body": masked_body(event)},
    )
    source = ((event.get("requestContext") or {}).get("identity") or {}).get("sourceIp")
    # The same spelling of the user as every other function's audit entries and workflow rows ("user:<subject>").
    actor = WorkflowWriteContext.user(request.actor).actor
    app.append_context(caller=Caller(request.tenant_id, actor, request.correlation_id, source))
    return with_correlation_header(app.resolve(event, context), request.correlation_id)


preload(
    "aws_lambda_powertools.event_handler.openapi.params",
    "aws_lambda_powertools.event_handler.middlewares.openapi_validation",
    "billing.instruments.repository",
    "aws_lambda_powertools.utilities.data_masking",
    *VaultRuntime.DEFERRED_MODULES,
)
