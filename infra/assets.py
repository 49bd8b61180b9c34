"""Builds the Lambda asset folders without Docker: the shared layer and every function's code.

The layer's third-party packages are installed by pip for the Lambda platform (manylinux arm64, CPython 3.12) with
binary wheels only, so psycopg-binary and pydantic-core match the runtime whatever machine runs the synth. Every
module, the layer's and the functions', ships with its bytecode for the runtime's Python (infra/bytecode.py): a
read-only layer without it is compiled from source on every cold start.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from infra.bytecode import ENV_LAMBDA_PYTHON, LAMBDA_PYTHON, LAMBDA_PYTHON_VERSION, compile_tree, find_interpreter
from infra.config import REPO_ROOT

SHARED_LAYER_SOURCE = REPO_ROOT / "layers" / "shared"
SHARED_PACKAGE = SHARED_LAYER_SOURCE / "python" / "billing"
LAYER_REQUIREMENTS = SHARED_LAYER_SOURCE / "requirements.txt"
FUNCTIONS_DIR = REPO_ROOT / "functions"
MIGRATIONS_SOURCE = REPO_ROOT / "sql"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "lambda"
# The deploy-time function that writes the first key material into the vault's and the audit trail's key secrets.
SEED_KEY_MATERIAL_SOURCE = REPO_ROOT / "infra" / "seed_key_material"

# Where sql/ lands inside the migrations function (Lambda unpacks code to /var/task).
MIGRATIONS_DIR_IN_FUNCTION = "sql"
LAMBDA_TASK_ROOT = "/var/task"
# Where Lambda mounts a layer's python/ folder.
LAYER_PYTHON_ROOT = "/opt/python"

# The Lambda Python 3.12 runtime is Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there too, and
# newer releases (psycopg-binary 3.3) publish only those.
PIP_TARGET_ARGS = (
    "--platform",
    "manylinux2014_aarch64",
    "--platform",
    "manylinux_2_28_aarch64",
    "--implementation",
    "cp",
    "--python-version",
    LAMBDA_PYTHON_VERSION,
    "--only-binary=:all:",
)
# The Lambda Python runtime ships these; bundling a second copy only bloats the layer (aws-xray-sdk pulls botocore).
PROVIDED_BY_RUNTIME = ("boto3", "botocore", "s3transfer")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


@dataclass(frozen=True, slots=True)
class LambdaAssets:
    """Folders ready for `Code.from_asset`."""

    shared_layer: Path
    migrate_function: Path
    # True when the layer holds only the billing package (fast synth in tests): functions could not import pydantic.
    layer_code_only: bool
    # Each function's code folder (handler.py and its bytecode), by function directory name; migrate is above.
    functions: Mapping[str, Path] = field(default_factory=dict)
    # False when no interpreter of the runtime's Python was found for a code-only build: no .pyc anywhere.
    bytecode: bool = True

    def function_code(self, name: str) -> Path:
        """The code folder of function `name` (a functions/ directory name)."""
        return self.migrate_function if name == "migrate" else self.functions[name]


def build_assets(build_dir: Path = DEFAULT_BUILD_DIR, *, skip_layer_dependencies: bool = False) -> LambdaAssets:
    """Stage every built asset under build_dir; pip runs only when requirements.txt changed since the last build."""
    build_dir.mkdir(parents=True, exist_ok=True)
    interpreter = runtime_interpreter(required=not skip_layer_dependencies)
    return LambdaAssets(
        shared_layer=build_shared_layer(build_dir, skip_dependencies=skip_layer_dependencies, interpreter=interpreter),
        migrate_function=build_migrate_function(build_dir, interpreter=interpreter),
        layer_code_only=skip_layer_dependencies,
        functions=MappingProxyType(
            {
                path.parent.name: build_function(build_dir, path.parent.name, interpreter=interpreter)
                for path in sorted(FUNCTIONS_DIR.glob("*/handler.py"))
                if path.parent.name != "migrate"
            }
        ),
        bytecode=interpreter is not None,
    )


def runtime_interpreter(*, required: bool) -> Path | None:
    """An interpreter of the Lambda runtime's Python, to compile the bytecode with.

    A deployable build without one fails: its layer would compile from source on every cold start. A code-only
    build (never deployed) goes on without bytecode, with a warning.
    """
    interpreter = find_interpreter(LAMBDA_PYTHON)
    if interpreter is None:
        version = LAMBDA_PYTHON_VERSION
        message = (
            f"no Python {version} found to compile the Lambda bytecode with: install it (python{version} on PATH, "
            f"or pyenv) or set {ENV_LAMBDA_PYTHON} to its path"
        )
        if required:
            raise RuntimeError(message)
        warnings.warn(f"{message}; this code-only build ships no .pyc files", stacklevel=2)
    return interpreter


def build_shared_layer(build_dir: Path, *, skip_dependencies: bool, interpreter: Path | None = None) -> Path:
    """layer/python/ holding the billing package plus, unless skipped, its third-party dependencies, each module
    with its bytecode when `interpreter` (of the runtime's Python) is given."""
    # Separate folders: a code-only build (fast synth in tests) never shadows a complete one.
    layer_dir = build_dir / ("shared-layer-code-only" if skip_dependencies else "shared-layer")
    python_dir = layer_dir / "python"
    if not skip_dependencies:
        _install_dependencies(python_dir, stamp=build_dir / "shared-layer.deps-sha256", interpreter=interpreter)
    shutil.rmtree(python_dir / "billing", ignore_errors=True)
    shutil.copytree(SHARED_PACKAGE, python_dir / "billing", ignore=_IGNORE)
    # billing.local is the developer's runtime (embedded PostgreSQL, API Gateway emulation): never used in
    # Lambda, and it imports packages the layer does not carry.
    shutil.rmtree(python_dir / "billing" / "local")
    if interpreter is not None:
        compile_tree(python_dir / "billing", interpreter, runtime_path=f"{LAYER_PYTHON_ROOT}/billing")
    return layer_dir


def _install_dependencies(python_dir: Path, *, stamp: Path, interpreter: Path | None) -> None:
    # The stamp names the bytecode too: dependencies installed without it are installed again once it can be built.
    bytecode = f"bytecode {LAMBDA_PYTHON_VERSION}" if interpreter is not None else "no bytecode"
    fingerprint = hashlib.sha256(
        LAYER_REQUIREMENTS.read_bytes() + " ".join(PIP_TARGET_ARGS).encode() + bytecode.encode()
    ).hexdigest()
    if python_dir.is_dir() and stamp.is_file() and stamp.read_text() == fingerprint:
        return
    shutil.rmtree(python_dir, ignore_errors=True)
    python_dir.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",  # the build machine's Python may not be the runtime's: compiled below, for the runtime
        *PIP_TARGET_ARGS,
        "--target",
        str(python_dir),
        "--requirement",
        str(LAYER_REQUIREMENTS),
    ]
    result = subprocess.run(command, check=False, capture_output=True, text=True)  # noqa: S603
    if result.returncode != 0:
        raise RuntimeError(f"building the shared layer failed ({' '.join(command)}):\n{result.stderr}")
    for path in python_dir.iterdir():
        if path.name.split("-")[0] in PROVIDED_BY_RUNTIME:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.rmtree(python_dir / "bin", ignore_errors=True)  # console scripts are useless in a layer
    if interpreter is not None:
        compile_tree(python_dir, interpreter, runtime_path=LAYER_PYTHON_ROOT)
    stamp.write_text(fingerprint)


def build_function(build_dir: Path, name: str, *, interpreter: Path | None = None) -> Path:
    """functions/<name> with its bytecode, as it lands in /var/task."""
    target = build_dir / "functions" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(FUNCTIONS_DIR / name, target, ignore=_IGNORE)
    if interpreter is not None:
        compile_tree(target, interpreter, runtime_path=LAMBDA_TASK_ROOT)
    return target


def build_migrate_function(build_dir: Path, *, interpreter: Path | None = None) -> Path:
    """functions/migrate plus the sql/ migrations it applies, in one folder."""
    target = build_dir / "migrate"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(FUNCTIONS_DIR / "migrate", target, ignore=_IGNORE)
    shutil.copytree(MIGRATIONS_SOURCE, target / MIGRATIONS_DIR_IN_FUNCTION, ignore=_IGNORE)
    if interpreter is not None:
        compile_tree(target, interpreter, runtime_path=LAMBDA_TASK_ROOT)
    return target
