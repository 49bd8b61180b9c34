"""Settlement reports on real PostgreSQL, the sandbox provider and moto S3.

The service reads every tenant's executions, so each test gets a private database cloned from a migrated template.
Each piece runs as the role production gives it: charges are made as the execute function makes them (billing_app,
`app_db`), the report is built as the settlement function builds it (billing_worker, `db`).
Charges are made now and reported on today's (UTC) period: nothing sleeps and no date is invented. A test that
could straddle midnight UTC (its charges on two days) is skipped instead of failing for the wrong reason.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.domain.execution import Execution, PaymentRail
from billing.domain.status import ExecutionStatus
from billing.domain.workflow import WorkflowWriteContext
from billing.rails.sandbox import SandboxProvider, Settlement, connections_to
from billing.resource_names import FunctionName
from billing.services.execution_driver import ExecutionDriver
from billing.services.ports import RetryRequest
from billing.settlement.files import FileError, SettlementStatus, settlement_file_key
from billing.settlement.matching import Classified, MatchClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import ReportKeys, SettlementReport
from billing.settlement.s3 import S3ObjectStore
from billing.settlement.sandbox_files import SandboxDiscrepancy, sandbox_settlement_lines, write_sandbox_settlement_file
from billing.settlement.service import SettlementReportService
from tests.factories import create_execution
from tests.lambda_harness import FakeLambdaContext, load_handler, set_function_environment

CTX = WorkflowWriteContext.service_default()
REGION: Final = "eu-west-1"
FILES_BUCKET = "billing-provider-settlement-files-123456789012-eu-west-1"
REPORTS_BUCKET = "billing-reports-123456789012-eu-west-1"


# -- databases, buckets, sandbox, clock -----------------------------------------------------------------------------


# Far longer than any test here takes: its charges and its report all fall on one UTC day.
MIDNIGHT_MARGIN = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def not_just_before_midnight() -> None:
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    if midnight - now < MIDNIGHT_MARGIN:
        pytest.skip("too close to midnight UTC: the test's charges could fall on two days")


@pytest.fixture
def sandbox(private_app_url: str) -> SandboxProvider:
    """The sandbox provider as the execute function reaches it."""
    return SandboxProvider(connections_to(private_app_url))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        for bucket in (FILES_BUCKET, REPORTS_BUCKET):
            client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


@dataclass
class Recorder:
    """The service's observer, remembering what it was told."""

    flagged: dict[MatchClass, int] = field(default_factory=dict)
    file_errors: list[FileError] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    written: list[ReportKeys] = field(default_factory=list)

    def discrepancies(self, period: SettlementPeriod, match_class: MatchClass, items: Sequence[Classified]) -> None:
        self.flagged[match_class] = len(items)

    def file_problems(self, period: SettlementPeriod, errors: Sequence[FileError], missing: Sequence[str]) -> None:
        self.file_errors.extend(errors)
        self.missing.extend(missing)

    def report_written(self, report: SettlementReport, keys: ReportKeys) -> None:
        self.written.append(keys)


def service(db: Connection, s3: Any, observer: Recorder | None = None) -> SettlementReportService:
    return SettlementReportService(
        db, S3ObjectStore(s3, FILES_BUCKET), S3ObjectStore(s3, REPORTS_BUCKET), observer or Recorder()
    )


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


def today() -> date:
    return datetime.now(UTC).date()


def stored_json(s3: Any, key: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(s3.get_object(Bucket=REPORTS_BUCKET, Key=key)["Body"].read())
    return body


def report_keys(s3: Any) -> list[str]:
    listed = s3.list_objects_v2(Bucket=REPORTS_BUCKET, Prefix="reports/")
    return sorted(obj["Key"] for obj in listed.get("Contents", []))


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


# -- the daily report -----------------------------------------------------------------------------------------------


def test_daily_report_classifies_matched_mismatched_and_missing_items_and_lands_in_the_reports_bucket(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    day = today()
    paid_in_file_order = [
        ln.provider_reference for ln in sandbox_settlement_lines(db, day) if ln.status is SettlementStatus.PAID
    ]
    amount_changed, left_out = paid_in_file_order[:2]
    injected = [SandboxDiscrepancy.AMOUNT, SandboxDiscrepancy.MISSING_FROM_FILE, SandboxDiscrepancy.UNKNOWN_REFERENCE]
    key = write_sandbox_settlement_file(db, s3, FILES_BUCKET, day, inject=injected)
    observer = Recorder()

    run = service(db, s3, observer).run(SettlementPeriod.daily(day))

    report = run.report
    classes = {(d.match_class, d.provider_reference) for d in report.discrepancies}
    unknown = next(d for d in report.discrepancies if d.match_class is MatchClass.MISSING_INTERNALLY)
    assert classes == {
        (MatchClass.AMOUNT_MISMATCH, amount_changed),
        (MatchClass.MISSING_FROM_FILE, left_out),
        (MatchClass.MISSING_INTERNALLY, unknown.provider_reference),
        (MatchClass.STATUS_MISMATCH, reference(charges.settled_unknown_to_us)),
    }
    matched = {i.provider_reference for i in report.items if i.match_class is MatchClass.MATCHED}
    everything_charged = {reference(e) for e in (*charges.cards, charges.yen, charges.failed_debit)}
    assert matched == everything_charged - {amount_changed, left_out}
    # The declined card moved no money: the provider does not list it and nothing is flagged for it.
    assert reference(charges.declined) not in {i.provider_reference for i in report.items}
    assert (report.files[0].key, report.files[0].lines, report.complete, report.missing_files) == (key, 7, True, ())

    amounts = {reference(e): e.amount for e in (*charges.cards, charges.settled_unknown_to_us)}
    eur = report.totals_for("EUR")
    cards_total = sum(e.amount for e in charges.cards)
    assert eur.provider_paid == cards_total - amounts[left_out] + 1 + 1000 + charges.settled_unknown_to_us.amount
    assert (eur.provider_failed, eur.internal_completed) == (charges.failed_debit.amount, cards_total)
    assert eur.internal_failed == charges.failed_debit.amount + charges.declined.amount
    assert (report.totals_for("JPY").provider_paid, report.totals_for("JPY").matched) == (5000, 5000)

    keys = ReportKeys.for_period(SettlementPeriod.daily(day))
    assert run.keys == keys
    assert report_keys(s3) == sorted([keys.json, keys.csv])
    stored = stored_json(s3, keys.json)
    assert stored == json.loads(report.to_json())
    assert stored["counts"] == {
        "missing_internally": 1,
        "missing_from_file": 1,
        "status_mismatch": 1,
        "currency_mismatch": 0,
        "amount_mismatch": 1,
        "duplicate_in_file": 0,
        "ambiguous_reference": 0,
        "matched": len(matched),
    }
    csv_rows = list(
        csv.DictReader(io.StringIO(s3.get_object(Bucket=REPORTS_BUCKET, Key=keys.csv)["Body"].read().decode()))
    )
    assert sorted((r["class"], r["provider_reference"]) for r in csv_rows) == sorted(
        (c.value, ref) for c, ref in classes
    )
    assert observer.flagged == {
        MatchClass.MISSING_INTERNALLY: 1,
        MatchClass.MISSING_FROM_FILE: 1,
        MatchClass.STATUS_MISMATCH: 1,
        MatchClass.CURRENCY_MISMATCH: 0,
        MatchClass.AMOUNT_MISMATCH: 1,
        MatchClass.DUPLICATE_IN_FILE: 0,
        MatchClass.AMBIGUOUS_REFERENCE: 0,
    }
    assert observer.written == [keys]


def test_running_a_period_again_overwrites_its_report_with_what_is_true_now(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    day = today()
    write_sandbox_settlement_file(db, s3, FILES_BUCKET, day, inject=[SandboxDiscrepancy.DUPLICATE])
    first = service(db, s3).run(SettlementPeriod.daily(day))
    # The provider corrects its file, and the settled debit's webhook arrives.
    write_sandbox_settlement_file(db, s3, FILES_BUCKET, day)
    pending = charges.settled_unknown_to_us
    ExecutionRepository(app_db).confirm_from_pending(pending.tenant_id, pending.id, CTX)

    second = service(db, s3).run(SettlementPeriod.daily(day))

    assert {d.match_class for d in first.report.discrepancies} == {
        MatchClass.DUPLICATE_IN_FILE,
        MatchClass.STATUS_MISMATCH,
    }
    assert second.keys == first.keys
    assert report_keys(s3) == sorted([first.keys.json, first.keys.csv])
    stored = stored_json(s3, second.keys.json)
    assert (stored["complete"], stored["discrepancies"]) == (True, [])
    assert stored["counts"]["matched"] == 7
    assert s3.get_object(Bucket=REPORTS_BUCKET, Key=second.keys.csv)["Body"].read().decode().count("\n") == 1


def test_weekly_report_reads_the_seven_daily_files_of_the_iso_week(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any
) -> None:
    charges = a_day_of_charges(app_db, sandbox)
    period = SettlementPeriod.weekly(today())
    for day in period.days():
        write_sandbox_settlement_file(db, s3, FILES_BUCKET, day)

    complete = service(db, s3).run(period).report
    absent = settlement_file_key("sandbox", period.days()[2])
    s3.delete_object(Bucket=FILES_BUCKET, Key=absent)
    observer = Recorder()
    with_gap = service(db, s3, observer).run(period).report

    assert [f.day for f in complete.files] == [d.isoformat() for d in period.days()]
    assert (complete.complete, complete.counts[MatchClass.MATCHED]) == (True, 6)
    assert [d.provider_reference for d in complete.discrepancies] == [reference(charges.settled_unknown_to_us)]
    assert (len(with_gap.files), with_gap.missing_files, with_gap.complete) == (6, (absent,), False)
    assert observer.missing == [absent]
    keys = ReportKeys.for_period(period)
    assert report_keys(s3) == sorted([keys.json, keys.csv])
    assert stored_json(s3, keys.json)["missing_files"] == [absent]


def test_a_malformed_row_is_reported_with_its_line_and_the_rest_of_the_file_still_reconciled(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any
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
    s3.put_object(Bucket=FILES_BUCKET, Key=key, Body=content.encode())
    observer = Recorder()

    report = service(db, s3, observer).run(SettlementPeriod.daily(day)).report

    assert [(e.source, e.line) for e in report.file_errors] == [(key, 3)]
    assert "amount '19.99' is not an integer of minor units" in report.file_errors[0].message
    assert observer.file_errors == list(report.file_errors)
    assert [(i.match_class, i.provider_reference) for i in report.items] == [(MatchClass.MATCHED, reference(card))]
    assert (report.complete, report.totals_for("EUR").provider_fees) == (False, 25)


def test_a_provider_we_charged_through_without_a_file_has_every_day_missing(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any
) -> None:
    card = charge(app_db, sandbox, uuid4(), amount=1999)

    report = service(db, s3).run(SettlementPeriod.daily(today())).report

    assert report.missing_files == (settlement_file_key("sandbox", today()),)
    assert [(d.match_class, d.provider_reference) for d in report.discrepancies] == [
        (MatchClass.MISSING_FROM_FILE, reference(card))
    ]


def test_a_debit_the_provider_settled_yesterday_and_we_completed_today_is_not_missing_from_todays_file(
    db: Connection, app_db: Connection, sandbox: SandboxProvider, s3: Any, private_db_url: str
) -> None:
    day = today()
    debit = charge(app_db, sandbox, uuid4(), amount=3000, rail=PaymentRail.SEPA_DEBIT, instrument="iban_settles_paid")
    yesterday_noon = datetime.combine(day - timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=12)
    SandboxProvider(connections_to(private_db_url), clock=lambda: yesterday_noon).settle(
        reference(debit), Settlement.PAID
    )
    ExecutionRepository(app_db).confirm_from_pending(debit.tenant_id, debit.id, CTX)
    write_sandbox_settlement_file(db, s3, FILES_BUCKET, day - timedelta(days=1))
    write_sandbox_settlement_file(db, s3, FILES_BUCKET, day)

    report = service(db, s3).run(SettlementPeriod.daily(day)).report

    assert [ln.provider_reference for ln in sandbox_settlement_lines(db, day - timedelta(days=1))] == [reference(debit)]
    assert (report.items, report.complete) == ((), True)
    assert report.totals_for("EUR").internal_completed == 3000


def completed_with_reference(app_db: Connection, provider_reference: str) -> Execution:
    """An execution some other path completed at the provider under `provider_reference` (a new tenant's)."""
    repository, tenant_id = ExecutionRepository(app_db), uuid4()
    created = create_execution(app_db, tenant_id, amount=1999)
    repository.mark_pending(tenant_id, created.id, CTX)
    repository.mark_processing(tenant_id, created.id, CTX)
    return repository.mark_completed(tenant_id, created.id, CTX, provider_reference=provider_reference)


def test_a_reference_two_tenants_carry_is_ambiguous_and_matched_to_neither(
    db: Connection, app_db: Connection, s3: Any
) -> None:
    day = today()
    shared = "sbx_" + uuid4().hex[:24]
    first, second = completed_with_reference(app_db, shared), completed_with_reference(app_db, shared)
    assert first.tenant_id != second.tenant_id
    settled = datetime.now(UTC).isoformat()
    content = f"provider_reference,amount,currency,status,settled_at\n{shared},1999,EUR,paid,{settled}\n"
    s3.put_object(Bucket=FILES_BUCKET, Key=settlement_file_key("sandbox", day), Body=content.encode())

    report = service(db, s3).run(SettlementPeriod.daily(day)).report

    # Listed, so neither execution is missing from the file; which one the line settles is for a human to say.
    assert [(i.match_class, i.provider_reference, i.record) for i in report.items] == [
        (MatchClass.AMBIGUOUS_REFERENCE, shared, None)
    ]
    assert report.totals_for("EUR").internal_completed == first.amount + second.amount


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
    s3: Any,
    private_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    charge(app_db, sandbox, uuid4(), amount=1999)
    day = today()
    write_sandbox_settlement_file(db, s3, FILES_BUCKET, day, inject=[SandboxDiscrepancy.AMOUNT])
    # The function connects as its production role, billing_worker (private_db_url).
    set_function_environment(
        monkeypatch,
        FunctionName.SETTLEMENT_REPORT,
        {"DATABASE_URL": private_db_url, "SETTLEMENT_BUCKET": FILES_BUCKET, "REPORTS_BUCKET": REPORTS_BUCKET},
    )
    handler = load_handler("settlement_report")
    capsys.readouterr()

    requested = handler.lambda_handler({"period": "daily", "date": day.isoformat()}, FakeLambdaContext())
    scheduled = handler.lambda_handler({"period": "daily"}, FakeLambdaContext())

    today_keys = ReportKeys.for_period(SettlementPeriod.daily(day))
    yesterday_keys = ReportKeys.for_period(SettlementPeriod.daily(day - timedelta(days=1)))
    assert (requested["report_json"], requested["counts"]["amount_mismatch"], requested["complete"]) == (
        today_keys.json,
        1,
        True,
    )
    assert (scheduled["report_json"], scheduled["start"], scheduled["missing_files"]) == (
        yesterday_keys.json,
        (day - timedelta(days=1)).isoformat(),
        1,
    )
    assert report_keys(s3) == sorted([today_keys.json, today_keys.csv, yesterday_keys.json, yesterday_keys.csv])
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics["SettlementDiscrepancy_amount_mismatch"], metrics["SettlementMatched"]) == (1.0, 0.0)
    assert (metrics["SettlementDiscrepancy_missing_from_file"], metrics["SettlementFilesMissing"]) == (0.0, 1.0)
    [flagged] = [r for r in caplog.records if r.getMessage() == "billing.settlement.discrepancy"]
    assert (getattr(flagged, "class", None), getattr(flagged, "count", None)) == ("amount_mismatch", 1)
    assert stored_json(s3, today_keys.json)["discrepancies"][0]["provider_item"]["status"] == SettlementStatus.PAID
