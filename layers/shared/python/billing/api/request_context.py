"""Who is calling and under which correlation id, taken only from what API Gateway vouches for.

The tenant comes from the authorizer's output (Lambda authorizer context or JWT claims), never from the body or
the query string: a caller cannot name another tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from billing.domain.errors import AuthenticationFailed
from billing.domain.execution import looks_like_card_number

_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass(frozen=True, slots=True)
class RequestContext:
    tenant_id: UUID
    actor: str
    correlation_id: str


def correlation_id_of(event: dict[str, Any]) -> str:
    """X-Correlation-Id if well-formed (it is echoed into logs and events), else API Gateway's request id.

    One that holds a card number is not well-formed: it would be stored and logged as it is.
    """
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    supplied = headers.get("x-correlation-id")
    if isinstance(supplied, str) and _CORRELATION_ID.fullmatch(supplied) and not looks_like_card_number(supplied):
        return supplied
    return str((event.get("requestContext") or {}).get("requestId") or "unknown")


def request_context_of(event: dict[str, Any]) -> RequestContext:
    """The authenticated tenant and actor; AuthenticationFailed when the authorizer vouched for no tenant."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or {}
    tenant = authorizer.get("tenant_id") or claims.get("tenant_id") or claims.get("custom:tenant_id")
    subject = authorizer.get("subject") or authorizer.get("principalId") or claims.get("sub")
    try:
        tenant_id = UUID(str(tenant))
    except ValueError:
        raise AuthenticationFailed("missing_tenant") from None
    return RequestContext(tenant_id, str(subject or "anonymous"), correlation_id_of(event))
