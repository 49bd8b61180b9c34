"""How we talk to Stripe: whose API key, which server, which HTTP client and timeouts, one SDK client per key.

The SDK never retries on its own (max_network_retries=0): the engine owns retries, with backoff, through its
retry queue, and only after reading the outcome of the attempt that failed. An SDK retry would hide that attempt.

The HTTP client is the SDK's RequestsClient because it keeps the `requests` exception as the APIConnectionError's
__cause__, which is what tells "never reached Stripe" (connection refused, connect timeout: nothing can have been
charged) from "sent, then no answer" (read timeout, connection dropped): see errors.request_never_sent. The
urllib and urlfetch clients flatten both into one message; httpx would do too, but is not a dependency.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

import stripe
from stripe._base_address import BaseAddresses


@dataclass(frozen=True, slots=True)
class StripeCredentials:
    """One Stripe account's secret API key. Its repr never shows the key."""

    api_key: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.api_key or not self.api_key.strip():
            raise ValueError("a Stripe API key cannot be empty")

    def __repr__(self) -> str:
        return "StripeCredentials(api_key=<redacted>)"


# None asks for the platform account's credentials; a tenant id for that tenant's override, else the platform's.
# The callable owns caching and rotation (it may answer a new key after a rotation); the provider asks it again
# every time it binds a tenant.
CredentialsSource = Callable[[UUID | None], StripeCredentials]


@dataclass(frozen=True, slots=True)
class StripeTimeouts:
    """Seconds to wait for a connection and for the answer once the request is sent."""

    # A little over a multiple of 3 s, TCP's initial retransmission timeout, as requests' documentation suggests.
    connect: float = 3.05
    # Well under a Lambda worker's timeout, so a slow answer still becomes UNKNOWN (and is reconciled) rather than
    # a killed invocation; Stripe answers a confirm in well under a second.
    read: float = 20.0

    def __post_init__(self) -> None:
        if self.connect <= 0 or self.read <= 0:
            raise ValueError("timeouts must be positive")


# Enough for the platform key and the tenants with their own account that one warm worker meets; beyond it the
# least recently used client is dropped (and rebuilt on demand, which costs nothing but a connection).
_MAX_CACHED_CLIENTS: Final = 256


class StripeClients:
    """One StripeClient per API key, built on demand and shared by every view of the provider. Thread-safe."""

    def __init__(self, *, api_base: str | None, timeouts: StripeTimeouts) -> None:
        self._base_addresses: BaseAddresses = {"api": api_base} if api_base else {}
        # One HTTP client for every key: it keeps one requests.Session per thread, and the key travels per request.
        self._http_client = stripe.RequestsClient(timeout=(timeouts.connect, timeouts.read))
        self._clients: OrderedDict[str, stripe.StripeClient] = OrderedDict()
        self._lock = threading.Lock()

    def client_for(self, credentials: StripeCredentials) -> stripe.StripeClient:
        """The SDK client for these credentials (the same object for the same key)."""
        with self._lock:
            client = self._clients.get(credentials.api_key)
            if client is None:
                client = stripe.StripeClient(
                    credentials.api_key,
                    base_addresses=self._base_addresses,
                    max_network_retries=0,
                    http_client=self._http_client,
                )
                self._clients[credentials.api_key] = client
                while len(self._clients) > _MAX_CACHED_CLIENTS:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(credentials.api_key)
            return client


class _DropSdkDebugRecords(logging.Filter):
    """The SDK logs every request's form body and every response body at DEBUG on the "stripe" logger: card numbers
    when a PaymentMethod is created, a PaymentIntent's client_secret in every answer. A service running at DEBUG
    must not ship those, so records below INFO never leave that logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


def silence_sdk_debug_logging() -> None:
    """Keep the SDK's DEBUG lines (request and response bodies) out of every log, once per process."""
    sdk_logger = logging.getLogger("stripe")
    if not any(isinstance(existing, _DropSdkDebugRecords) for existing in sdk_logger.filters):
        sdk_logger.addFilter(_DropSdkDebugRecords())
    # The SDK also prints to stderr (bypassing logging) when stripe.log or STRIPE_LOG says "debug"; stripe.log wins
    # over the environment, so "info" keeps its request lines and drops the bodies.
    if stripe.log == "debug" or (stripe.log is None and os.environ.get("STRIPE_LOG") == "debug"):
        stripe.log = "info"
