"""Bearer-token authorizer: verifies the JWT and hands its tenant, subject and scopes to the function behind the route.

A rejected token is an invalid logical access attempt (PCI DSS 10.2.1.4). This function has no database (short cold
starts, billing.audit.log_sink), so each rejection is one message to the audit intake queue, which the audit checkpoint
function records in the trail (billing.audit.intake), and a structured audit line in this function's log. The message
holds the reason, the source IP when API Gateway gives one, the subject and tenant the token claims (unverified) and
the request id, never the token. A failure to send is logged and changes nothing: the answer is still 401.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from billing import resource_names as names
from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.intake import AuthFailure, SqsAuthFailureSender
from billing.audit.log_sink import LOG_KEY, audit_log_fields
from billing.auth.tokens import (
    Principal,
    TokenSettings,
    bearer_token,
    claimed_identity,
    parse_token_settings,
    scope_string,
    verify_token,
)
from billing.domain.errors import AuthenticationFailed

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

logger = Logger()

# API Gateway caches each decision for five minutes anyway; a rotated key list is picked up within the same window.
SECRET_MAX_AGE_SECONDS: Final = 300


class Settings(BaseModel):
    """Environment the CDK app sets, validated at cold start: a missing variable fails loudly, never defaults."""

    model_config = ConfigDict(frozen=True)

    jwt_secret_arn: str = Field(alias=names.ENV_JWT_SECRET_ARN, min_length=1)
    audit_intake_queue_url: str = Field(alias=names.ENV_AUDIT_INTAKE_QUEUE_URL, min_length=1)


SETTINGS = Settings.model_validate(dict(os.environ))


def _sqs_client() -> Any:
    import boto3  # deferred to the first rejection: an accepted token never pays for it

    return boto3.client("sqs")


intake = SqsAuthFailureSender(SETTINGS.audit_intake_queue_url, _sqs_client)


@cache
def _secrets() -> SecretsProvider:
    # Created on first use, not at import: importing this module needs no AWS region or endpoint, nor boto3.
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

    return SecretsProvider()


def token_settings() -> TokenSettings:
    """Issuer and keys from the JWT secret, cached for SECRET_MAX_AGE_SECONDS."""
    value = _secrets().get(SETTINGS.jwt_secret_arn, max_age=SECRET_MAX_AGE_SECONDS)
    if not isinstance(value, str | bytes):
        raise ValueError("the JWT secret has no string value")
    return parse_token_settings(value)


def _authorization(event: Mapping[str, Any]) -> str | None:
    if "authorizationToken" in event:  # TOKEN authorizer: the Authorization header's value
        token: str | None = event["authorizationToken"]
        return token
    # REQUEST authorizer: headers keep the client's spelling of their names.
    headers: Mapping[str, str] = event.get("headers") or {}
    return next((value for name, value in headers.items() if name.lower() == "authorization"), None)


def allow_policy(principal: Principal, method_arn: str) -> dict[str, Any]:
    """Allow every billing route of this API and stage, because API Gateway reuses a cached decision for all."""
    # methodArn: arn:aws:execute-api:<region>:<account>:<api-id>/<stage>/<METHOD>/<path>
    api_and_stage = "/".join(method_arn.split("/", 2)[:2])
    return {
        "principalId": principal.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Action": "execute-api:Invoke",
                    "Effect": "Allow",
                    "Resource": f"{api_and_stage}/*{names.API_BASE_PATH}/*",
                }
            ],
        },
        "context": _context(principal),
    }


def _context(principal: Principal) -> dict[str, str]:
    context = {"tenant_id": str(principal.tenant_id), "subject": principal.subject}
    if principal.scopes:
        # Context values must be strings, numbers or booleans: the scopes travel as one space-separated string.
        context["scopes"] = scope_string(principal.scopes)
    return context


def authorize(event: Mapping[str, Any], settings: TokenSettings) -> dict[str, Any]:
    """The authorizer's answer for a valid bearer token; AuthenticationFailed for anything else."""
    principal = verify_token(bearer_token(_authorization(event)), settings)
    return allow_policy(principal, event["methodArn"])


def rejected(event: Mapping[str, Any], error: AuthenticationFailed, context: LambdaContext) -> dict[str, Any]:
    """The audit line of a rejected token: never the token itself, only why and for which call."""
    # methodArn: arn:aws:execute-api:<region>:<account>:<api-id>/<stage>/<METHOD>/<path>
    call = "/".join(str(event.get("methodArn", "")).split("/")[2:])[:200]
    return audit_log_fields(
        AuditEvent(
            AuditEventType.AUTHENTICATION_FAILED,
            AuditOutcome.DENIED,
            actor="anonymous",
            tenant_id=None,
            resource_type="api",
            resource_id=call or None,
            correlation_id=getattr(context, "aws_request_id", None),
            # A TOKEN authorizer is not given the caller's address; API Gateway's access log has it by request id.
            source="function:authorizer",
            details={"reason": error.reason},
        )
    )


def auth_failure(event: Mapping[str, Any], error: AuthenticationFailed, context: LambdaContext) -> AuthFailure:
    """The intake message of a rejected token: the claims it makes, unverified, and never the token itself."""
    request_context: Mapping[str, Any] = event.get("requestContext") or {}
    identity: Mapping[str, Any] = request_context.get("identity") or {}
    subject, tenant = claimed_identity(_authorization(event))
    return AuthFailure(
        reason=error.reason,
        # A REQUEST authorizer is given API Gateway's request id and the caller's IP; a TOKEN authorizer neither,
        # so its own invocation id (in API Gateway's access log too) stands in.
        request_id=str(request_context.get("requestId") or getattr(context, "aws_request_id", "unknown")),
        occurred_at=datetime.now(UTC),
        source_ip=identity.get("sourceIp"),
        claimed_subject=subject,
        claimed_tenant_id=tenant,
    )


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        return authorize(event, token_settings())
    except AuthenticationFailed as exc:
        logger.warning("bearer token rejected", extra={"reason": exc.reason, LOG_KEY: rejected(event, exc, context)})
        intake.send(auth_failure(event, exc, context))
        # This exact message is what makes API Gateway answer 401 instead of 500.
        raise Exception("Unauthorized") from None
