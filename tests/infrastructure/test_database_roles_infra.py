"""Least-privilege database roles in AWS: one rotated secret per login user, RDS Proxy authenticating every one of
them, and each function able to read only the secret of the role it connects as (billing.db.roles)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import Duration
from aws_cdk import aws_secretsmanager as secretsmanager

from billing import resource_names as names
from billing.db.roles import FUNCTION_ROLES, LOGIN_USERS, DatabaseRole
from billing.resource_names import FunctionName
from infra.functions import FUNCTIONS, Access, _spec
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

# Whose secrets each function may read: the login user of the role it connects as and nothing of another role's;
# the migrations read the admin's (to connect) and every login user's (to set their passwords).
SECRETS_READ: dict[FunctionName, frozenset[str]] = {
    # The functions that call payment providers read every provider's API credentials too.
    FunctionName.EXECUTE: frozenset({"app", "provider"}),
    FunctionName.WEBHOOK: frozenset({"app", "webhook"}),
    FunctionName.RECONCILE: frozenset({"worker", "provider"}),
    FunctionName.RETRY_DLQ: frozenset({"worker", "provider"}),
    FunctionName.SETTLEMENT_REPORT: frozenset({"worker"}),
    FunctionName.OUTBOX_RELAY: frozenset({"worker"}),
    # The admin to connect, and every login user's secret to set its password.
    FunctionName.MIGRATE: frozenset(
        {"admin", "app", "worker", *(r.value for r in LOGIN_USERS if r.value not in ("billing_app", "billing_worker"))}
    ),
    FunctionName.AUTHORIZER: frozenset({"jwt"}),
    # Its own login user's, the fingerprint keys and (it tokenizes cards at the providers) the providers' credentials.
    FunctionName.VAULT: frozenset({"billing_vault", "fingerprint", "provider"}),
    FunctionName.AUDIT: frozenset({"billing_auditor"}),
    FunctionName.SETTLEMENT_API: frozenset({"billing_finance"}),
    # The worker's, and the checkpoint signing key ring.
    FunctionName.AUDIT_CHECKPOINT: frozenset({"worker", "audit_keys"}),
    # After a 3-D Secure challenge it submits the charge, as the execute function would.
    FunctionName.THREE_DS: frozenset({"app", "provider"}),
}
# Secrets a function may describe (version ids and stages, never a value) beyond those it reads: the checkpoint
# function watches every credential for rotations (billing.audit.rotations).
SECRETS_WATCHED: dict[FunctionName, frozenset[str]] = {
    FunctionName.AUDIT_CHECKPOINT: frozenset(
        {
            "admin",
            "app",
            "worker",
            "billing_vault",
            "billing_auditor",
            "billing_finance",
            "webhook",
            "provider",
            "jwt",
            "fingerprint",
            "audit_keys",
        }
    ),
}
ROLE_SECRET = {DatabaseRole.OWNER: "admin", DatabaseRole.APP: "app", DatabaseRole.WORKER: "worker"} | {
    role: role.value for role in LOGIN_USERS if role not in (DatabaseRole.APP, DatabaseRole.WORKER)
}


def _logical_id(synth: Synthesized, secret: secretsmanager.ISecret) -> str:
    """The data stack's logical id behind a secret's ARN (for a database secret: its cluster attachment)."""
    (logical_id,) = cfn.references(synth.built.data.resolve(secret.secret_arn))
    return logical_id


def _secret_ids(synth: Synthesized, labels: frozenset[str]) -> set[str]:
    data = synth.built.data
    by_label = {ROLE_SECRET[role]: [secret] for role, secret in data.database_secrets.items()}
    by_label |= {
        "webhook": list(data.webhook_secrets.values()),
        "provider": list(data.provider_secrets.values()),
        "jwt": [data.jwt_secret],
        "fingerprint": [data.fingerprint_secret],
        "audit_keys": [data.audit_key_secret],
    }
    return {_logical_id(synth, secret) for label in labels for secret in by_label[label]}


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resources_of(statements: list[dict[str, Any]], action: str) -> list[Any]:
    return [
        resource
        for statement in statements
        if action in _listify(statement["Action"])
        for resource in _listify(statement["Resource"])
    ]


def _database_secret_id(synth: Synthesized, role: DatabaseRole) -> str:
    return _logical_id(synth, synth.built.data.database_secrets[role])


def _login_secret(synth: Synthesized, role: DatabaseRole) -> tuple[str, dict[str, Any]]:
    name = names.database_login_secret_name(LOGIN_USERS[role].name)
    ((secret_id, secret),) = (
        (logical_id, resource)
        for logical_id, resource in cfn.of_type(synth.raw["data"], "AWS::SecretsManager::Secret").items()
        if resource["Properties"]["Name"] == name
    )
    return secret_id, secret["Properties"]


def _admin_secret(synth: Synthesized) -> dict[str, Any]:
    ((_, secret),) = (
        (logical_id, resource)
        for logical_id, resource in cfn.of_type(synth.raw["data"], "AWS::SecretsManager::Secret").items()
        if resource["Properties"]["Name"] == names.DATABASE_SECRET_NAME
    )
    props: dict[str, Any] = secret["Properties"]
    return props


def _rotation_of(synth: Synthesized, attachment_id: str) -> dict[str, Any]:
    (schedule,) = (
        resource["Properties"]
        for resource in cfn.of_type(synth.raw["data"], "AWS::SecretsManager::RotationSchedule").values()
        if resource["Properties"]["SecretId"] == {"Ref": attachment_id}
    )
    props: dict[str, Any] = schedule
    return props


def _rotation_application(synth: Synthesized, schedule: dict[str, Any]) -> dict[str, Any]:
    (application_id,) = cfn.references(schedule["RotationLambdaARN"])
    application = synth.raw["data"]["Resources"][application_id]
    assert application["Type"] == "AWS::Serverless::Application"
    mapping = application["Properties"]["Location"]["ApplicationId"]["Fn::FindInMap"][0]
    return {"mapping": synth.raw["data"]["Mappings"][mapping], **application["Properties"]["Parameters"]}


@pytest.mark.parametrize("role", list(LOGIN_USERS))
def test_each_login_user_has_its_own_rds_secret_encrypted_with_the_data_key(
    role: DatabaseRole, dev: Synthesized
) -> None:
    secret_id, secret = _login_secret(dev, role)
    generator = secret["GenerateSecretString"]
    # RDS format: the attachment adds host, port and engine; the user and database are ours.
    assert json.loads(generator["SecretStringTemplate"]) == {
        "username": LOGIN_USERS[role].name,
        "dbname": names.DATABASE_NAME,
    }
    assert generator["GenerateStringKey"] == "password"
    assert generator["ExcludeCharacters"] == _admin_secret(dev)["GenerateSecretString"]["ExcludeCharacters"]
    key_id = cfn.key_with_alias(dev.raw["data"], f"alias/{names.APP_NAME}-{dev.built.config.name}-data")
    assert secret["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    (cluster_id,) = cfn.of_type(dev.raw["data"], "AWS::RDS::DBCluster")
    attachment = dev.raw["data"]["Resources"][_database_secret_id(dev, role)]
    assert attachment["Type"] == "AWS::SecretsManager::SecretTargetAttachment"
    assert attachment["Properties"] == {
        "SecretId": {"Ref": secret_id},
        "TargetId": {"Ref": cluster_id},
        "TargetType": "AWS::RDS::DBCluster",
    }


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_login_users_secrets_outlive_the_stack_when_the_stage_retains_data(
    stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    # A retained snapshot restores users whose passwords only these secrets know.
    expected = "Retain" if synth.built.config.retain_data else "Delete"
    for role in LOGIN_USERS:
        secret_id, _ = _login_secret(synth, role)
        assert synth.raw["data"]["Resources"][secret_id]["DeletionPolicy"] == expected


def test_login_users_secrets_are_distinct_from_each_other_and_from_the_admins(dev: Synthesized) -> None:
    ids = {_database_secret_id(dev, role) for role in DatabaseRole}
    assert len(ids) == len(DatabaseRole)


@pytest.mark.parametrize("role", list(LOGIN_USERS))
def test_each_login_users_secret_rotates_like_the_admins_but_not_before_the_user_exists(
    role: DatabaseRole, dev: Synthesized
) -> None:
    schedule = _rotation_of(dev, _database_secret_id(dev, role))
    admin_schedule = _rotation_of(dev, _database_secret_id(dev, DatabaseRole.OWNER))
    assert schedule["RotationRules"] == {"ScheduleExpression": "rate(30 days)"}
    assert schedule["RotationRules"] == admin_schedule["RotationRules"]
    # The migrate function creates the user on the service stack's deploy: an immediate rotation would find none.
    assert schedule["RotateImmediatelyOnUpdate"] is False
    application = _rotation_application(dev, schedule)
    admin_application = _rotation_application(dev, admin_schedule)
    # The same hosted single-user PostgreSQL rotation, in the same subnets, with the secret's own password rule.
    assert application["mapping"] == admin_application["mapping"]
    assert "RotationSingleUser" in application["mapping"]["aws"]["applicationId"]
    assert application["vpcSubnetIds"] == admin_application["vpcSubnetIds"]
    assert application["excludeCharacters"] == _login_secret(dev, role)[1]["GenerateSecretString"]["ExcludeCharacters"]
    assert "masterSecretArn" not in application  # single user: it logs in as the user itself


@pytest.mark.parametrize("role", list(LOGIN_USERS))
def test_each_login_users_rotation_function_may_reach_the_cluster(role: DatabaseRole, dev: Synthesized) -> None:
    application = _rotation_application(dev, _rotation_of(dev, _database_secret_id(dev, role)))
    (rotation_group,) = cfn.references(application["vpcSecurityGroupIds"])
    ((cluster_id, cluster),) = cfn.of_type(dev.raw["data"], "AWS::RDS::DBCluster").items()
    cluster_groups = {g for value in cluster["Properties"]["VpcSecurityGroupIds"] for g in cfn.references(value)}
    ingress = [
        rule["Properties"]
        for rule in cfn.of_type(dev.raw["data"], "AWS::EC2::SecurityGroupIngress").values()
        if cfn.references(rule["Properties"]["SourceSecurityGroupId"]) == {rotation_group}
    ]
    (rule,) = ingress  # one way in, on the cluster's port only
    assert cfn.references(rule["GroupId"]) <= cluster_groups
    assert rule["FromPort"] == rule["ToPort"] == {"Fn::GetAtt": [cluster_id, "Endpoint.Port"]}


def test_rds_proxy_authenticates_every_role_with_its_own_secret(dev: Synthesized) -> None:
    every_secret = {_database_secret_id(dev, role) for role in DatabaseRole}
    ((_, proxy),) = cfn.of_type(dev.raw["data"], "AWS::RDS::DBProxy").items()
    auth = proxy["Properties"]["Auth"]
    assert {entry["AuthScheme"] for entry in auth} == {"SECRETS"}
    assert {entry["SecretArn"]["Ref"] for entry in auth} == every_secret
    assert len(auth) == len(every_secret)
    # The proxy's role may read exactly those secrets: it logs in to Aurora as whoever its client names.
    (role_id,) = cfn.references(proxy["Properties"]["RoleArn"])
    statements = [
        statement
        for policy in cfn.of_type(dev.raw["data"], "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    readable = _resources_of(statements, "secretsmanager:GetSecretValue")
    assert {r["Ref"] for r in readable} == every_secret


@pytest.mark.parametrize("function", list(FunctionName))
def test_function_reads_only_the_secrets_of_the_role_it_connects_as(function: FunctionName, dev: Synthesized) -> None:
    statements = cfn.role_statements(dev.raw["service"], function)
    expected = _secret_ids(dev, SECRETS_READ[function])
    described = expected | _secret_ids(dev, SECRETS_WATCHED.get(function, frozenset()))
    for action, secrets in (("secretsmanager:GetSecretValue", expected), ("secretsmanager:DescribeSecret", described)):
        granted = {cfn.imported_logical_id(dev.raw["data"], r) for r in _resources_of(statements, action)}
        assert granted == secrets, action


def test_the_watched_secrets_are_every_secret_of_the_stage(dev: Synthesized) -> None:
    every_secret = set(cfn.of_type(dev.raw["data"], "AWS::SecretsManager::Secret"))
    # A database secret is described through its cluster attachment, which names the same secret.
    attachments = {
        logical_id: resource["Properties"]["SecretId"]["Ref"]
        for logical_id, resource in cfn.of_type(dev.raw["data"], "AWS::SecretsManager::SecretTargetAttachment").items()
    }
    watched = {attachments.get(i, i) for i in _secret_ids(dev, SECRETS_WATCHED[FunctionName.AUDIT_CHECKPOINT])}
    assert watched == every_secret


@pytest.mark.parametrize("function", [name for name, spec in FUNCTIONS.items() if Access.DATABASE in spec.accesses])
def test_database_function_connects_with_the_secret_of_its_function_role(
    function: FunctionName, dev: Synthesized
) -> None:
    env = cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"]
    connects_with = cfn.imported_logical_id(dev.raw["data"], env[names.ENV_DATABASE_SECRET_ARN])
    assert connects_with == _database_secret_id(dev, FUNCTION_ROLES[function])
    # The table above says the same thing as billing.db.roles: the deployed grant follows the role.
    assert ROLE_SECRET[FUNCTION_ROLES[function]] in SECRETS_READ[function]


def test_only_the_migrations_see_the_admin_secret_or_another_roles_secret(dev: Synthesized) -> None:
    admin = _database_secret_id(dev, DatabaseRole.OWNER)
    readers: dict[str, set[FunctionName]] = {}
    for function in FunctionName:
        for action, resource in cfn.grants(dev.raw["service"], function):
            if action == "secretsmanager:GetSecretValue":
                readers.setdefault(cfn.imported_logical_id(dev.raw["data"], resource), set()).add(function)
    assert readers.get(admin) == {FunctionName.MIGRATE}
    for role in LOGIN_USERS:
        runtime = {f for f, r in FUNCTION_ROLES.items() if r is role and Access.DATABASE in FUNCTIONS[f].accesses}
        assert readers.get(_database_secret_id(dev, role)) == runtime | {FunctionName.MIGRATE}


def test_migrate_finds_every_login_users_secret_by_role(dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], FunctionName.MIGRATE)["Environment"]["Variables"]
    separator, parts = env[names.ENV_DATABASE_LOGIN_SECRET_ARNS]["Fn::Join"]
    text = separator.join(
        part if isinstance(part, str) else cfn.imported_logical_id(dev.raw["data"], part) for part in parts
    )
    assert json.loads(text) == {role.value: _database_secret_id(dev, role) for role in LOGIN_USERS}


def test_only_the_database_owner_may_be_given_the_login_users_secrets() -> None:
    with pytest.raises(ValueError, match="only the database owner"):
        _spec(
            FunctionName.EXECUTE,
            "a runtime function that could log in as any role",
            memory_mb=128,
            timeout=Duration.seconds(1),
            accesses=(Access.DATABASE, Access.READ_DATABASE_LOGIN_SECRETS),
        )
