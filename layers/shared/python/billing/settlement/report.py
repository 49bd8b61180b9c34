"""Where a settlement report is written and how it is rendered as JSON and CSV, streamed (the HTML: html_report).

One report per provider and period, under keys named by its id, so a report once written is never overwritten by
another (the same files give the same id, and the same objects again):

    reports/<daily|weekly>/<start>_<end>/<provider>/<report_id>.json|.csv|.html     (end exclusive)

and one index per period, at the key the period's report has always had, naming the current report of each
provider and where it is: reports/<daily|weekly>/<start>_<end>.json.

The JSON holds the summary (outcome.ReportSummary.as_dict()) and every discrepancy, worst class first; the CSV is
the discrepancy list alone, one row per item, for working through in a spreadsheet. Amounts are integers of minor
units in both. Both are produced as a stream of byte chunks from the spooled discrepancies, never held whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from billing.settlement.outcome import Discrepancy, ReportSummary
from billing.settlement.period import SettlementPeriod

REPORTS_PREFIX: Final = "reports/"
REPORT_FORMAT_VERSION: Final = 2
JSON_CONTENT_TYPE: Final = "application/json"
CSV_CONTENT_TYPE: Final = "text/csv; charset=utf-8"
HTML_CONTENT_TYPE: Final = "text/html; charset=utf-8"
CSV_COLUMNS: Final = (
    "id",
    "class",
    "also",
    "source",
    "line",
    "provider_reference",
    "record_kind",
    "batch",
    "payment_method",
    "tenant_id",
    "execution_id",
    "expected_amount",
    "expected_currency",
    "reported_amount",
    "reported_currency",
    "detail",
)
# Rows per CSV chunk and discrepancies per JSON chunk: a few hundred KB per write.
_ROWS_PER_CHUNK: Final = 2000
# A spreadsheet runs a cell that starts with one of these as a formula; text from a provider's file must not be.
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def period_stem(period: SettlementPeriod) -> str:
    return f"{REPORTS_PREFIX}{period.kind.value}/{period.start.isoformat()}_{period.end.isoformat()}"


def period_index_key(period: SettlementPeriod) -> str:
    """The period's index: which report is current for each provider (the key the period's report always had)."""
    return f"{period_stem(period)}.json"


@dataclass(frozen=True, slots=True)
class ReportKeys:
    """Where one report's renderings are; the same report id always gets the same keys."""

    json: str
    csv: str
    html: str

    @classmethod
    def for_report(cls, period: SettlementPeriod, provider: str, report_id: UUID) -> ReportKeys:
        stem = f"{period_stem(period)}/{provider}/{report_id}"
        return cls(json=f"{stem}.json", csv=f"{stem}.csv", html=f"{stem}.html")

    def as_dict(self) -> dict[str, str]:
        return {"json": self.json, "csv": self.csv, "html": self.html}


def report_document_head(summary: ReportSummary) -> dict[str, Any]:
    return {"report": "settlement_reconciliation", "format_version": REPORT_FORMAT_VERSION, **summary.as_dict()}


def json_chunks(
    summary: ReportSummary, discrepancies: Iterable[Discrepancy], *, extra: Mapping[str, Any] | None = None
) -> Iterator[bytes]:
    """{"report": ..., <summary>, <extra>, "discrepancies": [...]} as UTF-8 chunks, one discrepancy per line."""
    head = json.dumps({**report_document_head(summary), **(extra or {})}, ensure_ascii=False, indent=1)
    # The head is a non-empty object: drop its closing brace and continue it with the list.
    yield (head[: head.rindex("}")].rstrip() + ',\n "discrepancies": [').encode()
    separator = "\n  "
    batch: list[str] = []
    for discrepancy in discrepancies:
        batch.append(separator + json.dumps(discrepancy.as_dict(), ensure_ascii=False))
        separator = ",\n  "
        if len(batch) >= _ROWS_PER_CHUNK:
            yield "".join(batch).encode()
            batch = []
    batch.append("\n ]\n}\n")
    yield "".join(batch).encode()


def csv_chunks(discrepancies: Iterable[Discrepancy]) -> Iterator[bytes]:
    """The CSV_COLUMNS header, then one row per discrepancy, as UTF-8 chunks."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rows, discrepancy in enumerate(discrepancies, start=1):
        writer.writerow(csv_row(discrepancy))
        if rows % _ROWS_PER_CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def csv_row(d: Discrepancy) -> tuple[str | int, ...]:
    return (
        str(d.id),
        d.discrepancy_class.value,
        " ".join(c.value for c in d.also),
        _text(d.source),
        "" if d.line_number is None else d.line_number,
        _text(d.provider_reference),
        d.record_kind or "",
        _text(d.batch),
        _text(d.payment_method),
        "" if d.tenant_id is None else str(d.tenant_id),
        "" if d.execution_id is None else str(d.execution_id),
        "" if d.expected_amount is None else d.expected_amount,
        d.expected_currency or "",
        "" if d.reported_amount is None else d.reported_amount,
        d.reported_currency or "",
        _text(d.detail),
    )


def period_index(period: SettlementPeriod, generated_at: datetime, reports: Sequence[Mapping[str, Any]]) -> bytes:
    """The period's index document: each provider's current report, its figures and its keys."""
    document = {
        "report": "settlement_reconciliation_index",
        "format_version": REPORT_FORMAT_VERSION,
        "period": period.as_dict(),
        "generated_at": generated_at.isoformat(),
        "reports": list(reports),
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode() + b"\n"


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value
