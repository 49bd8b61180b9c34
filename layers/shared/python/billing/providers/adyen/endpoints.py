"""Where the Checkout API lives, and the one version of it this adapter speaks.

The SDK's services default to Checkout v72 and rewrite URLs by platform on every call (Adyen/client.py
`_determine_api_url`). The version is pinned here instead, once, by setting the services' baseUrl; the URL is
computed the way the SDK would and checked at start-up to be one the SDK leaves as it is.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final, assert_never

# The issue fixes v71: the shared OpenAPI document the contract tests validate against is v71, and a version change is
# a deliberate change of both (request fields, result codes and error shapes differ between versions).
CHECKOUT_API_VERSION: Final = "v71"

TEST_CHECKOUT_BASE: Final = "https://checkout-test.adyen.com"
# Live URLs carry the merchant's own prefix (Customer Area > Developers > API URLs): {prefix}-checkout-live...
_LIVE_CHECKOUT_BASE: Final = "https://{prefix}-checkout-live.adyenpayments.com/checkout"
# What Adyen issues as a prefix: a hex string and the company name, joined by a dash ("1797a841fbb37ca7-AdyenDemo").
_LIVE_ENDPOINT_PREFIX: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,99}$")


class AdyenEnvironment(StrEnum):
    """Adyen's two platforms, as the SDK names them."""

    TEST = "test"
    LIVE = "live"


def checkout_base_url(
    environment: AdyenEnvironment, *, live_endpoint_prefix: str | None = None, api_base: str | None = None
) -> str:
    """The Checkout services' base URL, version included: `<base>/v71`.

    `api_base` (scheme and host, e.g. a local contract server) replaces the environment's base.
    """
    if api_base is not None:
        if not re.match(r"^https?://[^/]+$", api_base):
            raise ValueError("api_base is a scheme and host only, e.g. http://127.0.0.1:8080")
        return f"{api_base}/{CHECKOUT_API_VERSION}"
    match environment:
        case AdyenEnvironment.TEST:
            return f"{TEST_CHECKOUT_BASE}/{CHECKOUT_API_VERSION}"
        case AdyenEnvironment.LIVE:
            if live_endpoint_prefix is None or not _LIVE_ENDPOINT_PREFIX.fullmatch(live_endpoint_prefix):
                raise ValueError("the live environment needs the merchant's live endpoint prefix")
            return f"{_LIVE_CHECKOUT_BASE.format(prefix=live_endpoint_prefix)}/{CHECKOUT_API_VERSION}"
        case _:
            assert_never(environment)
