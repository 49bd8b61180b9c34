"""Debian's chromium driven through its chromedriver, headless, for tests that need a real browser.

The binaries are the distribution's (`apt-get install chromium chromium-driver`; .ci/run installs them): Selenium
is handed both paths, so Selenium Manager never runs and nothing is downloaded.

    def test_something(browser: WebDriver) -> None:
        browser.get(url)
        wait_for(browser, "#result")
"""

from __future__ import annotations

import os
from typing import Final

from selenium.webdriver import Chrome, ChromeOptions, ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
# Generous against a loaded CI machine running the suite in parallel; a page that hangs still fails in bounded time.
PAGE_LOAD_TIMEOUT_SECONDS: Final = 30


def missing_binaries() -> list[str]:
    """The browser binaries this machine lacks."""
    return [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]


def open_chromium() -> Chrome:
    """A new headless chromium session; the caller quits it."""
    options = ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where chromium refuses its sandbox; --disable-dev-shm-usage: containers often
    # have a tiny /dev/shm, which crashes renderers.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_SECONDS)
    return driver


def wait_for(driver: WebDriver, css_selector: str, timeout: float = 10) -> WebElement:
    """The first element matching css_selector once it is visible; TimeoutException after timeout seconds."""
    return WebDriverWait(driver, timeout).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css_selector)),
        message=f"no visible {css_selector!r} on {driver.current_url} after {timeout}s",
    )
