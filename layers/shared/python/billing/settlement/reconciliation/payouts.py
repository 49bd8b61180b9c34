"""Payouts: per batch and net currency, the items' net amounts against the payout line the provider wrote.

Both parsers sign amounts as money to us, and both write the payout as money leaving the balance for the bank:
Adyen's MerchantPayout fills Net Debit (NC), Stripe's `payout` row has a negative net. So the payout's figure is
minus its row's net, and a batch balances when the sum of every other row's net (settlements, refunds,
chargebacks, fees, adjustments, unmapped types) equals it. A batch with items and no payout line is not a
mismatch (Stripe's itemized report may leave the payout row out; Adyen carries a balance below the payout
threshold forward): its check says reported None. A payout line without items is one, unless it pays out zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from billing.domain.money import Money
from billing.settlement.formats.records import ProviderRecord, RecordKind
from billing.settlement.outcome import DiscrepancyClass, PayoutCheck
from billing.settlement.reconciliation.findings import Finding, masked

PAYOUT_KIND: Final = "payout"


@dataclass(slots=True)
class _Batch:
    computed_net: int = 0
    items: int = 0
    reported: int | None = None
    source: str | None = None
    line_number: int | None = None


class Payouts:
    """Accumulates every row of a report into its batch; rows without a batch are not part of any payout."""

    def __init__(self) -> None:
        self._batches: dict[tuple[str, str], _Batch] = {}
        # Rows come batch by batch: the last batch's state is reused without building its key again.
        self._last: tuple[str, str, _Batch] | None = None

    def add(self, record: ProviderRecord, batch: str | None) -> None:
        if batch is None:
            return
        last = self._last
        if last is not None and last[0] == batch and last[1] == record.net_currency:
            state = last[2]
        else:
            key = (batch, record.net_currency)
            found = self._batches.get(key)
            if found is None:
                found = self._batches[key] = _Batch()
            state = found
            self._last = (batch, record.net_currency, state)
        if record.kind is RecordKind.PAYOUT:
            # Several payout lines of one batch and currency add up (a split payout); the first one is cited.
            state.reported = (state.reported or 0) - record.net_amount
            if state.source is None:
                state.source, state.line_number = record.source, record.line_number
        else:
            state.computed_net += record.net_amount
            state.items += 1

    def add_items(self, batch: str | None, currency: str, net: int, items: int) -> None:
        """`items` rows of a batch (none of them a payout) whose net amounts sum to `net`, added as add() would."""
        if batch is None:
            return
        state = self._batches.setdefault((batch, currency), _Batch())
        state.computed_net += net
        state.items += items

    def checks(self) -> tuple[PayoutCheck, ...]:
        return tuple(
            PayoutCheck(
                batch=masked(batch) or batch,
                currency=currency,
                computed_net=state.computed_net,
                reported=state.reported,
                items=state.items,
                source=masked(state.source),
                line_number=state.line_number,
            )
            for (batch, currency), state in sorted(self._batches.items(), key=lambda item: _batch_order(item[0]))
        )

    def findings(self) -> list[Finding]:
        """payout_mismatch for every payout line its batch's items do not add up to."""
        found: list[Finding] = []
        for check in self.checks():
            if check.reported is None or check.balances:
                continue
            payout = Money(check.reported, check.currency).format()
            if check.items == 0:
                detail = f"batch {check.batch}: payout of {payout} with no items in the files read"
            else:
                computed = Money(check.computed_net, check.currency).format()
                difference = Money(check.reported - check.computed_net, check.currency).format()
                detail = (
                    f"batch {check.batch}: {check.items} items net {computed}, payout {payout} "
                    f"(difference {difference})"
                )
            found.append(
                Finding(
                    discrepancy_class=DiscrepancyClass.PAYOUT_MISMATCH,
                    source=check.source,
                    line_number=check.line_number,
                    provider_reference=None,
                    record_kind=PAYOUT_KIND,
                    tenant_id=None,
                    execution_id=None,
                    expected_amount=check.computed_net,
                    expected_currency=check.currency,
                    reported_amount=check.reported,
                    reported_currency=check.currency,
                    detail=detail,
                    batch=check.batch,
                )
            )
        return found


def _batch_order(key: tuple[str, str]) -> tuple[int, str, str]:
    """Adyen's numeric batches in number order (9 before 10), anything else after them by name."""
    batch, currency = key
    return (int(batch), "", currency) if batch.isdigit() and len(batch) < 19 else (1 << 63, batch, currency)
