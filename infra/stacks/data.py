"""Data stack: everything that holds state: key, database, secrets, buckets, queues, event bus and their alarms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import jsii
from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk.interfaces import aws_events as events_refs
from constructs import Construct

from billing import resource_names as names
from billing.db.roles import LOGIN_USERS, DatabaseRole
from billing.domain.transitions import TRANSITIONS, TransitionMethod
from infra.config import StageConfig
from infra.functions import AUDIT_INTAKE_VISIBILITY_TIMEOUT, RETRY_QUEUE_VISIBILITY_TIMEOUT, vault_role_name
from infra.nag import acknowledge
from infra.stacks.network import NetworkStack

ENGINE_VERSION = rds.AuroraPostgresEngineVersion.VER_16_13
POSTGRES_PORT = 5432
SECRET_ROTATION_INTERVAL = Duration.days(30)
# Never in a generated database password: the CDK's own RDS default (characters that break connection strings, shells
# and the rotation function's SQL). The login users' secrets and their rotations share it, so every rotated password
# obeys the same rule as the first.
PASSWORD_EXCLUDE_CHARACTERS = " %+~`#$&*()|[]{}:;<>?!'/@\"\\"  # noqa: S105 (a rule for passwords, not one)
# Characters of the generated HS256 key: 64 alphanumerics is about 380 bits, above the 256 RFC 7518 asks for.
JWT_KEY_LENGTH = 64
# SQS keeps a message at most 14 days; alarm well before a parked message would be dropped.
DLQ_RETENTION = Duration.days(14)
DLQ_MAX_AGE_ALARM = Duration.days(10)
# SQS's longest: rejected tokens wait this long for a checkpointer that is down before SQS drops them.
AUDIT_INTAKE_RETENTION = Duration.days(14)
# Settlement files and reports are read a lot in their first month and rarely afterwards.
INFREQUENT_ACCESS_AFTER = Duration.days(30)
NONCURRENT_VERSION_EXPIRATION = Duration.days(30)
# Who touched the settlement files and reports: kept a year in every stage (access logs are small).
ACCESS_LOG_EXPIRATION = Duration.days(365)
# Incomplete uploads of a locked bucket are removed quickly: a checkpoint is a few hundred bytes, never multipart.
AUDIT_INCOMPLETE_UPLOAD_EXPIRATION = Duration.days(1)
# The encryption context the vault binds every card's data key to (billing.vault.envelope.encryption_context; a test
# compares the two). The vault key is usable only with exactly these keys, both present.
VAULT_ENCRYPTION_CONTEXT_KEYS = ("tenant_id", "vault_token")
VAULT_KEY_USE_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
VAULT_KEY_USE_CONDITIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": list(VAULT_ENCRYPTION_CONTEXT_KEYS)},
        "Null": {f"kms:EncryptionContext:{key}": "false" for key in VAULT_ENCRYPTION_CONTEXT_KEYS},
    }
)
# Administration of the vault key by the account's IAM principals: AWS's documented key-administrator actions without
# kms:Create* (which holds CreateGrant, a way around this policy) but with CreateAlias. No cryptographic operation is
# delegated to IAM: whatever an IAM policy says, only the statement for the vault role lets anyone use the key.
VAULT_KEY_ADMINISTRATION_ACTIONS = (
    "kms:CreateAlias",
    "kms:Describe*",
    "kms:Enable*",
    "kms:List*",
    "kms:Put*",
    "kms:Update*",
    "kms:Revoke*",
    "kms:Disable*",
    "kms:Get*",
    "kms:Delete*",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
    "kms:RotateKeyOnDemand",
)
# Failed and rejected executions: the example rule's selection, taken from the domain's event types.
FAILURE_EVENT_TYPES = (
    TRANSITIONS[TransitionMethod.MARK_FAILED].event_type,
    TRANSITIONS[TransitionMethod.REJECT_FROM_PENDING].event_type,
)


class DataStack(Stack):
    """Stateful resources; they outlive a `cdk destroy` of the stage when retainData is set."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, network: NetworkStack, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        self.key = kms.Key(
            self,
            "DataKey",
            alias=f"alias/{names.APP_NAME}-{config.name}-data",
            description="Encrypts the billing database, secrets, buckets, queues and alarm topic",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
        )
        self._database(network)
        self._secrets()
        self._buckets()
        self._vault_keys()
        self._audit_trail()
        # Every credential the stage holds, whose rotations the audit checkpoint function records.
        self.credential_secrets: tuple[secretsmanager.ISecret, ...] = (
            *self.database_secrets.values(),
            *self.webhook_secrets.values(),
            *self.provider_secrets.values(),
            self.jwt_secret,
            self.fingerprint_secret,
            self.audit_key_secret,
        )
        self._queues_and_alarms()
        self._event_bus()

    def _database(self, network: NetworkStack) -> None:
        config = self.config
        cluster_identifier = f"{names.APP_NAME}-{config.name}"
        # Created here rather than by RDS so its retention is ours (RDS would create it with no expiry).
        postgres_logs = logs.LogGroup(
            self,
            "DatabaseLogs",
            log_group_name=f"/aws/rds/cluster/{cluster_identifier}/postgresql",
            retention=config.log_group_retention,
            removal_policy=config.removal_policy,
        )
        self.database_security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=network.vpc,
            description="Aurora: PostgreSQL from RDS Proxy and the secret rotation function",
        )
        self.proxy_security_group = ec2.SecurityGroup(
            self, "ProxySecurityGroup", vpc=network.vpc, description="RDS Proxy: PostgreSQL from the functions"
        )
        self.cluster = rds.DatabaseCluster(
            self,
            "Database",
            engine=rds.DatabaseClusterEngine.aurora_postgres(version=ENGINE_VERSION),
            cluster_identifier=cluster_identifier,
            writer=rds.ClusterInstance.serverless_v2("Writer", publicly_accessible=False),
            # Readers in the other AZ take over on failover; scale_with_writer keeps them warm enough to.
            readers=[
                rds.ClusterInstance.serverless_v2(f"Reader{index}", scale_with_writer=True, publicly_accessible=False)
                for index in range(1, config.aurora_readers + 1)
            ],
            serverless_v2_min_capacity=config.aurora_min_capacity,
            serverless_v2_max_capacity=config.aurora_max_capacity,
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            security_groups=[self.database_security_group],
            credentials=rds.Credentials.from_generated_secret(
                names.DATABASE_ADMIN_USER, secret_name=names.DATABASE_SECRET_NAME, encryption_key=self.key
            ),
            default_database_name=names.DATABASE_NAME,
            port=POSTGRES_PORT,
            storage_encrypted=True,
            storage_encryption_key=self.key,
            iam_authentication=True,
            parameters={"rds.force_ssl": "1"},
            cloudwatch_logs_exports=["postgresql"],
            deletion_protection=config.deletion_protection,
            backup=rds.BackupProps(
                retention=Duration.days(config.backup_retention_days), preferred_window="02:00-03:00"
            ),
            preferred_maintenance_window="sun:03:30-sun:04:30",
            copy_tags_to_snapshot=True,
            removal_policy=config.database_removal_policy,
        )
        self.cluster.node.add_dependency(postgres_logs)
        if not config.deletion_protection:
            acknowledge(
                self.cluster,
                "RDS10",
                f"Stage {config.name} is disposable: deletion protection is off so `cdk destroy` can remove it. "
                "Stages holding real money movements set deletionProtection in cdk.json.",
            )
        assert self.cluster.secret is not None  # from_generated_secret always creates one
        self.database_secret = self.cluster.secret
        # Rotation runs in the function subnets and reaches Secrets Manager through the VPC endpoint's private DNS.
        self.cluster.add_rotation_single_user(
            automatically_after=SECRET_ROTATION_INTERVAL, vpc_subnets=network.function_subnets
        )

        self._login_user_secrets(network)

        self.proxy = self.cluster.add_proxy(
            "Proxy",
            # The proxy logs in to Aurora as whoever its client names, with that user's secret: it needs every one.
            secrets=list(self.database_secrets.values()),
            vpc=network.vpc,
            vpc_subnets=network.database_subnets,
            security_groups=[self.proxy_security_group],
            require_tls=True,
            # Lambda bursts open many short sessions; the proxy multiplexes them onto a bounded pool.
            max_connections_percent=90,
            idle_client_timeout=Duration.minutes(5),
            borrow_timeout=Duration.seconds(30),
            db_proxy_name=cluster_identifier,
        )
        self.cluster.connections.allow_default_port_from(self.proxy_security_group, "RDS Proxy to Aurora")
        # Through Connections, the functions' matching egress rule is created too (in this stack, not the network's).
        self.proxy.connections.allow_from(
            network.functions_security_group, ec2.Port.tcp(POSTGRES_PORT), "Functions to RDS Proxy"
        )

    def _login_user_secrets(self, network: NetworkStack) -> None:
        """One rotated secret per login user, attached to the cluster (host, port, engine) like the admin's."""
        self.login_secrets: Mapping[DatabaseRole, secretsmanager.ISecret] = MappingProxyType(
            {role: self._login_user_secret(network, role) for role in LOGIN_USERS}
        )
        # Whose secret a function reads to connect as each role. The owner is no login user: the migrations connect
        # as the cluster admin and SET ROLE billing_owner.
        self.database_secrets: Mapping[DatabaseRole, secretsmanager.ISecret] = MappingProxyType(
            {DatabaseRole.OWNER: self.database_secret, **self.login_secrets}
        )
        missing = set(DatabaseRole) - set(self.database_secrets)
        if missing:
            raise ValueError(
                f"no secret to connect as {sorted(missing)}: give the role a login user (billing.db.roles)"
            )

    def _login_user_secret(self, network: NetworkStack, role: DatabaseRole) -> secretsmanager.ISecret:
        user = LOGIN_USERS[role]
        construct_id = f"{role.name.title()}UserSecret"
        secret = rds.DatabaseSecret(
            self,
            construct_id,
            username=user.name,
            dbname=names.DATABASE_NAME,
            secret_name=names.database_login_secret_name(user.name),
            encryption_key=self.key,
            exclude_characters=PASSWORD_EXCLUDE_CHARACTERS,
        )
        secret.apply_removal_policy(self.config.removal_policy)
        attached = secret.attach(self.cluster)
        # Single-user rotation, as the admin's: the rotation function logs in as the user and changes its own
        # password, from the function subnets (Secrets Manager through the VPC endpoint's private DNS).
        secretsmanager.SecretRotation(
            self,
            f"{construct_id}Rotation",
            application=secretsmanager.SecretRotationApplication.POSTGRES_ROTATION_SINGLE_USER,
            secret=attached,
            target=self.cluster,
            vpc=network.vpc,
            vpc_subnets=network.function_subnets,
            automatically_after=SECRET_ROTATION_INTERVAL,
            exclude_characters=PASSWORD_EXCLUDE_CHARACTERS,
            # The user exists only once the migrate function (service stack, deployed after this one) has created it
            # with this secret's password: a rotation at creation would find no user to log in as.
            rotate_immediately_on_update=False,
        )
        return attached

    def _secrets(self) -> None:
        config = self.config
        self.webhook_secrets = {
            provider: self._secret(
                f"WebhookSecret{provider.title()}",
                names.webhook_secret_name(provider),
                f"{provider} webhook signing secret: replace the generated value with the provider's",
                "A webhook signing secret is issued by the payment provider; no rotation Lambda can mint one. It is "
                "rotated at the provider and the new value added here (the value is a list, for an overlap window).",
            )
            for provider in names.WEBHOOK_PROVIDERS
        }
        # {"platform": {...}, "tenants": {"<tenant id>": {...}}} (billing.providers.credentials): the keys come from the
        # providers, so the generated value is only a placeholder, which the functions refuse as malformed until an
        # operator puts the real document (docs/infrastructure.md, "After the first deploy").
        self.provider_secrets = {
            provider: self._secret(
                f"ProviderSecret{provider.title()}",
                names.provider_secret_name(provider),
                f"{provider} API credentials (platform account, tenant overrides): replace the generated value",
                "A payment provider's API key is issued by the provider; no rotation Lambda can mint one. It is rolled "
                "at the provider, the new value put here, and the old key revoked once the functions' cache expired.",
            )
            for provider in names.PROVIDERS_WITH_CREDENTIALS
        }
        # The shape billing.auth.tokens reads: {"issuer": ..., "key": ...}; the key is generated here and never
        # leaves Secrets Manager (whoever issues tokens reads it from there).
        self.jwt_secret = self._secret(
            "JwtSecret",
            names.JWT_SECRET_NAME,
            "Issuer and HS256 key the authorizer verifies bearer tokens with",
            "Rotating the token key needs billing.auth.tokens' overlap procedure (prepend the new key, wait out the "
            "authorizer cache, switch the issuer, drop the old key); operators run it, no rotation Lambda exists.",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"issuer": f"{names.APP_NAME}-{config.name}"}),
                generate_string_key="key",
                password_length=JWT_KEY_LENGTH,
                exclude_punctuation=True,
            ),
        )

    def _secret(
        self,
        construct_id: str,
        secret_name: str,
        description: str,
        rotation_reason: str,
        *,
        generate_secret_string: secretsmanager.SecretStringGenerator | None = None,
    ) -> secretsmanager.Secret:
        """A secret under the stack key; rotation_reason says why no rotation Lambda rotates it (AwsSolutions-SMG4)."""
        secret = secretsmanager.Secret(
            self,
            construct_id,
            secret_name=secret_name,
            description=description,
            encryption_key=self.key,
            generate_secret_string=generate_secret_string,
            removal_policy=self.config.removal_policy,
        )
        acknowledge(secret, "SMG4", rotation_reason)
        return secret

    def _buckets(self) -> None:
        config = self.config
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogsBucket",
            bucket_name=names.bucket_name(names.ACCESS_LOGS_BUCKET_PREFIX, self.account, self.region),
            # S3 server access logging cannot deliver into a bucket encrypted with a customer managed key.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-access-logs",
                    expiration=ACCESS_LOG_EXPIRATION,
                    noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION,
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            removal_policy=config.removal_policy,
        )
        acknowledge(
            self.access_logs_bucket,
            "S1",
            "This is the server access log target of the billing buckets; logging it into itself would recurse.",
        )
        self.settlement_bucket = self._data_bucket(
            "SettlementBucket", names.SETTLEMENT_BUCKET_PREFIX, config.settlement_file_retention_days
        )
        self.reports_bucket = self._data_bucket(
            "ReportsBucket", names.REPORTS_BUCKET_PREFIX, config.report_retention_days
        )

    def _vault_keys(self) -> None:
        """The card vault's KMS key and its fingerprint key secret (docs/pci.md, "Keys, and how they rotate")."""
        config = self.config
        account = iam.AccountRootPrincipal()
        # The role is created by the service stack, deployed after this one: named by its ARN in a condition, since
        # a key policy may not name a principal that does not exist yet.
        self.vault_role_arn = self.format_arn(
            service="iam", region="", resource="role", resource_name=vault_role_name(config.name, self.region)
        )
        self.vault_key = kms.Key(
            self,
            "VaultKey",
            alias=names.VAULT_KMS_KEY_ALIAS,
            description="Card vault: wraps the data key of each stored card number; used by the vault function only",
            enable_key_rotation=True,
            removal_policy=config.removal_policy,
            # Given whole, so the CDK adds no default statement (that one delegates kms:* to IAM).
            policy=iam.PolicyDocument(
                statements=[
                    iam.PolicyStatement(
                        sid="AdministerTheKeyNotUseIt",
                        principals=[account],
                        actions=list(VAULT_KEY_ADMINISTRATION_ACTIONS),
                        resources=["*"],
                    ),
                    # The account principal with a condition on the caller's ARN: the vault role's identity policy
                    # must allow the call too (the service stack grants it), and no other principal can be allowed.
                    iam.PolicyStatement(
                        sid="OnlyTheVaultFunctionUsesDataKeys",
                        principals=[account],
                        actions=list(VAULT_KEY_USE_ACTIONS),
                        resources=["*"],
                        conditions={"ArnEquals": {"aws:PrincipalArn": self.vault_role_arn}, **VAULT_KEY_USE_CONDITIONS},
                    ),
                ]
            ),
        )
        # {"current": "v1", "keys": {"v1": "<base64>"}} (billing.instruments.fingerprints): CloudFormation can only
        # generate a value at a top-level key, so the first version is written by the service stack's SeedKeyMaterial
        # trigger; the value generated here is a placeholder it replaces.
        self.fingerprint_secret = self._secret(
            "FingerprintKeysSecret",
            names.FINGERPRINT_SECRET_NAME,
            "Card vault: versioned HMAC-SHA-256 fingerprint keys; read by the vault function only",
            "A new fingerprint key version must be added beside the old ones (which verify stored fingerprints until "
            "the vault re-keys them) and made current by an operator; a rotation Lambda would drop the old versions.",
        )

    def _audit_trail(self) -> None:
        """The audit checkpoints' Object Lock bucket and their signing key ring (docs/pci.md, "Audit trail")."""
        prefix = names.AUDIT_CHECKPOINTS_BUCKET_PREFIX
        self.audit_checkpoints_bucket = s3.Bucket(
            self,
            "AuditCheckpointsBucket",
            bucket_name=names.bucket_name(prefix, self.account, self.region),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            # Compliance mode: no one, the root user included, can delete or overwrite a version before its
            # retain-until date, nor shorten it (PCI DSS 10.5.1, 10.3.2). The function also sets the same retention
            # on every object it writes.
            object_lock_enabled=True,
            object_lock_default_retention=s3.ObjectLockRetention.compliance(
                Duration.days(names.AUDIT_CHECKPOINT_RETENTION_DAYS)
            ),
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=f"{prefix}/",
            # No expiration: a checkpoint is evidence as long as the database keeps the entries it covers.
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="abort-incomplete-uploads",
                    abort_incomplete_multipart_upload_after=AUDIT_INCOMPLETE_UPLOAD_EXPIRATION,
                )
            ],
            # Retained in every stage: CloudFormation could not delete it anyway while a locked version is in it.
            removal_policy=RemovalPolicy.RETAIN,
        )
        # {"active": "<key id>", "keys": {"<key id>": "<base64>"}} (billing.audit.keys): seeded like the fingerprint
        # keys, by the service stack's SeedKeyMaterial trigger.
        self.audit_key_secret = self._secret(
            "AuditCheckpointKeysSecret",
            names.AUDIT_CHECKPOINT_KEY_SECRET_NAME,
            "Audit trail: HMAC-SHA-256 key ring that signs checkpoints; read by audit_checkpoint only",
            "`python -m billing.audit rotate-key` rotates the ring: it adds a key, makes it active and keeps the old "
            "ones, which verify the checkpoints that name them; a rotation Lambda would replace the ring instead.",
        )

    def _data_bucket(self, construct_id: str, prefix: str, retention_days: int) -> s3.Bucket:
        transitions = (
            [s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=INFREQUENT_ACCESS_AFTER)]
            if retention_days > INFREQUENT_ACCESS_AFTER.to_days()
            else []
        )
        return s3.Bucket(
            self,
            construct_id,
            bucket_name=names.bucket_name(prefix, self.account, self.region),
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # One data key per bucket instead of a KMS call per object: cheaper and within KMS request quotas.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=f"{prefix}/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="tier-and-expire",
                    transitions=transitions,
                    expiration=Duration.days(retention_days),
                    noncurrent_version_expiration=NONCURRENT_VERSION_EXPIRATION,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=self.config.removal_policy,
        )

    def _queue(self, construct_id: str, queue_name: str, **props: Any) -> sqs.Queue:
        """A queue under the stack key that refuses plain-HTTP requests."""
        return sqs.Queue(
            self,
            construct_id,
            queue_name=queue_name,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=self.key,
            enforce_ssl=True,
            removal_policy=self.config.removal_policy,
            **props,
        )

    def _queues_and_alarms(self) -> None:
        config = self.config
        self.dead_letter_queue = self._queue(
            "RetryDeadLetterQueue",
            names.DEAD_LETTER_QUEUE_NAME,
            retention_period=DLQ_RETENTION,
        )
        acknowledge(
            self.dead_letter_queue,
            "SQS3",
            "This queue is the dead-letter queue of the retry queue; a DLQ of a DLQ would only hide parked messages.",
        )
        self.retry_queue = self._queue(
            "RetryQueue",
            names.RETRY_QUEUE_NAME,
            visibility_timeout=RETRY_QUEUE_VISIBILITY_TIMEOUT,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=names.RETRY_MAX_RECEIVE_COUNT
            ),
        )
        self.audit_intake_queue = self._queue(
            "AuditIntakeQueue",
            names.AUDIT_INTAKE_QUEUE_NAME,
            visibility_timeout=AUDIT_INTAKE_VISIBILITY_TIMEOUT,
            retention_period=AUDIT_INTAKE_RETENTION,
        )
        acknowledge(
            self.audit_intake_queue,
            "SQS3",
            "The audit checkpoint function drains this queue itself (no event source mapping, so no receive count to "
            "redrive on): a message it cannot record stays here, is received again every run and is alarmed on by "
            "age; a DLQ would only move rejected tokens out of the path into the trail.",
        )

        self.alarm_topic = sns.Topic(
            self, "AlarmTopic", topic_name=f"{names.APP_NAME}-alarms", master_key=self.key, enforce_ssl=True
        )
        if config.alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        # CloudWatch publishes alarms to the encrypted topic with its own service principal.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToUseTheKey",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
            )
        )
        one_minute = Duration.minutes(1)
        alarms = [
            cloudwatch.Alarm(
                self,
                "DeadLetterQueueNotEmpty",
                alarm_description="A retry message failed every attempt and is parked in the DLQ: investigate, "
                "then redrive it with the retry_dlq function",
                metric=self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=one_minute, statistic="Maximum"
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                threshold=0,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "RetryQueueOldMessage",
                alarm_description="The retry queue is not being drained: its oldest message is older than expected",
                metric=self.retry_queue.metric_approximate_age_of_oldest_message(
                    period=one_minute, statistic="Maximum"
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                threshold=config.retry_queue_max_age_alarm_seconds,
                evaluation_periods=3,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "DeadLetterQueueMessageNearExpiry",
                alarm_description="A parked message will be dropped when it reaches the DLQ's 14-day retention",
                metric=self.dead_letter_queue.metric_approximate_age_of_oldest_message(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                threshold=DLQ_MAX_AGE_ALARM.to_seconds(),
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self,
                "AuditIntakeQueueOldMessage",
                alarm_description="Rejected bearer tokens are not reaching the audit trail: the audit checkpoint "
                "function is not draining the audit intake queue",
                metric=self.audit_intake_queue.metric_approximate_age_of_oldest_message(
                    period=Duration.minutes(5), statistic="Maximum"
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                # Drained every minute: a quarter of an hour is a checkpointer down or a message it cannot record.
                threshold=Duration.minutes(15).to_seconds(),
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            *self._payout_mismatch_alarms(),
        ]
        for alarm in alarms:
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.alarm_topic))

    def _payout_mismatch_alarms(self) -> list[cloudwatch.Alarm]:
        """A settlement payout whose items do not add up to what the provider paid out: money missing from the bank.

        The settlement_report function emits the metric on every run, zero included, with its `period` dimension:
        daily and weekly runs cover the same days, so each has its alarm and either one finding a mismatch fires.
        """
        settlement = names.service_name(names.FunctionName.SETTLEMENT_REPORT)
        return [
            cloudwatch.Alarm(
                self,
                f"SettlementPayoutMismatch{kind.value.title()}",
                alarm_description=f"A {kind.value} settlement report found a payout that does not balance: its "
                "items' net amounts differ from the payout line the provider wrote. Open the period's report "
                "(reports bucket, or GET /settlement-reports) and compare the batch's computed and reported figures",
                metric=cloudwatch.Metric(
                    namespace=names.METRICS_NAMESPACE,
                    metric_name=names.SETTLEMENT_PAYOUT_MISMATCH_METRIC,
                    dimensions_map={"service": settlement, "period": kind.value},
                    statistic="Sum",
                    period=Duration.hours(1),
                ),
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                threshold=0,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for kind in names.ReportPeriod
        ]

    def _event_bus(self) -> None:
        config = self.config
        self.event_bus = events.EventBus(
            self, "EventBus", event_bus_name=names.EVENT_BUS_NAME, description="Billing execution events"
        )
        # Replay after an incident: `aws events start-replay` from this archive re-delivers to the rules.
        self.event_bus.archive(
            "Archive",
            archive_name=names.EVENT_ARCHIVE_NAME,
            description="Every billing event, for replay",
            event_pattern=events.EventPattern(source=[names.EVENT_SOURCE]),
            retention=Duration.days(config.event_archive_retention_days),
        )
        failures = logs.LogGroup(
            self,
            "FailedExecutionEvents",
            log_group_name=f"/aws/events/{names.APP_NAME}-failed-executions",
            retention=config.log_group_retention,
            removal_policy=config.removal_policy,
        )
        logs.ResourcePolicy(
            self,
            "FailedExecutionEventsPolicy",
            resource_policy_name=f"{names.APP_NAME}-{config.name}-events-to-logs",
            policy_statements=[
                iam.PolicyStatement(
                    principals=[iam.ServicePrincipal("events.amazonaws.com")],
                    actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                    resources=[failures.log_group_arn],
                )
            ],
        )
        events.Rule(
            self,
            "FailedExecutionsRule",
            event_bus=self.event_bus,
            description="Example rule: failed and rejected executions land in a log group to search and alarm on",
            event_pattern=events.EventPattern(source=[names.EVENT_SOURCE], detail_type=list(FAILURE_EVENT_TYPES)),
            targets=[_LogGroupTarget(failures)],
        )


@jsii.implements(events.IRuleTarget)
class _LogGroupTarget:
    """Rule target for a log group whose resource policy is plain CloudFormation, not a custom-resource Lambda."""

    def __init__(self, log_group: logs.LogGroup) -> None:
        self._log_group = log_group

    def bind(self, rule: events_refs.IRuleRef, id: str | None = None) -> events.RuleTargetConfig:
        """Target the log group by its ARN without the trailing `:*` its Arn attribute carries."""
        arn = Stack.of(self._log_group).format_arn(
            service="logs",
            resource="log-group",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
            resource_name=self._log_group.log_group_name,
        )
        return events.RuleTargetConfig(arn=arn, target_resource=self._log_group)
