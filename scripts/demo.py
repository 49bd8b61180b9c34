"""make demo: boot the local stack and walk through real payment flows over HTTP, printing each timeline.

Everything runs for real: the embedded PostgreSQL (or DATABASE_URL), moto in server mode for AWS, the API
Gateway emulation and the actual Lambda handlers; the sandbox provider decides outcomes by instrument token
(docs/sandbox.md). The last flows save a card in the vault, look for its number in every table and in the handler
log, charge it, deactivate it, and check the PCI DSS audit trail (docs/pci.md).
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import html
import io
import json
import re
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from psycopg import sql

from billing.audit import merkle
from billing.audit.__main__ import main as audit_cli
from billing.auth.tokens import DEMO_SUBJECT, LOCAL_TOKEN_SETTINGS, issue_token
from billing.db.connection import connect
from billing.db.roles import OWNED_SCHEMAS
from billing.local.stack import LOCAL_STRIPE_API_KEY, LocalStack
from billing.paths import local_state_dir
from billing.resource_names import AUDITOR_SCOPE, FunctionName
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
INSTRUMENTS = "/api/v1/billing/payment-instruments"
AUDIT = "/api/v1/billing/audit"
# Stripe's test Visa, typed as a customer would: the sandbox tokenizes it as tok_visa, so its charges succeed.
TEST_CARD = "4242 4242 4242 4242"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Client:
    """A tiny HTTP client for the local API, authenticated as one tenant."""

    def __init__(self, base_url: str, tenant_id: UUID, subject: str = DEMO_SUBJECT, scopes: Sequence[str] = ()) -> None:
        self.base_url = base_url
        self.token = issue_token(LOCAL_TOKEN_SETTINGS, tenant_id, subject, scopes=scopes)

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
    elif "last4" in body:
        summary = (f"{body['status']}  {body['brand']} ...{body['last4']} {body['exp_month']:02d}/{body['exp_year']}"
                   f"  id={body['id']}")  # fmt: skip
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


# --- the card vault and the audit trail -------------------------------------------------------------------------

# Separators people type between a card's digits (the database's card guard reads past the same ones).
_CARD_SEPARATORS = "[ \t\u00a0./_-]*"
_SEARCHED_TYPES = frozenset({"text", "varchar", "bpchar", "name", "json", "jsonb", "bytea"})
_COLUMNS = """
select n.nspname as schema_name, c.relname as table_name, a.attname as column_name,
       coalesce(e.typname, t.typname) as type_name, e.oid is not null as is_array
  from pg_class c
  join pg_namespace n on n.oid = c.relnamespace
  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
  join pg_type t on t.oid = a.atttypid
  left join pg_type e on e.oid = t.typelem and t.typcategory = 'A'
 where n.nspname = any(%s) and c.relkind = 'r'
 order by n.nspname, c.relname, a.attnum
"""


@dataclass(frozen=True)
class Search:
    """Where a pattern was found: every text, jsonb and bytea column of every table of ours, and the handler log."""

    tables: int
    columns: int
    found: list[str]


def card_number_pattern(number: str) -> str:
    """A regular expression (Python's and PostgreSQL's alike) for the card's digits with any separators between."""
    return _CARD_SEPARATORS.join(re.sub(r"\D", "", number))


def _column_text(column: sql.Composable, type_name: str) -> sql.Composable:
    # bytea as escaped text: printable bytes stay as they are, any other byte becomes \\nnn, which breaks a digit run.
    return sql.SQL("encode({}, 'escape')" if type_name == "bytea" else "{}::text").format(column)


def search_everywhere(database_url: str, pattern: str, log: Path | None) -> Search:
    """Every row of every table in the owned schemas (as the admin, so row security hides nothing) and every line
    of `log`, searched for `pattern`; bytea columns are searched for its ASCII bytes."""
    found: list[str] = []
    with connect(database_url, application_name="billing-demo-pan-search") as conn:
        columns = [row for row in conn.execute(_COLUMNS, [list(OWNED_SCHEMAS)]) if row["type_name"] in _SEARCHED_TYPES]
        tables: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in columns:
            tables.setdefault((row["schema_name"], row["table_name"]), []).append(row)
        for (schema, table), table_columns in tables.items():
            tests: list[sql.Composable] = []
            for column in table_columns:
                name = sql.Identifier(column["column_name"])
                if column["is_array"]:
                    test = sql.SQL("exists (select 1 from unnest({}) v where {} ~ %(pattern)s)").format(
                        name, _column_text(sql.Identifier("v"), column["type_name"])
                    )
                else:
                    test = sql.SQL("{} ~ %(pattern)s").format(_column_text(name, column["type_name"]))
                tests.append(
                    sql.SQL("coalesce(bool_or({}), false) as {}").format(test, sql.Identifier(f"c{len(tests)}"))
                )
            query = sql.SQL("select {} from {}").format(sql.SQL(", ").join(tests), sql.Identifier(schema, table))
            hits = conn.execute(query, {"pattern": pattern}).fetchone()
            assert hits is not None
            found += [
                f"{schema}.{table}.{c['column_name']}"
                for c, hit in zip(table_columns, hits.values(), strict=True)
                if hit
            ]
    if log is not None:
        found += [
            f"{log.name} line {n}" for n, line in enumerate(log.read_text().splitlines(), 1) if re.search(pattern, line)
        ]
    return Search(len(tables), len(columns), found)


def prove_card_number_absent(stack: LocalStack, number: str, *, again: bool = False) -> Search:
    """Search the database and the handler log for the card's number; stop the demo loudly if it is anywhere."""
    sys.stdout.flush()  # the handler log is the redirected stdout: everything the functions logged so far
    search = search_everywhere(stack.database_url, card_number_pattern(number), HANDLER_LOG)
    if search.found:
        raise SystemExit(
            f"{RED}{BOLD}PAN FOUND: the card number is stored or logged in {', '.join(search.found)}{RESET}"
        )
    still = "still " if again else ""
    say(f"  {GREEN}PAN {still}found nowhere ({search.tables} tables, {search.columns} columns, handler log){RESET}")
    return search


def _wrapped(fields: dict[str, Any], indent: str = "    ") -> None:
    text = "  ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    for line in textwrap.wrap(text, 116 - len(indent), break_on_hyphens=False):
        say(f"{indent}{DIM}{line}{RESET}")


def _card_secret(stack: LocalStack, tenant_id: UUID, token: str) -> dict[str, Any]:
    with connect(stack.database_url) as conn:
        row = conn.execute(
            "select scheme, octet_length(encrypted_data_key) as wrapped, octet_length(ciphertext) as sealed,"
            " shredded_at, num_nulls(encrypted_data_key, nonce, ciphertext) = 3 as destroyed"
            " from billing_vault.card_secrets where tenant_id = %s and token = %s",
            [tenant_id, token],
        ).fetchone()
    if row is None:
        raise SystemExit(f"{RED}no card secret under {token}{RESET}")
    return row


def _logged_card() -> str:
    """The card as the vault function logged its request (the last save in the handler log)."""
    for line in reversed(HANDLER_LOG.read_text().splitlines()):
        if '"billing.vault.request"' in line and '"card"' in line:
            return "body.card=" + json.dumps(json.loads(line)["body"]["card"])
    raise SystemExit(f"{RED}the vault logged no request for the card{RESET}")


def vault_flow(client: Client, stack: LocalStack, tenant_id: UUID) -> dict[str, Any]:
    title("14. The card vault: a card is saved once, kept encrypted, and shown only masked")
    card = {"number": TEST_CARD, "exp_month": 12, "exp_year": datetime.now(UTC).year + 3, "cvc": "314",
            "holder_name": "Ada Lovelace"}  # fmt: skip
    body = {"entity_contract_id": "contract-acme-42", "type": "card", "card": card}
    saved = client.request("POST", INSTRUMENTS, body, {"Idempotency-Key": f"card-{uuid4().hex[:8]}"})
    show(saved, f"POST /payment-instruments  {TEST_CARD}")
    if saved.status != 201:
        raise SystemExit(f"{RED}the vault refused the card: {saved.body}{RESET}")
    instrument: dict[str, Any] = saved.body
    say("  the instrument as the API returns it (no number, no CVC):")
    _wrapped(instrument)
    with connect(stack.database_url) as conn:
        terms = conn.execute(
            "select attr_key, attr_value from billing.contract_term_attrs"
            " where tenant_id = %s and contract_id = %s and valid_to is null order by attr_key",
            [tenant_id, instrument["id"]],
        ).fetchall()
    if not terms:
        raise SystemExit(
            f"{RED}the admin connection sees no terms of {instrument['id']}: a search would prove nothing{RESET}"
        )
    say(f"  billing.contract_term_attrs, the instrument's {len(terms)} open terms (the card only as IIN and last4):")
    for term in terms:
        say(f"    {DIM}{term['attr_key']:<24} {term['attr_value']}{RESET}")
    token = next(t["attr_value"] for t in terms if t["attr_key"] == "vault_token")
    secret = _card_secret(stack, tenant_id, token)
    say(f"  billing_vault.card_secrets (billing_vault alone may read it): {secret['scheme']}, ciphertext "
        f"{secret['sealed']} bytes, data key wrapped by KMS ({secret['wrapped']} bytes)")  # fmt: skip
    prove_card_number_absent(stack, TEST_CARD)
    say(f"  {DIM}the vault's log line for the request: {_logged_card()}{RESET}")
    # The same search, for something that is stored: it finds it, so the absence above is a finding, not a blind spot.
    control = search_everywhere(stack.database_url, re.escape(token), None)
    say(f"  {DIM}(the same search finds the vault token in {', '.join(control.found)}){RESET}")
    return instrument


def saved_card_flow(client: Client, stack: LocalStack, tenant_id: UUID, instrument: dict[str, Any]) -> None:
    title("15. Charge the saved card, deactivate it, and the next charge is refused")
    paid = client.charge(f"saved-card-{uuid4().hex[:8]}", payment_instrument_id=instrument["id"])
    show(paid, "POST /executions  the saved card (pi_...)")
    timeline(client, paid.body["id"])
    show(client.request("DELETE", f"{INSTRUMENTS}/{instrument['id']}"), "DELETE /payment-instruments/{id}")
    with connect(stack.database_url) as conn:
        token = conn.execute(
            "select attr_value from billing.contract_term_attrs where tenant_id = %s and contract_id = %s"
            " and attr_key = 'vault_token'",
            [tenant_id, instrument["id"]],
        ).fetchone()
    assert token is not None
    secret = _card_secret(stack, tenant_id, token["attr_value"])
    if not secret["destroyed"]:
        raise SystemExit(f"{RED}{BOLD}the deactivated card's number was not shredded{RESET}")
    say(f"  card number shredded at {secret['shredded_at']:%H:%M:%S}: its ciphertext, nonce and wrapped data key are "
        "null, so nothing can decrypt it again")  # fmt: skip
    refused = client.charge(f"saved-card-{uuid4().hex[:8]}", payment_instrument_id=instrument["id"])
    show(refused, "POST /executions  the deactivated card")
    say(f"  {DIM}Content-Type: {refused.headers.get('Content-Type')}, nothing written but the audit entry{RESET}")
    prove_card_number_absent(stack, TEST_CARD, again=True)


def _cli(arguments: list[str]) -> tuple[int, list[str]]:
    """Run `python -m billing.audit <arguments>` in this process (the same code) and return its exit code and lines."""
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = audit_cli(arguments)
    return code, captured.getvalue().splitlines()


def _customer_card(stack: LocalStack, number: str) -> str:
    """A PaymentMethod made at the Stripe server from a test card, as Stripe.js does in the customer's browser: the
    card number goes to Stripe, only the pm_... reaches the engine."""
    import stripe

    browser = stripe.StripeClient(LOCAL_STRIPE_API_KEY, base_addresses={"api": stack.stripe_api_base})
    # The SDK's TypedDict wants literal keys; this is exactly its documented shape.
    params: Any = {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    return str(browser.v1.payment_methods.create(params=params).id)


def _authenticate_at_stripe(stack: LocalStack, intent: str, client_secret: str) -> None:
    """The customer passing the 3-D Secure challenge: localstripe's stand-in for the issuer's page."""
    form = urllib.parse.urlencode({"client_secret": client_secret, "success": "true"}).encode()
    request = urllib.request.Request(  # noqa: S310 - the local Stripe server
        f"{stack.stripe_api_base}/v1/payment_intents/{intent}/_authenticate", data=form, method="POST",
        headers={"Authorization": f"Bearer {LOCAL_STRIPE_API_KEY}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def stripe_flows(client: Client, stack: LocalStack) -> None:
    title("17. Stripe: a card saved from a Stripe.js PaymentMethod, charged through Stripe (localstripe)")
    say(f"  {DIM}Stripe API at {stack.stripe_api_base}; its signed webhooks arrive at /webhook/stripe{RESET}")
    saved = client.request(
        "POST", INSTRUMENTS,
        {"type": "card", "entity_contract_id": "contract-acme-42",
         "provider_token": {"provider": "stripe", "token": _customer_card(stack, "4242424242424242")}},
        {"Idempotency-Key": f"stripe-card-{uuid4().hex[:8]}"},
    )  # fmt: skip
    say(f"  {'POST /payment-instruments  provider_token pm_...':<44} -> HTTP {saved.status}  {saved.body.get('status')}"
        f"  id={saved.body.get('id')}")  # fmt: skip
    paid = client.charge(f"stripe-{uuid4().hex[:8]}", payment_instrument_id=saved.body["id"], amount=2500)
    show(paid, "POST /executions  the instrument")
    say(f"  routed to {paid.body['payment_provider']}, PaymentIntent {paid.body['provider_reference']}")
    timeline(client, paid.body["id"])

    title("18. Stripe: a 3-D Secure card -> requires_action -> the customer authenticates -> signed webhook")
    secure = client.charge(
        f"stripe-3ds-{uuid4().hex[:8]}", payment_instrument_id=_customer_card(stack, "4000002760003184")
    )
    show(secure, "POST /executions  3DS card (pm_...)")
    action = secure.body["next_action"]
    say(f"  next_action: type={action['type']}, client_secret={'present' if action['client_secret'] else 'absent'}"
        " (handed to this caller only, never stored)")  # fmt: skip
    _authenticate_at_stripe(stack, secure.body["provider_reference"], action["client_secret"])
    say("  the customer passed the challenge at Stripe; waiting for payment_intent.succeeded ...")
    wait_for(lambda: client.execution(secure.body["id"])["status"] == "completed", "the Stripe webhook")
    timeline(client, secure.body["id"])

    title("19. Stripe: a declined card keeps Stripe's decline code")
    declined = client.charge(
        f"stripe-decline-{uuid4().hex[:8]}", payment_instrument_id=_customer_card(stack, "4000000000000341")
    )
    show(declined, "POST /executions  card 4000 0000 0000 0341")

    title("20. Refunds with amounts: two partial refunds, then one more than is left")
    refunds = f"{EXECUTIONS}/{paid.body['id']}/refunds"
    for amount in (1000, 900):
        refund = client.request("POST", refunds, {"amount": amount, "reason": "requested_by_customer"},
                                {"Idempotency-Key": f"refund-{uuid4().hex[:8]}"})  # fmt: skip
        say(f"  {'POST .../refunds  ' + str(amount):<44} -> HTTP {refund.status}  {refund.body.get('status')}  "
            f"{refund.body.get('provider_reference')}")  # fmt: skip
    over = client.request("POST", refunds, {"amount": 1000}, {"Idempotency-Key": f"refund-{uuid4().hex[:8]}"})
    show(over, "POST .../refunds  1000 (only 600 left)")
    detail = client.execution(paid.body["id"])
    say(
        f"  refunded_amount {detail['refunded_amount']} of {detail['amount']};"
        f" the execution is still {detail['status']}"
    )
    timeline(client, paid.body["id"])


def _explain(client: Client, execution_id: str) -> None:
    """The assessment and 3-D Secure outcome of an execution, as GET /executions/{id} shows them."""
    detail = client.execution(execution_id)
    for assessment in detail["risk_assessments"]:
        fired = ", ".join(
            f"{r['rule_id']} ({r['action']}, {json.dumps(r['inputs'], separators=(',', ':'))})"
            for r in assessment["fired"]
        )
        say(f"  risk: {assessment['decision']}  score {assessment['score']}  rule set v{assessment['rule_set_version']}"
            f"  {assessment['duration_us']} us  {DIM}fired: {fired or 'none'}{RESET}")  # fmt: skip
    auth = detail["authentication"]
    if auth:
        say(f"  3-D Secure: {auth['state']}  performed by {auth['performed_by']}  exemption={auth['exemption']}"
            f"  transStatus={auth['trans_status']} ECI={auth['eci']}")  # fmt: skip
        say(f"  liability shift: {detail['liability_shift']}")
    if detail["review"]:
        review = detail["review"]
        say(f"  review: {review['decision']} by {review['decided_by']} ({review['note']})")


def _form(page: str) -> tuple[str, dict[str, str]]:
    """The first form of a page: its action and hidden fields (what a browser would post)."""
    match = re.search(r'<form[^>]*action="([^"]+)"', page)
    assert match is not None, "the page has a form"
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    return html.unescape(match[1]), {html.unescape(n): html.unescape(v) for n, v in hidden}


def _browse(url: str, fields: dict[str, str] | None = None) -> str:
    """GET a page, or POST a form to it, as the customer's browser does (no token: these pages need none)."""
    data = urllib.parse.urlencode(fields).encode() if fields is not None else None
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (localhost only)
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def _page_text(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', page)
    return html.unescape(match[1]).strip() if match else ""


def risk_flows(base_url: str) -> None:
    # A tenant of its own, so the velocity counters start from zero.
    client = Client(base_url, uuid4())
    title("21. A small card charge: exempt from 3-D Secure as low value (PSD2), no liability shift")
    small = client.charge(f"small-{uuid4().hex[:8]}", payment_instrument_id="tok_visa", amount=1500)
    show(small, "POST /executions  EUR 15.00 tok_visa")
    _explain(client, small.body["id"])

    title("22. EUR 49.00 needs 3-D Secure: the sandbox ACS challenges, the customer types the code")
    secure = client.charge(f"challenge-{uuid4().hex[:8]}", payment_instrument_id="tok_3ds_challenge")
    show(secure, "POST /executions  tok_3ds_challenge")
    action = secure.body["next_action"]
    say(f"  next_action: {action['type']} {action['url']}")
    acs_url, creq = _form(_browse(action["url"]))
    page = _browse(acs_url, creq)
    say(f"  the ACS's page: merchant {_page_text(page, 'merchant')!r}, amount {_page_text(page, 'amount')},"
        f" attempts left {_page_text(page, 'attempts-left')}")  # fmt: skip
    code_url = html.unescape(re.findall(r'<form[^>]*action="([^"]+/code)"', page)[0])
    page = _browse(code_url, {"code": "000000"})
    say(f"  a wrong code: {_page_text(page, 'error')!r}, attempts left {_page_text(page, 'attempts-left')}")
    notify_url, cres = _form(_browse(code_url, {"code": "123456"}))
    say(f"  the right code (123456): {_page_text(_browse(notify_url, cres), 'result')!r}")
    timeline(client, secure.body["id"])
    _explain(client, secure.body["id"])

    title("23. A card whose issuer rejects the authentication: failed, nothing charged")
    rejected = client.charge(f"rejected-{uuid4().hex[:8]}", payment_instrument_id="tok_3ds_rejected")
    show(rejected, "POST /executions  tok_3ds_rejected")
    _explain(client, rejected.body["id"])

    title("24. Card testing: the 6th customer-initiated attempt on one card within an hour is blocked")
    for attempt in range(1, 7):
        reply = client.charge(f"velocity-{uuid4().hex[:8]}", payment_instrument_id="tok_amex", amount=500)
        show(reply, f"attempt {attempt}  EUR 5.00 tok_amex")
    _explain(client, reply.body["id"])
    timeline(client, reply.body["id"])

    title("25. A tenant's own rule holds large renewals for review; an operator approves one")
    rules = client.request("GET", "/api/v1/billing/risk/rules").body
    review_rule = {
        "id": "review-large-renewal", "description": "An operator looks at renewals of EUR 1,000.00 or more",
        "action": "review", "score": 30, "applies_to": {"initiator": "merchant", "rails": ["card"]},
        "when": {"attribute": "amount", "op": "gte", "value": {"EUR": 100000}},
    }  # fmt: skip
    stored = client.request(
        "PUT", "/api/v1/billing/risk/rules", {"rules": [*rules["rules"], review_rule], "settings": rules["settings"]},
        {"If-Match": str(rules["version"])},
    )  # fmt: skip
    say(f"  PUT /risk/rules  -> HTTP {stored.status}  version {stored.body.get('version')}")
    held = client.charge(
        f"review-{uuid4().hex[:8]}", payment_instrument_id="tok_visa", amount=120000, metadata={"initiator": "merchant"}
    )
    show(held, "POST /executions  EUR 1,200.00 renewal")
    say(f"  held: pending, not submitted (awaiting_settlement={held.body['awaiting_settlement']})")
    approved = client.request(
        "POST", f"{EXECUTIONS}/{held.body['id']}/review", {"decision": "approve", "note": "known customer"}
    )
    show(approved, "POST .../review  approve")
    _explain(client, held.body["id"])

    title("26. A merchant-initiated renewal on a 3-D Secure card: out of SCA's scope, no challenge")
    renewal = client.charge(
        f"renewal-{uuid4().hex[:8]}", payment_instrument_id="tok_3ds_challenge", metadata={"initiator": "merchant"}
    )
    show(renewal, "POST /executions  initiator=merchant")
    _explain(client, renewal.body["id"])


def audit_flow(stack: LocalStack, instrument_id: str) -> None:
    title("16. The PCI DSS audit trail: checkpoint, verify, prove an entry, answer a regulator")
    run = stack.invoke(FunctionName.AUDIT_CHECKPOINT, {})
    bucket = stack.resources.audit_checkpoints_bucket
    say(f"  audit_checkpoint run: {len(run.get('rotations', []))} new secret versions recorded, {run['sequenced']} "
        f"entries sequenced, tree of {run['tree_size']} leaves, checkpoint {run['checkpoint']} signed; locked in "
        f"s3://{bucket}: {run['exported']}")  # fmt: skip
    say(f"  $ python -m billing.audit verify --bucket {bucket}")
    code, lines = _cli(["verify", "--bucket", bucket])
    for line in lines:
        say(f"    {GREEN if code == 0 else RED}{line}{RESET}")
    if code != 0:
        raise SystemExit(f"{RED}{BOLD}the audit trail does not verify{RESET}")

    auditor = Client(stack.base_url, uuid4(), "demo-auditor", scopes=[AUDITOR_SCOPE])
    events = auditor.request("GET", f"{AUDIT}/events?resource_id={instrument_id}&event_type=chd.tokenized")
    if events.status != 200 or not events.body["items"]:
        raise SystemExit(
            f"{RED}the auditor cannot find the card's tokenization: HTTP {events.status} {events.body}{RESET}"
        )
    entry = events.body["items"][0]
    latest = auditor.request("GET", f"{AUDIT}/checkpoints/latest").body
    size, root = latest["tree_size"], base64.b64decode(latest["root_hash"])
    reply = auditor.request("GET", f"{AUDIT}/proofs/{entry['seq']}?tree_size={size}")
    if reply.status != 200:
        raise SystemExit(f"{RED}no inclusion proof: HTTP {reply.status} {reply.body}{RESET}")
    proof = [base64.b64decode(h) for h in reply.body["proof"]]
    leaf = base64.b64decode(reply.body["entry"]["leaf"])
    stated = json.loads(leaf)
    if (stated["event_type"], stated["resource_id"]) != ("chd.tokenized", instrument_id):
        raise SystemExit(f"{RED}the proof is of another entry: {stated}{RESET}")
    # Trust nothing the server computed: hash the leaf bytes ourselves and walk the path to the checkpoint's root.
    try:
        merkle.verify_inclusion(entry["seq"], size, merkle.leaf_hash(leaf), proof, root)
    except merkle.ProofError as exc:
        raise SystemExit(f"{RED}{BOLD}the inclusion proof does not verify: {exc}{RESET}") from exc
    say(f"  GET /audit/proofs/{entry['seq']}?tree_size={size} (auditor token): the card's chd.tokenized entry is "
        f"leaf {entry['seq']}")  # fmt: skip
    say(f"    {GREEN}inclusion proof verified with billing.audit.merkle{RESET}: tree size {size}, root "
        f"{latest['root_hash']}, proof length {len(proof)}")  # fmt: skip

    today = datetime.now(UTC).date()
    window = ["--from", today.isoformat(), "--to", (today + timedelta(days=1)).isoformat()]
    say(f"  who accessed this instrument today?  $ python -m billing.audit events --resource-id {instrument_id} "
        f"{' '.join(window)}")  # fmt: skip
    code, lines = _cli(["events", "--resource-id", instrument_id, *window])
    if code != 0 or not lines:
        raise SystemExit(f"{RED}the events command found nothing for {instrument_id}{RESET}")
    for item in (json.loads(line) for line in lines):
        seq = "-" if item["seq"] is None else item["seq"]
        say(f"    {item['occurred_at'][11:23]}  {item['event_type']:<27} {item['outcome']:<9} {item['actor']:<16} "
            f"{DIM}purpose={item['purpose']} source={item['source']} seq={seq}{RESET}")  # fmt: skip
    say(f"  {DIM}(the question itself is recorded too: audit.accessed by os:{getpass.getuser()}){RESET}")


def _adyen_charges(stack: LocalStack, tenant_id: UUID, amounts: Sequence[int]) -> list[Any]:
    """Card charges completed at Adyen, recorded as the execute path records Adyen's Authorised answer (the local
    stack reaches no Adyen endpoint), each under a pspReference of Adyen's shape."""
    from billing.db.execution_repository import ExecutionRepository
    from billing.db.roles import DatabaseRole, login_url
    from billing.domain.execution import ExecutionRequest, PaymentRail
    from billing.domain.workflow import WorkflowWriteContext
    from billing.local.provider_settlement_files import reference

    context = WorkflowWriteContext.service_default()
    charges = []
    with connect(login_url(stack.database_url, DatabaseRole.APP)) as conn:
        repository = ExecutionRepository(conn)
        for amount in amounts:
            request = ExecutionRequest(entity_contract_id="contract-acme-42", plan_contract_id="plan-pro-monthly",
                                       amount=amount, currency="EUR", payment_rail=PaymentRail.CARD)  # fmt: skip
            execution, _ = repository.insert_idempotent(
                tenant_id, request, idempotency_key=f"adyen-{uuid4().hex[:8]}", payment_provider="adyen",
                correlation_id="demo-adyen", context=context,
            )  # fmt: skip
            repository.mark_pending(tenant_id, execution.id, context)
            repository.mark_processing(tenant_id, execution.id, context)
            charges.append(
                repository.mark_completed(
                    tenant_id, execution.id, context, provider_reference=reference("Q", execution.id)
                )
            )
    return charges


def _adyen_refund(stack: LocalStack, charge: Any, amount: int) -> str:
    """A partial refund Adyen reported by webhook (REFUND notification), recorded as the webhook path records it."""
    from billing.db.reversal_repository import ProviderReversal, ReversalRepository
    from billing.db.roles import DatabaseRole, login_url
    from billing.domain.money import Money
    from billing.domain.reversals import ReversalKind, ReversalStatus
    from billing.domain.workflow import WorkflowWriteContext
    from billing.local.provider_settlement_files import reference

    modification = reference("R", charge.id, amount)
    with connect(login_url(stack.database_url, DatabaseRole.APP)) as conn:
        ReversalRepository(conn).record_provider_reversal(
            ProviderReversal(
                tenant_id=charge.tenant_id, execution_id=charge.id, provider="adyen",
                provider_event_id=f"adyen-refund-{modification}", provider_event_type="REFUND",
                kind=ReversalKind.REFUND, money=Money(amount, charge.currency), status=ReversalStatus.SUCCEEDED,
                provider_reference=modification, reason=None, occurred_at=datetime.now(UTC),
            ),
            context=WorkflowWriteContext.webhook("adyen"), correlation_id="demo-adyen", metadata={},
        )  # fmt: skip
    return modification


def _settled_today(stack: LocalStack, provider: str) -> list[Any]:
    """Every execution the provider completed today, with its recorded reversals: what its report lists (all of them,
    so executions of earlier demo runs today are not reported missing)."""
    from billing.db.roles import DatabaseRole, login_url
    from billing.db.settlement_queries import PostgresExecutionLookup
    from billing.settlement.period import SettlementPeriod

    period = SettlementPeriod.daily(datetime.now(UTC).date())
    with connect(login_url(stack.database_url, DatabaseRole.WORKER)) as conn:
        lookup = PostgresExecutionLookup(conn)
        completed = [e for page in lookup.completed(provider, period.start_at, period.end_at) for e in page]
        references = {e.provider_reference for e in completed if e.provider_reference}
        found = {e.execution_id: e for e in lookup.find(provider, references, ())} if references else {}
    return [found.get(e.execution_id, e) for e in completed]


def _reconcile_by_hand(provider: str, path: Path) -> dict[str, Any]:
    """`python -m billing.settlement run` in this process (the same code), its outputs under the local state folder."""
    from billing.settlement.__main__ import main as settlement_cli

    day = datetime.now(UTC).date().isoformat()
    argv = ["run", "--provider", provider, "--file", str(path), "--date", day, "--out", str(local_state_dir())]
    say(f"  $ python -m billing.settlement run --provider {provider} --file {_shown_path(path)} --date {day} "
        f"--out {_shown_path(local_state_dir())}")  # fmt: skip
    printed = io.StringIO()
    if settlement_cli(argv, out=printed) != 0:
        raise SystemExit(f"{RED}python -m billing.settlement run failed for {provider}{RESET}")
    report: dict[str, Any] = json.loads(printed.getvalue())
    return report


def _shown_path(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def _show_report(report: dict[str, Any]) -> None:
    from billing.domain.money import Money

    counts = report["counts"]
    found = ", ".join(f"{name} {count}" for name, count in counts.items() if count and name != "matched")
    colour = GREEN if not report["discrepancy_count"] else YELLOW
    say(f"  {report['provider']}: report {report['report_id']}, {counts.get('matched', 0)} items matched; "
        f"{colour}{found or 'no discrepancies'}{RESET}")  # fmt: skip
    for payout in report["payouts"]:
        computed = Money(payout["computed_net"], payout["currency"]).format()
        if payout["reported"] is None:
            verdict = f"no payout line yet (not paid out in this file): items net {computed}"
        else:
            paid = Money(payout["reported"], payout["currency"]).format()
            difference = Money(payout["difference"], payout["currency"]).format()
            verdict = f"items net {computed}, payout line {paid} -> " + (
                f"{GREEN}balances{RESET}" if payout["balances"] else f"{RED}does not balance ({difference}){RESET}"
            )
        say(f"    payout {payout['batch']} {payout['currency']}: {verdict}")
    for item in report["discrepancies"]:
        where = f"line {item['line']}" if item["line"] is not None else "our charge"
        say(f"    {item['class']:<18} {where:<10} {DIM}{item['detail']}{RESET}")
    say(f"    HTML report: {_shown_path(Path(report['outputs']['html']))}")


def _listed(kind: Any, execution: Any, amount: int, when: datetime, **fields: Any) -> Any:
    """One line of a provider's report about one of our executions (its payment, or a refund of it)."""
    from billing.local.provider_settlement_files import ReportItem

    return ReportItem(kind, amount, execution.currency, when, payment_reference=execution.provider_reference,
                      execution_id=str(execution.execution_id), **fields)  # fmt: skip


def provider_settlement_flow(stack: LocalStack, tenant_id: UUID) -> None:
    title("27. Settlement on the providers' own formats: an Adyen and a Stripe report, reconciled by hand")
    from billing.local.provider_settlement_files import (
        AdyenSettlementDetailWriter,
        StripePayoutReconciliationWriter,
        adyen_card_fees,
        reference,
        stripe_card_fee,
    )
    from billing.settlement.formats.records import RecordKind
    from billing.settlement.formats.stripe_itemized import STRIPE_FEE

    now = datetime.now(UTC)
    folder = local_state_dir() / "settlements"
    say("  Adyen: three card charges completed at Adyen, 10.00 EUR of the 120.00 refunded (recorded from its webhook)")
    paid, unlisted, refunded = _adyen_charges(stack, tenant_id, (4900, 1999, 12000))
    recorded = _adyen_refund(stack, refunded, 1000)
    # Adyen's Settlement Detail Report of today's batch: every charge Adyen completed today settled with its fees,
    # each recorded refund listed, and the payout to the bank. Injected: the 19.99 charge left out, and a partial
    # refund of the 49.00 charge (5.00) that nobody recorded.
    batch = now.strftime("%j")
    adyen = folder / "adyen" / now.date().isoformat() / f"settlement_detail_report_batch_{batch}.csv"
    adyen.parent.mkdir(parents=True, exist_ok=True)
    with adyen.open("w", newline="") as stream:
        writer = AdyenSettlementDetailWriter(stream)
        ours = _settled_today(stack, "adyen")
        for execution in ours:
            if execution.execution_id == unlisted.id:
                continue
            writer.write(_listed(RecordKind.SETTLED, execution, execution.amount, now,
                                 fees=adyen_card_fees(execution.amount)), batch=batch)  # fmt: skip
            for n, reversal in enumerate(execution.reversals):
                own = recorded if execution.execution_id == refunded.id else reference("R", execution.execution_id, n)
                refund = _listed(RecordKind.REFUNDED, execution, reversal.amount or 0, now, modification_reference=own)
                writer.write(refund, batch=batch)
        unrecorded = reference("R", paid.id, "unrecorded")
        paid_listing = next(e for e in ours if e.execution_id == paid.id)
        writer.write(
            _listed(RecordKind.REFUNDED, paid_listing, 500, now, modification_reference=unrecorded), batch=batch
        )
        writer.payout(batch, "EUR", when=now)
    _show_report(_reconcile_by_hand("adyen", adyen))

    # Stripe's itemized payout reconciliation report of the charges made through Stripe above (sections 15 and 17
    # to 20): each with Stripe's fee, the two partial refunds, and the payout, which is 5.00 EUR short of its items.
    say("  Stripe: the charges made through Stripe above, with the two partial refunds of section 20")
    payout = reference("po_", now.date(), length=27)
    stripe = folder / "stripe" / now.date().isoformat() / "payout_reconciliation_itemized.csv"
    stripe.parent.mkdir(parents=True, exist_ok=True)
    with stripe.open("w", newline="") as stream:
        stripe_writer = StripePayoutReconciliationWriter(stream)
        currencies = {"EUR"}
        for execution in _settled_today(stack, "stripe"):
            fee = {STRIPE_FEE: stripe_card_fee(execution.amount)}
            stripe_writer.write(_listed(RecordKind.SETTLED, execution, execution.amount, now, fees=fee), payout=payout)
            for n, reversal in enumerate(execution.reversals):
                own = reference("re_", execution.execution_id, n, length=27)
                refund = _listed(RecordKind.REFUNDED, execution, reversal.amount or 0, now, modification_reference=own)
                stripe_writer.write(refund, payout=payout)
            currencies.add(execution.currency)
        for currency in sorted(currencies):
            stripe_writer.payout(payout, currency, off_by=-500 if currency == "EUR" else 0, when=now)
    _show_report(_reconcile_by_hand("stripe", stripe))
    say(f"  {DIM}open an HTML report in a browser: summary, payouts, fees, and each discrepancy, worst first{RESET}")


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
        instrument = vault_flow(client, stack, tenant_id)
        saved_card_flow(client, stack, tenant_id, instrument)
        audit_flow(stack, instrument["id"])
        stripe_flows(client, stack)
        risk_flows(stack.base_url)
        provider_settlement_flow(stack, tenant_id)
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
