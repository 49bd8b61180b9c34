"""Policy checks on the synthesized app: cdk-nag AwsSolutions and cfn-lint."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import ManualArgs, lint_file

from infra.nag import MIN_REASON_LENGTH
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

STACKS = ("network", "data", "service")
# W3005 flags DependsOn entries that a Ref already implies. The CDK adds them on purpose (a Lambda function waits
# for its role's policy), so they are noise here, not a template defect.
CFN_LINT_IGNORED = ["W3005"]
# Regions the templates are linted against: resource and property availability differs per region.
CFN_LINT_REGIONS = ["us-east-1", "eu-west-1", "eu-central-1"]


def _violations(synth: Synthesized) -> list[str]:
    report = AwsSolutionsChecks().validate_scope(synth.built.app)
    return [
        f"{violation.rule_name} at {resource.construct_path}: {violation.description}"
        for violation in report.violations
        for resource in violation.violating_resources
    ]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cdk_nag_aws_solutions_leaves_no_unacknowledged_finding(stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    assert _violations(synth) == []


def _acknowledgments(synth: Synthesized) -> Iterator[tuple[str, str, str]]:
    """(construct path, rule id, reason) of every AwsSolutions acknowledgment in the cloud assembly."""
    for metadata_file in synth.assembly_dir.glob("*.metadata.json"):
        for path, entries in json.loads(metadata_file.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    for rule_id, reason in entry["data"].items():
                        if "AwsSolutions-" in rule_id:
                            yield path, rule_id, reason


def test_cdk_nag_acknowledgments_each_carry_a_written_reason(dev: Synthesized) -> None:
    acknowledgments = list(_acknowledgments(dev))
    assert acknowledgments, "expected the app's acknowledgments in the assembly metadata"
    too_short = [(path, rule) for path, rule, reason in acknowledgments if len(reason.strip()) < MIN_REASON_LENGTH]
    assert too_short == []


def test_cdk_nag_is_not_silenced_wholesale(dev: Synthesized) -> None:
    # Acknowledge findings where they occur: never a whole rule on a stack without naming the finding.
    for path, rule, _ in _acknowledgments(dev):
        if path.count("/") == 1:  # stack level
            assert "[" in rule, f"{rule} acknowledged for all of {path}"


@pytest.mark.parametrize("stage", ["dev", "prod"])
@pytest.mark.parametrize("stack", STACKS)
def test_cfn_lint_finds_nothing_in_synthesized_template(stack: str, stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    matches = lint_file(
        synth.template_path(stack),
        config=ManualArgs(regions=CFN_LINT_REGIONS, ignore_checks=CFN_LINT_IGNORED),
    )
    assert [str(match) for match in matches] == []
