"""The settlement report's HTML page (billing.settlement.html_report) opened from disk in a real chromium.

The page is written to a file and opened by file:// URL, as a finance person opens an attachment: no server, and
nothing for the page to load. The tests read what chromium laid out (visibility, sizes, styles), not the markup.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from billing.settlement.html_report import render_html
from billing.settlement.outcome import CLASS_SEVERITY, Discrepancy, DiscrepancyClass
from tests.browser.chromium import wait_for
from tests.unit.settlement.html_report_factories import (
    counts_of,
    discrepancy,
    one_shot,
    realistic_findings,
    realistic_summary,
)

_INJECTED = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _findings() -> list[Discrepancy]:
    return [*realistic_findings(), discrepancy(DiscrepancyClass.STATUS_MISMATCH, 61, detail=_INJECTED)]


def _classes_found() -> list[str]:
    """The classes the report's findings fall in, worst first: the order groups and bars must follow."""
    found = counts_of(_findings())
    return [c.value for c in CLASS_SEVERITY if c in found]


@pytest.fixture
def report_url(tmp_path: Path) -> str:
    """A week of Adyen files in EUR, JPY and KWD: one unbalanced payout, one without a payout line, seven classes."""
    findings = _findings()
    path = tmp_path / "settlement_report.html"
    path.write_text(render_html(realistic_summary(findings), one_shot(findings), shown_per_class=2), encoding="utf-8")
    return path.as_uri()


def _png_size(png: bytes) -> tuple[int, int]:
    # The IHDR chunk comes first: width and height are its first two big-endian 32-bit fields.
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_report_opens_from_disk_and_screenshots_whole(browser: Chrome, report_url: str, tmp_path: Path) -> None:
    browser.get(report_url)
    wait_for(browser, "#summary")

    # The whole page, not only the viewport: a reviewer looking at the PNG sees every section.
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    screenshot = tmp_path / "settlement_report.png"
    screenshot.write_bytes(base64.b64decode(shot["data"]))

    png = screenshot.read_bytes()
    assert png.startswith(_PNG_SIGNATURE)
    assert len(png) > 20_000
    width, height = _png_size(png)
    viewport_height = browser.execute_script("return window.innerHeight")
    page_height = browser.execute_script("return document.documentElement.scrollHeight")
    assert width > 0
    assert height >= min(page_height, 4 * viewport_height) > viewport_height


def test_every_section_is_laid_out(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)

    summary = wait_for(browser, "#summary")
    assert summary.text.startswith(
        "1 of 2 payouts does not balance. 1 batch not paid out in these files. 10 discrepancies"
    )
    for section in ("report-header", "files", "totals", "payouts", "fees", "chart", "discrepancies"):
        element = browser.find_element(By.ID, section)
        assert element.is_displayed(), section
        assert element.size["height"] > 0, section
    assert browser.find_element(By.ID, "period").text == "2026-04-06 to 2026-04-12 (7 days)"
    settled = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#totals-table td.settled")]
    assert settled == ["82450.50 EUR", "3450000 JPY", "1250.125 KWD"]


def test_unbalanced_payouts_come_first_and_are_marked(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)
    wait_for(browser, "#payouts-table")

    rows = browser.find_elements(By.CSS_SELECTOR, "#payouts-table tbody tr")
    assert [(r.get_attribute("data-batch"), r.get_attribute("data-balances")) for r in rows] == [
        ("119", "false"),
        ("120", "none"),
        ("118", "true"),
    ]
    unbalanced = rows[0].find_element(By.CSS_SELECTOR, ".badge")
    assert unbalanced.text == "✗ does not balance"
    assert rows[1].find_element(By.CSS_SELECTOR, ".badge").text == "not paid out in these files"
    assert rows[2].find_element(By.CSS_SELECTOR, ".badge").text == "✓ balances"
    # The inline stylesheet applies (the page's policy allows inline styles only): the mark is red, not just text.
    assert unbalanced.value_of_css_property("color") == "rgba(164, 0, 15, 1)"
    assert rows[0].find_element(By.CSS_SELECTOR, "td.difference").text == "-0.567 KWD"


def test_discrepancy_groups_are_worst_first_and_cut_with_a_pointer_to_the_csv(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)
    wait_for(browser, "#discrepancies")

    groups = browser.find_elements(By.CSS_SELECTOR, "#discrepancies section.discrepancy-group")
    order = [g.get_attribute("data-class") for g in groups]
    assert order == _classes_found()
    assert order[0] == "payout_mismatch"
    assert order[-1] == "unmapped_type"
    missing = browser.find_element(By.ID, "class-missing_internally")
    assert len(missing.find_elements(By.CSS_SELECTOR, "tbody tr")) == 2
    assert missing.find_element(By.CSS_SELECTOR, "p.more").text == "1 more in the CSV."


def test_chart_draws_one_visible_bar_per_class_with_findings(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)
    wait_for(browser, "#chart svg")

    bars = browser.find_elements(By.CSS_SELECTOR, "#chart svg rect.bar")
    assert [b.get_attribute("data-class") for b in bars] == _classes_found()
    assert all(b.size["width"] > 0 and b.size["height"] > 0 for b in bars)
    widest = max(bars, key=lambda b: b.size["width"])
    assert widest.get_attribute("data-class") == "missing_internally"
    titles = [b.find_element(By.TAG_NAME, "title").get_attribute("textContent") for b in bars]
    assert titles[0] == "Payout mismatch: 1 discrepancy"
    labels = browser.find_elements(By.CSS_SELECTOR, "#chart svg g.bar-row text:not(.count)")
    assert [label.text for label in labels][:2] == ["Payout mismatch", "Missing internally"]


def test_markup_in_a_detail_is_shown_as_text_and_runs_nothing(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)
    wait_for(browser, "#class-status_mismatch")

    detail = browser.find_element(By.CSS_SELECTOR, "#class-status_mismatch td.detail")
    assert detail.text == _INJECTED
    assert detail.find_elements(By.CSS_SELECTOR, "script, img") == []
    assert browser.title.startswith("Settlement report adyen")
    assert browser.find_elements(By.TAG_NAME, "script") == []


def test_printing_hides_the_navigation_and_keeps_the_report(browser: Chrome, report_url: str) -> None:
    browser.get(report_url)
    wait_for(browser, "nav")

    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not browser.find_element(By.TAG_NAME, "nav").is_displayed()
        assert browser.find_element(By.ID, "discrepancies").is_displayed()
        pdf = base64.b64decode(browser.execute_cdp_cmd("Page.printToPDF", {})["data"])
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert pdf.startswith(b"%PDF")
