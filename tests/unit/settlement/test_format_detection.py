"""Choosing the parser of a settlement file from its header and the provider folder of its key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing.settlement.files import HEADER as SANDBOX_HEADER
from billing.settlement.formats.adyen_sdr import CLASSIC_HEADER, AdyenSettlementDetailReport
from billing.settlement.formats.detect import format_for, peek_header, provider_from_key
from billing.settlement.formats.records import ProviderRecord
from billing.settlement.formats.stripe_itemized import StripeItemizedPayoutReconciliation

STRIPE_HEADER = ("balance_transaction_id", "created_utc", "currency", "gross", "fee", "net", "reporting_category")


@pytest.mark.parametrize("hint", [None, "adyen"])
def test_an_adyen_header_is_read_by_the_adyen_parser(hint: str | None) -> None:
    assert format_for(CLASSIC_HEADER, provider_hint=hint) is AdyenSettlementDetailReport


@pytest.mark.parametrize("hint", [None, "stripe"])
def test_a_stripe_header_is_read_by_the_stripe_parser(hint: str | None) -> None:
    assert format_for(STRIPE_HEADER, provider_hint=hint) is StripeItemizedPayoutReconciliation


def test_a_header_in_another_providers_folder_fits_no_format() -> None:
    assert format_for(CLASSIC_HEADER, provider_hint="stripe") is None
    assert format_for(STRIPE_HEADER, provider_hint="adyen") is None


@pytest.mark.parametrize("hint", [None, "sandbox", "adyen", "stripe"])
def test_the_engines_own_csv_and_unrelated_headers_fit_no_provider_format(hint: str | None) -> None:
    assert format_for(SANDBOX_HEADER, provider_hint=hint) is None
    assert format_for(("date", "amount", "description"), provider_hint=hint) is None
    assert format_for((), provider_hint=hint) is None


def test_a_header_missing_a_required_column_is_still_recognised_so_the_parser_can_name_it() -> None:
    without_type = tuple(name for name in CLASSIC_HEADER if name != "Type")
    without_fee = tuple(name for name in STRIPE_HEADER if name != "fee")

    assert format_for(without_type, provider_hint="adyen") is AdyenSettlementDetailReport
    assert format_for(without_fee, provider_hint="stripe") is StripeItemizedPayoutReconciliation


def test_recognition_ignores_a_byte_order_mark_and_surrounding_whitespace() -> None:
    header = ["\ufeffbalance_transaction_id ", " net", "reporting_category"]

    assert format_for(header, provider_hint=None) is StripeItemizedPayoutReconciliation


@pytest.mark.parametrize(
    ("key", "provider"),
    [
        ("settlements/adyen/settlement_detail_report_batch_42.csv", "adyen"),
        ("settlements/stripe/2026-04-10.csv", "stripe"),
        ("settlements/stripe/2026/04/10/payouts.csv", "stripe"),
        ("settlements/Adyen/x.csv", None),
        ("settlements/adyen/", None),
        ("settlements/adyen", None),
        ("reports/adyen/x.csv", None),
        ("settlements/../x.csv", None),
    ],
)
def test_provider_from_key_reads_the_provider_folder(key: str, provider: str | None) -> None:
    assert provider_from_key(key) == provider


def test_peek_header_returns_the_header_and_replays_every_line_for_the_parser() -> None:
    consumed: list[str] = []
    text = [",".join(STRIPE_HEADER) + "\n", "txn_1,2026-04-10 09:15:00,eur,1.00,0.10,0.90,charge\n"]

    def feed() -> Iterator[str]:
        for line in text:
            consumed.append(line)
            yield line

    header, replay = peek_header(feed())

    assert header == list(STRIPE_HEADER)
    assert len(consumed) == 1
    parser = format_for(header, provider_hint="stripe")
    assert parser is StripeItemizedPayoutReconciliation
    (record,) = parser.parse(replay, source="settlements/stripe/2026-04-10.csv")
    assert isinstance(record, ProviderRecord)
    assert (record.line_number, record.net_amount) == (2, 90)


def test_peek_header_of_an_empty_stream_is_none() -> None:
    header, replay = peek_header(iter(()))

    assert header is None
    assert list(replay) == []
