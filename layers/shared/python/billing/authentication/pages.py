"""HTML pages of the sandbox's browser 3-D Secure flow: the auto-posting forms that carry the CReq to the ACS and the
final CRes to the requestor, the test ACS's one-time-code challenge, and the page that ends the flow.

Pure: each function returns a whole document as a str. Everything that came from outside (merchant names, URLs,
field values, messages) is escaped, and each page carries its own Content-Security-Policy so that an escaping
mistake still runs nothing: no script at all, except the one inline handler that auto-submits a form, allowed by
its hash alone. The element ids (`code`, `submit`, `cancel`, `attempts-left`, `error`, `result`, `return`) are a
contract with the browser tests.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from html import escape
from typing import Final
from urllib.parse import urlsplit

from billing.authentication.sandbox_acs import CHALLENGE_CODE
from billing.domain.money import Money

# The auto-submit handler, and its CSP hash: 'unsafe-hashes' lets exactly this attribute run and no other script,
# inline or loaded, so nothing injected into a page could execute even if it slipped past escaping.
AUTO_SUBMIT_HANDLER: Final = "document.forms[0].submit()"
_AUTO_SUBMIT_HASH: Final = base64.b64encode(hashlib.sha256(AUTO_SUBMIT_HANDLER.encode()).digest()).decode()

_STYLE: Final = """
body { font-family: system-ui, sans-serif; max-width: 28rem; margin: 2rem auto; padding: 0 1rem; color: #1a1a1a; }
.sandbox { background: #fff4ce; border: 1px solid #e0c060; padding: 0.5rem 0.75rem; font-size: 0.9rem; }
.error { color: #a4000f; font-weight: 600; }
input[name=code] { font-size: 1.25rem; letter-spacing: 0.2em; width: 9rem; }
button { font-size: 1rem; margin-top: 0.5rem; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 0.25rem 1rem; }
dd { margin: 0; }
"""


def form_action_source(url: str) -> str:
    """The CSP source a form may post to: the URL's origin, or 'self' for a path on this page's own origin.

    Only http(s) URLs and absolute paths are accepted: a `javascript:` or `data:` action must never reach a page.
    """
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    if not parts.scheme and not parts.netloc and url.startswith("/"):
        return "'self'"
    raise ValueError("a page may only link or post to an http(s) URL or an absolute path")


def content_security_policy(*, form_actions: Iterable[str], auto_submit: bool = False) -> str:
    """The policy of one page: nothing loads, inline styles apply, forms post only to the given URLs' origins.

    frame-ancestors is left out: a <meta> policy ignores it; a response that must not be framed says so in a header.
    """
    sources = sorted({form_action_source(url) for url in form_actions})
    directives = [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        "base-uri 'none'",
        f"form-action {' '.join(sources)}" if sources else "form-action 'none'",
    ]
    if auto_submit:
        directives.append(f"script-src 'unsafe-hashes' 'sha256-{_AUTO_SUBMIT_HASH}'")
    return "; ".join(directives)


def _document(*, title: str, policy: str, body: str, onload: str | None = None) -> str:
    body_open = f'<body onload="{escape(onload)}">' if onload else "<body>"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(policy)}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f"<style>{_STYLE}</style>\n"
        "</head>\n"
        f"{body_open}\n"
        f"{body}\n"
        "</body>\n"
        "</html>\n"
    )


def auto_post_page(*, title: str, action_url: str, fields: Mapping[str, str]) -> str:
    """A form of hidden fields that posts itself to action_url on load; its Continue button works without script."""
    hidden = "\n".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">' for name, value in fields.items()
    )
    body = (
        f"<h1>{escape(title)}</h1>\n"
        f'<form method="post" action="{escape(action_url)}">\n'
        f"{hidden}\n"
        "<p>If nothing happens, continue:</p>\n"
        '<button type="submit" id="continue">Continue</button>\n'
        "</form>"
    )
    policy = content_security_policy(form_actions=[action_url], auto_submit=True)
    return _document(title=title, policy=policy, body=body, onload=AUTO_SUBMIT_HANDLER)


def challenge_page(
    *,
    merchant_name: str,
    amount: Money,
    attempts_left: int,
    code_action_url: str,
    cancel_action_url: str,
    error: str | None = None,
) -> str:
    """The test ACS's one-time-code page: merchant, amount, the code form, a cancel form and the attempts left."""
    if attempts_left < 0:
        raise ValueError("attempts_left must not be negative")
    error_block = f'<p id="error" class="error" role="alert">{escape(error)}</p>\n' if error else ""
    attempts_word = "attempt" if attempts_left == 1 else "attempts"
    body = (
        "<h1>Confirm your payment</h1>\n"
        '<p class="sandbox">This is the sandbox\'s test ACS, not your bank. '
        f"The test code is <strong>{CHALLENGE_CODE}</strong>.</p>\n"
        "<dl>\n"
        f'<dt>Merchant</dt><dd id="merchant">{escape(merchant_name)}</dd>\n'
        f'<dt>Amount</dt><dd id="amount">{escape(amount.format())}</dd>\n'
        "</dl>\n"
        f"{error_block}"
        f'<form method="post" action="{escape(code_action_url)}">\n'
        '<label for="code">One-time code</label><br>\n'
        '<input type="text" name="code" id="code" inputmode="numeric" autocomplete="one-time-code" maxlength="8"'
        " required>\n"
        '<br><button type="submit" id="submit">Submit</button>\n'
        "</form>\n"
        f'<p><span id="attempts-left">{attempts_left}</span> {attempts_word} left.</p>\n'
        f'<form method="post" action="{escape(cancel_action_url)}">\n'
        '<button type="submit" id="cancel">Cancel</button>\n'
        "</form>"
    )
    policy = content_security_policy(form_actions=[code_action_url, cancel_action_url])
    return _document(title="Sandbox 3-D Secure challenge", policy=policy, body=body)


def result_page(*, title: str, message: str, return_url: str | None) -> str:
    """The page that ends a flow: the message, and a link back to the merchant when there is somewhere to return."""
    link = ""
    if return_url is not None:
        form_action_source(return_url)  # the same scheme check as an action: no javascript: link
        link = f'\n<p><a id="return" href="{escape(return_url)}">Return to the merchant</a></p>'
    body = f'<h1>{escape(title)}</h1>\n<p id="result">{escape(message)}</p>{link}'
    return _document(title=title, policy=content_security_policy(form_actions=[]), body=body)
