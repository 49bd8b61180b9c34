"""Where the repository's non-Python assets live, overridable for packaged deployments."""

from __future__ import annotations

import os
from pathlib import Path

# layers/shared/python/billing/paths.py -> repository root is five levels up.
REPO_ROOT = Path(__file__).resolve().parents[4]


def migrations_dir() -> Path:
    """sql/ in a checkout; BILLING_MIGRATIONS_DIR where the files are bundled elsewhere (the Lambda asset)."""
    return Path(os.environ.get("BILLING_MIGRATIONS_DIR", REPO_ROOT / "sql"))


def local_state_dir() -> Path:
    """Git-ignored folder for local runtime state (embedded database, moto state)."""
    return Path(os.environ.get("BILLING_LOCAL_DIR", REPO_ROOT / ".local"))
