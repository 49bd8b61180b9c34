"""Flags what a settlement report found: one metric per discrepancy class on every run, a log line per class found.

Metrics are emitted with zero too, so an alarm on a class sees "none today" instead of missing data. Log lines carry
a bounded sample of the items; the report in the reports bucket holds them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

from aws_lambda_powertools.metrics import MetricUnit

from billing.observability import logger, metrics
from billing.settlement.files import FileError
from billing.settlement.matching import Classified, MatchClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import ReportKeys, SettlementReport

# Items quoted per log line: enough to start investigating, small enough for one CloudWatch event (256 KB).
LOG_SAMPLE: Final = 20


class PowertoolsSettlementObserver:
    """Implements SettlementObserver with the functions' shared Powertools logger and metrics."""

    def discrepancies(self, period: SettlementPeriod, match_class: MatchClass, items: Sequence[Classified]) -> None:
        metrics.add_metric(name=f"SettlementDiscrepancy_{match_class.value}", unit=MetricUnit.Count, value=len(items))
        if not items:
            return
        amounts: Counter[str] = Counter()
        for item in items:
            money = item.line or item.record
            if money is not None:
                amounts[money.currency] += money.amount
        logger.warning(
            "billing.settlement.discrepancy",
            extra={
                "event": "billing.settlement.discrepancy",
                **_period(period),
                "class": match_class.value,
                "count": len(items),
                # Minor units per currency of the items in this class (provider's figure where it has one).
                "amounts": dict(sorted(amounts.items())),
                "sample": [_sample(item) for item in items[:LOG_SAMPLE]],
            },
        )

    def file_problems(self, period: SettlementPeriod, errors: Sequence[FileError], missing: Sequence[str]) -> None:
        metrics.add_metric(name="SettlementFileErrors", unit=MetricUnit.Count, value=len(errors))
        metrics.add_metric(name="SettlementFilesMissing", unit=MetricUnit.Count, value=len(missing))
        if errors:
            logger.error(
                "billing.settlement.file_errors",
                extra={
                    "event": "billing.settlement.file_errors",
                    **_period(period),
                    "count": len(errors),
                    "sample": [error.as_dict() for error in errors[:LOG_SAMPLE]],
                },
            )
        if missing:
            logger.warning(
                "billing.settlement.files_missing",
                extra={"event": "billing.settlement.files_missing", **_period(period), "keys": list(missing)},
            )

    def report_written(self, report: SettlementReport, keys: ReportKeys) -> None:
        metrics.add_metric(
            name="SettlementMatched", unit=MetricUnit.Count, value=report.counts.get(MatchClass.MATCHED, 0)
        )
        logger.info(
            "billing.settlement.report",
            extra={
                "event": "billing.settlement.report",
                **report.summary(),
                "report_json": keys.json,
                "report_csv": keys.csv,
            },
        )


def _period(period: SettlementPeriod) -> dict[str, str]:
    return {"period": period.kind.value, "start": period.start.isoformat(), "end": period.end.isoformat()}


def _sample(item: Classified) -> dict[str, Any]:
    sample: dict[str, Any] = {
        "provider": item.provider,
        "provider_reference": item.provider_reference,
        "detail": item.detail,
    }
    if item.line is not None:
        sample["file"] = f"{item.line.source}:{item.line.line_number}"
    if item.record is not None:
        sample["tenant_id"] = str(item.record.tenant_id)
        sample["execution_id"] = str(item.record.execution_id)
    return sample
