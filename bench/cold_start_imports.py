"""Cold start of every function, each measured in fresh interpreters against the bare stack in the same run.

1. Import of each handler (functions/*/handler.py, as Lambda imports it from /var/task), tracing off as locally and
   in the tests. Baseline: the bare-stack line, `import boto3, psycopg, pydantic` plus Powertools' Logger, Metrics,
   Tracer and APIGatewayRestResolver. Rounds are interleaved (baseline, then every handler, again), and each ratio is
   taken within its round, so load from other processes hits both sides alike. Goal: every handler <= 0.8x.
   One more row: the execute handler with tracing on, as in Lambda (the X-Ray SDK and its patches load at init).
2. The execute function's first request beside its import: import (with the settings validated at cold start),
   first database connection, first POST of a sandbox card execution, against an embedded PostgreSQL database and a
   moto server as the tests use; a second POST on the same container for contrast; peak memory.
3. What shipping bytecode saves: the execute handler imported from a copy of the shared layer (the billing package
   and its third-party packages, as the bundling lays them out) without .pyc files, which is what a read-only layer
   without them costs on every cold start, and with the .pyc files the bundling compiles
   (infra/bytecode.py, unchecked-hash), both with PYTHONDONTWRITEBYTECODE so nothing is cached between runs.

Figures are medians of wall-clock milliseconds (CPU milliseconds beside them: they move less when other processes
share the machine) and peak RSS.

    make bench
    BENCH_IMPORT_RUNS=11 .venv/bin/python bench/cold_start_imports.py
    .venv/bin/python bench/cold_start_imports.py --only imports    # or: first-request, bytecode
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Final
from uuid import uuid4

from packaging.requirements import Requirement

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # infra.bytecode, when run as a script

from billing.db.roles import LOGIN_USERS  # noqa: E402
from infra.bytecode import compile_tree  # noqa: E402

FUNCTIONS_DIR: Final = ROOT / "functions"
LAYER_SOURCE: Final = ROOT / "layers" / "shared"
RUNS: Final = int(os.environ.get("BENCH_IMPORT_RUNS", "7"))
FIRST_REQUEST_RUNS: Final = int(os.environ.get("BENCH_FIRST_REQUEST_RUNS", "5"))
GOAL: Final = 0.8
BARE_STACK: Final = (
    "import boto3, psycopg, pydantic; from aws_lambda_powertools import Logger, Metrics, Tracer; "
    "from aws_lambda_powertools.event_handler import APIGatewayRestResolver"
)
# The handler of this run's first-request and bytecode measurements.
EXECUTE: Final = "execute"
REGION: Final = "eu-west-1"
ARN: Final = f"arn:aws:secretsmanager:{REGION}:000000000000:secret"
# What the CDK app sets on the functions (placeholders: nothing is called at import), tracing off as locally.
FUNCTION_ENV: Final = {
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Billing",
    "POWERTOOLS_SERVICE_NAME": "billing-bench",
    "RETRY_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/000000000000/billing-retry",
    "DLQ_URL": f"https://sqs.{REGION}.amazonaws.com/000000000000/billing-dlq",
    "AUDIT_INTAKE_QUEUE_URL": f"https://sqs.{REGION}.amazonaws.com/000000000000/billing-audit-intake",
    "EVENT_BUS_NAME": "billing-events",
    "JWT_SECRET_ARN": f"{ARN}:jwt",
    "SETTLEMENT_BUCKET": "billing-settlement",
    "REPORTS_BUCKET": "billing-reports",
    "VAULT_KMS_KEY_ID": "alias/billing-vault",
    "FINGERPRINT_SECRET_ID": f"{ARN}:fingerprint",
    "AUDIT_CHECKPOINT_KEY_SECRET_ID": f"{ARN}:audit-key",
    "AUDIT_CHECKPOINTS_BUCKET": "billing-audit-checkpoints",
    "AUDIT_WATCHED_CREDENTIALS": json.dumps([f"{ARN}:jwt"]),
    "BILLING_MIGRATIONS_DIR": str(ROOT / "sql"),
    "DATABASE_LOGIN_SECRET_ARNS": json.dumps({role.value: f"{ARN}:{role.value}" for role in LOGIN_USERS}),
}
# Tracing as Lambda has it: in a function (LAMBDA_TASK_ROOT) with POWERTOOLS_TRACE_DISABLED unset.
LAMBDA_TRACING_ENV: Final = {
    "LAMBDA_TASK_ROOT": str(FUNCTIONS_DIR / EXECUTE),
    "AWS_XRAY_CONTEXT_MISSING": "IGNORE_ERROR",
}

# Runs `statement` in a fresh interpreter and prints its wall and CPU milliseconds and the peak RSS in KiB.
_TIMED = """
import resource, sys, time
sys.path.insert(0, {task_root!r})
wall, cpu = time.perf_counter(), time.process_time()
{statement}
print((time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@dataclass(frozen=True)
class Subject:
    """One thing to time: a statement in a fresh interpreter, with its environment and import path."""

    label: str
    statement: str
    env: Mapping[str, str] = field(default_factory=dict)
    task_root: str = str(ROOT)
    remove_env: tuple[str, ...] = ()


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    error: str | None = None


def environment(extra: Mapping[str, str] = {}, remove: Iterable[str] = ()) -> dict[str, str]:
    env = {**os.environ, **FUNCTION_ENV, **extra}
    for name in remove:
        env.pop(name, None)
    return env


def run_timed(subject: Subject) -> tuple[float, float, int]:
    code = _TIMED.format(task_root=subject.task_root, statement=subject.statement)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=environment(subject.env, subject.remove_env),
        capture_output=True,
        text=True,
        check=False,
        cwd=subject.task_root,
    )
    if result.returncode != 0:
        raise RuntimeError((result.stderr.strip().splitlines() or ["no output"])[-1])
    wall, cpu, rss = result.stdout.split()[-3:]
    return float(wall), float(cpu), int(rss)


def measure(baseline: Subject, subjects: Sequence[Subject], rounds: int) -> tuple[Samples, dict[str, Samples]]:
    """Interleaved rounds: the baseline, then each subject; every ratio is to the baseline of its own round."""
    base = Samples()
    found = {subject.label: Samples() for subject in subjects}
    for _ in range(rounds):
        wall, cpu, rss = run_timed(baseline)
        base.wall.append(wall)
        base.cpu.append(cpu)
        base.rss_kib.append(rss)
        for subject in subjects:
            samples = found[subject.label]
            if samples.error:
                continue
            try:
                s_wall, s_cpu, s_rss = run_timed(subject)
            except RuntimeError as failed:
                samples.error = str(failed)
                continue
            samples.wall.append(s_wall)
            samples.cpu.append(s_cpu)
            samples.rss_kib.append(s_rss)
            samples.ratios.append(s_wall / wall)
    return base, found


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def handlers() -> list[str]:
    """Every function with a handler, the execute function first."""
    names = sorted(path.parent.name for path in FUNCTIONS_DIR.glob("*/handler.py"))
    return sorted(names, key=lambda name: name != EXECUTE)


def handler_import(function: str, env: Mapping[str, str] = {}, label: str | None = None) -> Subject:
    return Subject(label or function, "import handler", env=env, task_root=str(FUNCTIONS_DIR / function))


def bench_imports() -> float:
    """Section 1; returns the baseline's median wall milliseconds (for section 2's ratio)."""
    functions = handlers()
    subjects = [handler_import(name) for name in functions]
    subjects.append(
        Subject(
            f"{EXECUTE} (tracing on)",
            "import handler",
            env=LAMBDA_TRACING_ENV,
            task_root=str(FUNCTIONS_DIR / EXECUTE),
            remove_env=("POWERTOOLS_TRACE_DISABLED",),
        )
    )
    baseline, found = measure(Subject("bare stack", BARE_STACK), subjects, RUNS)
    base_wall, base_cpu = median(baseline.wall), median(baseline.cpu)
    print(f"\n1. Handler import, fresh interpreters, median of {RUNS} interleaved rounds (goal <= {GOAL}x)")
    print(f"   baseline, the bare stack: {base_wall:.0f} ms wall, {base_cpu:.0f} ms CPU   [{BARE_STACK}]")
    print(f"   {'function':<26}{'import ms':>10}{'CPU ms':>8}{'ratio':>8}{'CPU ratio':>11}{'peak MiB':>10}")
    met = []
    for subject in subjects:
        samples = found[subject.label]
        if samples.error:
            print(f"   {subject.label:<26} import failed: {samples.error}")
            continue
        ratio, cpu_ratio = median(samples.ratios), median(samples.cpu) / base_cpu
        goal = subject.label in functions
        mark = ("ok" if ratio <= GOAL else "OVER") if goal else "(what Lambda pays: informational)"
        if goal:
            met.append(ratio <= GOAL)
        print(
            f"   {subject.label:<26}{median(samples.wall):>10.0f}{median(samples.cpu):>8.0f}{ratio:>7.2f}x"
            f"{cpu_ratio:>10.2f}x{median(samples.rss_kib) / 1024:>10.0f}   {mark}"
        )
    print(f"   goal met by {sum(met)} of {len(met)} handlers")
    return base_wall


# --- 2. the execute function's first request ---------------------------------------------------------------------

_FIRST_REQUEST = """
import json, resource, sys, time
sys.path.insert(0, {task_root!r})
marks = [time.perf_counter()]
cpu = [time.process_time()]
def mark():
    marks.append(time.perf_counter())
    cpu.append(time.process_time())
import handler
mark()
handler.runtime.connections.get()
mark()
event = json.loads({event!r})
class Context:
    function_name = "billing-execute"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:000000000000:function:billing-execute"
    aws_request_id = "bench-first-request"
    def get_remaining_time_in_millis(self):
        return 25_000
first = handler.lambda_handler(event, Context())
mark()
event["headers"]["Idempotency-Key"] = "bench-second"
event["multiValueHeaders"]["Idempotency-Key"] = ["bench-second"]
second = handler.lambda_handler(event, Context())
mark()
for response in (first, second):
    assert response["statusCode"] == 201, response
    assert json.loads(response["body"])["status"] == "completed", response["body"]
wall = [(b - a) * 1000 for a, b in zip(marks, marks[1:])]
cpu_ms = [(b - a) * 1000 for a, b in zip(cpu, cpu[1:])]
print(json.dumps({{"wall": wall, "cpu": cpu_ms, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""
PHASES: Final = ("import (settings validated)", "first connection", "first POST /executions", "second POST (warm)")
CARD_REQUEST: Final = {
    "entity_contract_id": "contract-bench",
    "plan_contract_id": "plan-monthly",
    "amount": 1999,
    "currency": "EUR",
    "payment_rail": "card",
    "payment_instrument_id": "tok_visa",
}


def card_post_event(tenant: str) -> dict[str, object]:
    """POST /executions as API Gateway sends it after the authorizer accepted the caller (tests/lambda_harness)."""
    path = "/api/v1/billing/executions"
    headers = {"Content-Type": "application/json", "Idempotency-Key": "bench-first"}
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": f"req-{uuid4()}",
            "stage": "bench",
            "httpMethod": "POST",
            "path": path,
            "resourcePath": path,
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"tenant_id": tenant, "subject": "bench", "principalId": "bench"},
        },
        "body": json.dumps(CARD_REQUEST),
        "isBase64Encoded": False,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bench_first_request(base_wall: float | None) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    from billing.db.roles import DatabaseRole, login_url
    from billing.local.embedded_postgres import database_url, fresh_database

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request lines
    database = login_url(fresh_database(database_url(), "billing_bench_cold_start"), DatabaseRole.APP)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint}
        sqs = boto3.client(
            "sqs",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        )
        queue_url = sqs.create_queue(QueueName="billing-retry")["QueueUrl"]
        env = {**aws, "DATABASE_URL": database, "RETRY_QUEUE_URL": queue_url}
        runs = []
        for _ in range(FIRST_REQUEST_RUNS):
            code = _FIRST_REQUEST.format(
                task_root=str(FUNCTIONS_DIR / EXECUTE), event=json.dumps(card_post_event(str(uuid4())))
            )
            result = subprocess.run(
                [sys.executable, "-c", code], env=environment(env), capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise RuntimeError(f"first request failed:\n{result.stderr[-2000:]}")
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    finally:
        moto.stop()
    print(f"\n2. The {EXECUTE} function's first request, fresh interpreters, median of {FIRST_REQUEST_RUNS}")
    print("   (embedded PostgreSQL as billing_app, moto server for SQS; sandbox card, full lifecycle)")
    print(f"   {'phase':<32}{'wall ms':>9}{'CPU ms':>8}")
    for index, phase in enumerate(PHASES):
        wall, cpu = median([r["wall"][index] for r in runs]), median([r["cpu"][index] for r in runs])
        print(f"   {phase:<32}{wall:>9.0f}{cpu:>8.0f}")
    cold = [sum(r["wall"][:3]) for r in runs]
    cold_cpu = [sum(r["cpu"][:3]) for r in runs]
    print(f"   {'cold start (import to 1st answer)':<32}{median(cold):>9.0f}{median(cold_cpu):>8.0f}", end="")
    print(f"   = {median(cold) / base_wall:.2f}x the bare stack's import" if base_wall else "")
    print(f"   peak memory after two requests: {median([r['rss_kib'] for r in runs]) / 1024:.0f} MiB")


# --- 3. bytecode in the layer ----------------------------------------------------------------------------------------

# What the Lambda runtime provides itself (infra/assets.py PROVIDED_BY_RUNTIME): not copied into the layer.
PROVIDED_BY_RUNTIME: Final = frozenset({"boto3", "botocore", "s3transfer"})


def layer_distributions(requirements: Path) -> list[metadata.Distribution]:
    """The installed distributions the layer's requirements resolve to, with their dependencies and extras."""
    found: dict[str, metadata.Distribution] = {}
    pending = [
        Requirement(line.split("#")[0].strip())
        for line in requirements.read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    while pending:
        requirement = pending.pop()
        key = requirement.name.lower().replace("_", "-")
        if key in PROVIDED_BY_RUNTIME:
            continue
        extras = set(requirement.extras)
        if key not in found:
            found[key] = metadata.distribution(requirement.name)
        for text in found[key].requires or []:
            dependency = Requirement(text)
            marker = dependency.marker
            wanted = marker is None or any(marker.evaluate({"extra": extra}) for extra in extras | {""})
            if wanted and dependency.name.lower().replace("_", "-") not in found:
                pending.append(dependency)
    return list(found.values())


def build_bench_layer(target: Path) -> Path:
    """A copy of the shared layer for this machine's Python: the billing package (minus billing.local, as the bundling
    leaves it out) and every file of the third-party distributions, without any .pyc."""
    python = target / "python"
    python.mkdir(parents=True)
    for distribution in layer_distributions(LAYER_SOURCE / "requirements.txt"):
        site = Path(str(distribution.locate_file("")))
        for file in distribution.files or []:
            source = (site / file).resolve()
            if not source.is_file() or site.resolve() not in source.parents or source.suffix == ".pyc":
                continue
            destination = python / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "local")
    shutil.copytree(LAYER_SOURCE / "python" / "billing", python / "billing", ignore=ignore)
    return python


def bench_bytecode() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-layer-") as scratch:
        root = Path(scratch)
        without = build_bench_layer(root / "without-pyc")
        with_pyc = build_bench_layer(root / "with-pyc")
        compile_tree(with_pyc, Path(sys.executable), runtime_path="/opt/python")
        task = root / "task"
        task.mkdir()
        shutil.copy2(FUNCTIONS_DIR / EXECUTE / "handler.py", task / "handler.py")  # source only, in both
        # The handler and the layer must come from the copy, never from the venv's compiled packages.
        check = (
            "import billing, pydantic, aws_lambda_powertools, psycopg; "
            "assert all(m.__file__.startswith(sys.path[1]) for m in (billing, pydantic, aws_lambda_powertools, "
            "psycopg)), [m.__file__ for m in (billing, pydantic)]"
        )

        def subject(label: str, layer: Path) -> Subject:
            return Subject(
                label,
                f"sys.path.insert(1, {str(layer)!r})\nimport handler\n{check}",
                env={"PYTHONDONTWRITEBYTECODE": "1"},
                task_root=str(task),
            )

        baseline, found = measure(subject("without .pyc", without), [subject("with .pyc", with_pyc)], RUNS)
        compiled = found["with .pyc"]
        if compiled.error:
            raise RuntimeError(f"import with .pyc failed: {compiled.error}")
    slow, fast = median(baseline.wall), median(compiled.wall)
    print(f"\n3. {EXECUTE} handler import from a copy of the shared layer, PYTHONDONTWRITEBYTECODE, median of {RUNS}")
    print(f"   {'layer':<26}{'import ms':>10}{'CPU ms':>8}")
    print(f"   {'without .pyc (baseline)':<26}{slow:>10.0f}{median(baseline.cpu):>8.0f}")
    print(f"   {'with unchecked-hash .pyc':<26}{fast:>10.0f}{median(compiled.cpu):>8.0f}")
    print(f"   saved {slow - fast:.0f} ms a cold start: {median(compiled.ratios):.2f}x the import without .pyc")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=("imports", "first-request", "bytecode"))
    only = parser.parse_args(argv).only
    print(f"cold start, Python {sys.version.split()[0]} on {os.cpu_count()} cores")
    base_wall = bench_imports() if only in (None, "imports") else None
    if only in (None, "first-request"):
        bench_first_request(base_wall)
    if only in (None, "bytecode"):
        bench_bytecode()


if __name__ == "__main__":
    main()
