"""Cold-start import time of each handler module, measured in fresh interpreters (what Lambda pays on init).

Each handler is imported in a new `python -X importtime` process; the baseline is a bare interpreter start in
the same run, so the number reported is what the handler adds.

    make bench
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from billing.paths import REPO_ROOT

FUNCTIONS = ["execute", "webhook", "outbox_relay", "reconcile", "retry_dlq", "settlement_report", "authorizer"]
RUNS = int(os.environ.get("BENCH_IMPORT_RUNS", "5"))
ENV = {
    **os.environ,
    "RETRY_QUEUE_URL": "https://sqs.invalid/queue",
    "EVENT_BUS_NAME": "billing-events",
    "DLQ_URL": "https://sqs.invalid/dlq",
    "JWT_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:000000000000:secret:x",
    "SETTLEMENT_BUCKET": "b",
    "REPORTS_BUCKET": "r",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


def median_ms(code: str) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=ENV, check=True, capture_output=True)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    baseline = median_ms("pass")
    print(f"cold-start import per handler (median of {RUNS} fresh interpreters, minus bare start {baseline:.0f} ms)")
    for function in FUNCTIONS:
        path = REPO_ROOT / "functions" / function / "handler.py"
        if not path.exists():
            print(f"  {function:<18} (no handler yet)")
            continue
        code = f"from billing.local.lambda_loader import load_handler; load_handler({function!r})"
        try:
            total = median_ms(code)
        except subprocess.CalledProcessError as failed:
            print(f"  {function:<18} import failed: {failed.stderr.decode().strip().splitlines()[-1]}")
            continue
        print(f"  {function:<18} {total - baseline:7.0f} ms   ({total / baseline:.1f}x a bare interpreter)")


if __name__ == "__main__":
    main()
