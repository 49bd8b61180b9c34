"""HTTP glue of the audit function: the auditor scope, who is reading, and JSON answers. Everything else is in
billing.audit.service."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from billing import resource_names as names
from billing.api.problems import problem_for, proxy_response
from billing.api.request_context import RequestContext
from billing.domain.errors import FieldError, ScopeRequired, ValidationFailed

# The reader and its connection (psycopg) are imported by the first request that reads, not at cold start.
if TYPE_CHECKING:
    from billing.audit.service import AuditAccess, AuditReader
    from billing.db.connection_provider import ConnectionProvider

_MAX_SEQ: Final = 2**63 - 1


class AuditRuntime:
    """The reader, built once per container and reused while it is warm."""

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return ConnectionProvider(role=DatabaseRole.AUDITOR)

    def reader(self) -> AuditReader:
        from billing.audit.service import AuditReader

        return AuditReader(self.connections.get())

    @staticmethod
    def tree_index(seq: str, tree_size: int) -> int:
        """The path's tree index; 422 for anything that is not one."""
        if not seq.isdigit() or int(seq) > _MAX_SEQ:
            raise ValidationFailed([FieldError("seq", "not_a_tree_index", "seq is a non-negative integer")])
        return int(seq)


def scopes_in(event: dict[str, Any]) -> frozenset[str]:
    """The scopes the authorizer vouched for (Lambda authorizer context, or JWT claims); none if malformed."""
    from billing.auth.tokens import scopes_of  # here: its module brings PyJWT and cryptography, ~70 ms of import

    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or {}
    try:
        return scopes_of(authorizer.get("scopes")) | scopes_of(claims.get("scope"))
    except ValueError:
        return frozenset()


def _source_ip(event: dict[str, Any]) -> str | None:
    ip = ((event.get("requestContext") or {}).get("identity") or {}).get("sourceIp")
    return str(ip)[:200] if ip else None


def _access(event: dict[str, Any], request: RequestContext) -> AuditAccess:
    from billing.audit.service import AuditAccess

    return AuditAccess(
        actor=request.actor,
        correlation_id=request.correlation_id,
        source=_source_ip(event),
        request=f"{event.get('httpMethod', 'GET')} {event.get('path', '')}",
    )


def access_of(app: APIGatewayRestResolver) -> AuditAccess:
    request: RequestContext = app.context["request"]
    return _access(app.current_event.raw_event, request)


def scope_refusal(event: dict[str, Any], request: RequestContext, runtime: AuditRuntime) -> dict[str, Any] | None:
    """None for an auditor; else the 403 problem response, after recording the refused read."""
    if names.AUDITOR_SCOPE in scopes_in(event):
        return None
    runtime.reader().refused(_access(event, request), "insufficient_scope")
    status, body = problem_for(ScopeRequired(names.AUDITOR_SCOPE), request.correlation_id)
    return proxy_response(status, body, request.correlation_id)


def json_response(status: int, document: dict[str, Any]) -> Response[str]:
    return Response(status, "application/json", json.dumps(document))
