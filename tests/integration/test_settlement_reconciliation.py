"""Adyen's and Stripe's real report formats reconciled end to end: real PostgreSQL as billing_worker, moto S3 and bus.

Executions are completed at "adyen" and "stripe" through the repository as the execute path writes them, and their
refunds and chargebacks recorded as the webhook path records them (billing_app). The settlement service then reads
the providers' files from the settlement bucket, saves each provider's report, writes its JSON, CSV and HTML, and
announces it, as the settlement function does.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from uuid import UUID, uuid4

from billing.db.connection import Connection
from billing.domain.execution import Execution
from billing.domain.reversals import ReversalKind
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import period_index_key
from billing.settlement.service import ProviderReport, SettlementReportRun
from tests.integration import settlement_run_rig
from tests.integration.settlement_run_rig import (
    Aws,
    completed_at_provider,
    provider_reversal,
    put_file,
    report_keys,
    saved_discrepancies,
    saved_reports,
    service,
    stored_json,
    stored_text,
    today,
)
from tests.unit.settlement.reconciliation_factories import adyen_file, adyen_row, stripe_file, stripe_row

# The rig's fixtures, used here by name.
aws_world = settlement_run_rig.aws_world
not_just_before_midnight = settlement_run_rig.not_just_before_midnight

C = DiscrepancyClass


def psp() -> str:
    return str(uuid4().int)[:16]


def adyen_key(day: date, batch: int) -> str:
    return f"settlements/adyen/{day.isoformat()}/settlement_detail_report_batch_{batch}.csv"


def stripe_key(day: date) -> str:
    return f"settlements/stripe/{day.isoformat()}.csv"


def creation(day: date, batch: int = 7) -> dict[str, str]:
    return {"Creation Date": f"{day.isoformat()} 09:00:00", "TimeZone": "UTC", "Batch Number": str(batch)}


class Charges:
    """A day at both providers: matched, partially refunded, charged back, missing on either side, a fee band."""

    def __init__(self, app_db: Connection, admin: Connection) -> None:
        self.adyen_paid = completed_at_provider(app_db, "adyen", psp(), amount=10000)
        self.adyen_refunded = completed_at_provider(app_db, "adyen", psp(), amount=5000)
        provider_reversal(app_db, self.adyen_refunded, ReversalKind.REFUND, 1000)
        provider_reversal(app_db, self.adyen_refunded, ReversalKind.REFUND, 1500)
        self.adyen_not_listed = completed_at_provider(app_db, "adyen", psp(), amount=700)
        self.stripe_paid = completed_at_provider(app_db, "stripe", f"pi_{uuid4().hex[:20]}", amount=2500)
        self.stripe_disputed = completed_at_provider(app_db, "stripe", f"pi_{uuid4().hex[:20]}", amount=4000)
        provider_reversal(app_db, self.stripe_disputed, ReversalKind.CHARGEBACK, 4000)
        # The paid Adyen payment's tenant expects 0.10 EUR + 100-200 bp on visa: 1.10 to 2.10 EUR on 100.00.
        admin.execute(
            "insert into billing.settlement_fee_bands"
            " (tenant_id, provider, payment_method, currency, min_basis_points, max_basis_points, fixed_minor)"
            " values (%s, 'adyen', 'visa', 'EUR', 100, 200, 10)",
            [self.adyen_paid.tenant_id],
        )

    def adyen_file(self, day: date, *, payout: str) -> bytes:
        when = creation(day)
        return adyen_file(
            adyen_row(
                "Settled",
                ref(self.adyen_paid),
                gross="100.00",
                net="97.50",
                merchant_reference=str(self.adyen_paid.id),
                fees={"Markup (NC)": "0.50", "Interchange (NC)": "2.00"},
                cells=when,
            ),
            adyen_row("Settled", ref(self.adyen_refunded), gross="50.00", net="49.00", cells=when),
            adyen_row(
                "Refunded", ref(self.adyen_refunded), gross="-15.00", net="-15.00", modification="r1", cells=when
            ),
            adyen_row(
                "Refunded", ref(self.adyen_refunded), gross="-10.00", net="-10.00", modification="r2", cells=when
            ),
            adyen_row("Settled", "9999888877776666", gross="12.00", net="11.80", cells=when),
            adyen_row("MerchantPayout", "", net=payout, cells=when),
        )

    def stripe_file(self) -> bytes:
        return stripe_file(
            stripe_row("charge", ref(self.stripe_paid), gross="25.00", fee="0.60", payout="po_A"),
            stripe_row("charge", ref(self.stripe_disputed), gross="40.00", fee="0.90", payout="po_A"),
            stripe_row("dispute", ref(self.stripe_disputed), gross="-40.00", fee="15.00", payout="po_A"),
            stripe_row("payout", "", gross="-8.50", payout="po_A"),
        )


def ref(execution: Execution) -> str:
    assert execution.provider_reference is not None
    return execution.provider_reference


def report_of(run: SettlementReportRun, provider: str) -> ProviderReport:
    (report,) = [r for r in run.reports if r.summary.provider == provider]
    return report


def classes_in(world: Aws, report: ProviderReport) -> list[tuple[str, str | None]]:
    assert report.keys is not None
    return sorted(
        (d["class"], d["provider_reference"]) for d in stored_json(world.s3, report.keys.json)["discrepancies"]
    )


def test_adyen_and_stripe_files_are_reconciled_saved_rendered_and_announced(
    db: Connection, app_db: Connection, private_admin: Connection, aws_world: Aws
) -> None:
    charges = Charges(app_db, private_admin)
    day = today()
    # Items net 97.50 + 49.00 - 15.00 - 10.00 + 11.80 = 133.30; Adyen paid out 134.30.
    put_file(aws_world.s3, adyen_key(day, 7), charges.adyen_file(day, payout="-134.30"))
    put_file(aws_world.s3, stripe_key(day), charges.stripe_file())

    run = service(db, aws_world).run(SettlementPeriod.daily(day))

    adyen, stripe = report_of(run, "adyen"), report_of(run, "stripe")
    assert classes_in(aws_world, adyen) == sorted(
        [
            (C.PAYOUT_MISMATCH.value, None),
            (C.MISSING_INTERNALLY.value, "9999888877776666"),
            (C.MISSING_FROM_FILE.value, ref(charges.adyen_not_listed)),
            (C.FEE_OUT_OF_RANGE.value, ref(charges.adyen_paid)),
        ]
    )
    # The two partial refunds matched their own recorded refunds, and the refunded payment its settlement.
    assert adyen.summary.counts[C.MATCHED] == 3
    (batch,) = adyen.summary.payouts
    assert (batch.batch, batch.computed_net, batch.reported, batch.balances) == ("7", 13330, 13430, False)
    assert [(f.key, f.amount) for f in adyen.summary.fees_by_type] == [("interchange", 200), ("markup", 50)]
    assert [(t.currency, t.settled, t.refunded, t.expected_settled) for t in adyen.summary.totals] == [
        ("EUR", 16200, 2500, 15700)
    ]

    assert (classes_in(aws_world, stripe), stripe.summary.counts[C.MATCHED]) == ([], 3)
    (payout,) = stripe.summary.payouts
    assert (payout.batch, payout.computed_net, payout.reported, payout.balances) == ("po_A", 850, 850, True)
    assert [(f.key, f.amount) for f in stripe.summary.fees_by_type] == [("stripe_fee", 1650)]

    # Saved: one row per report, its discrepancies beside it, as the settlement API reads them.
    saved = {row["provider"]: row for row in saved_reports(private_admin)}
    assert (saved["adyen"]["discrepancy_count"], saved["adyen"]["payouts_balance"]) == (4, False)
    assert (saved["stripe"]["discrepancy_count"], saved["stripe"]["payouts_balance"]) == (0, True)
    rows = saved_discrepancies(private_admin, adyen.summary.report_id)
    fee = next(r for r in rows if r["class"] == C.FEE_OUT_OF_RANGE.value)
    assert (fee["tenant_id"], fee["execution_id"], fee["expected_amount"], fee["reported_amount"]) == (
        charges.adyen_paid.tenant_id,
        charges.adyen_paid.id,
        210,
        250,
    )
    mismatch = next(r for r in rows if r["class"] == C.PAYOUT_MISMATCH.value)
    assert (mismatch["batch"], mismatch["expected_amount"], mismatch["reported_amount"], mismatch["line_number"]) == (
        "7",
        13330,
        13430,
        7,
    )

    # Rendered: JSON, CSV and an HTML page a finance person can open; the period's index names both.
    assert adyen.keys is not None
    csv_rows = list(csv.DictReader(io.StringIO(stored_text(aws_world.s3, adyen.keys.csv))))
    assert sorted(r["class"] for r in csv_rows) == sorted(c for c, _ in classes_in(aws_world, adyen))
    html = stored_text(aws_world.s3, adyen.keys.html)
    assert all(f'id="{section}"' in html for section in ("summary", "payouts", "fees", "discrepancies"))
    index = stored_json(aws_world.s3, period_index_key(SettlementPeriod.daily(day)))
    assert sorted(r["provider"] for r in index["reports"]) == ["adyen", "stripe"]

    # Announced, once per report, after it was saved.
    events = {e["detail"]["provider"]: e["detail"] for e in aws_world.received()}
    assert (events["adyen"]["report_id"], events["adyen"]["payouts_balance"]) == (str(adyen.summary.report_id), False)
    assert [p["batch"] for p in events["adyen"]["payouts_unbalanced"]] == ["7"]
    assert events["stripe"]["discrepancy_count"] == 0
    assert run.summary()["payouts_balance"] is False


def test_a_rerun_of_the_same_files_changes_nothing_and_a_late_file_supersedes_the_report(
    db: Connection, app_db: Connection, private_admin: Connection, aws_world: Aws
) -> None:
    charges = Charges(app_db, private_admin)
    day = today()
    put_file(aws_world.s3, adyen_key(day, 7), charges.adyen_file(day, payout="-133.30"))
    first = report_of(service(db, aws_world).run(SettlementPeriod.daily(day)), "adyen")
    discrepancies = saved_discrepancies(private_admin, first.summary.report_id)

    again = report_of(service(db, aws_world).run(SettlementPeriod.daily(day)), "adyen")

    assert (again.summary.report_id, again.created, again.supersedes) == (first.summary.report_id, False, None)
    assert saved_discrepancies(private_admin, first.summary.report_id) == discrepancies
    assert len(saved_reports(private_admin, "adyen")) == 1
    events = [e for e in aws_world.received() if e["detail"]["provider"] == "adyen"]
    # At least once: the re-run announces the same report again, saying it is not new.
    assert [(e["detail"]["report_id"], e["detail"]["created"]) for e in events] == [
        (str(first.summary.report_id), True),
        (str(first.summary.report_id), False),
    ]

    # A late batch for the same day: the unlisted payment was in it.
    late = adyen_file(
        adyen_row("Settled", ref(charges.adyen_not_listed), gross="7.00", net="6.90", cells=creation(day, 8)),
        adyen_row("MerchantPayout", "", net="-6.90", cells=creation(day, 8)),
    )
    put_file(aws_world.s3, adyen_key(day, 8), late)

    latest = report_of(service(db, aws_world).run(SettlementPeriod.daily(day)), "adyen")

    assert (latest.created, latest.supersedes) == (True, first.summary.report_id)
    assert [f.source for f in latest.summary.files] == [adyen_key(day, 7), adyen_key(day, 8)]
    assert C.MISSING_FROM_FILE.value not in {c for c, _ in classes_in(aws_world, latest)}
    assert [p.batch for p in latest.summary.payouts] == ["7", "8"]
    assert [(r["id"], r["superseded_by"]) for r in saved_reports(private_admin, "adyen")] == [
        (first.summary.report_id, latest.summary.report_id),
        (latest.summary.report_id, None),
    ]
    assert latest.keys is not None
    assert stored_json(aws_world.s3, latest.keys.json)["supersedes"] == str(first.summary.report_id)
    index = stored_json(aws_world.s3, period_index_key(SettlementPeriod.daily(day)))
    current = {r["provider"]: UUID(r["report_id"]) for r in index["reports"]}
    assert current["adyen"] == latest.summary.report_id
    assert first.keys is not None
    assert first.keys.json in report_keys(aws_world.s3)


def test_a_stripe_report_in_the_adyen_folder_is_a_file_error_and_the_run_goes_on(
    db: Connection, app_db: Connection, private_admin: Connection, aws_world: Aws
) -> None:
    charges = Charges(app_db, private_admin)
    day = today()
    put_file(aws_world.s3, adyen_key(day, 7), charges.stripe_file())
    put_file(aws_world.s3, stripe_key(day), charges.stripe_file())

    run = service(db, aws_world).run(SettlementPeriod.daily(day))

    adyen = report_of(run, "adyen")
    assert [dict(e) for e in adyen.summary.file_errors] == [
        {"source": adyen_key(day, 7), "reason": "header fits no known format of adyen: it is a stripe report"}
    ]
    assert {c for c, _ in classes_in(aws_world, adyen)} == {C.MISSING_FROM_FILE.value}
    assert report_of(run, "stripe").summary.discrepancy_count == 0
