"""The settlement_report function's input and environment, validated before anything is read."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from billing.domain.errors import SettlementPeriodInvalid
from billing.resource_names import ReportPeriod
from billing.settlement.period import SettlementPeriod
from billing.settlement.wiring import SettlementReportCommand, SettlementReportSettings

TODAY = date(2026, 4, 15)  # a Wednesday


def period_for(event: dict[str, Any]) -> SettlementPeriod:
    return SettlementReportCommand.model_validate(event).settlement_period(TODAY)


def test_scheduled_daily_run_reports_yesterday() -> None:
    assert period_for({"period": "daily"}) == SettlementPeriod.daily(date(2026, 4, 14))


def test_scheduled_weekly_run_reports_the_previous_iso_week() -> None:
    assert period_for({"period": "weekly"}) == SettlementPeriod(
        ReportPeriod.WEEKLY, date(2026, 4, 6), date(2026, 4, 13)
    )


def test_a_date_reports_that_day_or_the_iso_week_holding_it() -> None:
    assert period_for({"period": "daily", "date": "2026-03-31"}) == SettlementPeriod.daily(date(2026, 3, 31))
    assert period_for({"period": "weekly", "date": "2026-04-01"}).start == date(2026, 3, 30)


def test_today_may_be_reported_but_not_a_future_day() -> None:
    assert period_for({"period": "daily", "date": "2026-04-15"}).start == TODAY
    with pytest.raises(SettlementPeriodInvalid, match="2026-04-16 is in the future"):
        period_for({"period": "daily", "date": "2026-04-16"})


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"period": "monthly"},
        {"period": "daily", "date": "2026-4-1"},
        {"period": "daily", "date": "2026-04-01T00:00:00Z"},
        {"period": "daily", "date": "2026-02-30"},
        {"period": "daily", "date": 1775001600},
        {"period": "daily", "day": "2026-04-01"},
        {"period": "daily", "dry_run": True},
    ],
)
def test_anything_else_is_refused(event: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SettlementReportCommand.model_validate(event)


def test_settings_require_both_buckets_and_the_event_bus() -> None:
    complete = {"SETTLEMENT_BUCKET": "files", "REPORTS_BUCKET": "reports", "EVENT_BUS_NAME": "billing-events"}
    settings = SettlementReportSettings.model_validate(complete)

    assert (settings.settlement_bucket, settings.reports_bucket, settings.event_bus_name) == (
        "files",
        "reports",
        "billing-events",
    )
    with pytest.raises(ValidationError, match="REPORTS_BUCKET"):
        SettlementReportSettings.model_validate({**complete, "REPORTS_BUCKET": ""})
    with pytest.raises(ValidationError, match="SETTLEMENT_BUCKET"):
        SettlementReportSettings.model_validate({**complete, "SETTLEMENT_BUCKET": ""})
    with pytest.raises(ValidationError, match="EVENT_BUS_NAME"):
        SettlementReportSettings.model_validate({"SETTLEMENT_BUCKET": "files", "REPORTS_BUCKET": "reports"})
