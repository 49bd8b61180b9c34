"""Load a function's handler module the way Lambda does: one module instance per container (a process of its own
in the local stack, billing.local.containers; beside the test in tests that call handlers directly)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from uuid import uuid4

from billing.paths import REPO_ROOT


def load_module(path: Path, name: str) -> ModuleType:
    """Execute the file as a new module called `name` (a fresh 'container' with its own globals)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: dataclasses and pydantic resolve annotations through sys.modules.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_handler(function: str, instance: str = "0") -> ModuleType:
    """A fresh module instance of functions/<function>/handler.py."""
    path = REPO_ROOT / "functions" / function / "handler.py"
    return load_module(path, f"lambda_{function}_{instance}_{uuid4().hex[:6]}")
