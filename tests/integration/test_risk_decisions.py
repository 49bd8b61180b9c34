"""Risk decisions and 3-D Secure before submission, through the real execute and three_ds handlers on PostgreSQL.

Each test brings its own tenant; the sandbox provider and ACS run in this process, as in the local stack.
"""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from html import unescape
from types import ModuleType
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import Execution, ExecutionRequest
from billing.domain.workflow import WorkflowWriteContext
from billing.local.lambda_loader import load_handler
from billing.risk.gate import NO_SIGNALS
from billing.services.execution_service import CreateOutcome
from billing.services.pre_submission_sweep import PreSubmissionSweep
from tests.factories import CARD_REQUEST
from tests.lambda_harness import EXECUTIONS_PATH, api_event, call, post_execution, response_json

pytestmark = pytest.mark.integration
RULES = "/api/v1/billing/risk/rules"
LARGE = {**CARD_REQUEST, "amount": 4900}  # EUR 49.00: the default rules require 3-D Secure


@pytest.fixture(scope="module")
def three_ds(aws: dict[str, str]) -> ModuleType:
    """One warm container of the three_ds function (the customer's browser talks to it)."""
    return load_handler("three_ds")


def detail(execute: ModuleType, tenant_id: UUID, execution_id: str) -> dict[str, Any]:
    response = call(execute, api_event("GET", f"{EXECUTIONS_PATH}/{execution_id}", tenant_id=tenant_id))
    assert response["statusCode"] == 200, response["body"]
    body: dict[str, Any] = response_json(response)
    return body


def charge(execute: ModuleType, tenant_id: UUID, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = post_execution(execute, tenant_id, body, key=key)
    assert response["statusCode"] in (200, 201), response["body"]
    created: dict[str, Any] = response_json(response)
    return created


def sandbox_charges(admin: Connection, execution_id: str) -> int:
    row = admin.execute(
        "select count(*) as n from sandbox_provider.charges where execution_id = %s", [execution_id]
    ).fetchone()
    assert row is not None
    return int(row["n"])


def rules(execute: ModuleType, tenant_id: UUID, body: dict[str, Any]) -> None:
    response = call(execute, api_event("PUT", RULES, tenant_id=tenant_id, body=body))
    assert response["statusCode"] == 200, response["body"]


def review_rule(threshold: int) -> dict[str, Any]:
    return {
        "id": "review-large",
        "description": "Hold large card charges for an operator",
        "action": "review",
        "score": 50,
        "applies_to": {"initiator": "any", "rails": ["card"]},
        "when": {"attribute": "amount", "op": "gte", "value": {"EUR": threshold}},
    }


# --- block ---------------------------------------------------------------------------------------------------------


def test_the_sixth_customer_card_attempt_on_one_instrument_within_an_hour_is_blocked_and_never_sent(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    made = [charge(execute, tenant_id, CARD_REQUEST, f"velocity-{n}") for n in range(6)]
    assert [m["status"] for m in made] == ["completed"] * 5 + ["failed"]
    blocked = made[-1]
    assert blocked["last_error_code"] == "risk_blocked"
    assert sandbox_charges(admin, blocked["id"]) == 0
    shown = detail(execute, tenant_id, blocked["id"])
    (assessment,) = shown["risk_assessments"]
    assert assessment["decision"] == "block"
    fired = {rule["rule_id"]: rule for rule in assessment["fired"]}
    assert fired["card-testing-instrument-velocity"]["inputs"]["attempts_per_instrument_1h"] == 6
    types = [e["type"].removeprefix("billing.execution.") for e in shown["events"]]
    assert types == ["created", "pending", "risk_assessed", "refused"]
    assert shown["events"][-1]["metadata"]["error_code"] == "risk_blocked"
    # A replay of the blocked charge answers what happened; it is not assessed (or counted) again.
    replay = post_execution(execute, tenant_id, CARD_REQUEST, key="velocity-5")
    assert (replay["statusCode"], response_json(replay)["status"]) == (200, "failed")
    assert len(detail(execute, tenant_id, blocked["id"])["risk_assessments"]) == 1


def test_the_tenant_wide_counter_is_counted_only_when_a_rule_reads_it_and_then_blocks_a_burst(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    unread = charge(execute, tenant_id, {**CARD_REQUEST, "payment_instrument_id": "tok_visa"}, "tenant-0")
    facts = admin.execute(
        "select facts from billing.risk_assessments where execution_id = %s", [unread["id"]]
    ).fetchone()
    assert facts is not None
    assert facts["facts"]["attempts_per_tenant_1m"] is None  # the defaults read no tenant-wide counter
    burst = {
        "id": "tenant-burst",
        "description": "Card testing across the tenant's cards",
        "action": "block",
        "score": 90,
        "applies_to": {"initiator": "customer", "rails": ["card"]},
        "when": {"attribute": "attempts_per_tenant_1m", "op": "gte", "value": 3},
    }
    rules(execute, tenant_id, {"rules": [burst]})
    # Other customers and cards each time: only the tenant-wide counter sees the burst (the first charge counts).
    made = [
        charge(
            execute, tenant_id, {**CARD_REQUEST, "entity_contract_id": f"c-{n}", "payment_instrument_id": t}, f"b{n}"
        )
        for n, t in enumerate(("tok_mastercard", "tok_amex"))
    ]
    assert [m["status"] for m in made] == ["completed", "failed"]
    (assessment,) = detail(execute, tenant_id, made[-1]["id"])["risk_assessments"]
    assert assessment["fired"][0]["inputs"] == {"attempts_per_tenant_1m": 3}


def test_a_block_rule_wins_over_3ds_nothing_reaches_the_acs_or_the_provider(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    block = {**review_rule(4000), "id": "block-large", "action": "block"}
    require = {**review_rule(100), "id": "always-3ds", "action": "require_3ds", "score": 0}
    rules(execute, tenant_id, {"rules": [require, block]})
    made = charge(execute, tenant_id, {**LARGE, "payment_instrument_id": "tok_3ds_challenge"}, "block-3ds")
    assert (made["status"], made["last_error_code"]) == ("failed", "risk_blocked")
    shown = detail(execute, tenant_id, made["id"])
    assert shown["authentication"] is None
    assert sandbox_charges(admin, made["id"]) == 0
    row = admin.execute(
        "select count(*) as n from sandbox_provider.acs_challenges where tenant_id = %s", [tenant_id]
    ).fetchone()
    assert row is not None
    assert row["n"] == 0


def test_the_database_refuses_to_submit_a_held_execution_even_to_the_app_role(
    execute: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    rules(execute, tenant_id, {"rules": [review_rule(100)]})
    held = charge(execute, tenant_id, CARD_REQUEST, "raw-review")
    assert (held["status"], held["awaiting_settlement"]) == ("pending", False)
    with pytest.raises(psycopg.Error, match="waiting for review") as raised, tenant_transaction(conn, tenant_id):
        conn.execute(
            "update billing.billing_executions set status = 'processing' where tenant_id = %s and id = %s",
            [tenant_id, held["id"]],
        )
    assert raised.value.sqlstate == "BE020"


# --- review ----------------------------------------------------------------------------------------------------------


def test_a_held_charge_waits_unsubmitted_until_an_operator_approves_it_then_is_charged(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    rules(execute, tenant_id, {"rules": [review_rule(1000)]})
    held = charge(execute, tenant_id, CARD_REQUEST, "review-approve")
    assert (held["status"], held["awaiting_settlement"], held.get("next_action")) == ("pending", False, None)
    assert sandbox_charges(admin, held["id"]) == 0
    assert detail(execute, tenant_id, held["id"])["risk_assessments"][0]["decision"] == "review"
    # A replay while it waits neither submits nor assesses again.
    again = charge(execute, tenant_id, CARD_REQUEST, "review-approve")
    assert again["status"] == "pending"
    assert sandbox_charges(admin, held["id"]) == 0

    path = f"{EXECUTIONS_PATH}/{held['id']}/review"
    approved = call(execute, api_event("POST", path, tenant_id=tenant_id, body={"decision": "approve", "note": "ok"}))
    assert approved["statusCode"] == 200, approved["body"]
    assert response_json(approved)["status"] == "completed"
    shown = detail(execute, tenant_id, held["id"])
    assert (shown["review"]["decision"], shown["review"]["decided_by"]) == ("approve", "user:user-1")
    assert "review_approved" in [e["type"].removeprefix("billing.execution.") for e in shown["events"]]
    audited = admin.execute(
        "select count(*) as n from billing_audit.entries where resource_id = %s and purpose = 'risk_review'",
        [held["id"]],
    ).fetchone()
    assert audited is not None
    assert audited["n"] == 1
    # Decided once: a second decision is 409 and changes nothing.
    second = call(execute, api_event("POST", path, tenant_id=tenant_id, body={"decision": "reject"}))
    assert (second["statusCode"], response_json(second)["code"]) == (409, "risk_review_conflict")


def test_a_rejected_review_fails_the_charge_and_a_charge_not_held_cannot_be_reviewed(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    rules(execute, tenant_id, {"rules": [review_rule(1000)]})
    held = charge(execute, tenant_id, CARD_REQUEST, "review-reject")
    path = f"{EXECUTIONS_PATH}/{held['id']}/review"
    rejected = call(execute, api_event("POST", path, tenant_id=tenant_id, body={"decision": "reject"}))
    assert rejected["statusCode"] == 200, rejected["body"]
    assert (response_json(rejected)["status"], response_json(rejected)["last_error_code"]) == (
        "failed",
        "risk_review_rejected",
    )
    assert sandbox_charges(admin, held["id"]) == 0
    paid = charge(execute, tenant_id, {**CARD_REQUEST, "amount": 500}, "not-held")
    not_held = call(
        execute,
        api_event("POST", f"{EXECUTIONS_PATH}/{paid['id']}/review", tenant_id=tenant_id, body={"decision": "approve"}),
    )
    assert not_held["statusCode"] == 409
    bad = call(execute, api_event("POST", path, tenant_id=tenant_id, body={"decision": "maybe"}))
    assert bad["statusCode"] == 422


# --- 3-D Secure -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "status", "error_code", "state", "eci", "shift"),
    [
        ("tok_3ds", "completed", None, "succeeded", "05", True),
        ("tok_3ds_attempted", "completed", None, "succeeded", "06", True),
        ("tok_3ds_mastercard", "completed", None, "succeeded", "02", True),
        ("tok_3ds_rejected", "failed", "authentication_rejected", "rejected", "07", False),
        ("tok_3ds_unavailable", "completed", None, "unavailable", "07", False),
        ("tok_visa", "completed", None, "unavailable", None, False),
    ],
)
def test_a_charge_requiring_3ds_is_authenticated_frictionlessly_by_the_sandbox_acs(
    execute: ModuleType,
    admin: Connection,
    tenant_id: UUID,
    token: str,
    status: str,
    error_code: str | None,
    state: str,
    eci: str | None,
    shift: bool,
) -> None:
    made = charge(execute, tenant_id, {**LARGE, "payment_instrument_id": token}, f"frictionless-{token}")
    assert (made["status"], made["last_error_code"]) == (status, error_code)
    shown = detail(execute, tenant_id, made["id"])
    assert shown["risk_assessments"][0]["decision"] == "require_3ds"
    auth = shown["authentication"]
    assert (auth["state"], auth["eci"], auth["liability_shift"], auth["performed_by"]) == (state, eci, shift, "engine")
    assert shown["liability_shift"] is shift
    assert sandbox_charges(admin, made["id"]) == (0 if status == "failed" else 1)
    row = admin.execute(
        "select authentication_value_digest, value_used_at from billing.authentications where execution_id = %s",
        [made["id"]],
    ).fetchone()
    assert row is not None
    if state == "succeeded":
        # Only a digest is kept, and the value was spent on this charge.
        assert re.fullmatch(r"[0-9a-f]{64}", row["authentication_value_digest"])
        assert row["value_used_at"] is not None
        used = admin.execute(
            "select outcome, actor from billing_audit.entries where event_type = 'chd.authentication_value_used' "
            "and resource_id = %s",
            [auth["id"]],
        ).fetchall()
        assert [(u["outcome"], u["actor"]) for u in used] == [("granted", "user:user-1")]
    else:
        assert row["authentication_value_digest"] is None


def test_an_unavailable_authentication_fails_the_charge_when_the_tenant_says_so(
    execute: ModuleType, tenant_id: UUID
) -> None:
    from billing.risk.defaults import default_rule_set

    body = default_rule_set().document()
    body["settings"]["on_authentication_unavailable"] = "fail"
    rules(execute, tenant_id, body)
    made = charge(execute, tenant_id, {**LARGE, "payment_instrument_id": "tok_3ds_unavailable"}, "unavailable-fails")
    assert (made["status"], made["last_error_code"]) == ("failed", "authentication_unavailable")


def _form(page: str) -> tuple[str, dict[str, str]]:
    action = unescape(re.search(r'<form[^>]*action="([^"]+)"', page)[1])  # type: ignore[index]
    fields = {
        unescape(n): unescape(v) for n, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }
    return action, fields


def _post_form(three_ds: ModuleType, url: str, fields: dict[str, str]) -> dict[str, Any]:
    event = api_event(
        "POST", urlsplit(url).path, tenant_id=None, body=urlencode(fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    return call(three_ds, event)


@pytest.fixture
def challenged(execute: ModuleType, tenant_id: UUID) -> dict[str, Any]:
    return charge(execute, tenant_id, {**LARGE, "payment_instrument_id": "tok_3ds_challenge"}, "challenge")


def test_a_challenge_waits_with_a_redirect_then_the_right_code_completes_the_charge_with_liability_shift(
    execute: ModuleType, three_ds: ModuleType, admin: Connection, tenant_id: UUID, challenged: dict[str, Any]
) -> None:
    assert (challenged["status"], challenged["awaiting_settlement"]) == ("pending", False)
    action = challenged["next_action"]
    assert action["type"] == "redirect_to_url"
    assert sandbox_charges(admin, challenged["id"]) == 0
    # GET shows the same next action while the customer has not finished.
    assert detail(execute, tenant_id, challenged["id"])["next_action"]["url"] == action["url"]

    start = call(three_ds, api_event("GET", urlsplit(action["url"]).path, tenant_id=None))
    assert start["statusCode"] == 200
    acs_url, fields = _form(start["body"])
    assert set(fields) == {"creq"}
    page = _post_form(three_ds, acs_url, fields)
    assert page["statusCode"] == 200
    assert 'id="code"' in page["body"]
    assert "49.00 EUR" in page["body"]
    code_url = unescape(re.search(r'<form[^>]*action="([^"]+/code)"', page["body"])[1])  # type: ignore[index]

    wrong = _post_form(three_ds, code_url, {"code": "000000"})
    assert re.search(r'id="attempts-left"[^>]*>2<', wrong["body"]), wrong["body"]
    assert detail(execute, tenant_id, challenged["id"])["status"] == "pending"

    done = _post_form(three_ds, code_url, {"code": "123456"})
    notify_url, cres = _form(done["body"])
    assert set(cres) == {"cres"}
    shown = detail(execute, tenant_id, challenged["id"])
    assert shown["status"] == "completed"
    auth = shown["authentication"]
    assert (auth["state"], auth["trans_status"], auth["eci"], auth["liability_shift"]) == ("succeeded", "Y", "05", True)
    assert shown["next_action"] is None
    result = _post_form(three_ds, notify_url, cres)
    assert "Payment completed." in result["body"]
    # The challenge is over: the code page answers that, and nothing changes.
    again = _post_form(three_ds, code_url, {"code": "123456"})
    assert again["statusCode"] == 404
    assert sandbox_charges(admin, challenged["id"]) == 1


def test_three_wrong_codes_fail_the_authentication_and_the_charge_without_reaching_the_provider(
    execute: ModuleType, three_ds: ModuleType, admin: Connection, tenant_id: UUID, challenged: dict[str, Any]
) -> None:
    start = call(three_ds, api_event("GET", urlsplit(challenged["next_action"]["url"]).path, tenant_id=None))
    acs_url, fields = _form(start["body"])
    page = _post_form(three_ds, acs_url, fields)
    code_url = unescape(re.search(r'<form[^>]*action="([^"]+/code)"', page["body"])[1])  # type: ignore[index]
    for _ in range(3):
        last = _post_form(three_ds, code_url, {"code": "999999"})
    assert "cres" in _form(last["body"])[1]
    shown = detail(execute, tenant_id, challenged["id"])
    assert (shown["status"], shown["last_error_code"]) == ("failed", "authentication_failed")
    assert (shown["authentication"]["state"], shown["authentication"]["trans_status"]) == ("failed", "N")
    assert sandbox_charges(admin, challenged["id"]) == 0


def test_cancel_on_the_challenge_page_abandons_the_authentication(
    execute: ModuleType, three_ds: ModuleType, tenant_id: UUID, challenged: dict[str, Any]
) -> None:
    start = call(three_ds, api_event("GET", urlsplit(challenged["next_action"]["url"]).path, tenant_id=None))
    acs_url, fields = _form(start["body"])
    page = _post_form(three_ds, acs_url, fields)
    cancel_url = unescape(re.search(r'<form[^>]*action="([^"]+/cancel)"', page["body"])[1])  # type: ignore[index]
    _post_form(three_ds, cancel_url, {})
    shown = detail(execute, tenant_id, challenged["id"])
    assert (shown["status"], shown["last_error_code"]) == ("failed", "authentication_failed")
    assert shown["authentication"]["trans_status_reason"] == "26"


def test_unknown_challenge_pages_are_404_pages_not_errors(three_ds: ModuleType, tenant_id: UUID) -> None:
    missing = call(three_ds, api_event("GET", f"/api/v1/billing/3ds/{tenant_id}/{tenant_id}/challenge", tenant_id=None))
    assert missing["statusCode"] == 404
    assert _post_form(three_ds, "/api/v1/billing/sandbox-acs/nope/code", {"code": "1"})["statusCode"] == 404
    assert call(three_ds, api_event("GET", "/api/v1/billing/3ds/x/y/challenge", tenant_id=None))["statusCode"] == 404


# --- exemptions ------------------------------------------------------------------------------------------------------


def test_small_charges_are_exempt_until_the_low_value_counter_is_spent_then_authenticated(
    execute: ModuleType, tenant_id: UUID
) -> None:
    small = {**CARD_REQUEST, "amount": 2900, "payment_instrument_id": "tok_3ds"}
    made = [charge(execute, tenant_id, small, f"low-{n}") for n in range(5)]
    auths = [detail(execute, tenant_id, m["id"])["authentication"] for m in made]
    # EUR 29 x 3 = 87 fits under EUR 100; the 4th would make 116: authenticated (frictionless), which resets it.
    assert [a["exemption"] for a in auths] == ["low_value", "low_value", "low_value", None, "low_value"]
    assert [a["state"] for a in auths] == ["exempted", "exempted", "exempted", "succeeded", "exempted"]
    assert [a["liability_shift"] for a in auths] == [False, False, False, True, False]
    # tok_3ds asks for authentication at the provider when none came with the charge: exempted ones wait for it.
    assert [m["status"] for m in made] == ["pending", "pending", "pending", "completed", "pending"]


def test_the_decision_its_exemption_and_the_claim_for_submission_commit_in_one_transaction(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    small = charge(execute, tenant_id, {**CARD_REQUEST, "amount": 1500}, "one-transaction")
    assert small["status"] == "completed"
    rows = admin.execute(
        "select type, new_status, recorded_txid::text as txid from billing.billing_execution_events"
        " where tenant_id = %s and execution_id = %s",
        [tenant_id, small["id"]],
    ).fetchall()
    by_type = {r["type"].removeprefix("billing.execution."): r for r in rows}
    # Nothing between the decision and the claim: another caller sees both or neither.
    decided = {by_type[t]["txid"] for t in ("risk_assessed", "authenticated", "processing")}
    assert len(decided) == 1
    assert decided.isdisjoint({by_type["pending"]["txid"], by_type["completed"]["txid"]})


def test_a_merchant_initiated_renewal_skips_3ds_and_customer_velocity_but_is_counted(
    execute: ModuleType, tenant_id: UUID
) -> None:
    renewal = {**LARGE, "metadata": {"initiator": "merchant"}, "payment_instrument_id": "tok_3ds_challenge"}
    made = charge(execute, tenant_id, renewal, "mit-1")
    assert made["status"] == "completed"
    shown = detail(execute, tenant_id, made["id"])
    assert shown["risk_assessments"][0]["decision"] == "allow"
    assert (shown["authentication"]["exemption"], shown["liability_shift"]) == ("merchant_initiated", False)
    customer = charge(execute, tenant_id, {**renewal, "metadata": {}, "payment_instrument_id": "tok_3ds"}, "cit-1")
    facts = detail(execute, tenant_id, customer["id"])["risk_assessments"][0]
    assert facts["decision"] == "require_3ds"


def test_the_transaction_risk_analysis_exemption_applies_below_the_tenants_score_and_ceiling(
    execute: ModuleType, tenant_id: UUID
) -> None:
    from billing.risk.defaults import default_rule_set

    body = default_rule_set().document()
    body["settings"]["tra_score_threshold"] = 10
    rules(execute, tenant_id, body)
    made = charge(execute, tenant_id, {**LARGE, "payment_instrument_id": "tok_3ds_challenge"}, "tra-1")
    assert made["status"] == "completed"
    auth = detail(execute, tenant_id, made["id"])["authentication"]
    assert (auth["exemption"], auth["liability_shift"]) == ("transaction_risk_analysis", False)
    above = charge(
        execute, tenant_id, {**LARGE, "amount": 20000, "payment_instrument_id": "tok_3ds_challenge"}, "tra-2"
    )
    assert above["next_action"]["type"] == "redirect_to_url"


# --- deadlines -------------------------------------------------------------------------------------------------------


def test_an_abandoned_challenge_expires_and_ends_the_charge_then_a_late_code_changes_nothing(
    execute: ModuleType,
    three_ds: ModuleType,
    admin: Connection,
    worker: Connection,
    tenant_id: UUID,
    challenged: dict[str, Any],
) -> None:
    start = call(three_ds, api_event("GET", urlsplit(challenged["next_action"]["url"]).path, tenant_id=None))
    acs_url, fields = _form(start["body"])
    page = _post_form(three_ds, acs_url, fields)
    code_url = unescape(re.search(r'<form[^>]*action="([^"]+/code)"', page["body"])[1])  # type: ignore[index]
    # The customer walked away: the sweep runs as if eleven minutes had passed (the challenge allows ten).
    later = datetime.now(UTC) + timedelta(minutes=11)
    assert PreSubmissionSweep(worker).run().authentications_expired == 0  # not yet
    result = PreSubmissionSweep(worker).run(as_of=later)
    assert result.authentications_expired >= 1
    shown = detail(execute, tenant_id, challenged["id"])
    assert (shown["status"], shown["last_error_code"]) == ("failed", "authentication_expired")
    assert (shown["authentication"]["state"], shown["authentication"]["liability_shift"]) == ("expired", False)
    assert _post_form(three_ds, code_url, {"code": "123456"})["statusCode"] == 404
    assert sandbox_charges(admin, challenged["id"]) == 0
    # A second sweep finds nothing more to end.
    assert PreSubmissionSweep(worker).run(as_of=later).authentications_expired == 0


def test_a_review_nobody_decides_expires_and_the_charge_is_refused_never_sent_unreviewed(
    execute: ModuleType, admin: Connection, worker: Connection, tenant_id: UUID
) -> None:
    rules(execute, tenant_id, {"rules": [review_rule(1000)], "settings": {"review_timeout_minutes": 30}})
    held = charge(execute, tenant_id, CARD_REQUEST, "review-expires")
    sweep = PreSubmissionSweep(worker)
    assert sweep.run(as_of=datetime.now(UTC) + timedelta(minutes=20)).reviews_expired == 0  # 30 minutes not over
    assert sweep.run(as_of=datetime.now(UTC) + timedelta(minutes=31)).reviews_expired == 1
    shown = detail(execute, tenant_id, held["id"])
    assert (shown["status"], shown["last_error_code"]) == ("failed", "risk_review_expired")
    assert (shown["review"]["decision"], shown["review"]["decided_by"]) == ("expired", "billing-system")
    assert sandbox_charges(admin, held["id"]) == 0


def test_the_database_keeps_an_authentication_moving_forward_and_its_value_used_once(
    execute: ModuleType, conn: Connection, tenant_id: UUID
) -> None:
    made = charge(execute, tenant_id, {**LARGE, "payment_instrument_id": "tok_3ds"}, "guarded-auth")
    auth_id = detail(execute, tenant_id, made["id"])["authentication"]["id"]
    refused = [
        "update billing.authentications set state = 'started', finished_at = null where id = %s",
        "update billing.authentications set value_used_at = now() where id = %s",
        "update billing.authentications set eci = '07' where id = %s",
        "update billing.authentications set liability_shift = false where id = %s",
        "delete from billing.authentications where id = %s",
    ]
    for statement in refused:
        with pytest.raises(psycopg.Error) as raised, tenant_transaction(conn, tenant_id):
            conn.execute(statement, [auth_id])
        assert raised.value.sqlstate in ("BE020", "BE005", "42501"), statement
    row = conn.execute("select 1")  # the connection is still usable
    assert row.fetchone() is not None


def race(tenant_id: UUID, request: ExecutionRequest, keys: list[str]) -> list[Execution]:
    """One submission per key, on one instrument, from eight warm containers with a connection each.

    They race below the API resolver: Powertools keeps the current event on a class attribute (one invocation per
    process in Lambda), so resolvers of several containers in one process would read each other's requests."""
    handlers = [load_handler("execute", instance=str(n)) for n in range(8)]
    bodies = [(handlers[n % len(handlers)], key) for n, key in enumerate(keys)]
    owners: dict[int, threading.Lock] = {id(h): threading.Lock() for h in handlers}

    def submit(item: tuple[ModuleType, str]) -> Execution:
        handler, key = item
        # One request at a time per container, as Lambda runs them.
        with owners[id(handler)]:
            outcome: CreateOutcome = handler.runtime.execution_service().execute(
                tenant_id, request, idempotency_key=key, payment_provider=None, correlation_id=key,
                context=WorkflowWriteContext.user("race"), signals=NO_SIGNALS,
            )  # fmt: skip
        return outcome.execution

    with ThreadPoolExecutor(max_workers=len(handlers)) as pool:
        return list(pool.map(submit, bodies))


def test_twenty_parallel_submissions_on_one_card_let_exactly_five_through(aws: dict[str, str], tenant_id: UUID) -> None:
    # The advisory lock per key makes each assessment count every one committed before it, so no two can both slip
    # under the limit of five.
    request = ExecutionRequest.model_validate({**CARD_REQUEST, "amount": 500})
    executions = race(tenant_id, request, [f"race-{n}" for n in range(20)])
    assert len({e.id for e in executions}) == 20
    outcomes = sorted((e.status.value, e.last_error_code) for e in executions)
    assert outcomes == sorted([("completed", None)] * 5 + [("failed", "risk_blocked")] * 15)


def test_parallel_small_charges_on_one_card_take_the_low_value_counter_exactly_once_each(
    aws: dict[str, str], admin: Connection, tenant_id: UUID
) -> None:
    # The counter is read under the instrument's lock, in the assessment's first round trip: five charges of EUR 29
    # at once, and only three fit under the EUR 100 the low-value exemption allows since the last authentication.
    # The card's ACS challenges, and nobody answers, so no authentication succeeds and resets the counter meanwhile.
    body = {**CARD_REQUEST, "amount": 2900, "payment_instrument_id": "tok_3ds_challenge"}
    executions = race(tenant_id, ExecutionRequest.model_validate(body), [f"small-{n}" for n in range(5)])
    rows = admin.execute(
        "select exemption, state from billing.authentications where tenant_id = %s and execution_id = any(%s)",
        [tenant_id, [e.id for e in executions]],
    ).fetchall()
    assert sorted((row["exemption"] or "", row["state"]) for row in rows) == sorted(
        [("low_value", "exempted")] * 3 + [("", "challenge_required")] * 2
    )
