"""API Gateway (REST API, Lambda proxy integration) for local runs: HTTP request in, real handler invoked, HTTP out.

What API Gateway and WAF do in AWS happens here, in the same order:

1. WAF refuses a body larger than the limit of the route its path names (Route.max_body_bytes in
   resource_names.ROUTES; MAX_REQUEST_BODY_BYTES where no route matches) with 413, and the function never runs.
2. The route table resource_names.ROUTES picks the resource (404 unknown path, 405 known path with another method).
3. On authorized routes the real authorizer function (functions/authorizer) is invoked with a TOKEN event; an
   `Unauthorized` error gives 401, a policy that does not allow the call gives 403. No Authorization header at all
   gives 401 without invoking it, as API Gateway does for a TOKEN authorizer's identity source. A policy is cached
   per token for five minutes, as API Gateway caches it.
4. The route's function gets a proxy event in the v1 (REST API) format with requestContext.authorizer set from the
   authorizer's answer, and its proxy result becomes the HTTP response (502 if it raises or the result is malformed).

Gateway-generated errors are application/problem+json: {type, title, status, code, detail}.

Each function's `functions/<name>/handler.py` runs in containers (billing.local.containers): a process each, which
imports the handler once and then serves one invocation at a time while warm, as a Lambda execution environment
does. Concurrent requests to one function get separate containers, up to the function's concurrency limit; past it a
request waits for a container, first come first served, and is answered 429 when none frees up within
DEFAULT_QUEUE_SECONDS, as API Gateway's throttling answers rather than letting a throttled function fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import itertools
import json
import logging
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote
from uuid import uuid4

from aws_lambda_powertools.utilities.typing import LambdaContext

from billing import resource_names as names
from billing.api.problems import PROBLEM_CONTENT_TYPE, problem_body
from billing.local.containers import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT_SECONDS,
    LOCAL_ACCOUNT_ID,
    LOCAL_REGION,
    FunctionError,
    FunctionNotDeployed,
    Invocation,
    ProcessContainer,
    Zygote,
    trace_id_for,
)
from billing.local.containers import LocalLambdaContext as LocalLambdaContext  # where callers have imported it
from billing.local.lambda_loader import load_module
from billing.paths import REPO_ROOT
from billing.resource_names import FunctionName, Route

log = logging.getLogger("billing.local.api")

FUNCTIONS_DIR: Final = REPO_ROOT / "functions"
LOCAL_STAGE: Final = "local"
LOCAL_API_ID: Final = "local"
# A function's containers when nothing sets its concurrency (the stack sets each function's from the dev stage's
# reserved concurrency): Lambda's own default is far higher; ten in-flight containers is plenty on a laptop.
DEFAULT_MAX_CONTAINERS: Final = 10
# How long a request waits for a busy function's container before the gateway refuses it with 429, as API
# Gateway's stage throttling does (in AWS a function throttled at its reserved concurrency would be a 500 behind a
# proxy integration, so the stage's limit sits in front of it). Well under API Gateway's 29 s integration timeout.
DEFAULT_QUEUE_SECONDS: Final = 10.0
# API Gateway caches a TOKEN authorizer's decision per token (infra/api.py AUTHORIZER_CACHE_TTL, checked equal by a
# test); the same token is not re-verified within it, on any route.
AUTHORIZER_CACHE_SECONDS: Final = 300.0
# Entries kept at most; the oldest go first (a load test with a token per request must not grow it without end).
AUTHORIZER_CACHE_ENTRIES: Final = 10_000
# Oversized bodies are read and thrown away up to API Gateway's own payload limit, so the client gets the 413
# instead of a connection reset; anything larger is cut off by closing the connection.
_DRAIN_LIMIT_BYTES: Final = names.API_GATEWAY_MAX_PAYLOAD_BYTES
CORRELATION_ID_HEADER: Final = "X-Correlation-Id"
# Echoed into logs and events, so only a bounded, plain token is taken from the caller (as billing.api does).
_CORRELATION_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Keys a Lambda proxy result may have; API Gateway answers 502 for anything else.
_PROXY_RESULT_KEYS: Final = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Handler = Callable[[dict[str, Any], LambdaContext], Any]


# --- HTTP values ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request as received: path still percent-encoded, raw query string, headers in arrival order."""

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str | None:
        """The last value of a header, matched case-insensitively (as API Gateway fills `headers`)."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One HTTP response; headers may repeat (multiValueHeaders)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    correlation_id: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> HttpResponse:
    """An application/problem+json response generated by the gateway itself (never by a function).

    Same shape as billing.api.problems' bodies, so a client cannot tell a gateway refusal from a function's by form.
    """
    document = problem_body(status, code, detail, correlation_id)
    return HttpResponse(
        status=status,
        headers=(("Content-Type", PROBLEM_CONTENT_TYPE), *headers),
        body=json.dumps(document).encode(),
    )


# --- Routing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


class RouteNotFound(LookupError):
    """No route has this path."""


class MethodNotAllowed(LookupError):
    """Routes have this path, but none with this method."""

    def __init__(self, allowed: Sequence[str]) -> None:
        super().__init__(f"allowed: {', '.join(allowed)}")
        self.allowed = tuple(allowed)


_PARAMETER = re.compile(r"^\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}$")


def _match_path(template: str, path: str) -> dict[str, str] | None:
    template_segments, path_segments = template.split("/"), path.split("/")
    if len(template_segments) != len(path_segments):
        return None
    parameters: dict[str, str] = {}
    for expected, actual in zip(template_segments, path_segments, strict=True):
        parameter = _PARAMETER.match(expected)
        if parameter is None:
            if unquote(actual) != expected:
                return None
        elif actual:
            # Values are handed over percent-decoded; an empty segment never matches a parameter.
            parameters[parameter["name"]] = unquote(actual)
        else:
            return None
    return parameters


def _specificity(template: str) -> tuple[int, ...]:
    # API Gateway prefers a literal segment over a {parameter} at the same position.
    return tuple(1 if _PARAMETER.match(segment) else 0 for segment in template.split("/"))


def body_limit(path: str, routes: Iterable[Route] = names.ROUTES) -> int:
    """Largest body accepted on `path`: its route's limit, whatever the method (WAF's rules see the path, not the
    route), or MAX_REQUEST_BODY_BYTES when no route has this path."""
    candidates = [route for route in routes if _match_path(route.path, path) is not None]
    if not candidates:
        return names.MAX_REQUEST_BODY_BYTES
    template = min((route.path for route in candidates), key=_specificity)
    return max(route.max_body_bytes for route in candidates if route.path == template)


def match_route(method: str, path: str, routes: Iterable[Route] = names.ROUTES) -> RouteMatch:
    """The route serving `method path`; RouteNotFound or MethodNotAllowed otherwise."""
    candidates = [(route, params) for route in routes if (params := _match_path(route.path, path)) is not None]
    if not candidates:
        raise RouteNotFound(path)
    same_method = [(route, params) for route, params in candidates if route.method == method.upper()]
    if not same_method:
        raise MethodNotAllowed(sorted({route.method for route, _ in candidates}))
    route, params = min(same_method, key=lambda candidate: _specificity(candidate[0].path))
    return RouteMatch(route=route, path_parameters=params)


# --- Events -----------------------------------------------------------------------------------------------------


def _request_time(moment: datetime) -> str:
    # API Gateway's CLF timestamp, always with English month names whatever the locale.
    return f"{moment:%d}/{_MONTHS[moment.month - 1]}/{moment:%Y:%H:%M:%S} +0000"


def _multi(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def method_arn(
    method: str,
    path: str,
    *,
    region: str = LOCAL_REGION,
    account_id: str = LOCAL_ACCOUNT_ID,
    api_id: str = LOCAL_API_ID,
    stage: str = LOCAL_STAGE,
) -> str:
    """The execute-api ARN of one call, as an authorizer receives it in `methodArn`."""
    return f"arn:aws:execute-api:{region}:{account_id}:{api_id}/{stage}/{method.upper()}/{path.lstrip('/')}"


def token_authorizer_event(request: HttpRequest, arn: str) -> dict[str, Any]:
    """The event API Gateway sends a TOKEN authorizer whose identity source is the Authorization header."""
    return {"type": "TOKEN", "authorizationToken": request.header("Authorization"), "methodArn": arn}


def build_proxy_event(
    request: HttpRequest,
    match: RouteMatch,
    *,
    request_id: str,
    authorizer: Mapping[str, Any] | None = None,
    account_id: str = LOCAL_ACCOUNT_ID,
    api_id: str = LOCAL_API_ID,
    stage: str = LOCAL_STAGE,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A Lambda proxy integration event (payload format 1.0) for `request` on the matched route."""
    moment = now or datetime.now(UTC)
    forwarded_for = request.header("X-Forwarded-For")
    added = (
        ("X-Forwarded-For", f"{forwarded_for}, {request.source_ip}" if forwarded_for else request.source_ip),
        ("X-Forwarded-Proto", "http"),
        ("X-Amzn-Trace-Id", f"Root=1-{int(moment.timestamp()):08x}-{uuid4().hex[:24]}"),
    )
    replaced = {name.lower() for name, _ in added}
    header_pairs = [(k, v) for k, v in request.headers if k.lower() not in replaced] + list(added)
    multi_headers = _multi(header_pairs)
    query_pairs = parse_qsl(request.query, keep_blank_values=True)
    multi_query = _multi(query_pairs)
    try:
        body: str | None = request.body.decode("utf-8") if request.body else None
        is_base64 = False
    except UnicodeDecodeError:
        # Binary payloads (and webhook bodies whose signature covers exact bytes) arrive base64-encoded.
        body, is_base64 = base64.b64encode(request.body).decode("ascii"), True
    request_context: dict[str, Any] = {
        "accountId": account_id,
        "apiId": api_id,
        "domainName": request.header("Host") or "127.0.0.1",
        "domainPrefix": (request.header("Host") or "127.0.0.1").split(".")[0],
        "extendedRequestId": uuid4().hex[:16],
        "httpMethod": request.method.upper(),
        "identity": {
            "accessKey": None,
            "accountId": None,
            "apiKey": None,
            "apiKeyId": None,
            "caller": None,
            "clientCert": None,
            "cognitoAuthenticationProvider": None,
            "cognitoAuthenticationType": None,
            "cognitoIdentityId": None,
            "cognitoIdentityPoolId": None,
            "principalOrgId": None,
            "sourceIp": request.source_ip,
            "user": None,
            "userAgent": request.header("User-Agent"),
            "userArn": None,
        },
        "path": request.path,
        "protocol": "HTTP/1.1",
        "requestId": request_id,
        "requestTime": _request_time(moment),
        "requestTimeEpoch": int(moment.timestamp() * 1000),
        "resourceId": hashlib.sha256(match.route.path.encode()).hexdigest()[:6],
        "resourcePath": match.route.path,
        "stage": stage,
    }
    if authorizer is not None:
        request_context["authorizer"] = dict(authorizer)
    return {
        "resource": match.route.path,
        "path": request.path,
        "httpMethod": request.method.upper(),
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": match.path_parameters or None,
        "stageVariables": None,
        "requestContext": request_context,
        "body": body,
        "isBase64Encoded": is_base64,
    }


class MalformedProxyResponse(ValueError):
    """A function's result that API Gateway would refuse with 502."""


def response_from_proxy_result(result: Any) -> HttpResponse:
    """The HTTP response API Gateway makes of a Lambda proxy result; MalformedProxyResponse if it has none."""
    if not isinstance(result, dict):
        raise MalformedProxyResponse(f"result is a {type(result).__name__}, not an object")
    unexpected = set(result) - _PROXY_RESULT_KEYS
    if unexpected:
        raise MalformedProxyResponse(f"unexpected keys {sorted(unexpected)}")
    status = result.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedProxyResponse(f"statusCode {status!r} is not an HTTP status")
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedProxyResponse("headers and multiValueHeaders must be objects")
    if any(not isinstance(values, list) for values in multi.values()):
        raise MalformedProxyResponse("multiValueHeaders values must be lists")
    # Both given: API Gateway merges them, and a name in multiValueHeaders wins over the same name in headers.
    headers = [(name, str(value)) for name, value in single.items() if name not in multi]
    headers += [(name, str(value)) for name, values in multi.items() for value in values]
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    body = result.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedProxyResponse("body must be a string")
    raw = (body or "").encode("utf-8")
    if result.get("isBase64Encoded") and body:
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise MalformedProxyResponse("isBase64Encoded is set but body is not base64") from None
    return HttpResponse(status=status, headers=tuple(headers), body=raw)


# --- Functions --------------------------------------------------------------------------------------------------


class Isolation(StrEnum):
    """How the containers of a LocalFunctions are kept apart."""

    # Each container a process (billing.local.containers): as isolated as Lambda's. The local stack runs this way.
    PROCESS = "process"
    # Each container a module instance in this process: handler globals are separate, but os.environ, the shared
    # package and Powertools' class-level state (the resolver's current event, unflushed metrics) are shared, so
    # concurrent invocations see each other's. Only for tests of the gateway itself that fake AWS in-process.
    THREAD = "thread"


class ConcurrencyLimitReached(Exception):
    """Every container the function may have is busy, and none came free within the wait allowed."""


def function_environment(function: FunctionName) -> dict[str, str]:
    """Per-function variables, on top of the stack's: what the CDK app sets on that function alone."""
    return {names.ENV_POWERTOOLS_SERVICE_NAME: names.service_name(function)}


_container_numbers = itertools.count(1)


class _ModuleContainer:
    """A container as a module instance in this process (Isolation.THREAD)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.alive = True

    def invoke(self, event: Any, invocation: Invocation) -> Any:
        return self._handler(event, invocation.context())

    def close(self) -> None:
        self.alive = False


Container = _ModuleContainer | ProcessContainer


@dataclass
class _Waiter:
    """A caller queued for a container: handed an idle one, or allowed to start one, by whoever frees a slot."""

    ready: threading.Event = field(default_factory=threading.Event)
    container: Container | None = None
    may_start: bool = False


@dataclass
class _Pool:
    limit: int
    idle: list[Container] = field(default_factory=list)
    containers: int = 0
    # First come, first served: a freed container goes to the longest waiter, never to a newcomer that happens to
    # take the lock first (barging is what stretched p99 to 4.4x p50 under 50 clients).
    waiting: deque[_Waiter] = field(default_factory=deque)


class LocalFunctions:
    """The functions/ folder run as Lambda runs it: one invocation at a time per container, a new container for a
    concurrent invocation up to the function's concurrency limit, containers reused while warm.

    Past the limit an invocation waits for a container, first come first served, up to `queue_seconds` when the
    caller gives one (then ConcurrencyLimitReached), as reserved concurrency caps a function in AWS.
    """

    def __init__(
        self,
        functions_dir: Path = FUNCTIONS_DIR,
        *,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
        max_containers: int = DEFAULT_MAX_CONTAINERS,
        concurrency: Mapping[FunctionName, int] | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        memory_mb: int = DEFAULT_MEMORY_MB,
        environment: Callable[[FunctionName], Mapping[str, str]] = function_environment,
        isolation: Isolation = Isolation.PROCESS,
    ) -> None:
        """max_containers: the limit of a function `concurrency` does not name (its reserved concurrency)."""
        self.functions_dir = functions_dir
        self.isolation = isolation
        self._region = region
        self._account_id = account_id
        self._max_containers = max_containers
        self._concurrency = dict(concurrency or {})
        self._timeout_seconds = timeout_seconds
        self._memory_mb = memory_mb
        self._environment = environment
        self._pools: dict[FunctionName, _Pool] = {}
        self._lock = threading.Lock()
        self._all: set[Container] = set()
        self._zygote = Zygote() if isolation is Isolation.PROCESS else None
        # THREAD only: module loading and its temporary environment must not interleave.
        self._load_lock = threading.Lock()

    def handler_path(self, function: FunctionName) -> Path:
        return self.functions_dir / function.value / "handler.py"

    def concurrency_limit(self, function: FunctionName) -> int:
        """How many containers `function` may have at once."""
        return self._concurrency.get(function, self._max_containers)

    def warm_up(self) -> None:
        """Start the zygote now, so its imports overlap the caller's start-up instead of the first request."""
        if self._zygote is not None:
            self._zygote.start()

    def close(self) -> None:
        """Stop every container and the zygote; an invocation still running fails with FunctionError."""
        with self._lock:
            containers, self._all = list(self._all), set()
            for pool in self._pools.values():
                pool.idle.clear()
        for container in containers:
            container.close()
        if self._zygote is not None:
            self._zygote.close()

    def __enter__(self) -> LocalFunctions:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def invoke(
        self,
        function: FunctionName,
        event: dict[str, Any],
        *,
        request_id: str | None = None,
        queue_seconds: float | None = None,
    ) -> Any:
        """Run the function's lambda_handler on `event` in a warm container (or a new one) and return its result.

        queue_seconds: how long to wait for a container when all are busy (None: as long as it takes).
        """
        container = self._acquire(function, queue_seconds)
        invocation = Invocation(
            names.service_name(function),
            self._region,
            self._account_id,
            self._memory_mb,
            self._timeout_seconds,
            request_id or str(uuid4()),
            trace_id_for(event),
        )
        started = time.perf_counter()
        try:
            return container.invoke(event, invocation)
        finally:
            self._release(function, container)
            elapsed = _ms_since(started)
            if elapsed > self._timeout_seconds * 1000:
                log.warning("%s ran %.0f ms: it would have timed out in AWS", function.value, elapsed)

    def _pool(self, function: FunctionName) -> _Pool:
        pool = self._pools.get(function)
        if pool is None:
            pool = self._pools[function] = _Pool(self.concurrency_limit(function))
        return pool

    def _acquire(self, function: FunctionName, queue_seconds: float | None) -> Container:
        with self._lock:
            pool = self._pool(function)
            if pool.idle:
                return pool.idle.pop()  # the most recently used: warm caches, as Lambda prefers too
            if pool.containers < pool.limit:
                pool.containers += 1
                waiter = None
            else:
                waiter = _Waiter()
                pool.waiting.append(waiter)
        if waiter is not None:
            handed = waiter.ready.wait(queue_seconds)
            with self._lock:
                if not handed and waiter.container is None and not waiter.may_start:
                    pool.waiting.remove(waiter)
                    raise ConcurrencyLimitReached(
                        f"{function.value}: all {pool.limit} containers busy for {queue_seconds:g} s"
                    )
            if waiter.container is not None:
                return waiter.container
        try:
            return self._start(function)
        except BaseException:
            self._free_slot(function)
            raise

    def _release(self, function: FunctionName, container: Container) -> None:
        if not container.alive:  # it died mid-invocation: its slot goes to whoever waits
            container.close()
            with self._lock:
                self._all.discard(container)
            self._free_slot(function)
            return
        with self._lock:
            pool = self._pool(function)
            if container not in self._all:  # closed meanwhile (the stack stopped)
                container.close()
                return
            if pool.waiting:
                waiter = pool.waiting.popleft()
                waiter.container = container
                waiter.ready.set()
            else:
                pool.idle.append(container)

    def _free_slot(self, function: FunctionName) -> None:
        """A container is gone (or never started): the longest waiter may start one in its place."""
        with self._lock:
            pool = self._pool(function)
            if pool.waiting:
                waiter = pool.waiting.popleft()
                waiter.may_start = True
                waiter.ready.set()
            else:
                pool.containers -= 1

    def _start(self, function: FunctionName) -> Container:
        path = self.handler_path(function)
        if not path.is_file():
            raise FunctionNotDeployed(f"{path} does not exist")
        # Unique per container across the process: pydantic may look a model's module up again later.
        module_name = f"_billing_local_{function.value}_{next(_container_numbers)}"
        started = time.perf_counter()
        container: Container
        if self._zygote is not None:
            environment = {**os.environ, **self._environment(function)}
            container = ProcessContainer.start(self._zygote, path, module_name, environment)
            where = f"container {container.pid}"
        else:
            container = _ModuleContainer(self._load_in_process(function, path, module_name))
            where = "in-process container"
        log.info("%s cold start: %s loaded in %.0f ms (%s)", function.value, path.name, _ms_since(started), where)
        with self._lock:
            self._all.add(container)
        return container

    def _load_in_process(self, function: FunctionName, path: Path, module_name: str) -> Handler:
        with self._load_lock, _temporary_environment(self._environment(function)):
            module = load_module(path, module_name)
        handler = getattr(module, "lambda_handler", None)
        if not callable(handler):
            raise FunctionNotDeployed(f"{path} has no lambda_handler")
        loaded: Handler = handler
        return loaded


@contextmanager
def _temporary_environment(values: Mapping[str, str]) -> Iterator[None]:
    # Isolation.THREAD only: the variables exist while the module is imported, for every thread of the process.
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, previous in saved.items():
            if previous is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = previous


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


# --- Authorizer -------------------------------------------------------------------------------------------------


def _iam_pattern(resource: str) -> re.Pattern[str]:
    # IAM resource wildcards: * is any run of characters (slashes included), ? exactly one.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in resource))


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_allows(policy: Mapping[str, Any], arn: str) -> bool:
    """Whether an authorizer's policy document allows execute-api:Invoke on `arn` (an explicit Deny wins)."""
    allowed = False
    for statement in _as_list(policy.get("Statement", [])):
        if not isinstance(statement, dict):
            continue
        actions = _as_list(statement.get("Action", []))
        if not any(action in ("execute-api:Invoke", "execute-api:*", "*") for action in actions):
            continue
        if not any(_iam_pattern(str(resource)).fullmatch(arn) for resource in _as_list(statement.get("Resource", []))):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class GatewayRefusal(Exception):
    """An answer the gateway gives itself, without (or instead of) the function's: rendered as problem+json."""

    def __init__(self, status: int, code: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers


def _unauthenticated() -> GatewayRefusal:
    # One answer for every rejected token, as in AWS: the reason is only in the authorizer's log.
    return GatewayRefusal(
        401,
        "unauthenticated",
        "a valid bearer token is required",
        (("WWW-Authenticate", 'Bearer realm="billing-api"'),),
    )


def correlation_id_of(request: HttpRequest, request_id: str) -> str:
    """The caller's X-Correlation-Id when it is well-formed, else the gateway's request id."""
    supplied = request.header(CORRELATION_ID_HEADER)
    return supplied if supplied and _CORRELATION_ID.fullmatch(supplied) else request_id


# --- The gateway ------------------------------------------------------------------------------------------------


class LocalApiGateway:
    """Routes HTTP requests to the functions the way the deployed REST API does."""

    def __init__(
        self,
        functions: LocalFunctions,
        *,
        routes: Sequence[Route] = names.ROUTES,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
        api_id: str = LOCAL_API_ID,
        stage: str = LOCAL_STAGE,
        queue_seconds: float = DEFAULT_QUEUE_SECONDS,
        authorizer_cache_seconds: float = AUTHORIZER_CACHE_SECONDS,
    ) -> None:
        """queue_seconds: how long a request waits for a busy function's container before its 429;
        authorizer_cache_seconds: how long an authorizer's answer is reused for the same token (0: never)."""
        self.functions = functions
        self.routes = tuple(routes)
        self.queue_seconds = queue_seconds
        self._region = region
        self._account_id = account_id
        self._api_id = api_id
        self._stage = stage
        self._authorizer_cache_seconds = authorizer_cache_seconds
        # Authorization header -> (monotonic expiry, the authorizer's answer), oldest first.
        self._authorizer_cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._authorizer_cache_lock = threading.Lock()

    def body_limit(self, path: str) -> int:
        """Largest body accepted on `path` (see body_limit)."""
        return body_limit(path, self.routes)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; logs one line: method path -> status, duration, correlation id."""
        started = time.perf_counter()
        request_id = str(uuid4())
        correlation_id = correlation_id_of(request, request_id)
        try:
            response = self._respond(request, request_id)
        except GatewayRefusal as refusal:
            response = problem(
                refusal.status, refusal.code, refusal.detail, correlation_id=correlation_id, headers=refusal.headers
            )
        response = HttpResponse(response.status, (*response.headers, ("x-amzn-RequestId", request_id)), response.body)
        log.info(
            "%s %s -> %d %.0f ms correlation_id=%s",
            request.method,
            request.path,
            response.status,
            _ms_since(started),
            response.header(CORRELATION_ID_HEADER) or correlation_id,
        )
        return response

    def _respond(self, request: HttpRequest, request_id: str) -> HttpResponse:
        limit = self.body_limit(request.path)
        if len(request.body) > limit:
            raise GatewayRefusal(413, "payload_too_large", f"request bodies are limited to {limit} bytes on this path")
        try:
            match = match_route(request.method, request.path, self.routes)
        except RouteNotFound:
            raise GatewayRefusal(404, "route_not_found", f"no route for {request.path[:200]}") from None
        except MethodNotAllowed as exc:
            allowed = ", ".join(exc.allowed)
            raise GatewayRefusal(
                405, "method_not_allowed", f"{request.method[:16]} is not allowed here", (("Allow", allowed),)
            ) from None
        authorizer = self._authorize(request) if match.route.authorized else None
        event = build_proxy_event(
            request,
            match,
            request_id=request_id,
            authorizer=authorizer,
            account_id=self._account_id,
            api_id=self._api_id,
            stage=self._stage,
        )
        function = match.route.function
        try:
            result = self.functions.invoke(function, event, request_id=request_id, queue_seconds=self.queue_seconds)
        except ConcurrencyLimitReached as exc:
            raise _throttled(exc) from None
        except FunctionNotDeployed as exc:
            log.error("%s: %s", function.value, exc)
            raise GatewayRefusal(502, "function_not_deployed", str(exc)) from None
        except Exception as exc:
            _log_function_error(function, exc)
            raise GatewayRefusal(502, "function_error", f"the {function.value} function raised an error") from None
        try:
            return response_from_proxy_result(result)
        except MalformedProxyResponse as exc:
            log.error("%s returned a malformed proxy response: %s", function.value, exc)
            raise GatewayRefusal(502, "malformed_function_response", str(exc)) from None

    def _authorize(self, request: HttpRequest) -> dict[str, Any]:
        """requestContext.authorizer for an allowed call; GatewayRefusal (401, 403, 429, 500) otherwise.

        The answer for a token is reused for AUTHORIZER_CACHE_SECONDS, as API Gateway caches it: its policy is
        checked against each call's own methodArn.
        """
        if not request.header("Authorization"):
            raise _unauthenticated()
        arn = method_arn(
            request.method,
            request.path,
            region=self._region,
            account_id=self._account_id,
            api_id=self._api_id,
            stage=self._stage,
        )
        started = time.perf_counter()
        token = request.header("Authorization") or ""
        answer = self._cached_authorization(token)
        if answer is None:
            answer = self._invoke_authorizer(request, arn)
            self._cache_authorization(token, answer)
        latency = int(_ms_since(started))
        if not policy_allows(answer["policyDocument"], arn):
            raise GatewayRefusal(403, "forbidden", "the authorizer does not allow this call")
        context = answer.get("context") or {}
        if not isinstance(context, dict) or any(
            not isinstance(value, str | int | float | bool) for value in context.values()
        ):
            log.error("authorizer context values must be strings, numbers or booleans: %r", context)
            raise GatewayRefusal(500, "authorizer_failed", "the authorizer returned an invalid context")
        return {**context, "principalId": answer.get("principalId"), "integrationLatency": latency}

    def _invoke_authorizer(self, request: HttpRequest, arn: str) -> dict[str, Any]:
        """The authorizer's answer (it has a policy document); GatewayRefusal (401, 429, 500) otherwise."""
        try:
            answer = self.functions.invoke(
                FunctionName.AUTHORIZER, token_authorizer_event(request, arn), queue_seconds=self.queue_seconds
            )
        except ConcurrencyLimitReached as exc:
            raise _throttled(exc) from None
        except FunctionNotDeployed as exc:
            log.error("authorizer: %s", exc)
            raise GatewayRefusal(500, "authorizer_failed", str(exc)) from None
        except Exception as exc:
            if str(exc) == "Unauthorized":
                raise _unauthenticated() from None
            _log_function_error(FunctionName.AUTHORIZER, exc)
            raise GatewayRefusal(500, "authorizer_failed", "the authorizer raised an error") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("policyDocument"), dict):
            log.error("authorizer returned no policy document: %r", answer)
            raise GatewayRefusal(500, "authorizer_failed", "the authorizer returned no policy")
        return answer

    def _cached_authorization(self, token: str) -> dict[str, Any] | None:
        """The authorizer's answer for this token while API Gateway would still have it cached."""
        with self._authorizer_cache_lock:
            cached = self._authorizer_cache.get(token)
            if cached is None:
                return None
            expires, answer = cached
            if time.monotonic() < expires:
                return answer
            del self._authorizer_cache[token]
            return None

    def _cache_authorization(self, token: str, answer: dict[str, Any]) -> None:
        # Only a policy is cached, as in API Gateway: an `Unauthorized` token is sent to the authorizer every time.
        if self._authorizer_cache_seconds <= 0:
            return
        with self._authorizer_cache_lock:
            self._authorizer_cache[token] = (time.monotonic() + self._authorizer_cache_seconds, answer)
            self._authorizer_cache.move_to_end(token)
            while len(self._authorizer_cache) > AUTHORIZER_CACHE_ENTRIES:
                self._authorizer_cache.popitem(last=False)


def _throttled(exc: ConcurrencyLimitReached) -> GatewayRefusal:
    log.warning("throttled: %s", exc)
    # The code and detail of the deployed API's THROTTLED gateway response (infra/api.py).
    return GatewayRefusal(429, "throttled", "too many requests; retry with backoff", (("Retry-After", "1"),))


def _log_function_error(function: FunctionName, error: Exception) -> None:
    if isinstance(error, FunctionError):
        # Its traceback is the container's, already in the function's log; here, what the gateway saw.
        log.error("%s raised %s: %s", function.value, error.error_type, error)
    else:
        log.exception("%s raised", function.value)


# --- HTTP server ------------------------------------------------------------------------------------------------


def _read_chunked(stream: io.BufferedIOBase, keep: int, drain_limit: int) -> tuple[bytes, bool]:
    """A chunked body: the first `keep` bytes are kept, the rest is read and dropped up to `drain_limit` bytes.

    The flag says whether the whole body was consumed (False: the connection must be closed).
    """
    body = bytearray()
    total = 0
    while True:
        size_line = stream.readline(1024)
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            return bytes(body), False
        if size == 0:
            while stream.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body), True
        total += size
        if total > drain_limit:
            return bytes(body), False
        chunk = stream.read(size)
        if len(chunk) < size:
            return bytes(body), False
        body += chunk[: max(0, keep - len(body))]
        stream.readline(1024)  # the CRLF after each chunk


class _RequestHandler(BaseHTTPRequestHandler):
    server: LocalHttpServer
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        # One byte over the path's limit is enough for the gateway to refuse the request.
        body, complete = self._read_body(self.server.gateway.body_limit(path) + 1)
        if not complete:
            self.close_connection = True  # unread bytes are still on the wire
        request = HttpRequest(
            method=self.command,
            path=path,
            query=query,
            headers=tuple(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
        )
        response = self.server.gateway.handle(request)
        self.send_response(response.status)
        for name, value in response.headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_body(self, limit: int) -> tuple[bytes, bool]:
        """At most `limit` bytes of the body, the rest drained; the flag says whether the body was consumed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return _read_chunked(self.rfile, limit, _DRAIN_LIMIT_BYTES)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return b"", False
        body = self.rfile.read(min(length, limit))
        rest = length - len(body)
        if rest <= 0:
            return body, True
        if rest > _DRAIN_LIMIT_BYTES:
            return body, False
        while rest > 0:
            chunk = self.rfile.read(min(rest, 64 * 1024))
            if not chunk:
                return body, False
            rest -= len(chunk)
        return body, True

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD> and answers a method without one with a 501 HTML page of its own. Every
        # method goes to the gateway instead, which answers one no route has (TRACE, QUERY, ...) with 405
        # problem+json, as it does for the other methods.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the gateway logs one line per request itself


class LocalHttpServer(ThreadingHTTPServer):
    """HTTP front of a LocalApiGateway; bound on construction, so `port` is known before serving starts."""

    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients (a load test, a retry storm)
    # would be reset by the kernel instead of queued, which API Gateway never does.
    request_queue_size = 128

    def __init__(self, gateway: LocalApiGateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = gateway
        super().__init__((host, port), _RequestHandler)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("HTTP connection from %s failed", client_address)
