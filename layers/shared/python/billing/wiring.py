"""Per-container wiring: settings validated at cold start, clients and connections created on first use."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from billing import resource_names as names
from billing.domain.backoff import BackoffPolicy

# Only the settings are needed at cold start; services, repositories and providers (psycopg, the provider SDKs, the
# risk rules) are imported by the method that first builds them, on the request that needs them.
if TYPE_CHECKING:
    from billing.authentication.flow import ThreeDSecure
    from billing.authentication.store import AuthenticationRecord
    from billing.db.connection_provider import ConnectionProvider
    from billing.db.reversal_repository import ReversalRepository
    from billing.domain.execution import Execution
    from billing.providers.routing import ProviderRouter
    from billing.rails.ports import PaymentProvider
    from billing.rails.results import NextAction
    from billing.risk.postgres import AssessmentRecord, RuleSetStore
    from billing.risk.reviews import Review
    from billing.services.execution_driver import ExecutionDriver
    from billing.services.execution_service import ExecutionService
    from billing.services.pre_submission import PreSubmission
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
    public_api_url: str = Field(names.DEFAULT_PUBLIC_API_URL, alias=names.ENV_PUBLIC_API_URL, min_length=1)
    provider_return_url: str | None = Field(None, alias=names.ENV_PROVIDER_RETURN_URL)

    @classmethod
    def from_environment(cls) -> ExecuteSettings:
        return cls.model_validate(dict(os.environ))


@dataclass(frozen=True, slots=True)
class RiskView:
    assessments: list[AssessmentRecord]
    review: Review | None
    authentication: AuthenticationRecord | None
    next_action: NextAction | None


class ExecuteRuntime:
    """Everything the execute API needs, built once per Lambda container and reused while it is warm."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.providers.directory",
        "billing.providers.routing",
        "billing.aws.retry_queue",
        "billing.db.execution_repository",
        "billing.services.execution_driver",
        "billing.services.execution_service",
        "billing.instruments.charging",
        "billing.risk.gate",
        "billing.risk.reviews",
        "billing.services.pre_submission",
        "billing.authentication.flow",
        "billing.authentication.store",
        "billing.risk.postgres",
        "billing.db.reversal_repository",
        "billing.services.refunds",
    )

    def __init__(self, settings: ExecuteSettings, connections: ConnectionProvider | None = None) -> None:
        self.settings = settings
        self._given_connections = connections

    @cached_property
    def connections(self) -> ConnectionProvider:
        # Built on first use: psycopg is a fifth of a cold start, and a refused request never needs it.
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return self._given_connections or ConnectionProvider(role=DatabaseRole.APP)

    @cached_property
    def _sqs(self) -> Any:
        import boto3  # deferred: boto3 costs ~100 ms of cold start and only the retry path needs it

        return boto3.client("sqs")

    @cached_property
    def providers(self) -> Mapping[str, PaymentProvider]:
        from billing.db.roles import DatabaseRole
        from billing.providers.directory import configured_providers

        return configured_providers(DatabaseRole.APP)

    @cached_property
    def router(self) -> ProviderRouter:
        from billing.providers.routing import ProviderRouter

        return ProviderRouter(self.providers.keys())

    def driver(self) -> ExecutionDriver:
        from billing.aws.retry_queue import SqsRetryScheduler
        from billing.db.execution_repository import ExecutionRepository
        from billing.observability import PowertoolsExecutionObserver
        from billing.services.execution_driver import ExecutionDriver

        return ExecutionDriver(
            ExecutionRepository(self.connections.get()),
            self.providers,
            SqsRetryScheduler.created_on_first_use(lambda: self._sqs, self.settings.retry_queue_url),
            PowertoolsExecutionObserver(),
            backoff=self.settings.backoff(),
            pre_submission=self.pre_submission(),
        )

    def execution_service(self) -> ExecutionService:
        from billing.db.execution_repository import ExecutionRepository
        from billing.instruments.charging import ChargeableInstruments
        from billing.risk.reviews import ReviewStore
        from billing.services.execution_service import ExecutionService

        conn = self.connections.get()
        repository = ExecutionRepository(conn)
        instruments = ChargeableInstruments(conn, source="function:execute")
        return ExecutionService(repository, self.driver(), instruments, self.router, reviews=ReviewStore(conn))

    def pre_submission(self) -> PreSubmission:
        from billing.risk.gate import RiskGate
        from billing.risk.reviews import ReviewStore
        from billing.services.pre_submission import PreSubmission

        conn = self.connections.get()
        return PreSubmission(RiskGate(conn), self.three_ds(), ReviewStore(conn))

    def three_ds(self) -> ThreeDSecure:
        from billing.authentication.flow import ThreeDSecure, ThreeDSecureSettings, sandbox_tokens

        conn = self.connections.get()
        settings = ThreeDSecureSettings(self.settings.public_api_url, self.settings.provider_return_url)
        return ThreeDSecure(conn, settings, sandbox_tokens=sandbox_tokens(conn))

    def risk_view(self, tenant_id: UUID, execution: Execution) -> RiskView:
        """What risk and 3-D Secure decided for the execution, for GET /executions/{id}."""
        from billing.authentication.store import AuthenticationRepository
        from billing.domain.status import ExecutionStatus
        from billing.risk.postgres import AssessmentLog
        from billing.risk.reviews import ReviewStore

        conn = self.connections.get()
        authentication = AuthenticationRepository(conn).of_execution(tenant_id, execution.id)
        waiting = (
            authentication is not None
            and authentication.open
            and authentication.performed_by == "engine"
            and execution.status is ExecutionStatus.PENDING
        )
        return RiskView(
            assessments=AssessmentLog(conn).of_execution(tenant_id, execution.id),
            review=ReviewStore(conn).of(tenant_id, execution.id),
            authentication=authentication,
            # The 3-D Secure flow is built only for the execution that still waits for its customer.
            next_action=self.three_ds().redirect_for(authentication) if waiting and authentication else None,
        )

    def rule_sets(self) -> RuleSetStore:
        from billing.risk.postgres import RuleSetStore

        return RuleSetStore(self.connections.get())

    def reversals(self) -> ReversalRepository:
        from billing.db.reversal_repository import ReversalRepository

        return ReversalRepository(self.connections.get())

    def refund_service(self) -> RefundService:
        from billing.db.execution_repository import ExecutionRepository
        from billing.db.reversal_repository import ReversalRepository
        from billing.services.refunds import RefundService

        conn = self.connections.get()
        return RefundService(ExecutionRepository(conn), ReversalRepository(conn), self.providers)
