"""One synthesized app per stage per test session; templates are read from its cloud assembly, not re-synthesized."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The CDK runs on Node.js (jsii); without it `import aws_cdk` dies with an obscure error. Say what is missing.
if shutil.which("node") is None:
    pytest.exit(
        "Node.js is required for tests/infrastructure: the AWS CDK runs on its jsii runtime. Install Node.js 20+ "
        "(https://nodejs.org) and re-run.",
        returncode=pytest.ExitCode.USAGE_ERROR,
    )

from aws_cdk.assertions import Template

from infra.app import BillingApp, build_app
from infra.config import ASSET_BUILD_DIR_KEY, SKIP_LAYER_DEPENDENCIES_KEY, STAGE_KEY


@dataclass(frozen=True)
class Synthesized:
    """A synthesized stage: the app (for cdk-nag), its assembly folder and each stack's template."""

    built: BillingApp
    assembly_dir: Path
    asset_build_dir: Path
    raw: Mapping[str, dict[str, Any]]  # short name (network, data, service) -> template JSON

    def template(self, stack: str) -> Template:
        """assertions.Template over the already synthesized JSON (no second synthesis)."""
        return Template.from_json(self.raw[stack])

    def resources(self, stack: str, resource_type: str) -> dict[str, dict[str, Any]]:
        """logical id -> resource, for one CloudFormation type."""
        return {
            logical_id: resource
            for logical_id, resource in self.raw[stack]["Resources"].items()
            if resource["Type"] == resource_type
        }

    def template_path(self, stack: str) -> Path:
        return self.assembly_dir / f"{self._stack_names[stack]}.template.json"

    @property
    def _stack_names(self) -> dict[str, str]:
        return {stack.stack_name.rsplit("-", 1)[-1]: stack.stack_name for stack in self.built.stacks}


def _synthesize(stage: str, root: Path) -> Synthesized:
    # skipLayerDependencies: the layer gets the billing package only, so no pip run (fast, offline).
    built = build_app(
        {STAGE_KEY: stage, SKIP_LAYER_DEPENDENCIES_KEY: True, ASSET_BUILD_DIR_KEY: str(root / "build")},
        outdir=str(root / "cdk.out"),
    )
    # The app registers cdk-nag: an unacknowledged AwsSolutions finding fails this synthesis outright.
    assembly = built.app.synth()
    raw = {
        stack.stack_name.rsplit("-", 1)[-1]: json.loads(
            (Path(assembly.directory) / f"{stack.stack_name}.template.json").read_text()
        )
        for stack in built.stacks
    }
    return Synthesized(built, Path(assembly.directory), root / "build", raw)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The dev stage, synthesized once per session."""
    return _synthesize("dev", tmp_path_factory.mktemp("dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The prod stage, synthesized once per session (only by the tests that compare stages)."""
    return _synthesize("prod", tmp_path_factory.mktemp("prod"))
