"""Provider webhooks: verify the signature over the raw body, then apply each event once (API Gateway REST)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.api.http import guard_unverified_request, problem_response, with_correlation_header
from billing.api.input_safety import require_storable_events
from billing.api.request_context import correlation_id_of
from billing.aws.cold_start import lazy_module, preload
from billing.domain.errors import BillingError, SignatureInvalid, UnknownWebhookProvider, WebhookRetryLater
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH
from billing.webhook_wiring import WebhookRuntime
from billing.webhooks.verification import RawWebhook

# Imported by the first delivery (psycopg, every provider's parser), or at init when it is paid ahead.
if TYPE_CHECKING:
    from billing import audit
    from billing.audit import hooks as audit_hooks
    from billing.services import webhook_processing
    from billing.services.webhook_processing import DeliveryResult
else:
    audit = lazy_module("billing.audit")
    audit_hooks = lazy_module("billing.audit.hooks")
    webhook_processing = lazy_module("billing.services.webhook_processing")

app = APIGatewayRestResolver()
runtime = WebhookRuntime()
# Adyen documents "[accepted]" as the body that acknowledges a notification batch.
ACKNOWLEDGEMENT_BODIES = {"adyen": "[accepted]"}


def _correlation_id() -> str:
    return correlation_id_of(app.current_event.raw_event)


@app.post(f"{API_BASE_PATH}/webhook/<provider>")
def receive_webhook(provider: str) -> Response[str]:
    raw = RawWebhook.from_api_gateway_event(app.current_event.raw_event, provider=provider, clock=runtime.clock)
    events = webhook_processing.verified_events(raw, runtime.registry, runtime.secrets)
    require_storable_events(events)
    delivery = runtime.processor().process(raw, events, correlation_id=_correlation_id())
    _observe(delivery)
    if delivery.retry_later:
        return problem_response(WebhookRetryLater(delivery.provider, delivery.retry_later), _correlation_id())
    if delivery.provider in ACKNOWLEDGEMENT_BODIES:
        return Response(200, "text/plain", ACKNOWLEDGEMENT_BODIES[delivery.provider])
    results = [{"event_id": r.event_id, "result": r.result.value, "duplicate": r.duplicate} for r in delivery.results]
    return Response(200, "application/json", json.dumps({"results": results}))


def _observe(delivery: DeliveryResult) -> None:
    for r in delivery.results:
        metric = "WebhookRedelivered" if r.duplicate else f"WebhookResult_{r.result.value}"
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
        execution = r.execution
        logger.info(
            "billing.webhook.event",
            extra={
                "event": "billing.webhook.event",
                "provider": r.provider,
                "provider_event_id": r.event_id,
                "provider_event_type": r.event_type,
                "result": r.result.value,
                "duplicate": r.duplicate,
                "tenant_id": str(execution.tenant_id) if execution else None,
                "execution_id": str(execution.execution_id) if execution else None,
            },
        )
        # Counted above as WebhookResult_amount_mismatch; this line is what the operator works from.
        if r.amount_mismatch is not None and execution is not None:
            expected, received = r.amount_mismatch.expected, r.amount_mismatch.received
            logger.warning(
                "billing.webhook.amount_mismatch",
                extra={
                    "event": "billing.webhook.amount_mismatch",
                    "provider": r.provider,
                    "provider_event_id": r.event_id,
                    "tenant_id": str(execution.tenant_id),
                    "execution_id": str(execution.execution_id),
                    "expected_amount": expected.amount,
                    "expected_currency": expected.currency,
                    "received_amount": received.amount,
                    "received_currency": received.currency,
                },
            )


@app.not_found
def _no_route(_: NotFoundError) -> Response[str]:
    # A {provider} segment with characters no provider name has; Powertools' NotFoundError would otherwise be a 500.
    provider = str((app.current_event.path_parameters or {}).get("provider", ""))
    return problem_response(UnknownWebhookProvider(provider), _correlation_id())


@app.exception_handler(SignatureInvalid)
def _signature_rejected(error: SignatureInvalid) -> Response[str]:
    # Who claims to have sent it and why it failed; never the payload, which nothing vouches for.
    metrics.add_metric(name="WebhookSignatureRejected", unit=MetricUnit.Count, value=1)
    logger.warning("webhook signature rejected", extra={"provider": error.provider, "reason": error.reason})
    _audit_rejection(error)
    return problem_response(error, _correlation_id())


def _audit_rejection(error: SignatureInvalid) -> None:
    # PCI DSS 10.2.1.4. A failed audit write must not turn a 401 into a 500 the provider retries forever: it is
    # logged and counted (an alarm on the metric), and the delivery is still refused.
    source_ip = ((app.current_event.raw_event.get("requestContext") or {}).get("identity") or {}).get("sourceIp")
    event = audit_hooks.webhook_signature_rejected(
        error.provider, error.reason, correlation_id=_correlation_id(), source_ip=source_ip
    )
    try:
        audit.record_audit_event(runtime.connections.get(), event)
    except Exception:
        runtime.connections.discard()
        metrics.add_metric(name="AuditWriteFailed", unit=MetricUnit.Count, value=1)
        logger.exception("audit write failed", extra={"audit_event": event.event_type.value})


@app.exception_handler(BillingError)
def _refused(error: BillingError) -> Response[str]:
    logger.warning("webhook delivery refused", extra={"code": error.code})
    return problem_response(error, _correlation_id())


@app.exception_handler(Exception)
def _unexpected(error: Exception) -> Response[str]:
    logger.exception("unhandled error")
    runtime.connections.discard()  # the connection may be mid-transaction or broken
    return problem_response(error, _correlation_id())


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    correlation_id = correlation_id_of(event)
    logger.set_correlation_id(correlation_id)
    refused = guard_unverified_request(event)
    if refused is not None:
        return refused
    return with_correlation_header(app.resolve(event, context), correlation_id)


preload(audit, audit_hooks, webhook_processing, *WebhookRuntime.DEFERRED_MODULES)
