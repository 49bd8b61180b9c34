"""Report periods: UTC days [start, end), ISO weeks, and what a schedule reports on by default."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from billing.resource_names import ReportPeriod
from billing.settlement.period import SettlementPeriod


def test_daily_period_is_one_utc_day_with_an_exclusive_end() -> None:
    period = SettlementPeriod.daily(date(2026, 4, 10))

    assert (period.start, period.end, period.days()) == (date(2026, 4, 10), date(2026, 4, 11), [date(2026, 4, 10)])
    assert period.start_at == datetime(2026, 4, 10, tzinfo=UTC)
    assert period.contains(datetime(2026, 4, 10, tzinfo=UTC))
    assert period.contains(datetime(2026, 4, 11, tzinfo=UTC) - timedelta(microseconds=1))
    assert not period.contains(datetime(2026, 4, 11, tzinfo=UTC))
    assert not period.contains(None)


@pytest.mark.parametrize("day", [date(2026, 4, 6), date(2026, 4, 9), date(2026, 4, 12)])
def test_weekly_period_is_the_iso_week_holding_the_day(day: date) -> None:
    period = SettlementPeriod.weekly(day)

    assert (period.kind, period.start, period.end) == (ReportPeriod.WEEKLY, date(2026, 4, 6), date(2026, 4, 13))
    assert len(period.days()) == 7
    assert period.start.isoweekday() == 1


def test_weekly_period_spans_a_year_end() -> None:
    period = SettlementPeriod.weekly(date(2027, 1, 1))

    assert (period.start, period.end) == (date(2026, 12, 28), date(2027, 1, 4))


@pytest.mark.parametrize(
    ("kind", "today", "start", "end"),
    [
        (ReportPeriod.DAILY, date(2026, 4, 10), date(2026, 4, 9), date(2026, 4, 10)),
        (ReportPeriod.DAILY, date(2026, 3, 1), date(2026, 2, 28), date(2026, 3, 1)),
        # The weekly schedule runs on Monday and reports the week that ended the day before.
        (ReportPeriod.WEEKLY, date(2026, 4, 13), date(2026, 4, 6), date(2026, 4, 13)),
        (ReportPeriod.WEEKLY, date(2026, 4, 15), date(2026, 4, 6), date(2026, 4, 13)),
    ],
)
def test_previous_period_is_yesterday_or_last_iso_week(kind: ReportPeriod, today: date, start: date, end: date) -> None:
    period = SettlementPeriod.previous(kind, today)

    assert (period.kind, period.start, period.end) == (kind, start, end)


def test_a_period_must_end_after_it_starts() -> None:
    with pytest.raises(ValueError, match="ends after it starts"):
        SettlementPeriod(ReportPeriod.DAILY, date(2026, 4, 10), date(2026, 4, 10))
