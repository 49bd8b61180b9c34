"""Report periods: a daily or weekly span of UTC days, [start, end) with `end` exclusive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import assert_never

from billing.resource_names import ReportPeriod

_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class SettlementPeriod:
    """The UTC days [start, end) one report covers."""

    kind: ReportPeriod
    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError("a period ends after it starts")

    @classmethod
    def daily(cls, day: date) -> SettlementPeriod:
        return cls(ReportPeriod.DAILY, day, day + _ONE_DAY)

    @classmethod
    def weekly(cls, day: date) -> SettlementPeriod:
        """The ISO week (Monday to Sunday) holding `day`."""
        monday = day - timedelta(days=day.weekday())
        return cls(ReportPeriod.WEEKLY, monday, monday + timedelta(days=7))

    @classmethod
    def of(cls, kind: ReportPeriod, day: date) -> SettlementPeriod:
        """The daily period of `day`, or the ISO week holding it."""
        match kind:
            case ReportPeriod.DAILY:
                return cls.daily(day)
            case ReportPeriod.WEEKLY:
                return cls.weekly(day)
            case _:
                assert_never(kind)

    @classmethod
    def previous(cls, kind: ReportPeriod, today: date) -> SettlementPeriod:
        """What a schedule reports on: yesterday, or the ISO week before the current one."""
        match kind:
            case ReportPeriod.DAILY:
                return cls.daily(today - _ONE_DAY)
            case ReportPeriod.WEEKLY:
                return cls.weekly(today - timedelta(days=7))
            case _:
                assert_never(kind)

    def days(self) -> list[date]:
        return [self.start + timedelta(days=n) for n in range((self.end - self.start).days)]

    @property
    def start_at(self) -> datetime:
        return datetime.combine(self.start, time(0), UTC)

    @property
    def end_at(self) -> datetime:
        return datetime.combine(self.end, time(0), UTC)

    def contains(self, moment: datetime | None) -> bool:
        return moment is not None and self.start_at <= moment < self.end_at

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "start": self.start.isoformat(), "end": self.end.isoformat()}
