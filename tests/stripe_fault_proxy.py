"""A real HTTP proxy in front of localstripe that injects what localstripe cannot produce: Stripe-shaped errors
(429, 5xx with Stripe-Should-Retry, 402 declines with decline codes, 409, 401), a connection dropped after the
request was forwarded (the charge exists, the answer is lost), and an answer held back until the client's read
timeout. Plus two ways of never reaching a server: a port nobody listens on (refused), and a listener whose
accept queue is full (connect timeout).

Every request that reaches the proxy is recorded, so a test can tell how many requests the SDK sent (it must not
retry on its own) and what they carried.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

# Headers that describe one hop, not the message: never relayed.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host", "te", "upgrade"})
# How long a held-back answer waits for the test to end before the proxy closes the connection anyway.
_HOLD_LIMIT_SECONDS = 30.0


class FaultKind(StrEnum):
    RESPOND = "respond"
    DROP_AFTER_FORWARDING = "drop_after_forwarding"
    HOLD_AFTER_FORWARDING = "hold_after_forwarding"


@dataclass(frozen=True, slots=True)
class Fault:
    """What the proxy does instead of relaying localstripe's answer."""

    kind: FaultKind
    status: int = 200
    body: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


DROP_AFTER_FORWARDING = Fault(FaultKind.DROP_AFTER_FORWARDING)
HOLD_AFTER_FORWARDING = Fault(FaultKind.HOLD_AFTER_FORWARDING)


def stripe_error(
    status: int,
    error_type: str,
    *,
    code: str | None = None,
    decline_code: str | None = None,
    message: str = "injected by the fault proxy",
    payment_intent: Mapping[str, Any] | None = None,
    should_retry: bool | None = None,
    request_id: str = "req_fault",
) -> Fault:
    """An error answer shaped like Stripe's: {"error": {type, code, decline_code, message, payment_intent}} with a
    Request-Id header and, when given, Stripe-Should-Retry."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if decline_code is not None:
        error["decline_code"] = decline_code
    if payment_intent is not None:
        error["payment_intent"] = dict(payment_intent)
    headers = {"Request-Id": request_id}
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
    return Fault(FaultKind.RESPOND, status=status, body={"error": error}, headers=headers)


def stripe_answer(body: Mapping[str, Any], *, request_id: str = "req_canned") -> Fault:
    """A successful answer with this body, for what localstripe does not implement (search, list filters)."""
    return Fault(FaultKind.RESPOND, status=200, body=body, headers={"Request-Id": request_id})


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: str

    @property
    def form(self) -> dict[str, list[str]]:
        """The form-encoded body, as the SDK sends it (metadata[execution_id]=...)."""
        return urllib.parse.parse_qs(self.body)

    @property
    def params(self) -> dict[str, list[str]]:
        """The query string's parameters (created[gte]=..., starting_after=...)."""
        return urllib.parse.parse_qs(self.query)


class FaultProxy:
    """The proxy: a ThreadingHTTPServer on a free loopback port, relaying to `upstream` unless a fault is due."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self._upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self._faults: list[tuple[str, str, Fault, list[int]]] = []
        self._seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="stripe-fault-proxy", daemon=True)
        self.api_base = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def inject(self, method: str, path: str, fault: Fault, *, times: int = 1) -> None:
        """Answer the next `times` requests to (method, exact path) with `fault`."""
        with self._lock:
            self._faults.append((method.upper(), path, fault, [times]))

    def reset(self) -> None:
        """Forget faults and recorded requests; release held answers."""
        with self._lock:
            self._faults.clear()
            self._seen.clear()
            self._release.set()
            self._release = threading.Event()

    def seen(self, method: str | None = None, path: str | None = None) -> list[SeenRequest]:
        """Requests that reached the proxy, optionally only those to (method, exact path)."""
        with self._lock:
            return [
                request
                for request in self._seen
                if (method is None or request.method == method.upper()) and (path is None or request.path == path)
            ]

    def _record_and_take(self, request: SeenRequest) -> tuple[Fault | None, threading.Event]:
        with self._lock:
            self._seen.append(request)
            for method, path, fault, remaining in self._faults:
                if method == request.method and path == request.path and remaining[0] > 0:
                    remaining[0] -= 1
                    return fault, self._release
            return None, self._release

    def _forward(self, request: SeenRequest) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
            target = request.path + (f"?{request.query}" if request.query else "")
            connection.request(request.method, target, body=request.body.encode() or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's own output is what matters

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            split = urllib.parse.urlsplit(self.path)
            request = SeenRequest(self.command, split.path, split.query, dict(self.headers.items()), body)
            fault, release = proxy._record_and_take(request)
            if fault is not None and fault.kind is FaultKind.RESPOND:
                self._answer(fault.status, list(fault.headers.items()), json.dumps(dict(fault.body)).encode())
                return
            status, headers, payload = proxy._forward(request)
            if fault is None:
                self._answer(status, headers, payload)
                return
            if fault.kind is FaultKind.HOLD_AFTER_FORWARDING:
                # The client's read timeout fires first; the connection closes when the test is done with it.
                release.wait(_HOLD_LIMIT_SECONDS)
            # Either way the client never gets an answer: it was sent, and processed, and the answer is lost.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() not in {"date", "server"}:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def refused_api_base() -> str:
    """A loopback address where nothing listens: connecting is refused, so no request is ever sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def unaccepting_api_base() -> Iterator[str]:
    """A loopback listener whose accept queue is full: a new connection is never established (the kernel drops
    its SYN), so a client gets a connect timeout and sends nothing."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        filler.close()
        listener.close()
