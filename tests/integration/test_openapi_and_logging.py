"""The committed OpenAPI document matches the code, and log lines never carry card numbers or secrets."""

from __future__ import annotations

import json
import logging
from types import ModuleType
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection
from billing.observability import redact
from billing.paths import REPO_ROOT
from tests.factories import CARD_REQUEST as CARD
from tests.factories import create_execution
from tests.lambda_harness import EXECUTIONS_PATH as BASE
from tests.lambda_harness import api_event, call, response_json
from tests.lambda_harness import post_execution as post


def test_committed_openapi_document_matches_generated(execute: ModuleType) -> None:
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    generated = json.loads(execute.openapi_json())
    assert committed == generated, "run `make openapi` and commit docs/openapi.json"
    assert {"/api/v1/billing/executions", "/api/v1/billing/executions/{execution_id}"} <= set(committed["paths"])


def test_openapi_route_serves_the_document(execute: ModuleType, tenant_id: UUID) -> None:
    response = call(execute, api_event("GET", "/api/v1/billing/openapi.json", tenant_id=tenant_id))
    assert response["statusCode"] == 200
    assert response_json(response)["openapi"].startswith("3.")


def test_card_number_and_authorization_never_reach_logs(
    execute: ModuleType, tenant_id: UUID, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pan = "4111111111111111"
    post(execute, tenant_id, {**CARD, "card_number": pan}, headers={"Authorization": "Bearer s3cr3t-token"})
    post(execute, tenant_id, {**CARD, "metadata": {"note": f"card {pan}"}})
    post(execute, tenant_id, CARD, key="log-ok")
    output = capsys.readouterr().out + capsys.readouterr().err + caplog.text
    assert "billing.execution.result" in output  # the logs were captured at all
    assert pan not in output
    assert "s3cr3t-token" not in output


def test_redact_masks_secret_keys_and_luhn_numbers_only() -> None:
    record = {
        "password": "hunter2",
        "nested": {"api_key": "k", "note": "paid with 4242 4242 4242 4242 ok", "invoice": "INV-2026-000123"},
        "items": ["5555555555554444", "1234567890123"],
    }
    assert redact(record) == {
        "password": "***",
        "nested": {"api_key": "***", "note": "paid with *** ok", "invoice": "INV-2026-000123"},
        "items": ["***", "1234567890123"],
    }


def test_redact_leaves_keys_that_merely_contain_pan() -> None:
    record = {"company": "ACME", "expand": True, "card_pan": "x", "pan": "y"}
    assert redact(record) == {"company": "ACME", "expand": True, "card_pan": "***", "pan": "***"}


def test_redact_masks_secret_assignments_inside_text() -> None:
    text = "connect failed: host=db password=hunter2 user=app token: abc.def"
    assert redact(text) == "connect failed: host=db password=*** user=app token: ***"


def test_list_endpoint_does_not_accept_tenant_from_query(execute: ModuleType, conn: Connection) -> None:
    victim, caller = uuid4(), uuid4()
    create_execution(conn, victim)
    response = call(execute, api_event("GET", BASE, tenant_id=caller, query={"tenant_id": str(victim)}))
    assert response["statusCode"] == 200  # unknown query parameters are ignored, never used as the tenant
    assert response_json(response)["items"] == []
    own = call(execute, api_event("GET", BASE, tenant_id=victim))
    assert len(response_json(own)["items"]) == 1  # the row exists: the empty answer above is the tenant wall
