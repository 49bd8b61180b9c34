"""Sandbox settlement lines, our executions and a reconciliation of them, for the pure settlement tests.

Lines are written into a real file of the engine's own format and reconciled by the same engine that reads Adyen's
and Stripe's reports, against a stand-in for the database (reconciliation_factories.FakeLookup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from billing.domain.status import ExecutionStatus
from billing.settlement.files import SettlementLine, SettlementStatus, render_settlement_file, settlement_file_key
from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.period import SettlementPeriod
from billing.settlement.reconciliation.engine import Reconciler
from billing.settlement.reconciliation.ours import OurExecution
from tests.unit.settlement import reconciliation_factories as rf

DAY = date(2026, 4, 10)  # a Friday
PERIOD = SettlementPeriod.daily(DAY)
NOON = datetime.combine(DAY, time(12), UTC)


def line(reference: str = "sbx_a", **overrides: Any) -> SettlementLine:
    day: date = overrides.pop("day", DAY)
    fields: dict[str, Any] = {
        "provider": "sandbox",
        "day": day,
        "source": settlement_file_key(overrides.get("provider", "sandbox"), day),
        "line_number": 2,
        "provider_reference": reference,
        "amount": 1999,
        "currency": "EUR",
        "status": SettlementStatus.PAID,
        "settled_at": datetime.combine(day, time(12), UTC),
        "fee": None,
    }
    fields.update(overrides)
    return SettlementLine(**fields)


def record(reference: str = "sbx_a", **overrides: Any) -> OurExecution:
    """A sandbox execution completed at noon of DAY unless told otherwise."""
    fields: dict[str, Any] = {
        "provider": "sandbox",
        "submitted_at": NOON - timedelta(minutes=1),
        "finished_at": NOON,
        "status": ExecutionStatus.COMPLETED,
    }
    fields.update(overrides)
    return rf.ours(reference, **fields)


@dataclass(frozen=True)
class Reconciled:
    summary: ReportSummary
    discrepancies: list[Discrepancy]

    @property
    def matched(self) -> int:
        return self.summary.counts[DiscrepancyClass.MATCHED]

    def only(self) -> Discrepancy:
        assert len(self.discrepancies) == 1, self.discrepancies
        return self.discrepancies[0]

    def classes(self) -> list[DiscrepancyClass]:
        return [d.discrepancy_class for d in self.discrepancies]


def reconcile(
    lines: Sequence[SettlementLine],
    executions: Sequence[OurExecution],
    *,
    earlier: Sequence[SettlementLine] = (),
    provider: str = "sandbox",
    period: SettlementPeriod = PERIOD,
    generated_at: datetime = rf.AFTER_THE_DAY,
) -> Reconciled:
    """The period's file holding `lines` (in order: the first is line 2) and the day before's holding `earlier`."""
    files = [rf.file_of(settlement_file_key(provider, period.start), render_settlement_file(lines), day=period.start)]
    before = period.start - timedelta(days=1)
    lookback = (
        [rf.file_of(settlement_file_key(provider, before), render_settlement_file(earlier), day=before)]
        if earlier
        else []
    )
    lookup = rf.FakeLookup(list(executions))
    with Reconciler(lookup).run(
        provider=provider, period=period, files=files, lookback=lookback, generated_at=generated_at
    ) as done:
        return Reconciled(done.summary, list(done.discrepancies()))
