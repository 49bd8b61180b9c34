"""Concurrent requests through the local stack are as isolated as concurrent Lambda invocations.

Each of the posts below carries its own tenant, idempotency key and correlation id. In containers that shared one
process, requests answered with another request's execution (the resolver's current event is process state) and
their log lines carried each other's request ids (so is the Powertools logger's appended keys).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID, uuid4

import pytest

from tests.e2e.conftest import ApiResponse, LocalApi
from tests.factories import CARD_REQUEST

pytestmark = pytest.mark.e2e
EXECUTIONS = "/api/v1/billing/executions"
PARALLEL = 20


def test_parallel_posts_get_their_own_execution_and_log_only_their_own_ids(
    local_stack: LocalApi, capsys: pytest.CaptureFixture[str]
) -> None:
    sent = [(uuid4(), f"iso-key-{uuid4()}", f"iso-corr-{uuid4()}") for _ in range(PARALLEL)]
    barrier = threading.Barrier(PARALLEL)

    def post(request: tuple[UUID, str, str]) -> ApiResponse:
        tenant, key, correlation = request
        barrier.wait()
        return local_stack.request(
            "POST",
            EXECUTIONS,
            json=CARD_REQUEST,
            headers={"Idempotency-Key": key, "X-Correlation-Id": correlation},
            token=local_stack.token(tenant),
        )

    with ThreadPoolExecutor(PARALLEL) as pool:
        responses = list(pool.map(post, sent))
    output = capsys.readouterr().out

    assert [r.status for r in responses] == [201] * PARALLEL, [r.text for r in responses if r.status != 201]
    for (_, key, correlation), response in zip(sent, responses, strict=True):
        assert response.json()["idempotency_key"] == key
        assert response.json()["correlation_id"] == correlation
        assert response.headers["X-Correlation-Id"] == correlation
    request_ids = {corr: r.headers["x-amzn-RequestId"] for (_, _, corr), r in zip(sent, responses, strict=True)}
    tenants = {corr: str(tenant) for tenant, _, corr in sent}
    lines = [line for line in _json_lines(output) if line.get("correlation_id") in request_ids]
    assert {line["correlation_id"] for line in lines} == set(request_ids)  # every request logged
    for line in lines:
        assert line["function_request_id"] == request_ids[line["correlation_id"]], line
        assert line["tenant_id"] == tenants[line["correlation_id"]], line


def _json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for text in output.splitlines():
        if text.startswith("{"):
            try:
                lines.append(json.loads(text))
            except ValueError:
                continue
    return lines
