"""The execute API through the real Lambda handler, against real PostgreSQL and moto SQS."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.errors import TransitionConflict
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.observability import RedactingFormatter
from billing.rails.ports import provider_idempotency_key
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.services.execution_driver import ExecutionDriver
from billing.services.execution_service import ExecutionService
from tests.factories import CARD_REQUEST, QuietObserver, RecordingRetryScheduler, count_rows, create_execution
from tests.lambda_harness import (
    EXECUTIONS_PATH,
    api_event,
    call,
    header,
    load_handler,
    post_execution,
    response_json,
)

BASE = EXECUTIONS_PATH
CARD = CARD_REQUEST


def written(admin: Connection, tenant: UUID) -> int:
    """Rows the tenant has in the tables a request writes, counted on the admin's inspection connection."""
    return sum(
        count_rows(admin, t, tenant) for t in ("billing_executions", "billing_execution_events", "billing_outbox")
    )


def queue_depth(queue_url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesDelayed"])


def test_card_payment_completes_with_timeline_and_correlation_header(execute: ModuleType, tenant_id: UUID) -> None:
    response = post_execution(execute, tenant_id, CARD, headers={"X-Correlation-Id": "corr-card-1"})
    assert response["statusCode"] == 201, response["body"]
    body = response_json(response)
    assert (body["status"], body["amount"], body["amount_display"]) == ("completed", 1999, "19.99 EUR")
    assert header(response, "X-Correlation-Id") == "corr-card-1"

    detail = response_json(call(execute, api_event("GET", f"{BASE}/{body['id']}", tenant_id=tenant_id)))
    # Risk decided before the submission, and the small charge was exempted from 3-D Secure (PSD2 low value).
    assert [e["type"].removeprefix("billing.execution.") for e in detail["events"]] == [
        "created",
        "pending",
        "risk_assessed",
        "authenticated",
        "processing",
        "completed",
    ]
    assert [e["new_status"] for e in detail["events"]] == [
        "created",
        "pending",
        "pending",
        "pending",
        "processing",
        "completed",
    ]
    assert detail["risk_assessments"][0]["decision"] == "allow"
    assert detail["authentication"]["exemption"] == "low_value"
    assert detail["liability_shift"] is False
    assert [w["phase_code"] for w in detail["workflow"]] == ["created", "pending", "processing", "completed"]
    assert all(e["correlation_id"] == "corr-card-1" for e in detail["events"][1:])


def test_replay_with_same_key_returns_200_same_execution_and_writes_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    first = post_execution(execute, tenant_id, CARD, key="replay-1")
    before = written(admin, tenant_id)
    again = post_execution(execute, tenant_id, CARD, key="replay-1")
    assert (first["statusCode"], again["statusCode"]) == (201, 200)
    assert response_json(again)["id"] == response_json(first)["id"]
    assert written(admin, tenant_id) == before


def test_same_key_with_other_parameters_is_422_and_writes_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    post_execution(execute, tenant_id, CARD, key="reuse-1")
    before = written(admin, tenant_id)
    response = post_execution(execute, tenant_id, {**CARD, "amount": 2500}, key="reuse-1")
    assert response["statusCode"] == 422
    assert response_json(response)["code"] == "idempotency_key_reused"
    assert header(response, "Content-Type") == "application/problem+json"
    assert written(admin, tenant_id) == before


def test_declined_card_ends_failed_with_provider_code(execute: ModuleType, tenant_id: UUID) -> None:
    body = response_json(post_execution(execute, tenant_id, {**CARD, "payment_instrument_id": "tok_decline"}))
    assert (body["status"], body["last_error_code"]) == ("failed", "card_declined")


def test_sepa_debit_goes_to_settlement_pending_with_reference(execute: ModuleType, tenant_id: UUID) -> None:
    body = response_json(
        post_execution(
            execute, tenant_id, {**CARD, "payment_rail": "sepa_debit", "payment_instrument_id": "iban_settles_paid"}
        )
    )
    assert (body["status"], body["awaiting_settlement"]) == ("pending", True)
    assert body["provider_reference"].startswith("sbx_")


def test_transient_failure_schedules_retry_on_queue_and_stays_processing(
    execute: ModuleType, aws: dict[str, str], tenant_id: UUID
) -> None:
    before = queue_depth(aws["queue_url"])
    body = response_json(post_execution(execute, tenant_id, {**CARD, "payment_instrument_id": "tok_transient_2"}))
    assert (body["status"], body["last_error_code"], body["attempt_count"]) == ("processing", "processing_error", 1)
    assert body["next_attempt_at"] is not None
    assert queue_depth(aws["queue_url"]) == before + 1


def test_stalled_execution_is_resumed_by_replay(execute: ModuleType, conn: Connection, tenant_id: UUID) -> None:
    # The first request died right after creating the execution.
    stalled = create_execution(conn, tenant_id, idempotency_key="stalled-1", **CARD, metadata={})
    response = post_execution(execute, tenant_id, CARD, key="stalled-1")
    assert response["statusCode"] == 200
    assert response_json(response)["id"] == str(stalled.id)
    assert response_json(response)["status"] == "completed"


def test_cancel_created_execution_then_again_is_409(execute: ModuleType, conn: Connection, tenant_id: UUID) -> None:
    execution = create_execution(conn, tenant_id)
    first = call(execute, api_event("POST", f"{BASE}/{execution.id}/cancel", tenant_id=tenant_id))
    second = call(execute, api_event("POST", f"{BASE}/{execution.id}/cancel", tenant_id=tenant_id))
    assert (first["statusCode"], response_json(first)["status"]) == (200, "canceled")
    assert (second["statusCode"], response_json(second)["code"]) == (409, "transition_conflict")


def test_cancel_of_completed_execution_is_409(execute: ModuleType, tenant_id: UUID) -> None:
    done = response_json(post_execution(execute, tenant_id, CARD, key="cancel-done"))
    response = call(execute, api_event("POST", f"{BASE}/{done['id']}/cancel", tenant_id=tenant_id))
    assert response["statusCode"] == 409
    assert response_json(response)["current_status"] == "completed"


@pytest.mark.parametrize(
    "path_id", ["other-tenant", str(uuid4()), "not-a-uuid"], ids=["other-tenant", "unknown-uuid", "not-a-uuid"]
)  # fixed ids: a random one differs between pytest-xdist workers, which then refuse to run
def test_get_unknown_or_other_tenants_execution_is_404(execute: ModuleType, conn: Connection, path_id: str) -> None:
    owner = uuid4()
    execution = create_execution(conn, owner)
    target = str(execution.id) if path_id == "other-tenant" else path_id
    response = call(execute, api_event("GET", f"{BASE}/{target}", tenant_id=uuid4()))
    assert response["statusCode"] == 404
    assert response_json(response)["code"] == "execution_not_found"


def test_request_without_tenant_is_401_and_writes_nothing(execute: ModuleType, conn: Connection) -> None:
    response = post_execution(execute, None, CARD)
    assert response["statusCode"] == 401
    assert response_json(response)["code"] == "unauthenticated"


def test_tenant_in_body_is_refused_not_used(execute: ModuleType, admin: Connection, tenant_id: UUID) -> None:
    response = post_execution(execute, tenant_id, {**CARD, "tenant_id": str(uuid4())})
    assert response["statusCode"] == 422
    assert written(admin, tenant_id) == 0


BAD_INPUT = [
    ("malformed_json", "{not json", 400, "malformed_request"),
    ("array_body", "[1, 2]", 422, "validation_failed"),
    ("amount_string", {**CARD, "amount": "1999"}, 422, "validation_failed"),
    ("amount_float", {**CARD, "amount": 19.99}, 422, "validation_failed"),
    ("amount_negative", {**CARD, "amount": -1}, 422, "validation_failed"),
    ("amount_zero", {**CARD, "amount": 0}, 422, "validation_failed"),
    ("amount_huge", {**CARD, "amount": 10**18}, 422, "validation_failed"),
    ("currency_lowercase", {**CARD, "currency": "eur"}, 422, "validation_failed"),
    ("currency_unknown", {**CARD, "currency": "ABC"}, 422, "validation_failed"),
    ("rail_unknown", {**CARD, "payment_rail": "wire"}, 422, "validation_failed"),
    ("sql_injection", {**CARD, "entity_contract_id": "1'; drop table billing.billing_executions;--"}, 422,
     "validation_failed"),
    ("unknown_field", {**CARD, "discount": 5}, 422, "validation_failed"),
    ("card_number_in_metadata", {**CARD, "metadata": {"note": "4111 1111 1111 1111"}}, 422, "validation_failed"),
    ("card_number_as_instrument", {**CARD, "payment_instrument_id": "4111111111111111"}, 422, "validation_failed"),
    ("one_megabyte", {**CARD, "metadata": {"blob": "x" * 1_000_000}}, 413, "payload_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "code"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_gets_documented_4xx_and_writes_nothing(
    execute: ModuleType,
    aws: dict[str, str],
    admin: Connection,
    tenant_id: UUID,
    case: str,
    body: Any,
    status: int,
    code: str,
) -> None:
    queued = queue_depth(aws["queue_url"])
    response = post_execution(execute, tenant_id, body, key=f"bad-{case}")
    assert response["statusCode"] == status, response_json(response)
    problem = response_json(response)
    assert (problem["code"], problem["status"]) == (code, status)
    assert problem["correlation_id"]
    assert header(response, "Content-Type") == "application/problem+json"
    assert written(admin, tenant_id) == 0
    assert queue_depth(aws["queue_url"]) == queued


@pytest.mark.parametrize("key", [None, "", "has space", "k" * 256])
def test_missing_or_invalid_idempotency_key_is_400_and_writes_nothing(
    execute: ModuleType, admin: Connection, tenant_id: UUID, key: str | None
) -> None:
    response = post_execution(execute, tenant_id, CARD, key=key)
    assert response["statusCode"] == 400
    assert response_json(response)["code"] == "idempotency_key_invalid"
    assert written(admin, tenant_id) == 0


def test_list_pages_in_stable_order_without_duplicates(execute: ModuleType, conn: Connection, tenant_id: UUID) -> None:
    created = {str(create_execution(conn, tenant_id).id) for _ in range(5)}
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = response_json(call(execute, api_event("GET", BASE, tenant_id=tenant_id, query=query)))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert set(seen) == created


def test_list_filters_by_status_and_rejects_oversized_page(
    execute: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(conn, tenant_id)
    create_execution(conn, tenant_id)
    from billing.db.execution_repository import ExecutionRepository

    ExecutionRepository(conn).mark_pending(tenant_id, execution.id, WorkflowWriteContext.system())
    page = response_json(call(execute, api_event("GET", BASE, tenant_id=tenant_id, query={"status": "pending"})))
    assert [item["id"] for item in page["items"]] == [str(execution.id)]
    too_big = call(execute, api_event("GET", BASE, tenant_id=tenant_id, query={"limit": "1000"}))
    assert too_big["statusCode"] == 422


def test_20_parallel_posts_with_one_key_make_one_execution_and_one_charge(
    aws: dict[str, str], admin: Connection, tenant_id: UUID
) -> None:
    # Twenty Lambda containers, each its own module instance and connection, hit by the same request at once.
    containers = [load_handler("execute", str(i)) for i in range(20)]
    barrier = threading.Barrier(len(containers))

    def invoke(container: ModuleType) -> dict[str, Any]:
        barrier.wait()
        return post_execution(container, tenant_id, CARD, key="parallel-1")

    try:
        with ThreadPoolExecutor(len(containers)) as pool:
            responses = list(pool.map(invoke, containers))
    finally:
        for container in containers:
            container.runtime.connections.discard()
    assert sorted(r["statusCode"] for r in responses) == [200] * 19 + [201]
    assert len({response_json(r)["id"] for r in responses}) == 1
    assert count_rows(admin, "billing_executions", tenant_id) == 1
    charges = admin.execute(
        "select count(*) as n from sandbox_provider.charges where idempotency_key like %s", [f"{tenant_id}:%"]
    ).fetchone()
    assert charges == {"n": 1}


def test_unexpected_error_is_500_problem_without_internals(
    execute: ModuleType, tenant_id: UUID, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> Any:
        raise RuntimeError("password=hunter2 at db-host-internal:5432")

    monkeypatch.setattr(execute.runtime, "execution_service", explode)
    response = post_execution(execute, tenant_id, CARD, key="boom-1")
    assert response["statusCode"] == 500
    problem = response_json(response)
    assert (problem["code"], problem["status"]) == ("internal_error", 500)
    assert "hunter2" not in response["body"]
    assert "db-host-internal" not in response["body"]
    assert problem["correlation_id"]
    # What the function's log handler would write: every record through the production formatter.
    logged = "\n".join(RedactingFormatter().format(record) for record in caplog.records)
    assert "unhandled error" in logged
    assert "RuntimeError" in logged  # the traceback is kept for debugging ...
    assert "hunter2" not in logged  # ... with the secret masked


def _sepa_driver(conn: Connection, db_url: str) -> tuple[ExecutionDriver, SandboxProvider]:
    sandbox = SandboxProvider(connections_to(db_url))
    driver = ExecutionDriver(
        ExecutionRepository(conn), {"sandbox": sandbox}, RecordingRetryScheduler(), QuietObserver()
    )
    return driver, sandbox


def test_cancel_racing_a_submission_that_reaches_settlement_pending_is_409_and_the_debit_stays_pending(
    conn: Connection, db_url: str, tenant_id: UUID
) -> None:
    # Given a SEPA debit the canceller reads as pending and not yet submitted
    ctx = WorkflowWriteContext.system()
    execution = create_execution(conn, tenant_id, payment_rail=PaymentRail.SEPA_DEBIT, payment_instrument_id=None)
    ExecutionRepository(conn).mark_pending(tenant_id, execution.id, ctx)
    driver, sandbox = _sepa_driver(conn, db_url)

    class SubmittedMeanwhile(ExecutionRepository):
        def mark_canceled(self, *args: Any, **kwargs: Any) -> Execution:
            # The execute path submits it (processing -> pending at the provider) between the read and the write.
            current = self.get(tenant_id, execution.id)
            assert current is not None
            if current.submitted_at is None:
                driver.drive(current, correlation_id=None, context=ctx)
            return super().mark_canceled(*args, **kwargs)

    service = ExecutionService(SubmittedMeanwhile(conn))

    # When the cancel's write lands after the provider accepted the debit
    with pytest.raises(TransitionConflict):
        service.cancel(tenant_id, execution.id, correlation_id=None, context=ctx)

    # Then the debit lodged at the provider is still followed as pending settlement, not canceled
    final = ExecutionRepository(conn).get(tenant_id, execution.id)
    assert final is not None
    assert final.status is ExecutionStatus.PENDING
    assert final.submitted_at is not None
    assert sandbox.find_charge(idempotency_key=provider_idempotency_key(final)) is not None


def test_drive_of_a_stale_pending_copy_after_submission_submits_nothing_again(
    conn: Connection, db_url: str, tenant_id: UUID
) -> None:
    # Given a SEPA debit one request read as pending before submission, which another request then submitted
    ctx = WorkflowWriteContext.system()
    execution = create_execution(conn, tenant_id, payment_rail=PaymentRail.SEPA_DEBIT, payment_instrument_id=None)
    stale = ExecutionRepository(conn).mark_pending(tenant_id, execution.id, ctx)
    driver, sandbox = _sepa_driver(conn, db_url)
    settled = driver.drive(stale, correlation_id=None, context=ctx)
    events_before = ExecutionRepository(conn).events(tenant_id, execution.id)

    # When the first request drives its stale copy
    again = driver.drive(stale, correlation_id=None, context=ctx)

    # Then it reports the debit where it is, without taking it back to processing or submitting it again
    assert settled.status is ExecutionStatus.PENDING
    assert (again.status, again.attempt_count, again.submitted_at) == (
        ExecutionStatus.PENDING,
        1,
        settled.submitted_at,
    )
    assert ExecutionRepository(conn).events(tenant_id, execution.id) == events_before
    charge = sandbox.find_charge(idempotency_key=provider_idempotency_key(settled))
    assert charge is not None
    assert charge.attempts == 1


# --- hostile input: refused before any query runs, on every route --------------------------------------------------


def nested_metadata(depth: int) -> dict[str, Any]:
    document: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth - 2):  # the request object and metadata itself are two levels
        document = {"n": document}
    return {**CARD, "metadata": document}


EXISTING = "<existing>"  # stands for the id of an execution the test creates first
# (case, method, path, body, headers, query, path parameters, status, code)
HOSTILE_INPUT: list[tuple[str, str, str, Any, dict[str, str], dict[str, str] | None, str | None, int, str]] = [
    ("create_nul_in_metadata_value", "POST", BASE, {**CARD, "metadata": {"note": "a\x00b"}}, {}, None, None, 422,
     "validation_failed"),
    ("create_lone_surrogate_in_metadata_value", "POST", BASE, {**CARD, "metadata": {"note": "\ud800"}}, {}, None,
     None, 422, "validation_failed"),
    ("create_nul_in_metadata_key", "POST", BASE, {**CARD, "metadata": {"k\x00": "v"}}, {}, None, None, 422,
     "validation_failed"),
    ("create_nul_in_contract_id", "POST", BASE, {**CARD, "entity_contract_id": "c\x00"}, {}, None, None, 422,
     "validation_failed"),
    ("create_nul_in_idempotency_key", "POST", BASE, CARD, {"Idempotency-Key": "key\x00"}, None, None, 422,
     "validation_failed"),
    ("create_nul_in_correlation_id", "POST", BASE, CARD, {"X-Correlation-Id": "corr\x00"}, None, None, 422,
     "validation_failed"),
    ("create_nested_deeper_than_32", "POST", BASE, nested_metadata(33), {}, None, None, 422, "validation_failed"),
    ("create_recursion_bomb", "POST", BASE, "[" * 16_000, {}, None, None, 422, "validation_failed"),
    ("create_amount_beyond_2_53", "POST", BASE, {**CARD, "amount": 2**53}, {}, None, None, 422, "validation_failed"),
    ("create_amount_of_5000_digits", "POST", BASE, '{"amount": ' + "9" * 5000 + "}", {}, None, None, 422,
     "validation_failed"),
    ("create_amount_nan", "POST", BASE, '{"amount": NaN}', {}, None, None, 422, "validation_failed"),
    ("create_amount_infinity", "POST", BASE, '{"amount": 1e400}', {}, None, None, 422, "validation_failed"),
    ("create_amount_float", "POST", BASE, {**CARD, "amount": 1999.0}, {}, None, None, 422, "validation_failed"),
    ("create_metadata_int_value", "POST", BASE, {**CARD, "metadata": {"count": 3}}, {}, None, None, 422,
     "validation_failed"),
    ("create_metadata_null_value", "POST", BASE, {**CARD, "metadata": {"gone": None}}, {}, None, None, 422,
     "validation_failed"),
    ("create_metadata_51_keys", "POST", BASE, {**CARD, "metadata": {f"k{i}": "v" for i in range(51)}}, {}, None,
     None, 422, "validation_failed"),
    ("create_plain_text_body", "POST", BASE, CARD, {"Content-Type": "text/plain"}, None, None, 415,
     "unsupported_media_type"),
    ("create_form_body", "POST", BASE, "amount=1", {"Content-Type": "application/x-www-form-urlencoded"}, None,
     None, 415, "unsupported_media_type"),
    ("list_nul_in_contract_filter", "GET", BASE, None, {}, {"entity_contract_id": "c\x00"}, None, 422,
     "validation_failed"),
    ("list_lone_surrogate_in_contract_filter", "GET", BASE, None, {}, {"plan_contract_id": "\udfff"}, None, 422,
     "validation_failed"),
    ("list_nul_in_cursor", "GET", BASE, None, {}, {"cursor": "\x00"}, None, 422, "validation_failed"),
    ("list_nul_in_parameter_name", "GET", BASE, None, {}, {"x\x00": "1"}, None, 422, "validation_failed"),
    ("list_epoch_seconds_as_date", "GET", BASE, None, {}, {"created_from": "0.5"}, None, 422, "validation_failed"),
    ("list_date_without_offset", "GET", BASE, None, {}, {"created_to": "2026-04-10T12:00:00"}, None, 422,
     "validation_failed"),
    ("get_nul_in_path", "GET", f"{BASE}/%00", None, {}, None, "\x00", 422, "validation_failed"),
    ("get_nul_in_header", "GET", f"{BASE}/{EXISTING}", None, {"X-Correlation-Id": "\x00"}, None, EXISTING, 422,
     "validation_failed"),
    ("get_path_no_route_matches", "GET", f'{BASE}/a"b', None, {}, None, 'a"b', 404, "execution_not_found"),
    ("cancel_nul_in_path", "POST", f"{BASE}/%00/cancel", None, {}, None, "\x00", 422, "validation_failed"),
    ("cancel_nul_in_header", "POST", f"{BASE}/{EXISTING}/cancel", None, {"User-Agent": "\x00"}, None, EXISTING,
     422, "validation_failed"),
    ("cancel_path_no_route_matches", "POST", f"{BASE}/a#b/cancel", None, {}, None, "a#b", 404,
     "execution_not_found"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "method", "path", "body", "headers", "query", "path_id", "status", "code"),
    HOSTILE_INPUT,
    ids=[c[0] for c in HOSTILE_INPUT],
)
def test_hostile_input_on_every_route_is_refused_and_writes_nothing(
    execute: ModuleType,
    aws: dict[str, str],
    conn: Connection,
    admin: Connection,
    tenant_id: UUID,
    case: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    query: dict[str, str] | None,
    path_id: str | None,
    status: int,
    code: str,
) -> None:
    # Given a tenant whose one execution is in status created (the target of the routes that take an id)
    existing = create_execution(conn, tenant_id)
    path = path.replace(EXISTING, str(existing.id))
    before, queued = written(admin, tenant_id), queue_depth(aws["queue_url"])
    if method == "POST" and path == BASE:
        headers = {"Idempotency-Key": f"hostile-{case}", **headers}
    event = api_event(method, path, tenant_id=tenant_id, body=body, headers=headers, query=query)
    if path_id is not None:
        event["pathParameters"] = {"execution_id": path_id.replace(EXISTING, str(existing.id))}

    # When it sends hostile input
    response = call(execute, event)

    # Then it gets the documented problem, and nothing was written or queued
    assert response["statusCode"] == status, response_json(response)
    problem = response_json(response)
    assert (problem["code"], problem["status"]) == (code, status)
    assert problem["correlation_id"]
    assert header(response, "Content-Type") == "application/problem+json"
    assert written(admin, tenant_id) == before
    assert queue_depth(aws["queue_url"]) == queued
    untouched = ExecutionRepository(conn).get(tenant_id, existing.id)
    assert untouched is not None
    assert untouched.status is ExecutionStatus.CREATED


def test_metadata_at_stripes_limits_is_stored_and_returned_as_sent(execute: ModuleType, tenant_id: UUID) -> None:
    # 50 keys, a 40-character key, a 500-character value (all 50 at 500 would exceed the 16 KiB body limit).
    metadata = {f"key_{i}": "v" * 250 for i in range(48)} | {"long": "v" * 500, "k" * 40: ""}
    response = post_execution(execute, tenant_id, {**CARD, "metadata": metadata}, key="metadata-limits")
    assert response["statusCode"] == 201, response_json(response)
    assert response_json(response)["metadata"] == metadata


def test_a_charge_waiting_for_the_customer_says_what_to_do_next_in_the_response_and_the_resource(
    execute: ModuleType, tenant_id: UUID
) -> None:
    created = response_json(post_execution(execute, tenant_id, {**CARD, "payment_instrument_id": "tok_3ds"}))
    assert (created["status"], created["awaiting_settlement"]) == ("pending", True)
    action = created["next_action"]
    assert action["type"] == "redirect_to_url"
    assert action["url"] == f"https://sandbox.invalid/authenticate/{created['provider_reference']}"

    shown = response_json(call(execute, api_event("GET", f"{BASE}/{created['id']}", tenant_id=tenant_id)))
    assert shown["next_action"] == {**action, "client_secret": None}
    completed = response_json(post_execution(execute, tenant_id, CARD, key=f"plain-{uuid4()}"))
    assert completed["next_action"] is None
