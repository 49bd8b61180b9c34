"""Executions per second for the full lifecycle through the repository, against pgbench running the same SQL.

Each lifecycle is create -> pending -> processing -> completed: four transactions, each with its state change,
lifecycle event, outbox row and workflow row. The pgbench script is captured from the repository itself (the
exact statements it sends, pipelined the same way), so the ratio measures the cost of our Python path, not a
different workload.

    make bench                     # embedded PostgreSQL
    DATABASE_URL=... make bench    # any other server
    BENCH_SECONDS=10 make bench    # longer runs
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
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
from billing.local.embedded_postgres import database_url, fresh_database

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
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
    # Both sides run as the execute function's role, so row-level security and every guard are in the figure.
    return login_url(fresh_database(server, "billing_bench"), DatabaseRole.APP)


def main() -> None:
    url = bench_database(database_url())
    script = capture_pgbench_script(url)
    print(f"full lifecycle (4 transactions, each state + event + outbox + workflow row), {SECONDS:.0f} s per run")
    results = {}
    for clients in (1, 8):
        ours = run_repository(url, clients)
        baseline = run_pgbench(url, script, clients)
        results[clients] = (ours, baseline)
        print(f"  {clients} connection(s): repository {ours:8.1f} exec/s   pgbench {baseline:8.1f} exec/s   "
              f"ratio {ours / baseline:.2f}")  # fmt: skip
    ratio = results[8][0] / results[8][1]
    print(f"goal: repository >= 0.5 x pgbench on 8 connections -> {'met' if ratio >= 0.5 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
