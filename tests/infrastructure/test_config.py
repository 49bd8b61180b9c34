"""Stage configuration and the layer's dependency list: checked without synthesizing anything."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import pytest
from aws_cdk import aws_logs as logs

from billing import resource_names as names
from infra.app import cdk_json_context
from infra.assets import LAYER_REQUIREMENTS
from infra.config import REPO_ROOT, STAGES_KEY, StageConfig, load_stage_config

pytestmark = pytest.mark.infrastructure

# The longest region name AWS has (ap-southeast-N, ap-northeast-N, il-central-1 are shorter or equal).
LONGEST_REGION = "ap-southeast-5"


def _requirement_names(lines: list[str]) -> dict[str, str]:
    """Normalized distribution name -> full specifier line."""
    return {re.split(r"[\[<>=!~;\s]", line, maxsplit=1)[0].lower().replace("_", "-"): line for line in lines}


def test_layer_requirements_match_project_dependencies_except_runtime_provided_boto3() -> None:
    # Given the project's runtime dependencies and the layer's requirements file
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    layer = [
        line.strip()
        for line in LAYER_REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # When both are compared by name and specifier
    expected = {name: spec for name, spec in _requirement_names(project).items() if name != "boto3"}
    # Then the layer ships exactly what the code needs, with the same bounds
    assert _requirement_names(layer) == expected


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cdk_json_stage_loads_into_config(stage: str) -> None:
    config = load_stage_config(cdk_json_context(), stage)
    assert isinstance(config, StageConfig)
    assert config.name == stage


def test_cdk_json_stages_differ_only_in_values_not_in_keys() -> None:
    stages = cdk_json_context()[STAGES_KEY]
    assert set(stages["dev"]) == set(stages["prod"])


def test_prod_stage_protects_data_dev_stage_does_not() -> None:
    dev = load_stage_config(cdk_json_context(), "dev")
    prod = load_stage_config(cdk_json_context(), "prod")
    assert (dev.deletion_protection, dev.retain_data) == (False, False)
    assert (prod.deletion_protection, prod.retain_data) == (True, True)
    assert prod.backup_retention_days > dev.backup_retention_days


_DELETE = object()


def _dev_context_with(key: str, value: Any) -> dict[str, Any]:
    """cdk.json's context with one key of the dev stage set (or deleted, for _DELETE)."""
    context = copy.deepcopy(cdk_json_context())
    if value is _DELETE:
        del context[STAGES_KEY]["dev"][key]
    else:
        context[STAGES_KEY]["dev"][key] = value
    return context


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("auroraMaxCapacity", _DELETE, "missing keys"),
        ("natGateway", 1, "unknown keys"),
        ("natGateways", True, "natGateways must be int"),
        ("deletionProtection", "yes", "deletionProtection must be bool"),
        ("logRetention", "FORTNIGHT", "logRetention"),
        ("reservedConcurrency", {"exeCute": 1}, "unknown functions"),
        ("auroraMinCapacity", 0, "auroraMinCapacity"),
        ("providerReturnUrl", 42, "providerReturnUrl must be str or NoneType"),
    ],
)
def test_stage_config_with_bad_value_is_rejected_with_the_key_named(key: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_stage_config(_dev_context_with(key, value), "dev")


def test_the_provider_return_url_is_optional_and_read_when_set() -> None:
    assert load_stage_config(_dev_context_with("providerReturnUrl", _DELETE), "dev").provider_return_url is None
    url = "https://checkout.example.com/return"
    assert load_stage_config(_dev_context_with("providerReturnUrl", url), "dev").provider_return_url == url


@pytest.mark.parametrize(
    ("configured", "applied"),
    [
        ("ONE_DAY", "ONE_YEAR"),
        ("TWO_WEEKS", "ONE_YEAR"),
        ("SIX_MONTHS", "ONE_YEAR"),
        ("ONE_YEAR", "ONE_YEAR"),
        ("THIRTEEN_MONTHS", "THIRTEEN_MONTHS"),
        ("TEN_YEARS", "TEN_YEARS"),
        ("INFINITE", "INFINITE"),
    ],
)
def test_log_groups_keep_logs_a_year_whatever_shorter_retention_a_stage_sets(configured: str, applied: str) -> None:
    # PCI DSS 10.5.1: twelve months of audit log history; a stage may keep them longer, never shorter.
    config = load_stage_config(_dev_context_with("logRetention", configured), "dev")
    assert config.log_retention is logs.RetentionDays[configured]
    assert config.log_group_retention is logs.RetentionDays[applied]


def test_unknown_stage_is_rejected_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match="known: dev, prod"):
        load_stage_config(cdk_json_context(), "staging")


def test_bucket_names_fit_s3_limit_for_any_account_and_region() -> None:
    prefixes = (
        names.SETTLEMENT_BUCKET_PREFIX,
        names.REPORTS_BUCKET_PREFIX,
        names.ACCESS_LOGS_BUCKET_PREFIX,
        names.AUDIT_CHECKPOINTS_BUCKET_PREFIX,
    )
    for prefix in prefixes:
        assert len(names.bucket_name(prefix, "123456789012", LONGEST_REGION)) <= 63


def test_webhook_secret_name_for_unknown_provider_is_refused() -> None:
    assert names.webhook_secret_name("stripe") == "billing/webhook/stripe"
    with pytest.raises(ValueError, match="unknown webhook provider"):
        names.webhook_secret_name("paypal")
