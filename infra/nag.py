"""cdk-nag AwsSolutions checks and acknowledgments (cdk-nag 3: CDK's native Validations, reason required)."""

from __future__ import annotations

from aws_cdk import Acknowledgment, IPolicyValidationPlugin, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

# A reason has to say why the finding is acceptable here, not just restate the rule.
MIN_REASON_LENGTH = 40


def add_aws_solutions_checks(scope: IConstruct) -> IPolicyValidationPlugin:
    """Run AwsSolutions on everything under scope at synth; an unacknowledged error fails the synth."""
    pack = AwsSolutionsChecks(scope)
    Validations.of(scope).add_plugins(pack)
    return pack


def acknowledge(scope: IConstruct, rule: str, reason: str, *, findings: tuple[str, ...] = ()) -> None:
    """Accept an AwsSolutions finding on scope and its children, e.g. rule "IAM5", findings ("Resource::*",)."""
    if len(reason) < MIN_REASON_LENGTH:
        raise ValueError(f"AwsSolutions-{rule}: give a reason of at least {MIN_REASON_LENGTH} characters")
    rule_id = f"AwsSolutions-{rule}"
    ids = [f"{rule_id}[{finding}]" for finding in findings] or [rule_id]
    Validations.of(scope).acknowledge(*(Acknowledgment(id=ack_id, reason=reason) for ack_id in ids))
