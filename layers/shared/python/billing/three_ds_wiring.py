"""Per-container wiring of the three_ds function: the execute function's settings, driver and 3-D Secure."""

from __future__ import annotations

from functools import cached_property

from billing.authentication.challenge import ChallengeService
from billing.authentication.store import AcsChallengeStore
from billing.db.connection_provider import ConnectionProvider
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole
from billing.risk.postgres import RuleSetStore
from billing.wiring import ExecuteRuntime, ExecuteSettings


class ThreeDSRuntime:
    """Drives executions on after a challenge exactly as the execute function would (same role, same providers)."""

    def __init__(self, settings: ExecuteSettings | None = None) -> None:
        self._settings = settings
        self.connections = ConnectionProvider(role=DatabaseRole.APP)

    @cached_property
    def execute(self) -> ExecuteRuntime:
        return ExecuteRuntime(self._settings or ExecuteSettings.from_environment(), self.connections)

    def challenges(self) -> ChallengeService:
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
