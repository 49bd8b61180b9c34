"""Service stack: the shared layer, the functions with their grants, the API, the schedules and the migrations."""

from __future__ import annotations

from typing import Any, cast

from aws_cdk import CfnElement, CfnOutput, Duration, Stack, triggers
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from billing import resource_names as names
from billing.audit.s3 import PREFIX as AUDIT_CHECKPOINT_OBJECT_PREFIX
from billing.resource_names import FunctionName
from infra.api import BillingApi
from infra.assets import (
    LAMBDA_TASK_ROOT,
    MIGRATIONS_DIR_IN_FUNCTION,
    SEED_KEY_MATERIAL_SOURCE,
    LambdaAssets,
)
from infra.config import StageConfig
from infra.functions import FUNCTIONS, Access, FunctionSpec, vault_role_name
from infra.nag import acknowledge
from infra.stacks.data import VAULT_KEY_USE_ACTIONS, VAULT_KEY_USE_CONDITIONS, DataStack
from infra.stacks.network import NetworkStack

RUNTIME = lambda_.Runtime.PYTHON_3_12
ARCHITECTURE = lambda_.Architecture.ARM_64
HANDLER = "handler.lambda_handler"
RETRY_BATCH_SIZE = 10
# Parallel retry consumers; each holds a proxy connection, so this bounds the retry load on the database.
RETRY_MAX_CONCURRENCY = 2
# The deploy-time seeding of the key secrets: a handful of Secrets Manager calls.
SEED_KEY_MATERIAL_TIMEOUT = Duration.seconds(30)
_ASSET_EXCLUDES = ["__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"]
# The built folders (infra/assets.py) keep their __pycache__: it holds the runtime's bytecode, compiled for it.
_BUILT_ASSET_EXCLUDES = [".mypy_cache", ".pytest_cache"]
# What Lambda needs to attach a function to the VPC; AWS documents these on Resource "*" (no resource scoping).
_ENI_ACTIONS = [
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
]


class ServiceStack(Stack):
    """Stateless compute: redeploying it never touches data."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: StageConfig,
        network: NetworkStack,
        data: DataStack,
        assets: LambdaAssets,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.network = network
        self.data = data
        self.assets = assets
        self.layer = lambda_.LayerVersion(
            self,
            "SharedLayer",
            code=lambda_.Code.from_asset(str(assets.shared_layer), exclude=_BUILT_ASSET_EXCLUDES),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description=(
                "billing package only: synthesized with skipLayerDependencies, NOT deployable"
                if assets.layer_code_only
                else "billing package and its third-party dependencies (Python 3.12, arm64)"
            ),
            removal_policy=config.removal_policy,
        )
        self.functions = {name: self._function(spec) for name, spec in FUNCTIONS.items()}

        self.api = BillingApi(
            self,
            "Api",
            config=config,
            handlers=self.functions,
            authorizer_function=self.functions[FunctionName.AUTHORIZER],
        )
        self.functions[FunctionName.RETRY_DLQ].add_event_source(
            event_sources.SqsEventSource(
                data.retry_queue,
                batch_size=RETRY_BATCH_SIZE,
                max_concurrency=RETRY_MAX_CONCURRENCY,
                report_batch_item_failures=True,
            )
        )
        self._schedules()
        self._migrations_before_rollout()
        self._seed_key_material_before_rollout()
        CfnOutput(self, "ApiUrl", value=self.api.rest_api.url_for_path(names.API_BASE_PATH))

    def _function(self, spec: FunctionSpec) -> lambda_.Function:
        config = self.config
        construct_id = spec.name.value.title().replace("_", "")
        log_group = logs.LogGroup(
            self, f"{construct_id}Logs", retention=config.log_group_retention, removal_policy=config.removal_policy
        )
        # One role per function, built here instead of by Lambda: no AWS managed policies, logs only to its own
        # group, and exactly the grants its spec lists.
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{names.service_name(spec.name)}: {spec.description}",
            # The vault key's policy admits this role by name (stacks/data.py); every other role's name is generated.
            role_name=vault_role_name(config.name, self.region) if Access.VAULT_KMS in spec.accesses else None,
        )
        log_group.grant_write(role)
        if spec.in_vpc:
            role.add_to_policy(iam.PolicyStatement(actions=_ENI_ACTIONS, resources=["*"]))
        acknowledge(
            role,
            "IAM5",
            "Resource '*' is required by the X-Ray PutTraceSegments/PutTelemetryRecords actions of active tracing"
            + (" and by the ec2 network-interface actions Lambda needs in a VPC" if spec.in_vpc else "")
            + "; these actions do not support resource-level permissions.",
            findings=("Resource::*",),
        )
        environment = {
            names.ENV_POWERTOOLS_SERVICE_NAME: names.service_name(spec.name),
            names.ENV_POWERTOOLS_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
            names.ENV_LOG_LEVEL: config.log_level,
        }
        environment.update(self._grant(role, spec))
        if spec.name is FunctionName.MIGRATE:
            environment[names.ENV_MIGRATIONS_DIR] = f"{LAMBDA_TASK_ROOT}/{MIGRATIONS_DIR_IN_FUNCTION}"
        code_dir = self.assets.function_code(spec.name.value)
        network = self.network
        function = lambda_.Function(
            self,
            construct_id,
            description=spec.description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(code_dir), exclude=_BUILT_ASSET_EXCLUDES),
            layers=[self.layer],
            memory_size=spec.memory_mb,
            timeout=spec.timeout,
            environment=environment,
            role=role,
            log_group=log_group,
            tracing=lambda_.Tracing.ACTIVE,
            reserved_concurrent_executions=config.reserved_concurrency.get(spec.name),
            vpc=network.vpc if spec.in_vpc else None,
            vpc_subnets=network.function_subnets if spec.in_vpc else None,
            security_groups=[network.functions_security_group] if spec.in_vpc else None,
        )
        acknowledge(
            function,
            "L1",
            "Python 3.12 is pinned on purpose: the shared layer's compiled wheels (psycopg-binary, pydantic-core) are "
            "built for cp312 arm64. Move runtime and layer build together.",
        )
        return function

    def _grant(self, role: iam.Role, spec: FunctionSpec) -> dict[str, str]:
        """Grant what the spec lists and return the environment variables those accesses need."""
        data = self.data
        key_arn = data.key.key_arn
        environment: dict[str, str] = {}

        def allow(actions: list[str], resources: list[str]) -> None:
            role.add_to_policy(iam.PolicyStatement(actions=actions, resources=resources))

        def read_secret(secret: secretsmanager.ISecret) -> None:
            # Secret.grant_read would put this role into the data key's policy, making the data stack depend on
            # this one; the identity policy alone is enough because the key policy trusts the account.
            allow(["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], [secret.secret_arn])
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt"],
                    resources=[key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com"}},
                )
            )

        accesses = spec.accesses
        database_role = spec.database_role
        if database_role is not None:
            # The secret of the one role the function connects as (billing.db.roles.FUNCTION_ROLES), no other.
            database_secret = data.database_secrets[database_role]
            read_secret(database_secret)
            environment |= {
                names.ENV_DATABASE_SECRET_ARN: database_secret.secret_arn,
                names.ENV_DATABASE_PROXY_ENDPOINT: data.proxy.endpoint,
                names.ENV_DATABASE_NAME: names.DATABASE_NAME,
                names.ENV_AUTHORITATIVE_WRITE_ENABLED: "true",
            }
        if Access.READ_DATABASE_LOGIN_SECRETS in accesses:
            for secret in data.login_secrets.values():
                read_secret(secret)
            environment[names.ENV_DATABASE_LOGIN_SECRET_ARNS] = self.to_json_string(
                {role.value: secret.secret_arn for role, secret in data.login_secrets.items()}
            )
        if accesses & {Access.SEND_RETRY, Access.CONSUME_RETRY}:
            environment[names.ENV_RETRY_QUEUE_URL] = data.retry_queue.queue_url
        for access, queue in ((Access.SEND_RETRY, data.retry_queue), (Access.SEND_DLQ, data.dead_letter_queue)):
            if access in accesses:
                allow(["sqs:SendMessage"], [queue.queue_arn])
                # An SSE-KMS queue needs the producer to be able to create and read the data key.
                allow(["kms:GenerateDataKey", "kms:Decrypt"], [key_arn])
        # CONSUME_RETRY is granted by the SQS event source mapping (receive, delete, change visibility, decrypt).
        if Access.CONSUME_DLQ in accesses:
            data.dead_letter_queue.grant_consume_messages(role)
        if accesses & {Access.SEND_DLQ, Access.CONSUME_DLQ}:
            environment[names.ENV_DLQ_URL] = data.dead_letter_queue.queue_url
        if Access.SEND_AUTH_FAILURES in accesses:
            allow(["sqs:SendMessage"], [data.audit_intake_queue.queue_arn])
            allow(["kms:GenerateDataKey", "kms:Decrypt"], [key_arn])
        if Access.RECORD_AUTH_FAILURES in accesses:
            # Receive and delete only: no ChangeMessageVisibility, no purge, no sending of its own.
            allow(["sqs:ReceiveMessage", "sqs:DeleteMessage"], [data.audit_intake_queue.queue_arn])
            allow(["kms:Decrypt"], [key_arn])
        if accesses & {Access.SEND_AUTH_FAILURES, Access.RECORD_AUTH_FAILURES}:
            environment[names.ENV_AUDIT_INTAKE_QUEUE_URL] = data.audit_intake_queue.queue_url
        # (bucket prefix, object key pattern) of every object ARN pattern granted, for the IAM5 acknowledgment.
        object_patterns: list[tuple[str, str]] = []
        if Access.READ_SETTLEMENT_FILES in accesses:
            bucket_name = self._bucket_name(names.SETTLEMENT_BUCKET_PREFIX)
            allow(["s3:ListBucket"], [f"arn:{self.partition}:s3:::{bucket_name}"])
            allow(["s3:GetObject"], [f"arn:{self.partition}:s3:::{bucket_name}/*"])
            allow(["kms:Decrypt"], [key_arn])
            environment[names.ENV_SETTLEMENT_BUCKET] = bucket_name
            object_patterns.append((names.SETTLEMENT_BUCKET_PREFIX, "*"))
        if Access.WRITE_REPORTS in accesses:
            bucket_name = self._bucket_name(names.REPORTS_BUCKET_PREFIX)
            allow(["s3:PutObject"], [f"arn:{self.partition}:s3:::{bucket_name}/*"])
            # Decrypt too: multipart uploads read back the data key of the parts.
            allow(["kms:GenerateDataKey", "kms:Decrypt"], [key_arn])
            environment[names.ENV_REPORTS_BUCKET] = bucket_name
            object_patterns.append((names.REPORTS_BUCKET_PREFIX, "*"))
        if Access.WRITE_AUDIT_CHECKPOINTS in accesses:
            bucket_name = self._bucket_name(names.AUDIT_CHECKPOINTS_BUCKET_PREFIX)
            bucket_arn = f"arn:{self.partition}:s3:::{bucket_name}"
            objects = f"{AUDIT_CHECKPOINT_OBJECT_PREFIX}*"
            # ListBucket: without it S3 answers a checkpoint not yet written with 403, not the 404 the store expects.
            # GetBucketObjectLockConfiguration: the store refuses to write to a bucket without Object Lock.
            allow(["s3:ListBucket", "s3:GetBucketObjectLockConfiguration"], [bucket_arn])
            # PutObjectRetention: a PutObject that sets ObjectLockMode and a retain-until date needs it too. Nothing
            # may delete or shorten a retention (no DeleteObject*, no BypassGovernanceRetention).
            allow(["s3:GetObject", "s3:PutObject", "s3:PutObjectRetention"], [f"{bucket_arn}/{objects}"])
            allow(["kms:GenerateDataKey", "kms:Decrypt"], [key_arn])
            environment[names.ENV_AUDIT_CHECKPOINTS_BUCKET] = bucket_name
            environment[names.ENV_AUDIT_REQUIRE_OBJECT_LOCK] = "true"
            object_patterns.append((names.AUDIT_CHECKPOINTS_BUCKET_PREFIX, objects))
        if object_patterns:
            acknowledge(
                role,
                "IAM5",
                "Object actions need an object ARN pattern (<bucket>/<prefix>*); each statement names the one bucket "
                "this function reads or writes.",
                findings=tuple(
                    f"Resource::arn:<AWS::Partition>:s3:::{prefix}-<AWS::AccountId>-<AWS::Region>/{pattern}"
                    for prefix, pattern in object_patterns
                ),
            )
        if Access.PUT_EVENTS in accesses:
            data.event_bus.grant_put_events_to(role)
            environment[names.ENV_EVENT_BUS_NAME] = data.event_bus.event_bus_name
        if Access.READ_WEBHOOK_SECRETS in accesses:
            # No variable: the function derives each name with billing.resource_names.webhook_secret_name().
            for secret in data.webhook_secrets.values():
                read_secret(secret)
        if Access.CALL_PROVIDERS in accesses:
            for provider, secret in data.provider_secrets.items():
                read_secret(secret)
                environment[names.ENV_PROVIDER_CREDENTIAL_SECRET_IDS[provider]] = secret.secret_arn
            if self.config.provider_return_url:
                environment[names.ENV_PROVIDER_RETURN_URL] = self.config.provider_return_url
            if self.config.public_api_url:
                environment[names.ENV_PUBLIC_API_URL] = self.config.public_api_url
        if Access.READ_JWT_SECRET in accesses:
            read_secret(data.jwt_secret)
            environment[names.ENV_JWT_SECRET_ARN] = data.jwt_secret.secret_arn
        if Access.VAULT_KMS in accesses:
            # One half of the lock; the other is the key policy, which admits this role's ARN alone. Both hold the
            # call to the encryption context the vault binds each card's data key to.
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=list(VAULT_KEY_USE_ACTIONS),
                    resources=[data.vault_key.key_arn],
                    conditions=dict(VAULT_KEY_USE_CONDITIONS),
                )
            )
            environment[names.ENV_VAULT_KMS_KEY_ID] = data.vault_key.key_arn
        if Access.READ_FINGERPRINT_SECRET in accesses:
            read_secret(data.fingerprint_secret)
            environment[names.ENV_FINGERPRINT_SECRET_ID] = data.fingerprint_secret.secret_arn
        if Access.READ_AUDIT_KEYS in accesses:
            read_secret(data.audit_key_secret)
            environment[names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID] = data.audit_key_secret.secret_arn
        if Access.WATCH_CREDENTIAL_ROTATIONS in accesses:
            # The version ids and their stages only: DescribeSecret returns no value and needs no key.
            watched = [secret.secret_arn for secret in data.credential_secrets]
            allow(["secretsmanager:DescribeSecret"], watched)
            environment[names.ENV_AUDIT_WATCHED_CREDENTIALS] = self.to_json_string(watched)
        return environment

    def _bucket_name(self, prefix: str) -> str:
        """Bucket names are derived, not imported: no cross-stack export, and the ARN reads plainly in policies."""
        return names.bucket_name(prefix, self.account, self.region)

    def _schedules(self) -> None:
        fns = self.functions

        def schedule(
            construct_id: str,
            function: FunctionName,
            expression: str,
            payload: dict[str, str],
            *,
            retries: int,
            max_age: Duration,
        ) -> None:
            function_logical_id = self.resolve(self.get_logical_id(cast(CfnElement, fns[function].node.default_child)))
            acknowledge(
                self,
                "IAM5",
                "EventBridge Scheduler's invoke grant covers the function and its versions and aliases (<arn>:*); "
                "it names this one function only.",
                findings=(f"Resource::<{function_logical_id}.Arn>:*",),
            )
            scheduler.Schedule(
                self,
                construct_id,
                description=f"{names.service_name(function)}: {expression}",
                schedule=scheduler.ScheduleExpression.expression(expression),
                target=scheduler_targets.LambdaInvoke(
                    fns[function],
                    input=scheduler.ScheduleTargetInput.from_object(payload),
                    retry_attempts=retries,
                    max_event_age=max_age,
                ),
            )

        # Frequent jobs are not retried and expire with their period: the next tick does the same work.
        schedule(
            "OutboxRelaySchedule",
            FunctionName.OUTBOX_RELAY,
            names.OUTBOX_RELAY_SCHEDULE,
            {},
            retries=0,
            max_age=Duration.minutes(1),
        )
        schedule(
            "ReconcileSchedule",
            FunctionName.RECONCILE,
            names.RECONCILE_SCHEDULE,
            {},
            retries=0,
            max_age=Duration.minutes(5),
        )
        schedule(
            "AuditCheckpointSchedule",
            FunctionName.AUDIT_CHECKPOINT,
            names.AUDIT_CHECKPOINT_SCHEDULE,
            {},
            retries=0,
            max_age=Duration.minutes(1),
        )
        schedule(
            "DailySettlementReportSchedule",
            FunctionName.SETTLEMENT_REPORT,
            names.SETTLEMENT_REPORT_DAILY_SCHEDULE,
            {"period": names.ReportPeriod.DAILY.value},
            retries=2,
            max_age=Duration.hours(1),
        )
        schedule(
            "WeeklySettlementReportSchedule",
            FunctionName.SETTLEMENT_REPORT,
            names.SETTLEMENT_REPORT_WEEKLY_SCHEDULE,
            {"period": names.ReportPeriod.WEEKLY.value},
            retries=2,
            max_age=Duration.hours(1),
        )

    def _migrations_before_rollout(self) -> None:
        """Run the migrations on deploy, after the database exists and before any new code or API goes live."""
        migrate = self.functions[FunctionName.MIGRATE]
        trigger = triggers.Trigger(
            self,
            "RunMigrations",
            handler=migrate,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
            timeout=FUNCTIONS[FunctionName.MIGRATE].timeout,
            execute_on_handler_change=True,
        )
        # A failed migration fails the deploy here, before the functions' new code and the API stage change.
        trigger.execute_before(
            *(fn for name, fn in self.functions.items() if name is not FunctionName.MIGRATE),
            self.api.rest_api.deployment_stage,
        )

    def _seed_key_material_before_rollout(self) -> None:
        """Write the first fingerprint key and the first checkpoint key into their secrets, once, on deploy.

        CloudFormation generates a secret's value only as a string at one top-level key, and both formats nest the key
        under its version or key id, so the data stack creates the secrets with a placeholder and this function
        replaces it before the vault and the checkpointer first run (infra/seed_key_material/handler.py). It can
        describe and write the two secrets, never read them, and writes only while a secret holds its placeholder.
        """
        config = self.config
        data = self.data
        secrets = (data.fingerprint_secret, data.audit_key_secret)
        log_group = logs.LogGroup(
            self, "SeedKeyMaterialLogs", retention=config.log_group_retention, removal_policy=config.removal_policy
        )
        role = iam.Role(
            self,
            "SeedKeyMaterialRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Writes the first version of the fingerprint key and checkpoint key secrets on deploy",
        )
        log_group.grant_write(role)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue"],
                resources=[secret.secret_arn for secret in secrets],
            )
        )
        # Secrets Manager encrypts the new version with the data key on the caller's behalf.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[data.key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com"}},
            )
        )
        self.seed_key_material = function = lambda_.Function(
            self,
            "SeedKeyMaterial",
            description="Deploy only: seeds the fingerprint key and checkpoint key secrets in their JSON shapes",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=HANDLER,
            code=lambda_.Code.from_asset(str(SEED_KEY_MATERIAL_SOURCE), exclude=_ASSET_EXCLUDES),
            # The shapes come from the code that parses them (billing.instruments.fingerprints, billing.audit.keys).
            layers=[self.layer],
            memory_size=256,
            timeout=SEED_KEY_MATERIAL_TIMEOUT,
            environment={
                names.ENV_FINGERPRINT_SECRET_ID: data.fingerprint_secret.secret_arn,
                names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: data.audit_key_secret.secret_arn,
            },
            role=role,
            log_group=log_group,
            # Secrets Manager only, over its public endpoint: no VPC, like the authorizer.
        )
        acknowledge(
            function,
            "L1",
            "Python 3.12 is pinned on purpose: it imports the shared layer, whose compiled wheels are built for cp312 "
            "arm64. Move runtime and layer build together.",
        )
        trigger = triggers.Trigger(
            self,
            "SeedKeyMaterialOnce",
            handler=function,
            invocation_type=triggers.InvocationType.REQUEST_RESPONSE,
            timeout=SEED_KEY_MATERIAL_TIMEOUT,
            # Once, when the stack is created: later code changes must not run it again (it would do nothing anyway).
            execute_on_handler_change=False,
        )
        trigger.execute_before(*(self.functions[name] for name, spec in FUNCTIONS.items() if _reads_seeded_keys(spec)))


def _reads_seeded_keys(spec: FunctionSpec) -> bool:
    return bool(spec.accesses & {Access.READ_FINGERPRINT_SECRET, Access.READ_AUDIT_KEYS})
