"""The settlement report as one HTML page, for the finance person who reads it rather than the program that parses it.

Pure: render_html returns a whole, self-contained document as a str. Nothing is loaded from anywhere (no script,
stylesheet, font or image by URL: the page must read the same from an e-mail attachment, an archive or an offline
laptop years later), the chart is an inline SVG drawn here, and a Content-Security-Policy forbids loading or running
anything, so an escaping mistake still runs nothing. Every value that came from the data (file names, references,
details, currencies) is escaped; money is shown in major units with its currency's ISO 4217 exponent by
billing.domain.money, never through a float.

The discrepancy iterable may be a generator over millions of items: it is consumed once, and only the first
`shown_per_class` items of each class are kept (the page points to the CSV for the rest), so memory stays bounded.

The element ids (`summary`, `report-header`, `files`, `file-errors`, `line-errors`, `missing-files`, `totals`,
`payouts`, `fees`, `fees-by-type`, `fees-by-payment-method`, `chart`, `discrepancies`, `class-<class>`) and the
`data-*` attributes are a contract with the tests and with anyone linking into a report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape
from typing import Any, Final, assert_never

from billing.domain.money import Money
from billing.settlement.outcome import (
    CLASS_SEVERITY,
    DISCREPANCY_CLASSES,
    CurrencyTotals,
    Discrepancy,
    DiscrepancyClass,
    FeeTotal,
    FileRead,
    PayoutCheck,
    ReportSummary,
)

DEFAULT_SHOWN_PER_CLASS: Final = 200

# Nothing loads and nothing runs: the page needs neither, so any injected markup is inert even if escaping failed.
CONTENT_SECURITY_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

# Bar chart geometry, in SVG user units (the SVG scales to the page width).
_CHART_LABEL_WIDTH: Final = 210
_CHART_BAR_MAX: Final = 460
_CHART_COUNT_WIDTH: Final = 90
_CHART_ROW: Final = 26
_CHART_BAR: Final = 18
_CHART_PAD: Final = 8
# A class with one item beside one with a million still gets a visible bar; its count is written beside it anyway.
_CHART_BAR_MIN: Final = 2

_NONE: Final = '<span class="none">—</span>'

_STYLE: Final = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24; background: #fff;
       max-width: 84rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.5rem; margin: 0.5rem 0; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.5rem; border-bottom: 2px solid #d0d7de; padding-bottom: 0.2rem; }
h3 { font-size: 1rem; margin: 1.25rem 0 0.4rem; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; margin: 0.5rem 0; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
#summary { font-size: 1.05rem; font-weight: 600; padding: 0.6rem 0.9rem; border-radius: 4px; margin: 0.75rem 0; }
#summary.ok { background: #e6f4ea; border: 1px solid #7cc08e; }
#summary.attention { background: #fdecea; border: 1px solid #e08a80; }
.warning { background: #fff4ce; border: 1px solid #e0c060; padding: 0.4rem 0.75rem; }
nav ul { list-style: none; padding: 0; margin: 0.25rem 0; display: flex; flex-wrap: wrap; gap: 0.25rem 1rem; }
table { border-collapse: collapse; margin: 0.25rem 0 0.75rem; }
th, td { border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; vertical-align: top; text-align: left; }
th { background: #f3f5f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { overflow-wrap: anywhere; max-width: 28rem; }
tr.subtotal td { font-weight: 600; background: #fafbfc; }
.none { color: #8c959f; }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 3px; font-weight: 600; white-space: nowrap; }
.badge.ok { background: #e6f4ea; color: #14622e; }
.badge.bad { background: #fdecea; color: #a4000f; }
tr.unbalanced td { background: #fff6f5; }
.differs { color: #a4000f; font-weight: 600; }
.discrepancy-group h3 .count { font-weight: normal; color: #57606a; }
.discrepancy-group p.about { margin: 0.1rem 0 0.4rem; color: #57606a; }
p.more { font-style: italic; }
.also { color: #57606a; font-size: 0.9em; }
#chart svg { max-width: 100%; height: auto; }
#chart text { font: 13px system-ui, sans-serif; fill: #1b1f24; }
rect.bar.critical { fill: #b3261e; }
rect.bar.warning { fill: #c26a00; }
rect.bar.notice { fill: #5f6b7a; }
@media print {
  body { font-size: 10pt; max-width: none; padding: 0; }
  nav { display: none; }
  h2 { break-after: avoid; }
  table { width: 100%; }
  thead { display: table-header-group; }
  tr, .badge, #summary { break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  @page { margin: 12mm; }
}
"""


def class_text(discrepancy_class: DiscrepancyClass) -> tuple[str, str]:
    """The heading of a class and one sentence saying what it means, in a finance reader's words."""
    match discrepancy_class:
        case DiscrepancyClass.PAYOUT_MISMATCH:
            return "Payout mismatch", "A payout whose items do not add up to what reached the bank (or no items)."
        case DiscrepancyClass.MISSING_INTERNALLY:
            return "Missing internally", "The provider settled something we have no single charge for."
        case DiscrepancyClass.MISSING_FROM_FILE:
            return "Missing from file", "We completed a charge in the period, but no settlement file listed it."
        case DiscrepancyClass.REVERSAL_MISSING:
            return "Reversal missing", "A refund or chargeback with no recorded reversal of that amount left to match."
        case DiscrepancyClass.STATUS_MISMATCH:
            return "Status mismatch", "The provider and we disagree on whether the charge succeeded."
        case DiscrepancyClass.CURRENCY_MISMATCH:
            return "Currency mismatch", "The provider settled the charge in another currency than we charged."
        case DiscrepancyClass.AMOUNT_MISMATCH:
            return "Amount mismatch", "The provider settled another amount than we charged."
        case DiscrepancyClass.REVERSAL_AMOUNT_MISMATCH:
            return "Reversal amount mismatch", "A refund or chargeback whose amount matches none of the payment's."
        case DiscrepancyClass.DUPLICATE_IN_FILE:
            return "Duplicate in file", "The same item listed again: money counted twice."
        case DiscrepancyClass.AMBIGUOUS_REFERENCE:
            return "Ambiguous reference", "A reference that fits more than one of our charges."
        case DiscrepancyClass.FEE_OUT_OF_RANGE:
            return "Fee out of range", "Fees outside the band expected for the payment method."
        case DiscrepancyClass.UNMAPPED_TYPE:
            return "Unmapped type", "A row of a type we do not map: kept and reported, never dropped."
        case DiscrepancyClass.MATCHED:
            return "Matched", "Settled as we expected."
        case unreachable:
            assert_never(unreachable)


def _tier(discrepancy_class: DiscrepancyClass) -> str:
    """Bar colour: money missing (payouts, unknown or unlisted items, reversals) first, then disagreements."""
    rank = CLASS_SEVERITY.index(discrepancy_class)
    if rank < CLASS_SEVERITY.index(DiscrepancyClass.STATUS_MISMATCH):
        return "critical"
    if rank < CLASS_SEVERITY.index(DiscrepancyClass.DUPLICATE_IN_FILE):
        return "warning"
    return "notice"


@dataclass
class _Group:
    """One class's findings as the page needs them: how many, and the first few only."""

    discrepancy_class: DiscrepancyClass
    count: int = 0
    shown: list[Discrepancy] = field(default_factory=list)

    @property
    def more(self) -> int:
        return self.count - len(self.shown)


def _collect(discrepancies: Iterable[Discrepancy], shown_per_class: int) -> list[_Group]:
    """One pass over the findings, keeping at most shown_per_class of each class; groups worst class first."""
    groups = {c: _Group(c) for c in DISCREPANCY_CLASSES}
    for discrepancy in discrepancies:
        group = groups.get(discrepancy.discrepancy_class)
        if group is None:  # MATCHED is not a finding; nothing to show for it
            continue
        group.count += 1
        if len(group.shown) < shown_per_class:
            group.shown.append(discrepancy)
    return [groups[c] for c in DISCREPANCY_CLASSES]


def render_html(
    summary: ReportSummary,
    discrepancies: Iterable[Discrepancy],
    *,
    shown_per_class: int = DEFAULT_SHOWN_PER_CLASS,
) -> str:
    """The whole report as one self-contained HTML document: summary, files, totals, payouts, fees, chart, findings."""
    if shown_per_class < 0:
        raise ValueError("shown_per_class must not be negative")
    groups = _collect(discrepancies, shown_per_class)
    title = f"Settlement report {summary.provider} {_period_text(summary)}"
    body = "\n".join(
        (
            _header(summary),
            _summary_line(summary, groups),
            _count_warning(summary, groups),
            _nav(),
            _files(summary),
            _totals(summary.totals),
            _payouts(summary.payouts),
            _fees(summary),
            _chart(groups),
            _discrepancies(groups),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n"
        f"<style>{_STYLE}</style>\n"
        "</head>\n"
        "<body>\n"
        f"{body}\n"
        "</body>\n"
        "</html>\n"
    )


# --- pieces ---------------------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _opt(value: object | None) -> str:
    return _NONE if value is None or value == "" else _e(value)


def _code(value: object | None) -> str:
    return _NONE if value is None or value == "" else f"<code>{_e(value)}</code>"


def _count(n: int) -> str:
    return f"{n:,}"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{_count(n)} {word if n == 1 else (plural or word + 's')}"


def _money_text(amount: int, currency: str, *, signed: bool = False) -> str:
    """'1.234 KWD', '1000 JPY', '-12.50 EUR'; an amount in a code we do not know stays visibly in minor units."""
    try:
        text = Money(amount, currency).format()
    except (TypeError, ValueError):
        text = f"{amount} {currency} (minor units, unknown currency)"
    return f"+{text}" if signed and amount > 0 else text


def _money(amount: int | None, currency: str | None, *, signed: bool = False, css: str = "") -> str:
    if amount is None or currency is None:
        return _NONE
    classes = f"money {css}".strip()
    return (
        f'<span class="{classes}" data-minor="{_e(amount)}" data-currency="{_e(currency)}">'
        f"{_e(_money_text(amount, currency, signed=signed))}</span>"
    )


def _difference(difference: int, currency: str) -> str:
    """A difference reads 'none' when zero, else signed and flagged."""
    if difference == 0:
        return f'<span class="money" data-minor="0" data-currency="{_e(currency)}">none</span>'
    return _money(difference, currency, signed=True, css="differs")


def _period_text(summary: ReportSummary) -> str:
    """The period as days a person counts (end inclusive), where the data keeps the end exclusive."""
    start, end = summary.period_start, summary.period_end
    days = (end - start).days
    if days <= 0:
        return f"{start.isoformat()} to {end.isoformat()} (end exclusive)"
    last = end - timedelta(days=1)
    if days == 1:
        return f"{start.isoformat()} (1 day)"
    return f"{start.isoformat()} to {last.isoformat()} ({days} days)"


def _table(
    headers: Sequence[tuple[str, str]], rows: Iterable[str], *, table_id: str | None = None, empty: str = ""
) -> str:
    """A table of pre-rendered <tr> rows; headers are (text, css class); an empty one says `empty` instead."""
    body = "\n".join(rows)
    if not body:
        return f'<p class="empty">{_e(empty or "None.")}</p>'
    head = "".join(
        f'<th scope="col" class="{css}">{_e(text)}</th>' if css else f'<th scope="col">{_e(text)}</th>'
        for text, css in headers
    )
    attribute = f' id="{table_id}"' if table_id else ""
    return f"<table{attribute}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _header(summary: ReportSummary) -> str:
    supersedes = _code(summary.supersedes)
    notes = "".join(f"<li>{_e(note)}</li>" for note in summary.notes)
    return (
        '<header id="report-header">\n'
        f"<h1>Settlement report: {_e(summary.provider)}</h1>\n"
        '<dl class="facts">\n'
        f'<dt>Provider</dt><dd id="provider">{_e(summary.provider)}</dd>\n'
        f'<dt>Period</dt><dd id="period" data-start="{_e(summary.period_start.isoformat())}" '
        f'data-end-exclusive="{_e(summary.period_end.isoformat())}">{_e(_period_text(summary))}</dd>\n'
        f'<dt>Generated at</dt><dd id="generated-at">{_e(summary.generated_at.isoformat())}</dd>\n'
        f'<dt>Report id</dt><dd id="report-id"><code>{_e(summary.report_id)}</code></dd>\n'
        f'<dt>Supersedes</dt><dd id="supersedes">{supersedes}</dd>\n'
        "</dl>\n" + (f'<ul id="notes">{notes}</ul>\n' if notes else "") + "</header>"
    )


def _summary_line(summary: ReportSummary, groups: Sequence[_Group]) -> str:
    """The one sentence a reader needs first: do the payouts balance, how much is there to look at."""
    parts: list[str] = []
    open_batches = sum(1 for p in summary.payouts if p.balances is None)
    payouts = [p for p in summary.payouts if p.balances is not None]
    unbalanced = sum(1 for p in payouts if p.balances is False)
    if not payouts:
        parts.append("No payouts in the files read.")
    elif unbalanced == 0:
        parts.append("All payouts balance." if len(payouts) > 1 else "The payout balances.")
    else:
        verb = "does" if unbalanced == 1 else "do"
        parts.append(f"{_count(unbalanced)} of {_plural(len(payouts), 'payout')} {verb} not balance.")
    if open_batches:
        parts.append(f"{_plural(open_batches, 'batch', 'batches')} not paid out in these files.")
    total = sum(g.count for g in groups)
    non_empty = [g for g in groups if g.count]
    if total == 0:
        parts.append("No discrepancies.")
    else:
        worst = non_empty[0]
        parts.append(
            f"{_plural(total, 'discrepancy', 'discrepancies')} in {_plural(len(non_empty), 'class', 'classes')}; "
            f"the worst: {class_text(worst.discrepancy_class)[0].lower()} ({_count(worst.count)})."
        )
    if summary.file_errors:
        parts.append(f"{_plural(len(summary.file_errors), 'file')} could not be read.")
    if summary.missing_files:
        parts.append(f"{_plural(len(summary.missing_files), 'expected file')} missing.")
    if summary.line_error_count:
        parts.append(f"{_plural(summary.line_error_count, 'line')} could not be read.")
    clean = unbalanced == 0 and total == 0 and not summary.file_errors and not summary.missing_files
    clean = clean and not summary.line_error_count
    state = "ok" if clean else "attention"
    return (
        f'<p id="summary" class="{state}" data-payouts-balance="{str(unbalanced == 0).lower()}" '
        f'data-discrepancies="{total}">{_e(" ".join(parts))}</p>'
    )


def _count_warning(summary: ReportSummary, groups: Sequence[_Group]) -> str:
    """Says so when the list handed in does not hold what the summary counted: the page shows the list's numbers."""
    differing = [g for g in groups if summary.counts.get(g.discrepancy_class, 0) != g.count]
    if not differing:
        return ""
    described = "; ".join(
        f"{class_text(g.discrepancy_class)[0].lower()}: {_count(g.count)} listed, "
        f"{_count(summary.counts.get(g.discrepancy_class, 0))} counted"
        for g in differing
    )
    return f'<p id="count-warning" class="warning">The discrepancy list and the summary disagree ({_e(described)}).</p>'


def _nav() -> str:
    links = (
        ("files", "Files"),
        ("totals", "Totals"),
        ("payouts", "Payouts"),
        ("fees", "Fees"),
        ("chart", "Chart"),
        ("discrepancies", "Discrepancies"),
    )
    items = "".join(f'<li><a href="#{target}">{text}</a></li>' for target, text in links)
    return f'<nav aria-label="Sections"><ul>{items}</ul></nav>'


def _files(summary: ReportSummary) -> str:
    def file_row(read: FileRead) -> str:
        errors = f'<span class="differs">{_count(read.line_errors)}</span>' if read.line_errors else "0"
        return (
            f'<tr data-source="{_e(read.source)}"><td class="wrap"><code>{_e(read.source)}</code></td>'
            f'<td>{_e(read.format)}</td><td class="num">{_count(read.records)}</td>'
            f'<td class="num">{errors}</td><td class="wrap"><code>{_e(read.sha256)}</code></td></tr>'
        )

    files = _table(
        (("File", ""), ("Format", ""), ("Records", "num"), ("Line errors", "num"), ("SHA-256", "")),
        (file_row(read) for read in summary.files),
        table_id="files-read",
        empty="No file was read.",
    )
    file_errors = _table(
        (("File", ""), ("Why it could not be read", "")),
        (
            f'<tr><td class="wrap">{_code(error.get("source"))}</td>'
            f'<td class="wrap">{_opt(error.get("reason"))}</td></tr>'
            for error in summary.file_errors
        ),
        empty="None.",
    )
    missing = (
        "<ul>" + "".join(f"<li><code>{_e(name)}</code></li>" for name in summary.missing_files) + "</ul>"
        if summary.missing_files
        else '<p class="empty">None.</p>'
    )
    line_errors = _table(
        (("File", ""), ("Line", "num"), ("Column", ""), ("Reason", ""), ("Value", "")),
        (_line_error_row(error) for error in summary.line_errors),
        empty="None.",
    )
    not_shown = summary.line_error_count - len(summary.line_errors)
    more = (
        f'<p class="more" data-more="{not_shown}">{_count(not_shown)} more in the JSON report.</p>'
        if not_shown > 0
        else ""
    )
    return (
        '<section id="files">\n'
        "<h2>Files</h2>\n"
        f"{files}\n"
        f'<section id="file-errors"><h3>File errors ({_count(len(summary.file_errors))})</h3>\n'
        f"{file_errors}</section>\n"
        f'<section id="missing-files"><h3>Missing files ({_count(len(summary.missing_files))})</h3>\n'
        f"{missing}</section>\n"
        f'<section id="line-errors"><h3>Line errors ({_count(summary.line_error_count)})</h3>\n{line_errors}\n{more}'
        "</section>\n"
        "</section>"
    )


def _line_error_row(error: Mapping[str, Any]) -> str:
    return (
        f'<tr><td class="wrap">{_code(error.get("source"))}</td>'
        f'<td class="num">{_opt(error.get("line"))}</td><td>{_opt(error.get("field"))}</td>'
        f'<td class="wrap">{_opt(error.get("reason"))}</td><td class="wrap">{_code(error.get("shown"))}</td></tr>'
    )


def _totals(totals: Sequence[CurrencyTotals]) -> str:
    def row(t: CurrencyTotals) -> str:
        c = t.currency
        return (
            f'<tr data-currency="{_e(c)}"><th scope="row">{_e(c)}</th>'
            f'<td class="num">{_count(t.items)}</td>'
            f'<td class="num settled">{_money(t.settled, c)}</td>'
            f'<td class="num refunded">{_money(t.refunded, c)}</td>'
            f'<td class="num chargebacks">{_money(t.chargebacks, c)}</td>'
            f'<td class="num fees">{_money(t.fees, c)}</td>'
            f'<td class="num net">{_money(t.net, c)}</td>'
            f'<td class="num expected">{_money(t.expected_settled, c)}</td>'
            f'<td class="num difference">{_difference(t.settled - t.expected_settled, c)}</td></tr>'
        )

    table = _table(
        (
            ("Currency", ""),
            ("Items", "num"),
            ("Settled", "num"),
            ("Refunded", "num"),
            ("Chargebacks", "num"),
            ("Fees", "num"),
            ("Net", "num"),
            ("Expected settled", "num"),
            ("Settled - expected", "num"),
        ),
        (row(t) for t in totals),
        table_id="totals-table",
        empty="No items in the files read.",
    )
    return (
        '<section id="totals">\n<h2>Totals per currency</h2>\n'
        '<p class="about">What the files moved, by kind, against what our charges in the period expected.</p>\n'
        f"{table}\n</section>"
    )


def _payouts(payouts: Sequence[PayoutCheck]) -> str:
    # Unbalanced first: a payout that does not add up is money missing from the bank. sorted() keeps the rest's order.
    # Then the batches not paid out in these files, then those that balance.
    ordered = sorted(payouts, key=lambda p: {False: 0, None: 1, True: 2}[p.balances])

    def row(p: PayoutCheck) -> str:
        c = p.currency
        if p.balances is True:
            mark = '<span class="badge ok">✓ balances</span>'
        elif p.balances is None:
            mark = '<span class="badge">not paid out in these files</span>'
        else:
            mark = '<span class="badge bad">✗ does not balance</span>'
        difference = _NONE if p.difference is None else _difference(p.difference, c)
        where = (
            _NONE
            if p.source is None
            else f"<code>{_e(p.source)}</code>" + ("" if p.line_number is None else f":{_e(p.line_number)}")
        )
        css = ' class="unbalanced"' if p.balances is False else ""
        balances = "none" if p.balances is None else str(p.balances).lower()
        return (
            f'<tr{css} data-batch="{_e(p.batch)}" data-balances="{balances}">'
            f'<th scope="row" class="wrap"><code>{_e(p.batch)}</code></th><td>{_e(c)}</td>'
            f'<td class="num">{_count(p.items)}</td>'
            f'<td class="num computed">{_money(p.computed_net, c)}</td>'
            f'<td class="num reported">{_money(p.reported, c)}</td>'
            f'<td class="num difference">{difference}</td>'
            f'<td class="mark">{mark}</td><td class="wrap">{where}</td></tr>'
        )

    table = _table(
        (
            ("Batch", ""),
            ("Currency", ""),
            ("Items", "num"),
            ("Computed net", "num"),
            ("Reported", "num"),
            ("Reported - computed", "num"),
            ("", ""),
            ("Payout line", ""),
        ),
        (row(p) for p in ordered),
        table_id="payouts-table",
        empty="No payouts in the files read.",
    )
    return (
        '<section id="payouts">\n<h2>Payouts</h2>\n'
        '<p class="about">Each batch: the sum of its items\' net amounts against the payout line the provider wrote.'
        " Unbalanced payouts first.</p>\n"
        f"{table}\n</section>"
    )


def _fees(summary: ReportSummary) -> str:
    by_type = _fee_table(summary.fees_by_type, "Type", "fees-by-type")
    by_method = _fee_table(summary.fees_by_payment_method, "Payment method", "fees-by-payment-method")
    return (
        '<section id="fees">\n<h2>Fees</h2>\n'
        f"<h3>By type</h3>\n{by_type}\n"
        f"<h3>By payment method</h3>\n{by_method}\n"
        "</section>"
    )


def _fee_table(fees: Sequence[FeeTotal], key_name: str, table_id: str) -> str:
    """Fees grouped per currency (they cannot be added across currencies), each currency with its subtotal."""
    by_currency: dict[str, list[FeeTotal]] = {}
    for fee in fees:
        by_currency.setdefault(fee.currency, []).append(fee)
    rows: list[str] = []
    for currency in sorted(by_currency):
        entries = sorted(by_currency[currency], key=lambda f: f.key)
        for fee in entries:
            rows.append(
                f'<tr data-currency="{_e(currency)}" data-key="{_e(fee.key)}"><td>{_e(currency)}</td>'
                f'<td class="wrap">{_e(fee.key)}</td><td class="num">{_money(fee.amount, currency)}</td></tr>'
            )
        subtotal = sum(f.amount for f in entries)
        rows.append(
            f'<tr class="subtotal" data-currency="{_e(currency)}"><td>{_e(currency)}</td><td>All</td>'
            f'<td class="num">{_money(subtotal, currency)}</td></tr>'
        )
    return _table(
        (("Currency", ""), (key_name, ""), ("Fees", "num")), rows, table_id=table_id, empty="No fees reported."
    )


def _chart(groups: Sequence[_Group]) -> str:
    """A horizontal bar per class with findings, worst first; each bar carries a <title> and its count as text."""
    non_empty = [g for g in groups if g.count]
    if not non_empty:
        return (
            '<section id="chart">\n<h2>Discrepancies per class</h2>\n<p class="empty">No discrepancies.</p>\n</section>'
        )
    largest = max(g.count for g in non_empty)
    width = _CHART_LABEL_WIDTH + _CHART_BAR_MAX + _CHART_COUNT_WIDTH
    height = 2 * _CHART_PAD + _CHART_ROW * len(non_empty)
    text_offset = _CHART_BAR // 2 + 5  # baseline that centres 13px text on the bar
    rows: list[str] = []
    for index, group in enumerate(non_empty):
        y = _CHART_PAD + index * _CHART_ROW
        bar = max(_CHART_BAR_MIN, group.count * _CHART_BAR_MAX // largest)
        label = class_text(group.discrepancy_class)[0]
        value = group.discrepancy_class.value
        tooltip = f"{label}: {_plural(group.count, 'discrepancy', 'discrepancies')}"
        rows.append(
            f'<g class="bar-row" data-class="{_e(value)}">'
            f'<text x="{_CHART_LABEL_WIDTH - 8}" y="{y + text_offset}" text-anchor="end">{_e(label)}</text>'
            f'<rect class="bar {_tier(group.discrepancy_class)}" data-class="{_e(value)}" data-count="{group.count}" '
            f'x="{_CHART_LABEL_WIDTH}" y="{y}" width="{bar}" height="{_CHART_BAR}"><title>{_e(tooltip)}</title></rect>'
            f'<text class="count" x="{_CHART_LABEL_WIDTH + bar + 6}" y="{y + text_offset}">{_count(group.count)}</text>'
            "</g>"
        )
    svg = (
        f'<svg role="img" aria-labelledby="chart-title" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">\n<title id="chart-title">Discrepancies per class, worst class first</title>\n'
        + "\n".join(rows)
        + "\n</svg>"
    )
    return f'<section id="chart">\n<h2>Discrepancies per class</h2>\n{svg}\n</section>'


def _discrepancies(groups: Sequence[_Group]) -> str:
    non_empty = [g for g in groups if g.count]
    if not non_empty:
        return '<section id="discrepancies">\n<h2>Discrepancies</h2>\n<p class="empty">None.</p>\n</section>'
    return (
        '<section id="discrepancies">\n<h2>Discrepancies</h2>\n'
        '<p class="about">Worst class first. "Expected" is our side (the charge, reversal, fee band or computed'
        ' payout), "reported" the provider\'s.</p>\n' + "\n".join(_group(g) for g in non_empty) + "\n</section>"
    )


def _group(group: _Group) -> str:
    label, about = class_text(group.discrepancy_class)
    value = group.discrepancy_class.value
    table = _table(
        (
            ("Where", ""),
            ("Provider reference", ""),
            ("Kind", ""),
            ("Batch", ""),
            ("Payment method", ""),
            ("Tenant / execution", ""),
            ("Expected", "num"),
            ("Reported", "num"),
            ("Difference", "num"),
            ("Detail", ""),
        ),
        (_discrepancy_row(d) for d in group.shown),
        empty="Not shown here: see the CSV.",
    )
    more = (
        f'<p class="more" data-more="{group.more}">{_count(group.more)} more in the CSV.</p>' if group.more > 0 else ""
    )
    return (
        f'<section id="class-{_e(value)}" class="discrepancy-group" data-class="{_e(value)}" '
        f'data-count="{group.count}">\n'
        f'<h3>{_e(label)} <span class="count">({_count(group.count)})</span></h3>\n'
        f'<p class="about">{_e(about)}</p>\n{table}\n{more}\n</section>'
    )


def _discrepancy_row(d: Discrepancy) -> str:
    if d.source is not None:
        where = f"<code>{_e(d.source)}</code>" + ("" if d.line_number is None else f":{_e(d.line_number)}")
    else:
        where = "our charge"
    ours = (
        f'<span class="tenant">{_code(d.tenant_id)}</span><br><span class="execution">{_code(d.execution_id)}</span>'
        if d.tenant_id is not None or d.execution_id is not None
        else _NONE
    )
    difference = _NONE
    if (
        d.expected_amount is not None
        and d.reported_amount is not None
        and d.expected_currency is not None
        and d.expected_currency == d.reported_currency
    ):
        difference = _difference(d.reported_amount - d.expected_amount, d.expected_currency)
    also = (
        '<br><span class="also">also: ' + _e(", ".join(class_text(c)[0].lower() for c in d.also)) + "</span>"
        if d.also
        else ""
    )
    return (
        f'<tr data-id="{_e(d.id)}"><td class="wrap where">{where}</td>'
        f'<td class="wrap reference">{_code(d.provider_reference)}</td>'
        f'<td class="kind">{_opt(d.record_kind)}</td>'
        f'<td class="wrap batch">{_code(d.batch)}</td>'
        f'<td class="payment-method">{_opt(d.payment_method)}</td>'
        f'<td class="wrap ours">{ours}</td>'
        f'<td class="num expected">{_money(d.expected_amount, d.expected_currency)}</td>'
        f'<td class="num reported">{_money(d.reported_amount, d.reported_currency)}</td>'
        f'<td class="num difference">{difference}</td>'
        f'<td class="wrap detail">{_e(d.detail)}{also}</td></tr>'
    )
