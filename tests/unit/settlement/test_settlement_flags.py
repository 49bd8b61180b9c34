"""What a report tells the world: the summary event it puts on the bus and the metric names the alarm watches."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from billing import resource_names as names
from billing.settlement.events import (
    REPORT_EVENT_TYPE,
    EventBridgeReportPublisher,
    SettlementEventUnpublished,
    report_event_detail,
)
from billing.settlement.observability import PAYOUT_MISMATCH_METRIC, discrepancy_metric
from billing.settlement.outcome import DiscrepancyClass
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.report import ReportKeys
from tests.unit.settlement.reconciliation_factories import (
    AFTER_THE_DAY,
    PERIOD,
    FakeLookup,
    adyen_file,
    adyen_row,
    file_of,
    ours,
)


class Bus:
    def __init__(self, answer: Mapping[str, Any]) -> None:
        self.answer = answer
        self.entries: list[dict[str, Any]] = []

    def put_events(self, *, Entries: Any) -> Mapping[str, Any]:  # noqa: N803 - boto3's name
        self.entries.extend(Entries)
        return self.answer


def test_the_alarm_watches_the_metric_the_report_emits() -> None:
    assert discrepancy_metric(DiscrepancyClass.PAYOUT_MISMATCH) == PAYOUT_MISMATCH_METRIC
    assert PAYOUT_MISMATCH_METRIC == names.SETTLEMENT_PAYOUT_MISMATCH_METRIC


def test_the_event_says_what_the_report_concluded_and_where_it_is() -> None:
    content = adyen_file(
        adyen_row("Settled", "8815", gross="19.99", net="19.50"), adyen_row("MerchantPayout", "", net="-19.00")
    )
    with Reconciler(FakeLookup([ours("8815")])).run(
        provider="adyen",
        period=PERIOD,
        files=[file_of("settlements/adyen/2026-04-10/x.csv", content)],
        generated_at=AFTER_THE_DAY,
    ) as done:
        keys = ReportKeys.for_report(PERIOD, "adyen", done.summary.report_id)
        detail = report_event_detail(done.summary, keys, created=True, supersedes=None)

    assert (detail["report_id"], detail["provider"], detail["created"], detail["payouts_balance"]) == (
        str(done.summary.report_id),
        "adyen",
        True,
        False,
    )
    assert [(p["batch"], p["computed_net"], p["reported"]) for p in detail["payouts_unbalanced"]] == [
        ("42", 1950, 1900)
    ]
    assert (detail["counts"]["payout_mismatch"], detail["report"]["html"]) == (1, keys.html)
    assert len(json.dumps(detail)) < 256_000


def test_the_publisher_puts_one_entry_under_the_settlement_source() -> None:
    bus = Bus({"FailedEntryCount": 0, "Entries": [{"EventId": "1"}]})

    EventBridgeReportPublisher(bus, "billing-events").publish(REPORT_EVENT_TYPE, {"report_id": "r"})

    (entry,) = bus.entries
    assert (entry["Source"], entry["DetailType"], entry["EventBusName"], json.loads(entry["Detail"])) == (
        names.SETTLEMENT_EVENT_SOURCE,
        REPORT_EVENT_TYPE,
        "billing-events",
        {"report_id": "r"},
    )


def test_an_event_the_bus_refuses_fails_the_run_so_the_retry_publishes_it() -> None:
    bus = Bus({"FailedEntryCount": 1, "Entries": [{"ErrorCode": "ThrottlingException", "ErrorMessage": "slow down"}]})

    with pytest.raises(SettlementEventUnpublished, match="ThrottlingException: slow down"):
        EventBridgeReportPublisher(bus, "billing-events").publish(REPORT_EVENT_TYPE, {})
