"""Bytecode for the Lambda runtime's Python, compiled at build time so no cold start compiles a module.

Lambda unpacks function code and layers read-only (/var/task, /opt): an interpreter that finds no usable .pyc beside a
module compiles it from source on every cold start and cannot keep the result. So the bundling ships .pyc files, and
they must be:
- for the runtime's exact Python version (the magic number in each .pyc; any other version ignores them), hence
  compiled by an interpreter of that version, found by `find_interpreter`;
- hash-based, not timestamp-based: the asset zip does not keep the build's modification times, so a timestamped .pyc
  would look stale on Lambda and be ignored. Unchecked: the code of a published layer version never changes, so
  there is no source to compare against, and the import skips reading and hashing the source too.

Stdlib only: the bench imports this module without loading the CDK.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

# The runtime the functions and the layer are deployed on (infra/stacks/service.py RUNTIME; a test keeps them equal).
LAMBDA_PYTHON: Final = (3, 12)
LAMBDA_PYTHON_VERSION: Final = f"{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}"
# Path of an interpreter of LAMBDA_PYTHON, for machines where it is not on PATH as python3.12.
ENV_LAMBDA_PYTHON: Final = "BILLING_LAMBDA_PYTHON"
INVALIDATION_MODE: Final = "unchecked-hash"


def version_tag(version: tuple[int, int] = LAMBDA_PYTHON) -> str:
    """The tag in the .pyc file names that version reads: cpython-312."""
    return f"cpython-{version[0]}{version[1]}"


def find_interpreter(version: tuple[int, int] = LAMBDA_PYTHON) -> Path | None:
    """An interpreter of exactly `version` on this machine, or None."""
    for candidate in _candidates(version):
        if _runs_as(candidate, version):
            return candidate
    return None


def _candidates(version: tuple[int, int]) -> Iterator[Path]:
    name = f"python{version[0]}.{version[1]}"
    if explicit := os.environ.get(ENV_LAMBDA_PYTHON):
        yield Path(explicit)
    if sys.version_info[:2] == version:
        yield Path(sys.executable)
    if on_path := shutil.which(name):
        yield Path(on_path)  # may be a pyenv shim that refuses to run a version not selected: checked by running
    # pyenv keeps every installed version here, selected or not.
    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    yield from sorted(pyenv_root.glob(f"versions/{version[0]}.{version[1]}.*/bin/{name}"), reverse=True)


def _runs_as(interpreter: Path, version: tuple[int, int]) -> bool:
    try:
        result = subprocess.run(  # noqa: S603 - a path to an interpreter, run with a fixed script
            [str(interpreter), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == f"{version[0]}.{version[1]}"


def compile_tree(root: Path, interpreter: Path, *, runtime_path: str) -> None:
    """Write a .pyc beside every module under root, for `interpreter`'s version, naming the files as they will be
    found at runtime_path (tracebacks then show /opt/python/..., not the build folder)."""
    command = [
        str(interpreter),
        "-m",
        "compileall",
        "-q",
        "-j",
        "0",
        "--invalidation-mode",
        INVALIDATION_MODE,
        "-s",
        str(root),
        "-p",
        runtime_path,
        str(root),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"compiling {root} failed ({' '.join(command)}):\n{result.stdout}{result.stderr}")
