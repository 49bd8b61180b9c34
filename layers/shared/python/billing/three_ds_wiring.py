"""Per-container wiring of the three_ds function: the execute function's settings, driver and 3-D Secure.

Built on first use: the challenge flow, its stores and the database connection load with the first page a
customer's browser asks for, not at import.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Final

from billing.wiring import ExecuteRuntime, ExecuteSettings

if TYPE_CHECKING:
    from billing.authentication.challenge import ChallengeService
    from billing.db.connection_provider import ConnectionProvider


class ThreeDSRuntime:
    """Drives executions on after a challenge exactly as the execute function would (same role, same providers)."""

    # What the methods below import on first use (billing.aws.cold_start.preload loads them when init is paid ahead).
    DEFERRED_MODULES: Final = (
        "billing.authentication.challenge",
        "billing.authentication.store",
        "billing.db.execution_repository",
        "billing.risk.postgres",
        *ExecuteRuntime.DEFERRED_MODULES,
    )

    def __init__(self, settings: ExecuteSettings | None = None) -> None:
        self._settings = settings

    @cached_property
    def connections(self) -> ConnectionProvider:
        from billing.db.connection_provider import ConnectionProvider
        from billing.db.roles import DatabaseRole

        return ConnectionProvider(role=DatabaseRole.APP)

    @cached_property
    def execute(self) -> ExecuteRuntime:
        return ExecuteRuntime(self._settings or ExecuteSettings.from_environment(), self.connections)

    def challenges(self) -> ChallengeService:
        from billing.authentication.challenge import ChallengeService
        from billing.authentication.store import AcsChallengeStore
        from billing.db.execution_repository import ExecutionRepository
        from billing.risk.postgres import RuleSetStore

        conn = self.connections.get()
        three_ds = self.execute.three_ds()
        return ChallengeService(
            three_ds,
            self.execute.driver(),
            ExecutionRepository(conn),
            three_ds.acs,
            AcsChallengeStore(conn),
            RuleSetStore(conn),
            acs_page_url=three_ds.settings.acs_url(),
        )
