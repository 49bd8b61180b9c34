"""The staged fast path against the row-by-row path: the same files and database give the same report, line for line.

Real PostgreSQL as billing_worker (the settlement function's role): executions completed at Adyen through the
repository, refunds and chargebacks recorded as the webhook path records them, fee bands per tenant. Each run is
reconciled twice, once staged (billing.settlement.reconciliation.staged over billing.db.settlement_staging) and once
row by row, and the two summaries and discrepancy lists must be equal; a recording staging shows the fast path was
really taken (or really refused) each time.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.settlement_queries import PostgresExecutionLookup
from billing.db.settlement_staging import PostgresSettlementStaging
from billing.domain.execution import Execution
from billing.domain.reversals import ReversalKind
from billing.settlement.formats.adyen_sdr import CLASSIC_HEADER
from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.period import SettlementPeriod
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.reconciliation.ports import MatchedSums, StagedLine
from billing.settlement.reconciliation.reading import SettlementFile
from tests.integration.settlement_run_rig import completed_at_provider, provider_reversal
from tests.unit.settlement.reconciliation_factories import ADYEN_ROW, adyen_row, file_of

C = DiscrepancyClass
STAGING_TABLES = ("settlement_staging_runs", "settlement_staged_lines", "settlement_staged_matches")
# A layout of another account: columns reordered, Booking Date and a Metadata column of JSON (quoted: it has
# commas), Modification Merchant Reference moved to the end.
VARIANT_HEADER = (
    *reversed([name for name in CLASSIC_HEADER[:23] if name != "Modification Merchant Reference"]),
    "Booking Date",
    "Booking Date TimeZone",
    "Metadata",
    "Modification Merchant Reference",
)


class RecordingStaging(PostgresSettlementStaging):
    """The real staging, noting whether a run was decided and how many lines it matched."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.decided: list[MatchedSums] | None = None
        self.left: int = 0
        self.staged: list[StagedLine] = []

    def decide(self, run: UUID, provider: str) -> list[MatchedSums]:
        self.decided = super().decide(run, provider)
        return self.decided

    def stage(self, run: UUID, file: int, lines: Iterable[StagedLine]) -> None:
        def noted() -> Iterator[StagedLine]:
            for line in lines:
                self.staged.append(line)
                yield line

        super().stage(run, file, noted())

    def left_over(self, run: UUID) -> Iterator[tuple[int, int]]:
        for row in super().left_over(run):
            self.left += 1
            yield row

    @property
    def matched(self) -> int:
        return sum(s.items for s in self.decided or [])


def sdr(header: Sequence[str], *rows: Mapping[str, str], extra_lines: Iterable[tuple[int, str]] = ()) -> bytes:
    """An SDR file of `header`; `extra_lines` are raw lines inserted before the data row of that index."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    inserted = dict(extra_lines)
    for index, cells in enumerate(rows):
        if index in inserted:
            buffer.write(inserted[index] + "\n")
        values = {**ADYEN_ROW, "Booking Date": "", "Booking Date TimeZone": "", "Metadata": "", **cells}
        writer.writerow([values.get(name, "") for name in header])
    return buffer.getvalue().encode()


def ref(execution: Execution) -> str:
    assert execution.provider_reference is not None
    return execution.provider_reference


def psp() -> str:
    return "P" + uuid4().hex[:15].upper()


def both_ways(
    db: Connection,
    period: SettlementPeriod,
    files: Sequence[SettlementFile],
    lookback: Sequence[SettlementFile] = (),
) -> tuple[tuple[ReportSummary, list[Discrepancy]], tuple[ReportSummary, list[Discrepancy]], RecordingStaging]:
    """The run staged, the run row by row, and the staging the first one used."""
    generated_at = period.end_at + timedelta(hours=3)
    staging = RecordingStaging(db)
    outcomes = []
    for chosen in (staging, None):
        reconciler = Reconciler(PostgresExecutionLookup(db), staging=chosen, chunk_records=3)
        with reconciler.run(
            provider="adyen", period=period, files=files, lookback=lookback, generated_at=generated_at
        ) as reconciled:
            outcomes.append((reconciled.summary, list(reconciled.discrepancies())))
    return outcomes[0], outcomes[1], staging


def staged_rows(admin: Connection) -> dict[str, int]:
    return {
        table: admin.execute(f"select count(*) as n from billing.{table}").fetchone()["n"]  # type: ignore[index]
        for table in STAGING_TABLES
    }


class Day:
    """A day at Adyen with something of every kind for the files to say about it."""

    def __init__(self, app_db: Connection, admin: Connection) -> None:
        def made(amount: int = 1000, currency: str = "EUR", reference: str | None = None) -> Execution:
            return completed_at_provider(app_db, "adyen", reference or psp(), amount=amount, currency=currency)

        self.plain = [made(1000 + n) for n in range(6)]
        self.banded = made(10000)  # 1.10-2.10 EUR on 100.00 for visa: charged 2.50
        self.banded_any_method = made(20000)  # 0-1 % for any method: charged 1.00, inside
        self.amount_changed = made(3000)
        self.currency_changed = made(3100)
        self.refunded = made(5000)
        provider_reversal(app_db, self.refunded, ReversalKind.REFUND, 1000)
        provider_reversal(app_db, self.refunded, ReversalKind.REFUND, 1500)
        self.charged_back = made(4000)
        provider_reversal(app_db, self.charged_back, ReversalKind.CHARGEBACK, 4000)
        self.duplicated = made(1200)
        self.listed_in_two_files = made(1300)
        self.listed_yesterday = made(1400)
        self.not_listed = made(700)
        self.yen = made(1500, "JPY")
        self.quoted = made(1600)
        self.amsterdam = made(1700)
        self.fx = made(1800)
        self.no_batch = made(1900)
        self.shared_reference = psp()
        self.ambiguous = [made(2000, reference=self.shared_reference), made(2000, reference=self.shared_reference)]
        self.bad_date = made(2100)
        self.metadata = made(2200)
        for execution, method, low, high, fixed in (
            (self.banded, "visa", 100, 200, 10),
            (self.banded_any_method, "*", 0, 100, 0),
        ):
            admin.execute(
                "insert into billing.settlement_fee_bands"
                " (tenant_id, provider, payment_method, currency, min_basis_points, max_basis_points, fixed_minor)"
                " values (%s, 'adyen', %s, 'EUR', %s, %s, %s)",
                [execution.tenant_id, method, low, high, fixed],
            )
        admin.commit()

    def settled(self, execution: Execution, gross: str, **cells: Any) -> dict[str, str]:
        fees = cells.pop("fees", None)
        return adyen_row(
            "Settled",
            ref(execution),
            gross=gross,
            net=cells.pop("net", gross),
            merchant_reference=str(execution.id),
            fees=fees,
            cells=cells,
        )

    def first_file(self, day: date) -> bytes:
        when = {"Creation Date": f"{day.isoformat()} 09:00:00", "TimeZone": "UTC", "Batch Number": "7"}
        rows = [
            *(self.settled(e, f"{e.amount // 100}.{e.amount % 100:02d}", **when) for e in self.plain[:4]),
            self.settled(
                self.banded, "100.00", net="97.50", fees={"Markup (NC)": "0.50", "Interchange (NC)": "2.00"}, **when
            ),
            self.settled(self.banded_any_method, "200.00", net="199.00", fees={"Commission (NC)": "1.00"}, **when),
            self.settled(self.amount_changed, "31.00", **when),
            self.settled(self.currency_changed, "31.00", **{**when, "Gross Currency": "USD", "Net Currency": "USD"}),
            self.settled(self.refunded, "50.00", **when),
            adyen_row("Refunded", ref(self.refunded), gross="-15.00", net="-15.00", modification="r1", cells=when),
            adyen_row("Refunded", ref(self.refunded), gross="-10.00", net="-10.00", modification="r2", cells=when),
            self.settled(self.charged_back, "40.00", **when),
            adyen_row(
                "Chargeback", ref(self.charged_back), gross="-40.00", net="-40.00", modification="cb", cells=when
            ),
            self.settled(self.duplicated, "12.00", **when),
            self.settled(self.duplicated, "12.00", **when),
            self.settled(self.listed_in_two_files, "13.00", **when),
            self.settled(self.yen, "1500", **{**when, "Gross Currency": "JPY", "Net Currency": "JPY"}),
            self.settled(self.quoted, "16.00", **{**when, "Merchant Account": "Shop, Amsterdam"}),
            self.settled(self.amsterdam, "17.00", **{**when, "TimeZone": "Europe/Amsterdam"}),
            self.settled(self.fx, "18.00", net="19.50", **{**when, "Net Currency": "USD", "Exchange Rate": "1.0833"}),
            self.settled(self.no_batch, "19.00", **{**when, "Batch Number": ""}),
            *(self.settled(e, "20.00", **when) for e in self.ambiguous[:1]),
            self.settled(self.bad_date, "21.00", **{**when, "Creation Date": f"{day.year}-02-30 09:00:00"}),
            adyen_row("Settled", "PUNKNOWN0000001", gross="9.00", net="9.00", cells=when),
            adyen_row("Settled", ref(self.plain[4]), gross="10,04", net="10.04", cells=when),  # quoted, and bad
            adyen_row("Fee", "", net="-25.00", modification="Fee batch 7", cells={**when, "Payment Method": ""}),
            adyen_row("ReserveAdjustment", "", net="-1.00", cells=when),
            adyen_row("MerchantPayout", "", net="-300.00", cells=when),
        ]
        return sdr(CLASSIC_HEADER, *rows, extra_lines=[(3, ""), (5, "Settled,too,few,cells")])

    def second_file(self, day: date) -> bytes:
        when = {"Creation Date": f"{day.isoformat()} 18:30:00", "TimeZone": "CET", "Batch Number": "8"}
        rows = [
            self.settled(self.plain[5], "10.05", **when),
            self.settled(self.listed_in_two_files, "13.00", **when),
            self.settled(self.metadata, "22.00", **{**when, "Metadata": '{"order": "A-1", "lines": 2}'}),
            adyen_row("MerchantPayout", "", net="-45.05", cells=when),
        ]
        return sdr(VARIANT_HEADER, *rows)

    def yesterdays_file(self, day: date) -> bytes:
        when = {"Creation Date": f"{day.isoformat()} 23:59:00", "TimeZone": "UTC", "Batch Number": "6"}
        return sdr(CLASSIC_HEADER, self.settled(self.listed_yesterday, "14.00", **when))


@pytest.fixture
def day_at_adyen(app_db: Connection, private_admin: Connection) -> Day:
    return Day(app_db, private_admin)


def today() -> date:
    return datetime.now(UTC).date()


def files_of(day: date, world: Day) -> tuple[list[SettlementFile], list[SettlementFile]]:
    folder = f"settlements/adyen/{day.isoformat()}"
    yesterday = day - timedelta(days=1)
    return (
        [
            file_of(f"{folder}/settlement_detail_report_batch_7.csv", world.first_file(day), chunk=4096),
            file_of(f"{folder}/settlement_detail_report_batch_8.csv", world.second_file(day), chunk=5),
        ],
        [file_of(f"settlements/adyen/{yesterday}/settlement_detail_report_batch_6.csv", world.yesterdays_file(day))],
    )


def test_a_staged_run_reports_exactly_what_the_row_by_row_run_reports(
    db: Connection, private_admin: Connection, day_at_adyen: Day
) -> None:
    day = today()
    period = SettlementPeriod.daily(day)
    files, lookback = files_of(day, day_at_adyen)

    staged, row_by_row, staging = both_ways(db, period, files, lookback)

    assert dataclasses.asdict(staged[0]) == dataclasses.asdict(row_by_row[0])
    assert staged[1] == row_by_row[1]
    # The fast path was taken: the database matched the plain rows, the Python matcher saw the rest.
    assert staging.decided is not None
    # plain (5 of 6: one row is bad), one banded, the yen, quoted, Amsterdam, batchless, metadata, yesterday's
    assert staging.matched == 12
    assert staging.left == sum(r.records + r.line_errors for r in staged[0].files) - staging.matched
    summary = staged[0]
    assert {c: n for c, n in summary.counts.items() if n} == {
        # 11 decided in the database; the refunded and charged-back payments with their three reversals, the FX
        # row, and the first listing of the duplicated and of the twice-listed payment
        C.MATCHED: 11 + 8,
        C.AMOUNT_MISMATCH: 1,
        C.CURRENCY_MISMATCH: 1,
        C.FEE_OUT_OF_RANGE: 1,
        C.DUPLICATE_IN_FILE: 2,
        C.MISSING_INTERNALLY: 1,
        C.AMBIGUOUS_REFERENCE: 1,
        C.MISSING_FROM_FILE: 3,  # not listed; listed only on a bad line (the amount, the date)
        C.UNMAPPED_TYPE: 1,
        C.PAYOUT_MISMATCH: 1,  # batch 7; batch 8 balances
    }
    assert summary.line_error_count == 4  # the blank line, the short one, the 30th of February, "10,04"
    assert [e["line"] for e in summary.line_errors] == [5, 8, 26, 28]
    assert [f.format for f in summary.files] == ["adyen_sdr", "adyen_sdr", "adyen_sdr"]
    assert staged_rows(private_admin) == dict.fromkeys(STAGING_TABLES, 0)


def test_a_file_with_a_field_across_lines_is_read_row_by_row_and_nothing_stays_staged(
    db: Connection, private_admin: Connection, day_at_adyen: Day
) -> None:
    day = today()
    files, lookback = files_of(day, day_at_adyen)
    when = {"Creation Date": f"{day.isoformat()} 10:00:00", "TimeZone": "UTC"}
    across = sdr(CLASSIC_HEADER, day_at_adyen.settled(day_at_adyen.plain[0], "10.00",
                                                       **{**when, "Merchant Account": "two\nlines"}))  # fmt: skip
    files = [*files, file_of(f"settlements/adyen/{day}/settlement_detail_report_batch_9.csv", across)]

    staged, row_by_row, staging = both_ways(db, SettlementPeriod.daily(day), files, lookback)

    assert staging.decided is None
    assert (dataclasses.asdict(staged[0]), staged[1]) == (dataclasses.asdict(row_by_row[0]), row_by_row[1])
    assert staged_rows(private_admin) == dict.fromkeys(STAGING_TABLES, 0)


def test_a_file_that_is_not_utf8_or_has_no_header_is_not_staged(db: Connection, day_at_adyen: Day) -> None:
    day = today()
    files, _ = files_of(day, day_at_adyen)
    for content in (b"", files_and_bytes(files[0]).replace(b"visa", b"vis\xe4", 1)):
        broken = file_of(f"settlements/adyen/{day}/settlement_detail_report_batch_5.csv", content)
        staged, row_by_row, staging = both_ways(db, SettlementPeriod.daily(day), [*files, broken])
        assert staging.decided is None
        assert (dataclasses.asdict(staged[0]), staged[1]) == (dataclasses.asdict(row_by_row[0]), row_by_row[1])


def files_and_bytes(file: SettlementFile) -> bytes:
    return b"".join(file.open())


def test_a_new_run_deletes_what_a_run_that_died_a_day_ago_left_staged(
    db: Connection, private_admin: Connection
) -> None:
    dead, recent = uuid4(), uuid4()
    for run, started in ((dead, "now() - interval '25 hours'"), (recent, "now() - interval '10 minutes'")):
        private_admin.execute(
            "insert into billing.settlement_staging_runs (run_id, provider, started_at)"
            f" values (%s, 'adyen', {started})",
            [run],
        )
        private_admin.execute(
            "insert into billing.settlement_staged_lines (run_id, file, line_number, psp_reference)"
            " values (%s, 0, 2, 'x')",
            [run],
        )
        private_admin.execute(
            "insert into billing.settlement_staged_matches (run_id, file, line_number, tenant_id, execution_id)"
            " values (%s, 0, 2, %s, %s)",
            [run, uuid4(), uuid4()],
        )
    private_admin.commit()

    run = PostgresSettlementStaging(db).begin("adyen")

    left = private_admin.execute(
        "select run_id from billing.settlement_staging_runs union all"
        " select run_id from billing.settlement_staged_lines union all"
        " select run_id from billing.settlement_staged_matches"
    ).fetchall()
    assert sorted(str(r["run_id"]) for r in left) == sorted([str(recent)] * 3 + [str(run)])


def test_only_the_worker_may_touch_the_staged_lines(app_db: Connection) -> None:
    for table in STAGING_TABLES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app_db.transaction():
            app_db.execute(f"select count(*) from billing.{table}")
    for call in ("billing.discard_settlement_run(gen_random_uuid())", "billing.discard_stale_settlement_runs()"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), app_db.transaction():
            app_db.execute(f"select {call}")


def test_the_worker_deletes_staged_rows_only_through_the_discard_functions(db: Connection) -> None:
    for table in STAGING_TABLES:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute(f"delete from billing.{table}")


def test_a_payment_method_that_could_be_a_card_number_is_not_staged(db: Connection, day_at_adyen: Day) -> None:
    day = today()
    when = {"Creation Date": f"{day.isoformat()} 10:00:00", "TimeZone": "UTC"}
    card_like = {**when, "Payment Method": "4111111111111111"}
    content = sdr(
        CLASSIC_HEADER,
        day_at_adyen.settled(day_at_adyen.plain[0], "10.00", **card_like),
        day_at_adyen.settled(day_at_adyen.plain[1], "10.01", **when),
    )
    files = [file_of(f"settlements/adyen/{day}/settlement_detail_report_batch_9.csv", content)]

    staged, row_by_row, staging = both_ways(db, SettlementPeriod.daily(day), files)

    assert (dataclasses.asdict(staged[0]), staged[1]) == (dataclasses.asdict(row_by_row[0]), row_by_row[1])
    assert [(line.line_number, line.payment_method) for line in staging.staged] == [(2, None), (3, "visa")]
    assert staging.matched == 1
    assert staged[0].counts[C.MATCHED] == 2
