"""Warnings raised by function code go to the functions' output (the demo's handler log), not to the terminal.

The stand-in function is what made `make demo` print Powertools' "No application metrics to publish" between its
lines: a handler decorated with @metrics.log_metrics that emits no metric. In a container of its own (a process,
billing.local.containers) its stderr is part of its log, as in Lambda, which the caller writes to stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from billing.local.stack import LocalResources, LocalStack
from billing.resource_names import FunctionName

POWERTOOLS_WARNING = "No application metrics to publish"

NO_METRICS_HANDLER = """
from aws_lambda_powertools import Metrics

metrics = Metrics(namespace="LocalTest", service="local-test")


@metrics.log_metrics
def lambda_handler(event, context):
    return {"statusCode": 200, "body": "ok"}
"""

# What scripts/demo.py does around the stack: the functions' stdout goes to a handler log, the demo prints to the
# terminal.
DEMO_LIKE = """
import contextlib
import sys
import warnings
from pathlib import Path

from billing.local.api_gateway import LocalFunctions
from billing.resource_names import FunctionName

functions_dir, handler_log = Path(sys.argv[1]), Path(sys.argv[2])
terminal = sys.stdout
with handler_log.open("w") as log, contextlib.redirect_stdout(log), LocalFunctions(functions_dir) as functions:
    result = functions.invoke(FunctionName.EXECUTE, {})
    print("demo line: HTTP", result["statusCode"], file=terminal, flush=True)
    warnings.warn("raised by the demo itself", UserWarning, stacklevel=1)
"""


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    handler = tmp_path / "functions" / "execute" / "handler.py"
    handler.parent.mkdir(parents=True)
    handler.write_text(textwrap.dedent(NO_METRICS_HANDLER))
    return tmp_path / "functions"


def _run_demo_like(functions_dir: Path, handler_log: Path) -> subprocess.CompletedProcess[str]:
    # A process of its own: pytest records warnings instead of printing them, a terminal does not.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    script = [sys.executable, "-W", "default", "-c", DEMO_LIKE, str(functions_dir), str(handler_log)]
    return subprocess.run(script, capture_output=True, text=True, env=environment, timeout=120, check=True)


def test_demo_terminal_shows_no_function_warning_and_the_handler_log_has_it(
    functions_dir: Path, tmp_path: Path
) -> None:
    handler_log = tmp_path / "demo-handlers.log"

    run = _run_demo_like(functions_dir, handler_log)

    assert run.stdout == "demo line: HTTP 200\n"
    assert POWERTOOLS_WARNING not in run.stderr
    assert POWERTOOLS_WARNING in handler_log.read_text()
    # Only function code is the function's output: the tool's own warnings still reach its stderr.
    assert "raised by the demo itself" in run.stderr


def test_stack_writes_function_warnings_to_the_functions_output(
    functions_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Everything but the database and moto: the HTTP binding and the functions.
    resources = LocalResources("bus", "arn:bus", "tap", "retry", "dlq", "settlement", "reports", "arn:jwt", ())
    monkeypatch.setattr(LocalStack, "_start_database", lambda self: None)
    monkeypatch.setattr(LocalStack, "_start_moto", lambda self: None)
    monkeypatch.setattr(LocalStack, "_start_stripe", lambda self: ("http://127.0.0.1:9", "localstripe"))
    monkeypatch.setattr(LocalStack, "_create_resources", lambda self, *stripe: resources)
    stack = LocalStack(port=0, functions_dir=functions_dir)
    stack.start()
    try:
        assert stack.invoke(FunctionName.EXECUTE, {})["statusCode"] == 200
        running = capsys.readouterr()
    finally:
        stack.stop()

    assert POWERTOOLS_WARNING in running.out  # the functions' output, where their logs go
    assert POWERTOOLS_WARNING not in running.err
