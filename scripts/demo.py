"""make demo: boot the local stack and walk through real payment flows over HTTP, printing each timeline.

Everything runs for real: the embedded PostgreSQL (or DATABASE_URL), moto in server mode for AWS, the API
Gateway emulation and the actual Lambda handlers; the sandbox provider decides outcomes by instrument token
(docs/sandbox.md).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from billing.auth.tokens import DEMO_SUBJECT, LOCAL_TOKEN_SETTINGS, issue_token
from billing.local.stack import LocalStack
from billing.paths import local_state_dir
from billing.resource_names import FunctionName
from billing.webhooks.delivery import SUCCEEDED, signed_sandbox_delivery

BOLD, DIM, GREEN, RED, YELLOW, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[33m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = YELLOW = RESET = ""
# The demo's own output; the handlers' JSON logs and EMF metrics go to HANDLER_LOG instead.
OUT = sys.stdout
HANDLER_LOG = local_state_dir() / "demo-handlers.log"


def say(text: str = "") -> None:
    print(text, file=OUT, flush=True)


EXECUTIONS = "/api/v1/billing/executions"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    """A tiny HTTP client for the local API, authenticated as one tenant."""

    def __init__(self, base_url: str, tenant_id: UUID) -> None:
        self.base_url = base_url
        self.token = issue_token(LOCAL_TOKEN_SETTINGS, tenant_id, DEMO_SUBJECT)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        *,
        raw: bytes | None = None,
    ) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        all_headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=all_headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (localhost only)
                return Reply(response.status, json.loads(response.read() or b"null"), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Reply(error.code, json.loads(error.read() or b"null"), dict(error.headers))

    def charge(self, key: str, **fields: Any) -> Reply:
        body = {"entity_contract_id": "contract-acme-42", "plan_contract_id": "plan-pro-monthly", "amount": 4900,
                "currency": "EUR", "payment_rail": "card", **fields}  # fmt: skip
        return self.request("POST", EXECUTIONS, body, {"Idempotency-Key": key, "X-Correlation-Id": f"demo-{key}"})

    def execution(self, execution_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"{EXECUTIONS}/{execution_id}")
        assert reply.status == 200, reply
        result: dict[str, Any] = reply.body
        return result


def title(text: str) -> None:
    say(f"\n{BOLD}== {text}{RESET}")


def show(reply: Reply, what: str) -> None:
    colour = GREEN if reply.status < 300 else YELLOW if reply.status < 500 else RED
    body = reply.body or {}
    if "code" in body and reply.status >= 400:
        summary = f"{body['code']}: {body.get('detail', '')}"
    elif "results" in body:
        summary = ", ".join(f"{r['result']}{' (duplicate)' if r.get('duplicate') else ''}" for r in body["results"])
    else:
        extra = f" ({body['last_error_code']})" if body.get("last_error_code") else ""
        summary = f"{body.get('status')}{extra}  {body.get('amount_display', '')}  id={body.get('id')}"
    say(f"  {what:<44} -> {colour}HTTP {reply.status}{RESET}  {summary}")


def timeline(client: Client, execution_id: str) -> None:
    detail = client.execution(execution_id)
    say(f"  {DIM}timeline of {execution_id}:{RESET}")
    for event in detail["events"]:
        old = event["old_status"] or "·"
        meta = {k: v for k, v in event["metadata"].items() if k in {"error_code", "provider_reference", "attempt"}}
        say(f"    {event['occurred_at'][11:23]}  {event['type']:<38} {old:>10} -> {event['new_status']:<10} "
              f"{DIM}{event['user_id'] or ''} {meta if meta else ''}{RESET}")  # fmt: skip
    phases = " -> ".join(f"{w['phase_code']}({w['source']})" for w in detail["workflow"])
    say(f"    {DIM}workflow: {phases}{RESET}")


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll until condition holds; the demo shows asynchronous work finishing, so it has to wait for it."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        time.sleep(0.2)


def card_flows(client: Client) -> None:
    title("1. A card payment that completes")
    paid = client.charge(f"card-{uuid4().hex[:8]}", payment_instrument_id="tok_visa")
    show(paid, "POST /executions  tok_visa")
    timeline(client, paid.body["id"])

    title("2. A declined card")
    declined = client.charge(f"decline-{uuid4().hex[:8]}", payment_instrument_id="tok_decline")
    show(declined, "POST /executions  tok_decline")
    timeline(client, declined.body["id"])

    title("3. Idempotent replay: the same Idempotency-Key")
    key = f"replay-{uuid4().hex[:8]}"
    first = client.charge(key, payment_instrument_id="tok_visa")
    again = client.charge(key, payment_instrument_id="tok_visa")
    other = client.charge(key, payment_instrument_id="tok_visa", amount=9900)
    show(first, "first request")
    show(again, "same key, same body (replay)")
    show(other, "same key, different amount")
    say(f"  same execution both times: {first.body['id'] == again.body['id']}")

    title("4. Bad input is refused and writes nothing")
    show(client.charge(f"bad-{uuid4().hex[:8]}", amount=19.99), "amount 19.99 (not minor units)")
    show(client.charge(f"bad-{uuid4().hex[:8]}", currency="eur"), "currency 'eur'")
    body = {"entity_contract_id": "contract-acme-42", "plan_contract_id": "plan-pro-monthly", "amount": 4900,
            "currency": "EUR", "payment_rail": "card"}  # fmt: skip
    show(client.request("POST", EXECUTIONS, body), "no Idempotency-Key header")


def sepa_flow(client: Client) -> tuple[str, str]:
    title("5. A SEPA debit goes to settlement pending")
    sepa = client.charge(
        f"sepa-{uuid4().hex[:8]}", payment_rail="sepa_debit", payment_instrument_id="iban_settles_paid"
    )
    show(sepa, "POST /executions  sepa_debit")
    say(f"  awaiting settlement at the provider: {sepa.body['awaiting_settlement']}, "
          f"reference {sepa.body['provider_reference']}")  # fmt: skip
    timeline(client, sepa.body["id"])
    return str(sepa.body["id"]), str(sepa.body["provider_reference"])


def webhook_flow(client: Client, execution_id: str, reference: str) -> None:
    title("6. The provider confirms the SEPA debit with a signed webhook")
    event_id = f"evt_{uuid4().hex[:16]}"
    headers, body = signed_sandbox_delivery(event_id, SUCCEEDED, reference)
    webhook = "/api/v1/billing/webhook/sandbox"
    show(client.request("POST", webhook, headers=headers, raw=body), f"POST webhook {event_id[:16]} (signed)")
    show(client.request("POST", webhook, headers=headers, raw=body), "the same delivery again")
    forged = {**headers, "Sandbox-Signature": headers["Sandbox-Signature"].replace("v1=", "v1=00")}
    show(client.request("POST", webhook, headers=forged, raw=body), "a forged signature")
    timeline(client, execution_id)


def cancel_flow(client: Client, stack: LocalStack, tenant_id: UUID) -> None:
    title("7. Cancel: a charge staged by a scheduled billing job, canceled over the API")
    from billing.db.connection import connect
    from billing.db.execution_repository import ExecutionRepository
    from billing.domain.execution import ExecutionRequest, PaymentRail
    from billing.domain.workflow import WorkflowWriteContext
    from billing.services.execution_service import ExecutionService

    with connect(stack.database_url) as conn:
        staged = ExecutionService(ExecutionRepository(conn)).create(
            tenant_id,
            ExecutionRequest(
                entity_contract_id="contract-acme-42",
                plan_contract_id="plan-pro-monthly",
                amount=4900,
                currency="EUR",
                payment_rail=PaymentRail.CARD,
            ),
            idempotency_key=f"job-{uuid4().hex[:8]}",
            payment_provider="sandbox",
            correlation_id="demo-billing-run",
            context=WorkflowWriteContext.system(),
        )
    execution_id = str(staged.execution.id)
    show(client.request("POST", f"{EXECUTIONS}/{execution_id}/cancel"), "POST /executions/{id}/cancel")
    show(client.request("POST", f"{EXECUTIONS}/{execution_id}/cancel"), "cancel again")
    timeline(client, execution_id)


def retry_flow(client: Client) -> None:
    title("9. A transient provider failure, recovered by the retry queue")
    flaky = client.charge(f"flaky-{uuid4().hex[:8]}", payment_instrument_id="tok_transient_2")
    show(flaky, "POST /executions  tok_transient_2")
    say(f"  retry scheduled for {flaky.body['next_attempt_at']} ({flaky.body['last_error_code']})")
    execution_id = flaky.body["id"]
    wait_for(lambda: client.execution(execution_id)["status"] == "completed", "the retries to complete the charge")
    done = client.execution(execution_id)
    say(f"  completed on attempt {done['attempt_count']}, same provider key each time (one charge)")
    timeline(client, execution_id)


def dead_letter_flow(client: Client, stack: LocalStack) -> None:
    title("10. A charge that keeps failing: retries exhausted, parked in the DLQ, redriven by an operator")
    doomed = client.charge(f"doomed-{uuid4().hex[:8]}", payment_instrument_id="tok_always_transient")
    show(doomed, "POST /executions  tok_always_transient")
    execution_id = doomed.body["id"]
    wait_for(lambda: client.execution(execution_id)["status"] == "failed", "the retries to run out", 60)
    sqs = stack.client("sqs")
    dlq = stack.resources.dlq_url

    def parked() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    wait_for(lambda: parked() > 0, "the message to reach the dead-letter queue")
    say(f"  failed after {client.execution(execution_id)['attempt_count']} attempts; DLQ depth {parked()}")
    report = stack.invoke(FunctionName.RETRY_DLQ, {"redrive": True, "operator": "demo-operator"})
    say(f"  operator redrive: {len(report['redriven'])} message(s) moved back to the retry queue")
    timeline(client, execution_id)


def reconciliation_flow(client: Client, stack: LocalStack) -> None:
    title("11. A SEPA debit settled by the reconciliation worker (no webhook)")
    sepa = client.charge(
        f"sepa-recon-{uuid4().hex[:8]}", payment_rail="sepa_debit", payment_instrument_id="iban_settles_failed"
    )
    show(sepa, "POST /executions  iban_settles_failed")
    report = stack.invoke(FunctionName.RECONCILE, {})
    say(f"  reconcile run: {', '.join(f'{k}={v}' for k, v in report.items() if isinstance(v, int))}")
    show(Reply(200, client.execution(sepa.body["id"]), {}), "GET /executions/{id}")
    timeline(client, sepa.body["id"])


def events_flow(stack: LocalStack) -> None:
    title("12. Events on the EventBridge bus (published by the outbox relay)")
    report = stack.invoke(FunctionName.OUTBOX_RELAY, {})
    say(f"  outbox relay: published {report['published']}, failed {report['failed']}, left {report['unpublished']}")
    sqs = stack.client("sqs")
    tap = stack.resources.events_tap_queue_url
    received: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=tap, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        received += [json.loads(message["Body"]) for message in batch]
        sqs.delete_message_batch(
            QueueUrl=tap, Entries=[{"Id": m["MessageId"], "ReceiptHandle": m["ReceiptHandle"]} for m in batch]
        )
    kinds: dict[str, int] = {}
    for event in received:
        kinds[event["detail-type"]] = kinds.get(event["detail-type"], 0) + 1
    say(f"  {len(received)} events received by a rule on the bus:")
    for kind, count in sorted(kinds.items()):
        say(f"    {count:>3}  {kind}")
    if received:
        sample = received[-1]
        say(f"  {DIM}sample: source={sample['source']} detail-type={sample['detail-type']} "
            f"detail.event_id={sample['detail']['event_id']}{RESET}")  # fmt: skip


def settlement_flow(stack: LocalStack) -> None:
    title("13. Today's settlement report against the provider's settlement file")
    from datetime import UTC, datetime

    from billing.db.connection import connect
    from billing.rails.sandbox import SandboxProvider, connections_to
    from billing.settlement.sandbox_files import SandboxDiscrepancy, write_sandbox_settlement_file

    today = datetime.now(UTC).date()
    # The provider settles what is due (debits confirmed by webhook above included) before it writes its file.
    SandboxProvider(connections_to(stack.database_url)).settle_due()
    with connect(stack.database_url) as conn:
        # The provider's file, with one amount changed and one charge we never made, to show the flags.
        key = write_sandbox_settlement_file(
            conn,
            stack.client("s3"),
            stack.resources.settlement_bucket,
            today,
            inject=[SandboxDiscrepancy.AMOUNT, SandboxDiscrepancy.UNKNOWN_REFERENCE],
        )
    say(f"  provider file s3://{stack.resources.settlement_bucket}/{key}")
    summary = stack.invoke(FunctionName.SETTLEMENT_REPORT, {"period": "daily", "date": today.isoformat()})
    found = {name: count for name, count in summary["counts"].items() if count}
    say(f"  {summary['discrepancies']} discrepancies flagged; lines by class: {found}")
    say(f"  report s3://{stack.resources.reports_bucket}/{summary.get('report_json', '?')}")


def tenancy_flow(client: Client, stack: LocalStack, execution_id: str) -> None:
    title("8. Tenancy: another tenant cannot see it, no token gets 401")
    intruder = Client(stack.base_url, uuid4())
    show(intruder.request("GET", f"{EXECUTIONS}/{execution_id}"), "GET as another tenant")
    anonymous = Client(stack.base_url, uuid4())
    anonymous.token = "not-a-jwt"  # noqa: S105 (a deliberately invalid bearer value)
    show(anonymous.request("GET", EXECUTIONS), "GET with an invalid token")


def main() -> int:
    tenant_id = uuid4()
    say(f"{BOLD}Billing execution engine — local demo{RESET}")
    say(f"{DIM}starting PostgreSQL, moto and the API ... (handler logs: {HANDLER_LOG}){RESET}")
    HANDLER_LOG.parent.mkdir(parents=True, exist_ok=True)
    with HANDLER_LOG.open("w") as handler_log, contextlib.redirect_stdout(handler_log), LocalStack(port=0) as stack:
        say(f"{DIM}API on {stack.base_url}, database {stack.database_url.split('@')[-1]}, tenant {tenant_id}{RESET}")
        client = Client(stack.base_url, tenant_id)
        card_flows(client)
        webhook_flow(client, *sepa_flow(client))
        cancel_flow(client, stack, tenant_id)
        paid = client.request("GET", f"{EXECUTIONS}?limit=1").body["items"][0]["id"]
        tenancy_flow(client, stack, paid)
        # From here on the retry queue delivers to the retry function, as its event source mapping does in AWS.
        stack.every(0.5, "retry-queue", stack.retry_event_source().poll)
        retry_flow(client)
        dead_letter_flow(client, stack)
        reconciliation_flow(client, stack)
        events_flow(stack)
        settlement_flow(stack)
        title("Listing this tenant's executions")
        page = client.request("GET", f"{EXECUTIONS}?limit=50").body
        counts: dict[str, int] = {}
        for item in page["items"]:
            counts[item["status"]] = counts.get(item["status"], 0) + 1
        say(f"  {len(page['items'])} executions: {counts}")
    say(f"\n{GREEN}demo finished{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
