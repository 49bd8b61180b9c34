"""Regenerate docs/openapi.json from the execute function's routes and models (a test keeps it in sync)."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "openapi.json"


def generate() -> str:
    os.environ.setdefault("RETRY_QUEUE_URL", "https://sqs.invalid/queue")  # read at import, never used here
    from billing.local.lambda_loader import load_handler

    document = json.loads(load_handler("execute").openapi_json())
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(generate())
    print(f"wrote {TARGET.relative_to(REPO)}")
