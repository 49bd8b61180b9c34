"""The settlement_api handler as Lambda runs it, as billing_finance behind the `finance` scope: reports and their
discrepancies, platform-wide whatever tenant the token names; one resolution per discrepancy, audited; problems
with stable codes for everything else."""

from __future__ import annotations

from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing import resource_names as names
from billing.db.connection import Connection
from billing.db.roles import DatabaseRole, login_url
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.store import RESOLVED_ACTION, SettlementReportStore
from tests.integration.settlement_store_rig import DAY, discrepancy_of, file_read, summary_of, worker
from tests.lambda_harness import api_event, call, header, load_handler, response_json, set_function_environment

__all__ = ["worker"]  # a fixture, imported for the tests below

REPORTS = f"{names.API_BASE_PATH}/settlement-reports"
PROBLEM = "application/problem+json"


@pytest.fixture
def settlement_api(monkeypatch: pytest.MonkeyPatch, private_admin_url: str) -> ModuleType:
    url = login_url(private_admin_url, DatabaseRole.FINANCE)
    set_function_environment(monkeypatch, names.FunctionName.SETTLEMENT_API, {"DATABASE_URL": url})
    return load_handler("settlement_api")


@pytest.fixture
def seeded(worker: Connection) -> dict[str, Any]:
    """Two reports of one adyen day (the second, after a late file, current) and a stripe one; the current adyen
    report has discrepancies of two tenants."""
    store = SettlementReportStore()
    tenant, other = uuid4(), uuid4()
    first = summary_of("adyen")
    store.save(worker, first, [discrepancy_of(first, 2, tenant_id=tenant)])
    current = summary_of("adyen", files=(*first.files, file_read("adyen", DAY)))
    items = [
        discrepancy_of(current, 2, tenant_id=tenant),
        discrepancy_of(current, 3, DiscrepancyClass.MISSING_INTERNALLY),
        discrepancy_of(current, 4, DiscrepancyClass.PAYOUT_MISMATCH, tenant_id=other, record_kind="payout"),
        discrepancy_of(current, 5, DiscrepancyClass.FEE_OUT_OF_RANGE, tenant_id=other),
    ]
    store.save(worker, current, items)
    stripe = summary_of("stripe")
    store.save(worker, stripe, [])
    return {"first": first, "current": current, "stripe": stripe, "items": items, "tenant": tenant, "other": other}


def _call(
    handler: ModuleType,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    scopes: str = "finance",
    tenant: UUID | None = None,
) -> dict[str, Any]:
    event = api_event(method, path, tenant_id=tenant or uuid4(), query=query, body=body, subject="fin-ann")
    event["requestContext"]["authorizer"]["scopes"] = scopes
    return call(handler, event)


def _resolve_path(report: UUID, discrepancy: UUID | str) -> str:
    return f"{REPORTS}/{report}/discrepancies/{discrepancy}/resolve"


def _audit_count(admin: Connection, **where: str) -> int:
    clause = " and ".join(f"{column} = %({column})s" for column in where)
    row = admin.execute(f"select count(*) as n from billing_audit.entries where {clause}", where).fetchone()
    assert row is not None
    return int(row["n"])


def test_reports_list_newest_first_with_filters_and_a_cursor(
    seeded: dict[str, Any], settlement_api: ModuleType
) -> None:
    everything = _call(settlement_api, "GET", REPORTS)
    assert everything["statusCode"] == 200
    assert header(everything, "X-Correlation-Id")
    ids = [item["id"] for item in response_json(everything)["items"]]
    assert ids == [str(seeded[k].report_id) for k in ("stripe", "current", "first")]

    current = response_json(_call(settlement_api, "GET", REPORTS, query={"provider": "adyen", "current": "true"}))
    (report,) = current["items"]
    assert report["id"] == str(seeded["current"].report_id)
    assert report["supersedes"] == str(seeded["first"].report_id)
    assert report["current"] is True
    assert report["period"] == {"start": "2026-04-10", "end": "2026-04-11"}
    assert report["counts"]["amount_mismatch"] == 1
    none = _call(settlement_api, "GET", REPORTS, query={"period_from": "2026-04-11", "period_to": "2026-04-12"})
    assert response_json(none)["items"] == []

    first = response_json(_call(settlement_api, "GET", REPORTS, query={"limit": "2"}))
    assert len(first["items"]) == 2
    rest = response_json(_call(settlement_api, "GET", REPORTS, query={"limit": "2", "cursor": first["next_cursor"]}))
    assert [i["id"] for i in first["items"] + rest["items"]] == ids
    assert rest["next_cursor"] is None


def test_a_report_is_read_whole_with_its_unresolved_count(seeded: dict[str, Any], settlement_api: ModuleType) -> None:
    answer = _call(settlement_api, "GET", f"{REPORTS}/{seeded['current'].report_id}")
    assert answer["statusCode"] == 200
    report = response_json(answer)
    assert report["summary"] == seeded["current"].as_dict() | {"supersedes": str(seeded["first"].report_id)}
    assert report["unresolved_count"] == 4
    old = response_json(_call(settlement_api, "GET", f"{REPORTS}/{seeded['first'].report_id}"))
    assert (old["current"], old["superseded_by"]) == (False, str(seeded["current"].report_id))


def test_reports_are_platform_wide_whatever_tenant_the_token_names(
    seeded: dict[str, Any], settlement_api: ModuleType
) -> None:
    path = f"{REPORTS}/{seeded['current'].report_id}/discrepancies"
    for tenant in (seeded["tenant"], uuid4()):
        items = response_json(_call(settlement_api, "GET", path, tenant=tenant))["items"]
        assert len(items) == 4
        assert {i["tenant_id"] for i in items} == {str(seeded["tenant"]), str(seeded["other"]), None}


def test_discrepancies_filter_by_class_resolution_and_tenant_and_page_with_a_cursor(
    seeded: dict[str, Any], settlement_api: ModuleType
) -> None:
    report = seeded["current"].report_id
    path = f"{REPORTS}/{report}/discrepancies"
    items = seeded["items"]
    _call(settlement_api, "POST", _resolve_path(report, items[1].id), body={"note": "charged outside the engine"})

    def ids(**query: str) -> list[str]:
        answer = _call(settlement_api, "GET", path, query=query)
        assert answer["statusCode"] == 200, answer
        return [item["id"] for item in response_json(answer)["items"]]

    assert ids(**{"class": "payout_mismatch"}) == [str(items[2].id)]
    assert ids(resolved="true") == [str(items[1].id)]
    assert set(ids(resolved="false")) == {str(items[n].id) for n in (0, 2, 3)}
    assert set(ids(tenant_id=str(seeded["other"]))) == {str(items[2].id), str(items[3].id)}

    page = response_json(_call(settlement_api, "GET", path, query={"limit": "3"}))
    rest = response_json(_call(settlement_api, "GET", path, query={"limit": "3", "cursor": page["next_cursor"]}))
    listed = page["items"] + rest["items"]
    assert {i["id"] for i in listed} == {str(item.id) for item in items}
    assert [i["class"] for i in listed] == sorted(i["class"] for i in listed)
    assert rest["next_cursor"] is None
    resolved = next(i for i in listed if i["id"] == str(items[1].id))
    assert resolved["resolved"] is True
    assert resolved["resolution"]["resolved_by"] == "user:fin-ann"
    assert resolved["resolution"]["note"] == "charged outside the engine"


def test_a_discrepancy_is_resolved_once_and_audited(
    seeded: dict[str, Any], settlement_api: ModuleType, private_admin: Connection
) -> None:
    report, item = seeded["current"].report_id, seeded["items"][0]

    answer = _call(settlement_api, "POST", _resolve_path(report, item.id), body={"note": "agreed partial capture"})

    assert answer["statusCode"] == 200
    resolved = response_json(answer)
    assert (resolved["id"], resolved["resolved"]) == (str(item.id), True)
    assert resolved["resolution"]["note"] == "agreed partial capture"
    assert _audit_count(private_admin, purpose=RESOLVED_ACTION, resource_id=str(item.id), actor="user:fin-ann") == 1

    again = _call(settlement_api, "POST", _resolve_path(report, item.id), body={"note": "second opinion"})

    assert again["statusCode"] == 409
    assert header(again, "Content-Type") == PROBLEM
    assert response_json(again)["code"] == "settlement_discrepancy_resolved_already"
    assert _audit_count(private_admin, purpose=RESOLVED_ACTION) == 1


def test_a_card_number_in_the_note_is_refused_and_nothing_is_written(
    seeded: dict[str, Any], settlement_api: ModuleType, private_admin: Connection
) -> None:
    report, item = seeded["current"].report_id, seeded["items"][0]

    answer = _call(settlement_api, "POST", _resolve_path(report, item.id), body={"note": "refund to 4111111111111111"})

    assert answer["statusCode"] == 422
    assert response_json(answer)["code"] == "card_data_refused"
    assert "4111" not in answer["body"]
    row = private_admin.execute(
        "select resolved_at from billing.settlement_discrepancies where id = %s", [item.id]
    ).fetchone()
    assert row == {"resolved_at": None}
    assert _audit_count(private_admin, purpose=RESOLVED_ACTION) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "validation_failed"),
        ({"note": ""}, "validation_failed"),
        ({"note": "   "}, "validation_failed"),
        ({"note": "x" * 1001}, "validation_failed"),
        ({"note": 42}, "validation_failed"),
        ({"note": "fine", "resolved_by": "someone else"}, "validation_failed"),
        ("not json", "malformed_request"),
    ],
)
def test_a_bad_resolve_body_is_a_problem_and_nothing_is_written(
    seeded: dict[str, Any], settlement_api: ModuleType, private_admin: Connection, body: Any, code: str
) -> None:
    report, item = seeded["current"].report_id, seeded["items"][0]
    answer = _call(settlement_api, "POST", _resolve_path(report, item.id), body=body)
    assert answer["statusCode"] == (400 if code == "malformed_request" else 422)
    assert header(answer, "Content-Type") == PROBLEM
    assert response_json(answer)["code"] == code
    assert _audit_count(private_admin, purpose=RESOLVED_ACTION) == 0


@pytest.mark.parametrize(
    ("path", "query", "status", "code"),
    [
        ("{unknown}", {}, 404, "settlement_report_not_found"),
        ("not-a-uuid", {}, 404, "settlement_report_not_found"),
        ("{unknown}/discrepancies", {}, 404, "settlement_report_not_found"),
        ("{report}/discrepancies", {"class": "matched"}, 422, "validation_failed"),
        ("{report}/discrepancies", {"class": "made_up"}, 422, "validation_failed"),
        ("{report}/discrepancies", {"tenant_id": "not-a-uuid"}, 422, "validation_failed"),
        ("{report}/discrepancies", {"cursor": "not-a-cursor"}, 400, "malformed_request"),
        ("{report}/discrepancies", {"limit": "501"}, 422, "validation_failed"),
        ("", {"period_from": "2026-4-1"}, 422, "validation_failed"),
        ("", {"period_from": "1712750400"}, 422, "validation_failed"),
        ("", {"provider": "Adyen!"}, 422, "validation_failed"),
        ("", {"limit": "0"}, 422, "validation_failed"),
        ("", {"cursor": "garbage"}, 400, "malformed_request"),
        ("{report}/elsewhere", {}, 404, "settlement_report_not_found"),
    ],
)
def test_bad_reads_are_problems(
    seeded: dict[str, Any], settlement_api: ModuleType, path: str, query: dict[str, str], status: int, code: str
) -> None:
    path = path.format(unknown=uuid4(), report=seeded["current"].report_id)
    answer = _call(settlement_api, "GET", f"{REPORTS}/{path}".rstrip("/"), query=query)
    assert answer["statusCode"] == status, answer
    assert header(answer, "Content-Type") == PROBLEM
    assert response_json(answer)["code"] == code


def test_resolving_an_unknown_discrepancy_is_404(seeded: dict[str, Any], settlement_api: ModuleType) -> None:
    report = seeded["current"].report_id
    for discrepancy in (uuid4(), "not-a-uuid"):
        answer = _call(settlement_api, "POST", _resolve_path(report, discrepancy), body={"note": "n/a"})
        assert answer["statusCode"] == 404
        assert response_json(answer)["code"] == "settlement_discrepancy_not_found"
    # a discrepancy is found only under its own report
    elsewhere = _call(settlement_api, "POST", _resolve_path(uuid4(), seeded["items"][0].id), body={"note": "n/a"})
    assert response_json(elsewhere)["code"] == "settlement_discrepancy_not_found"


@pytest.mark.parametrize("scopes", ["", "auditor", "finance-ish", "billing:read"])
def test_without_the_finance_scope_every_route_is_403_recorded_and_nothing_is_resolved(
    seeded: dict[str, Any], settlement_api: ModuleType, private_admin: Connection, scopes: str
) -> None:
    report, item = seeded["current"].report_id, seeded["items"][0]
    calls = [
        ("GET", REPORTS, None),
        ("GET", f"{REPORTS}/{report}", None),
        ("GET", f"{REPORTS}/{report}/discrepancies", None),
        ("POST", _resolve_path(report, item.id), {"note": "let me"}),
    ]
    for method, path, body in calls:
        answer = _call(settlement_api, method, path, body=body, scopes=scopes)
        assert answer["statusCode"] == 403
        assert header(answer, "Content-Type") == PROBLEM
        assert response_json(answer)["code"] == "insufficient_scope"
    assert _audit_count(private_admin, event_type="auth.failed", purpose="insufficient_scope") == 4
    assert _audit_count(private_admin, purpose=RESOLVED_ACTION) == 0
