"""CDK entry point: `python -m infra.app [--stage prod] [-c key=value ...]`, or `cdk synth` through cdk.json.

Synthesizes offline and without AWS credentials: the stacks are environment-agnostic, so `cdk deploy` puts them in
whatever account and region the deploying credentials point at.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Tags

from billing import resource_names as names
from infra.assets import DEFAULT_BUILD_DIR, build_assets
from infra.config import (
    ASSET_BUILD_DIR_KEY,
    DEFAULT_STAGE,
    REPO_ROOT,
    SKIP_LAYER_DEPENDENCIES_KEY,
    STAGE_KEY,
    STAGES_KEY,
    StageConfig,
    load_stage_config,
)
from infra.nag import add_aws_solutions_checks
from infra.stacks.data import DataStack
from infra.stacks.network import NetworkStack
from infra.stacks.service import ServiceStack

CDK_JSON = REPO_ROOT / "cdk.json"
DEFAULT_OUTDIR = REPO_ROOT / "cdk.out"


@dataclass(frozen=True, slots=True)
class BillingApp:
    """A built (not yet synthesized) app and its stacks."""

    app: App
    config: StageConfig
    network: NetworkStack
    data: DataStack
    service: ServiceStack

    @property
    def stacks(self) -> tuple[NetworkStack, DataStack, ServiceStack]:
        """In deployment order."""
        return self.network, self.data, self.service


def cdk_json_context() -> dict[str, Any]:
    """The `context` block of cdk.json: stage settings and feature flags."""
    context: dict[str, Any] = json.loads(CDK_JSON.read_text(encoding="utf-8"))["context"]
    return context


def _flag(value: Any) -> bool:
    """Context from `-c key=value` arrives as a string; from cdk.json as JSON."""
    return value is True or (isinstance(value, str) and value.strip().lower() in {"1", "true", "yes"})


def build_app(overrides: Mapping[str, Any] | None = None, *, outdir: str | None = None, nag: bool = True) -> BillingApp:
    """Build the stage named by the `stage` context (default dev); context from the CDK CLI wins over cdk.json."""
    app = App(context={**cdk_json_context(), **(overrides or {})}, outdir=outdir)
    stage = str(app.node.try_get_context(STAGE_KEY) or DEFAULT_STAGE)
    config = load_stage_config({STAGES_KEY: app.node.try_get_context(STAGES_KEY)}, stage)
    assets = build_assets(
        Path(str(app.node.try_get_context(ASSET_BUILD_DIR_KEY) or DEFAULT_BUILD_DIR)),
        skip_layer_dependencies=_flag(app.node.try_get_context(SKIP_LAYER_DEPENDENCIES_KEY)),
    )
    prefix = f"{names.APP_NAME}-{stage}"
    network = NetworkStack(
        app, f"{prefix}-network", config=config, description=f"Billing {stage}: VPC, subnets, endpoints"
    )
    data = DataStack(
        app,
        f"{prefix}-data",
        config=config,
        network=network,
        description=f"Billing {stage}: Aurora, RDS Proxy, KMS, secrets, buckets, queues, event bus",
        termination_protection=config.deletion_protection,
    )
    service = ServiceStack(
        app,
        f"{prefix}-service",
        config=config,
        network=network,
        data=data,
        assets=assets,
        description=f"Billing {stage}: functions, API, schedules, migrations",
    )
    service.add_stack_dependency(data, "migrations run against the database the data stack creates")
    # CloudFormation's schema has no Tags on proxy target groups, although the CDK marks them taggable.
    untaggable = ["AWS::RDS::DBProxyTargetGroup"]
    Tags.of(app).add("app", names.APP_NAME, exclude_resource_types=untaggable)
    Tags.of(app).add("stage", stage, exclude_resource_types=untaggable)
    if nag:
        add_aws_solutions_checks(app)
    return BillingApp(app, config, network, data, service)


def _parse_context(pairs: Sequence[str]) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--context expects key=value, got {pair!r}")
        context[key] = value
    return context


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Synthesize the billing CDK app into a cloud assembly.")
    parser.add_argument("--stage", help="stage from cdk.json context.stages (default: context.stage)")
    parser.add_argument("-c", "--context", action="append", default=[], help="extra context, key=value")
    parser.add_argument("--outdir", default=str(DEFAULT_OUTDIR), help="ignored when run by the CDK CLI")
    args = parser.parse_args(argv)
    overrides = _parse_context(args.context)
    if args.stage:
        overrides[STAGE_KEY] = args.stage
    # Under the CDK CLI, CDK_OUTDIR names the assembly folder and the App reads it itself.
    built = build_app(overrides, outdir=None if os.environ.get("CDK_OUTDIR") else args.outdir)
    assembly = built.app.synth()
    print(f"synthesized {', '.join(s.stack_name for s in built.stacks)} into {assembly.directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
