"""3-D Secure in the customer's browser: the challenge redirect, the sandbox ACS's pages, and the notification
(API Gateway REST, Powertools). Unauthenticated by design: the browser holds no token of ours, only the random ids
the execution's next_action handed out. Form fields are never logged: a one-time code is a credential."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from uuid import UUID

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

from billing.aws.cold_start import lazy_module, preload
from billing.observability import logger, metrics, tracer
from billing.resource_names import API_BASE_PATH
from billing.three_ds_wiring import ThreeDSRuntime

# The challenge flow (EMV messages, the sandbox ACS, the execution driver) loads with the first page asked for.
if TYPE_CHECKING:
    from billing.authentication import challenge, pages
    from billing.authentication.challenge import Page
else:
    challenge = lazy_module("billing.authentication.challenge")
    pages = lazy_module("billing.authentication.pages")

app = APIGatewayRestResolver()
runtime = ThreeDSRuntime()
THREE_DS = f"{API_BASE_PATH}/3ds"
ACS = f"{API_BASE_PATH}/sandbox-acs"


def _form() -> dict[str, str]:
    body = app.current_event.decoded_body or ""
    return {key: values[0] for key, values in parse_qs(body, max_num_fields=8).items() if values}


def _html(page: Page) -> Response[str]:
    headers = {
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }
    return Response(page.status, "text/html; charset=utf-8", page.html, headers=headers)


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def _not_found() -> Response[str]:
    page = pages.result_page(title="Authentication", message="This page does not exist.", return_url=None)
    return _html(challenge.Page(404, page))


@app.get(f"{THREE_DS}/<tenant>/<authentication>/challenge")
def start_challenge(tenant: str, authentication: str) -> Response[str]:
    tenant_id, authentication_id = _uuid(tenant), _uuid(authentication)
    if tenant_id is None or authentication_id is None:
        return _not_found()
    return _html(runtime.challenges().start(tenant_id, authentication_id))


@app.post(f"{THREE_DS}/<tenant>/<authentication>/notify")
def notified(tenant: str, authentication: str) -> Response[str]:
    tenant_id, authentication_id = _uuid(tenant), _uuid(authentication)
    if tenant_id is None or authentication_id is None:
        return _not_found()
    return _html(runtime.challenges().notified(tenant_id, authentication_id, _form().get("cres", "")))


@app.post(f"{ACS}/<acs>")
def acs_challenge(acs: str) -> Response[str]:
    return _html(runtime.challenges().acs_open(acs, _form().get("creq", "")))


@app.post(f"{ACS}/<acs>/code")
def acs_code(acs: str) -> Response[str]:
    return _html(runtime.challenges().acs_code(acs, _form().get("code", "")))


@app.post(f"{ACS}/<acs>/cancel")
def acs_cancel(acs: str) -> Response[str]:
    return _html(runtime.challenges().acs_cancel(acs))


@app.not_found
def no_page(_: Exception) -> Response[str]:
    return _not_found()


@app.exception_handler(Exception)
def unexpected(_: Exception) -> Response[str]:
    logger.exception("unhandled error")
    runtime.connections.discard()
    page = pages.result_page(title="Authentication", message="Something went wrong; please try again.", return_url=None)
    return _html(challenge.Page(500, page))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


preload(challenge, pages, *ThreeDSRuntime.DEFERRED_MODULES)
