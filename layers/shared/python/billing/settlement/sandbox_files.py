"""Settlement files for the sandbox provider, so local runs and tests have real files to reconcile.

The sandbox (billing.rails.sandbox) keeps its charges in sandbox_provider.charges; this exports one day of them in
the settlement file format, as a real provider's daily file would list them:

* a charge that succeeded is `paid`, on the day it settled (cards: when charged; debits: when the debit settled);
* a debit that failed at settlement is `failed`, on that day: the money was expected and did not come;
* declined cards and failed 3-D Secure are not listed: no money ever moved, and providers leave them out too.

The sandbox charges no fees, so the fee column is left empty. `inject` adds deliberate discrepancies for demos and
tests: each one changes another paid item of the day, in settlement order (the first injection the first paid item,
the second the next, ...), except `unknown_reference`, which adds an item.

Only what has settled is listed: a debit still pending in the sandbox (nobody has looked since it fell due) is not;
call SandboxProvider.settle_due() first to settle everything that has fallen due.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Final, assert_never

from billing.db.connection import Connection
from billing.rails.sandbox import PROVIDER_NAME
from billing.settlement.files import SettlementLine, SettlementStatus, render_settlement_file, settlement_file_key
from billing.settlement.s3 import S3ObjectStore

# Settled (paid) charges and debits that failed at settlement, by the moment they settled: settled_at for debits and
# forced outcomes, charged_at for cards that succeeded at once (they never had a settlement of their own).
_SETTLED_ON_DAY: Final = """
select reference, amount, currency, status, coalesce(settled_at, charged_at) as settled_on
  from sandbox_provider.charges
 where reference is not null
   and (status = 'succeeded' or (status = 'failed' and initial_status = 'pending_settlement'))
   and coalesce(settled_at, charged_at) >= %(start)s
   and coalesce(settled_at, charged_at) < %(end)s
 order by coalesce(settled_at, charged_at), reference
"""


class SandboxDiscrepancy(StrEnum):
    """A deliberate difference between the exported file and what the sandbox charged."""

    AMOUNT = "amount"  # the first paid item listed one minor unit higher
    CURRENCY = "currency"  # the first paid item listed in another currency
    STATUS = "status"  # the first paid item listed as failed
    MISSING_FROM_FILE = "missing_from_file"  # the first paid item left out
    DUPLICATE = "duplicate"  # the first paid item listed twice
    UNKNOWN_REFERENCE = "unknown_reference"  # an extra paid item that no execution knows


def sandbox_settlement_lines(
    conn: Connection, day: date, *, inject: Iterable[SandboxDiscrepancy] = ()
) -> list[SettlementLine]:
    """The sandbox's settled items of `day` (UTC), in settlement order, with the requested discrepancies."""
    start = datetime.combine(day, time(0), UTC)
    key = settlement_file_key(PROVIDER_NAME, day)
    with conn.transaction():
        rows = conn.execute(_SETTLED_ON_DAY, {"start": start, "end": start + timedelta(days=1)}).fetchall()
    lines = [_line(row, day, key, number) for number, row in enumerate(rows, start=2)]
    touched: set[str] = set()  # references already changed: every injection gets an item of its own
    for discrepancy in inject:
        lines = _inject(lines, discrepancy, day, key, touched)
    # Line numbers as the file will have them.
    return [replace(line, line_number=number) for number, line in enumerate(lines, start=2)]


def write_sandbox_settlement_file(
    conn: Connection, s3: Any, bucket: str, day: date, *, inject: Iterable[SandboxDiscrepancy] = ()
) -> str:
    """Write the sandbox's settlement file of `day` to `bucket` (replacing it) and return its key.

    A day without settled items still gets a file (header only): "nothing settled" is not "no file".
    """
    key = settlement_file_key(PROVIDER_NAME, day)
    content = render_settlement_file(sandbox_settlement_lines(conn, day, inject=inject))
    S3ObjectStore(s3, bucket).put(key, content, "text/csv; charset=utf-8")
    return key


def _line(row: dict[str, Any], day: date, key: str, number: int) -> SettlementLine:
    status = SettlementStatus.PAID if row["status"] == "succeeded" else SettlementStatus.FAILED
    return SettlementLine(
        provider=PROVIDER_NAME,
        day=day,
        source=key,
        line_number=number,
        provider_reference=row["reference"],
        amount=int(row["amount"]),
        currency=row["currency"],
        status=status,
        settled_at=row["settled_on"],
    )


def _inject(
    lines: list[SettlementLine], discrepancy: SandboxDiscrepancy, day: date, key: str, touched: set[str]
) -> list[SettlementLine]:
    def change(how: Callable[[SettlementLine], list[SettlementLine]]) -> list[SettlementLine]:
        index = next(
            (
                i
                for i, line in enumerate(lines)
                if line.status is SettlementStatus.PAID and line.provider_reference not in touched
            ),
            None,
        )
        if index is None:
            raise ValueError(f"no paid sandbox item left on {day.isoformat()} to inject {discrepancy} into")
        touched.add(lines[index].provider_reference)
        return [*lines[:index], *how(lines[index]), *lines[index + 1 :]]

    match discrepancy:
        case SandboxDiscrepancy.UNKNOWN_REFERENCE:
            # Derived from the day, so exporting the same day again writes the same file.
            reference = "sbx_" + hashlib.sha256(f"unknown-reference:{day.isoformat()}".encode()).hexdigest()[:24]
            noon = datetime.combine(day, time(12), UTC)
            return [
                *lines,
                SettlementLine(PROVIDER_NAME, day, key, 0, reference, 1000, "EUR", SettlementStatus.PAID, noon),
            ]
        case SandboxDiscrepancy.AMOUNT:
            return change(lambda t: [replace(t, amount=t.amount + 1)])
        case SandboxDiscrepancy.CURRENCY:
            return change(lambda t: [replace(t, currency="USD" if t.currency != "USD" else "EUR")])
        case SandboxDiscrepancy.STATUS:
            return change(lambda t: [replace(t, status=SettlementStatus.FAILED)])
        case SandboxDiscrepancy.MISSING_FROM_FILE:
            return change(lambda t: [])
        case SandboxDiscrepancy.DUPLICATE:
            return change(lambda t: [t, t])
        case _:
            assert_never(discrepancy)
