"""Stage configuration read from the `stages` context in cdk.json: stages differ only in these values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from billing.resource_names import FunctionName

REPO_ROOT = Path(__file__).resolve().parent.parent

# Context keys the app understands besides the per-stage blocks.
STAGE_KEY = "stage"
STAGES_KEY = "stages"
SKIP_LAYER_DEPENDENCIES_KEY = "skipLayerDependencies"
ASSET_BUILD_DIR_KEY = "assetBuildDir"
DEFAULT_STAGE = "dev"
# PCI DSS 10.5.1: audit log history is kept at least twelve months. Every log group of the app is audit evidence (the
# functions' logs, the authorizer's rejected tokens, API access logs, flow logs, database logs), so no stage keeps
# one for less, whatever its logRetention says: logRetention can lengthen the retention, never shorten it below this.
MIN_LOG_RETENTION = logs.RetentionDays.ONE_YEAR
# RetentionDays is declared shortest first (ONE_DAY ... TEN_YEARS, then INFINITE); jsii enum values are names, not
# days, so the declaration order is what compares them.
_RETENTION_ORDER = tuple(logs.RetentionDays)


@dataclass(frozen=True, slots=True)
class StageConfig:
    """Capacity, retention and protection of one stage; field names are the camelCase keys in cdk.json."""

    name: str
    # Network: NAT gateways for the functions' HTTPS calls to the payment providers (one per AZ for availability, or
    # one shared). 0 keeps them in isolated subnets that reach AWS only through VPC endpoints: sandbox provider only.
    nat_gateways: int
    # Aurora Serverless v2, in ACUs (1 ACU ~ 2 GiB RAM). RDS Proxy keeps connections open, so the cluster never
    # auto-pauses: 0.5 is the floor that is actually billed at rest.
    aurora_min_capacity: float
    aurora_max_capacity: float
    aurora_readers: int
    deletion_protection: bool
    backup_retention_days: int
    # True: data stores survive `cdk destroy` (snapshot for the cluster, retain for buckets, keys and secrets).
    retain_data: bool
    # Never applied below MIN_LOG_RETENTION: read log_group_retention.
    log_retention: logs.RetentionDays
    log_level: str
    event_archive_retention_days: int
    settlement_file_retention_days: int
    report_retention_days: int
    api_throttle_rate_limit: int
    api_throttle_burst_limit: int
    # Reserved concurrency caps what a runaway (retry storm, hot loop) can do to the database's connections.
    reserved_concurrency: Mapping[FunctionName, int]
    retry_queue_max_age_alarm_seconds: int
    alarm_email: str | None
    # Where a customer comes back after 3-D Secure or a redirect (the merchant's checkout page): PROVIDER_RETURN_URL.
    # Adyen takes one on every payment, so Adyen is charged through only when this is set.
    provider_return_url: str | None = None
    # The API's public base URL (its custom domain), where customers' browsers reach the 3-D Secure pages.
    public_api_url: str | None = None

    @property
    def log_group_retention(self) -> logs.RetentionDays:
        """What every log group keeps: logRetention, raised to MIN_LOG_RETENTION (PCI DSS 10.5.1)."""
        return max(self.log_retention, MIN_LOG_RETENTION, key=_RETENTION_ORDER.index)

    @property
    def removal_policy(self) -> RemovalPolicy:
        """Removal policy for buckets, keys, secrets, queues and logs."""
        return RemovalPolicy.RETAIN if self.retain_data else RemovalPolicy.DESTROY

    @property
    def database_removal_policy(self) -> RemovalPolicy:
        """A retained database keeps a final snapshot; a throwaway one is deleted outright."""
        return RemovalPolicy.SNAPSHOT if self.retain_data else RemovalPolicy.DESTROY


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _convert(field: str, raw: Any) -> Any:
    if field == "log_retention":
        try:
            return logs.RetentionDays[str(raw)]
        except KeyError:
            raise ValueError(f"logRetention {raw!r} is not a RetentionDays name (e.g. TWO_WEEKS)") from None
    if field == "reserved_concurrency":
        if not isinstance(raw, Mapping):
            raise ValueError("reservedConcurrency must map function names to integers")
        unknown = set(raw) - {f.value for f in FunctionName}
        if unknown:
            raise ValueError(f"reservedConcurrency names unknown functions: {sorted(unknown)}")
        return MappingProxyType({FunctionName(name): int(value) for name, value in raw.items()})
    return raw


_TYPES: Mapping[str, tuple[type, ...]] = {
    "nat_gateways": (int,),
    "aurora_min_capacity": (int, float),
    "aurora_max_capacity": (int, float),
    "aurora_readers": (int,),
    "deletion_protection": (bool,),
    "backup_retention_days": (int,),
    "retain_data": (bool,),
    "log_level": (str,),
    "event_archive_retention_days": (int,),
    "settlement_file_retention_days": (int,),
    "report_retention_days": (int,),
    "api_throttle_rate_limit": (int,),
    "api_throttle_burst_limit": (int,),
    "retry_queue_max_age_alarm_seconds": (int,),
    "alarm_email": (str, type(None)),
    "provider_return_url": (str, type(None)),
    "public_api_url": (str, type(None)),
}


# Optional keys may be null or absent (the CDK drops nulls from context maps on its way through).
_OPTIONAL = frozenset({"alarmEmail", "providerReturnUrl", "publicApiUrl"})


def load_stage_config(context: Mapping[str, Any], stage: str) -> StageConfig:
    """The named stage's block from the `stages` context, checked for missing, unknown and mistyped keys."""
    stages = context.get(STAGES_KEY)
    if not isinstance(stages, Mapping) or stage not in stages:
        known = ", ".join(sorted(stages)) if isinstance(stages, Mapping) else "none"
        raise ValueError(f"stage {stage!r} is not configured in cdk.json context.stages (known: {known})")
    block: Mapping[str, Any] = stages[stage]
    wanted = {_camel(f.name): f.name for f in fields(StageConfig) if f.name != "name"}
    missing = sorted(set(wanted) - set(block) - _OPTIONAL)
    unknown = sorted(set(block) - set(wanted))
    if missing or unknown:
        raise ValueError(f"stage {stage!r}: missing keys {missing}, unknown keys {unknown}")
    values: dict[str, Any] = {"name": stage}
    for key, field in wanted.items():
        raw = block.get(key)
        expected = _TYPES.get(field)
        # bool is an int subclass: a stray `true` must not pass as a count.
        if expected is not None and (not isinstance(raw, expected) or (isinstance(raw, bool) and bool not in expected)):
            raise ValueError(f"stage {stage!r}: {key} must be {' or '.join(t.__name__ for t in expected)}")
        values[field] = _convert(field, raw)
    config = StageConfig(**values)
    if not 0.5 <= config.aurora_min_capacity <= config.aurora_max_capacity:
        raise ValueError(f"stage {stage!r}: need 0.5 <= auroraMinCapacity <= auroraMaxCapacity")
    return config
