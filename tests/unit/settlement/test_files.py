"""Settlement files: keys, the strict parser (every malformed row reported with its line) and the writer."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest

from billing.settlement.files import (
    FileError,
    ParsedFile,
    SettlementStatus,
    parse_settlement_file,
    parse_settlement_key,
    render_settlement_file,
    settlement_file_key,
)
from tests.unit.settlement.factories import DAY, line

KEY = settlement_file_key("sandbox", DAY)
HEADER = "provider_reference,amount,currency,status,settled_at,fee\n"


def parse(text: str | bytes) -> ParsedFile:
    content = text.encode() if isinstance(text, str) else text
    return parse_settlement_file(content, provider="sandbox", day=DAY, source=KEY)


def only_error(parsed: ParsedFile) -> FileError:
    assert len(parsed.errors) == 1, parsed.errors
    return parsed.errors[0]


# -- keys ------------------------------------------------------------------------------------------------------


def test_settlement_file_key_is_provider_folder_and_iso_day() -> None:
    assert settlement_file_key("sandbox", date(2026, 4, 10)) == "settlements/sandbox/2026-04-10.csv"


@pytest.mark.parametrize("provider", ["", "Sandbox", "../etc", "a/b", "stripe.com", "x" * 41])
def test_settlement_file_key_refuses_provider_names_that_are_not_plain_folders(provider: str) -> None:
    with pytest.raises(ValueError, match="invalid provider"):
        settlement_file_key(provider, DAY)


def test_parse_settlement_key_round_trips_and_rejects_other_keys() -> None:
    assert parse_settlement_key("settlements/adyen/2026-02-28.csv") == ("adyen", date(2026, 2, 28))
    assert parse_settlement_key("settlements/adyen/2026-02-30.csv") is None
    assert parse_settlement_key("settlements/adyen/2026-02-28.txt") is None
    assert parse_settlement_key("reports/daily/2026-02-28_2026-03-01.csv") is None
    assert parse_settlement_key("settlements/Adyen/2026-02-28.csv") is None


# -- well-formed files -----------------------------------------------------------------------------------------


def test_parse_reads_every_row_as_typed_lines_with_integer_minor_units() -> None:
    parsed = parse(
        HEADER
        + "sbx_1,1999,EUR,paid,2026-04-10T09:15:00Z,29\n"
        + "sbx_2,5000,JPY,failed,2026-04-10T10:00:00+00:00,\n"
        + "sbx_3,1500,KWD,refunded,2026-04-10T23:59:59.999999Z,0\n"
        + "sbx_4,1,EUR,chargeback,2026-04-11T01:00:00+02:00,\n"
    )

    assert parsed.errors == ()
    first, second, third, fourth = parsed.lines
    assert (first.provider_reference, first.amount, first.currency, first.status, first.fee) == (
        "sbx_1",
        1999,
        "EUR",
        SettlementStatus.PAID,
        29,
    )
    assert type(first.amount) is int
    assert type(first.fee) is int
    assert first.settled_at == datetime(2026, 4, 10, 9, 15, tzinfo=UTC)
    assert (first.line_number, first.source, first.provider, first.day) == (2, KEY, "sandbox", DAY)
    assert (second.status, second.fee, second.line_number) == (SettlementStatus.FAILED, None, 3)
    assert (third.status, third.fee) == (SettlementStatus.REFUNDED, 0)
    # 01:00 at UTC+2 is 23:00 UTC the day before: on the file's day.
    assert fourth.status is SettlementStatus.CHARGEBACK


def test_parse_accepts_the_header_without_the_optional_fee_column() -> None:
    parsed = parse("provider_reference,amount,currency,status,settled_at\nsbx_1,1999,EUR,paid,2026-04-10T09:15:00Z\n")

    assert parsed.errors == ()
    assert parsed.lines[0].fee is None


def test_parse_accepts_crlf_line_ends_a_byte_order_mark_and_quoted_fields() -> None:
    parsed = parse(
        b"\xef\xbb\xbf" + HEADER.replace("\n", "\r\n").encode() + b'"sbx_1","1999",EUR,paid,2026-04-10T09:15:00Z,\r\n'
    )

    assert parsed.errors == ()
    assert parsed.lines[0].amount == 1999


def test_parse_of_a_header_only_file_has_no_lines_and_no_errors() -> None:
    assert parse(HEADER) == ParsedFile("sandbox", DAY, KEY, (), ())


# -- malformed rows: reported with their line, the other rows still read ---------------------------------------


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("sbx_1,12.50,EUR,paid,2026-04-10T09:15:00Z,", "amount '12.50' is not an integer of minor units"),
        ("sbx_1,1e3,EUR,paid,2026-04-10T09:15:00Z,", "amount '1e3' is not an integer"),
        ("sbx_1,-100,EUR,paid,2026-04-10T09:15:00Z,", "amount '-100' is not an integer"),
        ("sbx_1,+100,EUR,paid,2026-04-10T09:15:00Z,", "amount '\\+100' is not an integer"),
        ("sbx_1,0199,EUR,paid,2026-04-10T09:15:00Z,", "amount '0199' is not an integer"),
        ("sbx_1, 199,EUR,paid,2026-04-10T09:15:00Z,", "amount ' 199' is not an integer"),
        ("sbx_1,,EUR,paid,2026-04-10T09:15:00Z,", "amount '' is not an integer"),
        ("sbx_1,0,EUR,paid,2026-04-10T09:15:00Z,", "amount must be positive"),
        ("sbx_1,1000000000000001,EUR,paid,2026-04-10T09:15:00Z,", "amount 1000000000000001 exceeds"),
        ("sbx_1,100,eur,paid,2026-04-10T09:15:00Z,", "currency 'eur' is not an ISO 4217 code"),
        ("sbx_1,100,XXX,paid,2026-04-10T09:15:00Z,", "currency 'XXX' is not an ISO 4217 code"),
        (
            "sbx_1,100,EUR,settled,2026-04-10T09:15:00Z,",
            "status 'settled' is not one of paid/failed/refunded/chargeback",
        ),
        ("sbx_1,100,EUR,PAID,2026-04-10T09:15:00Z,", "status 'PAID' is not one of"),
        ("sbx_1,100,EUR,paid,2026-04-10T09:15:00,", "has no UTC offset"),
        ("sbx_1,100,EUR,paid,10/04/2026,", "is not an ISO 8601 timestamp"),
        ("sbx_1,100,EUR,paid,2026-04-11T00:00:00Z,", "is not on the file's day 2026-04-10"),
        ("sbx_1,100,EUR,paid,2026-04-10T09:15:00Z,1.5", "fee '1.5' is not an integer of minor units"),
        ("sbx_1,100,EUR,paid,2026-04-10T09:15:00Z,-1", "fee '-1' is not an integer"),
        (",100,EUR,paid,2026-04-10T09:15:00Z,", "provider_reference '' is not 1-128"),
        ("=HYPERLINK(1),100,EUR,paid,2026-04-10T09:15:00Z,", "provider_reference '=HYPERLINK\\(1\\)' is not"),
        ("sbx_1,100,EUR,paid,2026-04-10T09:15:00Z", "expected 6 fields, found 5"),
        ("sbx_1,100,EUR,paid,2026-04-10T09:15:00Z,,extra", "expected 6 fields, found 7"),
        ("", "blank line"),
    ],
)
def test_parse_reports_a_malformed_row_with_its_line_number_and_keeps_the_others(row: str, message: str) -> None:
    parsed = parse(
        HEADER
        + "sbx_ok1,100,EUR,paid,2026-04-10T08:00:00Z,\n"
        + row
        + "\n"
        + "sbx_ok2,200,EUR,paid,2026-04-10T08:00:00Z,\n"
    )

    error = only_error(parsed)
    assert error.source == KEY
    assert error.line == 3
    assert re.search(message, error.message), error.message
    assert [ok.provider_reference for ok in parsed.lines] == ["sbx_ok1", "sbx_ok2"]
    assert [ok.line_number for ok in parsed.lines] == [2, 4]


def test_parse_counts_physical_lines_when_a_quoted_field_spans_lines() -> None:
    parsed = parse(HEADER + '"sbx\n1",100,EUR,paid,2026-04-10T08:00:00Z,\nsbx_2,abc,EUR,paid,2026-04-10T08:00:00Z,\n')

    first, second = parsed.errors
    assert (first.line, second.line) == (2, 4)


@pytest.mark.parametrize(
    "header",
    [
        "reference,amount,currency,status,settled_at,fee",
        "provider_reference,currency,amount,status,settled_at,fee",
        "Provider_Reference,amount,currency,status,settled_at,fee",
        "provider_reference,amount,currency,status,settled_at,fee,note",
        "sbx_1,1999,EUR,paid,2026-04-10T09:15:00Z,",
    ],
)
def test_parse_refuses_any_other_header_and_reads_no_rows(header: str) -> None:
    parsed = parse(header + "\nsbx_1,1999,EUR,paid,2026-04-10T09:15:00Z,\n")

    error = only_error(parsed)
    assert (error.line, parsed.lines) == (1, ())
    assert error.message.startswith("header must be provider_reference,amount,currency,status,settled_at[,fee]")


def test_parse_of_an_empty_file_is_a_file_error() -> None:
    error = only_error(parse(b""))

    assert (error.line, error.message) == (None, "empty file: the header row is missing")


def test_parse_of_bytes_that_are_not_utf8_is_a_file_error() -> None:
    error = only_error(parse(HEADER.encode() + b"sbx_1,100,EUR,paid,2026-04-10T08:00:00Z,\xff\n"))

    assert error.line is None
    assert error.message.startswith("not UTF-8")


def test_parse_stops_at_broken_quoting_and_says_the_rest_was_not_read() -> None:
    parsed = parse(
        HEADER + "sbx_1,100,EUR,paid,2026-04-10T08:00:00Z,\n" + 'sbx_2,"1"00,EUR,paid,2026-04-10T08:00:00Z,\n'
    )

    error = only_error(parsed)
    assert error.line == 3
    assert "rest of file not read" in error.message
    assert [ok.provider_reference for ok in parsed.lines] == ["sbx_1"]


# -- writing ---------------------------------------------------------------------------------------------------


def test_render_then_parse_gives_back_the_same_lines() -> None:
    lines = [
        line("sbx_1", fee=29),
        line("sbx_2", amount=5000, currency="JPY", status=SettlementStatus.FAILED, line_number=3),
        line("sbx_3", amount=1500, currency="KWD", status=SettlementStatus.CHARGEBACK, fee=0, line_number=4),
    ]

    content = render_settlement_file(lines)

    assert content.decode().splitlines()[0] == HEADER.strip()
    assert parse(content) == ParsedFile("sandbox", DAY, KEY, tuple(lines), ())
