from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser

import pytest

from billing.authentication.pages import (
    AUTO_SUBMIT_HANDLER,
    auto_post_page,
    challenge_page,
    content_security_policy,
    result_page,
)
from billing.domain.money import Money

ACS = "https://acs.sandbox.test"
CODE_URL = f"{ACS}/challenge/abc/code"
CANCEL_URL = f"{ACS}/challenge/abc/cancel"
NOTIFICATION_URL = "https://merchant.test/3ds/notify"


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text found inside each element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open_ids: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in ("input", "meta", "br"):
            self._open_ids.append(attributes.get("id"))
            if attributes.get("id"):
                self.text_by_id[str(attributes["id"])] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open_ids:
            self._open_ids.pop()

    def handle_data(self, data: str) -> None:
        for element_id in self._open_ids:
            if element_id:
                self.text_by_id[element_id] += data

    def by_id(self, element_id: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.tags if attrs.get("id") == element_id)

    def policy(self) -> str:
        meta = next(a for t, a in self.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy")
        return str(meta["content"])


def _parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def _challenge(**overrides: object) -> str:
    arguments: dict[str, object] = {
        "merchant_name": "Acme Streaming",
        "amount": Money(4900, "EUR"),
        "attempts_left": 3,
        "code_action_url": CODE_URL,
        "cancel_action_url": CANCEL_URL,
    }
    arguments.update(overrides)
    return challenge_page(**arguments)  # type: ignore[arg-type]


def test_challenge_page_has_every_element_the_browser_tests_use() -> None:
    elements = _parse(_challenge(error="Wrong code."))

    code = elements.by_id("code")
    assert (code["name"], code["inputmode"], code["autocomplete"], code["maxlength"]) == (
        "code",
        "numeric",
        "one-time-code",
        "8",
    )
    assert elements.by_id("submit")["type"] == "submit"
    assert elements.by_id("cancel")["type"] == "submit"
    assert elements.text_by_id["attempts-left"] == "3"
    assert elements.by_id("error")["role"] == "alert"
    assert elements.text_by_id["error"] == "Wrong code."


def test_challenge_page_posts_code_and_cancel_to_separate_urls() -> None:
    forms = [attrs for tag, attrs in _parse(_challenge()).tags if tag == "form"]
    assert [(form["method"], form["action"]) for form in forms] == [("post", CODE_URL), ("post", CANCEL_URL)]


def test_challenge_page_without_error_has_no_alert() -> None:
    assert "error" not in _parse(_challenge()).text_by_id


def test_challenge_page_says_it_is_the_test_acs_and_gives_the_test_code() -> None:
    page = _challenge()
    assert "sandbox's test ACS" in page
    assert "123456" in page


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (Money(4900, "EUR"), "49.00 EUR"),
        (Money(5, "USD"), "0.05 USD"),
        (Money(4500, "JPY"), "4500 JPY"),
        (Money(1234, "KWD"), "1.234 KWD"),
        (Money(10**15, "EUR"), "10000000000000.00 EUR"),
    ],
)
def test_challenge_page_formats_amount_by_currency_exponent(amount: Money, shown: str) -> None:
    assert _parse(_challenge(amount=amount)).text_by_id["amount"] == shown


@pytest.mark.parametrize(("left", "text"), [(1, "attempt left"), (2, "attempts left"), (0, "attempts left")])
def test_challenge_page_counts_attempts_left(left: int, text: str) -> None:
    page = _challenge(attempts_left=left)
    assert _parse(page).text_by_id["attempts-left"] == str(left)
    assert f"</span> {text}." in page


def test_negative_attempts_left_is_refused() -> None:
    with pytest.raises(ValueError, match="attempts_left"):
        _challenge(attempts_left=-1)


def test_script_in_merchant_name_and_error_is_shown_as_text() -> None:
    injected = '<script>document.title="pwned"</script>'
    page = _challenge(merchant_name=injected, error=injected)
    elements = _parse(page)

    assert "<script" not in page
    assert elements.text_by_id["merchant"] == injected
    assert elements.text_by_id["error"] == injected


def test_quote_in_action_url_cannot_break_out_of_the_attribute() -> None:
    url = f'{CODE_URL}?x="><script>alert(1)</script>'
    page = _challenge(code_action_url=url)
    assert "<script" not in page
    assert next(a for t, a in _parse(page).tags if t == "form")["action"] == url


def test_challenge_page_allows_no_script_and_posts_only_to_the_acs() -> None:
    policy = _parse(_challenge()).policy()
    assert (
        policy == "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action https://acs.sandbox.test"
    )
    assert "script-src" not in policy


def test_pages_send_no_referrer() -> None:
    for page in (
        _challenge(),
        auto_post_page(title="t", action_url=ACS, fields={}),
        result_page(title="t", message="m", return_url=None),
    ):
        assert any(t == "meta" and a == {"name": "referrer", "content": "no-referrer"} for t, a in _parse(page).tags)


def test_form_action_lists_each_origin_once() -> None:
    policy = content_security_policy(form_actions=[CODE_URL, CANCEL_URL, "http://127.0.0.1:8080/x", "/local"])
    assert policy.endswith("form-action 'self' http://127.0.0.1:8080 https://acs.sandbox.test")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "relative/path", "//evil.test/x", ""])
def test_action_that_is_not_http_or_an_absolute_path_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="http"):
        _challenge(cancel_action_url=url)
    with pytest.raises(ValueError, match="http"):
        auto_post_page(title="t", action_url=url, fields={})
    with pytest.raises(ValueError, match="http"):
        result_page(title="t", message="m", return_url=url)


def test_auto_post_page_carries_every_field_escaped() -> None:
    fields = {"creq": "eyJtZXNzYWdlVHlwZSI6IkNSZXEifQ", "threeDSSessionData": 'a"b<c>&d'}
    page = auto_post_page(title="Redirecting to your bank", action_url=f"{ACS}/creq", fields=fields)
    elements = _parse(page)

    form = next(a for t, a in elements.tags if t == "form")
    assert (form["method"], form["action"]) == ("post", f"{ACS}/creq")
    hidden = {a["name"]: a["value"] for t, a in elements.tags if t == "input" and a.get("type") == "hidden"}
    assert hidden == fields
    assert 'a"b<c>' not in page
    assert elements.by_id("continue")["type"] == "submit"


def test_auto_post_page_submits_on_load_and_allows_only_that_handler() -> None:
    elements = _parse(auto_post_page(title="t", action_url=NOTIFICATION_URL, fields={"cres": "x"}))
    body = next(a for t, a in elements.tags if t == "body")
    assert body["onload"] == AUTO_SUBMIT_HANDLER

    digest = base64.b64encode(hashlib.sha256(AUTO_SUBMIT_HANDLER.encode()).digest()).decode()
    policy = elements.policy()
    assert f"script-src 'unsafe-hashes' 'sha256-{digest}'" in policy
    assert "form-action https://merchant.test;" in policy
    assert "'unsafe-inline'" not in re.sub(r"style-src [^;]*", "", policy)


def test_result_page_shows_message_and_return_link() -> None:
    elements = _parse(
        result_page(title="Done", message="Payment <confirmed>", return_url="https://merchant.test/r?a=1&b=2")
    )
    assert elements.text_by_id["result"] == "Payment <confirmed>"
    assert elements.by_id("return")["href"] == "https://merchant.test/r?a=1&b=2"


def test_result_page_without_return_url_has_no_link_and_no_form_target() -> None:
    page = result_page(title="Done", message="m", return_url=None)
    assert 'id="return"' not in page
    assert _parse(page).policy().endswith("form-action 'none'")
