"""Refunds with amounts through the real execute handler, against real PostgreSQL and the sandbox provider.

Full and partial refunds, several partial refunds up to the captured amount, an over-refund refused by the database
even under 20 concurrent requests, replays, and the rules the database keeps on reversal rows against the
application's own role.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import RefundRequest, ReversalRepository
from billing.db.sqlstates import GuardState
from billing.domain.errors import BillingError, RefundExceedsCaptured
from billing.domain.money import Money
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.refunds import RefundBody, RefundOutcomeView, RefundService, refund_fingerprint
from tests.factories import CARD_REQUEST, count_rows
from tests.integration.raw_sql import S, execution_in, provider_reversal_of, refusal
from tests.lambda_harness import EXECUTIONS_PATH, api_event, call, header, post_execution, response_json

CTX = WorkflowWriteContext.user("refund-tests")
CHECK_AFTER = timedelta(minutes=5)
THREADS = 20


def completed_card_charge(execute: ModuleType, tenant_id: UUID, amount: int = 1999) -> dict[str, Any]:
    response = post_execution(execute, tenant_id, {**CARD_REQUEST, "amount": amount}, key=f"charge-{uuid4()}")
    body: dict[str, Any] = response_json(response)
    assert body["status"] == "completed", body
    return body


def post_refund(
    execute: ModuleType, tenant_id: UUID, execution_id: str, body: dict[str, Any], *, key: str | None = None
) -> dict[str, Any]:
    headers = {"Idempotency-Key": key or f"refund-{uuid4()}"} if key != "" else {}
    path = f"{EXECUTIONS_PATH}/{execution_id}/refunds"
    return call(execute, api_event("POST", path, tenant_id=tenant_id, body=body, headers=headers))


def detail(execute: ModuleType, tenant_id: UUID, execution_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = response_json(
        call(execute, api_event("GET", f"{EXECUTIONS_PATH}/{execution_id}", tenant_id=tenant_id))
    )
    return shown


def reversal_rows(admin: Connection, tenant_id: UUID) -> int:
    return count_rows(admin, "execution_reversals", tenant_id)


def test_partial_refund_then_a_second_one_then_an_over_refund_refused(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    charge = completed_card_charge(execute, tenant_id, amount=1999)

    first = post_refund(execute, tenant_id, charge["id"], {"amount": 500, "reason": "requested_by_customer"})
    second = post_refund(execute, tenant_id, charge["id"], {"amount": 1000})
    assert (first["statusCode"], second["statusCode"]) == (201, 201), (first["body"], second["body"])
    for refund, amount in ((response_json(first), 500), (response_json(second), 1000)):
        assert (refund["status"], refund["amount"], refund["currency"], refund["kind"]) == (
            "succeeded", amount, "EUR", "refund"
        )  # fmt: skip
        assert refund["provider_reference"].startswith("sbxr_")
        assert refund["initiated_by"] == "merchant"

    before = reversal_rows(admin, tenant_id)
    over = post_refund(execute, tenant_id, charge["id"], {"amount": 500})
    assert over["statusCode"] == 422
    assert header(over, "Content-Type") == "application/problem+json"
    assert response_json(over)["code"] == "refund_exceeds_captured"
    assert reversal_rows(admin, tenant_id) == before

    shown = detail(execute, tenant_id, charge["id"])
    assert shown["refunded_amount"] == 1500
    assert shown["status"] == "completed"  # the execution row itself never changes
    assert [r["amount"] for r in shown["refunds"]] == [500, 1000]
    types = [e["type"] for e in shown["events"]]
    assert types.count("billing.execution.refund_requested") == 2
    assert types.count("billing.execution.refunded") == 2

    # What is left can still be refunded, exactly.
    rest = post_refund(execute, tenant_id, charge["id"], {"amount": 499})
    assert response_json(rest)["status"] == "succeeded"
    assert detail(execute, tenant_id, charge["id"])["refunded_amount"] == 1999


def test_full_refund_and_its_replay(execute: ModuleType, admin: Connection, tenant_id: UUID) -> None:
    charge = completed_card_charge(execute, tenant_id)
    first = post_refund(execute, tenant_id, charge["id"], {"amount": 1999, "currency": "EUR"}, key="full-1")
    before = (reversal_rows(admin, tenant_id), count_rows(admin, "billing_outbox", tenant_id))
    again = post_refund(execute, tenant_id, charge["id"], {"amount": 1999, "currency": "EUR"}, key="full-1")
    assert (first["statusCode"], again["statusCode"]) == (201, 200)
    assert response_json(again)["id"] == response_json(first)["id"]
    assert (reversal_rows(admin, tenant_id), count_rows(admin, "billing_outbox", tenant_id)) == before

    reused = post_refund(execute, tenant_id, charge["id"], {"amount": 100}, key="full-1")
    assert (reused["statusCode"], response_json(reused)["code"]) == (422, "idempotency_key_reused")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": 0}, 422, "validation_failed"),
        ({"amount": -5}, 422, "validation_failed"),
        ({"amount": 10.5}, 422, "validation_failed"),
        ({"amount": "100"}, 422, "validation_failed"),
        ({"amount": 100, "currency": "USD"}, 422, "validation_failed"),
        ({"amount": 100, "reason": "4111 1111 1111 1111"}, 422, "validation_failed"),
        ({"amount": 100, "note": "extra"}, 422, "validation_failed"),
    ],
)
def test_bad_refund_requests_are_refused_and_write_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID, body: dict[str, Any], status: int, code: str
) -> None:
    charge = completed_card_charge(execute, tenant_id)
    before = reversal_rows(admin, tenant_id)
    response = post_refund(execute, tenant_id, charge["id"], body)
    assert (response["statusCode"], response_json(response)["code"]) == (status, code), response["body"]
    assert header(response, "Content-Type") == "application/problem+json"
    assert reversal_rows(admin, tenant_id) == before


def test_refund_needs_an_idempotency_key(execute: ModuleType, tenant_id: UUID) -> None:
    charge = completed_card_charge(execute, tenant_id)
    response = post_refund(execute, tenant_id, charge["id"], {"amount": 100}, key="")
    assert (response["statusCode"], response_json(response)["code"]) == (400, "idempotency_key_invalid")


def test_failed_execution_and_unknown_or_foreign_executions_cannot_be_refunded(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    declined = response_json(
        post_execution(execute, tenant_id, {**CARD_REQUEST, "payment_instrument_id": "tok_decline"})
    )
    assert declined["status"] == "failed"
    refused = post_refund(execute, tenant_id, declined["id"], {"amount": 100})
    assert (refused["statusCode"], response_json(refused)["code"]) == (409, "execution_not_refundable")

    charge = completed_card_charge(execute, tenant_id)
    other_tenant = uuid4()
    foreign = post_refund(execute, other_tenant, charge["id"], {"amount": 100})
    missing = post_refund(execute, tenant_id, str(uuid4()), {"amount": 100})
    assert (foreign["statusCode"], missing["statusCode"]) == (404, 404)
    assert reversal_rows(admin, tenant_id) == 0


def test_twenty_concurrent_refunds_never_exceed_the_captured_amount(
    execute: ModuleType, db_url: str, admin: Connection, tenant_id: UUID
) -> None:
    charge = completed_card_charge(execute, tenant_id, amount=1000)
    execution_id = UUID(charge["id"])
    connections = [connect(db_url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    sandbox = {"sandbox": SandboxProvider(connections_to(db_url))}

    def refund(index: int) -> RefundOutcomeView | BaseException:
        conn = connections[index]
        service = RefundService(ExecutionRepository(conn), ReversalRepository(conn), sandbox)
        barrier.wait()  # released together: the requests overlap in the database
        try:
            return service.request(
                tenant_id, execution_id, RefundBody(amount=300), idempotency_key=f"c-{index}", correlation_id=None,
                context=CTX,
            )  # fmt: skip
        except BillingError as exc:
            return exc

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            outcomes = list(pool.map(refund, range(THREADS)))
    finally:
        for conn in connections:
            conn.close()
    # 20 requests of 300 for a charge of 1000: exactly three fit, whatever the interleaving.
    made = [o for o in outcomes if isinstance(o, RefundOutcomeView)]
    refused = [o for o in outcomes if not isinstance(o, RefundOutcomeView)]
    assert len(made) == 3, outcomes
    assert all(isinstance(o, RefundExceedsCaptured) for o in refused), refused
    assert {o.refund.status.value for o in made} == {"succeeded"}
    assert detail(execute, tenant_id, charge["id"])["refunded_amount"] == 900
    # The sandbox (the provider) saw exactly the three refunds the database let through.
    refunded_at_provider = admin.execute(
        "select coalesce(sum(amount), 0) as total from sandbox_provider.refunds where charge_reference = %s",
        [charge["provider_reference"]],
    ).fetchone()
    assert refunded_at_provider is not None
    assert refunded_at_provider["total"] == 900


def test_database_refuses_an_over_refund_from_raw_sql_of_the_app_role(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    reversals = ReversalRepository(conn)
    money = Money(execution.amount, execution.currency)

    def request(key: str, amount: int) -> None:
        refund = RefundRequest(
            tenant_id,
            execution.id,
            Money(amount, money.currency),
            key,
            refund_fingerprint(execution.id, money, None),
            None,
        )
        reversals.request_refund(refund, first_check_after=CHECK_AFTER, context=CTX, correlation_id=None)

    request("r-1", execution.amount)
    with pytest.raises(RefundExceedsCaptured):
        request("r-2", 1)
    # A chargeback the provider reports is recorded whatever the refunds (it already happened).
    provider_reversal_of(conn, execution, amount=1)


def test_reversal_rows_keep_their_amount_and_only_move_forward(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    chargeback = provider_reversal_of(conn, execution)
    where = " where tenant_id = %s and id = %s"
    ids = [tenant_id, chargeback.id]
    assert refusal(conn, tenant_id, "update billing.execution_reversals set amount = 1" + where, ids) == "42501"
    assert (
        refusal(conn, tenant_id, "update billing.execution_reversals set status = 'pending'" + where, ids)
        == GuardState.REVERSAL_CHANGE
    )
    assert refusal(conn, tenant_id, "delete from billing.execution_reversals" + where, ids) == "42501"


def test_a_status_change_without_its_event_is_refused_at_commit(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    money = Money(100, execution.currency)
    request = RefundRequest(
        tenant_id, execution.id, money, "no-event", refund_fingerprint(execution.id, money, None), None
    )
    refund, _ = ReversalRepository(conn).request_refund(
        request, first_check_after=CHECK_AFTER, context=CTX, correlation_id=None
    )
    assert refund is not None
    statement = "update billing.execution_reversals set status = 'succeeded' where tenant_id = %s and id = %s"
    assert refusal(conn, tenant_id, statement, [tenant_id, refund.id]) == GuardState.UNRECORDED_CHANGE


def test_refund_in_repeatable_read_is_refused(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute("set transaction isolation level repeatable read")
        conn.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
        conn.execute(
            "insert into billing.execution_reversals (tenant_id, id, execution_id, provider, kind, amount, currency,"
            " status, initiated_by, idempotency_key, request_fingerprint, requested_by, occurred_at)"
            " values (%s, %s, %s, 'sandbox', 'refund', 1, %s, 'requested', 'merchant', 'rr', 'f', 'u', now())",
            [tenant_id, uuid4(), execution.id, execution.currency],
        )
    assert caught.value.sqlstate == GuardState.REFUND_EXCEEDS_CAPTURED


def test_a_final_reversal_keeps_even_its_bookkeeping(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    chargeback = provider_reversal_of(conn, execution)  # recorded succeeded: final
    ids = [tenant_id, chargeback.id]
    for column in ("next_check_at = now()", "provider_reference = 'dp_late'", "check_attempts = 1"):
        statement = f"update billing.execution_reversals set {column} where tenant_id = %s and id = %s"
        assert refusal(conn, tenant_id, statement, ids) == GuardState.REVERSAL_CHANGE, column


def test_two_raw_refund_inserts_for_one_execution_are_serialised_by_the_database(
    db_url: str, conn: Connection, tenant_id: UUID
) -> None:
    """Without the repository's row lock (raw SQL of the app role), the cap's own advisory lock still makes a second
    refund wait for the first: the second insert cannot read the refunds before the first commits or rolls back."""
    execution = execution_in(conn, tenant_id, S.COMPLETED)
    insert = (
        "insert into billing.execution_reversals (tenant_id, id, execution_id, provider, kind, amount, currency,"
        " status, initiated_by, idempotency_key, request_fingerprint, requested_by, occurred_at)"
        " values (%s, %s, %s, 'sandbox', 'refund', %s, %s, 'requested', 'merchant', %s, 'f', 'user:raw', now())"
    )
    scope = "select set_config('billing.tenant_id', %s, true), set_config('billing.scope', 'tenant', true)"
    with connect(db_url) as first, connect(db_url) as second, first.transaction(force_rollback=True):
        first.execute(scope, [str(tenant_id)])
        first.execute(insert, [tenant_id, uuid4(), execution.id, 600, execution.currency, "raw-1"])
        with pytest.raises(psycopg.errors.LockNotAvailable), second.transaction():
            second.execute(scope, [str(tenant_id)])
            second.execute("set local lock_timeout = '300ms'")
            second.execute(insert, [tenant_id, uuid4(), execution.id, 600, execution.currency, "raw-2"])
