"""The engine's own settlement CSV (billing.settlement.files), read as ProviderRecords like the providers' formats.

The sandbox provider has no report of its own, so the engine defined one (docs/settlement.md): integer minor units,
one row per item, `paid` / `failed` / `refunded` / `chargeback`. This parser streams it into the same records the
Adyen and Stripe parsers emit, so one reconciliation engine reads all three. Rows are checked exactly as
billing.settlement.files checks them (same messages), and the header must be exactly the documented one.

Signs follow ProviderRecord (positive is money to us): paid is +amount, refunded and chargeback -amount, failed
moves nothing (gross 0). The item's own amount, whatever its sign, is in customer_facing_amount, as Stripe gives it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date
from types import MappingProxyType
from typing import Final

from billing.settlement.files import (
    FEE_COLUMN,
    HEADER,
    REQUIRED_COLUMNS,
    SettlementRowInvalid,
    SettlementStatus,
    parse_settlement_row,
)
from billing.settlement.formats.records import (
    Columns,
    FileError,
    FileErrorRaised,
    LineError,
    ProviderRecord,
    RecordKind,
    RowInvalid,
    normalise_header,
    parse_rows,
)

FEE_TYPE: Final = "fee"
_KINDS: Final = MappingProxyType(
    {
        SettlementStatus.PAID: RecordKind.SETTLED,
        SettlementStatus.FAILED: RecordKind.FAILED,
        SettlementStatus.REFUNDED: RecordKind.REFUNDED,
        SettlementStatus.CHARGEBACK: RecordKind.CHARGEBACK,
    }
)
_SIGN: Final = MappingProxyType(
    {
        SettlementStatus.PAID: 1,
        SettlementStatus.FAILED: 0,
        SettlementStatus.REFUNDED: -1,
        SettlementStatus.CHARGEBACK: -1,
    }
)
_SHOWN: Final = 80


class SandboxSettlementCsv:
    """Parser of the engine's own CSV. Any provider folder may hold it (it is our normalised format)."""

    name: Final = "sandbox_csv"

    @staticmethod
    def recognises(header: Sequence[str]) -> bool:
        """True for a header naming our columns, even a wrong one (parse then says what the header must be)."""
        names = set(normalise_header(header))
        return {"provider_reference", "settled_at"} <= names

    @staticmethod
    def parse(
        lines: Iterable[str], *, source: str, provider: str, day: date | None
    ) -> Iterator[ProviderRecord | LineError]:
        """One ProviderRecord or LineError per data row, lazily; FileErrorRaised for a header that is not ours.

        `day` is the file's day (settled_at must be on it, UTC), or None when its name carries none.
        """

        def bind(columns: Columns) -> _Layout:
            if columns.names not in (HEADER, REQUIRED_COLUMNS):
                expected = ",".join(REQUIRED_COLUMNS) + f"[,{FEE_COLUMN}]"
                found = ",".join(columns.names)[:_SHOWN]
                raise FileErrorRaised(FileError(source, f"header must be {expected}, found {found!r}"))
            return _Layout(source, provider, day, len(columns.names))

        return parse_rows(lines, source=source, required=REQUIRED_COLUMNS, bind=bind)


class _Layout:
    def __init__(self, source: str, provider: str, day: date | None, width: int) -> None:
        self._source = source
        self._provider = provider
        self._day = day
        self._width = width

    def __call__(self, row: list[str], line_number: int) -> ProviderRecord:
        try:
            line = parse_settlement_row(
                row, self._width, provider=self._provider, day=self._day, source=self._source, line=line_number
            )
        except SettlementRowInvalid as exc:
            raise RowInvalid(None, str(exc)) from None
        sign = _SIGN[line.status]
        fee = line.fee or 0
        gross = sign * line.amount
        return ProviderRecord(
            provider=self._provider,
            source=self._source,
            line_number=line_number,
            kind=_KINDS[line.status],
            raw_type=line.status.value,
            provider_reference=line.provider_reference,
            secondary_reference=None,
            merchant_reference=None,
            payment_method=None,
            created_at=line.settled_at.astimezone(UTC),
            gross_amount=gross,
            gross_currency=line.currency,
            net_amount=gross - fee if sign else 0,
            net_currency=line.currency,
            fees=MappingProxyType({FEE_TYPE: fee} if line.fee is not None else {}),
            batch=None,
            exchange_rate=None,
            metadata=MappingProxyType({}),
            customer_facing_amount=line.amount,
            customer_facing_currency=line.currency,
        )
