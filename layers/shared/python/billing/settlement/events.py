"""The event a settlement report puts on the billing bus, and the EventBridge adapter that puts it there.

Why not the outbox: billing.billing_outbox rows are an execution's lifecycle events (tenant_id, aggregate_id =
the execution; sql/20261213_billing_refunds.sql checks at commit that each has its execution event), and a report
is no tenant's and no execution's. So the service publishes directly, once the report is committed and never
inside the transaction. Delivery is at least once: a run that fails after saving is retried by the schedule, finds
its report saved (the same id) and publishes again; consumers de-duplicate on `report_id`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Protocol

from billing.resource_names import SETTLEMENT_EVENT_SOURCE
from billing.settlement.outcome import ReportSummary
from billing.settlement.report import ReportKeys

REPORT_EVENT_TYPE: Final = "billing.settlement.report_generated"
# Payouts named in the event; the report holds them all (PutEvents entries are at most 256 KB).
MAX_PAYOUTS_IN_EVENT: Final = 20


def report_event_detail(
    summary: ReportSummary, keys: ReportKeys, *, created: bool, supersedes: str | None
) -> dict[str, Any]:
    """The event's detail: what the report concluded, small enough for any period."""
    unbalanced = [p.as_dict() for p in summary.payouts if p.reported is not None and not p.balances]
    return {
        "report_id": str(summary.report_id),
        "provider": summary.provider,
        "period": {"start": summary.period_start.isoformat(), "end": summary.period_end.isoformat()},
        "generated_at": summary.generated_at.isoformat(),
        # False: a re-run of the same files; the report was saved (and announced) before.
        "created": created,
        "supersedes": supersedes,
        "discrepancy_count": summary.discrepancy_count,
        "counts": {c.value: n for c, n in summary.counts.items()},
        "payouts_balance": summary.payouts_balance,
        "payouts_unbalanced": unbalanced[:MAX_PAYOUTS_IN_EVENT],
        "totals": [t.as_dict() for t in summary.totals],
        "file_errors": len(summary.file_errors),
        "line_errors": summary.line_error_count,
        "missing_files": len(summary.missing_files),
        "report": keys.as_dict(),
    }


class PutEventsClient(Protocol):
    def put_events(self, *, Entries: Any) -> Mapping[str, Any]: ...  # noqa: N803


class SettlementEventUnpublished(Exception):
    """The bus refused the event; the run fails so the schedule's retry publishes it again."""


class EventBridgeReportPublisher:
    """ReportPublisher over one event bus."""

    def __init__(self, client: PutEventsClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        entry = {
            "Source": SETTLEMENT_EVENT_SOURCE,
            "DetailType": detail_type,
            "Detail": json.dumps(detail, ensure_ascii=False),
            "EventBusName": self._bus_name,
        }
        answer = self._client.put_events(Entries=[entry])
        if answer.get("FailedEntryCount"):
            failed = (answer.get("Entries") or [{}])[0]
            raise SettlementEventUnpublished(f"{failed.get('ErrorCode')}: {failed.get('ErrorMessage')}")


class NoPublisher:
    """For runs nobody listens to (the CLI, a dry run)."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        return None
