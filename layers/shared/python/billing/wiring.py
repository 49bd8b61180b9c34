"""Per-container wiring: settings validated at cold start, clients and connections created on first use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from billing import resource_names as names
from billing.aws.retry_queue import SqsRetryScheduler
from billing.db.connection_provider import ConnectionProvider
from billing.db.execution_repository import ExecutionRepository
from billing.db.reversal_repository import ReversalRepository
from billing.db.roles import DatabaseRole
from billing.domain.backoff import BackoffPolicy
from billing.instruments.charging import ChargeableInstruments
from billing.observability import PowertoolsExecutionObserver
from billing.providers.directory import configured_providers
from billing.providers.routing import ProviderRouter
from billing.rails.ports import PaymentProvider
from billing.risk.postgres import RuleSetStore
from billing.services.execution_driver import ExecutionDriver
from billing.services.execution_service import ExecutionService
from billing.services.refunds import RefundService

_BACKOFF_DEFAULTS = BackoffPolicy()


class BackoffSettings(BaseModel):
    """Retry backoff knobs, shared by every function that schedules retries so they agree on the schedule."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    backoff_base_seconds: float = Field(
        _BACKOFF_DEFAULTS.base_seconds, alias=names.ENV_RETRY_BACKOFF_BASE_SECONDS, gt=0
    )
    backoff_cap_seconds: float = Field(_BACKOFF_DEFAULTS.cap_seconds, alias=names.ENV_RETRY_BACKOFF_CAP_SECONDS, gt=0)

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> Self:
        self.backoff()  # raises ValueError on an inconsistent pair, failing the cold start
        return self

    def backoff(self) -> BackoffPolicy:
        return BackoffPolicy(self.backoff_base_seconds, self.backoff_cap_seconds)


class ExecuteSettings(BackoffSettings):
    """What the execute function reads from its environment; a missing variable fails the cold start."""

    retry_queue_url: str = Field(alias=names.ENV_RETRY_QUEUE_URL, min_length=1)

    @classmethod
    def from_environment(cls) -> ExecuteSettings:
        return cls.model_validate(dict(os.environ))


class ExecuteRuntime:
    """Everything the execute API needs, built once per Lambda container and reused while it is warm."""

    def __init__(self, settings: ExecuteSettings, connections: ConnectionProvider | None = None) -> None:
        self.settings = settings
        self.connections = connections or ConnectionProvider(role=DatabaseRole.APP)

    @cached_property
    def _sqs(self) -> Any:
        import boto3  # deferred: boto3 costs ~100 ms of cold start and only the retry path needs it

        return boto3.client("sqs")

    @cached_property
    def providers(self) -> Mapping[str, PaymentProvider]:
        return configured_providers(DatabaseRole.APP)

    @cached_property
    def router(self) -> ProviderRouter:
        return ProviderRouter(self.providers.keys())

    def execution_service(self) -> ExecutionService:
        conn = self.connections.get()
        repository = ExecutionRepository(conn)
        driver = ExecutionDriver(
            repository,
            self.providers,
            SqsRetryScheduler(self._sqs, self.settings.retry_queue_url),
            PowertoolsExecutionObserver(),
            backoff=self.settings.backoff(),
        )
        instruments = ChargeableInstruments(conn, source="function:execute")
        return ExecutionService(repository, driver, instruments, self.router)

    def rule_sets(self) -> RuleSetStore:
        return RuleSetStore(self.connections.get())

    def reversals(self) -> ReversalRepository:
        return ReversalRepository(self.connections.get())

    def refund_service(self) -> RefundService:
        conn = self.connections.get()
        return RefundService(ExecutionRepository(conn), ReversalRepository(conn), self.providers)
