"""A local stand-in for Adyen's Checkout API that holds every exchange to Adyen's published OpenAPI document (v71).

No Adyen server exists offline, and a hand-written fake of the SDK would only prove the adapter agrees with its own
author. This is a real HTTP server (127.0.0.1, a free port, a thread) that the real SDK talks to:

- every request is validated with openapi-core against the document (server URL and path, the operation's
  parameters and security, the request body's schema), plus Adyen's documented 64-character limit of the
  Idempotency-Key; what was sent and what was wrong with it is recorded;
- the test scripts the answers, in order; each is validated against the operation's response schema for its
  status before it is sent, so a test cannot hand the adapter something the spec forbids. A reply found invalid is
  recorded as a violation and the connection is dropped instead. Two deliberate exits: `extra_fields` are added after
  validation (to prove unknown fields are tolerated), and a status the operation does not document (429, 503) is
  allowed only when the test says so, with a body that must still be a ServiceError;
- a reply can also hang (the client times out after sending) or drop the connection without an answer.

The document is read from shared/ (tests/shared_material.py), never copied into the tree; it is MIT-licensed by Adyen.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from openapi_core import OpenAPI
from openapi_core.configurations import Config
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS31Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

from tests.shared_material import shared_dir

# The document's only server; requests to the local server are validated as if sent there, so "/v72/payments" or a
# missing version prefix is a violation.
SPEC_SERVER_ORIGIN: Final = "https://checkout-test.adyen.com"
SPEC_VERSION_PREFIX: Final = "/v71"
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 64
# Longest a hanging reply holds the connection if the test never releases it: far beyond any client timeout a test
# sets, and bounded so a forgotten server cannot hold a worker.
_HANG_LIMIT_SECONDS: Final = 30.0
_SHUTDOWN_POLL_SECONDS: Final = 0.02


def spec_path() -> Path:
    """Where Adyen's Checkout v71 OpenAPI document lives (read-only shared material)."""
    return shared_dir() / "provider-specs" / "adyen" / "CheckoutService-v71.json"


@cache
def load_spec() -> Mapping[str, Any]:
    """The document, parsed once per process. Callers must not modify it."""
    document: dict[str, Any] = json.loads(spec_path().read_text(encoding="utf-8"))
    return document


@cache
def _openapi() -> OpenAPI:
    # The document itself is Adyen's and validated upstream; checking it again costs time and proves nothing here.
    return OpenAPI.from_dict(dict(load_spec()), config=Config(spec_validator_cls=None))


def example(name: str) -> dict[str, Any]:
    """A named example of the document (components.examples), as a fresh copy."""
    value = load_spec()["components"]["examples"][name]["value"]
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


def result_code_enum() -> list[str]:
    """PaymentResponse.resultCode's enum, as the document lists it."""
    values: list[str] = load_spec()["components"]["schemas"]["PaymentResponse"]["properties"]["resultCode"]["enum"]
    return list(values)


def operation_id_for(method: str, path: str) -> str | None:
    """The operationId a request targets, matching the path (after the server's /v71) against the templates."""
    if not path.startswith(SPEC_VERSION_PREFIX + "/"):
        return None
    local = path[len(SPEC_VERSION_PREFIX) :]
    for template, item in load_spec()["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        operation = item.get(method.lower())
        if operation is not None and re.match(pattern, local):
            operation_id: str = operation["operationId"]
            return operation_id
    return None


@dataclass(slots=True)
class _SpecRequest:
    """openapi_core.protocols.Request for one raw HTTP request, placed on the document's server (mutable: openapi-core
    writes the path parameters it resolves into `parameters`)."""

    method: str
    path: str
    body: bytes | None
    content_type: str
    parameters: RequestParameters
    host_url: str = SPEC_SERVER_ORIGIN


@dataclass(frozen=True, slots=True)
class _SpecResponse:
    """openapi_core.protocols.Response for a reply the server is about to send."""

    status_code: int
    data: bytes | None
    headers: Headers
    content_type: str = "application/json"


def spec_request(method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> _SpecRequest:
    """The request as openapi-core reads it."""
    header_values = Headers(list(headers.items()))
    return _SpecRequest(
        method=method.lower(),
        path=path,
        body=body,
        content_type=(header_values.get("Content-Type") or "").lower(),
        parameters=RequestParameters(header=header_values, query=ImmutableMultiDict()),
    )


def _describe(error: BaseException) -> str:
    """An openapi-core error with its schema errors (which live on the exception's cause)."""
    details: list[str] = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    for schema_error in getattr(cause, "schema_errors", None) or ():
        location = "/".join(str(part) for part in getattr(schema_error, "absolute_path", ()))
        details.append(f"  at {location or '<body>'}: {getattr(schema_error, 'message', schema_error)}")
    return "\n".join(details)


def request_violations(method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> list[str]:
    """What is wrong with a request by the document (empty: nothing), and with its Idempotency-Key."""
    request = spec_request(method, path, headers, body)
    violations = [_describe(error) for error in _openapi().iter_request_errors(request)]
    key = request.parameters.header.get("Idempotency-Key")
    if method.upper() == "POST" and not key:
        violations.append("no Idempotency-Key header: every POST the adapter sends must carry one")
    elif key is not None and len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        violations.append(f"Idempotency-Key is {len(key)} characters; Adyen allows {MAX_IDEMPOTENCY_KEY_LENGTH}")
    return violations


class ReplyKind(StrEnum):
    """How the server answers one request."""

    ANSWER = "answer"
    # Read the request, then send nothing until released: the client's read times out after sending.
    HANG = "hang"
    # Read the request, then close the connection without an answer.
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer. Build it with the class methods."""

    kind: ReplyKind
    status: int = 200
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Added to the body's top level after validation: fields a later API version might send.
    extra_fields: Mapping[str, Any] = field(default_factory=dict)
    # The operation does not document this status (429, 503): the body is held to ServiceError instead.
    undocumented_status: bool = False

    @classmethod
    def json(
        cls,
        body: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        extra_fields: Mapping[str, Any] | None = None,
        undocumented_status: bool = False,
    ) -> Reply:
        return cls(
            ReplyKind.ANSWER,
            status,
            body,
            dict(headers or {}),
            dict(extra_fields or {}),
            undocumented_status,
        )

    @classmethod
    def example(cls, name: str, *, status: int = 200, **overrides: Any) -> Reply:
        """A named example of the document, with `overrides` set on its top level (validated like any reply)."""
        return cls.json({**example(name), **overrides}, status=status)

    @classmethod
    def hang(cls) -> Reply:
        return cls(ReplyKind.HANG)

    @classmethod
    def drop(cls) -> Reply:
        return cls(ReplyKind.DROP)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the server received it, and what the document says about it."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    operation_id: str | None
    violations: tuple[str, ...]

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        return next((value for key, value in self.headers.items() if key.lower() == name.lower()), None)


def reply_violations(request: _SpecRequest, reply: Reply) -> list[str]:
    """What is wrong with a scripted reply by the document (empty: nothing)."""
    data = json.dumps(reply.body).encode() if reply.body is not None else None
    if reply.undocumented_status:
        # ServiceError refers to no other schema, so it validates on its own.
        validator = OAS31Validator(load_spec()["components"]["schemas"]["ServiceError"])
        return [f"ServiceError: {error.message}" for error in validator.iter_errors(reply.body)]
    response = _SpecResponse(reply.status, data, Headers(list(reply.headers.items())))
    return [_describe(error) for error in _openapi().iter_response_errors(request, response)]


class AdyenContractServer:
    """The server; use as a context manager. Thread-safe: the SDK may call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._reply_violations: list[str] = []
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            # How often serve_forever looks for shutdown(): the default half second would be each test's teardown.
            target=lambda: self._server.serve_forever(poll_interval=_SHUTDOWN_POLL_SECONDS),
            name="adyen-contract-server",
            daemon=True,
        )

    def __enter__(self) -> AdyenContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=_HANG_LIMIT_SECONDS)

    @property
    def base_url(self) -> str:
        """Scheme and host to configure as the adapter's api_base."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def reply_with(self, *replies: Reply) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._replies.extend(replies)

    def release(self) -> None:
        """Let hanging replies end (they then close the connection without an answer)."""
        self._release.set()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def violations(self) -> list[str]:
        """Every request and reply violation so far; a clean exchange has none."""
        with self._lock:
            return self._request_violations() + list(self._reply_violations)

    @property
    def request_violations(self) -> list[str]:
        """What was wrong with the requests the adapter sent (replies aside)."""
        with self._lock:
            return self._request_violations()

    def _request_violations(self) -> list[str]:
        return [f"{r.method} {r.path}: {v}" for r in self._requests for v in r.violations]

    @property
    def unused_replies(self) -> int:
        with self._lock:
            return len(self._replies)

    def only_request(self) -> RecordedRequest:
        """The single request received (fails if there were none or several)."""
        requests = self.requests
        assert len(requests) == 1, f"expected exactly one request, got {len(requests)}"
        return requests[0]

    def _record(self, recorded: RecordedRequest) -> Reply | None:
        with self._lock:
            self._requests.append(recorded)
            return self._replies.popleft() if self._replies else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server._handle(self)

            def do_GET(self) -> None:
                server._handle(self)

            def do_PATCH(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                # Silence: the test asserts on what was recorded, and stderr would carry request lines.
                return

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else None
        headers = dict(handler.headers.items())
        violations = request_violations(handler.command, handler.path, headers, raw)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            violations.append("the body is not JSON")
        reply = self._record(
            RecordedRequest(
                handler.command,
                handler.path,
                headers,
                body,
                operation_id_for(handler.command, handler.path),
                tuple(violations),
            )
        )
        if reply is None:
            self._refuse("no reply scripted for this request")
            handler.close_connection = True
            return
        match reply.kind:
            case ReplyKind.HANG:
                self._release.wait(_HANG_LIMIT_SECONDS)
                handler.close_connection = True
            case ReplyKind.DROP:
                handler.close_connection = True
            case ReplyKind.ANSWER:
                self._answer(handler, spec_request(handler.command, handler.path, headers, raw), reply)

    def _answer(self, handler: BaseHTTPRequestHandler, request: _SpecRequest, reply: Reply) -> None:
        problems = reply_violations(request, reply)
        if problems:
            self._refuse(f"reply {reply.status} violates the document: " + "; ".join(problems))
            handler.close_connection = True
            return
        body = {**(reply.body or {}), **reply.extra_fields}
        data = json.dumps(body).encode()
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _refuse(self, violation: str) -> None:
        with self._lock:
            self._reply_violations.append(violation)


def response_example_names(path: str, method: str, status: str) -> Iterator[str]:
    """Names (components.examples) of the examples the document gives for one operation's answer with `status`."""
    content = load_spec()["paths"][path][method.lower()]["responses"][status]["content"]["application/json"]
    for named in content.get("examples", {}).values():
        yield named["$ref"].rsplit("/", 1)[-1]
