"""What the settlement report service needs from the outside world, as small Protocols."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from billing.settlement.outcome import Discrepancy, DiscrepancyClass, ReportSummary
from billing.settlement.report import ReportKeys


class ReportOutputs(Protocol):
    """Where a report's renderings go: the reports bucket, or a local directory for the CLI."""

    def put(self, key: str, body: bytes, content_type: str) -> None:
        """Create or replace the object under `key`."""
        ...

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        """Create or replace the object under `key` from a stream, holding one part of it at a time."""
        ...


class ObjectStore(ReportOutputs, Protocol):
    """One bucket: the settlement files (read) or the reports (written)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no object under `key` (small objects only)."""
        ...

    def chunks(self, key: str) -> Iterator[bytes] | None:
        """The object's bytes as a stream of chunks, never held whole; None if there is no object under `key`."""
        ...

    def folders(self, prefix: str) -> list[str]:
        """Names of the immediate sub-folders of `prefix` (which ends with '/'), sorted."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""
        ...


class ReportPublisher(Protocol):
    """Puts a report's summary event on the bus, after the report is committed (never inside a transaction)."""

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...


class SettlementObserver(Protocol):
    """Where the service flags what it found: metrics and log lines in AWS, a list in tests."""

    def report_finished(
        self,
        summary: ReportSummary,
        keys: ReportKeys,
        samples: Mapping[DiscrepancyClass, Sequence[Discrepancy]],
        amounts: Mapping[DiscrepancyClass, Mapping[str, int]],
        *,
        created: bool,
    ) -> None:
        """Called once per provider report: its counts (zeros included), a few items per class found, and the
        reported amounts per class and currency."""
        ...
