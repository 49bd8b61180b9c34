"""Adyen Settlement Detail Report: read by column name in every layout, strict per row, streamed line by line."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.settlement.formats.adyen_sdr import CLASSIC_HEADER, AdyenSettlementDetailReport
from billing.settlement.formats.records import (
    FileErrorRaised,
    LineError,
    ParseResult,
    ProviderRecord,
    RecordKind,
)

SOURCE = "settlements/adyen/settlement_detail_report_batch_42.csv"
CEST = timezone(timedelta(hours=2))

# A settled card payment as the classic layout writes it; tests override only the cells they are about.
SETTLED: Mapping[str, str] = {
    "Company Account": "TestCompany",
    "Merchant Account": "TestMerchant",
    "Psp Reference": "1813702551707653",
    "Merchant Reference": "exec-1",
    "Payment Method": "visa",
    "Creation Date": "2024-05-02 10:11:12",
    "TimeZone": "CEST",
    "Type": "Settled",
    "Modification Reference": "1713702551795048",
    "Gross Currency": "EUR",
    "Gross Debit (GC)": "",
    "Gross Credit (GC)": "19.99",
    "Exchange Rate": "1",
    "Net Currency": "EUR",
    "Net Debit (NC)": "",
    "Net Credit (NC)": "19.57",
    "Commission (NC)": "",
    "Markup (NC)": "0.10",
    "Scheme Fees (NC)": "0.02",
    "Interchange (NC)": "0.30",
    "Payment Method Variant": "visaclassic",
    "Modification Merchant Reference": "",
    "Batch Number": "42",
}


def row(header: Sequence[str], cells: Mapping[str, str] | None = None) -> list[str]:
    values = {**SETTLED, **(cells or {})}
    return [values.get(name, "") for name in header]


def lines(header: Sequence[str], *rows: Sequence[str]) -> list[str]:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().splitlines(keepends=True)


def parse(text_lines: Sequence[str]) -> list[ProviderRecord | LineError]:
    return list(AdyenSettlementDetailReport.parse(text_lines, source=SOURCE))


def records(text_lines: Sequence[str]) -> list[ProviderRecord]:
    items = parse(text_lines)
    assert all(isinstance(item, ProviderRecord) for item in items), items
    return [item for item in items if isinstance(item, ProviderRecord)]


def only_record(text_lines: Sequence[str]) -> ProviderRecord:
    (record,) = records(text_lines)
    return record


def errors(text_lines: Sequence[str]) -> list[LineError]:
    return [item for item in parse(text_lines) if isinstance(item, LineError)]


def only_error(text_lines: Sequence[str]) -> LineError:
    (error,) = errors(text_lines)
    return error


def file_error(text_lines: Sequence[str]) -> str:
    with pytest.raises(FileErrorRaised) as caught:
        parse(text_lines)
    assert caught.value.error.source == SOURCE
    return caught.value.error.reason


# -- the classic layout --------------------------------------------------------------------------------------------


def test_classic_layout_has_the_thirty_documented_columns() -> None:
    assert len(CLASSIC_HEADER) == 30
    assert len(set(CLASSIC_HEADER)) == 30


def test_parse_reads_adyens_documented_sample_rows() -> None:
    sample = [
        ",".join(CLASSIC_HEADER) + "\n",
        "TestCompany,TestMerchant,1813702551707653,3vpzf7,visa,2013-06-03 11:26:49,CET,Settled,1713702551795048,"
        "GBP,,5.00,1,GBP,,4.88,,0.04,0.01,0.07,visaclassic,,,,,,,,,\n",
        "TestCompany,TestMerchant,1313642467023511,324959451,visa,2013-03-26 22:37:26,CET,Chargeback,"
        "2313642467170922,EUR,349.99,,1,EUR,357.49,,7.5,,,,visaclassic,,,,,,,,,\n",
    ]

    settled, chargeback = records(sample)

    assert (settled.kind, settled.gross_amount, settled.gross_currency, settled.net_amount) == (
        RecordKind.SETTLED,
        500,
        "GBP",
        488,
    )
    assert dict(settled.fees) == {"commission": 0, "markup": 4, "scheme_fees": 1, "interchange": 7}
    assert settled.created_at == datetime(2013, 6, 3, 10, 26, 49, tzinfo=UTC)
    assert (chargeback.kind, chargeback.gross_amount, chargeback.net_amount) == (RecordKind.CHARGEBACK, -34999, -35749)
    assert chargeback.fees["commission"] == 750
    assert (settled.line_number, chargeback.line_number) == (2, 3)


def test_parse_maps_every_column_of_a_settled_row() -> None:
    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, {"Modification Merchant Reference": "rev-9"})))

    assert record == ProviderRecord(
        provider="adyen",
        source=SOURCE,
        line_number=2,
        kind=RecordKind.SETTLED,
        raw_type="Settled",
        provider_reference="1813702551707653",
        secondary_reference="1713702551795048",
        merchant_reference="exec-1",
        payment_method="visa",
        created_at=datetime(2024, 5, 2, 10, 11, 12, tzinfo=CEST),
        gross_amount=1999,
        gross_currency="EUR",
        net_amount=1957,
        net_currency="EUR",
        fees={"commission": 0, "markup": 10, "scheme_fees": 2, "interchange": 30},
        batch="42",
        exchange_rate="1",
        metadata={"modification_merchant_reference": "rev-9"},
        merchant_account="TestMerchant",
    )
    assert all(type(amount) is int for amount in (record.gross_amount, record.net_amount, *record.fees.values()))


@pytest.mark.parametrize(
    ("raw_type", "kind"),
    [
        ("Settled", RecordKind.SETTLED),
        ("Refunded", RecordKind.REFUNDED),
        ("Chargeback", RecordKind.CHARGEBACK),
        ("ChargebackReversed", RecordKind.CHARGEBACK_REVERSED),
        ("SecondChargeback", RecordKind.SECOND_CHARGEBACK),
        ("Fee", RecordKind.FEE),
        ("MerchantPayout", RecordKind.PAYOUT),
        ("Balancetransfer", RecordKind.BALANCE_TRANSFER),
        ("DepositCorrection", RecordKind.DEPOSIT_CORRECTION),
        ("InvoiceDeduction", RecordKind.INVOICE_DEDUCTION),
        ("PaymentCost", RecordKind.PAYMENT_COST),
        ("RefundedReversed", RecordKind.OTHER),
        ("MiscCosts", RecordKind.OTHER),
        ("settled", RecordKind.OTHER),  # types are compared exactly
    ],
)
def test_parse_maps_each_type_and_keeps_unknown_types_as_other(raw_type: str, kind: RecordKind) -> None:
    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, {"Type": raw_type})))

    assert (record.kind, record.raw_type) == (kind, raw_type)


def test_refund_debits_gross_and_net() -> None:
    refund = {"Type": "Refunded", "Gross Debit (GC)": "5.00", "Gross Credit (GC)": "", "Net Debit (NC)": "5.12"}
    refund |= {"Net Credit (NC)": ""}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, refund)))

    assert (record.kind, record.gross_amount, record.net_amount) == (RecordKind.REFUNDED, -500, -512)


def test_fee_and_payout_rows_without_gross_currency_have_zero_gross_in_the_net_currency() -> None:
    no_payment = {"Psp Reference": "", "Merchant Reference": "", "Payment Method": "", "Gross Currency": ""}
    no_payment |= {"Gross Credit (GC)": "", "Exchange Rate": "", "Net Credit (NC)": "", "Net Currency": "USD"}
    fee = {**no_payment, "Type": "Fee", "Modification Reference": "Transaction Fees May 2024", "Net Debit (NC)": "1.20"}
    payout = {**no_payment, "Type": "MerchantPayout", "Modification Reference": "", "Net Debit (NC)": "1000.00"}

    fee_record, payout_record = records(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, fee), row(CLASSIC_HEADER, payout)))

    assert (fee_record.kind, fee_record.gross_amount, fee_record.gross_currency) == (RecordKind.FEE, 0, "USD")
    assert fee_record.net_amount == -120
    assert fee_record.secondary_reference == "Transaction Fees May 2024"
    assert (fee_record.provider_reference, fee_record.merchant_reference, fee_record.payment_method) == (None,) * 3
    assert (payout_record.kind, payout_record.net_amount, payout_record.batch) == (RecordKind.PAYOUT, -100000, "42")
    assert payout_record.exchange_rate is None


def test_empty_debit_and_credit_cells_are_zero() -> None:
    record = only_record(
        lines(CLASSIC_HEADER, row(CLASSIC_HEADER, {"Gross Credit (GC)": "", "Net Credit (NC)": "", "Markup (NC)": ""}))
    )

    assert (record.gross_amount, record.net_amount, record.fees["markup"]) == (0, 0, 0)


@pytest.mark.parametrize(
    ("currency", "gross", "minor"),
    [("JPY", "1500", 1500), ("KWD", "12.345", 12345), ("BHD", "0.250", 250), ("EUR", "12.340", 1234)],
)
def test_amounts_scale_by_the_row_currency_exponent(currency: str, gross: str, minor: int) -> None:
    cells = {"Gross Currency": currency, "Gross Credit (GC)": gross, "Net Currency": currency, "Net Credit (NC)": gross}
    cells |= {"Markup (NC)": "", "Scheme Fees (NC)": "", "Interchange (NC)": ""}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert (record.gross_amount, record.net_amount, record.gross_currency) == (minor, minor, currency)


def test_gross_and_net_may_be_in_different_currencies_with_the_rate_kept_as_text() -> None:
    cells = {"Gross Currency": "USD", "Gross Credit (GC)": "10.00", "Exchange Rate": "0.92345678"}
    cells |= {"Net Currency": "EUR", "Net Credit (NC)": "9.11"}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert (record.gross_amount, record.gross_currency, record.net_amount, record.net_currency) == (
        1000,
        "USD",
        911,
        "EUR",
    )
    assert record.exchange_rate == "0.92345678"


# -- variant layouts -----------------------------------------------------------------------------------------------


def _comparable(record: ProviderRecord) -> tuple[object, ...]:
    return (
        record.kind,
        record.merchant_reference,
        record.payment_method,
        record.created_at,
        record.gross_amount,
        record.net_amount,
        dict(record.fees),
        record.batch,
        record.secondary_reference,
    )


def test_columns_are_read_by_name_in_any_order_with_extra_columns_ignored() -> None:
    reordered = (
        *reversed(CLASSIC_HEADER[:23]),
        "Booking Date",
        "Booking Date TimeZone",
        "Metadata",
    )
    cells = {"Booking Date": "2024-05-03 01:00:00", "Booking Date TimeZone": "CEST", "Metadata": "{'k': 'v'}"}

    classic = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER)))
    variant = only_record(lines(reordered, row(reordered, cells)))

    assert _comparable(variant) == _comparable(classic)
    assert variant.provider_reference == "1813702551707653"


def test_a_layout_without_psp_reference_and_with_balance_platform_columns_reads_provider_reference_as_none() -> None:
    balance_platform = ("Balance Platform", "Account Holder", "Balance Account", "Store", "Transfer Id")
    variant = (
        *balance_platform[:2],
        *(name for name in CLASSIC_HEADER if name != "Psp Reference"),
        *balance_platform[2:],
    )
    cells = dict.fromkeys(balance_platform, "AH00000000000000000000001")

    record = only_record(lines(variant, row(variant, cells)))

    assert record.provider_reference is None
    assert _comparable(record) == _comparable(only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER))))


def test_a_layout_with_only_the_required_columns_reports_no_fees_and_no_references() -> None:
    minimal = (
        "Merchant Account",
        "Merchant Reference",
        "Payment Method",
        "Creation Date",
        "TimeZone",
        "Type",
        "Gross Currency",
        "Gross Debit (GC)",
        "Gross Credit (GC)",
        "Net Currency",
        "Net Debit (NC)",
        "Net Credit (NC)",
        "Batch Number",
    )

    record = only_record(lines(minimal, row(minimal)))

    assert record.fees == {}
    assert (record.provider_reference, record.secondary_reference, record.exchange_rate) == (None, None, None)
    assert (record.gross_amount, record.net_amount) == (1999, 1957)


def test_header_names_are_compared_after_stripping_whitespace_and_a_byte_order_mark() -> None:
    header = ["\ufeffCompany Account", *(f" {name} " for name in CLASSIC_HEADER[1:])]

    record = only_record(lines(header, row(CLASSIC_HEADER)))

    assert record.merchant_account == "TestMerchant"


# -- file errors ---------------------------------------------------------------------------------------------------


def test_a_missing_required_column_is_a_file_error_naming_it() -> None:
    header = [name for name in CLASSIC_HEADER if name != "Type"]

    assert file_error(lines(header, row(header))) == "missing required column 'Type'"


def test_several_missing_required_columns_are_named_together() -> None:
    header = [name for name in CLASSIC_HEADER if name not in {"Type", "Batch Number"}]

    assert file_error(lines(header)) == "missing required columns 'Type', 'Batch Number'"


def test_duplicate_column_names_are_a_file_error() -> None:
    header = [*CLASSIC_HEADER, "Net Credit (NC)"]

    assert file_error(lines(header)) == "duplicate column name 'Net Credit (NC)'"


@pytest.mark.parametrize("content", [[], [""], ["\n"], [",,,\n"]])
def test_an_empty_file_is_a_file_error(content: list[str]) -> None:
    assert file_error(content) == "no header: the file is empty"


def test_file_errors_are_raised_before_any_row_is_read() -> None:
    header = [name for name in CLASSIC_HEADER if name != "Net Currency"]
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in lines(header, row(header), row(header)):
            consumed.append(line)
            yield line

    with pytest.raises(FileErrorRaised):
        next(AdyenSettlementDetailReport.parse(feed(), source=SOURCE))
    assert len(consumed) == 1


# -- line errors ---------------------------------------------------------------------------------------------------


def test_a_bad_row_is_reported_with_its_line_and_the_rows_after_it_still_parse() -> None:
    multi_line = row(CLASSIC_HEADER, {"Merchant Reference": "first\nsecond"})  # lines 2 and 3
    bad = row(CLASSIC_HEADER, {"Net Credit (NC)": "19,57"})  # line 4
    short = row(CLASSIC_HEADER)[:-3]  # line 5
    good = row(CLASSIC_HEADER, {"Merchant Reference": "exec-2"})  # line 6

    items = parse(lines(CLASSIC_HEADER, multi_line, bad, short, good))

    assert [type(item).__name__ for item in items] == ["ProviderRecord", "LineError", "LineError", "ProviderRecord"]
    first, comma, width, last = items
    assert isinstance(first, ProviderRecord)
    assert isinstance(last, ProviderRecord)
    assert (first.line_number, first.merchant_reference) == (2, "first\nsecond")
    assert comma == LineError(
        SOURCE,
        4,
        "Net Credit (NC)",
        "Net Credit (NC) contains a comma (thousands separators and decimal commas are refused; write e.g. 1234.56)",
        "19,57",
    )
    assert width == LineError(SOURCE, 5, None, "expected 30 fields as in the header, found 27", None)
    assert (last.line_number, last.merchant_reference) == (6, "exec-2")


@pytest.mark.parametrize(
    ("cells", "field", "reason"),
    [
        ({"Gross Debit (GC)": "1.00"}, "Gross Debit (GC)", "both Gross Debit (GC) and Gross Credit (GC) are non-zero"),
        ({"Net Debit (NC)": "0.01"}, "Net Debit (NC)", "both Net Debit (NC) and Net Credit (NC) are non-zero"),
        ({"Gross Credit (GC)": "-19.99"}, "Gross Credit (GC)", "negative (the column gives the sign)"),
        ({"Gross Credit (GC)": "19.999"}, "Gross Credit (GC)", "more precision than EUR allows"),
        ({"Net Credit (NC)": "1e3"}, "Net Credit (NC)", "no exponents, NaN or infinity"),
        ({"Markup (NC)": "NaN"}, "Markup (NC)", "no exponents, NaN or infinity"),
        ({"Gross Currency": "eur"}, "Gross Currency", "not an ISO 4217 code in upper case"),
        ({"Net Currency": "XYZ"}, "Net Currency", "not an ISO 4217 code in upper case"),
        ({"Net Currency": ""}, "Net Currency", "not an ISO 4217 code in upper case"),
        ({"Gross Currency": ""}, "Gross Currency", "Gross Currency is empty but a gross amount is given"),
        ({"Type": ""}, "Type", "Type is empty"),
        ({"Creation Date": "2024-05-02T10:11:12"}, "Creation Date", "not YYYY-MM-DD HH:MM:SS"),
        ({"Creation Date": "2024-02-30 10:11:12"}, "Creation Date", "not a valid date and time"),
        ({"TimeZone": "IST"}, "TimeZone", "not a known abbreviation"),
        ({"TimeZone": "Mars/Olympus"}, "TimeZone", "not a known abbreviation"),
        ({"TimeZone": ""}, "TimeZone", "not a known abbreviation"),
        ({"Batch Number": "42a"}, "Batch Number", "Batch Number is not a number"),
        ({"Exchange Rate": "1,0"}, "Exchange Rate", "Exchange Rate is not a positive decimal"),
        ({"Exchange Rate": "0"}, "Exchange Rate", "Exchange Rate is not a positive decimal"),
    ],
)
def test_a_malformed_cell_is_a_line_error_naming_its_column(cells: dict[str, str], field: str, reason: str) -> None:
    error = only_error(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert (error.line_number, error.field) == (2, field)
    assert reason in error.reason
    assert error.shown is not None
    assert len(error.shown) <= 40


def test_a_line_error_quotes_at_most_forty_characters_of_the_value() -> None:
    error = only_error(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, {"Net Credit (NC)": "9" * 500})))

    assert error.shown == "9" * 40


def test_a_blank_line_is_reported_not_skipped() -> None:
    text = lines(CLASSIC_HEADER, row(CLASSIC_HEADER))
    text.insert(1, "\n")

    items = parse(text)

    assert items[0] == LineError(SOURCE, 2, None, "blank line", None)
    assert isinstance(items[1], ProviderRecord)
    assert items[1].line_number == 3


def test_broken_quoting_ends_the_file_with_an_error_after_the_rows_before_it() -> None:
    text = [*lines(CLASSIC_HEADER, row(CLASSIC_HEADER)), 'TestCompany,"unterminated\n']

    items = parse(text)

    assert isinstance(items[0], ProviderRecord)
    assert isinstance(items[1], LineError)
    assert (items[1].line_number, items[1].field) == (3, None)
    assert items[1].reason.startswith("unreadable CSV, rest of file not read")


# -- time zones ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected_utc"),
    [
        ("CET", datetime(2024, 1, 15, 9, 0, tzinfo=UTC)),
        ("CEST", datetime(2024, 1, 15, 8, 0, tzinfo=UTC)),
        ("UTC", datetime(2024, 1, 15, 10, 0, tzinfo=UTC)),
        ("GMT", datetime(2024, 1, 15, 10, 0, tzinfo=UTC)),
        ("BST", datetime(2024, 1, 15, 9, 0, tzinfo=UTC)),
        ("Europe/Amsterdam", datetime(2024, 1, 15, 9, 0, tzinfo=UTC)),  # winter: +01
        ("America/New_York", datetime(2024, 1, 15, 15, 0, tzinfo=UTC)),
    ],
)
def test_creation_date_is_read_in_the_rows_time_zone(zone: str, expected_utc: datetime) -> None:
    cells = {"Creation Date": "2024-01-15 10:00:00", "TimeZone": zone}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert record.created_at == expected_utc
    assert record.created_at.tzinfo is UTC


def test_an_iana_zone_follows_daylight_saving_time() -> None:
    cells = {"Creation Date": "2024-07-15 10:00:00", "TimeZone": "Europe/Amsterdam"}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert record.created_at == datetime(2024, 7, 15, 8, 0, tzinfo=UTC)


def test_a_local_time_skipped_by_the_clock_change_is_a_line_error() -> None:
    cells = {"Creation Date": "2024-03-31 02:30:00", "TimeZone": "Europe/Amsterdam"}

    error = only_error(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert (error.field, error.reason) == (
        "Creation Date",
        "Creation Date does not exist in Europe/Amsterdam (clock change)",
    )


def test_a_local_time_repeated_by_the_clock_change_takes_the_earlier_offset() -> None:
    cells = {"Creation Date": "2024-10-27 02:30:00", "TimeZone": "Europe/Amsterdam"}

    record = only_record(lines(CLASSIC_HEADER, row(CLASSIC_HEADER, cells)))

    assert record.created_at == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)


# -- batch numbers -------------------------------------------------------------------------------------------------


def test_batch_number_is_kept_as_text_and_an_empty_one_is_none() -> None:
    with_batch, without = records(
        lines(CLASSIC_HEADER, row(CLASSIC_HEADER, {"Batch Number": "0042"}), row(CLASSIC_HEADER, {"Batch Number": ""}))
    )

    assert (with_batch.batch, without.batch) == ("0042", None)


# -- streaming -----------------------------------------------------------------------------------------------------


class _Feed:
    """200,000 synthetic rows that fail the test if the parser reads more than `limit` lines ahead."""

    def __init__(self, *, rows: int, limit: int) -> None:
        self.rows = rows
        self.limit = limit
        self.consumed = 0

    def __iter__(self) -> Iterator[str]:
        for number in range(self.rows + 1):
            self.consumed += 1
            if self.consumed > self.limit:
                raise AssertionError(f"the parser read line {self.consumed} before it was needed")
            if number == 0:
                yield ",".join(CLASSIC_HEADER) + "\n"
            else:
                cells = {"Merchant Reference": f"exec-{number}", "Gross Credit (GC)": f"{number}.00"}
                yield ",".join(row(CLASSIC_HEADER, cells)) + "\n"


def test_parse_reads_nothing_until_asked_and_then_one_line_per_row() -> None:
    feed = _Feed(rows=200_000, limit=6)

    stream = AdyenSettlementDetailReport.parse(feed, source=SOURCE)
    assert feed.consumed == 0
    first = next(stream)
    assert feed.consumed == 2
    following = [next(stream) for _ in range(4)]

    assert isinstance(first, ProviderRecord)
    assert first.merchant_reference == "exec-1"
    assert [item.line_number for item in following] == [3, 4, 5, 6]
    assert feed.consumed == 6


def test_parse_result_counts_records_and_errors_as_they_stream_past() -> None:
    result = ParseResult(source=SOURCE, provider="adyen")
    text = lines(CLASSIC_HEADER, row(CLASSIC_HEADER), row(CLASSIC_HEADER, {"Type": ""}), row(CLASSIC_HEADER))

    items = list(result.track(AdyenSettlementDetailReport.parse(text, source=SOURCE)))

    assert len(items) == 3
    assert (result.records, result.line_errors, result.file_error) == (2, 1, None)


def test_parse_result_records_a_file_error() -> None:
    result = ParseResult(source=SOURCE, provider="adyen")

    with pytest.raises(FileErrorRaised):
        list(result.track(AdyenSettlementDetailReport.parse(lines(["Type"]), source=SOURCE)))

    assert result.file_error is not None
    assert result.file_error.reason.startswith("missing required columns")
