"""The `browser` fixture: one headless chromium per test session (per xdist worker), quit at the end.

Tests share the session, so each starts by navigating (browser.get) and asserts only on the page it reached.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome

from tests.browser.chromium import missing_binaries, open_chromium


@pytest.fixture(scope="session")
def browser() -> Iterator[Chrome]:
    """A headless chromium driven by Selenium."""
    missing = missing_binaries()
    if missing:
        # Fail, not skip: CI installs the browser (.ci/run), so a missing one is a broken machine, not an option.
        pytest.fail(
            f"{', '.join(missing)} not found: install Debian's chromium and chromium-driver "
            "(apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    driver = open_chromium()
    yield driver
    driver.quit()
