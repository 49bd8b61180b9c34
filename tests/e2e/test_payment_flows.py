"""Real payment flows over HTTP through the local stack: gateway, authorizer, execute handler, sandbox."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import uuid4

import pytest

from billing.db.connection import connect
from tests.e2e.conftest import ApiResponse, LocalApi
from tests.factories import CARD_REQUEST

pytestmark = pytest.mark.e2e
EXECUTIONS = "/api/v1/billing/executions"


def test_card_payment_over_http_completes_and_shows_timeline(local_stack: LocalApi) -> None:
    token = local_stack.token(uuid4())
    created = local_stack.request(
        "POST", EXECUTIONS, json=CARD_REQUEST, headers={"Idempotency-Key": "e2e-card-1"}, token=token
    )
    assert created.status == 201, created.text
    execution = created.json()
    assert execution["status"] == "completed"
    detail = local_stack.request("GET", f"{EXECUTIONS}/{execution['id']}", token=token).json()
    changes = [e["new_status"] for e in detail["events"] if e["old_status"] != e["new_status"]]
    assert changes == ["created", "pending", "processing", "completed"]
    assert detail["risk_assessments"][0]["decision"] in ("allow", "require_3ds")


def test_20_parallel_posts_over_http_make_one_execution_and_one_charge(local_stack: LocalApi) -> None:
    tenant = uuid4()
    token = local_stack.token(tenant)
    barrier = threading.Barrier(20)

    def post(_: int) -> ApiResponse:
        barrier.wait()
        return local_stack.request(
            "POST", EXECUTIONS, json=CARD_REQUEST, headers={"Idempotency-Key": "e2e-parallel"}, token=token
        )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted(r.status for r in responses) == [200] * 19 + [201], [r.text for r in responses if r.status >= 300]
    assert len({r.json()["id"] for r in responses}) == 1
    with connect(local_stack.stack.database_url) as conn:
        charges = conn.execute(
            "select count(*) as n from sandbox_provider.charges where idempotency_key like %s", [f"{tenant}:%"]
        ).fetchone()
    assert charges == {"n": 1}


def test_other_tenants_token_gets_404_for_an_existing_execution(local_stack: LocalApi) -> None:
    owner = local_stack.token(uuid4())
    created = local_stack.request(
        "POST", EXECUTIONS, json=CARD_REQUEST, headers={"Idempotency-Key": "e2e-owner"}, token=owner
    ).json()
    other = local_stack.request("GET", f"{EXECUTIONS}/{created['id']}", token=local_stack.token(uuid4()))
    assert other.status == 404
    assert other.json()["code"] == "execution_not_found"
