"""The local stack (`make serve` in-process) for end-to-end tests, and an HTTP client for it.

    def test_something(local_stack: LocalApi) -> None:
        response = local_stack.request("POST", "/api/v1/billing/executions", json={...}, token=local_stack.token())
        assert response.status == 201, response.text

One stack serves every test under tests/e2e: free ports, a fresh migrated database (the `db_url` fixture), its own
moto server. It is torn down when the last e2e test has run, so its os.environ changes (AWS_ENDPOINT_URL, ...) never
reach the other test packages, and its moto server never sees their in-process moto mocks.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from urllib.parse import urlsplit
from uuid import UUID

import pytest

from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token
from billing.local.stack import LocalStack

# The environment before any stack touched it, for subprocesses that start their own stack.
ENVIRONMENT_BEFORE_STACK: Final = dict(os.environ)
DEFAULT_TENANT: Final = UUID("e2e00000-0000-4000-8000-000000000001")
DEFAULT_SUBJECT: Final = "e2e-user"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class LocalApi:
    """The running stack's base URL, a token minter and a small HTTP client (no redirects, no retries)."""

    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.base_url = stack.base_url
        address = urlsplit(self.base_url)
        self._host = address.hostname or "127.0.0.1"
        self._port = address.port or 80

    def token(
        self, tenant_id: UUID = DEFAULT_TENANT, subject: str = DEFAULT_SUBJECT, *, ttl: timedelta = timedelta(hours=1)
    ) -> str:
        """A bearer token the local authorizer accepts (signed with the dev key)."""
        return issue_token(LOCAL_TOKEN_SETTINGS, tenant_id, subject, ttl=ttl)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self._host, self._port, timeout=30)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> ApiResponse:
        """One request; `json` is serialised as the body, `token` becomes `Authorization: Bearer <token>`."""
        sent = dict(headers or {})
        if json is not None:
            body = jsonlib.dumps(json).encode()
            sent.setdefault("Content-Type", "application/json")
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return ApiResponse(response.status, response.headers, response.read())
        finally:
            connection.close()


@pytest.fixture(scope="package")
def local_stack(admin_db_url: str) -> Iterator[LocalApi]:
    """The whole local system on free ports, shared by the e2e tests (see the module docstring for the scope)."""
    with LocalStack(port=0, moto_port=0, database_url=admin_db_url) as stack:
        yield LocalApi(stack)
