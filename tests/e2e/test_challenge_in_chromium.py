"""The sandbox 3-D Secure challenge as a customer meets it: a real headless chromium against the running local stack.

The browser follows the execution's next_action: the engine's page posts the CReq to the sandbox ACS, the ACS's
page shows the merchant, the amount and a code field, and the final CRes brings it back to the engine's result page.
Nothing here calls the pages over plain HTTP: every step is a click or a form the browser itself submits.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from tests.browser.chromium import wait_for
from tests.browser.conftest import browser  # noqa: F401 - the session's chromium, a fixture
from tests.e2e.conftest import LocalApi
from tests.factories import CARD_REQUEST

pytestmark = pytest.mark.e2e
EXECUTIONS = "/api/v1/billing/executions"
CHALLENGE_CARD = {**CARD_REQUEST, "amount": 4900, "payment_instrument_id": "tok_3ds_challenge"}


def _challenge(local_stack: LocalApi, token: str, key: str) -> dict[str, Any]:
    created = local_stack.request(
        "POST", EXECUTIONS, json=CHALLENGE_CARD, headers={"Idempotency-Key": key}, token=token
    )
    assert created.status == 201, created.text
    execution: dict[str, Any] = created.json()
    assert (execution["status"], execution["next_action"]["type"]) == ("pending", "redirect_to_url")
    return execution


def _shown(local_stack: LocalApi, token: str, execution_id: str) -> dict[str, Any]:
    found = local_stack.request("GET", f"{EXECUTIONS}/{execution_id}", token=token)
    assert found.status == 200, found.text
    body: dict[str, Any] = found.json()
    return body


def _enter(browser: Chrome, code: str) -> None:  # noqa: F811 - the fixture's name
    field = wait_for(browser, "#code")
    field.clear()
    field.send_keys(code)
    browser.find_element(By.CSS_SELECTOR, "#submit").click()


def test_the_right_code_on_the_challenge_page_completes_the_payment_with_liability_shift(
    local_stack: LocalApi,
    browser: Chrome,  # noqa: F811 - the fixture
) -> None:
    token = local_stack.token(uuid4())
    execution = _challenge(local_stack, token, "browser-challenge-ok")
    browser.get(execution["next_action"]["url"])
    # The engine's page posted the CReq on its own: the ACS's challenge is on screen.
    assert "49.00 EUR" in wait_for(browser, "#amount").text
    assert wait_for(browser, "#attempts-left").text == "3"
    _enter(browser, "111111")
    assert "not right" in wait_for(browser, "#error").text
    assert wait_for(browser, "#attempts-left").text == "2"
    assert _shown(local_stack, token, execution["id"])["status"] == "pending"
    _enter(browser, "123456")
    assert wait_for(browser, "#result").text == "Payment completed."
    shown = _shown(local_stack, token, execution["id"])
    assert shown["status"] == "completed"
    auth = shown["authentication"]
    assert (auth["state"], auth["trans_status"], auth["eci"], auth["liability_shift"]) == ("succeeded", "Y", "05", True)
    assert browser.find_element(By.CSS_SELECTOR, "#return").get_attribute("href")


def test_three_wrong_codes_fail_the_payment_and_nothing_reaches_the_provider(
    local_stack: LocalApi,
    browser: Chrome,  # noqa: F811 - the fixture
) -> None:
    token = local_stack.token(uuid4())
    execution = _challenge(local_stack, token, "browser-challenge-wrong")
    browser.get(execution["next_action"]["url"])
    for left in ("2", "1"):
        _enter(browser, "000000")
        assert wait_for(browser, "#attempts-left").text == left
    _enter(browser, "000000")
    assert wait_for(browser, "#result").text == "Payment failed (authentication_failed)."
    shown = _shown(local_stack, token, execution["id"])
    assert (shown["status"], shown["last_error_code"], shown["provider_reference"]) == (
        "failed",
        "authentication_failed",
        None,
    )


def test_cancel_on_the_challenge_page_abandons_the_payment(
    local_stack: LocalApi,
    browser: Chrome,  # noqa: F811 - the fixture
) -> None:
    token = local_stack.token(uuid4())
    execution = _challenge(local_stack, token, "browser-challenge-cancel")
    browser.get(execution["next_action"]["url"])
    wait_for(browser, "#cancel").click()
    assert wait_for(browser, "#result").text.startswith("Payment failed")
    shown = _shown(local_stack, token, execution["id"])
    assert (shown["status"], shown["authentication"]["trans_status_reason"]) == ("failed", "26")
    # The page of an ended challenge says so; reloading the start page shows where the payment stands.
    browser.get(execution["next_action"]["url"])
    assert wait_for(browser, "#result").text.startswith("Payment failed")
