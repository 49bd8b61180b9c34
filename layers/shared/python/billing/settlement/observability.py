"""Flags what a settlement report found: one metric per discrepancy class on every run, a log line per class found.

Metrics are emitted with zero too, so an alarm on a class sees "none today" instead of missing data; the payout
alarm (infra/stacks/data.py) watches SettlementDiscrepancy_payout_mismatch. Log lines carry a bounded sample of
the items; the report in the reports bucket and the database hold them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from aws_lambda_powertools.metrics import MetricUnit

from billing.observability import logger, metrics
from billing.settlement.outcome import DISCREPANCY_CLASSES, Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.report import ReportKeys

# Items quoted per log line: enough to start investigating, small enough for one CloudWatch event (256 KB).
LOG_SAMPLE: Final = 20
METRIC_PREFIX: Final = "SettlementDiscrepancy_"
PAYOUT_MISMATCH_METRIC: Final = METRIC_PREFIX + DiscrepancyClass.PAYOUT_MISMATCH.value


def discrepancy_metric(discrepancy_class: DiscrepancyClass) -> str:
    return METRIC_PREFIX + discrepancy_class.value


class PowertoolsSettlementObserver:
    """Implements SettlementObserver with the functions' shared Powertools logger and metrics."""

    def report_finished(
        self,
        summary: ReportSummary,
        keys: ReportKeys,
        samples: Mapping[DiscrepancyClass, Sequence[Discrepancy]],
        amounts: Mapping[DiscrepancyClass, Mapping[str, int]],
        *,
        created: bool,
    ) -> None:
        where = _where(summary)
        for klass in DISCREPANCY_CLASSES:
            count = summary.counts.get(klass, 0)
            metrics.add_metric(name=discrepancy_metric(klass), unit=MetricUnit.Count, value=count)
            if not count:
                continue
            logger.warning(
                "billing.settlement.discrepancy",
                extra={
                    "event": "billing.settlement.discrepancy",
                    **where,
                    "class": klass.value,
                    "count": count,
                    # Minor units per currency of the items in this class (the provider's figure where it has one).
                    "amounts": dict(sorted(amounts.get(klass, {}).items())),
                    "sample": [_sample(d) for d in samples.get(klass, ())[:LOG_SAMPLE]],
                },
            )
        metrics.add_metric(
            name="SettlementMatched", unit=MetricUnit.Count, value=summary.counts.get(DiscrepancyClass.MATCHED, 0)
        )
        metrics.add_metric(name="SettlementFileErrors", unit=MetricUnit.Count, value=len(summary.file_errors))
        metrics.add_metric(name="SettlementLineErrors", unit=MetricUnit.Count, value=summary.line_error_count)
        metrics.add_metric(name="SettlementFilesMissing", unit=MetricUnit.Count, value=len(summary.missing_files))
        if summary.file_errors or summary.line_error_count:
            logger.error(
                "billing.settlement.file_errors",
                extra={
                    "event": "billing.settlement.file_errors",
                    **where,
                    "file_errors": [dict(e) for e in summary.file_errors[:LOG_SAMPLE]],
                    "line_errors": summary.line_error_count,
                    "sample": [dict(e) for e in summary.line_errors[:LOG_SAMPLE]],
                },
            )
        if summary.missing_files:
            logger.warning(
                "billing.settlement.files_missing",
                extra={"event": "billing.settlement.files_missing", **where, "keys": list(summary.missing_files)},
            )
        logger.info(
            "billing.settlement.report",
            extra={
                "event": "billing.settlement.report",
                **where,
                "report_id": str(summary.report_id),
                # Not "created": a LogRecord attribute. False: a re-run of the same files, saved before.
                "new_report": created,
                "discrepancies": summary.discrepancy_count,
                "payouts_balance": summary.payouts_balance,
                "counts": {c.value: n for c, n in summary.counts.items()},
                "report_keys": keys.as_dict(),
            },
        )


def _where(summary: ReportSummary) -> dict[str, str]:
    return {
        "provider": summary.provider,
        "start": summary.period_start.isoformat(),
        "end": summary.period_end.isoformat(),
    }


def _sample(d: Discrepancy) -> dict[str, object]:
    return {
        "id": str(d.id),
        "provider_reference": d.provider_reference,
        "file": None if d.source is None else f"{d.source}:{d.line_number}",
        "tenant_id": None if d.tenant_id is None else str(d.tenant_id),
        "execution_id": None if d.execution_id is None else str(d.execution_id),
        "detail": d.detail,
    }
