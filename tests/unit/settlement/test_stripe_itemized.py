"""Stripe itemized payout reconciliation report: columns by name, signed major units, metadata, strict rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

import pytest

from billing.providers.stripe.params import EXECUTION_ID_KEY
from billing.settlement.formats import stripe_itemized
from billing.settlement.formats.records import FileErrorRaised, LineError, ProviderRecord, RecordKind
from billing.settlement.formats.stripe_itemized import StripeItemizedPayoutReconciliation

SOURCE = "settlements/stripe/2026-04-10.csv"
# The columns of payout_reconciliation.itemized.5 a report run usually asks for, plus two metadata keys.
HEADER = (
    "automatic_payout_id",
    "automatic_payout_effective_at",
    "balance_transaction_id",
    "created_utc",
    "created",
    "available_on_utc",
    "available_on",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "customer_id",
    "charge_id",
    "payment_intent_id",
    "payment_method_type",
    "card_brand",
    "payment_metadata[execution_id]",
    "payment_metadata[tenant_id]",
)
CHARGE: Mapping[str, str] = {
    "automatic_payout_id": "po_1PayoutA",
    "automatic_payout_effective_at": "2026-04-12 00:00:00",
    "balance_transaction_id": "txn_1Charge",
    "created_utc": "2026-04-10 09:15:00",
    "created": "2026-04-10 09:15:00",
    "available_on_utc": "2026-04-12 00:00:00",
    "available_on": "2026-04-12 00:00:00",
    "currency": "eur",
    "gross": "19.99",
    "fee": "0.54",
    "net": "19.45",
    "reporting_category": "charge",
    "source_id": "ch_1Charge",
    "description": "Subscription",
    "customer_facing_amount": "19.99",
    "customer_facing_currency": "eur",
    "charge_id": "ch_1Charge",
    "payment_intent_id": "pi_1Intent",
    "payment_method_type": "card",
    "card_brand": "visa",
    "payment_metadata[execution_id]": "0b0f4c7e-0000-4000-8000-000000000001",
    "payment_metadata[tenant_id]": "tenant-a",
}


def row(header: Sequence[str], cells: Mapping[str, str] | None = None) -> list[str]:
    values = {**CHARGE, **(cells or {})}
    return [values.get(name, "") for name in header]


def lines(header: Sequence[str], *rows: Sequence[str]) -> list[str]:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().splitlines(keepends=True)


def parse(text_lines: Sequence[str]) -> list[ProviderRecord | LineError]:
    return list(StripeItemizedPayoutReconciliation.parse(text_lines, source=SOURCE))


def only_record(text_lines: Sequence[str]) -> ProviderRecord:
    (item,) = parse(text_lines)
    assert isinstance(item, ProviderRecord), item
    return item


def only_error(text_lines: Sequence[str]) -> LineError:
    (item,) = parse(text_lines)
    assert isinstance(item, LineError), item
    return item


def file_error(text_lines: Sequence[str]) -> str:
    with pytest.raises(FileErrorRaised) as caught:
        parse(text_lines)
    return caught.value.error.reason


def test_the_metadata_key_is_the_one_our_payment_intents_carry() -> None:
    assert stripe_itemized.EXECUTION_ID_KEY == EXECUTION_ID_KEY


def test_parse_maps_every_column_of_a_charge_row() -> None:
    record = only_record(lines(HEADER, row(HEADER)))

    assert record == ProviderRecord(
        provider="stripe",
        source=SOURCE,
        line_number=2,
        kind=RecordKind.SETTLED,
        raw_type="charge",
        provider_reference="pi_1Intent",
        secondary_reference="ch_1Charge",
        merchant_reference="0b0f4c7e-0000-4000-8000-000000000001",
        payment_method="card",
        created_at=datetime(2026, 4, 10, 9, 15, tzinfo=UTC),
        gross_amount=1999,
        gross_currency="EUR",
        net_amount=1945,
        net_currency="EUR",
        fees={"stripe_fee": 54},
        batch="po_1PayoutA",
        exchange_rate=None,
        metadata={"execution_id": "0b0f4c7e-0000-4000-8000-000000000001", "tenant_id": "tenant-a"},
        customer_facing_amount=1999,
        customer_facing_currency="EUR",
    )


@pytest.mark.parametrize("currency", ["eur", "EUR", "Eur"])
def test_currency_is_read_in_any_case_as_the_upper_case_iso_code(currency: str) -> None:
    record = only_record(lines(HEADER, row(HEADER, {"currency": currency})))

    assert (record.gross_currency, record.net_currency) == ("EUR", "EUR")


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        ("charge", RecordKind.SETTLED),
        ("refund", RecordKind.REFUNDED),
        ("dispute", RecordKind.CHARGEBACK),
        ("dispute_reversal", RecordKind.CHARGEBACK_REVERSED),
        ("fee", RecordKind.FEE),
        ("payout", RecordKind.PAYOUT),
        ("payout_reversal", RecordKind.ADJUSTMENT),
        ("other_adjustment", RecordKind.ADJUSTMENT),
        ("partial_capture_reversal", RecordKind.OTHER),
        ("transfer", RecordKind.OTHER),
        ("risk_reserved_funds", RecordKind.OTHER),
    ],
)
def test_reporting_categories_map_and_unknown_ones_are_kept_as_other(category: str, kind: RecordKind) -> None:
    record = only_record(lines(HEADER, row(HEADER, {"reporting_category": category})))

    assert (record.kind, record.raw_type) == (kind, category)


def test_refund_amounts_are_signed_and_fees_may_be_negative() -> None:
    refund = {"reporting_category": "refund", "gross": "-5.00", "fee": "-0.10", "net": "-4.90", "source_id": "re_1"}
    refund |= {"customer_facing_amount": "5.00"}

    record = only_record(lines(HEADER, row(HEADER, refund)))

    assert (record.gross_amount, record.fees["stripe_fee"], record.net_amount) == (-500, -10, -490)
    assert record.customer_facing_amount == 500


def test_a_zero_decimal_currency_has_no_minor_unit() -> None:
    cells = {"currency": "jpy", "gross": "2000", "fee": "72", "net": "1928", "customer_facing_currency": "jpy"}
    cells |= {"customer_facing_amount": "2000"}

    record = only_record(lines(HEADER, row(HEADER, cells)))

    assert (record.gross_amount, record.fees["stripe_fee"], record.net_amount, record.gross_currency) == (
        2000,
        72,
        1928,
        "JPY",
    )


def test_the_customer_facing_amount_uses_its_own_currency_exponent() -> None:
    cells = {"currency": "eur", "gross": "9.20", "fee": "0.30", "net": "8.90"}
    cells |= {"customer_facing_amount": "1500", "customer_facing_currency": "jpy"}

    record = only_record(lines(HEADER, row(HEADER, cells)))

    assert (record.customer_facing_amount, record.customer_facing_currency) == (1500, "JPY")
    assert (record.gross_amount, record.gross_currency) == (920, "EUR")


def test_payment_metadata_columns_become_metadata_keys_and_empty_cells_are_left_out() -> None:
    header = (*HEADER, "payment_metadata[order]", "refund_metadata[refund_id]")
    cells = {"payment_metadata[tenant_id]": "", "payment_metadata[order]": "A-1", "refund_metadata[refund_id]": "r-1"}

    record = only_record(lines(header, row(header, cells)))

    assert record.metadata == {"execution_id": "0b0f4c7e-0000-4000-8000-000000000001", "order": "A-1"}


def test_merchant_reference_is_none_without_execution_id_metadata() -> None:
    header = tuple(name for name in HEADER if name != "payment_metadata[execution_id]")

    record = only_record(lines(header, row(header)))

    assert record.merchant_reference is None
    assert record.metadata == {"tenant_id": "tenant-a"}


@pytest.mark.parametrize(
    ("cells", "method"),
    [
        ({}, "card"),
        ({"payment_method_type": ""}, "visa"),
        ({"payment_method_type": "", "card_brand": ""}, None),
        ({"payment_method_type": "sepa_debit", "card_brand": ""}, "sepa_debit"),
    ],
)
def test_payment_method_is_the_type_else_the_card_brand(cells: dict[str, str], method: str | None) -> None:
    assert only_record(lines(HEADER, row(HEADER, cells))).payment_method == method


def test_secondary_reference_is_the_charge_else_the_source_and_references_may_be_absent() -> None:
    payout = {"reporting_category": "payout", "charge_id": "", "payment_intent_id": "", "source_id": "po_1PayoutA"}
    payout |= {"gross": "-100.00", "fee": "0.00", "net": "-100.00", "customer_facing_amount": ""}
    payout |= {"customer_facing_currency": "", "payment_method_type": "", "card_brand": ""}
    payout |= {"payment_metadata[execution_id]": "", "payment_metadata[tenant_id]": ""}

    record = only_record(lines(HEADER, row(HEADER, payout)))

    assert (record.kind, record.secondary_reference, record.provider_reference) == (
        RecordKind.PAYOUT,
        "po_1PayoutA",
        None,
    )
    assert (record.customer_facing_amount, record.merchant_reference, record.metadata) == (None, None, {})


def test_a_minimal_layout_needs_only_the_required_columns() -> None:
    header = ("balance_transaction_id", "created", "currency", "gross", "fee", "net", "reporting_category")

    record = only_record(lines(header, row(header)))

    assert (record.net_amount, record.batch, record.provider_reference, record.payment_method) == (
        1945,
        None,
        None,
        None,
    )
    assert record.created_at == datetime(2026, 4, 10, 9, 15, tzinfo=UTC)


# -- created -------------------------------------------------------------------------------------------------------


def test_created_utc_is_preferred_over_created_which_may_be_in_another_zone() -> None:
    record = only_record(lines(HEADER, row(HEADER, {"created": "2026-04-10 11:15:00"})))

    assert record.created_at == datetime(2026, 4, 10, 9, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-04-10 09:15:00", datetime(2026, 4, 10, 9, 15, tzinfo=UTC)),
        ("1775812500", datetime(2026, 4, 10, 9, 15, tzinfo=UTC)),
        ("0", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_created_is_a_utc_date_time_or_a_unix_timestamp(text: str, expected: datetime) -> None:
    header = tuple(name for name in HEADER if name != "created_utc")

    record = only_record(lines(header, row(header, {"created": text})))

    assert record.created_at == expected
    assert record.created_at.tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["2026-04-10T09:15:00Z", "2026-04-10", "-1", "1775812500.5", "2026-13-01 00:00:00", ""]
)
def test_a_malformed_created_is_a_line_error(text: str) -> None:
    error = only_error(lines(HEADER, row(HEADER, {"created_utc": text})))

    assert error.field == "created_utc"


def test_a_file_without_created_or_created_utc_is_a_file_error() -> None:
    header = tuple(name for name in HEADER if name not in {"created", "created_utc"})

    assert file_error(lines(header, row(header))) == "missing required column 'created_utc' (or 'created')"


# -- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["balance_transaction_id", "currency", "gross", "fee", "net", "reporting_category"])
def test_a_missing_required_column_is_a_file_error(missing: str) -> None:
    header = tuple(name for name in HEADER if name != missing)

    assert file_error(lines(header, row(header))) == f"missing required column {missing!r}"


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        ({"net": "19.46"}, "net", "net is not gross - fee"),
        ({"gross": "19,99", "net": "19,45"}, "gross", "contains a comma"),
        ({"fee": ""}, "fee", "fee is empty"),
        ({"gross": "19.999"}, "gross", "more precision than EUR allows"),
        ({"currency": "euro"}, "currency", "not an ISO 4217 code"),
        ({"currency": ""}, "currency", "not an ISO 4217 code"),
        ({"reporting_category": ""}, "reporting_category", "reporting_category is empty"),
        ({"balance_transaction_id": ""}, "balance_transaction_id", "balance_transaction_id is empty"),
        ({"customer_facing_currency": ""}, "customer_facing_currency", "is empty while the other"),
        ({"customer_facing_amount": "1e3"}, "customer_facing_amount", "no exponents, NaN or infinity"),
    ],
)
def test_a_malformed_cell_is_a_line_error_naming_its_column(cells: dict[str, str], field: str, reason: str) -> None:
    error = only_error(lines(HEADER, row(HEADER, cells)))

    assert (error.line_number, error.field) == (2, field)
    assert reason in error.reason


def test_a_bad_row_is_reported_with_its_line_and_the_next_rows_still_parse() -> None:
    items = parse(
        lines(
            HEADER,
            row(HEADER),
            row(HEADER, {"net": "NaN"}),
            row(HEADER, {"reporting_category": "refund", "gross": "-1.00", "fee": "0.00", "net": "-1.00"}),
        )
    )

    assert [getattr(item, "line_number", None) for item in items] == [2, 3, 4]
    assert [type(item).__name__ for item in items] == ["ProviderRecord", "LineError", "ProviderRecord"]


def test_parse_streams_without_reading_ahead() -> None:
    consumed = 0

    def feed() -> Iterator[str]:
        nonlocal consumed
        yield ",".join(HEADER) + "\n"
        for _ in range(200_000):
            consumed += 1
            if consumed > 3:
                raise AssertionError("read ahead of the caller")
            yield ",".join(row(HEADER)) + "\n"

    stream = StripeItemizedPayoutReconciliation.parse(feed(), source=SOURCE)
    first, second = next(stream), next(stream)

    assert isinstance(first, ProviderRecord)
    assert isinstance(second, ProviderRecord)
    assert (first.line_number, second.line_number, consumed) == (2, 3, 2)
