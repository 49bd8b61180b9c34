"""The report: counts per class, totals per currency in minor units, JSON and CSV renderings, stable keys."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from billing.domain.status import ExecutionStatus
from billing.settlement.files import FileError, ParsedFile, SettlementLine, SettlementStatus, settlement_file_key
from billing.settlement.matching import InternalRecord, MatchClass, match_settlement
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import CSV_COLUMNS, ReportKeys, SettlementReport, build_report
from tests.unit.settlement.factories import DAY, NOON, PERIOD, line, record

KEY = settlement_file_key("sandbox", DAY)
AFTER_THE_DAY = datetime(2026, 4, 11, 2, tzinfo=UTC)


def report_of(
    lines: list[SettlementLine],
    records: list[InternalRecord],
    *,
    missing: tuple[str, ...] = (),
    errors: tuple[FileError, ...] = (),
    generated_at: datetime = AFTER_THE_DAY,
) -> SettlementReport:
    parsed = ParsedFile("sandbox", DAY, KEY, tuple(lines), errors)
    items = match_settlement(lines, records, period=PERIOD)
    return build_report(
        PERIOD,
        files=[parsed],
        missing_files=missing,
        records=records,
        items=items,
        generated_at=generated_at,
    )


def multi_currency() -> SettlementReport:
    lines = [
        line("sbx_eur1", amount=1999, fee=29, line_number=2),
        line("sbx_eur2", amount=500, status=SettlementStatus.REFUNDED, fee=0, line_number=3),
        line("sbx_jpy", amount=1000, currency="JPY", fee=10, line_number=4),
        line("sbx_kwd", amount=1500, currency="KWD", line_number=5),
        line("sbx_kwd_fail", amount=250, currency="KWD", status=SettlementStatus.FAILED, line_number=6),
        line("sbx_jpy_cb", amount=300, currency="JPY", status=SettlementStatus.CHARGEBACK, line_number=7),
    ]
    records = [
        record("sbx_eur1", amount=1999),
        record("sbx_eur2", amount=500, reversed=True, finished_at=NOON - timedelta(days=30)),
        record("sbx_jpy", amount=1001, currency="JPY"),
        record("sbx_kwd", amount=1500, currency="KWD"),
        record("sbx_kwd_fail", amount=250, currency="KWD", status=ExecutionStatus.FAILED),
        record("sbx_jpy_cb", amount=300, currency="JPY", reversed=True, finished_at=NOON - timedelta(days=60)),
        record("sbx_unlisted", amount=700, currency="KWD"),
    ]
    return report_of(lines, records)


def test_totals_are_integer_minor_units_per_currency_on_both_sides() -> None:
    report = multi_currency()

    eur, jpy, kwd = (report.totals_for(c) for c in ("EUR", "JPY", "KWD"))
    assert [t.currency for t in report.totals] == ["EUR", "JPY", "KWD"]
    assert (eur.provider_paid, eur.provider_refunded, eur.provider_fees, eur.provider_net) == (1999, 500, 29, 1470)
    # The refunded payment finished a month ago: not part of this period's completed total.
    assert (eur.internal_completed, eur.matched, eur.paid_difference) == (1999, 2499, 0)
    assert (jpy.provider_paid, jpy.provider_chargeback, jpy.provider_fees, jpy.provider_net) == (1000, 300, 10, 690)
    assert (jpy.internal_completed, jpy.matched, jpy.paid_difference) == (1001, 300, -1)
    assert (kwd.provider_paid, kwd.provider_failed, kwd.internal_completed, kwd.internal_failed) == (
        1500,
        250,
        2200,
        250,
    )
    assert (kwd.matched, kwd.paid_difference) == (1750, -700)


def test_json_totals_carry_the_exponent_and_a_display_form_beside_the_minor_units() -> None:
    totals = {t["currency"]: t for t in multi_currency().as_dict()["totals"]}

    assert (totals["JPY"]["exponent"], totals["EUR"]["exponent"], totals["KWD"]["exponent"]) == (0, 2, 3)
    assert totals["JPY"]["provider"]["paid"] == {"amount": 1000, "display": "1000 JPY"}
    assert totals["EUR"]["provider"]["net"] == {"amount": 1470, "display": "14.70 EUR"}
    assert totals["KWD"]["internal"]["completed"] == {"amount": 2200, "display": "2.200 KWD"}
    assert totals["KWD"]["paid_difference"] == {"amount": -700, "display": "-0.700 KWD"}


def test_counts_cover_every_class_and_add_up_to_items() -> None:
    report = multi_currency()

    assert report.counts == {
        MatchClass.MISSING_INTERNALLY: 0,
        MatchClass.MISSING_FROM_FILE: 1,
        MatchClass.STATUS_MISMATCH: 0,
        MatchClass.CURRENCY_MISMATCH: 0,
        MatchClass.AMOUNT_MISMATCH: 1,
        MatchClass.DUPLICATE_IN_FILE: 0,
        MatchClass.AMBIGUOUS_REFERENCE: 0,
        MatchClass.MATCHED: 5,
    }
    assert sum(report.counts.values()) == len(report.items) == 7
    assert [d.provider_reference for d in report.discrepancies] == ["sbx_unlisted", "sbx_jpy"]


def test_json_report_holds_period_files_counts_and_each_discrepancy_with_both_sides() -> None:
    report = report_of(
        [line("sbx_a", amount=2000, fee=5)],
        [ours := record("sbx_a", amount=1999)],
        missing=("settlements/adyen/2026-04-10.csv",),
        errors=(FileError(KEY, 9, "amount '1.5' is not an integer of minor units"),),
    )

    body: dict[str, Any] = json.loads(report.to_json())

    assert body["report"] == "settlement_reconciliation"
    assert body["period"] == {"kind": "daily", "start": "2026-04-10", "end": "2026-04-11"}
    assert (body["generated_at"], body["period_closed"], body["complete"]) == ("2026-04-11T02:00:00Z", True, False)
    assert body["files"] == [{"key": KEY, "provider": "sandbox", "day": "2026-04-10", "lines": 1, "errors": 1}]
    assert body["missing_files"] == ["settlements/adyen/2026-04-10.csv"]
    assert body["file_errors"] == [
        {"source": KEY, "line": 9, "message": "amount '1.5' is not an integer of minor units"}
    ]
    assert body["counts"]["amount_mismatch"] == 1
    assert body["discrepancies"] == [
        {
            "class": "amount_mismatch",
            "also": [],
            "provider": "sandbox",
            "provider_reference": "sbx_a",
            "detail": "provider 20.00 EUR, execution 19.99 EUR (difference 0.01 EUR)",
            "file": {"key": KEY, "line": 2},
            "first_listed": None,
            "provider_item": {
                "status": "paid",
                "amount": 2000,
                "currency": "EUR",
                "fee": 5,
                "settled_at": "2026-04-10T12:00:00Z",
            },
            "execution": {
                "tenant_id": str(ours.tenant_id),
                "execution_id": str(ours.execution_id),
                "status": "completed",
                "amount": 1999,
                "currency": "EUR",
                "reversed": False,
                "finished_at": "2026-04-10T12:00:00Z",
            },
        }
    ]


def test_csv_report_is_one_row_per_discrepancy_in_report_order() -> None:
    ours = record("sbx_gone", amount=1500, currency="KWD")
    report = report_of([line("sbx_new", amount=1000, currency="JPY")], [ours])

    rows = list(csv.DictReader(io.StringIO(report.to_csv().decode())))

    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["class"], r["provider_reference"]) for r in rows] == [
        ("missing_internally", "sbx_new"),
        ("missing_from_file", "sbx_gone"),
    ]
    unknown, unlisted = rows
    assert (unknown["provider_amount"], unknown["provider_currency"], unknown["file_line"]) == ("1000", "JPY", "2")
    assert (unknown["execution_id"], unknown["execution_amount"]) == ("", "")
    assert (unlisted["execution_id"], unlisted["execution_amount"], unlisted["execution_currency"]) == (
        str(ours.execution_id),
        "1500",
        "KWD",
    )
    assert (unlisted["file_key"], unlisted["provider_amount"], unlisted["execution_reversed"]) == ("", "", "false")


def test_a_clean_period_has_a_header_only_csv_and_is_complete() -> None:
    report = report_of([line("sbx_a")], [record("sbx_a")])

    assert report.to_csv().decode() == ",".join(CSV_COLUMNS) + "\n"
    assert (report.complete, report.discrepancies) == (True, [])


def test_a_report_on_a_period_still_running_says_so() -> None:
    report = report_of([], [], generated_at=datetime(2026, 4, 10, 18, tzinfo=UTC))

    assert (report.period_closed, report.summary()["period_closed"]) == (False, False)


def test_report_keys_depend_on_the_period_alone() -> None:
    daily = ReportKeys.for_period(SettlementPeriod.daily(date(2026, 4, 10)))
    weekly = ReportKeys.for_period(SettlementPeriod.weekly(date(2026, 4, 10)))

    assert daily == ReportKeys("reports/daily/2026-04-10_2026-04-11.json", "reports/daily/2026-04-10_2026-04-11.csv")
    assert weekly.json == "reports/weekly/2026-04-06_2026-04-13.json"
    assert ReportKeys.for_period(SettlementPeriod.daily(date(2026, 4, 10))) == daily
