"""billing.settlement.html_report: one self-contained, escaped page of a settlement report, worst findings first."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import escape
from html.parser import HTMLParser

import pytest

from billing.settlement.html_report import class_text, render_html
from billing.settlement.outcome import (
    CLASS_SEVERITY,
    DISCREPANCY_CLASSES,
    CurrencyTotals,
    Discrepancy,
    DiscrepancyClass,
    FeeTotal,
    FileRead,
    PayoutCheck,
)
from tests.unit.settlement.html_report_factories import (
    counts_of,
    discrepancy,
    one_shot,
    realistic_findings,
    realistic_summary,
    summary,
)

# Tags whose text reads as a separate word: table cells, lines, list items, SVG labels.
_SEPARATED = {"td", "th", "tr", "br", "li", "p", "h1", "h2", "h3", "dt", "dd", "text", "title", "g"}
_VOID = {"meta", "br", "input", "img", "link", "hr", "wbr", "col", "source", "area", "base", "embed"}


class Page(HTMLParser):
    """The parsed document: every start tag in order, and the text inside each element that has an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text_by_id: dict[str, str] = {}
        self.style = ""
        self._open: list[str | None] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag in _SEPARATED:
            self.handle_data(" ")
        self._in_style = tag == "style"
        if tag in _VOID:
            return
        element_id = attributes.get("id")
        self._open.append(element_id)
        if element_id is not None:
            self.text_by_id.setdefault(element_id, "")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag not in _VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.style += data
        for element_id in self._open:
            if element_id is not None:
                self.text_by_id[element_id] += data

    def ids(self) -> list[str]:
        return [a["id"] for _, a in self.tags if a.get("id")]  # type: ignore[misc]

    def with_attribute(self, name: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(t, a) for t, a in self.tags if name in a]

    def text(self, element_id: str) -> str:
        return " ".join(self.text_by_id[element_id].split())


def parse(document: str) -> Page:
    page = Page()
    page.feed(document)
    page.close()
    return page


def render(findings: list[Discrepancy] | None = None, **summary_overrides: object) -> tuple[str, Page]:
    findings = [] if findings is None else findings
    summary_overrides.setdefault("counts", counts_of(findings))
    document = render_html(summary(**summary_overrides), one_shot(findings))
    return document, parse(document)


def test_every_section_is_there_with_its_id() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    for section in (
        "report-header",
        "summary",
        "files",
        "file-errors",
        "missing-files",
        "line-errors",
        "totals",
        "payouts",
        "fees",
        "fees-by-type",
        "fees-by-payment-method",
        "chart",
        "discrepancies",
    ):
        assert section in page.ids(), section
    assert page.text("provider") == "adyen"
    assert page.text("period") == "2026-04-06 to 2026-04-12 (7 days)"
    assert page.text("generated-at") == "2026-04-13T06:00:00+00:00"
    assert page.text("report-id") == "7d1f7a52-2b1c-5c1e-9d3a-0c2f4b6a8e10"
    assert page.text("supersedes") == "0b3a6c1e-9f2d-5e4a-8b7c-1d2e3f405162"
    assert "settlement_detail_report_batch_118.csv adyen_sdr 4,210 2" in page.text("files-read")
    assert "missing required column 'Type'" in page.text("file-errors")
    assert "settlement_detail_report_batch_121.csv" in page.text("missing-files")
    assert "Net Credit (NC) not a decimal amount 12,5O" in page.text("line-errors")
    assert "1 more in the JSON report." in page.text("line-errors")


def test_a_day_period_reads_as_that_day() -> None:
    _, page = render(period_end=summary().period_start.replace(day=7))

    assert page.text("period") == "2026-04-06 (1 day)"


def test_summary_line_says_which_payouts_do_not_balance_and_how_many_discrepancies() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    [(_, attributes)] = [(t, a) for t, a in page.tags if a.get("id") == "summary"]
    assert attributes["class"] == "attention"
    assert attributes["data-payouts-balance"] == "false"
    assert page.text("summary") == (
        "1 of 2 payouts does not balance. 1 batch not paid out in these files. "
        "9 discrepancies in 7 classes; the worst: payout mismatch (1). "
        "1 file could not be read. 1 expected file missing. 2 lines could not be read."
    )


def test_a_clean_report_says_so_and_draws_no_bars() -> None:
    _, page = render([])

    [(_, attributes)] = [(t, a) for t, a in page.tags if a.get("id") == "summary"]
    assert attributes["class"] == "ok"
    assert page.text("summary") == "The payout balances. No discrepancies."
    assert not [t for t, _ in page.tags if t == "rect"]
    assert page.text("discrepancies") == "Discrepancies None."


def test_script_in_any_data_field_is_shown_as_text_never_as_markup() -> None:
    injected = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    finding = discrepancy(
        DiscrepancyClass.AMOUNT_MISMATCH,
        source=f"file{injected}.csv",
        provider_reference=injected,
        record_kind=injected,
        batch=injected,
        payment_method=injected,
        detail=f"detail {injected}",
    )
    document, page = render(
        [finding],
        provider=injected,
        files=(FileRead(injected, injected, injected, 1, 0),),
        file_errors=({"source": injected, "reason": injected},),
        line_errors=({"source": injected, "line": injected, "field": injected, "reason": injected, "shown": injected},),
        line_error_count=1,
        missing_files=(injected,),
        payouts=(PayoutCheck(injected, "EUR", 1, 2, 1, injected, 3),),
        fees_by_type=(FeeTotal("EUR", injected, 1),),
        totals=(CurrencyTotals(injected, 1, 1, 0, 0, 1, 0, 1),),
        notes=(injected,),
    )

    tags = {tag for tag, _ in page.tags}
    assert "script" not in tags
    assert "img" not in tags
    assert not [a for _, a in page.tags if any(name.startswith("on") for name in a)]
    assert "<script>" not in document
    assert len([a for t, a in page.tags if t == "tr" and a.get("data-id") == str(finding.id)]) == 1
    assert f"detail {injected}" in page.text("discrepancies")
    assert injected in page.text("report-header")
    assert injected in page.text("files")
    assert injected in page.text("payouts")
    assert injected in page.text("fees")
    assert f"1 {injected} (minor units, unknown currency)" in page.text("totals")
    assert f"<title>Settlement report {escape(injected)} " in document


def test_the_page_loads_nothing_and_runs_nothing() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    assert not [t for t, _ in page.tags if t in {"script", "link", "img", "iframe", "object", "embed", "image", "use"}]
    for _, attributes in page.tags:
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            value = (attributes.get(name) or "").strip().lower()
            assert not value.startswith(("http:", "https:", "//", "data:", "javascript:", "file:")), (name, value)
    assert [a["href"] for _, a in page.with_attribute("href")] == [
        "#files",
        "#totals",
        "#payouts",
        "#fees",
        "#chart",
        "#discrepancies",
    ]
    assert "url(" not in page.style
    assert "@import" not in page.style
    assert "@font-face" not in page.style
    [policy] = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert policy is not None
    assert "default-src 'none'" in policy


def test_discrepancy_groups_come_worst_class_first_whatever_the_order_found() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    groups = [a["data-class"] for t, a in page.tags if t == "section" and a.get("class") == "discrepancy-group"]
    present = {d.discrepancy_class.value for d in findings}
    assert groups == [c.value for c in CLASS_SEVERITY if c.value in present]
    assert groups[0] == "payout_mismatch"
    assert groups[-1] == "unmapped_type"
    assert page.text("class-missing_internally").startswith("Missing internally (3)")


def test_each_class_shows_its_first_items_and_counts_the_rest_in_the_csv() -> None:
    findings = [discrepancy(DiscrepancyClass.AMOUNT_MISMATCH, line) for line in range(2, 12)] + [
        discrepancy(DiscrepancyClass.UNMAPPED_TYPE, 99)
    ]
    page = parse(render_html(summary(counts=counts_of(findings)), one_shot(findings), shown_per_class=4))

    shown = [a["data-id"] for t, a in page.tags if t == "tr" and "data-id" in a]
    assert shown == [str(d.id) for d in findings[:4]] + [str(findings[-1].id)]
    assert "6 more in the CSV." in page.text("class-amount_mismatch")
    assert page.text("class-amount_mismatch").startswith("Amount mismatch (10)")
    assert "more in the CSV" not in page.text("class-unmapped_type")
    assert [a["data-more"] for t, a in page.tags if t == "p" and a.get("class") == "more"] == ["6"]


def test_a_huge_stream_is_read_once_and_only_the_shown_rows_are_kept() -> None:
    produced = 0

    def stream() -> Iterator[Discrepancy]:
        nonlocal produced
        for line in range(20_000):
            produced += 1
            yield discrepancy(DISCREPANCY_CLASSES[line % 3], line)

    document = render_html(summary(), stream(), shown_per_class=5)
    page = parse(document)

    assert produced == 20_000
    assert len([t for t, a in page.tags if t == "tr" and "data-id" in a]) == 15
    assert len(document) < 60_000
    assert "6,662 more in the CSV." in page.text("class-payout_mismatch")


def test_matched_items_are_not_findings() -> None:
    _, page = render([discrepancy(DiscrepancyClass.MATCHED)], counts={})

    assert page.text("discrepancies") == "Discrepancies None."
    assert "count-warning" not in page.ids()


def test_a_list_that_disagrees_with_the_summary_counts_is_flagged() -> None:
    findings = [discrepancy(DiscrepancyClass.AMOUNT_MISMATCH)]
    _, page = render(findings, counts={DiscrepancyClass.AMOUNT_MISMATCH: 2})

    assert page.text("count-warning") == (
        "The discrepancy list and the summary disagree (amount mismatch: 1 listed, 2 counted)."
    )


@pytest.mark.parametrize(
    ("currency", "minor", "shown"),
    [
        ("JPY", 120000, "120000 JPY"),
        ("JPY", -5, "-5 JPY"),
        ("EUR", 1250, "12.50 EUR"),
        ("EUR", -5, "-0.05 EUR"),
        ("EUR", 100_000_000_001, "1000000000.01 EUR"),
        ("KWD", 1234, "1.234 KWD"),
        ("KWD", 5, "0.005 KWD"),
    ],
)
def test_amounts_show_in_major_units_with_the_currency_exponent(currency: str, minor: int, shown: str) -> None:
    finding = discrepancy(
        DiscrepancyClass.AMOUNT_MISMATCH,
        expected_amount=minor,
        expected_currency=currency,
        reported_amount=minor,
        reported_currency=currency,
    )
    _, page = render(
        [finding],
        totals=(CurrencyTotals(currency, 1, minor, 0, 0, minor, 0, minor),),
        payouts=(PayoutCheck("7", currency, minor, minor, 1, None, None),),
        fees_by_type=(FeeTotal(currency, "commission", minor),),
    )

    money = [(a["data-minor"], a["data-currency"]) for t, a in page.tags if t == "span" and "data-minor" in a]
    assert (str(minor), currency) in money
    assert page.text("totals-table").count(shown) == 3  # settled, net, expected
    assert shown in page.text("payouts-table")
    assert shown in page.text("fees-by-type")
    assert shown in page.text("class-amount_mismatch")


def test_amounts_in_a_code_we_do_not_know_stay_in_minor_units() -> None:
    _, page = render(totals=(CurrencyTotals("XYZ", 1, 1234, 0, 0, 1234, 0, 1234),))

    assert "1234 XYZ (minor units, unknown currency)" in page.text("totals")


def test_settled_against_expected_shows_the_signed_difference() -> None:
    _, page = render(
        totals=(
            CurrencyTotals("EUR", 2, 2001, 0, 0, 1941, 60, 2000),
            CurrencyTotals("JPY", 1, 1000, 0, 0, 1000, 0, 1000),
        )
    )

    assert page.text("totals-table").endswith(
        "EUR 2 20.01 EUR 0.00 EUR 0.00 EUR 0.60 EUR 19.41 EUR 20.00 EUR +0.01 EUR "
        "JPY 1 1000 JPY 0 JPY 0 JPY 0 JPY 1000 JPY 1000 JPY none"
    )


def test_payouts_that_do_not_balance_come_first_and_are_marked() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    rows = [(a["data-batch"], a["data-balances"], a.get("class")) for t, a in page.tags if "data-balances" in a]
    assert rows == [("119", "false", "unbalanced"), ("120", "none", None), ("118", "true", None)]
    text = page.text("payouts-table")
    assert "119 KWD 17 1234.567 KWD 1234.000 KWD -0.567 KWD ✗ does not balance" in text
    assert "120 JPY 120 3380000 JPY — — not paid out in these files" in text
    assert "118 EUR 4,100 79258.61 EUR 79258.61 EUR none ✓ balances" in text


def test_fees_are_grouped_per_currency_with_a_subtotal_each() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    assert page.text("fees-by-type") == (
        "Currency Type Fees "
        "EUR commission 1200.00 EUR EUR interchange 601.90 EUR EUR scheme_fees 140.00 EUR EUR All 1941.90 EUR "
        "JPY commission 70000 JPY JPY All 70000 JPY "
        "KWD markup 10.558 KWD KWD All 10.558 KWD"
    )
    assert page.text("fees-by-payment-method").startswith(
        "Currency Payment method Fees EUR ideal 441.90 EUR EUR visa 1500.00 EUR EUR All 1941.90 EUR"
    )


def test_chart_has_one_labelled_bar_per_class_with_findings_longest_for_the_most() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    bars = [a for t, a in page.tags if t == "rect"]
    present = [c.value for c in CLASS_SEVERITY if c in counts_of(findings)]
    assert [b["data-class"] for b in bars] == present
    widths = {b["data-class"]: int(b["width"] or 0) for b in bars}
    assert max(widths, key=lambda c: widths[c]) == "missing_internally"
    assert all(width > 0 for width in widths.values())
    chart = page.text("chart")
    assert "Missing internally: 3 discrepancies" in chart
    assert "Payout mismatch: 1 discrepancy" in chart
    assert "Discrepancies per class, worst class first" in chart


def test_discrepancy_rows_say_where_what_and_by_how_much() -> None:
    findings = realistic_findings()
    page = parse(render_html(realistic_summary(findings), one_shot(findings)))

    payout = page.text("class-payout_mismatch")
    assert "settlement_detail_report_batch_118.csv:40 — payout 119 — — 1234.567 KWD 1234.000 KWD -0.567 KWD" in payout
    assert "our charge PSP9000000000001" in page.text("class-missing_from_file")
    assert "119000 JPY" in page.text("class-amount_mismatch")
    assert "-1000 JPY" in page.text("class-amount_mismatch")


def test_also_classes_are_named_beside_the_detail() -> None:
    finding = discrepancy(
        DiscrepancyClass.AMOUNT_MISMATCH, also=(DiscrepancyClass.STATUS_MISMATCH, DiscrepancyClass.FEE_OUT_OF_RANGE)
    )
    _, page = render([finding])

    assert "also: status mismatch, fee out of range" in page.text("class-amount_mismatch")


def test_every_class_has_its_own_heading_and_explanation() -> None:
    texts = [class_text(c) for c in DiscrepancyClass]

    assert len({label for label, _ in texts}) == len(DiscrepancyClass)
    assert all(label and about.endswith(".") for label, about in texts)


def test_a_negative_number_shown_per_class_is_refused() -> None:
    with pytest.raises(ValueError, match="shown_per_class"):
        render_html(summary(), [], shown_per_class=-1)


def test_the_page_is_one_document_with_print_styles() -> None:
    document, page = render([])

    assert document.startswith("<!DOCTYPE html>")
    assert document.count("<html") == 1
    assert "@media print" in page.style
    assert re.search(r"<title>Settlement report adyen 2026-04-06 to 2026-04-12 \(7 days\)</title>", document)
