"""What the settlement report service needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from billing.settlement.files import FileError
from billing.settlement.matching import Classified, MatchClass
from billing.settlement.period import SettlementPeriod
from billing.settlement.report import ReportKeys, SettlementReport


class ObjectStore(Protocol):
    """One bucket: the settlement files (read) or the reports (written)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no object under `key`."""
        ...

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Create or replace the object under `key`."""
        ...

    def folders(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of `prefix` (which ends with '/'), sorted."""
        ...


class SettlementObserver(Protocol):
    """Where the service flags what it found: metrics and log lines in AWS, a list in tests."""

    def discrepancies(self, period: SettlementPeriod, match_class: MatchClass, items: Sequence[Classified]) -> None:
        """Called once per discrepancy class on every run, with no items when the class is clear."""
        ...

    def file_problems(self, period: SettlementPeriod, errors: Sequence[FileError], missing: Sequence[str]) -> None:
        """Called once per run: unreadable rows or files, and expected files that were not there."""
        ...

    def report_written(self, report: SettlementReport, keys: ReportKeys) -> None: ...
