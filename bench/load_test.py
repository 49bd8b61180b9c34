"""Load on the local stack over HTTP: concurrent clients mixing every kind of request, bounded in time.

The script starts the stack itself, as `make serve` does (scripts/serve.py in a process of its own, on 127.0.0.1
only, on a fresh database, with the background jobs), then runs LOAD_CLIENTS clients for LOAD_SECONDS after a
warm-up (new containers' cold starts, not counted), then LOAD_HIGH_CLIENTS clients for as long. Each client is one
merchant (its own tenant and bearer token) on one keep-alive connection, going round a fixed cycle with its own
starting point:

    create a sandbox card charge (a new customer each time: full lifecycle, completed in the response)
    GET it (with its timeline)
    create a SEPA debit (pending settlement at the provider)
    replay a create with the same Idempotency-Key and body (200, the same execution)
    list the merchant's executions
    the provider's signed webhook settling that SEPA debit (signed as the provider signs, billing.webhooks.delivery)
    create another card charge, GET it

It stops by itself and prints, per phase: requests/s, p50/p95/p99 per route, unexpected answers (errors), 5xx and
429 counts, and the peak of database connections against their bound; then the goal lines, met or NOT met.

    .venv/bin/python bench/load_test.py
    LOAD_CLIENTS=10 LOAD_SECONDS=20 LOAD_HIGH_CLIENTS=0 .venv/bin/python bench/load_test.py

Back-pressure: a function has at most its reserved concurrency of containers (cdk.json's dev stage), so the
database has at most that many connections from it; a request beyond waits for a container, first come first
served, and is answered 429 `throttled` only if none frees up within the gateway's queue time (10 s), as API
Gateway's stage throttling answers before a function would be throttled into a 500 (docs/infrastructure.md, "Load
and connections").
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from uuid import UUID, uuid4

import psycopg
from psycopg.conninfo import conninfo_to_dict

from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token
from billing.local.embedded_postgres import database_url, fresh_database
from billing.local.stack import stage_concurrency
from billing.paths import REPO_ROOT, local_state_dir
from billing.resource_names import API_BASE_PATH, FunctionName
from billing.webhooks.delivery import SUCCEEDED, signed_sandbox_delivery
from billing.webhooks.secrets import webhook_secrets_from_env

CLIENTS: Final = int(os.environ.get("LOAD_CLIENTS", "50"))
SECONDS: Final = float(os.environ.get("LOAD_SECONDS", "60"))
HIGH_CLIENTS: Final = int(os.environ.get("LOAD_HIGH_CLIENTS", "100"))
WARMUP_SECONDS: Final = float(os.environ.get("LOAD_WARMUP_SECONDS", "10"))
WARMUP_LIMIT_SECONDS: Final = 120.0
DATABASE_NAME: Final = "billing_load_test"
HOST: Final = "127.0.0.1"
EXECUTIONS: Final = f"{API_BASE_PATH}/executions"
WEBHOOK: Final = f"{API_BASE_PATH}/webhook/sandbox"
READY: Final = re.compile(r"billing API ready on http://127\.0\.0\.1:(?P<port>\d+)")
# The goals of issue 14 for this load.
P99_OVER_P50_GOAL: Final = 3.0
# "Throughput does not fall" at twice the clients, within this much of the measurement's own noise on a shared
# two-core machine (runs of the same load differ by a few percent).
THROUGHPUT_TOLERANCE: Final = 0.95
# Functions that hold a database connection per container, and so count toward the bound; those that charge through
# the sandbox provider hold a second one, the sandbox's own (billing.rails.sandbox.KeptConnections).
DATABASE_FUNCTIONS: Final = tuple(function for function in FunctionName if function is not FunctionName.AUTHORIZER)
SANDBOX_FUNCTIONS: Final = (FunctionName.EXECUTE, FunctionName.RETRY_DLQ, FunctionName.RECONCILE)
CARD: Final = "POST /executions card"
SEPA: Final = "POST /executions sepa"
REPLAY: Final = "POST /executions replay"
GET: Final = "GET /executions/{id}"
LIST: Final = "GET /executions"
WEBHOOK_ROUTE: Final = "POST /webhook/sandbox"
ROUTES: Final = (CARD, SEPA, REPLAY, GET, LIST, WEBHOOK_ROUTE)
CYCLE: Final = (CARD, GET, SEPA, REPLAY, LIST, WEBHOOK_ROUTE, CARD, GET)


# --- the stack ------------------------------------------------------------------------------------------------


@contextmanager
def served_stack(admin_url: str, log_path: Path) -> Iterator[int]:
    """scripts/serve.py on a free port of 127.0.0.1 against `admin_url`; its port. Its output goes to `log_path`."""
    environment = {**os.environ, "PORT": "0", "DATABASE_URL": admin_url}
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "scripts" / "serve.py")],
            cwd=REPO_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert server.stdout is not None
        ready: queue.Queue[int] = queue.Queue()
        threading.Thread(target=_copy_output, args=(server.stdout, log, ready), daemon=True).start()
        try:
            try:
                port = ready.get(timeout=120)
            except queue.Empty:
                raise SystemExit(f"the stack printed no ready line; see {log_path}") from None
            yield port
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _copy_output(stream: Any, log: Any, ready: queue.Queue[int]) -> None:
    for line in stream:
        if (match := READY.search(line)) is not None:
            ready.put(int(match["port"]))
        log.write(line)


# --- the clients ----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    route: str
    status: int  # 0: no HTTP answer at all
    seconds: float
    expected: bool
    detail: str = ""


@dataclass
class Recorder:
    """What every client saw, for requests started while `measuring` is set."""

    measuring: threading.Event = field(default_factory=threading.Event)
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def take(self) -> list[Outcome]:
        with self.lock:
            taken, self.outcomes = self.outcomes, []
        return taken


class Client(threading.Thread):
    """One merchant on one keep-alive connection, going round CYCLE from its own starting point until stopped."""

    def __init__(self, number: int, port: int, recorder: Recorder, stop: threading.Event, secret: str) -> None:
        super().__init__(name=f"load-client-{number}", daemon=True)
        self._port = port
        self._recorder = recorder
        self._halt = stop
        self._secret = secret
        self._step = number % len(CYCLE)
        self._done = 0
        self._tenant: UUID = uuid4()
        self._token = issue_token(LOCAL_TOKEN_SETTINGS, self._tenant, f"load-{number}")
        self._connection: http.client.HTTPConnection | None = None
        self._executions: list[str] = []
        self._last_create: tuple[str, dict[str, Any], str] | None = None  # key, body, id
        self._unsettled: list[tuple[str, int, str]] = []  # provider reference, amount, currency

    @property
    def warm(self) -> bool:
        """Whether this client has been round the whole cycle once (so every function it calls has a container)."""
        return self._done >= len(CYCLE)

    def run(self) -> None:
        while not self._halt.is_set():
            route = CYCLE[self._step % len(CYCLE)]
            self._step += 1
            self._done += 1
            measured = self._recorder.measuring.is_set()
            outcome = self._do(route)
            if measured:
                self._recorder.add(outcome)
        if self._connection is not None:
            self._connection.close()

    def _do(self, route: str) -> Outcome:
        if route == CARD:
            return self._create(CARD, {"payment_rail": "card", "payment_instrument_id": "tok_visa"})
        if route == SEPA:
            return self._create(SEPA, {"payment_rail": "sepa_debit"})
        if route == REPLAY and self._last_create is not None:
            key, body, execution_id = self._last_create
            return self._call(
                REPLAY, "POST", EXECUTIONS, body, {"Idempotency-Key": key},
                lambda status, doc: status == 200 and doc.get("id") == execution_id,
            )  # fmt: skip
        if route == GET and self._executions:
            execution_id = self._executions[-1]
            return self._call(
                GET, "GET", f"{EXECUTIONS}/{execution_id}", None, {},
                lambda status, doc: status == 200 and doc.get("id") == execution_id,
            )  # fmt: skip
        if route == WEBHOOK_ROUTE and self._unsettled:
            return self._settle(*self._unsettled.pop(0))
        return self._call(LIST, "GET", f"{EXECUTIONS}?limit=20", None, {}, lambda status, _: status == 200)

    def _create(self, route: str, rail: dict[str, Any]) -> Outcome:
        # A new customer each time: the default risk rules count card attempts per customer and card.
        body = {
            "entity_contract_id": f"customer-{uuid4()}",
            "plan_contract_id": "plan-monthly",
            "amount": 1999,
            "currency": "EUR",
            **rail,
        }
        key = str(uuid4())
        answer: dict[str, Any] = {}

        def created(status: int, doc: dict[str, Any]) -> bool:
            answer.update(doc)
            if status != 201:
                return False
            if route == CARD:
                return doc.get("status") == "completed"
            return bool(doc.get("awaiting_settlement")) and bool(doc.get("provider_reference"))

        outcome = self._call(route, "POST", EXECUTIONS, body, {"Idempotency-Key": key}, created)
        if outcome.expected:
            self._executions.append(answer["id"])
            del self._executions[:-20]
            self._last_create = (key, body, answer["id"])
            if route == SEPA:
                self._unsettled.append((answer["provider_reference"], body["amount"], body["currency"]))
        return outcome

    def _settle(self, reference: str, amount: int, currency: str) -> Outcome:
        headers, body = signed_sandbox_delivery(
            f"evt_{uuid4().hex}", SUCCEEDED, reference, secret=self._secret, amount=amount, currency=currency
        )
        return self._call(WEBHOOK_ROUTE, "POST", WEBHOOK, body, headers, lambda status, _: status == 200, auth=False)

    def _call(
        self,
        route: str,
        method: str,
        path: str,
        body: dict[str, Any] | bytes | None,
        headers: dict[str, str],
        expected: Callable[[int, dict[str, Any]], bool],
        *,
        auth: bool = True,
    ) -> Outcome:
        sent = dict(headers)
        if auth:
            sent["Authorization"] = f"Bearer {self._token}"
        payload = json.dumps(body).encode() if isinstance(body, dict) else body
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        started = time.perf_counter()
        try:
            if self._connection is None:
                self._connection = http.client.HTTPConnection(HOST, self._port, timeout=60)
            self._connection.request(method, path, body=payload, headers=sent)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            return Outcome(route, 0, time.perf_counter() - started, False, f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        try:
            document = json.loads(data) if data else {}
        except ValueError:
            document = {}
        ok = expected(response.status, document if isinstance(document, dict) else {})
        return Outcome(route, response.status, seconds, ok, "" if ok else data[:300].decode(errors="replace"))


# --- the database ---------------------------------------------------------------------------------------------


class ConnectionSampler(threading.Thread):
    """The number of server connections to the load test's database, sampled twice a second; keeps the peak."""

    def __init__(self, admin_url: str) -> None:
        super().__init__(name="connection-sampler", daemon=True)
        self._url = admin_url
        self._database = str(conninfo_to_dict(admin_url)["dbname"])
        self._halt = threading.Event()
        self.peak = 0
        self.max_connections = 0

    def run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            row = conn.execute("select current_setting('max_connections')::int").fetchone()
            self.max_connections = row[0] if row else 0
            while not self._halt.wait(0.5):
                found = conn.execute(
                    "select count(*) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                    [self._database],
                ).fetchone()
                self.peak = max(self.peak, found[0] if found else 0)

    def reset(self) -> None:
        self.peak = 0

    def stop(self) -> None:
        self._halt.set()
        self.join()


def unpublished_outbox(admin_url: str) -> int | None:
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            row = conn.execute("select count(*) from billing.billing_outbox where published_at is null").fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


# --- a phase ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseResult:
    clients: int
    seconds: float
    outcomes: list[Outcome]
    peak_connections: int

    @property
    def requests_per_second(self) -> float:
        return len(self.outcomes) / self.seconds

    def route(self, name: str) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.route == name]

    @property
    def errors(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if not outcome.expected and outcome.status != 429]

    def count(self, predicate: Callable[[Outcome], bool]) -> int:
        return sum(1 for outcome in self.outcomes if predicate(outcome))


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_phase(
    clients: int,
    seconds: float,
    port: int,
    recorder: Recorder,
    sampler: ConnectionSampler,
    *,
    warmup: float,
    secret: str,
) -> PhaseResult:
    stop = threading.Event()
    threads = [Client(number, port, recorder, stop, secret) for number in range(clients)]
    for thread in threads:
        thread.start()
    # Warm-up: at least `warmup` seconds and until every client has been round its cycle once, so the containers'
    # cold starts (webhooks come last: after a SEPA debit) happen here, not in the measurement.
    started = time.monotonic()
    time.sleep(warmup)
    deadline = started + WARMUP_LIMIT_SECONDS
    while not all(thread.warm for thread in threads) and time.monotonic() < deadline:
        time.sleep(0.5)
    print(f"  warm-up {time.monotonic() - started:.0f} s ({clients} clients)", flush=True)
    recorder.take()
    sampler.reset()
    recorder.measuring.set()
    time.sleep(seconds)
    recorder.measuring.clear()
    stop.set()
    for thread in threads:
        thread.join(timeout=90)
    # The requests started within the window count, over the window's length.
    return PhaseResult(clients, seconds, recorder.take(), sampler.peak)


def report(result: PhaseResult) -> None:
    print(f"\n{result.clients} clients, {result.seconds:.0f} s: {result.requests_per_second:.1f} requests/s")
    print(f"  {'route':<24} {'n':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'5xx':>5} {'429':>5}")
    for route in ROUTES:
        outcomes = result.route(route)
        latencies = [o.seconds * 1000 for o in outcomes]
        errors = sum(1 for o in outcomes if not o.expected and o.status != 429)
        server = sum(1 for o in outcomes if o.status >= 500)
        throttled = sum(1 for o in outcomes if o.status == 429)
        print(
            f"  {route:<24} {len(outcomes):>6} {percentile(latencies, 0.50):>8.0f} {percentile(latencies, 0.95):>8.0f}"
            f" {percentile(latencies, 0.99):>8.0f} {errors:>7} {server:>5} {throttled:>5}"
        )
    for outcome in result.errors[:5]:
        print(f"  unexpected: {outcome.route} -> {outcome.status or 'no answer'} {outcome.detail[:200]}")


def connection_bound(limits: dict[FunctionName, int], default: int) -> int:
    """At most one connection per container of every function that uses the database (the periodic jobs' too), and
    a second per container of those that charge through the sandbox."""
    return sum(limits.get(function, default) for function in (*DATABASE_FUNCTIONS, *SANDBOX_FUNCTIONS))


def main() -> int:
    from billing.local.api_gateway import DEFAULT_MAX_CONTAINERS

    admin_url = fresh_database(database_url(), DATABASE_NAME)
    log_path = local_state_dir() / "load-test-stack.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    limits = stage_concurrency()
    bound = connection_bound(limits, DEFAULT_MAX_CONTAINERS)
    # The sandbox's current signing secret, as the stack seeds it (BILLING_WEBHOOK_SECRETS or the dev secrets).
    secret = webhook_secrets_from_env(os.environ)["sandbox"][0]
    print(
        f"local stack on {HOST} (scripts/serve.py), database {DATABASE_NAME}; its log: {log_path}\n"
        f"containers per function: execute {limits.get(FunctionName.EXECUTE, DEFAULT_MAX_CONTAINERS)}, webhook "
        f"{limits.get(FunctionName.WEBHOOK, DEFAULT_MAX_CONTAINERS)}, authorizer {DEFAULT_MAX_CONTAINERS} (dev stage's "
        f"reserved concurrency; {DEFAULT_MAX_CONTAINERS} where none is set); warm-up: at least "
        f"{WARMUP_SECONDS:g} s and one cycle per client, not counted",
        flush=True,
    )
    results: list[PhaseResult] = []
    with served_stack(admin_url, log_path) as port:
        sampler = ConnectionSampler(admin_url)
        sampler.start()
        recorder = Recorder()
        for clients in (CLIENTS, HIGH_CLIENTS):
            if clients <= 0:
                continue
            result = run_phase(clients, SECONDS, port, recorder, sampler, warmup=WARMUP_SECONDS, secret=secret)
            results.append(result)
            report(result)
            print(
                f"  database connections: peak {result.peak_connections} (bound {bound} + the stack's own; "
                f"max_connections {sampler.max_connections}); unpublished outbox rows now: "
                f"{unpublished_outbox(admin_url)}",
                flush=True,
            )
        sampler.stop()
    return goals(results, bound, sampler.max_connections)


def goals(results: list[PhaseResult], bound: int, max_connections: int) -> int:
    print("\ngoals")
    met_all = True

    def line(met: bool, text: str) -> None:
        nonlocal met_all
        met_all = met_all and met
        print(f"  [{'met' if met else 'NOT met'}] {text}")

    for result in results:
        errors, server = len(result.errors), result.count(lambda o: o.status >= 500)
        throttled = result.count(lambda o: o.status == 429)
        line(errors == 0 and server == 0, f"{result.clients} clients: {errors} errors, {server} 5xx ({throttled} 429)")
    first = results[0] if results else None
    if first is not None:
        card = [o.seconds for o in first.route(CARD) if o.expected]
        p50, p99 = percentile(card, 0.50), percentile(card, 0.99)
        ratio = p99 / p50 if p50 else float("inf")
        line(
            ratio <= P99_OVER_P50_GOAL,
            f"{first.clients} clients: POST /executions (card) p99 {p99 * 1000:.0f} ms = {ratio:.2f}x p50 "
            f"{p50 * 1000:.0f} ms (goal <= {P99_OVER_P50_GOAL:g}x)",
        )
        peak = max(result.peak_connections for result in results)
        line(
            peak <= bound + 5 and peak < max_connections,
            f"database connections peak {peak} <= bound {bound} (+5 for the stack's own) < max_connections "
            f"{max_connections}",
        )
    if len(results) > 1:
        low, high = results[0], results[1]
        ratio = high.requests_per_second / low.requests_per_second if low.requests_per_second else 0.0
        line(
            ratio >= THROUGHPUT_TOLERANCE,
            f"{high.clients} clients {high.requests_per_second:.1f} requests/s vs {low.clients} clients "
            f"{low.requests_per_second:.1f}: {ratio:.2f}x (does not fall: >= {THROUGHPUT_TOLERANCE:g}x)",
        )
    return 0 if met_all else 1


if __name__ == "__main__":
    sys.exit(main())
