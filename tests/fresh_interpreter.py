"""Run a function's handler in a fresh interpreter, as a new Lambda container would, and report what happened.

What an import loads, and whether Powertools' Tracer talks to X-Ray, are decided once per process, so tests of cold
starts and of tracing cannot share the test process. The X-Ray SDK's emitter is replaced by one that keeps the
segments in memory; metrics are Powertools' EMF lines on stdout, as CloudWatch reads them from the function's log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

from billing.paths import REPO_ROOT
from billing.resource_names import METRICS_NAMESPACE, FunctionName, service_name

FUNCTIONS = REPO_ROOT / "functions"
HANDLERS = sorted(path.parent.name for path in FUNCTIONS.glob("*/handler.py"))
TRACED = [name for name in HANDLERS if "tracer.capture_lambda_handler" in (FUNCTIONS / name / "handler.py").read_text()]
SETTINGS = {
    "AWS_DEFAULT_REGION": "eu-west-1",
    "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
    "RETRY_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/000000000000/billing-retry",
    "DLQ_URL": "https://sqs.eu-west-1.amazonaws.com/000000000000/billing-dlq",
    "AUDIT_INTAKE_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/000000000000/billing-audit-intake",
    "EVENT_BUS_NAME": "billing-events",
    "JWT_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:000000000000:secret:jwt",
    "SETTLEMENT_BUCKET": "billing-settlement",
    "REPORTS_BUCKET": "billing-reports",
    "VAULT_KMS_KEY_ID": "alias/billing-vault",
    "FINGERPRINT_SECRET_ID": "fingerprint",
    "AUDIT_CHECKPOINT_KEY_SECRET_ID": "audit-key",
    "AUDIT_CHECKPOINTS_BUCKET": "billing-audit-checkpoints",
    "BILLING_MIGRATIONS_DIR": str(REPO_ROOT / "sql"),
    "DATABASE_LOGIN_SECRET_ARNS": json.dumps(
        {role: f"arn:{role}" for role in ("billing_app", "billing_worker", "billing_vault", "billing_auditor")}
        | {"billing_finance": "arn:billing_finance"}
    ),
}
# What Lambda sets, as far as the X-Ray SDK and Powertools look: in a function, a sampled trace, no daemon needed.
IN_LAMBDA = {
    "AWS_LAMBDA_FUNCTION_NAME": "billing-test",
    "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
}
NO_DATABASE = ("DATABASE_URL", "DATABASE_SECRET_ARN", "DATABASE_PROXY_ENDPOINT")

# Loads the handler as Lambda does (from its own folder), keeps what the X-Ray SDK emits, invokes it once with
# EVENT, and prints one JSON line: the modules the import loaded, the tracer, the segments.
SCRIPT = """
import json, sys
sys.path.insert(0, FUNCTION_DIR)
import handler
loaded = sorted(sys.modules)
segments = []
if "aws_xray_sdk.core" in sys.modules:
    from aws_xray_sdk.core import patcher, xray_recorder
    from aws_xray_sdk.core.emitters.udp_emitter import UDPEmitter

    class InMemory(UDPEmitter):
        def send_entity(self, entity):
            segments.append(json.loads(entity.serialize()))

    xray_recorder.configure(emitter=InMemory())
    patched = sorted(patcher._PATCHED_MODULES)
else:
    patched = []

class Context:
    function_name = "billing-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:000000000000:function:billing-test"
    aws_request_id = "req-cold-start"
    def get_remaining_time_in_millis(self):
        return 30_000

BEFORE_INVOKE
error = None
try:
    handler.lambda_handler(EVENT, Context())
except Exception as failed:
    error = type(failed).__name__
tracer = getattr(handler, "tracer", None)
print(json.dumps({
    "loaded": loaded,
    "tracer_disabled": None if tracer is None else tracer.disabled,
    "provider": None if tracer is None else type(tracer.provider).__module__,
    "patched": patched,
    "segments": segments,
    "error": error,
}))
"""


def run_handler(
    function: str,
    *,
    env: Mapping[str, str] | None = None,
    event: Mapping[str, Any] | None = None,
    before_invoke: str = "",
    in_lambda: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """The script's report (modules loaded by the import, the tracer, the X-Ray segments, the invocation's error if
    any), and the other stdout lines (the logs and the EMF metrics)."""
    folder = FUNCTIONS / function
    # No database unless `env` names one: a cold start must not need it.
    environment = {name: value for name, value in os.environ.items() if name not in NO_DATABASE}
    environment.update(SETTINGS, POWERTOOLS_SERVICE_NAME=service_name(FunctionName(function)), **(env or {}))
    if in_lambda:
        environment.update(IN_LAMBDA, LAMBDA_TASK_ROOT=str(folder))
        environment.pop("POWERTOOLS_TRACE_DISABLED", None)
    else:
        environment["POWERTOOLS_TRACE_DISABLED"] = "true"
    code = (
        SCRIPT.replace("FUNCTION_DIR", repr(str(folder)))
        .replace("EVENT", repr(dict(event or {})))
        .replace("BEFORE_INVOKE", textwrap.dedent(before_invoke))
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, cwd=folder, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *output, report = result.stdout.strip().splitlines()
    return json.loads(report), output


def emf_metrics(lines: list[str]) -> dict[str, dict[str, Any]]:
    """Metric name -> the EMF document that carried it."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines:
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for metric in directive["Metrics"]:
                found[metric["Name"]] = document
    return found


def lambda_handler_subsegment(segments: list[dict[str, Any]]) -> dict[str, Any]:
    (subsegment,) = [s for s in segments if s.get("name") == "## lambda_handler"]
    return subsegment
