"""Provider files, our executions and a database stand-in for the reconciliation engine's pure tests.

Files are written in each provider's real layout (the parsers' own column names), so the tests run the same path a
file from S3 takes: bytes -> parser -> engine. Tests state only the cells that matter.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID, uuid4

from billing.domain.reversals import ReversalKind
from billing.domain.status import ExecutionStatus
from billing.settlement.formats.adyen_sdr import CLASSIC_HEADER
from billing.settlement.formats.records import ProviderRecord, RecordKind
from billing.settlement.period import SettlementPeriod
from billing.settlement.reconciliation.fee_bands import FeeBand
from billing.settlement.reconciliation.matching import Candidates
from billing.settlement.reconciliation.ours import OurExecution, RecordedReversal
from billing.settlement.reconciliation.reading import SettlementFile

DAY = date(2026, 4, 10)  # a Friday
PERIOD = SettlementPeriod.daily(DAY)
NOON = datetime.combine(DAY, time(12), UTC)
AFTER_THE_DAY = datetime(2026, 4, 11, 2, tzinfo=UTC)

ADYEN_ROW: Mapping[str, str] = {
    "Company Account": "TestCompany",
    "Merchant Account": "TestMerchant",
    "Psp Reference": "",
    "Merchant Reference": "",
    "Payment Method": "visa",
    "Creation Date": "2026-04-10 10:11:12",
    "TimeZone": "CET",
    "Type": "Settled",
    "Modification Reference": "",
    "Gross Currency": "EUR",
    "Gross Debit (GC)": "",
    "Gross Credit (GC)": "",
    "Exchange Rate": "1",
    "Net Currency": "EUR",
    "Net Debit (NC)": "",
    "Net Credit (NC)": "",
    "Commission (NC)": "",
    "Markup (NC)": "",
    "Scheme Fees (NC)": "",
    "Interchange (NC)": "",
    "Payment Method Variant": "visaclassic",
    "Modification Merchant Reference": "",
    "Batch Number": "42",
}

STRIPE_HEADER = (
    "automatic_payout_id",
    "balance_transaction_id",
    "created_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "payment_method_type",
    "payment_metadata[execution_id]",
    "payment_metadata[tenant_id]",
)


def csv_bytes(header: Sequence[str], rows: Sequence[Mapping[str, str]], defaults: Mapping[str, str]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for cells in rows:
        values = {**defaults, **cells}
        writer.writerow([values.get(name, "") for name in header])
    return buffer.getvalue().encode()


def adyen_row(
    kind: str,
    psp: str,
    *,
    gross: str = "",
    net: str = "",
    merchant_reference: str = "",
    modification: str = "",
    fees: Mapping[str, str] | None = None,
    cells: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """One SDR row. gross/net are signed major units (+ credit, - debit) in the row's currencies."""
    row: dict[str, str] = {"Type": kind, "Psp Reference": psp, "Merchant Reference": merchant_reference}
    row["Modification Reference"] = modification
    for side, value in (("Gross", gross), ("Net", net)):
        if value.startswith("-"):
            row[f"{side} Debit ({side[0]}C)"] = value[1:]
        elif value:
            row[f"{side} Credit ({side[0]}C)"] = value
    for column, value in (fees or {}).items():
        row[column] = value
    row.update(cells or {})
    return row


def adyen_file(*rows: Mapping[str, str]) -> bytes:
    return csv_bytes(CLASSIC_HEADER, rows, ADYEN_ROW)


def stripe_row(
    category: str,
    intent: str,
    *,
    gross: str,
    fee: str = "0.00",
    net: str | None = None,
    payout: str = "po_1",
    execution_id: str = "",
    transaction: str | None = None,
    **cells: str,
) -> dict[str, str]:
    from decimal import Decimal

    computed = net if net is not None else str(Decimal(gross) - Decimal(fee))
    return {
        "automatic_payout_id": payout,
        "balance_transaction_id": transaction or f"txn_{uuid4().hex[:12]}",
        "created_utc": "2026-04-10 09:15:00",
        "currency": "eur",
        "gross": gross,
        "fee": fee,
        "net": computed,
        "reporting_category": category,
        "source_id": "",
        "charge_id": f"ch_{intent[3:]}" if intent else "",
        "payment_intent_id": intent,
        "payment_method_type": "card",
        "payment_metadata[execution_id]": execution_id,
        **cells,
    }


def stripe_file(*rows: Mapping[str, str]) -> bytes:
    return csv_bytes(STRIPE_HEADER, rows, {})


def sandbox_file(*rows: str, fee: bool = True) -> bytes:
    header = "provider_reference,amount,currency,status,settled_at" + (",fee" if fee else "")
    return ("\n".join((header, *rows)) + "\n").encode()


def file_of(source: str, content: bytes, *, day: date | None = None, chunk: int = 7) -> SettlementFile:
    """A file streamed in small chunks, so every test also crosses chunk boundaries mid-line."""

    def opened() -> Iterator[bytes]:
        for start in range(0, len(content), chunk):
            yield content[start : start + chunk]

    return SettlementFile(source, opened, day)


def ours(reference: str | None = "psp_a", **overrides: Any) -> OurExecution:
    reversals = overrides.pop("reversals", ())
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "provider": "adyen",
        "provider_reference": reference,
        "amount": 1999,
        "currency": "EUR",
        "status": ExecutionStatus.COMPLETED,
        "submitted_at": NOON,
        "finished_at": NOON,
        "reversals": tuple(
            r if isinstance(r, RecordedReversal) else RecordedReversal(ReversalKind(r[0]), r[1]) for r in reversals
        ),
    }
    fields.update(overrides)
    return OurExecution(**fields)


def record(reference: str | None = "psp_a", kind: RecordKind = RecordKind.SETTLED, **overrides: Any) -> ProviderRecord:
    """A parsed row, for Matcher tests that need no file."""
    gross = overrides.pop("gross", 1999 if kind is not RecordKind.REFUNDED else -1999)
    fields: dict[str, Any] = {
        "provider": "adyen",
        "source": "settlements/adyen/2026-04-10/batch_42.csv",
        "line_number": 2,
        "kind": kind,
        "raw_type": kind.value,
        "provider_reference": reference,
        "secondary_reference": None,
        "merchant_reference": None,
        "payment_method": "visa",
        "created_at": NOON,
        "gross_amount": gross,
        "gross_currency": "EUR",
        "net_amount": gross,
        "net_currency": "EUR",
        "fees": {},
        "batch": "42",
        "exchange_rate": None,
        "metadata": {},
    }
    fields.update(overrides)
    return ProviderRecord(**fields)


def found(*executions: OurExecution) -> Candidates:
    return Candidates.of(list(executions))


@dataclass
class FakeLookup:
    """The database as the engine sees it: executions and fee bands, with the calls it was asked."""

    executions: list[OurExecution] = field(default_factory=list)
    bands: list[FeeBand] = field(default_factory=list)
    finds: list[tuple[int, int]] = field(default_factory=list)

    def find(self, provider: str, references: Collection[str], execution_ids: Collection[UUID]) -> list[OurExecution]:
        self.finds.append((len(references), len(execution_ids)))
        by_reference = [e for e in self.executions if e.provider == provider and e.provider_reference in references]
        known = {e.execution_id for e in by_reference}
        by_id = [
            e
            for e in self.executions
            if e.provider == provider and e.execution_id in execution_ids and e.execution_id not in known
        ]
        return by_reference + by_id

    def completed(self, provider: str, start: datetime, end: datetime) -> Iterator[list[OurExecution]]:
        done = [
            e
            for e in self.executions
            if e.provider == provider
            and e.status is ExecutionStatus.COMPLETED
            and e.provider_reference is not None
            and e.finished_at is not None
            and start <= e.finished_at < end
        ]
        done.sort(key=lambda e: (e.finished_at or NOON, str(e.tenant_id), str(e.execution_id)))
        for page in range(0, len(done), 2):
            yield done[page : page + 2]

    def fee_bands(self, provider: str) -> list[FeeBand]:
        return [b for b in self.bands if b.provider == provider]
