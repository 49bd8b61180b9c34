"""Provider webhooks through the real Lambda handler: moto Secrets Manager, real PostgreSQL, signed deliveries."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.sqlstates import GuardState
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.errors import TransitionConflict
from billing.domain.execution import Execution
from billing.domain.reversals import PAID_AFTER_FAILURE_EVENT_TYPE
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.services.webhook_processing import STORED_RESULTS
from billing.webhooks import gocardless
from billing.webhooks.delivery import FAILED, REVERSED, SUCCEEDED, signed_sandbox_delivery
from billing.webhooks.secrets import DEV_WEBHOOK_SECRETS, seed_webhook_secrets
from billing.webhooks.verification import utc_now
from tests.factories import count_rows, execution_request
from tests.lambda_harness import api_event, call, header, load_handler, response_json
from tests.unit.webhooks.factories import adyen_item, adyen_notification, gocardless_batch, gocardless_event

WEBHOOK_PATH = "/api/v1/billing/webhook"
# The sandbox is mid-rotation: the new secret is listed first, the previous one is still accepted.
CURRENT_SECRET = "whsec_test_sandbox_current"
PREVIOUS_SECRET = "whsec_test_sandbox_previous"
GOCARDLESS_SECRET = "gc_test_secret"
ADYEN_KEY = DEV_WEBHOOK_SECRETS["adyen"][0]
SETUP = WorkflowWriteContext.service_default()
TERMINAL_EVENT_TYPES = {"billing.execution.confirmed", "billing.execution.rejected", "billing.execution.reconciled"}
HISTORY_TABLES = ("billing_execution_events", "billing_outbox", "contract_term_datetimes", "execution_reversals")


@pytest.fixture(scope="module")
def webhook_secrets(aws: dict[str, str]) -> None:
    """The providers' signing secrets in (moto) Secrets Manager, as the webhook function reads them."""
    seed_webhook_secrets(
        boto3.client("secretsmanager"),
        {"sandbox": [CURRENT_SECRET, PREVIOUS_SECRET], "gocardless": [GOCARDLESS_SECRET], "adyen": [ADYEN_KEY]},
    )


@pytest.fixture(scope="module")
def webhook(webhook_secrets: None) -> ModuleType:
    """One warm container of the webhook function."""
    return load_handler("webhook")


# --- helpers ----------------------------------------------------------------------------------------------------


def awaiting_settlement(
    conn: Connection,
    tenant_id: UUID,
    *,
    provider: str = "sandbox",
    processing: bool = False,
    reference: str | None = None,
) -> tuple[Execution, str]:
    """A SEPA execution the provider accepted (pending settlement) under a fresh reference (or the one given), or
    still processing."""
    repository = ExecutionRepository(conn)
    execution, _ = repository.insert_idempotent(
        tenant_id,
        execution_request(payment_rail="sepa_debit"),
        idempotency_key=f"key-{uuid4()}",
        payment_provider=provider,
        correlation_id="corr-test",
        context=SETUP,
    )
    # References are global per provider (the webhook looks them up across tenants), so every test gets its own.
    reference = reference or f"ref_{uuid4().hex}"
    repository.mark_pending(tenant_id, execution.id, SETUP)
    if processing:
        # Submitted, the provider's reference known, but our attempt has not recorded its answer yet.
        return repository.mark_processing(tenant_id, execution.id, SETUP, provider_reference=reference), reference
    repository.mark_processing(tenant_id, execution.id, SETUP)
    return repository.settle_from_processing(tenant_id, execution.id, SETUP, provider_reference=reference), reference


def deliver(
    handler: ModuleType, provider: str, headers: dict[str, str], body: bytes, *, base64_encoded: bool = False
) -> dict[str, Any]:
    """POST the body bytes to the webhook route as API Gateway would (no authorizer on this route)."""
    event = api_event("POST", f"{WEBHOOK_PATH}/{provider}", tenant_id=None, body=body, headers=headers)
    event["resource"] = f"{WEBHOOK_PATH}/{{provider}}"
    event["pathParameters"] = {"provider": provider}
    if base64_encoded:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
    return call(handler, event)


def sandbox(
    handler: ModuleType,
    event_type: str,
    reference: str | None,
    *,
    event_id: str | None = None,
    failure_code: str | None = None,
    secret: str = CURRENT_SECRET,
) -> tuple[str, dict[str, Any]]:
    """Deliver one signed sandbox event; (event id, response)."""
    event_id = event_id or f"evt_{uuid4().hex}"
    headers, body = signed_sandbox_delivery(event_id, event_type, reference, failure_code, secret=secret)
    return event_id, deliver(handler, "sandbox", headers, body)


def results(response: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(r["result"], r["duplicate"]) for r in response_json(response)["results"]]


# The helpers below read to assert, on the admin's inspection connection (`admin`): the code under test runs as
# billing_app, which sees only the tenant its transaction names.


def inbox_row(admin: Connection, provider: str, event_id: str) -> dict[str, Any] | None:
    return admin.execute(
        "select * from billing_inbox.webhook_events where provider = %s and provider_event_id = %s",
        [provider, event_id],
    ).fetchone()


def execution_row(admin: Connection, tenant_id: UUID, execution_id: UUID) -> dict[str, Any]:
    row = admin.execute(
        "select * from billing.billing_executions where tenant_id = %s and id = %s", [tenant_id, execution_id]
    ).fetchone()
    assert row is not None
    return row


def event_types(admin: Connection, tenant_id: UUID, execution_id: UUID) -> list[str]:
    rows = admin.execute(
        "select type from billing.billing_execution_events where tenant_id = %s and execution_id = %s"
        " order by sequence",
        [tenant_id, execution_id],
    ).fetchall()
    return [row["type"] for row in rows]


def history(admin: Connection, tenant_id: UUID) -> dict[str, int]:
    return {table: count_rows(admin, table, tenant_id) for table in HISTORY_TABLES}


def emitted_metrics(output: str) -> dict[str, float]:
    """Metric name -> total value from the EMF lines Powertools printed."""
    totals: dict[str, float] = {}
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                values = document[metric["Name"]]
                values = values if isinstance(values, list) else [values]
                totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + sum(values)
    return totals


# --- applying outcomes ------------------------------------------------------------------------------------------


def test_succeeded_event_confirms_pending_execution_with_webhook_workflow_row(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)

    event_id, response = sandbox(webhook, SUCCEEDED, reference)

    assert response["statusCode"] == 200
    assert results(response) == [("applied", False)]
    repository = ExecutionRepository(conn)
    confirmed = repository.get(tenant_id, execution.id)
    assert confirmed is not None
    assert confirmed.status is ExecutionStatus.COMPLETED
    last_phase = repository.workflow_phases(tenant_id, execution.id)[-1]
    assert (last_phase["phase_code"], last_phase["source"], last_phase["actor_id"]) == (
        "completed",
        "webhook",
        "provider:sandbox",
    )
    last_event = repository.events(tenant_id, execution.id)[-1]
    assert (last_event.type, last_event.metadata["provider_event_id"]) == ("billing.execution.confirmed", event_id)
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["tenant_id"], row["execution_id"], row["execution_status"]) == (
        "applied",
        tenant_id,
        execution.id,
        "completed",
    )
    assert (row["event_type"], row["outcome"], row["provider_reference"]) == (
        "payment.succeeded",
        "succeeded",
        reference,
    )


def test_failed_event_rejects_pending_execution_with_provider_failure_code(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)

    _, response = sandbox(webhook, FAILED, reference, failure_code="AM04")

    assert results(response) == [("applied", False)]
    row = execution_row(admin, tenant_id, execution.id)
    assert (row["status"], row["last_error_code"]) == ("failed", "AM04")
    assert event_types(admin, tenant_id, execution.id)[-1] == "billing.execution.rejected"


def test_redelivered_event_returns_stored_result_without_second_transition(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)
    first = deliver(webhook, "sandbox", headers, body)
    after_first = history(admin, tenant_id)

    again = deliver(webhook, "sandbox", headers, body)

    assert (first["statusCode"], again["statusCode"]) == (200, 200)
    assert results(again) == [("applied", True)]
    assert history(admin, tenant_id) == after_first
    assert event_types(admin, tenant_id, execution.id).count("billing.execution.confirmed") == 1


def test_event_for_execution_already_completed_by_reconciliation_is_acknowledged(
    webhook: ModuleType, conn: Connection, admin: Connection, worker: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    ExecutionRepository(worker).reconcile(
        tenant_id, execution.id, WorkflowWriteContext.system(), outcome=ExecutionStatus.COMPLETED
    )
    before = history(admin, tenant_id)

    event_id, response = sandbox(webhook, SUCCEEDED, reference)

    assert response["statusCode"] == 200
    assert results(response) == [("already_terminal", False)]
    assert history(admin, tenant_id) == before
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["execution_status"]) == ("already_terminal", "completed")


def test_event_for_processing_execution_is_409_unrecorded_and_applied_when_redelivered_later(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id, processing=True)
    before = history(admin, tenant_id)

    event_id, refused = sandbox(webhook, SUCCEEDED, reference)

    assert refused["statusCode"] == 409
    assert header(refused, "Content-Type") == "application/problem+json"
    assert response_json(refused)["code"] == "webhook_retry_later"
    assert inbox_row(admin, "sandbox", event_id) is None
    assert history(admin, tenant_id) == before
    # Our own attempt records the provider's answer; the provider's redelivery then applies.
    ExecutionRepository(conn).settle_from_processing(tenant_id, execution.id, SETUP, provider_reference=reference)
    _, redelivered = sandbox(webhook, SUCCEEDED, reference, event_id=event_id)
    assert results(redelivered) == [("applied", False)]
    assert execution_row(admin, tenant_id, execution.id)["status"] == "completed"


def test_unknown_reference_is_acknowledged_stored_as_orphan_and_counted(
    webhook: ModuleType, admin: Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    reference = f"ref_unknown_{uuid4().hex}"

    event_id, response = sandbox(webhook, SUCCEEDED, reference)

    assert response["statusCode"] == 200
    assert results(response) == [("orphan", False)]
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["provider_reference"], row["tenant_id"], row["execution_id"]) == (
        "orphan",
        reference,
        None,
        None,
    )
    assert emitted_metrics(capsys.readouterr().out).get("WebhookResult_orphan") == 1.0


def test_event_type_we_do_not_act_on_is_acknowledged_and_recorded(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    before = history(admin, tenant_id)

    event_id, response = sandbox(webhook, "payment.created", reference)

    assert results(response) == [("ignored", False)]
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["outcome"], row["execution_id"]) == ("ignored", "ignored", None)
    assert history(admin, tenant_id) == before
    assert execution_row(admin, tenant_id, execution.id)["status"] == "pending"


def test_late_failed_after_completed_changes_nothing_and_is_recorded_out_of_order(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    sandbox(webhook, SUCCEEDED, reference)
    completed = execution_row(admin, tenant_id, execution.id)
    before = history(admin, tenant_id)

    event_id, response = sandbox(webhook, FAILED, reference, failure_code="AM04")

    assert results(response) == [("out_of_order", False)]
    assert execution_row(admin, tenant_id, execution.id) == completed
    assert history(admin, tenant_id) == before
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["execution_id"], row["execution_status"]) == ("out_of_order", execution.id, "completed")


def test_reversal_after_completed_is_recorded_with_event_and_outbox_row_and_execution_unchanged(
    webhook: ModuleType, execute: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    sandbox(webhook, SUCCEEDED, reference)
    completed = execution_row(admin, tenant_id, execution.id)

    event_id, response = sandbox(webhook, REVERSED, reference, failure_code="MD06")
    _, again = sandbox(webhook, REVERSED, reference, event_id=event_id, failure_code="MD06")

    assert results(response) == [("reversal", False)]
    assert results(again) == [("reversal", True)]
    assert execution_row(admin, tenant_id, execution.id) == completed
    reversals = admin.execute(
        "select * from billing.execution_reversals where tenant_id = %s and execution_id = %s",
        [tenant_id, execution.id],
    ).fetchall()
    assert [(r["provider"], r["provider_event_id"], r["reason"]) for r in reversals] == [("sandbox", event_id, "MD06")]
    [event] = admin.execute(
        "select * from billing.billing_execution_events where tenant_id = %s and execution_id = %s"
        " and type = 'billing.execution.reversed'",
        [tenant_id, execution.id],
    ).fetchall()
    assert (event["old_status"], event["new_status"], event["user_id"]) == (
        "completed",
        "completed",
        "provider:sandbox",
    )
    assert event["metadata"]["reversal_id"] == str(reversals[0]["id"])
    [outbox] = admin.execute(
        "select * from billing.billing_outbox where tenant_id = %s and event_id = %s", [tenant_id, event["id"]]
    ).fetchall()
    assert outbox["event_type"] == "billing.execution.reversed"
    assert (outbox["payload"]["new_status"], outbox["payload"]["reversal"]["reason"]) == ("completed", "MD06")
    # The execution's timeline, as the API shows it, ends with the reversal.
    detail = response_json(
        call(execute, api_event("GET", f"/api/v1/billing/executions/{execution.id}", tenant_id=tenant_id))
    )
    assert [e["type"] for e in detail["events"]][-2:] == ["billing.execution.confirmed", "billing.execution.reversed"]
    assert detail["status"] == "completed"


def test_reversal_of_execution_not_completed_yet_is_409_and_unrecorded(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    _, reference = awaiting_settlement(conn, tenant_id)
    before = history(admin, tenant_id)

    event_id, response = sandbox(webhook, REVERSED, reference)

    assert response["statusCode"] == 409
    assert inbox_row(admin, "sandbox", event_id) is None
    assert history(admin, tenant_id) == before


# --- what arrives -----------------------------------------------------------------------------------------------


def _tampered(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    return headers, body.replace(b'"payment.succeeded"', b'"payment.failed"')


def _without_signature(headers: dict[str, str], body: bytes) -> tuple[dict[str, str], bytes]:
    return {k: v for k, v in headers.items() if k != "Sandbox-Signature"}, body


REFUSALS: dict[str, tuple[str, Callable[[str, str], tuple[dict[str, str], bytes]], int, str]] = {
    "wrong secret": (
        "sandbox",
        lambda event_id, ref: signed_sandbox_delivery(event_id, SUCCEEDED, ref, secret="whsec_forged"),
        401,
        "signature_invalid",
    ),
    "tampered body": (
        "sandbox",
        lambda event_id, ref: _tampered(*signed_sandbox_delivery(event_id, SUCCEEDED, ref, secret=CURRENT_SECRET)),
        401,
        "signature_invalid",
    ),
    "missing header": (
        "sandbox",
        lambda event_id, ref: _without_signature(*signed_sandbox_delivery(event_id, SUCCEEDED, ref)),
        401,
        "signature_invalid",
    ),
    "expired timestamp": (
        "sandbox",
        lambda event_id, ref: signed_sandbox_delivery(
            event_id, SUCCEEDED, ref, secret=CURRENT_SECRET, now=utc_now() - timedelta(minutes=10)
        ),
        401,
        "signature_invalid",
    ),
    "unknown provider": (
        "paypal",
        lambda event_id, ref: signed_sandbox_delivery(event_id, SUCCEEDED, ref, secret=CURRENT_SECRET),
        404,
        "webhook_provider_unknown",
    ),
    "authentic but malformed": (
        "sandbox",
        lambda event_id, ref: signed_sandbox_delivery(event_id, SUCCEEDED, None, secret=CURRENT_SECRET),
        400,
        "webhook_payload_invalid",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_delivery_gets_problem_and_writes_nothing(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID, case: str
) -> None:
    provider, build, status, code = REFUSALS[case]
    execution, reference = awaiting_settlement(conn, tenant_id)
    before = history(admin, tenant_id)
    event_id = f"evt_{uuid4().hex}"

    response = deliver(webhook, provider, *build(event_id, reference))

    assert response["statusCode"] == status
    assert header(response, "Content-Type") == "application/problem+json"
    assert response_json(response)["code"] == code
    assert inbox_row(admin, provider, event_id) is None
    assert history(admin, tenant_id) == before
    assert execution_row(admin, tenant_id, execution.id)["status"] == "pending"


def test_signature_rejection_is_counted_and_logged_without_the_payload(
    webhook: ModuleType, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    capsys.readouterr()
    marker = f"ref_marker_{uuid4().hex}"

    _, response = sandbox(webhook, SUCCEEDED, marker, secret="whsec_forged")

    printed = capsys.readouterr().out
    assert response["statusCode"] == 401
    assert emitted_metrics(printed).get("WebhookSignatureRejected") == 1.0
    [rejected] = [r for r in caplog.records if r.getMessage() == "webhook signature rejected"]
    assert (getattr(rejected, "provider", None), getattr(rejected, "reason", None)) == ("sandbox", "mismatch")
    everything_logged = printed + caplog.text + "".join(str(vars(r)) for r in caplog.records)
    assert marker not in everything_logged


def test_base64_encoded_body_is_verified_over_the_decoded_bytes(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)

    response = deliver(webhook, "sandbox", headers, body, base64_encoded=True)

    assert results(response) == [("applied", False)]
    assert execution_row(admin, tenant_id, execution.id)["status"] == "completed"


def test_delivery_signed_with_previous_secret_is_accepted_during_rotation(
    webhook: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    _, reference = awaiting_settlement(conn, tenant_id)

    _, response = sandbox(webhook, SUCCEEDED, reference, secret=PREVIOUS_SECRET)

    assert results(response) == [("applied", False)]


def test_gocardless_batch_applies_what_it_can_and_409s_the_rest_until_redelivered(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    settled, settled_reference = awaiting_settlement(conn, tenant_id, provider="gocardless")
    submitting, submitting_reference = awaiting_settlement(conn, tenant_id, provider="gocardless", processing=True)
    confirmed_id, failed_id = f"EV{uuid4().hex}", f"EV{uuid4().hex}"
    body = gocardless_batch(
        gocardless_event("confirmed", event_id=confirmed_id, payment=settled_reference),
        gocardless_event("failed", event_id=failed_id, payment=submitting_reference),
    )
    headers = {"Webhook-Signature": gocardless.sign(body, GOCARDLESS_SECRET)}

    first = deliver(webhook, "gocardless", headers, body)

    assert first["statusCode"] == 409
    assert failed_id in response_json(first)["detail"]
    assert execution_row(admin, tenant_id, settled.id)["status"] == "completed"
    assert inbox_row(admin, "gocardless", failed_id) is None
    ExecutionRepository(conn).settle_from_processing(
        tenant_id, submitting.id, SETUP, provider_reference=submitting_reference
    )
    redelivered = deliver(webhook, "gocardless", headers, body)
    assert results(redelivered) == [("applied", True), ("applied", False)]
    row = execution_row(admin, tenant_id, submitting.id)
    assert (row["status"], row["last_error_code"]) == ("failed", "payment_failed")


def test_adyen_notification_is_acknowledged_with_accepted_body(webhook: ModuleType, admin: Connection) -> None:
    psp_reference = f"PSP{uuid4().hex[:13].upper()}"
    body = adyen_notification([adyen_item(psp_reference=psp_reference)], hex_key=ADYEN_KEY)

    response = deliver(webhook, "adyen", {}, body)

    assert (response["statusCode"], response["body"]) == (200, "[accepted]")
    row = inbox_row(admin, "adyen", f"{psp_reference}:AUTHORISATION:true")
    assert row is not None
    assert row["result"] == "orphan"


# --- concurrency ------------------------------------------------------------------------------------------------


def test_20_concurrent_deliveries_of_one_event_make_exactly_one_transition(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)
    # Twenty Lambda containers, each its own module instance and connection, given the same delivery at once.
    containers = [load_handler("webhook", str(i)) for i in range(20)]
    barrier = threading.Barrier(len(containers))

    def invoke(container: ModuleType) -> dict[str, Any]:
        barrier.wait()
        return deliver(container, "sandbox", headers, body)

    try:
        with ThreadPoolExecutor(len(containers)) as pool:
            responses = list(pool.map(invoke, containers))
    finally:
        for container in containers:
            container.runtime.connections.discard()

    assert [r["statusCode"] for r in responses] == [200] * 20
    assert sorted(results(r)[0] for r in responses) == [("applied", False)] + [("applied", True)] * 19
    assert event_types(admin, tenant_id, execution.id).count("billing.execution.confirmed") == 1
    assert count_rows(admin, "billing_outbox", tenant_id) == len(event_types(admin, tenant_id, execution.id))


def _race_webhook_with_reconciliation(
    webhook: ModuleType,
    worker_db_url: str,
    tenant_id: UUID,
    execution_id: UUID,
    reference: str,
    outcome: ExecutionStatus,
) -> tuple[dict[str, Any], Execution | TransitionConflict]:
    """Release a signed SUCCEEDED delivery and the reconcile worker's transition at the same instant."""
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)
    barrier = threading.Barrier(2)

    def webhook_delivery() -> dict[str, Any]:
        barrier.wait()
        return deliver(webhook, "sandbox", headers, body)

    def reconciliation() -> Execution | TransitionConflict:
        # Exactly what the reconcile worker calls, on its own connection as its own role.
        with connect(worker_db_url) as worker:
            barrier.wait()
            try:
                return ExecutionRepository(worker).reconcile(
                    tenant_id,
                    execution_id,
                    WorkflowWriteContext.system(),
                    outcome=outcome,
                    error_code="AM04" if outcome is ExecutionStatus.FAILED else None,
                )
            except TransitionConflict as lost:
                return lost

    with ThreadPoolExecutor(2) as pool:
        delivered, reconciled = pool.submit(webhook_delivery), pool.submit(reconciliation)
        return delivered.result(), reconciled.result()


@pytest.mark.parametrize("reconciled_as", [ExecutionStatus.COMPLETED, ExecutionStatus.FAILED])
def test_webhook_racing_reconciliation_makes_one_transition_and_a_consistent_timeline(
    webhook: ModuleType,
    worker_db_url: str,
    conn: Connection,
    admin: Connection,
    tenant_id: UUID,
    reconciled_as: ExecutionStatus,
) -> None:
    # Several rounds, so that both orders (webhook first, reconciliation first) are likely to occur.
    for _ in range(8):
        execution, reference = awaiting_settlement(conn, tenant_id)

        response, reconciled = _race_webhook_with_reconciliation(
            webhook, worker_db_url, tenant_id, execution.id, reference, reconciled_as
        )

        [(result, duplicate)] = results(response)
        types = event_types(admin, tenant_id, execution.id)
        terminal = [t for t in types if t in TERMINAL_EVENT_TYPES]
        final_status = execution_row(admin, tenant_id, execution.id)["status"]
        assert (response["statusCode"], duplicate) == (200, False)
        assert len(terminal) == 1, types
        if terminal == ["billing.execution.confirmed"]:
            assert (result, final_status) == ("applied", "completed")
            assert isinstance(reconciled, TransitionConflict)
        else:
            lost = "already_terminal" if reconciled_as is ExecutionStatus.COMPLETED else "out_of_order"
            assert (result, final_status) == (lost, reconciled_as.value)
            assert isinstance(reconciled, Execution)
            # A success reported for a failed execution is flagged for an operator, never dropped.
            flagged = PAID_AFTER_FAILURE_EVENT_TYPE in types
            assert flagged is (reconciled_as is ExecutionStatus.FAILED)
        # Every change has its workflow row and every lifecycle event its outbox row: one consistent timeline
        # (the flag is an annotation: an event and an outbox row, no phase).
        flags = admin.execute(
            "select count(*) as n from billing.billing_execution_events where tenant_id = %s and type = %s",
            [tenant_id, PAID_AFTER_FAILURE_EVENT_TYPE],
        ).fetchone()
        assert flags is not None
        annotations = flags["n"]
        assert (
            count_rows(admin, "contract_term_datetimes", tenant_id)
            == count_rows(admin, "billing_execution_events", tenant_id) - annotations
        )
        assert count_rows(admin, "billing_outbox", tenant_id) == count_rows(
            admin, "billing_execution_events", tenant_id
        )


def _wait_until_blocked_by(observer: Connection, blocker_pid: int) -> None:
    """Return once some backend waits for a lock held by `blocker_pid` (polls pg_stat_activity; no sleeping)."""
    for _ in range(100_000):
        row = observer.execute(
            "select count(*) as n from pg_stat_activity where %s = any(pg_blocking_pids(pid))", [blocker_pid]
        ).fetchone()
        if row is not None and row["n"] > 0:
            return
    raise AssertionError(f"nothing ever waited for backend {blocker_pid}")


def test_webhook_blocked_behind_reconciliation_decides_again_from_the_committed_status(
    webhook: ModuleType, worker_db_url: str, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)
    pool = ThreadPoolExecutor(1)
    # Reconciliation has rejected the execution but not committed yet: the webhook finds it pending, then queues
    # behind the row lock, and its status guard matches nothing once the rejection commits.
    with connect(worker_db_url) as worker, worker.transaction():
        ExecutionRepository(worker).reconcile(
            tenant_id, execution.id, WorkflowWriteContext.system(), outcome=ExecutionStatus.FAILED, error_code="AM04"
        )
        delivered = pool.submit(deliver, webhook, "sandbox", headers, body)
        _wait_until_blocked_by(admin, worker.info.backend_pid)
    response = delivered.result()
    pool.shutdown()

    assert results(response) == [("out_of_order", False)]
    assert [t for t in event_types(admin, tenant_id, execution.id) if t in TERMINAL_EVENT_TYPES] == [
        "billing.execution.reconciled"
    ]
    assert execution_row(admin, tenant_id, execution.id)["status"] == "failed"


def test_execution_locked_beyond_lock_timeout_is_409_unrecorded_and_applied_when_redelivered(
    webhook: ModuleType, worker_db_url: str, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=CURRENT_SECRET)

    # A reconciliation batch holds the row (FOR UPDATE) while it asks the provider; the delivery waits out the
    # transaction's lock_timeout (billing.db.tenancy) and gives up.
    with connect(worker_db_url) as worker, system_transaction(worker):
        worker.execute(
            "select id from billing.billing_executions where tenant_id = %s and id = %s for update",
            [tenant_id, execution.id],
        )
        refused = deliver(webhook, "sandbox", headers, body)
    redelivered = deliver(webhook, "sandbox", headers, body)

    assert (refused["statusCode"], response_json(refused)["code"]) == (409, "webhook_retry_later")
    assert results(redelivered) == [("applied", False)]
    assert event_types(admin, tenant_id, execution.id).count("billing.execution.confirmed") == 1


# --- the tables themselves --------------------------------------------------------------------------------------


def test_inbox_result_constraint_matches_the_stored_python_results(conn: Connection) -> None:
    row = conn.execute(
        "select pg_get_constraintdef(oid) as definition from pg_constraint"
        " where conname = 'webhook_events_result_known'"
    ).fetchone()
    assert row is not None
    listed = {part.split("'")[1] for part in row["definition"].split("::text")[:-1]}
    assert listed == {result.value for result in STORED_RESULTS}


def test_inbox_claim_cannot_commit_without_its_result(conn: Connection) -> None:
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(
            "insert into billing_inbox.webhook_events (provider, provider_event_id, event_type, outcome,"
            " payload_sha256, received_at) values ('sandbox', %s, 'payment.succeeded', 'succeeded', %s, now())",
            [f"evt_{uuid4().hex}", "0" * 64],
        )
    assert caught.value.sqlstate == "BE006"


def test_recorded_reversal_and_resolved_inbox_row_cannot_be_rewritten(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    _, reference = awaiting_settlement(conn, tenant_id)
    sandbox(webhook, SUCCEEDED, reference)
    event_id, _ = sandbox(webhook, REVERSED, reference)
    rewrite_reversal = "update billing.execution_reversals set reason = 'x' where tenant_id = %s"

    # The webhook's role may not even try (it only inserts reversals) ...
    with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, tenant_id):
        conn.execute(rewrite_reversal, [tenant_id])
    # ... and the append-only trigger refuses the one role that holds every privilege, the owner (migrations).
    with pytest.raises(psycopg.Error) as reversal_update, admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute(rewrite_reversal, [tenant_id])
    with pytest.raises(psycopg.Error) as inbox_update:
        conn.execute(
            "update billing_inbox.webhook_events set result = 'ignored' where provider = 'sandbox'"
            " and provider_event_id = %s",
            [event_id],
        )
    assert (reversal_update.value.sqlstate, inbox_update.value.sqlstate) == (
        GuardState.REVERSAL_CHANGE,
        GuardState.APPEND_ONLY,
    )


# --- hostile input: headers and path refused before verification, stored text checked only after it --------------


def signed_body(body: bytes, secret: str = CURRENT_SECRET) -> dict[str, str]:
    """Sandbox headers signing exactly `body` (any bytes, not only the sandbox's own event format)."""
    from billing.webhooks import sandbox as scheme  # the module; `sandbox` here is the delivery helper above

    return {
        "Content-Type": "application/json",
        scheme.SIGNATURE_HEADER: scheme.sign(body, secret, int(utc_now().timestamp())),
    }


def inbox_rows_like(admin: Connection, prefix: str) -> int:
    row = admin.execute(
        "select count(*) as n from billing_inbox.webhook_events where provider_event_id like %s", [f"{prefix}%"]
    ).fetchone()
    assert row is not None
    return int(row["n"])


@pytest.mark.parametrize("field", ["event_id", "reference", "failure_code"])
@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone_surrogate"])
def test_authentic_delivery_carrying_text_no_column_can_hold_is_422_and_writes_nothing(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID, field: str, bad: str
) -> None:
    # Given a pending execution and an authentic delivery (JSON escapes the character, the signature covers it)
    execution, reference = awaiting_settlement(conn, tenant_id)
    before = history(admin, tenant_id)
    prefix = f"evt_{uuid4().hex}"
    event_id = prefix + (bad if field == "event_id" else "")
    headers, body = signed_sandbox_delivery(
        event_id,
        FAILED,
        reference + (bad if field == "reference" else ""),
        "declined" + (bad if field == "failure_code" else ""),
        secret=CURRENT_SECRET,
    )

    # When it is delivered
    response = deliver(webhook, "sandbox", headers, body)

    # Then it verifies, is refused before anything is stored, and the execution is untouched
    assert response["statusCode"] == 422, response_json(response)
    assert response_json(response)["code"] == "validation_failed"
    assert header(response, "Content-Type") == "application/problem+json"
    assert inbox_rows_like(admin, prefix) == 0
    assert history(admin, tenant_id) == before
    assert execution_row(admin, tenant_id, execution.id)["status"] == "pending"


@pytest.mark.parametrize(
    "body", [b'{"id": "evt_\\u0000", "type": "payment.succeeded"}', b'{"id": "\x00"}', b"[" * 10_000],
    ids=["escaped_nul", "raw_nul", "deep_nesting"],
)  # fmt: skip
def test_forged_delivery_with_hostile_body_is_refused_by_signature_verification_first(
    webhook: ModuleType, body: bytes
) -> None:
    response = deliver(webhook, "sandbox", signed_body(body, secret="whsec_forged"), body)
    assert response["statusCode"] == 401
    assert response_json(response)["code"] == "signature_invalid"


def test_authentic_but_absurdly_nested_delivery_is_400_not_500(webhook: ModuleType) -> None:
    body = b"[" * 10_000 + b"]" * 10_000
    response = deliver(webhook, "sandbox", signed_body(body), body)
    assert response["statusCode"] == 400
    assert response_json(response)["code"] == "webhook_payload_invalid"


@pytest.mark.parametrize("name", ["X-Correlation-Id", "User-Agent"])
def test_authentic_delivery_with_nul_in_a_header_is_422_before_verification_and_writes_nothing(
    webhook: ModuleType, conn: Connection, admin: Connection, tenant_id: UUID, name: str
) -> None:
    execution, reference = awaiting_settlement(conn, tenant_id)
    before = history(admin, tenant_id)
    event_id = f"evt_{uuid4().hex}"
    headers, body = signed_sandbox_delivery(event_id, SUCCEEDED, reference, secret=CURRENT_SECRET)

    response = deliver(webhook, "sandbox", {**headers, name: "x\x00"}, body)

    assert response["statusCode"] == 422
    assert [e["field"] for e in response_json(response)["errors"]] == [f"header.{name.lower()}"]
    assert inbox_row(admin, "sandbox", event_id) is None
    assert history(admin, tenant_id) == before
    assert execution_row(admin, tenant_id, execution.id)["status"] == "pending"


@pytest.mark.parametrize(
    ("provider", "status", "code"),
    [("sand\x00box", 422, "validation_failed"), ('sand"box', 404, "webhook_provider_unknown")],
    ids=["nul", "no_route_matches"],
)
def test_provider_path_with_hostile_characters_is_refused_not_500(
    webhook: ModuleType, provider: str, status: int, code: str
) -> None:
    headers, body = signed_sandbox_delivery(f"evt_{uuid4().hex}", SUCCEEDED, "ref", secret=CURRENT_SECRET)
    response = deliver(webhook, provider, headers, body)
    assert response["statusCode"] == status
    assert response_json(response)["code"] == code
    assert header(response, "Content-Type") == "application/problem+json"


def test_reference_carried_by_two_tenants_is_ambiguous_and_changes_neither(
    webhook: ModuleType, conn: Connection, admin: Connection
) -> None:
    # Tenants share the provider account, so one provider reference could in principle name executions of two
    # tenants; the webhook must then apply the event to neither and say why.
    reference = f"ref_{uuid4().hex}"
    executions = [awaiting_settlement(conn, uuid4(), reference=reference)[0] for _ in range(2)]
    before = [history(admin, e.tenant_id) for e in executions]

    event_id, response = sandbox(webhook, SUCCEEDED, reference)

    assert response["statusCode"] == 200
    assert results(response) == [("ambiguous", False)]
    row = inbox_row(admin, "sandbox", event_id)
    assert row is not None
    assert (row["result"], row["tenant_id"], row["execution_id"]) == ("ambiguous", None, None)
    assert [execution_row(admin, e.tenant_id, e.id)["status"] for e in executions] == ["pending", "pending"]
    assert [history(admin, e.tenant_id) for e in executions] == before
