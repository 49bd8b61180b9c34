"""Load a function's handler module the way Lambda does: one module instance per container; keep its warnings in
its own output, as Lambda keeps them in the function's log."""

from __future__ import annotations

import importlib.util
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TextIO
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


# Which threads are running function code right now (several do at once: the HTTP server serves concurrently).
_running = threading.local()


@contextmanager
def running_function() -> Iterator[None]:
    """Mark the current thread as running a function's code (its import at cold start, or an invocation)."""
    depth: int = getattr(_running, "depth", 0)
    _running.depth = depth + 1
    try:
        yield
    finally:
        _running.depth = depth


def in_function() -> bool:
    """Whether the current thread is running a function's code."""
    return bool(getattr(_running, "depth", 0))


@contextmanager
def function_warnings_to_function_output() -> Iterator[None]:
    """While active, warnings raised by function code are written to the function's output, stdout, where its logs
    and metrics go; other warnings are shown as before.

    In Lambda a function's warnings land in its own log stream, not in front of whoever called the API; locally the
    functions share the process with the tool that started them (`make demo` prints to people). Warning filters
    still apply first: an ignored warning stays ignored, and one turned into an error still raises.
    """
    previous = warnings.showwarning

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if in_function():
            sys.stdout.write(warnings.formatwarning(message, category, filename, lineno, line))
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        if warnings.showwarning is show:  # unless someone replaced it since; then theirs stays
            warnings.showwarning = previous
