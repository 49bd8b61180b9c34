"""The settlement reports API end to end on the local stack: a report the settlement function's role saved is read
and resolved over HTTP with a finance token; a token without the finance scope (or no token) is refused."""

from __future__ import annotations

from uuid import uuid4

import pytest

from billing import resource_names as names
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token
from billing.db.connection import connect
from billing.db.roles import DatabaseRole, login_url
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.store import SettlementReportStore
from tests.e2e.conftest import LocalApi
from tests.integration.settlement_store_rig import discrepancy_of, summary_of

REPORTS = f"{names.API_BASE_PATH}/settlement-reports"
pytestmark = pytest.mark.e2e


def test_finance_reads_a_saved_report_and_resolves_a_discrepancy_once(local_stack: LocalApi, admin_db_url: str) -> None:
    provider = f"e2e-{uuid4().hex[:12]}"  # the shared database holds other tests' reports
    summary = summary_of(provider)
    item = discrepancy_of(summary, 2, DiscrepancyClass.MISSING_INTERNALLY)
    with connect(login_url(admin_db_url, DatabaseRole.WORKER)) as worker:
        assert SettlementReportStore().save(worker, summary, [item]).created
    # Any tenant's token will do: reports are platform-wide, the scope is the gate.
    token = issue_token(LOCAL_TOKEN_SETTINGS, uuid4(), "fin-e2e", scopes=[names.FINANCE_SCOPE])

    listed = local_stack.request("GET", f"{REPORTS}?provider={provider}", token=token)
    assert listed.status == 200, listed.text
    assert [r["id"] for r in listed.json()["items"]] == [str(summary.report_id)]
    report = local_stack.request("GET", f"{REPORTS}/{summary.report_id}", token=token)
    assert report.json()["unresolved_count"] == 1
    page = local_stack.request("GET", f"{REPORTS}/{summary.report_id}/discrepancies?resolved=false", token=token)
    assert [d["id"] for d in page.json()["items"]] == [str(item.id)]

    resolve = f"{REPORTS}/{summary.report_id}/discrepancies/{item.id}/resolve"
    resolved = local_stack.request("POST", resolve, json={"note": "a manual charge at the provider"}, token=token)
    assert resolved.status == 200, resolved.text
    assert resolved.json()["resolution"]["resolved_by"] == "user:fin-e2e"
    again = local_stack.request("POST", resolve, json={"note": "again"}, token=token)
    assert again.status == 409
    assert again.json()["code"] == "settlement_discrepancy_resolved_already"


def test_without_the_finance_scope_or_a_token_the_reports_are_refused(local_stack: LocalApi) -> None:
    no_scope = local_stack.request("GET", REPORTS, token=local_stack.token())
    assert no_scope.status == 403
    assert no_scope.json()["code"] == "insufficient_scope"
    assert local_stack.request("GET", REPORTS).status == 401
