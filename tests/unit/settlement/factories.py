"""Settlement lines, internal records and periods for the pure settlement tests; tests state only what matters."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import uuid4

from billing.domain.status import ExecutionStatus
from billing.settlement.files import SettlementLine, SettlementStatus, settlement_file_key
from billing.settlement.matching import InternalRecord
from billing.settlement.period import SettlementPeriod

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


def record(reference: str = "sbx_a", **overrides: Any) -> InternalRecord:
    fields: dict[str, Any] = {
        "tenant_id": uuid4(),
        "execution_id": uuid4(),
        "provider": "sandbox",
        "provider_reference": reference,
        "amount": 1999,
        "currency": "EUR",
        "status": ExecutionStatus.COMPLETED,
        "submitted_at": NOON - timedelta(minutes=1),
        "finished_at": NOON,
        "reversed": False,
    }
    fields.update(overrides)
    return InternalRecord(**fields)
