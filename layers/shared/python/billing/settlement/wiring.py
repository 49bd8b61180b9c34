"""Per-container wiring of the settlement_report function: settings validated at cold start, AWS clients on first
use."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from billing import resource_names as names
from billing.domain.errors import SettlementPeriodInvalid
from billing.resource_names import ReportPeriod
from billing.settlement.period import SettlementPeriod

# Only the settings and the command are needed at cold start; the engine, the store, psycopg and the AWS clients are
# imported by the run that first needs them.
if TYPE_CHECKING:
    from billing.db.connection_provider import ConnectionProvider
    from billing.settlement.ports import ReportPublisher, SettlementObserver
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
    # Where each report's summary event goes (infra: the PUT_EVENTS access).
    event_bus_name: str = Field(alias=names.ENV_EVENT_BUS_NAME, min_length=1)

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
        events: Any | None = None,
        observer: SettlementObserver | None = None,
        clock: Clock = _utc_now,
        config: SettlementReportConfig | None = None,
    ) -> None:
        self.settings = settings
        self._given_connections = connections
        self._s3_client = s3
        self._events_client = events
        self._given_observer = observer
        self._clock = clock
        self._config = config

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return self._given_connections or ConnectionProvider(role=DatabaseRole.WORKER)

    @cached_property
    def _observer(self) -> SettlementObserver:
        from billing.settlement.observability import PowertoolsSettlementObserver

        return self._given_observer or PowertoolsSettlementObserver()

    @cached_property
    def s3(self) -> Any:
        if self._s3_client is not None:
            return self._s3_client
        import boto3  # deferred: boto3 costs ~100 ms of cold start

        return boto3.client("s3")

    @cached_property
    def publisher(self) -> ReportPublisher:
        from billing.settlement.events import EventBridgeReportPublisher

        client = self._events_client
        if client is None:
            import boto3
            from botocore.config import Config

            # One PutEvents per report, after its commit: a short call, retried twice by botocore.
            config = Config(connect_timeout=2, read_timeout=5, retries={"mode": "standard", "max_attempts": 3})
            client = boto3.client("events", config=config)
        return EventBridgeReportPublisher(client, self.settings.event_bus_name)

    def today(self) -> date:
        return self._clock().astimezone(UTC).date()

    def service(self) -> SettlementReportService:
        from billing.settlement.s3 import S3ObjectStore
        from billing.settlement.service import SettlementReportService
        from billing.settlement.store import SettlementReportStore

        return SettlementReportService(
            self.connections.get(),
            S3ObjectStore(self.s3, self.settings.settlement_bucket),
            S3ObjectStore(self.s3, self.settings.reports_bucket),
            self._observer,
            store=SettlementReportStore(),
            publisher=self.publisher,
            clock=self._clock,
            config=self._config,
        )
