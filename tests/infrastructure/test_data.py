"""Data stack: Aurora, RDS Proxy, KMS, secrets, buckets, queues and their alarms, the event bus."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from billing import resource_names as names
from billing.db.roles import LOGIN_USERS
from billing.domain.transitions import TRANSITIONS, TransitionMethod
from billing.resource_names import FunctionName
from infra.functions import FUNCTIONS
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure


def _only(resources: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    assert len(resources) == 1, f"expected exactly one, found {sorted(resources)}"
    return next(iter(resources.items()))


def _data_key_id(synth: Synthesized) -> str:
    return cfn.key_with_alias(synth.raw["data"], f"alias/{names.APP_NAME}-{synth.built.config.name}-data")


def test_every_kms_key_rotates_yearly(dev: Synthesized) -> None:
    # The data key and the card vault's key (test_vault_and_audit.py): both customer managed, both rotating.
    keys = cfn.of_type(dev.raw["data"], "AWS::KMS::Key")
    assert len(keys) == 2
    assert all(key["Properties"]["EnableKeyRotation"] is True for key in keys.values())


def test_aurora_is_serverless_v2_postgres_16_encrypted_with_the_data_key(dev: Synthesized) -> None:
    config = dev.built.config
    dev.template("data").has_resource_properties(
        "AWS::RDS::DBCluster",
        {
            "Engine": "aurora-postgresql",
            "EngineVersion": Match.string_like_regexp(r"^16\.\d+$"),
            "StorageEncrypted": True,
            "KmsKeyId": {"Fn::GetAtt": [_data_key_id(dev), "Arn"]},
            "ServerlessV2ScalingConfiguration": {
                "MinCapacity": config.aurora_min_capacity,
                "MaxCapacity": config.aurora_max_capacity,
            },
            "EnableIAMDatabaseAuthentication": True,
            "EnableCloudwatchLogsExports": ["postgresql"],
            "DatabaseName": names.DATABASE_NAME,
        },
    )
    instances = cfn.of_type(dev.raw["data"], "AWS::RDS::DBInstance").values()
    assert {instance["Properties"]["DBInstanceClass"] for instance in instances} == {"db.serverless"}
    assert all(instance["Properties"]["PubliclyAccessible"] is False for instance in instances)


def test_aurora_cluster_parameters_force_tls(dev: Synthesized) -> None:
    dev.template("data").has_resource_properties(
        "AWS::RDS::DBClusterParameterGroup", {"Parameters": {"rds.force_ssl": "1"}}
    )


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_aurora_protection_and_backups_follow_stage_config(stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    config = synth.built.config
    cluster_id, cluster = _only(cfn.of_type(synth.raw["data"], "AWS::RDS::DBCluster"))
    assert cluster["Properties"]["DeletionProtection"] is config.deletion_protection
    assert cluster["Properties"]["BackupRetentionPeriod"] == config.backup_retention_days
    assert cluster["DeletionPolicy"] == ("Snapshot" if config.retain_data else "Delete")
    # Writer plus the configured readers, which prod uses for a standby in the other AZ.
    assert len(cfn.of_type(synth.raw["data"], "AWS::RDS::DBInstance")) == 1 + config.aurora_readers
    assert cluster_id


def test_every_database_secret_rotates_every_30_days(dev: Synthesized) -> None:
    template = dev.template("data")
    template.has_resource_properties(
        "AWS::SecretsManager::Secret", {"Name": names.DATABASE_SECRET_NAME, "KmsKeyId": Match.any_value()}
    )
    # The admin's and each login user's (test_database_roles_infra.py): every secret attached to the cluster.
    attachments = cfn.of_type(dev.raw["data"], "AWS::SecretsManager::SecretTargetAttachment")
    assert len(attachments) == 1 + len(LOGIN_USERS)
    schedules = {
        schedule["Properties"]["SecretId"]["Ref"]: schedule["Properties"]["RotationRules"]
        for schedule in cfn.of_type(dev.raw["data"], "AWS::SecretsManager::RotationSchedule").values()
    }
    assert schedules == {attachment: {"ScheduleExpression": "rate(30 days)"} for attachment in attachments}
    # The hosted rotation applications; each rotation adds the transform, the CDK lists it once.
    assert dev.raw["data"]["Transform"] == ["AWS::Serverless-2016-10-31"]


def test_rds_proxy_requires_tls_and_authenticates_with_the_database_secrets(dev: Synthesized) -> None:
    _, proxy = _only(cfn.of_type(dev.raw["data"], "AWS::RDS::DBProxy"))
    props = proxy["Properties"]
    assert props["EngineFamily"] == "POSTGRESQL"
    assert props["RequireTLS"] is True
    attachments = cfn.of_type(dev.raw["data"], "AWS::SecretsManager::SecretTargetAttachment")
    assert {auth["AuthScheme"] for auth in props["Auth"]} == {"SECRETS"}
    assert sorted(auth["SecretArn"]["Ref"] for auth in props["Auth"]) == sorted(attachments)


def test_proxy_admits_postgres_from_the_functions_only(dev: Synthesized) -> None:
    ingress = [
        rule["Properties"]
        for rule in cfn.of_type(dev.raw["data"], "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["FromPort"] == 5432
    ]
    sources = {json.dumps(rule["SourceSecurityGroupId"]) for rule in ingress}
    # Proxy <- functions SG (imported from the network stack); cluster <- proxy SG and the rotation functions.
    assert any("FunctionsSecurityGroup" in source for source in sources)
    assert all("CidrIp" not in rule for rule in ingress)


def test_webhook_and_jwt_secrets_exist_per_provider_and_use_the_data_key(dev: Synthesized) -> None:
    secrets = {
        secret["Properties"]["Name"]: secret["Properties"]
        for secret in cfn.of_type(dev.raw["data"], "AWS::SecretsManager::Secret").values()
    }
    expected = {names.webhook_secret_name(provider) for provider in names.WEBHOOK_PROVIDERS} | {names.JWT_SECRET_NAME}
    assert expected <= set(secrets)
    key = {"Fn::GetAtt": [_data_key_id(dev), "Arn"]}
    assert all(secrets[name]["KmsKeyId"] == key for name in expected)
    # The authorizer reads {"issuer": ..., "key": ...} (billing.auth.tokens).
    generator = secrets[names.JWT_SECRET_NAME]["GenerateSecretString"]
    assert generator["GenerateStringKey"] == "key"
    assert set(json.loads(generator["SecretStringTemplate"])) == {"issuer"}


@pytest.mark.parametrize("prefix", [names.SETTLEMENT_BUCKET_PREFIX, names.REPORTS_BUCKET_PREFIX])
def test_data_buckets_are_kms_encrypted_versioned_private_tls_only_with_lifecycle(
    prefix: str, dev: Synthesized
) -> None:
    buckets = {
        logical_id: bucket
        for logical_id, bucket in cfn.of_type(dev.raw["data"], "AWS::S3::Bucket").items()
        if bucket["Properties"]["BucketName"]["Fn::Join"][1][0] == f"{prefix}-"
    }
    bucket_id, bucket = _only(buckets)
    props = bucket["Properties"]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [_data_key_id(dev), "Arn"]},
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert props["LoggingConfiguration"]["LogFilePrefix"] == f"{prefix}/"
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    retention = (
        dev.built.config.settlement_file_retention_days
        if prefix == names.SETTLEMENT_BUCKET_PREFIX
        else dev.built.config.report_retention_days
    )
    assert rule["ExpirationInDays"] == retention
    assert rule["NoncurrentVersionExpiration"]["NoncurrentDays"] > 0
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] > 0
    (policy,) = (
        p["Properties"]["PolicyDocument"]
        for p in cfn.of_type(dev.raw["data"], "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    deny_insecure = [s for s in policy["Statement"] if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert len(deny_insecure) == 1
    assert (deny_insecure[0]["Effect"], deny_insecure[0]["Action"], deny_insecure[0]["Principal"]) == (
        "Deny",
        "s3:*",
        {"AWS": "*"},
    )


def test_retry_queue_redrives_to_dlq_after_max_receive_count(dev: Synthesized) -> None:
    queues = {
        queue["Properties"]["QueueName"]: (logical_id, queue["Properties"])
        for logical_id, queue in cfn.of_type(dev.raw["data"], "AWS::SQS::Queue").items()
    }
    dlq_id, dlq = queues[names.DEAD_LETTER_QUEUE_NAME]
    _, retry = queues[names.RETRY_QUEUE_NAME]
    assert retry["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": names.RETRY_MAX_RECEIVE_COUNT,
    }
    # A message stays hidden long enough for six attempts of its consumer's timeout (AWS's guidance).
    consumer_timeout = FUNCTIONS[FunctionName.RETRY_DLQ].timeout.to_seconds()
    assert retry["VisibilityTimeout"] == 6 * consumer_timeout
    key = {"Fn::GetAtt": [_data_key_id(dev), "Arn"]}
    assert retry["KmsMasterKeyId"] == key
    assert dlq["KmsMasterKeyId"] == key
    assert dlq["MessageRetentionPeriod"] == 14 * 24 * 3600


def test_audit_intake_queue_is_encrypted_with_the_data_key_and_outlives_a_stopped_checkpointer(
    dev: Synthesized,
) -> None:
    (intake,) = (
        queue["Properties"]
        for queue in cfn.of_type(dev.raw["data"], "AWS::SQS::Queue").values()
        if queue["Properties"]["QueueName"] == names.AUDIT_INTAKE_QUEUE_NAME
    )
    assert intake["KmsMasterKeyId"] == {"Fn::GetAtt": [_data_key_id(dev), "Arn"]}
    assert intake["MessageRetentionPeriod"] == 14 * 24 * 3600
    # Drained by the function itself, not redriven: a DLQ would take rejected tokens off the path into the trail.
    assert "RedrivePolicy" not in intake
    assert intake["VisibilityTimeout"] > FUNCTIONS[FunctionName.AUDIT_CHECKPOINT].timeout.to_seconds()
    age = _alarms_on(dev, names.AUDIT_INTAKE_QUEUE_NAME)["ApproximateAgeOfOldestMessage"]
    assert age["Threshold"] < 14 * 24 * 3600


def test_queue_policies_deny_requests_without_tls(dev: Synthesized) -> None:
    policies = cfn.of_type(dev.raw["data"], "AWS::SQS::QueuePolicy").values()
    assert len(policies) == 3
    for policy in policies:
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def _alarms_on(synth: Synthesized, queue_name: str) -> dict[str, dict[str, Any]]:
    queue_id = next(
        logical_id
        for logical_id, queue in cfn.of_type(synth.raw["data"], "AWS::SQS::Queue").items()
        if queue["Properties"]["QueueName"] == queue_name
    )
    return {
        str(alarm["Properties"]["MetricName"]): alarm["Properties"]
        for alarm in cfn.of_type(synth.raw["data"], "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"]["Dimensions"]
        == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    }


def test_dlq_alarm_fires_on_the_first_parked_message_and_notifies_the_alarm_topic(dev: Synthesized) -> None:
    alarm = _alarms_on(dev, names.DEAD_LETTER_QUEUE_NAME)["ApproximateNumberOfMessagesVisible"]
    assert (alarm["ComparisonOperator"], alarm["Threshold"], alarm["EvaluationPeriods"]) == (
        "GreaterThanThreshold",
        0,
        1,
    )
    topic_id, _ = _only(cfn.of_type(dev.raw["data"], "AWS::SNS::Topic"))
    assert alarm["AlarmActions"] == [{"Ref": topic_id}]


def test_oldest_message_age_alarms_watch_the_retry_queue_and_the_dlq(dev: Synthesized) -> None:
    retry_age = _alarms_on(dev, names.RETRY_QUEUE_NAME)["ApproximateAgeOfOldestMessage"]
    assert retry_age["Threshold"] == dev.built.config.retry_queue_max_age_alarm_seconds
    dlq_age = _alarms_on(dev, names.DEAD_LETTER_QUEUE_NAME)["ApproximateAgeOfOldestMessage"]
    # Fires before the 14-day retention would silently drop a parked message.
    assert dlq_age["Threshold"] < 14 * 24 * 3600


def test_alarm_topic_is_encrypted_and_the_key_lets_cloudwatch_publish(dev: Synthesized) -> None:
    template = dev.template("data")
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    statements = dev.raw["data"]["Resources"][_data_key_id(dev)]["Properties"]["KeyPolicy"]["Statement"]
    assert any(s["Effect"] == "Allow" and s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in statements)


def test_event_bus_archives_every_billing_event_for_replay(dev: Synthesized) -> None:
    bus_id, _ = _only(cfn.of_type(dev.raw["data"], "AWS::Events::EventBus"))
    dev.template("data").has_resource_properties("AWS::Events::EventBus", {"Name": names.EVENT_BUS_NAME})
    dev.template("data").has_resource_properties(
        "AWS::Events::Archive",
        {
            "ArchiveName": names.EVENT_ARCHIVE_NAME,
            "SourceArn": {"Fn::GetAtt": [bus_id, "Arn"]},
            "EventPattern": {"source": [names.EVENT_SOURCE]},
            "RetentionDays": dev.built.config.event_archive_retention_days,
        },
    )


def test_example_rule_sends_failed_executions_to_a_log_group_allowed_to_receive_them(dev: Synthesized) -> None:
    bus_id, _ = _only(cfn.of_type(dev.raw["data"], "AWS::Events::EventBus"))
    _, rule = _only(cfn.of_type(dev.raw["data"], "AWS::Events::Rule"))
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": bus_id}
    assert props["EventPattern"] == {
        "source": [names.EVENT_SOURCE],
        "detail-type": [
            TRANSITIONS[TransitionMethod.MARK_FAILED].event_type,
            TRANSITIONS[TransitionMethod.REJECT_FROM_PENDING].event_type,
        ],
    }
    (target,) = props["Targets"]
    log_group_ids = cfn.references(target["Arn"]) & set(cfn.of_type(dev.raw["data"], "AWS::Logs::LogGroup"))
    assert len(log_group_ids) == 1
    # EventBridge may only write there because the log group's resource policy names it.
    _, policy = _only(cfn.of_type(dev.raw["data"], "AWS::Logs::ResourcePolicy"))
    document = policy["Properties"]["PolicyDocument"]
    assert cfn.references(document) == log_group_ids
    assert '\\"Service\\":\\"events.amazonaws.com\\"' in json.dumps(document)
