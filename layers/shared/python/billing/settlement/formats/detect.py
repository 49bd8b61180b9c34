"""Which parser reads a settlement file: by its header, and by the provider folder its key is in."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Final

from billing.settlement.files import SETTLEMENT_PREFIX, is_valid_provider
from billing.settlement.formats.adyen_sdr import AdyenSettlementDetailReport
from billing.settlement.formats.stripe_itemized import StripeItemizedPayoutReconciliation

ProviderFormat = type[AdyenSettlementDetailReport] | type[StripeItemizedPayoutReconciliation]

FORMATS: Final[tuple[ProviderFormat, ...]] = (AdyenSettlementDetailReport, StripeItemizedPayoutReconciliation)
NO_FORMAT: Final = "header fits no known format"


def format_for(header: Sequence[str], *, provider_hint: str | None) -> ProviderFormat | None:
    """The one format whose parser recognises `header`, among the hinted provider's if a hint is given; else None.

    A hint narrows, never widens: a Stripe header in settlements/adyen/ is None (a misfiled file is an error to
    report, not a file to read as the other provider's), as is a header more than one format would claim.
    """
    candidates = [
        candidate
        for candidate in FORMATS
        if (provider_hint is None or candidate.provider == provider_hint) and candidate.recognises(header)
    ]
    return candidates[0] if len(candidates) == 1 else None


def provider_from_key(key: str) -> str | None:
    """The provider folder of settlements/<provider>/<anything>, or None for a key outside that layout."""
    if not key.startswith(SETTLEMENT_PREFIX):
        return None
    provider, slash, rest = key.removeprefix(SETTLEMENT_PREFIX).partition("/")
    if not slash or not rest or not is_valid_provider(provider):
        return None
    return provider


def peek_header(lines: Iterable[str]) -> tuple[list[str] | None, Iterator[str]]:
    """The first CSV row of `lines` (None for an empty stream) and an iterator over all of `lines` again.

    Lets the caller choose the parser from the header without reading the stream twice: only the header's own
    line(s) are held, then replayed ahead of the rest. csv.Error and UnicodeDecodeError propagate to the caller.
    """
    source = iter(lines)
    taken: list[str] = []

    def recorded() -> Iterator[str]:
        for line in source:
            taken.append(line)
            yield line

    header = next(csv.reader(recorded(), strict=True), None)
    return header, chain(taken, source)
