"""Service stack functions: runtime, sizing, environment, placement, least-privilege grants, triggers, schedules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from billing import resource_names as names
from billing.resource_names import FunctionName
from infra.assets import MIGRATIONS_SOURCE
from infra.bytecode import version_tag
from infra.functions import FUNCTIONS, Access
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

ALL_FUNCTIONS = list(FunctionName)
DATABASE_FUNCTIONS = [name for name, spec in FUNCTIONS.items() if Access.DATABASE in spec.accesses]
# What each access may add to a role, beyond logs, traces and (in the VPC) network interfaces.
ACCESS_ACTIONS: dict[Access, set[str]] = {
    Access.DATABASE: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
    Access.READ_DATABASE_LOGIN_SECRETS: {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
        "kms:Decrypt",
    },
    Access.SEND_RETRY: {"sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt"},
    Access.SEND_DLQ: {"sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt"},
    Access.CONSUME_RETRY: {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "kms:Decrypt",
    },
    Access.CONSUME_DLQ: {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueUrl",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "kms:Decrypt",
    },
    Access.READ_SETTLEMENT_FILES: {"s3:ListBucket", "s3:GetObject", "kms:Decrypt"},
    Access.WRITE_REPORTS: {"s3:PutObject", "kms:GenerateDataKey", "kms:Decrypt"},
    Access.PUT_EVENTS: {"events:PutEvents"},
    Access.READ_WEBHOOK_SECRETS: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
    Access.READ_JWT_SECRET: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
    Access.VAULT_KMS: {"kms:GenerateDataKey", "kms:Decrypt"},
    Access.READ_FINGERPRINT_SECRET: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
    Access.WRITE_AUDIT_CHECKPOINTS: {
        "s3:ListBucket",
        "s3:GetBucketObjectLockConfiguration",
        "s3:GetObject",
        "s3:PutObject",
        "s3:PutObjectRetention",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    },
    Access.READ_AUDIT_KEYS: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
    Access.WATCH_CREDENTIAL_ROTATIONS: {"secretsmanager:DescribeSecret"},
    Access.SEND_AUTH_FAILURES: {"sqs:SendMessage", "kms:GenerateDataKey", "kms:Decrypt"},
    Access.RECORD_AUTH_FAILURES: {"sqs:ReceiveMessage", "sqs:DeleteMessage", "kms:Decrypt"},
    Access.CALL_PROVIDERS: {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"},
}
BASELINE_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
VPC_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_runs_python312_arm64_traced_with_shared_layer_and_spec_sizing(
    function: FunctionName, dev: Synthesized
) -> None:
    props = cfn.function_props(dev.raw["service"], function)
    spec = FUNCTIONS[function]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "handler.lambda_handler"
    assert props["TracingConfig"] == {"Mode": "Active"}
    (layer,) = props["Layers"]
    assert layer["Ref"] in cfn.of_type(dev.raw["service"], "AWS::Lambda::LayerVersion")
    assert props["MemorySize"] == spec.memory_mb
    assert props["Timeout"] == spec.timeout.to_seconds()


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_logs_to_its_own_group_kept_at_least_a_year(function: FunctionName, dev: Synthesized) -> None:
    log_group = cfn.function_props(dev.raw["service"], function)["LoggingConfig"]["LogGroup"]["Ref"]
    group = dev.raw["service"]["Resources"][log_group]
    # dev's logRetention is TWO_WEEKS: raised to the PCI DSS 10.5.1 floor of a year (infra.config.MIN_LOG_RETENTION).
    assert group["Properties"]["RetentionInDays"] == 365
    users = [
        f
        for f in ALL_FUNCTIONS
        if cfn.function_props(dev.raw["service"], f)["LoggingConfig"]["LogGroup"] == {"Ref": log_group}
    ]
    assert users == [function]


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_environment_names_service_namespace_and_level(function: FunctionName, dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"]
    assert env[names.ENV_POWERTOOLS_SERVICE_NAME] == names.service_name(function)
    assert env[names.ENV_POWERTOOLS_METRICS_NAMESPACE] == names.METRICS_NAMESPACE
    assert env[names.ENV_LOG_LEVEL] == dev.built.config.log_level


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_environment_carries_only_what_its_accesses_need(function: FunctionName, dev: Synthesized) -> None:
    env = set(cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"])
    accesses = FUNCTIONS[function].accesses
    expected = {names.ENV_POWERTOOLS_SERVICE_NAME, names.ENV_POWERTOOLS_METRICS_NAMESPACE, names.ENV_LOG_LEVEL}
    if Access.DATABASE in accesses:
        expected |= {
            names.ENV_DATABASE_SECRET_ARN,
            names.ENV_DATABASE_PROXY_ENDPOINT,
            names.ENV_DATABASE_NAME,
            names.ENV_AUTHORITATIVE_WRITE_ENABLED,
        }
    if Access.READ_DATABASE_LOGIN_SECRETS in accesses:
        expected.add(names.ENV_DATABASE_LOGIN_SECRET_ARNS)
    if accesses & {Access.SEND_RETRY, Access.CONSUME_RETRY}:
        expected.add(names.ENV_RETRY_QUEUE_URL)
    if accesses & {Access.SEND_DLQ, Access.CONSUME_DLQ}:
        expected.add(names.ENV_DLQ_URL)
    if Access.READ_SETTLEMENT_FILES in accesses:
        expected.add(names.ENV_SETTLEMENT_BUCKET)
    if Access.WRITE_REPORTS in accesses:
        expected.add(names.ENV_REPORTS_BUCKET)
    if Access.PUT_EVENTS in accesses:
        expected.add(names.ENV_EVENT_BUS_NAME)
    if Access.READ_JWT_SECRET in accesses:
        expected.add(names.ENV_JWT_SECRET_ARN)
    if Access.VAULT_KMS in accesses:
        expected.add(names.ENV_VAULT_KMS_KEY_ID)
    if Access.READ_FINGERPRINT_SECRET in accesses:
        expected.add(names.ENV_FINGERPRINT_SECRET_ID)
    if Access.WRITE_AUDIT_CHECKPOINTS in accesses:
        expected |= {names.ENV_AUDIT_CHECKPOINTS_BUCKET, names.ENV_AUDIT_REQUIRE_OBJECT_LOCK}
    if Access.READ_AUDIT_KEYS in accesses:
        expected.add(names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID)
    if Access.WATCH_CREDENTIAL_ROTATIONS in accesses:
        expected.add(names.ENV_AUDIT_WATCHED_CREDENTIALS)
    if accesses & {Access.SEND_AUTH_FAILURES, Access.RECORD_AUTH_FAILURES}:
        expected.add(names.ENV_AUDIT_INTAKE_QUEUE_URL)
    if Access.CALL_PROVIDERS in accesses:
        expected |= set(names.ENV_PROVIDER_CREDENTIAL_SECRET_IDS.values())
    if function is FunctionName.MIGRATE:
        expected.add(names.ENV_MIGRATIONS_DIR)
    assert env == expected


@pytest.mark.parametrize("function", DATABASE_FUNCTIONS)
def test_database_function_connects_through_the_proxy_with_authoritative_writes(
    function: FunctionName, dev: Synthesized
) -> None:
    env = cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"]
    (proxy_import,) = cfn.references(env[names.ENV_DATABASE_PROXY_ENDPOINT])
    assert "DatabaseProxy" in proxy_import
    assert "Endpoint" in proxy_import
    assert env[names.ENV_AUTHORITATIVE_WRITE_ENABLED] == "true"
    assert env[names.ENV_DATABASE_NAME] == names.DATABASE_NAME


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_sits_in_the_function_subnets_unless_it_needs_no_database(
    function: FunctionName, dev: Synthesized
) -> None:
    props = cfn.function_props(dev.raw["service"], function)
    if not FUNCTIONS[function].in_vpc:
        assert "VpcConfig" not in props
        return
    imports = cfn.references(props["VpcConfig"])
    assert {i for i in imports if "Subnet" in i} == {i for i in imports if "functionsSubnet" in i}, (
        "functions must not be placed in the database subnets"
    )
    assert any("FunctionsSecurityGroup" in i for i in imports)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_reserved_concurrency_follows_stage_config(stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    for function in ALL_FUNCTIONS:
        props = cfn.function_props(synth.raw["service"], function)
        assert props.get("ReservedConcurrentExecutions") == synth.built.config.reserved_concurrency.get(function)
    # The single-runner jobs must never overlap themselves.
    for function in (FunctionName.OUTBOX_RELAY, FunctionName.RECONCILE, FunctionName.MIGRATE):
        assert synth.built.config.reserved_concurrency[function] == 1
    # Every function that connects holds at most one connection per container: its reserved concurrency is the
    # bound on what it can take from RDS Proxy, so none may be unbounded.
    connecting = {name for name, spec in FUNCTIONS.items() if spec.database_role is not None}
    assert connecting <= set(synth.built.config.reserved_concurrency), "a connecting function without a bound"


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_role_allows_exactly_what_its_accesses_need(function: FunctionName, dev: Synthesized) -> None:
    spec = FUNCTIONS[function]
    expected = set(BASELINE_ACTIONS)
    if spec.in_vpc:
        expected |= VPC_ACTIONS
    for access in spec.accesses:
        expected |= ACCESS_ACTIONS[access]
    assert cfn.actions(dev.raw["service"], function) == expected


@pytest.mark.parametrize("function", ALL_FUNCTIONS)
def test_function_role_uses_wildcard_resources_only_for_tracing_and_network_interfaces(
    function: FunctionName, dev: Synthesized
) -> None:
    for action, resource in cfn.grants(dev.raw["service"], function):
        assert "*" not in action, f"{function}: wildcard action {action}"
        if resource == "*":
            assert action in VPC_ACTIONS | {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _queue_users(synth: Synthesized, action: str, queue_marker: str) -> set[FunctionName]:
    return {
        f
        for f in ALL_FUNCTIONS
        for granted, resource in cfn.grants(synth.raw["service"], f)
        if granted == action and queue_marker in json.dumps(resource)
    }


def test_only_the_relay_and_the_settlement_report_may_publish_events(dev: Synthesized) -> None:
    # The relay publishes the outbox; a settlement report announces itself once saved (billing.settlement.events).
    publishers = {f for f in ALL_FUNCTIONS if "events:PutEvents" in cfn.actions(dev.raw["service"], f)}
    assert publishers == {FunctionName.OUTBOX_RELAY, FunctionName.SETTLEMENT_REPORT}


def test_only_the_retry_worker_touches_the_dlq_and_only_the_submitters_enqueue_retries(dev: Synthesized) -> None:
    assert _queue_users(dev, "sqs:ReceiveMessage", "RetryDeadLetterQueue") == {FunctionName.RETRY_DLQ}
    assert _queue_users(dev, "sqs:SendMessage", "RetryDeadLetterQueue") == {FunctionName.RETRY_DLQ}
    assert _queue_users(dev, "sqs:SendMessage", "RetryQueue") == {
        FunctionName.EXECUTE,
        FunctionName.THREE_DS,
        FunctionName.RECONCILE,
        FunctionName.RETRY_DLQ,
    }


def test_only_the_authorizer_sends_to_the_audit_intake_queue_and_only_the_checkpointer_drains_it(
    dev: Synthesized,
) -> None:
    intake = "AuditIntakeQueue"
    touching = {
        f: {action for action, resource in cfn.grants(dev.raw["service"], f) if intake in json.dumps(resource)}
        for f in ALL_FUNCTIONS
    }
    assert {f: actions for f, actions in touching.items() if actions} == {
        FunctionName.AUTHORIZER: {"sqs:SendMessage"},
        FunctionName.AUDIT_CHECKPOINT: {"sqs:ReceiveMessage", "sqs:DeleteMessage"},
    }
    for function in (FunctionName.AUTHORIZER, FunctionName.AUDIT_CHECKPOINT):
        env = cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"]
        assert any(intake in reference for reference in cfn.references(env[names.ENV_AUDIT_INTAKE_QUEUE_URL]))


def test_secrets_are_readable_only_by_the_functions_that_use_them(dev: Synthesized) -> None:
    def secret_readers(marker: str) -> set[FunctionName]:
        return {
            f
            for f in ALL_FUNCTIONS
            for action, resource in cfn.grants(dev.raw["service"], f)
            if action == "secretsmanager:GetSecretValue" and marker in json.dumps(resource)
        }

    assert secret_readers("WebhookSecret") == {FunctionName.WEBHOOK}
    assert secret_readers("JwtSecret") == {FunctionName.AUTHORIZER}
    assert secret_readers("FingerprintKeysSecret") == {FunctionName.VAULT}
    assert secret_readers("AuditCheckpointKeysSecret") == {FunctionName.AUDIT_CHECKPOINT}
    assert secret_readers("ProviderSecret") == {
        FunctionName.EXECUTE,
        FunctionName.THREE_DS,
        FunctionName.RETRY_DLQ,
        FunctionName.RECONCILE,
        FunctionName.VAULT,
    }
    # The admin connects only to migrate; every other function reads its own login user's secret
    # (test_database_roles_infra.py).
    assert secret_readers("DatabaseSecretAttachment") == {FunctionName.MIGRATE}
    assert secret_readers("UserSecretAttachment") == set(DATABASE_FUNCTIONS)
    # Secret decryption through the data key is only allowed via Secrets Manager.
    for f in ALL_FUNCTIONS:
        for statement in cfn.role_statements(dev.raw["service"], f):
            if statement["Action"] == "kms:Decrypt" and "Condition" in statement:
                assert list(statement["Condition"]["StringEquals"]) == ["kms:ViaService"]


def test_buckets_are_reached_by_derived_names_read_by_reconcile_and_reports_written_by_reports(
    dev: Synthesized,
) -> None:
    def bucket_users(action: str, prefix: str) -> set[FunctionName]:
        return {
            f
            for f in ALL_FUNCTIONS
            for granted, resource in cfn.grants(dev.raw["service"], f)
            if granted == action and f":s3:::{prefix}-" in json.dumps(resource)
        }

    assert bucket_users("s3:GetObject", names.SETTLEMENT_BUCKET_PREFIX) == {
        FunctionName.RECONCILE,
        FunctionName.SETTLEMENT_REPORT,
    }
    assert bucket_users("s3:PutObject", names.REPORTS_BUCKET_PREFIX) == {FunctionName.SETTLEMENT_REPORT}
    assert bucket_users("s3:PutObject", names.SETTLEMENT_BUCKET_PREFIX) == set()


def test_retry_worker_consumes_the_retry_queue_with_partial_batch_failures(dev: Synthesized) -> None:
    (mapping,) = cfn.of_type(dev.raw["service"], "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionName"] == {"Ref": cfn.function_id(dev.raw["service"], FunctionName.RETRY_DLQ)}
    (queue_import,) = cfn.references(props["EventSourceArn"])
    assert "RetryQueue" in queue_import
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Bounded parallelism: each worker holds a proxy connection.
    assert props["ScalingConfig"]["MaximumConcurrency"] <= dev.built.config.reserved_concurrency[FunctionName.RETRY_DLQ]


def test_migrate_asset_bundles_every_sql_migration_and_env_points_at_it(dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], FunctionName.MIGRATE)["Environment"]["Variables"]
    assert env[names.ENV_MIGRATIONS_DIR] == "/var/task/sql"
    bundled = dev.asset_build_dir / "migrate"
    assert (bundled / "handler.py").is_file()
    source = {p.name: p.read_bytes() for p in MIGRATIONS_SOURCE.glob("*.sql")}
    assert source
    assert {p.name: p.read_bytes() for p in (bundled / "sql").glob("*.sql")} == source


def test_shared_layer_asset_holds_the_billing_package_for_python312_arm64(dev: Synthesized) -> None:
    (layer,) = cfn.of_type(dev.raw["service"], "AWS::Lambda::LayerVersion").values()
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    package = dev.asset_build_dir / "shared-layer-code-only" / "python" / "billing"
    assert (package / "resource_names.py").is_file()
    # Bytecode for the runtime's Python only (tests/infrastructure/test_bytecode.py), never a developer's own.
    assert {path.name.split(".")[-2] for path in package.rglob("*.pyc")} <= {version_tag()}
    assert not (package / "local").exists()  # developer-only code stays out of Lambda


def test_migrations_trigger_runs_before_every_other_function_and_the_api_stage(dev: Synthesized) -> None:
    service = dev.raw["service"]
    migrate_id = cfn.function_id(service, FunctionName.MIGRATE)
    ((trigger_id, trigger),) = (
        (logical_id, resource)
        for logical_id, resource in cfn.of_type(service, "Custom::Trigger").items()
        if service["Resources"][cfn.references(resource["Properties"]["HandlerArn"]).pop()]["Properties"][
            "FunctionName"
        ]
        == {"Ref": migrate_id}
    )
    assert trigger["Properties"]["InvocationType"] == "RequestResponse"
    assert trigger["Properties"]["ExecuteOnHandlerChange"] is True
    for function in ALL_FUNCTIONS:
        if function is not FunctionName.MIGRATE:
            assert trigger_id in service["Resources"][cfn.function_id(service, function)]["DependsOn"]
    for stage in cfn.of_type(service, "AWS::ApiGateway::Stage").values():
        assert trigger_id in stage["DependsOn"]


@pytest.mark.parametrize(
    ("function", "expression", "payload"),
    [
        (FunctionName.OUTBOX_RELAY, names.OUTBOX_RELAY_SCHEDULE, {}),
        (FunctionName.RECONCILE, names.RECONCILE_SCHEDULE, {}),
        (FunctionName.AUDIT_CHECKPOINT, names.AUDIT_CHECKPOINT_SCHEDULE, {}),
        (FunctionName.SETTLEMENT_REPORT, names.SETTLEMENT_REPORT_DAILY_SCHEDULE, {"period": "daily"}),
        (FunctionName.SETTLEMENT_REPORT, names.SETTLEMENT_REPORT_WEEKLY_SCHEDULE, {"period": "weekly"}),
    ],
)
def test_schedule_invokes_its_function_on_its_cadence(
    function: FunctionName, expression: str, payload: dict[str, str], dev: Synthesized
) -> None:
    service = dev.raw["service"]
    function_arn = {"Fn::GetAtt": [cfn.function_id(service, function), "Arn"]}
    schedules = [
        s["Properties"]
        for s in cfn.of_type(service, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["ScheduleExpression"] == expression and s["Properties"]["Target"]["Arn"] == function_arn
    ]
    assert len(schedules) == 1
    target = schedules[0]["Target"]
    assert json.loads(target["Input"]) == payload
    assert schedules[0]["State"] == "ENABLED"


def _cron_fields(expression: str) -> dict[str, str]:
    assert expression.startswith("cron(")
    assert expression.endswith(")")
    minute, hour, day_of_month, month, day_of_week, year = expression[5:-1].split()
    return {"minute": minute, "hour": hour, "dom": day_of_month, "month": month, "dow": day_of_week, "year": year}


def test_settlement_report_crons_fire_once_a_day_and_once_a_week() -> None:
    daily = _cron_fields(names.SETTLEMENT_REPORT_DAILY_SCHEDULE)
    weekly = _cron_fields(names.SETTLEMENT_REPORT_WEEKLY_SCHEDULE)
    # One fixed minute and hour: once per matching day.
    for fields in (daily, weekly):
        assert fields["minute"].isdigit()
        assert fields["hour"].isdigit()
        assert (fields["month"], fields["year"]) == ("*", "*")
    assert (daily["dom"], daily["dow"]) == ("*", "?")
    assert weekly["dom"] == "?"
    assert weekly["dow"].isalpha()  # a single named weekday


def test_frequent_schedules_do_not_retry_into_the_next_tick(dev: Synthesized) -> None:
    for schedule in cfn.of_type(dev.raw["service"], "AWS::Scheduler::Schedule").values():
        props = schedule["Properties"]
        if props["ScheduleExpression"].startswith("rate("):
            assert props["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 0


def test_function_code_folders_exist_for_every_function() -> None:
    functions_dir = Path(__file__).resolve().parents[2] / "functions"
    for function in ALL_FUNCTIONS:
        assert (functions_dir / function.value).is_dir(), f"functions/{function.value} is missing"
        assert any((functions_dir / function.value).iterdir()), f"functions/{function.value} is empty (not in git)"
