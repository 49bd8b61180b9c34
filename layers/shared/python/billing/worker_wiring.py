"""Per-container wiring of the background workers: the retry consumer (retry_dlq) and the reconciler (reconcile).

Settings are validated at cold start. Queue URLs are required; the tuning knobs have defaults documented beside
the code they tune (domain.backoff, services.reconciliation), so an unset knob means "the documented default",
never a guess about which resource to use.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, Field

from billing import resource_names as names
from billing.wiring import BackoffSettings

# Only the settings are needed at cold start; the workers, repositories and providers (psycopg, the provider SDKs,
# boto3) are imported by the method that first builds them.
if TYPE_CHECKING:
    from billing.aws.dead_letters import DeadLetterTool, SqsQueue
    from billing.db.connection import Connection
    from billing.db.connection_provider import ConnectionProvider
    from billing.domain.workflow import WorkflowWriteContext
    from billing.rails.ports import PaymentProvider
    from billing.services.pre_submission import PreSubmission
    from billing.services.pre_submission_sweep import PreSubmissionSweep
    from billing.services.reconciliation import ReconcileConfig, ReconciliationWorker
    from billing.services.refunds import RefundFollower
    from billing.services.retry_worker import RetryWorker

Clock = Callable[[], datetime]
Jitter = Callable[[float, float], float]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _worker_connections() -> ConnectionProvider:
    from billing.db.connection_provider import ConnectionProvider
    from billing.db.roles import DatabaseRole

    return ConnectionProvider(role=DatabaseRole.WORKER)


def _worker_providers() -> Mapping[str, PaymentProvider]:
    from billing.db.roles import DatabaseRole
    from billing.providers.directory import configured_providers

    return configured_providers(DatabaseRole.WORKER)


class RetrySettings(BackoffSettings):
    """What the retry_dlq function reads from its environment; a missing queue URL fails the cold start."""

    retry_queue_url: str = Field(alias=names.ENV_RETRY_QUEUE_URL, min_length=1)
    dlq_url: str = Field(alias=names.ENV_DLQ_URL, min_length=1)

    @classmethod
    def from_environment(cls) -> RetrySettings:
        return cls.model_validate(dict(os.environ))


def resubmission_checks(conn: Connection) -> PreSubmission:
    """What a resubmission is assessed with: the risk gate, and 3-D Secure only to read what the first attempt did
    (a worker never starts an authentication, so it needs neither the public URL nor the sandbox's tokens)."""
    from billing.authentication.flow import ThreeDSecure, ThreeDSecureSettings
    from billing.risk.gate import RiskGate
    from billing.risk.reviews import ReviewStore
    from billing.services.pre_submission import PreSubmission

    no_public_pages = ThreeDSecureSettings(names.DEFAULT_PUBLIC_API_URL)
    three_ds = ThreeDSecure(conn, no_public_pages, sandbox_tokens=lambda _tenant, _instrument: None)
    return PreSubmission(RiskGate(conn), three_ds, ReviewStore(conn))


class RetryRuntime:
    """The retry consumer and the DLQ tooling, built once per container and reused while it is warm."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.providers.directory",
        "billing.authentication.flow",
        "billing.risk.gate",
        "billing.services.pre_submission",
        "billing.aws.dead_letters",
        "billing.aws.retry_queue",
        "billing.db.attempts",
        "billing.services.execution_driver",
        "billing.services.retry_worker",
        "boto3",
    )

    def __init__(
        self,
        settings: RetrySettings,
        connections: ConnectionProvider | None = None,
        *,
        sqs: Any | None = None,
        providers: Mapping[str, PaymentProvider] | None = None,
        clock: Clock = _utc_now,
        jitter: Jitter = random.uniform,
    ) -> None:
        self.settings = settings
        self._given_connections = connections
        self._sqs_client = sqs
        self._providers = providers
        self._clock = clock
        self._jitter = jitter

    @cached_property
    def connections(self) -> ConnectionProvider:
        return self._given_connections or _worker_connections()

    @cached_property
    def sqs(self) -> Any:
        if self._sqs_client is not None:
            return self._sqs_client
        import boto3  # deferred: boto3 costs ~100 ms of cold start

        return boto3.client("sqs")

    @cached_property
    def providers(self) -> Mapping[str, PaymentProvider]:
        return self._providers if self._providers is not None else _worker_providers()

    def retry_worker(self) -> RetryWorker:
        from billing.aws.dead_letters import SqsDeadLetterSink
        from billing.aws.retry_queue import SqsRetryScheduler
        from billing.db.attempts import AttemptLedger
        from billing.db.execution_repository import ExecutionRepository
        from billing.observability import PowertoolsExecutionObserver
        from billing.services.execution_driver import ExecutionDriver
        from billing.services.retry_worker import RetryWorker

        conn = self.connections.get()
        repository = ExecutionRepository(conn)
        scheduler = SqsRetryScheduler(self.sqs, self.settings.retry_queue_url, clock=self._clock)
        driver = ExecutionDriver(
            repository,
            self.providers,
            scheduler,
            PowertoolsExecutionObserver(),
            backoff=self.settings.backoff(),
            clock=self._clock,
            jitter=self._jitter,
            pre_submission=resubmission_checks(conn),
        )
        return RetryWorker(
            repository,
            AttemptLedger(conn),
            driver,
            self.providers,
            scheduler,
            SqsDeadLetterSink(self.sqs, self.settings.dlq_url),
            clock=self._clock,
        )

    def retry_queue(self, *, visibility_timeout: int | None = None) -> SqsQueue:
        """The retry queue for a local poller: `runtime.retry_worker().poll_once(runtime.retry_queue())`."""
        from billing.aws.dead_letters import SqsQueue

        return SqsQueue(self.sqs, self.settings.retry_queue_url, visibility_timeout=visibility_timeout)

    def dead_letter_tool(self, context: WorkflowWriteContext | None = None, **options: Any) -> DeadLetterTool:
        """List, show, redrive and purge the DLQ; redrives are recorded on the executions as `context`."""
        from billing.aws.dead_letters import DeadLetterTool
        from billing.db.attempts import AttemptLedger

        return DeadLetterTool(
            self.sqs,
            self.settings.dlq_url,
            self.settings.retry_queue_url,
            AttemptLedger(self.connections.get()),
            context=context,
            **options,
        )


class ReconcileSettings(BaseModel):
    """What the reconcile function reads from its environment (all optional, see ReconcileConfig).

    An unset knob stays None and means ReconcileConfig's default: the defaults are read there when the worker is
    built, so validating the settings at cold start needs no part of the worker (and no database driver).
    """

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    pending_after_seconds: float | None = Field(None, alias=names.ENV_RECONCILE_PENDING_AFTER_SECONDS, ge=0)
    max_pending_age_seconds: float | None = Field(None, alias=names.ENV_RECONCILE_MAX_PENDING_AGE_SECONDS, ge=0)
    stuck_after_seconds: float | None = Field(None, alias=names.ENV_RECONCILE_STUCK_AFTER_SECONDS, ge=0)
    batch_size: int | None = Field(None, alias=names.ENV_RECONCILE_BATCH_SIZE, ge=1, le=500)
    customer_action_timeout_seconds: float | None = Field(
        None, alias=names.ENV_RECONCILE_CUSTOMER_ACTION_TIMEOUT_SECONDS, gt=0
    )

    @classmethod
    def from_environment(cls) -> ReconcileSettings:
        return cls.model_validate(dict(os.environ))

    def config(self) -> ReconcileConfig:
        from billing.services.reconciliation import ReconcileConfig

        durations = {
            "pending_after": self.pending_after_seconds,
            "max_pending_age": self.max_pending_age_seconds,
            "stuck_after": self.stuck_after_seconds,
            "customer_action_timeout": self.customer_action_timeout_seconds,
        }
        given: dict[str, Any] = {
            name: timedelta(seconds=value) for name, value in durations.items() if value is not None
        }
        if self.batch_size is not None:
            given["batch_size"] = self.batch_size
        return ReconcileConfig(**given)


# A refund claimed by a run that died is looked at again after this; longer than one refund call can take.
REFUND_LEASE: Final = timedelta(minutes=5)


class ReconcileRuntime:
    """The reconciliation worker, built once per container."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.db.connection_provider",
        "billing.providers.directory",
        "billing.services.reconciliation",
        "billing.services.pre_submission_sweep",
        "billing.services.refunds",
        "billing.db.reversal_repository",
    )

    def __init__(
        self,
        settings: ReconcileSettings,
        connections: ConnectionProvider | None = None,
        *,
        providers: Mapping[str, PaymentProvider] | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self.settings = settings
        self._given_connections = connections
        self._providers = providers
        self._clock = clock

    @cached_property
    def connections(self) -> ConnectionProvider:
        return self._given_connections or _worker_connections()

    @cached_property
    def providers(self) -> Mapping[str, PaymentProvider]:
        return self._providers if self._providers is not None else _worker_providers()

    def worker(self) -> ReconciliationWorker:
        from billing.services.reconciliation import ReconciliationWorker

        return ReconciliationWorker(
            self.connections.get(), self.providers, config=self.settings.config(), clock=self._clock
        )

    def pre_submission_sweep(self) -> PreSubmissionSweep:
        from billing.services.pre_submission_sweep import PreSubmissionSweep

        return PreSubmissionSweep(self.connections.get())

    def refund_follower(self) -> RefundFollower:
        from billing.db.execution_repository import ExecutionRepository
        from billing.db.reversal_repository import ReversalRepository
        from billing.services.refunds import RefundFollower, RefundService

        conn = self.connections.get()
        reversals = ReversalRepository(conn)
        service = RefundService(ExecutionRepository(conn), reversals, self.providers, clock=self._clock)
        batch_size = self.settings.config().batch_size
        return RefundFollower(reversals, service, batch_size=batch_size, lease=REFUND_LEASE)
