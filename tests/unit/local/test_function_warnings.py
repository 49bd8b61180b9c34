"""Warnings raised by function code go to the functions' output (the demo's handler log), not to the terminal.

The stand-in function is what made `make demo` print Powertools' "No application metrics to publish" between its
lines: a handler decorated with @metrics.log_metrics that emits no metric.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from billing.local.api_gateway import LocalFunctions
from billing.local.lambda_loader import function_warnings_to_function_output, in_function, running_function
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
# terminal. The last argument says whether function warnings are routed (as the local stack does) or not.
DEMO_LIKE = """
import contextlib
import sys
import warnings
from pathlib import Path

from billing.local.api_gateway import LocalFunctions
from billing.local.lambda_loader import function_warnings_to_function_output
from billing.resource_names import FunctionName

functions_dir, handler_log, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
terminal = sys.stdout
with contextlib.ExitStack() as scope:
    if mode == "routed":
        scope.enter_context(function_warnings_to_function_output())
    with handler_log.open("w") as log, contextlib.redirect_stdout(log):
        result = LocalFunctions(functions_dir).invoke(FunctionName.EXECUTE, {})
        print("demo line: HTTP", result["statusCode"], file=terminal, flush=True)
        warnings.warn("raised by the demo itself", UserWarning, stacklevel=1)
"""


@pytest.fixture
def functions_dir(tmp_path: Path) -> Path:
    handler = tmp_path / "functions" / "execute" / "handler.py"
    handler.parent.mkdir(parents=True)
    handler.write_text(textwrap.dedent(NO_METRICS_HANDLER))
    return tmp_path / "functions"


def _run_demo_like(functions_dir: Path, handler_log: Path, mode: str) -> subprocess.CompletedProcess[str]:
    # A process of its own: pytest records warnings instead of printing them, a terminal does not.
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"}
    script = [sys.executable, "-W", "default", "-c", DEMO_LIKE, str(functions_dir), str(handler_log), mode]
    return subprocess.run(script, capture_output=True, text=True, env=environment, timeout=120, check=True)


def test_demo_terminal_shows_no_function_warning_and_the_handler_log_has_it(
    functions_dir: Path, tmp_path: Path
) -> None:
    handler_log = tmp_path / "demo-handlers.log"

    run = _run_demo_like(functions_dir, handler_log, "routed")

    assert run.stdout == "demo line: HTTP 200\n"
    assert POWERTOOLS_WARNING not in run.stderr
    assert POWERTOOLS_WARNING in handler_log.read_text()
    # Only function code is routed: the tool's own warnings still reach its stderr.
    assert "raised by the demo itself" in run.stderr


def test_without_routing_the_function_warning_reaches_the_terminal(functions_dir: Path, tmp_path: Path) -> None:
    # The behaviour `make demo` had: the warning interleaved with the walk-through on the terminal.
    run = _run_demo_like(functions_dir, tmp_path / "demo-handlers.log", "unrouted")

    assert POWERTOOLS_WARNING in run.stderr


@pytest.mark.filterwarnings(f"always:{POWERTOOLS_WARNING}")
def test_stack_routes_function_warnings_while_it_runs_and_stops_when_it_stops(
    functions_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Everything but the database and moto: the warning routing, the HTTP binding and the functions.
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
    with pytest.warns(UserWarning, match=POWERTOOLS_WARNING):  # after stop: shown as before, routed nowhere
        LocalFunctions(functions_dir).invoke(FunctionName.EXECUTE, {})
    assert POWERTOOLS_WARNING not in capsys.readouterr().out


def test_running_function_marks_only_the_current_thread_and_nests() -> None:
    assert not in_function()
    with running_function():
        with running_function():
            assert in_function()
        assert in_function()
    assert not in_function()


@pytest.mark.filterwarnings("error:stand-in")
def test_a_warning_turned_into_an_error_still_raises_in_a_function() -> None:
    with function_warnings_to_function_output(), running_function(), pytest.raises(UserWarning, match="stand-in"):
        warnings.warn("stand-in", UserWarning, stacklevel=1)
