"""The sandbox's 3-D Secure pages (billing.authentication.pages) in a real chromium, served by a stdlib server.

Each test publishes its page on the server, drives it like a customer, and reads what the server received: a form
post is recorded before its response is written, so once the browser shows the answer page the post is there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from billing.authentication.pages import auto_post_page, challenge_page, result_page
from billing.domain.money import Money
from tests.browser.chromium import wait_for


@dataclass(frozen=True, slots=True)
class Post:
    path: str
    form: dict[str, list[str]]
    referer: str | None


@dataclass
class PageServer:
    """GET serves a published page; POST to any path is recorded and answered with a result page naming the path."""

    base_url: str = ""
    pages: dict[str, str] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, path: str, page: str) -> str:
        with self.lock:
            self.pages[path] = page
        return self.base_url + path

    def posted_to(self, path: str) -> list[Post]:
        with self.lock:
            return [post for post in self.posts if post.path == path]


def _handler_for(server: PageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with server.lock:
                page = server.pages.get(self.path)
            if page is None:
                self.send_error(404)
                return
            self._send(page)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            with server.lock:
                server.posts.append(
                    Post(self.path, parse_qs(body, keep_blank_values=True), self.headers.get("Referer"))
                )
            self._send(result_page(title="Received", message=f"posted to {self.path}", return_url=None))

        def _send(self, page: str) -> None:
            encoded = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep the test output to failures

    return Handler


@pytest.fixture(scope="module")
def pages() -> Iterator[PageServer]:
    state = PageServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _publish_challenge(pages: PageServer, path: str, **overrides: object) -> str:
    arguments: dict[str, object] = {
        "merchant_name": "Acme Streaming",
        "amount": Money(4900, "EUR"),
        "attempts_left": 3,
        "code_action_url": f"{pages.base_url}{path}/code",
        "cancel_action_url": f"{pages.base_url}{path}/cancel",
    }
    arguments.update(overrides)
    return pages.publish(path, challenge_page(**arguments))  # type: ignore[arg-type]


def test_challenge_page_shows_merchant_amount_and_attempts(browser: Chrome, pages: PageServer) -> None:
    browser.get(_publish_challenge(pages, "/render", amount=Money(1234, "KWD"), attempts_left=2, error="Wrong code."))

    assert wait_for(browser, "#merchant").text == "Acme Streaming"
    assert browser.find_element(By.ID, "amount").text == "1.234 KWD"
    assert browser.find_element(By.ID, "attempts-left").text == "2"
    error = browser.find_element(By.ID, "error")
    assert (error.text, error.get_attribute("role")) == ("Wrong code.", "alert")
    assert "123456" in browser.find_element(By.TAG_NAME, "body").text


def test_typed_code_is_posted_to_the_code_url(browser: Chrome, pages: PageServer) -> None:
    browser.get(_publish_challenge(pages, "/submit"))

    wait_for(browser, "#code").send_keys("123456")
    browser.find_element(By.ID, "submit").click()

    assert wait_for(browser, "#result").text == "posted to /submit/code"
    [post] = pages.posted_to("/submit/code")
    assert post.form == {"code": ["123456"]}
    # <meta name="referrer" content="no-referrer">: the ACS page's URL does not travel with the post.
    assert post.referer is None
    assert pages.posted_to("/submit/cancel") == []


def test_code_field_takes_at_most_eight_characters(browser: Chrome, pages: PageServer) -> None:
    browser.get(_publish_challenge(pages, "/maxlength"))

    wait_for(browser, "#code").send_keys("1234567890")
    browser.find_element(By.ID, "submit").click()

    wait_for(browser, "#result")
    assert pages.posted_to("/maxlength/code")[0].form == {"code": ["12345678"]}


def test_cancel_posts_to_the_cancel_url_without_the_code(browser: Chrome, pages: PageServer) -> None:
    browser.get(_publish_challenge(pages, "/cancel-flow"))

    wait_for(browser, "#code").send_keys("999999")
    browser.find_element(By.ID, "cancel").click()

    assert wait_for(browser, "#result").text == "posted to /cancel-flow/cancel"
    [post] = pages.posted_to("/cancel-flow/cancel")
    assert post.form == {}
    assert pages.posted_to("/cancel-flow/code") == []


def test_auto_post_page_reaches_its_action_with_its_fields_without_a_click(browser: Chrome, pages: PageServer) -> None:
    fields = {"creq": "eyJtZXNzYWdlVHlwZSI6IkNSZXEifQ", "threeDSSessionData": 'a"b<c>&d e'}
    # Another origin (localhost, not 127.0.0.1), as the ACS or the requestor's notification URL is: the page's
    # form-action must name the action's origin for chromium to let the post leave.
    other_origin = pages.base_url.replace("127.0.0.1", "localhost")
    page = auto_post_page(title="Redirecting to your bank", action_url=f"{other_origin}/acs/creq", fields=fields)

    browser.get(pages.publish("/auto", page))

    assert wait_for(browser, "#result").text == "posted to /acs/creq"
    [post] = pages.posted_to("/acs/creq")
    assert post.form == {name: [value] for name, value in fields.items()}


def test_script_in_merchant_name_is_shown_not_run(browser: Chrome, pages: PageServer) -> None:
    injected = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
    browser.get(_publish_challenge(pages, "/injected", merchant_name=injected, error=injected))

    assert wait_for(browser, "#merchant").text == injected
    assert browser.find_element(By.ID, "error").text == injected
    assert browser.title == "Sandbox 3-D Secure challenge"
    assert browser.find_elements(By.CSS_SELECTOR, "#merchant script, #merchant img") == []


def test_result_page_links_back_to_the_merchant(browser: Chrome, pages: PageServer) -> None:
    back = pages.publish("/merchant/return", "<!DOCTYPE html><title>Merchant</title><p id=merchant-home>home</p>")
    browser.get(pages.publish("/done", result_page(title="Done", message="Payment authenticated.", return_url=back)))

    assert wait_for(browser, "#result").text == "Payment authenticated."
    browser.find_element(By.ID, "return").click()

    assert wait_for(browser, "#merchant-home").text == "home"
    assert browser.current_url == back
