"""The layer and the functions ship bytecode the Lambda runtime's Python uses as it is, so no cold start compiles.

Lambda's code and layers are read-only: without .pyc files for the runtime's exact version every import compiles
from source, on every cold start (bench/cold_start_imports.py, section 3, shows what that costs).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import infra.assets
from billing.resource_names import FunctionName
from infra.assets import build_assets
from infra.bytecode import LAMBDA_PYTHON, find_interpreter, version_tag
from infra.stacks.service import RUNTIME
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

RUNTIME_PYTHON = find_interpreter(LAMBDA_PYTHON)
needs_runtime_python = pytest.mark.skipif(
    RUNTIME_PYTHON is None, reason=f"no Python {LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]} on this machine to check with"
)
# PEP 552: the flags word after the magic number; 0b01 is hash-based and never checked against the source.
UNCHECKED_HASH = 0b01


def _runtime(code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert RUNTIME_PYTHON is not None
    return subprocess.run(
        [str(RUNTIME_PYTHON), "-I", "-B", "-c", code], cwd=cwd, capture_output=True, text=True, check=False
    )


def _staged(synth: Synthesized, code: dict[str, str]) -> Path:
    """The folder the CDK staged for an asset (cdk.out/asset.<hash>), from a function's Code or a layer's Content."""
    return synth.assembly_dir / f"asset.{code['S3Key'].removesuffix('.zip')}"


def test_the_bytecode_is_built_for_the_python_the_functions_run_on() -> None:
    assert RUNTIME.name == f"python{LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}"
    assert f"--python-version {LAMBDA_PYTHON[0]}.{LAMBDA_PYTHON[1]}" in " ".join(infra.assets.PIP_TARGET_ARGS)


@needs_runtime_python
def test_every_module_of_the_deployed_layer_and_functions_has_unchecked_hash_bytecode_for_the_runtime(
    dev: Synthesized,
) -> None:
    magic = _runtime("import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())", cwd=Path.cwd()).stdout
    service = dev.raw["service"]
    ((layer,),) = [list(cfn.of_type(service, "AWS::Lambda::LayerVersion").values())]
    staged = {"layer": _staged(dev, layer["Properties"]["Content"]) / "python" / "billing"}
    for function in (FunctionName.EXECUTE, FunctionName.MIGRATE, FunctionName.AUTHORIZER):
        staged[function.value] = _staged(dev, cfn.function_props(service, function)["Code"])

    for name, folder in staged.items():
        sources = list(folder.rglob("*.py"))
        assert sources, f"{name}: nothing staged at {folder}"
        for source in sources:
            compiled = source.parent / "__pycache__" / f"{source.stem}.{version_tag()}.pyc"
            assert compiled.is_file(), f"{name}: {source.relative_to(folder)} has no {compiled.name}"
            header = compiled.read_bytes()[:8]
            assert header[:4].hex() == magic.strip(), f"{compiled} is not for the runtime's Python"
            assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, f"{compiled} is not unchecked-hash"
        # Nothing compiled for another interpreter (a developer's own __pycache__) rides along.
        assert {path.name.split(".")[-2] for path in folder.rglob("*.pyc")} == {version_tag()}


@needs_runtime_python
def test_the_runtime_imports_the_shipped_bytecode_without_reading_the_source(dev: Synthesized, tmp_path: Path) -> None:
    # A copy of one staged module whose source is then made unusable: only the .pyc can make the import work.
    layer_python = dev.asset_build_dir / "shared-layer-code-only" / "python"
    package = tmp_path / "billing"
    shutil.copytree(layer_python / "billing", package)
    (package / "resource_names.py").write_text("this is not Python (\n")

    result = _runtime(
        "import marshal, sys; sys.path.insert(0, '.'); import billing.resource_names as n; print(n.API_BASE_PATH); "
        "print(marshal.loads(open(n.__cached__, 'rb').read()[16:]).co_filename)",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    base_path, compiled_as = result.stdout.split()
    assert base_path.startswith("/api/")
    # Compiled under the path Lambda mounts it at, so that is what tracebacks name.
    assert compiled_as == f"{infra.assets.LAYER_PYTHON_ROOT}/billing/resource_names.py"


def test_a_deployable_build_refuses_to_go_without_the_runtime_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infra.assets, "find_interpreter", lambda version: None)

    with pytest.raises(RuntimeError, match=r"no Python 3\.12 found"):
        build_assets(tmp_path, skip_layer_dependencies=False)
    assert not (tmp_path / "shared-layer").exists()  # refused before pip ran


def test_a_code_only_build_without_the_runtime_python_warns_and_ships_no_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(infra.assets, "find_interpreter", lambda version: None)

    with pytest.warns(UserWarning, match="ships no .pyc files"):
        assets = build_assets(tmp_path, skip_layer_dependencies=True)

    assert not assets.bytecode
    assert not list(tmp_path.rglob("*.pyc"))
    assert (assets.function_code("execute") / "handler.py").is_file()
