"""The report's renderings: keys named by the report id, the JSON and CSV streamed, and the period's index."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.report import (
    CSV_COLUMNS,
    ReportKeys,
    csv_chunks,
    csv_row,
    json_chunks,
    period_index,
    period_index_key,
)
from tests.unit.settlement.reconciliation_factories import (
    AFTER_THE_DAY,
    PERIOD,
    FakeLookup,
    adyen_file,
    adyen_row,
    file_of,
    ours,
)

SOURCE = "settlements/adyen/2026-04-10/settlement_detail_report_batch_42.csv"


def reconciled_document() -> tuple[dict[str, object], bytes, list[str]]:
    payment = ours("8815", amount=1999)
    content = adyen_file(
        adyen_row("Settled", "8815", gross="20.00", net="19.50"),
        adyen_row("Settled", "=HYPERLINK(1)", gross="1.00", net="1.00"),
    )
    with Reconciler(FakeLookup([payment])).run(
        provider="adyen", period=PERIOD, files=[file_of(SOURCE, content)], generated_at=AFTER_THE_DAY
    ) as done:
        document = json.loads(b"".join(json_chunks(done.summary, done.discrepancies(), extra={"created": True})))
        csv_bytes = b"".join(csv_chunks(done.discrepancies()))
        ids = [str(d.id) for d in done.discrepancies()]
    return document, csv_bytes, ids


def test_json_holds_the_summary_and_every_discrepancy_worst_first() -> None:
    document, _, ids = reconciled_document()

    assert (document["report"], document["format_version"], document["provider"], document["created"]) == (
        "settlement_reconciliation",
        2,
        "adyen",
        True,
    )
    assert document["period"] == {"start": "2026-04-10", "end": "2026-04-11"}
    discrepancies = document["discrepancies"]
    assert isinstance(discrepancies, list)
    assert [(d["id"], d["class"]) for d in discrepancies] == list(
        zip(ids, ["missing_internally", "amount_mismatch"], strict=True)
    )
    assert discrepancies[1]["expected"] == {"amount": 1999, "currency": "EUR"}
    assert discrepancies[1]["reported"] == {"amount": 2000, "currency": "EUR"}
    assert document["counts"]["matched"] == 0  # type: ignore[index]


def test_csv_is_one_row_per_discrepancy_and_never_a_formula() -> None:
    _, content, ids = reconciled_document()

    rows = list(csv.DictReader(io.StringIO(content.decode())))

    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(r["id"], r["class"], r["line"]) for r in rows] == [
        (ids[0], "missing_internally", "3"),
        (ids[1], "amount_mismatch", "2"),
    ]
    assert rows[0]["provider_reference"] == "'=HYPERLINK(1)"
    assert (rows[1]["expected_amount"], rows[1]["reported_amount"], rows[1]["batch"]) == ("1999", "2000", "42")


def test_an_empty_report_has_a_header_only_csv_and_an_empty_list() -> None:
    with Reconciler(FakeLookup()).run(provider="adyen", period=PERIOD, files=[], generated_at=AFTER_THE_DAY) as done:
        assert b"".join(csv_chunks(done.discrepancies())).decode() == ",".join(CSV_COLUMNS) + "\n"
        assert json.loads(b"".join(json_chunks(done.summary, done.discrepancies())))["discrepancies"] == []


def test_report_keys_are_named_by_period_provider_and_report_id() -> None:
    daily = SettlementPeriod.daily(date(2026, 4, 10))
    weekly = SettlementPeriod.weekly(date(2026, 4, 10))
    report_id = "6c52f2b4-aa8d-5333-8f28-2804968580dc"

    keys = ReportKeys.for_report(daily, "adyen", report_id)  # type: ignore[arg-type]

    assert keys.json == f"reports/daily/2026-04-10_2026-04-11/adyen/{report_id}.json"
    assert (keys.csv.endswith(".csv"), keys.html.endswith(".html")) == (True, True)
    assert period_index_key(daily) == "reports/daily/2026-04-10_2026-04-11.json"
    assert period_index_key(weekly) == "reports/weekly/2026-04-06_2026-04-13.json"


def test_the_period_index_names_each_providers_current_report() -> None:
    document = json.loads(period_index(PERIOD, AFTER_THE_DAY, [{"provider": "adyen", "report_id": "x"}]))

    assert document["period"] == {"kind": "daily", "start": "2026-04-10", "end": "2026-04-11"}
    assert document["reports"] == [{"provider": "adyen", "report_id": "x"}]


def test_csv_rows_leave_missing_figures_empty() -> None:
    with Reconciler(FakeLookup([ours("8815")])).run(
        provider="adyen", period=PERIOD, files=[], generated_at=AFTER_THE_DAY
    ) as done:
        (missing,) = done.discrepancies()

    row = csv_row(missing)
    assert missing.discrepancy_class is DiscrepancyClass.MISSING_FROM_FILE
    assert (row[3], row[4], row[13], row[14]) == ("", "", "", "")
