"""Executions per second for the full lifecycle through the repository, against pgbench running the same SQL, and
through the execute handler, against the repository, in one run.

1. Each lifecycle is create -> pending -> processing -> completed: four transactions, each with its state change,
   lifecycle event, outbox row and workflow row. The pgbench script is captured from the repository itself (the
   exact statements it sends, pipelined the same way), so the ratio measures the cost of our Python path, not a
   different workload. Goal: repository >= 0.67x pgbench on 8 connections.
2. The request path: `POST /executions` (a sandbox card, a new customer each time: the full lifecycle, completed in
   the response) through the execute handler, no HTTP server: 8 threads, each invocation in a container of its own
   (a process, billing.local.containers, as the local stack runs them), against the repository lifecycle on 8
   connections measured just before it. Goal: >= 0.5x.
3. `--profile`: where one request's time goes, from cProfile over requests in one container of this process: the
   authorizer (invoked on its own, as API Gateway does before it caches the answer), request validation, risk, the
   provider call, the repository's transactions, and time spent waiting for PostgreSQL.

    make bench                     # embedded PostgreSQL
    DATABASE_URL=... make bench    # any other server
    BENCH_SECONDS=10 make bench    # longer runs
    .venv/bin/python bench/lifecycle_throughput.py --profile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.conninfo import conninfo_to_dict

from billing.db.connection import connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole, login_url
from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.domain.workflow import WorkflowWriteContext
from billing.local.api_gateway import (
    FUNCTIONS_DIR,
    HttpRequest,
    Isolation,
    LocalFunctions,
    build_proxy_event,
    match_route,
)
from billing.local.embedded_postgres import database_url, fresh_database
from billing.local.stack import LocalStack
from billing.paths import local_state_dir
from billing.resource_names import API_BASE_PATH, FunctionName

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
PGBENCH_GOAL = 0.67
REQUEST_PATH_GOAL = 0.5
REQUEST_THREADS = 8
PROFILED_REQUESTS = int(os.environ.get("BENCH_PROFILED_REQUESTS", "200"))
CONTEXT = WorkflowWriteContext.service_default()
REQUEST = ExecutionRequest(
    entity_contract_id="bench-contract",
    plan_contract_id="bench-plan",
    amount=1999,
    currency="EUR",
    payment_rail=PaymentRail.CARD,
)


def lifecycle(repository: ExecutionRepository, tenant_id: UUID) -> None:
    execution, _ = repository.insert_idempotent(
        tenant_id,
        REQUEST,
        idempotency_key=f"bench-{uuid4()}",
        payment_provider="sandbox",
        correlation_id="bench",
        context=CONTEXT,
    )
    repository.mark_pending(tenant_id, execution.id, CONTEXT)
    repository.mark_processing(tenant_id, execution.id, CONTEXT)
    repository.mark_completed(tenant_id, execution.id, CONTEXT, provider_reference=f"ch_{execution.id.hex}")


def run_repository(url: str, connections: int) -> float:
    """Lifecycles per second with `connections` threads, each on its own connection, for SECONDS."""
    stop = threading.Event()
    counts = [0] * connections
    barrier = threading.Barrier(connections + 1)

    def worker(index: int) -> None:
        with connect(url, application_name="bench") as conn:
            repository = ExecutionRepository(conn)
            tenant_id = uuid4()
            lifecycle(repository, tenant_id)  # warm-up: prepared statements, caches
            barrier.wait()
            while not stop.is_set():
                lifecycle(repository, tenant_id)
                counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(SECONDS)  # the measurement window, not a wait for a condition
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


class _RecordingCursor(psycopg.Cursor[Any]):
    """Records every statement with its parameters rendered as literals (what the server receives)."""

    statements: list[str] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        rendered = psycopg.ClientCursor(self.connection).mogrify(query, params)
        _RecordingCursor.statements.append(rendered)
        return super().execute(query, params, **kwargs)


def capture_pgbench_script(url: str) -> str:
    """One lifecycle as a pgbench script: the repository's own statements with fresh ids per run."""
    _RecordingCursor.statements = []
    with connect(url, cursor_factory=_RecordingCursor) as conn:
        lifecycle(ExecutionRepository(conn), uuid4())
    statements = [re.sub(r"^\s*--.*$", "", s, flags=re.MULTILINE).strip() for s in _RecordingCursor.statements]
    # The transaction brackets are added back around each pair below, exactly as the pipeline sends them.
    statements = [s for s in statements if s not in ("BEGIN", "COMMIT")]
    # Per-run values become pgbench variables: every uuid and the idempotency key. The first uuid is the
    # tenant: one per pgbench client, as the repository run has one per thread.
    uuids = list(dict.fromkeys(re.findall(r"'([0-9a-f]{32})'::uuid", "\n".join(statements))))
    script = [f"\\set u{i} random(1, 9223372036854775806)" for i in range(len(uuids))]
    script.append("\\set key random(1, 9223372036854775806)")
    # Each transaction as the repository sends it: one pipeline of BEGIN, the tenant scope (a recorded
    # set_config), the state-change statement and COMMIT.
    for index in range(0, len(statements), 2):
        scope, change = (_parametrise(s, uuids) + ";" for s in statements[index : index + 2])
        script += ["\\startpipeline", "BEGIN;", scope, change, "COMMIT;", "\\endpipeline"]
    return "\n".join(script) + "\n"


def _parametrise(statement: str, uuids: list[str]) -> str:
    for i, value in enumerate(uuids):
        variable = ":client_id::bigint + 1" if i == 0 else f":u{i}::bigint"
        expression = f"lpad(to_hex({variable}), 32, '0')::uuid"
        statement = statement.replace(f"'{value}'::uuid", expression)
        statement = statement.replace(f"'{UUID(value)}'", f"{expression}::text")  # the tenant scope's text form
    # Keys stay UUID-shaped like the repository's: a bare random number is a card number one time in ten, and the
    # database refuses card numbers in idempotency keys.
    statement = re.sub(
        r"'bench-[0-9a-f-]{36}'", "('bench-' || lpad(to_hex(:key::bigint), 32, '0')::uuid::text)", statement
    )
    statement = re.sub(r"'ch_[0-9a-f]{32}'", "('ch_' || :key::text)", statement)
    # pgbench reads ":name" as a variable even inside string literals; spell the colon another way.
    return re.sub(r"'(\w+):([\w.]+)'", r"('\1' || chr(58) || '\2')", statement)


def pgbench_binary() -> str:
    candidates = [shutil.which("pgbench")]
    try:
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        candidates.insert(0, str(Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"))
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    sys.exit("pgbench not found: install the PostgreSQL client tools or the pgserver package")


def run_pgbench(url: str, script: str, clients: int) -> float:
    params = conninfo_to_dict(url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    # Extended protocol without server-side prepared statements, as the repository sends them: behind RDS Proxy a
    # prepared statement pins the connection, so billing.db.connection never prepares (prepare_threshold=None).
    command = [pgbench_binary(), "-n", "-M", "extended", "-c", str(clients), "-j", str(min(clients, 2)),
               "-T", str(int(SECONDS)), "-f", handle.name]  # fmt: skip
    for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
        if params.get(key):
            command += [flag, str(params[key])]
    command.append(str(params.get("dbname", "postgres")))
    env = {**os.environ, "PGPASSWORD": str(params.get("password") or "")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    match = re.search(r"tps = ([0-9.]+)", result.stdout)
    if result.returncode != 0 or match is None:
        sys.exit(f"pgbench failed:\n{result.stdout}\n{result.stderr}\nscript:\n{script}")
    return float(match.group(1))


def bench_database(server: str) -> str:
    """A fresh migrated database; its admin URL."""
    return fresh_database(server, "billing_bench")


# --- the request path -------------------------------------------------------------------------------------------

EXECUTIONS = f"{API_BASE_PATH}/executions"
CARD_BODY = {"plan_contract_id": "bench-plan", "amount": 1999, "currency": "EUR", "payment_rail": "card"}


def card_event(tenant_id: UUID) -> dict[str, Any]:
    """POST /executions as API Gateway hands it over after the authorizer: a sandbox card of a new customer (the
    default risk rules count attempts per customer and card), under a new idempotency key."""
    body = json.dumps({**CARD_BODY, "entity_contract_id": f"customer-{uuid4()}", "payment_instrument_id": "tok_visa"})
    headers = (("Content-Type", "application/json"), ("Idempotency-Key", str(uuid4())))
    request = HttpRequest("POST", EXECUTIONS, "", headers, body.encode())
    authorizer = {"tenant_id": str(tenant_id), "subject": "bench", "principalId": "bench"}
    return build_proxy_event(request, match_route("POST", EXECUTIONS), request_id=str(uuid4()), authorizer=authorizer)


def completed(result: Any) -> bool:
    return (
        isinstance(result, dict)
        and result.get("statusCode") == 201
        and json.loads(result["body"])["status"] == ("completed")
    )


def run_request_path(functions: LocalFunctions, threads: int) -> float:
    """POST /executions per second through the execute handler from `threads` threads for SECONDS."""
    stop = threading.Event()
    counts = [0] * threads
    failures: list[str] = []
    barrier = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        tenant_id = uuid4()
        for _ in range(3):  # warm-up: the container's cold start and first requests
            functions.invoke(FunctionName.EXECUTE, card_event(tenant_id))
        barrier.wait()
        while not stop.is_set():
            result = functions.invoke(FunctionName.EXECUTE, card_event(tenant_id))
            if completed(result):
                counts[index] += 1
            elif len(failures) < 3:
                failures.append(str(result)[:300])

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(SECONDS)  # the measurement window, not a wait for a condition
    stop.set()
    for thread in pool:
        thread.join()
    if failures:
        print(f"  request path: not completed: {failures}")
    return sum(counts) / (time.perf_counter() - started)


@contextmanager
def functions_output_to(path: Path) -> Iterator[None]:
    """The functions' logs (this process's stdout while they run) into a file, so the figures stay readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as log, contextlib.redirect_stdout(log):
        yield


# --- where a request's time goes --------------------------------------------------------------------------------

# (label, what a profiled function's file path contains, its name or None for any): self time summed per area.
AREAS: tuple[tuple[str, str, str | None], ...] = (
    ("waiting for PostgreSQL (round trips, commits)", "psycopg/connection.py", "wait"),
    ("waiting for PostgreSQL (connecting)", "psycopg/connection.py", "connect"),
    ("psycopg (sending statements, reading rows)", "psycopg", None),
    ("pydantic (request, domain and response models)", "pydantic", None),
    ("Powertools resolver and validation", "aws_lambda_powertools/event_handler", None),
    ("Powertools logger and metrics", "aws_lambda_powertools", None),
    ("risk (rules, velocity)", "billing/risk", None),
    ("provider adapters and the sandbox", "billing/rails", None),
    ("repository and SQL", "billing/db", None),
    ("the rest of billing", "billing/", None),
    ("json", "json/", None),
    ("logging", "logging/", None),
)
# (label, file path part, function): cumulative time of the stages of a request.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("the whole handler", "functions/execute/handler.py", "lambda_handler"),
    ("the route (create and drive)", "functions/execute/handler.py", "create_execution"),
    ("create: the idempotent insert", "billing/services/execution_service.py", "create"),
    ("drive: risk, 3-D Secure, submit, record", "billing/services/execution_driver.py", "drive_with_action"),
    ("risk assessment", "billing/risk/gate.py", "assess"),
    ("the provider call (sandbox submit)", "billing/rails/sandbox.py", "submit"),
    ("state changes (the repository's transitions)", "billing/db/execution_repository.py", "_write"),
    ("opening connections", "psycopg/connection.py", "connect"),
)


def profile_request_path(functions_dir: Path, requests: int) -> str:
    """cProfile over `requests` POSTs in one warm container of this process (and the authorizer on its own); the
    breakdown, as text."""
    from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token
    from billing.local.api_gateway import method_arn, token_authorizer_event

    with LocalFunctions(functions_dir, isolation=Isolation.THREAD) as functions:
        tenant_id = uuid4()
        token = HttpRequest(
            "GET", EXECUTIONS, "", (("Authorization", f"Bearer {issue_token(LOCAL_TOKEN_SETTINGS, tenant_id, 'b')}"),)
        )
        authorizer_event = token_authorizer_event(token, method_arn("POST", EXECUTIONS))
        for _ in range(10):
            functions.invoke(FunctionName.EXECUTE, card_event(tenant_id))
            functions.invoke(FunctionName.AUTHORIZER, authorizer_event)
        started = time.perf_counter()
        for _ in range(requests):
            functions.invoke(FunctionName.AUTHORIZER, authorizer_event)
        authorizer_ms = (time.perf_counter() - started) / requests * 1000
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _ in range(requests):
            functions.invoke(FunctionName.EXECUTE, card_event(tenant_id))
        profiler.disable()
        wall_ms = (time.perf_counter() - started) / requests * 1000
    out: list[str] = []
    stats = pstats.Stats(profiler)
    entries: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    profiled_ms = sum(tottime for _, _, tottime, _, _ in entries.values()) / requests * 1000
    out.append(
        f"\nwhere a POST /executions goes ({requests} requests in one warm container, cProfile on: the times are "
        f"inflated by it, their shares are what counts): {wall_ms:.1f} ms per request profiled"
    )
    out.append(f"  authorizer, invoked on its own (API Gateway caches its answer per token): {authorizer_ms:.1f} ms")
    out.append("  stages (cumulative ms per request):")
    # Request validation and response serialisation: Powertools' middlewares around the route, the outer one's
    # time less the route's.
    middlewares = [
        v[3] for k, v in entries.items() if "middlewares/openapi_validation.py" in k[0] and k[2] == "handler"
    ]
    route = [v[3] for k, v in entries.items() if "functions/execute/handler.py" in k[0] and k[2] == "create_execution"]
    if middlewares and route:
        around = (max(middlewares) - sum(route)) / requests * 1000
        out.append(f"    {'validation and serialisation (Powertools, around the route)':<52} {around:7.1f} ms")
    for label, path, name in STAGES:
        total = sum(
            cumtime
            for (file, _, function), (_, _, _, cumtime, _) in entries.items()
            if path in file and function == name
        )
        calls = sum(
            primitive
            for (file, _, function), (primitive, _, _, _, _) in entries.items()
            if path in file and function == name
        )
        out.append(f"    {label:<52} {total / requests * 1000:7.1f} ms  {calls / requests:5.1f} calls")
    out.append("  self time by area (ms per request, share of the profiled total):")
    claimed: set[tuple[str, int, str]] = set()
    for area, part, only in AREAS:
        keys = [k for k in entries if k not in claimed and part in k[0] and (only is None or k[2] == only)]
        claimed.update(keys)
        spent = sum(entries[k][2] for k in keys) / requests * 1000
        out.append(f"    {area:<52} {spent:7.1f} ms  {spent / profiled_ms:6.1%}")
    rest = sum(entries[k][2] for k in entries if k not in claimed) / requests * 1000
    out.append(f"    {'everything else (stdlib, uuid, C calls)':<52} {rest:7.1f} ms  {rest / profiled_ms:6.1%}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", action="store_true", help="also profile where a request's time goes")
    arguments = parser.parse_args()
    admin = bench_database(database_url())
    # Both sides run as the execute function's role, so row-level security and every guard are in the figure.
    url = login_url(admin, DatabaseRole.APP)
    script = capture_pgbench_script(url)
    print(f"full lifecycle (4 transactions, each state + event + outbox + workflow row), {SECONDS:.0f} s per run")
    results = {}
    for clients in (1, 8):
        ours = run_repository(url, clients)
        baseline = run_pgbench(url, script, clients)
        results[clients] = (ours, baseline)
        print(f"  {clients} connection(s): repository {ours:8.1f} exec/s   pgbench {baseline:8.1f} exec/s   "
              f"ratio {ours / baseline:.2f}")  # fmt: skip
    # The request path on the same database, beside the repository measured again right before it.
    log = local_state_dir() / "bench-request-path.log"
    with functions_output_to(log), LocalStack(port=0, moto_port=0, database_url=admin) as stack:
        repository = run_repository(url, REQUEST_THREADS)
        handler = run_request_path(stack.functions, REQUEST_THREADS)
        profile = profile_request_path(FUNCTIONS_DIR, PROFILED_REQUESTS) if arguments.profile else ""
    print(f"request path: POST /executions through the execute handler, {REQUEST_THREADS} threads, a container each "
          f"(functions' log: {log})")  # fmt: skip
    print(f"  handler {handler:8.1f} exec/s   repository lifecycle {repository:8.1f} exec/s   "
          f"ratio {handler / repository:.2f}")  # fmt: skip
    print(profile)
    ratio = results[8][0] / results[8][1]
    print(f"goal: repository >= {PGBENCH_GOAL} x pgbench on 8 connections -> "
          f"{'met' if ratio >= PGBENCH_GOAL else 'NOT met'} ({ratio:.2f})")  # fmt: skip
    ratio = handler / repository
    print(f"goal: request path >= {REQUEST_PATH_GOAL} x the repository lifecycle on {REQUEST_THREADS} -> "
          f"{'met' if ratio >= REQUEST_PATH_GOAL else 'NOT met'} ({ratio:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
