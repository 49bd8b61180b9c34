"""Where the third-party test material lives: `shared/` beside the checkout (read-only, never copied in).

Looked for, in order: BILLING_SHARED_DIR, the folder beside this checkout, and this workplace's /work/shared, so a
clone anywhere on the machine finds it. Missing everywhere is a test failure, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_CANDIDATES = [
    *([Path(os.environ["BILLING_SHARED_DIR"])] if os.environ.get("BILLING_SHARED_DIR") else []),
    _REPO.parent / "shared",
    Path("/work/shared"),
]


def shared_dir() -> Path:
    """The shared material's folder; the first candidate holding fixtures/, else the folder beside the checkout."""
    return next((path for path in _CANDIDATES if (path / "fixtures").is_dir()), _REPO.parent / "shared")
