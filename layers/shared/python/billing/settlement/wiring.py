"""Per-container wiring of the settlement_report function: settings validated at cold start, S3 client on first use."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billing import resource_names as names
from billing.db.connection_provider import ConnectionProvider
from billing.db.roles import DatabaseRole
from billing.domain.errors import SettlementPeriodInvalid
from billing.resource_names import ReportPeriod
from billing.settlement.observability import PowertoolsSettlementObserver
from billing.settlement.period import SettlementPeriod
from billing.settlement.ports import SettlementObserver
from billing.settlement.s3 import S3ObjectStore
from billing.settlement.service import SettlementReportConfig, SettlementReportService

Clock = Callable[[], datetime]

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SettlementReportSettings(BaseModel):
    """What the settlement_report function reads from its environment; a missing bucket fails the cold start."""

    model_config = ConfigDict(frozen=True)

    settlement_bucket: str = Field(alias=names.ENV_SETTLEMENT_BUCKET, min_length=1)
    reports_bucket: str = Field(alias=names.ENV_REPORTS_BUCKET, min_length=1)

    @classmethod
    def from_environment(cls) -> SettlementReportSettings:
        return cls.model_validate(dict(os.environ))


class SettlementReportCommand(BaseModel):
    """The function's input: {"period": "daily"|"weekly", "date"?: "YYYY-MM-DD"}.

    Without a date a schedule reports the last complete period: yesterday, or the previous ISO week. With one, an
    operator reports that day, or the ISO week holding it (any day of the week will do).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    period: ReportPeriod
    day: date | None = Field(default=None, alias="date")

    @field_validator("day", mode="before")
    @classmethod
    def _calendar_day(cls, value: Any) -> Any:
        # Exactly YYYY-MM-DD: pydantic alone would also take a timestamp or a datetime string, and guess a day.
        if isinstance(value, str) and not _DAY.fullmatch(value):
            raise ValueError("must be a calendar day, YYYY-MM-DD")
        if not isinstance(value, str | date) or isinstance(value, datetime):
            raise ValueError("must be a calendar day, YYYY-MM-DD")
        return value

    def settlement_period(self, today: date) -> SettlementPeriod:
        if self.day is None:
            return SettlementPeriod.previous(self.period, today)
        if self.day > today:
            raise SettlementPeriodInvalid(f"{self.day.isoformat()} is in the future (today is {today.isoformat()})")
        return SettlementPeriod.of(self.period, self.day)


class SettlementReportRuntime:
    """The settlement report service, built once per container and reused while it is warm."""

    def __init__(
        self,
        settings: SettlementReportSettings,
        connections: ConnectionProvider | None = None,
        *,
        s3: Any | None = None,
        observer: SettlementObserver | None = None,
        clock: Clock = _utc_now,
        config: SettlementReportConfig | None = None,
    ) -> None:
        self.settings = settings
        self.connections = connections or ConnectionProvider(role=DatabaseRole.WORKER)
        self._s3_client = s3
        self._observer = observer or PowertoolsSettlementObserver()
        self._clock = clock
        self._config = config

    @cached_property
    def s3(self) -> Any:
        if self._s3_client is not None:
            return self._s3_client
        import boto3  # deferred: boto3 costs ~100 ms of cold start

        return boto3.client("s3")

    def today(self) -> date:
        return self._clock().astimezone(UTC).date()

    def service(self) -> SettlementReportService:
        return SettlementReportService(
            self.connections.get(),
            S3ObjectStore(self.s3, self.settings.settlement_bucket),
            S3ObjectStore(self.s3, self.settings.reports_bucket),
            self._observer,
            clock=self._clock,
            config=self._config,
        )
