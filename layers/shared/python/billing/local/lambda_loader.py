"""Load a function's handler module the way Lambda does: one module instance per container."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from uuid import uuid4

from billing.paths import REPO_ROOT


def load_handler(function: str, instance: str = "0") -> ModuleType:
    """A fresh module instance of functions/<function>/handler.py: a new 'container' with its own globals."""
    name = f"lambda_{function}_{instance}_{uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "functions" / function / "handler.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no handler for function {function!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
