"""Settlement reports in PostgreSQL: saved once per report id (billing_worker, COPY in batches, one transaction),
superseded by a later file set, read and resolved once by billing_finance with an audit entry; and the database
holding those rules against raw SQL of both roles (BE021, BE005, BE013, and the grants)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.types.json import Jsonb

from billing.db.connection import Connection, connect
from billing.db.roles import LOGIN_USERS, RUNTIME_ROLES, DatabaseRole, login_url
from billing.db.sqlstates import GuardState
from billing.domain.errors import (
    CardDataRefused,
    SettlementDiscrepancyNotFound,
    SettlementDiscrepancyResolvedAlready,
    SettlementReportNotFound,
    ValidationFailed,
)
from billing.settlement.outcome import DISCREPANCY_CLASSES, DiscrepancyClass, ReportSummary
from billing.settlement.store import (
    COPY_BATCH_SIZE,
    MAX_NOTE_LENGTH,
    RESOLVED_ACTION,
    DiscrepancyQuery,
    ReportQuery,
    SaveOutcome,
    SettlementReportStore,
)
from tests.integration.settlement_store_rig import DAY, discrepancy_of, file_read, finance, summary_of, worker

__all__ = ["finance", "worker"]  # fixtures, imported for the tests below

DENIED = "42501"  # insufficient_privilege
BE021 = GuardState.SETTLEMENT_RECORD_CHANGE
STORE = SettlementReportStore()


def _count(admin: Connection, table: str, report_id: UUID) -> int:
    column = "id" if table == "settlement_reports" else "report_id"
    row = admin.execute(f"select count(*) as n from billing.{table} where {column} = %s", [report_id]).fetchone()
    assert row is not None
    return int(row["n"])


def _refusal(conn: Connection, statement: str, params: Any = ()) -> str:
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(statement, params)
    assert caught.value.sqlstate is not None
    return caught.value.sqlstate


def _as_owner(admin: Connection, statement: str, params: Any = ()) -> str:
    """The SQLSTATE refusing `statement` run by the owner itself: the triggers hold for the migrations' role too."""
    with pytest.raises(psycopg.Error) as caught, admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute(statement, params)
    assert caught.value.sqlstate is not None
    return caught.value.sqlstate


@pytest.fixture
def saved(worker: Connection) -> dict[str, Any]:
    """One report with three discrepancies of two tenants and one without a tenant."""
    tenant, other = uuid4(), uuid4()
    summary = summary_of()
    items = [
        discrepancy_of(summary, 2, tenant_id=tenant),
        discrepancy_of(summary, 3, DiscrepancyClass.MISSING_INTERNALLY, tenant_id=None),
        discrepancy_of(summary, 4, DiscrepancyClass.PAYOUT_MISMATCH, tenant_id=other, record_kind="payout"),
    ]
    outcome = STORE.save(worker, summary, items)
    return {"summary": summary, "items": items, "tenant": tenant, "other": other, "outcome": outcome}


# --- save -------------------------------------------------------------------------------------------------------


def test_save_keeps_the_report_and_every_discrepancy_for_finance_to_read(
    saved: dict[str, Any], finance: Connection
) -> None:
    summary = saved["summary"]
    assert saved["outcome"] == SaveOutcome(created=True, superseded=None)

    report = STORE.get_report(finance, summary.report_id)

    assert report.summary == summary.as_dict()
    assert (report.provider, report.period_start, report.period_end) == ("adyen", DAY, date(2026, 4, 11))
    assert report.current
    assert report.supersedes is None
    assert report.discrepancy_count == summary.discrepancy_count == 1
    assert report.unresolved_count == 3
    page, more = STORE.discrepancies(finance, DiscrepancyQuery(summary.report_id))
    assert not more
    assert {item.id for item in page} == {item.id for item in saved["items"]}
    by_id = {item.id: item for item in page}
    for expected in saved["items"]:
        stored = by_id[expected.id]
        assert stored.discrepancy == expected
        assert stored.resolution is None
        assert stored.as_dict() | {"resolved": None, "resolution": None, "report_id": None} == expected.as_dict() | {
            "resolved": None, "resolution": None, "report_id": None,
        }  # fmt: skip


def test_the_worker_finds_a_saved_report_without_reading_discrepancies(
    saved: dict[str, Any], worker: Connection
) -> None:
    found = STORE.find_report(worker, saved["summary"].report_id)
    assert found is not None
    assert found.summary == saved["summary"].as_dict()
    assert found.unresolved_count is None
    assert STORE.find_report(worker, uuid4()) is None


def test_saving_the_same_files_again_writes_nothing(
    saved: dict[str, Any], worker: Connection, private_admin: Connection
) -> None:
    summary = saved["summary"]
    rerun = [discrepancy_of(summary, n) for n in range(10, 20)]  # whatever the re-run found, it is the same report

    assert STORE.save(worker, summary, rerun) == SaveOutcome(created=False, superseded=None)

    assert _count(private_admin, "settlement_reports", summary.report_id) == 1
    assert _count(private_admin, "settlement_discrepancies", summary.report_id) == 3


def test_a_late_file_gives_a_report_that_supersedes_the_current_one(
    saved: dict[str, Any], worker: Connection, finance: Connection
) -> None:
    first = saved["summary"]
    late = summary_of(files=(*first.files, file_read("adyen", DAY, records=1)))
    assert late.report_id != first.report_id

    outcome = STORE.save(worker, late, [discrepancy_of(late, 2)])

    assert outcome == SaveOutcome(created=True, superseded=first.report_id)
    old, new = STORE.get_report(finance, first.report_id), STORE.get_report(finance, late.report_id)
    assert (old.current, old.superseded_by) == (False, late.report_id)
    assert (new.current, new.supersedes) == (True, first.report_id)
    assert new.summary is not None
    assert new.summary["supersedes"] == str(first.report_id)
    current, _ = STORE.list_reports(finance, ReportQuery(provider="adyen", current_only=True))
    assert [r.id for r in current] == [late.report_id]
    # and a third supersedes the second, never the first again
    third = summary_of(files=(file_read("adyen", DAY, records=9),))
    assert STORE.save(worker, third, []).superseded == late.report_id


def test_reports_of_other_providers_or_periods_supersede_nothing(saved: dict[str, Any], worker: Connection) -> None:
    assert STORE.save(worker, summary_of("stripe"), []).superseded is None
    assert STORE.save(worker, summary_of(start=date(2026, 4, 11)), []).superseded is None
    weekly = summary_of(start=date(2026, 4, 6), end=date(2026, 4, 13))
    assert STORE.save(worker, weekly, []).superseded is None


def test_many_discrepancies_stream_in_with_copy_batches(worker: Connection, private_admin: Connection) -> None:
    summary = summary_of(counts={DiscrepancyClass.DUPLICATE_IN_FILE: 2 * COPY_BATCH_SIZE + 7})
    pulled = 0

    def found() -> Iterator[Any]:
        nonlocal pulled
        for line in range(2, 2 * COPY_BATCH_SIZE + 9):
            pulled += 1
            yield discrepancy_of(summary, line, DiscrepancyClass.DUPLICATE_IN_FILE, tenant_id=uuid4())

    assert STORE.save(worker, summary, found()).created

    assert pulled == 2 * COPY_BATCH_SIZE + 7
    assert _count(private_admin, "settlement_discrepancies", summary.report_id) == pulled
    row = private_admin.execute(
        "select count(distinct tenant_id) as tenants, min(line_number) as first, max(line_number) as last"
        " from billing.settlement_discrepancies where report_id = %s",
        [summary.report_id],
    ).fetchone()
    assert row == {"tenants": pulled, "first": 2, "last": pulled + 1}


def test_a_save_that_fails_half_way_leaves_nothing_behind(
    worker: Connection, private_admin: Connection, saved: dict[str, Any]
) -> None:
    late = summary_of(files=(file_read("adyen", DAY),))
    items = [discrepancy_of(late, n) for n in range(2, 12)]
    items[7] = discrepancy_of(late, 9, batch="4111 1111 1111 1111")  # refused by the database, in the second batch

    with pytest.raises(CardDataRefused):
        SettlementReportStore(batch_size=4).save(worker, late, items)

    assert _count(private_admin, "settlement_reports", late.report_id) == 0
    assert _count(private_admin, "settlement_discrepancies", late.report_id) == 0
    assert STORE.get_report(private_admin, saved["summary"].report_id).current  # not superseded after all


def test_a_discrepancy_of_another_report_is_refused(worker: Connection, private_admin: Connection) -> None:
    summary = summary_of()
    with pytest.raises(ValueError, match="belongs to report"):
        STORE.save(worker, summary, [discrepancy_of(uuid4(), 2)])
    assert _count(private_admin, "settlement_reports", summary.report_id) == 0


def test_a_card_number_in_a_line_error_of_the_summary_is_refused(worker: Connection) -> None:
    line_error = {
        "source": "s.csv", "line": 7, "field": "Merchant Reference", "reason": "not a reference",
        "shown": "5555555555554444",
    }  # fmt: skip
    with pytest.raises(CardDataRefused):
        STORE.save(worker, summary_of(line_errors=(line_error,), line_error_count=1), [])


# --- reads -------------------------------------------------------------------------------------------------------


def test_reports_filter_by_provider_and_period_and_page_newest_first(worker: Connection, finance: Connection) -> None:
    days = [date(2026, 4, d) for d in range(1, 6)]
    daily = {day: summary_of("adyen", day) for day in days}
    for summary in daily.values():
        STORE.save(worker, summary, [])
    stripe = summary_of("stripe", days[2])
    STORE.save(worker, stripe, [])
    weekly = summary_of("adyen", date(2026, 3, 30), date(2026, 4, 6))
    STORE.save(worker, weekly, [])

    adyen, more = STORE.list_reports(finance, ReportQuery(provider="adyen", limit=100))
    assert not more
    assert len(adyen) == 6
    assert [(r.created_at, r.id) for r in adyen] == sorted(((r.created_at, r.id) for r in adyen), reverse=True)
    # A period filter keeps the reports that share a day with it: Apr 3's, of both providers, and the week's.
    on_the_third, _ = STORE.list_reports(finance, ReportQuery(period_from=days[2], period_to=days[3]))
    assert {r.id for r in on_the_third} == {daily[days[2]].report_id, stripe.report_id, weekly.report_id}
    stripe_only, _ = STORE.list_reports(finance, ReportQuery(provider="stripe", period_from=days[2]))
    assert [r.id for r in stripe_only] == [stripe.report_id]
    assert STORE.list_reports(finance, ReportQuery(period_from=date(2026, 4, 6))) == ([], False)

    seen: list[UUID] = []
    after = None
    while True:
        page, more = STORE.list_reports(finance, ReportQuery(limit=3, after=after))
        seen += [r.id for r in page]
        if not more:
            break
        after = (page[-1].created_at, page[-1].id)
    assert len(seen) == len(set(seen)) == 7


def test_discrepancies_filter_by_class_resolution_and_tenant_and_page_with_a_cursor(
    saved: dict[str, Any], finance: Connection
) -> None:
    report_id = saved["summary"].report_id
    items = {item.line_number: item for item in saved["items"]}
    STORE.resolve(finance, report_id, items[3].id, actor="user:fin-1", note="charged outside the engine")

    def ids(**filters: Any) -> set[UUID]:
        page, _ = STORE.discrepancies(finance, DiscrepancyQuery(report_id, **filters))
        return {item.id for item in page}

    assert ids(discrepancy_class=DiscrepancyClass.PAYOUT_MISMATCH) == {items[4].id}
    assert ids(resolved=True) == {items[3].id}
    assert ids(resolved=False) == {items[2].id, items[4].id}
    assert ids(tenant_id=saved["tenant"]) == {items[2].id}
    assert ids(tenant_id=uuid4()) == set()

    first, more = STORE.discrepancies(finance, DiscrepancyQuery(report_id, limit=2))
    assert more
    last = first[-1]
    rest, more = STORE.discrepancies(
        finance, DiscrepancyQuery(report_id, limit=2, after=(last.discrepancy.discrepancy_class, last.id))
    )
    assert not more
    assert [i.discrepancy.discrepancy_class.value for i in first + rest] == sorted(
        i.discrepancy.discrepancy_class.value for i in first + rest
    )
    assert {i.id for i in first + rest} == {item.id for item in saved["items"]}


def test_unknown_reports_and_discrepancies_are_not_found(saved: dict[str, Any], finance: Connection) -> None:
    with pytest.raises(SettlementReportNotFound):
        STORE.get_report(finance, uuid4())
    with pytest.raises(SettlementReportNotFound):
        STORE.discrepancies(finance, DiscrepancyQuery(uuid4()))
    with pytest.raises(SettlementDiscrepancyNotFound):
        STORE.resolve(finance, saved["summary"].report_id, uuid4(), actor="user:fin-1", note="n/a")
    # a discrepancy is found only under its own report
    with pytest.raises(SettlementDiscrepancyNotFound):
        STORE.resolve(finance, uuid4(), saved["items"][0].id, actor="user:fin-1", note="n/a")


# --- resolve ---------------------------------------------------------------------------------------------------


def test_a_discrepancy_is_resolved_once_with_an_audit_entry(
    saved: dict[str, Any], finance: Connection, private_admin: Connection
) -> None:
    report_id, item = saved["summary"].report_id, saved["items"][0]

    resolved = STORE.resolve(
        finance, report_id, item.id, actor="user:fin-1", note="partial capture agreed with the merchant",
        correlation_id="corr-1", source="203.0.113.9",
    )  # fmt: skip

    assert resolved.resolution is not None
    assert (resolved.resolution.resolved_by, resolved.resolution.note) == (
        "user:fin-1",
        "partial capture agreed with the merchant",
    )
    assert STORE.get_report(finance, report_id).unresolved_count == 2
    entries = private_admin.execute(
        "select event_type, outcome, actor, tenant_id, resource_type, resource_id, purpose, correlation_id, source,"
        " details, database_user from billing_audit.entries where purpose = %s",
        [RESOLVED_ACTION],
    ).fetchall()
    assert entries == [
        {
            "event_type": "admin.operator_action",
            "outcome": "succeeded",
            "actor": "user:fin-1",
            "tenant_id": saved["tenant"],
            "resource_type": "settlement_discrepancy",
            "resource_id": str(item.id),
            "purpose": RESOLVED_ACTION,
            "correlation_id": "corr-1",
            "source": "203.0.113.9",
            "details": {
                "action": RESOLVED_ACTION,
                "report_id": str(report_id),
                "class": "amount_mismatch",
                "note_length": "40",
            },
            "database_user": LOGIN_USERS[DatabaseRole.FINANCE].name,
        }
    ]

    with pytest.raises(SettlementDiscrepancyResolvedAlready):
        STORE.resolve(finance, report_id, item.id, actor="user:fin-2", note="resolved again")

    again = STORE.get_discrepancy(finance, report_id, item.id)
    assert again.resolution == resolved.resolution
    count = private_admin.execute(
        "select count(*) as n from billing_audit.entries where purpose = %s", [RESOLVED_ACTION]
    ).fetchone()
    assert count == {"n": 1}


def test_of_operators_resolving_at_once_exactly_one_wins(
    saved: dict[str, Any], private_admin_url: str, private_admin: Connection
) -> None:
    report_id, item = saved["summary"].report_id, saved["items"][2]
    operators = 6
    start = threading.Barrier(operators)

    def resolve(n: int) -> str:
        with connect(login_url(private_admin_url, DatabaseRole.FINANCE)) as conn:
            start.wait()
            try:
                STORE.resolve(conn, report_id, item.id, actor=f"user:fin-{n}", note=f"operator {n} checked it")
            except SettlementDiscrepancyResolvedAlready:
                return "conflict"
            return "resolved"

    with ThreadPoolExecutor(operators) as pool:
        outcomes = list(pool.map(resolve, range(operators)))

    assert sorted(outcomes) == ["conflict"] * (operators - 1) + ["resolved"]
    count = private_admin.execute(
        "select count(*) as n from billing_audit.entries where purpose = %s and resource_id = %s",
        [RESOLVED_ACTION, str(item.id)],
    ).fetchone()
    assert count == {"n": 1}


@pytest.mark.parametrize("note", ["", "   ", "x" * 1001])
def test_a_resolution_needs_a_note_of_bounded_length(saved: dict[str, Any], finance: Connection, note: str) -> None:
    with pytest.raises(ValidationFailed):
        STORE.resolve(finance, saved["summary"].report_id, saved["items"][0].id, actor="user:fin-1", note=note)


def test_a_card_number_in_the_note_is_refused_by_the_database_and_nothing_is_recorded(
    saved: dict[str, Any], finance: Connection, private_admin: Connection
) -> None:
    report_id, item = saved["summary"].report_id, saved["items"][0]
    with pytest.raises(CardDataRefused):
        STORE.resolve(finance, report_id, item.id, actor="user:fin-1", note="customer card 4111-1111-1111-1111")
    assert STORE.get_discrepancy(finance, report_id, item.id).resolution is None
    count = private_admin.execute(
        "select count(*) as n from billing_audit.entries where purpose = %s", [RESOLVED_ACTION]
    ).fetchone()
    assert count == {"n": 0}


# --- the database's rules, against raw SQL ------------------------------------------------------------------------


def test_the_discrepancy_classes_of_the_schema_are_the_contracts() -> None:
    # (read from the migration: the CHECK is the SQL twin of DISCREPANCY_CLASSES)
    from billing.paths import migrations_dir

    text = (migrations_dir() / "20261216_billing_settlement_reports.sql").read_text()
    check = re.search(r"settlement_discrepancies_class_known check \(class in \((.*?)\)\)", text, re.DOTALL)
    assert check is not None
    assert re.findall(r"'([a-z_]+)'", check[1]) == [c.value for c in DISCREPANCY_CLASSES]


def test_the_note_bound_is_the_same_at_the_api_the_store_and_the_database() -> None:
    from billing.paths import migrations_dir
    from billing.settlement.api import NOTE_MAX_LENGTH

    text = (migrations_dir() / "20261216_billing_settlement_reports.sql").read_text()
    assert f"length(resolution_note) between 1 and {MAX_NOTE_LENGTH})" in text
    assert NOTE_MAX_LENGTH == MAX_NOTE_LENGTH


def test_the_database_refuses_a_class_that_is_no_discrepancy(saved: dict[str, Any], private_admin: Connection) -> None:
    statement = (
        "insert into billing.settlement_discrepancies (id, report_id, class, detail) values (%s, %s, 'matched', 'x')"
    )
    assert _as_owner(private_admin, statement, [uuid4(), saved["summary"].report_id]) == "23514"


_REPORT_COLUMNS = "id, provider, period_start, period_end, generated_at, summary, discrepancy_count, payouts_balance"


def _insert_report(summary: ReportSummary, **extra: UUID) -> tuple[str, list[Any]]:
    """A raw INSERT of `summary` (whose as_dict agrees with its columns), with extra uuid columns."""
    stored = replace(summary, supersedes=extra.get("supersedes"))
    columns = ", ".join([_REPORT_COLUMNS, *extra])
    values = [
        stored.report_id, stored.provider, stored.period_start, stored.period_end, stored.generated_at,
        Jsonb(stored.as_dict()), stored.discrepancy_count, stored.payouts_balance, *extra.values(),
    ]  # fmt: skip
    placeholders = ", ".join(["%s"] * len(values))
    return f"insert into billing.settlement_reports ({columns}) values ({placeholders})", values


def test_a_report_changes_only_to_be_superseded_once_by_its_successor(
    saved: dict[str, Any], worker: Connection, private_admin: Connection
) -> None:
    first = saved["summary"].report_id
    late = summary_of(files=(file_read("adyen", DAY),))
    STORE.save(worker, late, [])
    stray = summary_of("stripe")
    STORE.save(worker, stray, [])
    update = "update billing.settlement_reports set {} where id = %s"

    assert _refusal(worker, update.format("discrepancy_count = 0"), [late.report_id]) == DENIED
    assert _refusal(worker, update.format("summary = '{}'"), [late.report_id]) == DENIED
    # superseded_by: once, and only to the report that names this one in `supersedes`
    assert _refusal(worker, update.format("superseded_by = null"), [first]) == BE021
    assert _refusal(worker, update.format("superseded_by = %s"), [stray.report_id, first]) == BE021
    assert _refusal(worker, update.format("superseded_by = %s"), [stray.report_id, late.report_id]) == BE021
    # the owner cannot rewrite a report either
    assert _as_owner(private_admin, update.format("discrepancy_count = 0"), [first]) == BE021
    assert _as_owner(private_admin, update.format("superseded_by = null"), [first]) == BE021


def test_a_report_is_born_current_naming_only_the_current_report_of_its_period(
    saved: dict[str, Any], worker: Connection, private_admin: Connection
) -> None:
    first = saved["summary"].report_id
    late = summary_of(files=(file_read("adyen", DAY),))
    STORE.save(worker, late, [])  # first is superseded now
    another = summary_of(files=(file_read("adyen", DAY),))

    born_superseded = _insert_report(another, superseded_by=late.report_id)
    assert _refusal(worker, *born_superseded) == DENIED  # no column grant
    assert _as_owner(private_admin, *born_superseded) == BE021
    assert _refusal(worker, *_insert_report(another, supersedes=first)) == BE021  # no longer current
    other_period = summary_of(start=date(2026, 4, 12))
    assert _refusal(worker, *_insert_report(other_period, supersedes=late.report_id)) == BE021


def test_two_current_reports_of_one_provider_and_period_never_commit(saved: dict[str, Any], worker: Connection) -> None:
    # The store serialises savers on a lock; this is the constraint behind it, for any writer that skipped it.
    assert _refusal(worker, *_insert_report(summary_of(files=(file_read("adyen", DAY),)))) == "23P01"  # at commit


def test_nobody_deletes_or_truncates_reports_or_discrepancies(
    saved: dict[str, Any], worker: Connection, finance: Connection, private_admin: Connection
) -> None:
    report_id = saved["summary"].report_id
    for conn in (worker, finance):
        assert (
            _refusal(conn, "delete from billing.settlement_discrepancies where report_id = %s", [report_id]) == DENIED
        )
        assert _refusal(conn, "delete from billing.settlement_reports where id = %s", [report_id]) == DENIED
        assert _refusal(conn, "truncate billing.settlement_discrepancies") == DENIED
    statement = "delete from billing.settlement_discrepancies where report_id = %s"
    assert _as_owner(private_admin, statement, [report_id]) == GuardState.APPEND_ONLY
    statement = "delete from billing.settlement_reports where id = %s"
    assert _as_owner(private_admin, statement, [report_id]) == GuardState.APPEND_ONLY


def test_finance_writes_a_whole_resolution_once_and_nothing_else(
    saved: dict[str, Any], worker: Connection, finance: Connection, private_admin: Connection
) -> None:
    item = saved["items"][0]
    update = "update billing.settlement_discrepancies set {} where id = %s"
    # the worker writes discrepancies and never changes one
    assert _refusal(worker, update.format("resolution_note = 'x'"), [item.id]) == DENIED
    # finance: the three resolution columns only, all three at once
    assert _refusal(finance, update.format("detail = 'rewritten'"), [item.id]) == DENIED
    assert _refusal(finance, update.format("resolution_note = 'why'"), [item.id]) == BE021
    statement = update.format("resolved_at = '2001-01-01', resolved_by = 'user:fin-1', resolution_note = 'why'")
    with finance.transaction():
        stamped = finance.execute(f"{statement} returning resolved_at = now() as now", [item.id]).fetchone()
    assert stamped == {"now": True}  # the database's clock, not the statement's
    again = update.format("resolved_at = now(), resolved_by = 'user:fin-2', resolution_note = 'again'")
    assert _refusal(finance, again, [item.id]) == BE021
    assert _as_owner(private_admin, update.format("resolution_note = 'edited'"), [item.id]) == BE021
    assert _as_owner(private_admin, update.format("detail = 'rewritten'"), [saved["items"][1].id]) == BE021
    # nobody inserts through finance, and a discrepancy is born unresolved whoever inserts it
    insert = "insert into billing.settlement_discrepancies (id, report_id, class, detail{})"
    insert += " values (%s, %s, 'amount_mismatch', 'x'{})"
    params = [uuid4(), saved["summary"].report_id]
    assert _refusal(finance, insert.format("", ""), params) == DENIED
    assert _refusal(worker, insert.format(", resolution_note", ", 'pre-resolved'"), params) == DENIED
    resolved_born = insert.format(", resolved_at, resolved_by, resolution_note", ", now(), 'me', 'pre-resolved'")
    assert _as_owner(private_admin, resolved_born, params) == BE021


def test_a_card_number_never_rests_in_a_discrepancy(
    saved: dict[str, Any], finance: Connection, worker: Connection
) -> None:
    item = saved["items"][1]
    statement = (
        "update billing.settlement_discrepancies set resolved_at = now(), resolved_by = 'user:fin-1',"
        " resolution_note = %s where id = %s"
    )
    for typed in ("4111111111111111", "card 4111 1111 1111 1111 refunded"):
        assert _refusal(finance, statement, [typed, item.id]) == GuardState.CARD_DATA_REFUSED
    later = summary_of("stripe")
    STORE.save(worker, later, [])
    columns = "id, report_id, class, detail, payment_method"
    statement = f"insert into billing.settlement_discrepancies ({columns}) values (%s, %s, 'unmapped_type', 'x', %s)"
    assert (
        _refusal(worker, statement, [uuid4(), later.report_id, "5555 5555 5555 4444"]) == GuardState.CARD_DATA_REFUSED
    )


def test_no_other_role_holds_any_privilege_on_the_settlement_tables(private_admin: Connection) -> None:
    privileges = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
    rows = private_admin.execute(
        "select t.relname as table_name, r as role, p as privilege from pg_class t"
        " join pg_namespace n on n.oid = t.relnamespace cross join unnest(%(roles)s::text[]) r"
        " cross join unnest(%(privileges)s::text[]) p"
        " where n.nspname = 'billing' and t.relname in ('settlement_reports', 'settlement_discrepancies')"
        "   and (has_table_privilege(r, t.oid, p) or (p in ('INSERT', 'UPDATE', 'SELECT')"
        "        and has_any_column_privilege(r, t.oid, p)))",
        {"roles": [role.value for role in RUNTIME_ROLES], "privileges": list(privileges)},
    ).fetchall()
    held = {(row["table_name"], row["role"], row["privilege"]) for row in rows}
    assert held == {
        ("settlement_reports", "billing_worker", "SELECT"),
        ("settlement_reports", "billing_worker", "INSERT"),
        ("settlement_reports", "billing_worker", "UPDATE"),
        ("settlement_discrepancies", "billing_worker", "INSERT"),
        ("settlement_reports", "billing_finance", "SELECT"),
        ("settlement_discrepancies", "billing_finance", "SELECT"),
        ("settlement_discrepancies", "billing_finance", "UPDATE"),
    }
    # and the UPDATEs are column grants: superseded_by; the three resolution columns
    columns = private_admin.execute(
        "select table_name, grantee, column_name from information_schema.column_privileges"
        " where table_schema = 'billing' and table_name like 'settlement_%%' and privilege_type = 'UPDATE'"
        "   and grantee in ('billing_worker', 'billing_finance')"
    ).fetchall()
    assert {(c["table_name"], c["grantee"], c["column_name"]) for c in columns} == {
        ("settlement_reports", "billing_worker", "superseded_by"),
        ("settlement_discrepancies", "billing_finance", "resolved_at"),
        ("settlement_discrepancies", "billing_finance", "resolved_by"),
        ("settlement_discrepancies", "billing_finance", "resolution_note"),
    }


def test_a_stored_summary_names_its_predecessor_as_found_whatever_the_engine_said(
    saved: dict[str, Any], worker: Connection, finance: Connection
) -> None:
    late = replace(summary_of(files=(file_read("adyen", DAY),)), supersedes=uuid4())
    STORE.save(worker, late, [])
    stored = STORE.get_report(finance, late.report_id)
    assert stored.supersedes == saved["summary"].report_id
    assert stored.summary is not None
    assert stored.summary["supersedes"] == str(saved["summary"].report_id)
