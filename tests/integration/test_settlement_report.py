"""Settlement reports of the sandbox provider's own CSV on real PostgreSQL, the sandbox provider and moto S3.

The service reads every tenant's executions, so each test gets a private database cloned from a migrated template.
Each piece runs as the role production gives it: charges are made as the execute function makes them (billing_app,
`app_db`), the report is built and saved as the settlement function builds it (billing_worker, `db`).
Charges are made now and reported on today's (UTC) period: nothing sleeps and no date is invented.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.rails.sandbox import SandboxProvider, Settlement, connections_to
from billing.resource_names import FunctionName
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest
from billing.settlement.files import SettlementStatus, settlement_file_key
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import CSV_COLUMNS, ReportKeys, period_index_key
from billing.settlement.sandbox_files import SandboxDiscrepancy, sandbox_settlement_lines, write_sandbox_settlement_file
from tests.factories import create_execution
from tests.integration import settlement_run_rig
from tests.integration.settlement_run_rig import (
    CTX,
    FILES_BUCKET,
    REPORTS_BUCKET,
    Aws,
    Recorder,
    put_file,
    report_keys,
    saved_discrepancies,
    saved_reports,
    service,
    stored_json,
    today,
)
from tests.lambda_harness import FakeLambdaContext, load_handler, set_function_environment

# The rig's fixtures, used here by name.
aws_world = settlement_run_rig.aws_world
not_just_before_midnight = settlement_run_rig.not_just_before_midnight
s3 = settlement_run_rig.s3

C = DiscrepancyClass


@pytest.fixture
def sandbox(private_app_url: str) -> SandboxProvider:
    """The sandbox provider as the execute function reaches it."""
    return SandboxProvider(connections_to(private_app_url))


# -- charges through the real driver --------------------------------------------------------------------------------


class QuietObserver:
    def rail_call(self, execution: Execution, **details: Any) -> None:
        pass

    def execution_result(self, execution: Execution, **details: Any) -> None:
        pass


class NoRetries:
    def schedule(self, request: RetryRequest) -> None:
        raise AssertionError(f"no retry expected: {request}")


def charge(
    app_db: Connection,
    sandbox: SandboxProvider,
    tenant_id: UUID,
    *,
    amount: int,
    currency: str = "EUR",
    rail: PaymentRail = PaymentRail.CARD,
    instrument: str = "tok_visa",
) -> Execution:
    """An execution driven as the execute function drives it (on billing_app's `app_db`)."""
    execution = create_execution(
        app_db, tenant_id, amount=amount, currency=currency, payment_rail=rail, payment_instrument_id=instrument
    )
    driver = ExecutionDriver(ExecutionRepository(app_db), {"sandbox": sandbox}, NoRetries(), QuietObserver())
    return driver.drive(execution, correlation_id=f"corr-{execution.id}", context=CTX)


def reference(execution: Execution) -> str:
    assert execution.provider_reference is not None
    return execution.provider_reference


@dataclass
class Day:
    """One tenant's day of charges with every kind of outcome."""

    cards: list[Execution]
    yen: Execution
    settled_unknown_to_us: Execution  # the provider settled the debit; no webhook or reconcile told us yet
    failed_debit: Execution
    declined: Execution


def a_day_of_charges(app_db: Connection, sandbox: SandboxProvider) -> Day:
    """Charges made, and a debit's rejection delivered by webhook, as the app role makes them."""
    tenant_id, other_tenant = uuid4(), uuid4()
    cards = [charge(app_db, sandbox, tenant_id, amount=amount) for amount in (1999, 2500, 1000)]
    cards.append(charge(app_db, sandbox, other_tenant, amount=4200))
    yen = charge(app_db, sandbox, other_tenant, amount=5000, currency="JPY")
    debit = charge(app_db, sandbox, tenant_id, amount=3000, rail=PaymentRail.SEPA_DEBIT, instrument="iban_settles_paid")
    sandbox.settle(reference(debit), Settlement.PAID)
    failing = charge(
        app_db, sandbox, tenant_id, amount=1500, rail=PaymentRail.SEPA_DEBIT, instrument="iban_settles_failed"
    )
    sandbox.settle(reference(failing), Settlement.FAILED, failure_code="AM04")
    failed = ExecutionRepository(app_db).reject_from_pending(tenant_id, failing.id, CTX, error_code="AM04")
    declined = charge(app_db, sandbox, tenant_id, amount=999, instrument="tok_decline")
    assert [c.status for c in cards] == [ExecutionStatus.COMPLETED] * 4
    assert (yen.status, debit.status, failed.status, declined.status) == (
        ExecutionStatus.COMPLETED,
        ExecutionStatus.PENDING,
        ExecutionStatus.FAILED,
        ExecutionStatus.FAILED,
    )
    return Day(cards, yen, debit, failed, declined)


def findings(world: Aws, keys: ReportKeys) -> list[tuple[str, str | None]]:
    return sorted((d["class"], d["provider_reference"]) for d in stored_json(world.s3, keys.json)["discrepancies"])


# -- the daily report -----------------------------------------------------------------------------------------------


def test_daily_report_classifies_matched_mismatched_and_missing_items_and_lands_in_the_database_and_the_bucket(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    day = today()
    paid_in_file_order = [
        ln.provider_reference for ln in sandbox_settlement_lines(db, day) if ln.status is SettlementStatus.PAID
    ]
    amount_changed, left_out = paid_in_file_order[:2]
    injected = [SandboxDiscrepancy.AMOUNT, SandboxDiscrepancy.MISSING_FROM_FILE, SandboxDiscrepancy.UNKNOWN_REFERENCE]
    key = write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day, inject=injected)
    observer = Recorder()

    run = service(db, aws_world, observer).run(SettlementPeriod.daily(day))

    (report,) = run.reports
    summary = report.summary
    assert (report.created, report.supersedes, summary.provider) == (True, None, "sandbox")
    assert report.keys is not None
    unknown = next(r for c, r in findings(aws_world, report.keys) if c == C.MISSING_INTERNALLY.value)
    expected = sorted(
        [
            (C.AMOUNT_MISMATCH.value, amount_changed),
            (C.MISSING_FROM_FILE.value, left_out),
            (C.MISSING_INTERNALLY.value, unknown),
            (C.STATUS_MISMATCH.value, reference(charges.settled_unknown_to_us)),
        ]
    )
    assert findings(aws_world, report.keys) == expected
    everything_charged = {reference(e) for e in (*charges.cards, charges.yen, charges.failed_debit)}
    assert summary.counts[C.MATCHED] == len(everything_charged - {amount_changed, left_out})
    assert [(f.source, f.format, f.records, f.line_errors) for f in summary.files] == [(key, "sandbox_csv", 7, 0)]
    assert (summary.missing_files, summary.file_errors, summary.payouts) == ((), (), ())

    amounts = {reference(e): e.amount for e in (*charges.cards, charges.settled_unknown_to_us)}
    totals = {t.currency: t for t in summary.totals}
    cards_total = sum(e.amount for e in charges.cards)
    assert totals["EUR"].settled == cards_total - amounts[left_out] + 1 + 1000 + charges.settled_unknown_to_us.amount
    # Our side: what we completed in the period (the declined card and the failed debit are not).
    assert totals["EUR"].expected_settled == cards_total
    assert (totals["JPY"].settled, totals["JPY"].expected_settled) == (5000, 5000)

    # Saved once, with every discrepancy, as the settlement API will read it.
    (saved,) = saved_reports(private_admin)
    assert (saved["id"], saved["discrepancy_count"], saved["superseded_by"]) == (summary.report_id, 4, None)
    rows = saved_discrepancies(private_admin, summary.report_id)
    assert sorted((r["class"], r["provider_reference"]) for r in rows) == expected
    assert {r["id"] for r in rows} == {
        UUID(d["id"]) for d in stored_json(aws_world.s3, report.keys.json)["discrepancies"]
    }

    # The bucket: the report's three renderings under its id, and the period's index naming it.
    period_key = period_index_key(SettlementPeriod.daily(day))
    assert report_keys(aws_world.s3) == sorted([report.keys.json, report.keys.csv, report.keys.html, period_key])
    index = stored_json(aws_world.s3, period_key)
    assert [(r["provider"], r["report_id"], r["report"]["json"]) for r in index["reports"]] == [
        ("sandbox", str(summary.report_id), report.keys.json)
    ]
    csv_rows = list(
        csv.DictReader(
            io.StringIO(aws_world.s3.get_object(Bucket=REPORTS_BUCKET, Key=report.keys.csv)["Body"].read().decode())
        )
    )
    assert tuple(csv_rows[0]) == CSV_COLUMNS
    assert sorted((r["class"], r["provider_reference"]) for r in csv_rows) == expected
    html = aws_world.s3.get_object(Bucket=REPORTS_BUCKET, Key=report.keys.html)["Body"].read().decode()
    assert html.startswith("<!DOCTYPE html>")
    assert 'id="discrepancies"' in html

    assert [s.report_id for s in observer.reports] == [summary.report_id]
    assert {c: len(items) for c, items in observer.samples[0].items()} == {
        C.AMOUNT_MISMATCH: 1,
        C.MISSING_FROM_FILE: 1,
        C.MISSING_INTERNALLY: 1,
        C.STATUS_MISMATCH: 1,
    }
    (event,) = aws_world.received()
    assert (event["source"], event["detail-type"], event["detail"]["report_id"]) == (
        "billing.settlement",
        "billing.settlement.report_generated",
        str(summary.report_id),
    )
    assert (event["detail"]["counts"]["amount_mismatch"], event["detail"]["created"]) == (1, True)
    assert run.summary()["counts"]["missing_internally"] == 1


def test_a_corrected_file_gives_a_new_report_that_supersedes_the_first(
    db: Connection, app_db: Connection, private_admin: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    day = today()
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day, inject=[SandboxDiscrepancy.DUPLICATE])
    (first,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports
    # The provider corrects its file, and the settled debit's webhook arrives.
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day)
    pending = charges.settled_unknown_to_us
    ExecutionRepository(app_db).confirm_from_pending(pending.tenant_id, pending.id, CTX)

    (second,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    assert first.keys is not None
    assert second.keys is not None
    assert findings(aws_world, first.keys) == sorted(
        [(C.DUPLICATE_IN_FILE.value, reference(charges.cards[0])), (C.STATUS_MISMATCH.value, reference(pending))]
    )
    assert (second.created, second.supersedes, second.summary.supersedes) == (
        True,
        first.summary.report_id,
        first.summary.report_id,
    )
    stored = stored_json(aws_world.s3, second.keys.json)
    assert (stored["discrepancies"], stored["counts"]["matched"], stored["supersedes"]) == (
        [],
        7,
        str(first.summary.report_id),
    )
    assert [(r["id"], r["superseded_by"]) for r in saved_reports(private_admin)] == [
        (first.summary.report_id, second.summary.report_id),
        (second.summary.report_id, None),
    ]
    # The first report's objects stay (its id names them); the period's index now names the second.
    index = stored_json(aws_world.s3, period_index_key(SettlementPeriod.daily(day)))
    assert [r["report_id"] for r in index["reports"]] == [str(second.summary.report_id)]
    assert first.keys.json in report_keys(aws_world.s3)


def test_a_rerun_of_the_same_file_keeps_the_saved_report_even_after_the_database_changed(
    db: Connection,
    app_db: Connection,
    private_admin: Connection,
    sandbox: SandboxProvider,
    aws_world: Aws,
    caplog: pytest.LogCaptureFixture,
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    day = today()
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day)
    (first,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports
    assert first.keys is not None
    written = stored_json(aws_world.s3, first.keys.json)
    # The settled debit's webhook arrives; the provider's file is the same.
    pending = charges.settled_unknown_to_us
    ExecutionRepository(app_db).confirm_from_pending(pending.tenant_id, pending.id, CTX)

    (again,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    # The report id names the files: the saved report stands, and so do its objects, which say what it says.
    assert (again.summary.report_id, again.created, again.reproduced) == (first.summary.report_id, False, False)
    assert again.summary.discrepancy_count == 0  # what this run found, not what was saved
    assert [r["discrepancy_count"] for r in saved_reports(private_admin)] == [1]
    assert stored_json(aws_world.s3, first.keys.json) == written
    assert [r.getMessage() for r in caplog.records].count("billing.settlement.rerun_differs") == 1
    assert [e["detail"]["created"] for e in aws_world.received()] == [True]


def test_weekly_report_reads_the_seven_daily_files_of_the_iso_week(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    period = SettlementPeriod.weekly(today())
    for day in period.days():
        write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day)

    (complete,) = service(db, aws_world).run(period).reports
    absent = settlement_file_key("sandbox", period.days()[2])
    aws_world.s3.delete_object(Bucket=FILES_BUCKET, Key=absent)
    observer = Recorder()
    (with_gap,) = service(db, aws_world, observer).run(period).reports

    assert [f.source for f in complete.summary.files] == [settlement_file_key("sandbox", d) for d in period.days()]
    assert (complete.summary.missing_files, complete.summary.counts[C.MATCHED]) == ((), 6)
    assert complete.keys is not None
    assert findings(aws_world, complete.keys) == [(C.STATUS_MISMATCH.value, reference(charges.settled_unknown_to_us))]
    assert (len(with_gap.summary.files), with_gap.summary.missing_files) == (6, (absent,))
    assert observer.reports[0].missing_files == (absent,)
    assert with_gap.keys is not None
    assert stored_json(aws_world.s3, with_gap.keys.json)["missing_files"] == [absent]


def test_a_malformed_row_is_reported_with_its_line_and_the_rest_of_the_file_still_reconciled(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    card = charge(app_db, sandbox, uuid4(), amount=1999)
    day = today()
    settled = datetime.now(UTC).isoformat()
    key = settlement_file_key("sandbox", day)
    content = (
        "provider_reference,amount,currency,status,settled_at,fee\n"
        f"{reference(card)},1999,EUR,paid,{settled},25\n"
        f"sbx_0000,19.99,EUR,paid,{settled},\n"
    )
    put_file(aws_world.s3, key, content.encode())

    (report,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    summary = report.summary
    assert [(e["source"], e["line"]) for e in summary.line_errors] == [(key, 3)]
    assert "amount '19.99' is not an integer of minor units" in str(summary.line_errors[0]["reason"])
    assert (summary.counts[C.MATCHED], summary.discrepancy_count, summary.line_error_count) == (1, 0, 1)
    assert [(t.currency, t.fees, t.net) for t in summary.totals] == [("EUR", 25, 1974)]


def test_a_file_in_no_known_format_is_a_file_error_not_a_crash(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    card = charge(app_db, sandbox, uuid4(), amount=1999)
    day = today()
    put_file(aws_world.s3, settlement_file_key("sandbox", day), b"what,is,this\n1,2,3\n")

    (report,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    assert [dict(e) for e in report.summary.file_errors] == [
        {"source": settlement_file_key("sandbox", day), "reason": "header fits no known format"}
    ]
    assert report.keys is not None
    assert findings(aws_world, report.keys) == [(C.MISSING_FROM_FILE.value, reference(card))]


def test_a_provider_we_charged_through_without_a_file_has_every_day_missing(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, aws_world: Aws
) -> None:
    card = charge(app_db, sandbox, uuid4(), amount=1999)

    (report,) = service(db, aws_world).run(SettlementPeriod.daily(today())).reports

    assert report.summary.missing_files == (settlement_file_key("sandbox", today()),)
    assert report.keys is not None
    assert findings(aws_world, report.keys) == [(C.MISSING_FROM_FILE.value, reference(card))]


def test_a_debit_the_provider_settled_yesterday_and_we_completed_today_is_not_missing_from_todays_file(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, aws_world: Aws, private_db_url: str
) -> None:
    day = today()
    debit = charge(app_db, sandbox, uuid4(), amount=3000, rail=PaymentRail.SEPA_DEBIT, instrument="iban_settles_paid")
    yesterday_noon = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=12)
    SandboxProvider(connections_to(private_db_url), clock=lambda: yesterday_noon).settle(
        reference(debit), Settlement.PAID
    )
    ExecutionRepository(app_db).confirm_from_pending(debit.tenant_id, debit.id, CTX)
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day - timedelta(days=1))
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day)

    (report,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    assert [ln.provider_reference for ln in sandbox_settlement_lines(db, day - timedelta(days=1))] == [reference(debit)]
    assert (report.summary.discrepancy_count, report.summary.missing_files) == (0, ())
    assert [t.expected_settled for t in report.summary.totals] == [3000]


def completed_with_reference(app_db: Connection, provider_reference: str) -> Execution:
    """An execution some other path completed at the provider under `provider_reference` (a new tenant's)."""
    repository, tenant_id = ExecutionRepository(app_db), uuid4()
    created = create_execution(app_db, tenant_id, amount=1999)
    repository.mark_pending(tenant_id, created.id, CTX)
    repository.mark_processing(tenant_id, created.id, CTX)
    return repository.mark_completed(tenant_id, created.id, CTX, provider_reference=provider_reference)


def test_a_reference_two_tenants_carry_is_ambiguous_and_matched_to_neither(
    db: Connection, app_db: Connection, aws_world: Aws
) -> None:
    day = today()
    shared = "sbx_" + uuid4().hex[:24]
    first, second = completed_with_reference(app_db, shared), completed_with_reference(app_db, shared)
    assert first.tenant_id != second.tenant_id
    settled = datetime.now(UTC).isoformat()
    content = f"provider_reference,amount,currency,status,settled_at\n{shared},1999,EUR,paid,{settled}\n"
    put_file(aws_world.s3, settlement_file_key("sandbox", day), content.encode())

    (report,) = service(db, aws_world).run(SettlementPeriod.daily(day)).reports

    # Listed, so neither execution is missing from the file; which one the line settles is for a human to say.
    assert report.keys is not None
    (item,) = stored_json(aws_world.s3, report.keys.json)["discrepancies"]
    assert (item["class"], item["provider_reference"], item["execution_id"]) == (
        C.AMBIGUOUS_REFERENCE.value,
        shared,
        None,
    )
    assert [t.expected_settled for t in report.summary.totals] == [first.amount + second.amount]


def test_a_discrepancy_that_cannot_be_injected_is_refused(db: Connection) -> None:
    with pytest.raises(ValueError, match="no paid sandbox item left"):
        sandbox_settlement_lines(db, today(), inject=[SandboxDiscrepancy.AMOUNT])


# -- the function ---------------------------------------------------------------------------------------------------


def emitted_metrics(output: str) -> dict[str, float]:
    """Metric name -> total value from the EMF lines Powertools printed."""
    totals: dict[str, float] = {}
    for line in output.splitlines():
        if line.startswith("{"):
            document = json.loads(line)
            for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
                for metric in directive["Metrics"]:
                    values = document[metric["Name"]]
                    values = values if isinstance(values, list) else [values]
                    totals[metric["Name"]] = totals.get(metric["Name"], 0.0) + sum(values)
    return totals


def test_handler_reports_the_requested_day_and_by_default_yesterday(
    db: Connection,
    app_db: Connection,
    sandbox: SandboxProvider,
    aws_world: Aws,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    charge(app_db, sandbox, uuid4(), amount=1999)
    day = today()
    write_sandbox_settlement_file(db, aws_world.s3, FILES_BUCKET, day, inject=[SandboxDiscrepancy.AMOUNT])
    # The function connects as its production role, billing_worker (private_db_url).
    set_function_environment(
        monkeypatch,
        FunctionName.SETTLEMENT_REPORT,
        {
            "DATABASE_URL": private_db_url,
            "SETTLEMENT_BUCKET": FILES_BUCKET,
            "REPORTS_BUCKET": REPORTS_BUCKET,
            "EVENT_BUS_NAME": "billing-events",
        },
    )
    handler = load_handler("settlement_report")
    capsys.readouterr()

    requested = handler.lambda_handler({"period": "daily", "date": day.isoformat()}, FakeLambdaContext())
    scheduled = handler.lambda_handler({"period": "daily"}, FakeLambdaContext())

    today_index = period_index_key(SettlementPeriod.daily(day))
    yesterday_index = period_index_key(SettlementPeriod.daily(day - timedelta(days=1)))
    assert (requested["report_json"], requested["counts"]["amount_mismatch"], requested["complete"]) == (
        today_index,
        1,
        True,
    )
    (todays,) = requested["reports"]
    assert (todays["provider"], todays["created"], todays["discrepancy_count"]) == ("sandbox", True, 1)
    assert (scheduled["report_json"], scheduled["start"], scheduled["missing_files"]) == (
        yesterday_index,
        (day - timedelta(days=1)).isoformat(),
        1,
    )
    assert {today_index, yesterday_index, todays["report"]["json"], todays["report"]["html"]} <= set(
        report_keys(aws_world.s3)
    )
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics["SettlementDiscrepancy_amount_mismatch"], metrics["SettlementMatched"]) == (1.0, 0.0)
    assert (metrics["SettlementDiscrepancy_missing_from_file"], metrics["SettlementFilesMissing"]) == (0.0, 1.0)
    assert metrics["SettlementDiscrepancy_payout_mismatch"] == 0.0
    flagged = [r for r in caplog.records if r.getMessage() == "billing.settlement.discrepancy"]
    assert [(getattr(r, "class", None), getattr(r, "count", None)) for r in flagged] == [("amount_mismatch", 1)]
    assert len(aws_world.received()) == 2  # one report a run: today's, then yesterday's (no file, one missing)
