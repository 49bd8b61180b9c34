"""The card vault's and the audit trail's infrastructure: the vault's KMS key and who may use it, the fingerprint and
checkpoint key secrets and how they are seeded, the Object Lock bucket, the checkpoint schedule, the routes, and log
retention (PCI DSS 10.5.1) on every log group."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any, cast
from uuid import UUID

import boto3
import pytest
from aws_cdk import CfnElement
from moto import mock_aws

from billing import resource_names as names
from billing.audit.keys import parse_key_ring
from billing.auth.tokens import LOCAL_TOKEN_SETTINGS, issue_token, scopes_of
from billing.instruments.fingerprints import MIN_KEY_BYTES, parse_fingerprint_secret
from billing.local.api_gateway import LocalLambdaContext, method_arn, policy_allows
from billing.paths import REPO_ROOT
from billing.resource_names import FunctionName, Route
from billing.vault.envelope import encryption_context
from infra.functions import FUNCTIONS, Access, _spec
from infra.seed_key_material import handler as seeder
from infra.stacks.data import VAULT_ENCRYPTION_CONTEXT_KEYS
from tests.infrastructure import cfn
from tests.infrastructure.conftest import Synthesized

pytestmark = pytest.mark.infrastructure

STAGES = ["dev", "prod"]
STACKS = ("network", "data", "service")
# Every KMS action that uses key material or hands a permission on: what "using the key" means.
KMS_USE_ACTIONS = (
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
)
VAULT_ROUTES = [route for route in names.ROUTES if "/payment-instruments" in route.path]
AUDIT_ROUTES = [route for route in names.ROUTES if route.path.startswith(f"{names.API_BASE_PATH}/audit/")]


def _listify(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _uses_the_key(statement: dict[str, Any]) -> set[str]:
    """The key-using actions a statement's action patterns allow (kms:* and kms:Gen* included)."""
    patterns = [str(action).lower() for action in _listify(statement["Action"])]
    return {use for use in KMS_USE_ACTIONS if any(fnmatch.fnmatchcase(use.lower(), p) for p in patterns)}


def _vault_key(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    key_id = cfn.key_with_alias(synth.raw["data"], names.VAULT_KMS_KEY_ALIAS)
    return key_id, synth.raw["data"]["Resources"][key_id]


def _vault_role(synth: Synthesized) -> dict[str, Any]:
    role_id = cfn.function_props(synth.raw["service"], FunctionName.VAULT)["Role"]["Fn::GetAtt"][0]
    role: dict[str, Any] = synth.raw["service"]["Resources"][role_id]
    return role


def _imported(synth: Synthesized, value: Any) -> str:
    return cfn.imported_logical_id(synth.raw["data"], value)


def _logical_id(construct: Any) -> str:
    """The logical id of a construct's CloudFormation resource, in its own stack's template."""
    stack = construct.stack
    return cast(str, stack.resolve(stack.get_logical_id(cast(CfnElement, construct.node.default_child))))


def _methods(synth: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    service = synth.raw["service"]
    return {
        (m["Properties"]["HttpMethod"], cfn.api_path(service, m["Properties"]["ResourceId"]["Ref"])): m["Properties"]
        for m in cfn.of_type(service, "AWS::ApiGateway::Method").values()
    }


# --- the vault's KMS key -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_vault_key_is_its_own_customer_managed_key_rotating_yearly(stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    key_id, key = _vault_key(synth)
    data_key_id = cfn.key_with_alias(synth.raw["data"], f"alias/{names.APP_NAME}-{stage}-data")
    assert key_id != data_key_id
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["Properties"].get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
    assert key["DeletionPolicy"] == ("Retain" if synth.built.config.retain_data else "Delete")


def test_vault_key_policy_lets_only_the_vault_role_generate_and_decrypt_data_keys(dev: Synthesized) -> None:
    _, key = _vault_key(dev)
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    using = [statement for statement in statements if _uses_the_key(statement)]

    (use,) = using  # no other statement lets anyone use the key: no kms:*, no Decrypt, no CreateGrant for IAM
    assert use["Effect"] == "Allow"
    assert set(_listify(use["Action"])) == {"kms:GenerateDataKey", "kms:Decrypt"}
    # The account principal, narrowed to one role by its ARN (the role is created after the key, by the service
    # stack: a key policy may not name a principal that does not exist yet).
    assert cfn.rendered(use["Principal"]["AWS"]) == "arn:<AWS::Partition>:iam::<AWS::AccountId>:root"
    principal_arn = cfn.rendered(use["Condition"]["ArnEquals"]["aws:PrincipalArn"])
    role_name = cfn.rendered(_vault_role(dev)["Properties"]["RoleName"])
    assert principal_arn == f"arn:<AWS::Partition>:iam::<AWS::AccountId>:role/{role_name}"
    assert "*" not in principal_arn
    assert not any(statement["Effect"] == "Allow" and statement.get("Principal") == "*" for statement in statements)


def test_vault_key_is_usable_only_under_the_vaults_encryption_context(dev: Synthesized) -> None:
    _, key = _vault_key(dev)
    (use,) = (s for s in key["Properties"]["KeyPolicy"]["Statement"] if _uses_the_key(s))
    # Exactly the keys the vault binds a data key to (billing.vault.envelope), both present.
    context_keys = tuple(encryption_context(UUID(int=1), "vtok_x"))
    assert context_keys == VAULT_ENCRYPTION_CONTEXT_KEYS
    assert use["Condition"]["ForAllValues:StringEquals"] == {"kms:EncryptionContextKeys": list(context_keys)}
    assert use["Condition"]["Null"] == {f"kms:EncryptionContext:{key}": "false" for key in context_keys}
    # The vault role's own grant says the same.
    (grant,) = (
        s
        for s in cfn.role_statements(dev.raw["service"], FunctionName.VAULT)
        if "kms:GenerateDataKey" in _listify(s["Action"])
    )
    assert _imported(dev, grant["Resource"]) == _vault_key(dev)[0]
    assert grant["Condition"] == {key: value for key, value in use["Condition"].items() if key != "ArnEquals"}


def test_vault_key_administration_delegated_to_iam_excludes_every_use_of_the_key(dev: Synthesized) -> None:
    _, key = _vault_key(dev)
    (admin,) = (s for s in key["Properties"]["KeyPolicy"]["Statement"] if not _uses_the_key(s))
    assert cfn.rendered(admin["Principal"]["AWS"]) == "arn:<AWS::Partition>:iam::<AWS::AccountId>:root"
    assert "Condition" not in admin
    # The key stays manageable (policy, rotation, deletion) by the account's administrators, who cannot use it.
    actions = set(_listify(admin["Action"]))
    assert {"kms:Put*", "kms:Enable*", "kms:ScheduleKeyDeletion"} <= actions
    assert not any(action in actions for action in ("kms:*", "kms:Create*"))


def test_no_role_but_the_vaults_is_granted_the_vault_key(dev: Synthesized) -> None:
    vault_key_id, _ = _vault_key(dev)
    vault_role_id = cfn.function_props(dev.raw["service"], FunctionName.VAULT)["Role"]["Fn::GetAtt"][0]
    holders: set[str] = set()
    for stack in STACKS:
        for policy in cfn.of_type(dev.raw[stack], "AWS::IAM::Policy").values():
            document = policy["Properties"]["PolicyDocument"]
            for statement in document["Statement"]:
                named = json.dumps(statement["Resource"])
                if vault_key_id in named or "VaultKey" in named:
                    holders |= {role["Ref"] for role in policy["Properties"]["Roles"]}
                # Nothing in the app may use KMS keys on Resource "*".
                if "*" in _listify(statement["Resource"]):
                    assert not _uses_the_key(statement), statement
    assert holders == {vault_role_id}


def test_vault_function_finds_its_key_and_fingerprint_secret_in_its_environment(dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], FunctionName.VAULT)["Environment"]["Variables"]
    assert _imported(dev, env[names.ENV_VAULT_KMS_KEY_ID]) == _vault_key(dev)[0]
    assert _imported(dev, env[names.ENV_FINGERPRINT_SECRET_ID]) == _logical_id(dev.built.data.fingerprint_secret)


def test_only_the_vault_may_be_given_the_vault_key() -> None:
    with pytest.raises(ValueError, match="only the card vault"):
        _spec(
            FunctionName.EXECUTE,
            "a function that could unseal card numbers",
            memory_mb=128,
            timeout=FUNCTIONS[FunctionName.EXECUTE].timeout,
            accesses=(Access.DATABASE, Access.VAULT_KMS),
        )


def test_kms_is_reachable_from_the_function_subnets_without_a_nat(dev: Synthesized) -> None:
    services = [
        cfn.rendered(endpoint["Properties"]["ServiceName"])
        for endpoint in cfn.of_type(dev.raw["network"], "AWS::EC2::VPCEndpoint").values()
        if endpoint["Properties"]["VpcEndpointType"] == "Interface"
    ]
    assert "com.amazonaws.<AWS::Region>.kms" in services


# --- the key secrets and their seeding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attribute", "name"),
    [
        ("fingerprint_secret", names.FINGERPRINT_SECRET_NAME),
        ("audit_key_secret", names.AUDIT_CHECKPOINT_KEY_SECRET_NAME),
    ],
)
@pytest.mark.parametrize("stage", STAGES)
def test_key_secret_is_named_encrypted_with_the_data_key_and_kept_with_the_data(
    attribute: str, name: str, stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    secret_id = _logical_id(getattr(synth.built.data, attribute))
    secret = synth.raw["data"]["Resources"][secret_id]
    data_key_id = cfn.key_with_alias(synth.raw["data"], f"alias/{names.APP_NAME}-{stage}-data")
    assert secret["Properties"]["Name"] == name
    assert secret["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [data_key_id, "Arn"]}
    assert secret["DeletionPolicy"] == ("Retain" if synth.built.config.retain_data else "Delete")
    # Rotated by operators, never by a Lambda: no schedule may replace the key versions.
    schedules = cfn.of_type(synth.raw["data"], "AWS::SecretsManager::RotationSchedule").values()
    assert not any(cfn.references(s["Properties"]["SecretId"]) == {secret_id} for s in schedules)


def _seeder_id(synth: Synthesized) -> str:
    return _logical_id(synth.built.service.seed_key_material)


def test_key_secrets_are_seeded_once_before_the_functions_that_read_them(dev: Synthesized) -> None:
    service = dev.raw["service"]
    seeder_id = _seeder_id(dev)
    ((trigger_id, trigger),) = (
        (logical_id, resource)
        for logical_id, resource in cfn.of_type(service, "Custom::Trigger").items()
        if service["Resources"][cfn.references(resource["Properties"]["HandlerArn"]).pop()]["Properties"][
            "FunctionName"
        ]
        == {"Ref": seeder_id}
    )
    assert trigger["Properties"]["InvocationType"] == "RequestResponse"  # a failed seeding fails the deploy
    # On stack creation only: the provider skips updates when ExecuteOnHandlerChange is false.
    assert trigger["Properties"]["ExecuteOnHandlerChange"] is False
    for function in (FunctionName.VAULT, FunctionName.AUDIT_CHECKPOINT):
        assert trigger_id in service["Resources"][cfn.function_id(service, function)]["DependsOn"]
    env = service["Resources"][seeder_id]["Properties"]["Environment"]["Variables"]
    assert {variable: _imported(dev, value) for variable, value in env.items()} == {
        names.ENV_FINGERPRINT_SECRET_ID: _logical_id(dev.built.data.fingerprint_secret),
        names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: _logical_id(dev.built.data.audit_key_secret),
    }
    assert set(env) == set(seeder.INITIAL_VALUES)


def test_seeding_function_may_write_the_two_key_secrets_but_never_read_them(dev: Synthesized) -> None:
    service = dev.raw["service"]
    function = service["Resources"][_seeder_id(dev)]["Properties"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    assert "VpcConfig" not in function
    statements = [
        statement
        for policy in cfn.of_type(service, "AWS::IAM::Policy").values()
        if {"Ref": role_id} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    by_action = {action: statement for statement in statements for action in _listify(statement["Action"])}
    assert set(by_action) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:DescribeSecret",
        "secretsmanager:PutSecretValue",
        "kms:GenerateDataKey",
        "kms:Decrypt",
    }
    written = {_imported(dev, r) for r in _listify(by_action["secretsmanager:PutSecretValue"]["Resource"])}
    assert written == {
        _logical_id(dev.built.data.fingerprint_secret),
        _logical_id(dev.built.data.audit_key_secret),
    }
    assert list(by_action["kms:Decrypt"]["Condition"]["StringEquals"]) == ["kms:ViaService"]


@pytest.fixture
def secretsmanager() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="eu-west-1")


def _created_like_cloudformation(client: Any) -> dict[str, str]:
    """Both secrets as the data stack leaves them: one generated placeholder version each."""
    return {
        variable: client.create_secret(Name=name, SecretString="generated placeholder ~!@#")["ARN"]
        for variable, name in (
            (names.ENV_FINGERPRINT_SECRET_ID, names.FINGERPRINT_SECRET_NAME),
            (names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID, names.AUDIT_CHECKPOINT_KEY_SECRET_NAME),
        )
    }


def _value(client: Any, secret_id: str) -> str:
    value: str = client.get_secret_value(SecretId=secret_id)["SecretString"]
    return value


def test_seeding_writes_key_material_in_the_shapes_the_code_parses(secretsmanager: Any) -> None:
    environment = _created_like_cloudformation(secretsmanager)

    seeded = seeder.seed_all(secretsmanager, environment)

    assert seeded == dict.fromkeys(environment.values(), True)
    current, keys = parse_fingerprint_secret(_value(secretsmanager, environment[names.ENV_FINGERPRINT_SECRET_ID]))
    assert (current, list(keys)) == (seeder.INITIAL_FINGERPRINT_VERSION, [seeder.INITIAL_FINGERPRINT_VERSION])
    assert len(keys[current]) == MIN_KEY_BYTES
    ring = parse_key_ring(_value(secretsmanager, environment[names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID]))
    assert list(ring.keys) == [ring.active]
    assert len(ring.signing_key()[1]) == MIN_KEY_BYTES
    assert keys[current] != ring.signing_key()[1]


def test_seeding_again_changes_nothing(secretsmanager: Any) -> None:
    environment = _created_like_cloudformation(secretsmanager)
    seeder.seed_all(secretsmanager, environment)
    before = {secret_id: _value(secretsmanager, secret_id) for secret_id in environment.values()}

    seeded = seeder.seed_all(secretsmanager, environment)

    assert seeded == dict.fromkeys(environment.values(), False)
    assert {secret_id: _value(secretsmanager, secret_id) for secret_id in environment.values()} == before


def test_seeding_never_overwrites_keys_an_operator_already_put(secretsmanager: Any) -> None:
    environment = _created_like_cloudformation(secretsmanager)
    fingerprint_secret = environment[names.ENV_FINGERPRINT_SECRET_ID]
    secretsmanager.put_secret_value(SecretId=fingerprint_secret, SecretString='{"operator": "was here"}')

    seeded = seeder.seed_all(secretsmanager, environment)

    assert seeded[fingerprint_secret] is False
    assert _value(secretsmanager, fingerprint_secret) == '{"operator": "was here"}'
    assert seeded[environment[names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID]] is True


# --- the audit checkpoint bucket ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_audit_bucket_locks_every_version_in_compliance_mode_for_over_a_year(
    stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    bucket = synth.raw["data"]["Resources"][_logical_id(synth.built.data.audit_checkpoints_bucket)]
    props = bucket["Properties"]
    assert cfn.rendered(props["BucketName"]) == names.bucket_name(
        names.AUDIT_CHECKPOINTS_BUCKET_PREFIX, "<AWS::AccountId>", "<AWS::Region>"
    )
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    retention = props["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert "Years" not in retention
    assert retention["Days"] >= 365
    assert retention["Days"] == names.AUDIT_CHECKPOINT_RETENTION_DAYS  # the retention the function sets per object
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    # Nothing expires a checkpoint: no lifecycle rule deletes current or noncurrent versions.
    for rule in props["LifecycleConfiguration"]["Rules"]:
        assert not {"ExpirationInDays", "ExpirationDate", "NoncurrentVersionExpiration"} & set(rule)
    # CloudFormation could not delete a bucket holding locked versions anyway: it is retained in every stage.
    assert bucket["DeletionPolicy"] == "Retain"


def test_audit_bucket_is_encrypted_private_logged_and_tls_only(dev: Synthesized) -> None:
    bucket_id = _logical_id(dev.built.data.audit_checkpoints_bucket)
    props = dev.raw["data"]["Resources"][bucket_id]["Properties"]
    (encryption,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    data_key_id = cfn.key_with_alias(dev.raw["data"], f"alias/{names.APP_NAME}-dev-data")
    assert encryption["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": [data_key_id, "Arn"]},
    }
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert props["LoggingConfiguration"] == {
        "DestinationBucketName": {"Ref": _logical_id(dev.built.data.access_logs_bucket)},
        "LogFilePrefix": f"{names.AUDIT_CHECKPOINTS_BUCKET_PREFIX}/",
    }
    (policy,) = (
        p["Properties"]["PolicyDocument"]
        for p in cfn.of_type(dev.raw["data"], "AWS::S3::BucketPolicy").values()
        if p["Properties"]["Bucket"] == {"Ref": bucket_id}
    )
    denials = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert {json.dumps(s["Condition"], sort_keys=True) for s in denials} == {
        json.dumps({"Bool": {"aws:SecureTransport": "false"}}),
        json.dumps({"NumericLessThan": {"s3:TlsVersion": 1.2}}),
    }


def test_only_the_checkpointer_writes_checkpoints_and_nothing_may_delete_or_unlock_them(dev: Synthesized) -> None:
    marker = f":s3:::{names.AUDIT_CHECKPOINTS_BUCKET_PREFIX}-"
    granted: dict[FunctionName, set[str]] = {}
    for function in FunctionName:
        for action, resource in cfn.grants(dev.raw["service"], function):
            if marker in json.dumps(resource):
                granted.setdefault(function, set()).add(action)
    assert granted == {
        FunctionName.AUDIT_CHECKPOINT: {
            "s3:ListBucket",
            "s3:GetBucketObjectLockConfiguration",
            "s3:GetObject",
            "s3:PutObject",
            "s3:PutObjectRetention",
        }
    }
    # Objects only under the checkpoint prefix the code writes.
    objects = [
        cfn.rendered(resource)
        for action, resource in cfn.grants(dev.raw["service"], FunctionName.AUDIT_CHECKPOINT)
        if action == "s3:PutObject"
    ]
    assert objects == [
        f"arn:<AWS::Partition>:s3:::{names.AUDIT_CHECKPOINTS_BUCKET_PREFIX}-<AWS::AccountId>-<AWS::Region>/checkpoints/*"
    ]


def test_checkpointer_environment_names_bucket_key_ring_and_requires_object_lock(dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], FunctionName.AUDIT_CHECKPOINT)["Environment"]["Variables"]
    assert cfn.rendered(env[names.ENV_AUDIT_CHECKPOINTS_BUCKET]) == names.bucket_name(
        names.AUDIT_CHECKPOINTS_BUCKET_PREFIX, "<AWS::AccountId>", "<AWS::Region>"
    )
    assert env[names.ENV_AUDIT_REQUIRE_OBJECT_LOCK] == "true"
    assert _imported(dev, env[names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID]) == _logical_id(dev.built.data.audit_key_secret)


def test_checkpointer_watches_every_secret_it_may_describe_for_rotations(dev: Synthesized) -> None:
    env = cfn.function_props(dev.raw["service"], FunctionName.AUDIT_CHECKPOINT)["Environment"]["Variables"]
    separator, parts = env[names.ENV_AUDIT_WATCHED_CREDENTIALS]["Fn::Join"]
    text = separator.join(part if isinstance(part, str) else _imported(dev, part) for part in parts)
    watched = json.loads(text)  # a JSON list, as billing.audit.wiring parses it
    assert len(watched) == len(set(watched)) == len(dev.built.data.credential_secrets)
    described = {
        _imported(dev, resource)
        for action, resource in cfn.grants(dev.raw["service"], FunctionName.AUDIT_CHECKPOINT)
        if action == "secretsmanager:DescribeSecret"
    }
    assert set(watched) == described


# Lambda refuses a function whose environment (names and values) exceeds 4 KB.
LAMBDA_ENVIRONMENT_LIMIT = 4 * 1024
# Longer than any value an import or reference can resolve to here (the longest: a secret ARN in a long region).
_WORST_CASE_RESOLVED = 140


def _worst_case_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return len(separator) * max(len(parts) - 1, 0) + sum(_worst_case_length(part) for part in parts)
    return _WORST_CASE_RESOLVED


@pytest.mark.parametrize("function", list(FunctionName))
def test_function_environment_fits_lambdas_limit_with_the_longest_arns(
    function: FunctionName, dev: Synthesized
) -> None:
    env = cfn.function_props(dev.raw["service"], function)["Environment"]["Variables"]
    assert sum(len(name) + _worst_case_length(value) for name, value in env.items()) < LAMBDA_ENVIRONMENT_LIMIT


def test_checkpointer_runs_every_minute_without_retries_into_the_next_tick(dev: Synthesized) -> None:
    service = dev.raw["service"]
    target = {"Fn::GetAtt": [cfn.function_id(service, FunctionName.AUDIT_CHECKPOINT), "Arn"]}
    (schedule,) = (
        s["Properties"]
        for s in cfn.of_type(service, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == target
    )
    assert schedule["ScheduleExpression"] == names.AUDIT_CHECKPOINT_SCHEDULE == "rate(1 minute)"
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["RetryPolicy"] == {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}
    # Each run ends before the next one starts.
    assert FUNCTIONS[FunctionName.AUDIT_CHECKPOINT].timeout.to_seconds() < 60


# --- routes ------------------------------------------------------------------------------------------------------


def test_vault_and_audit_route_families_are_the_ones_in_resource_names() -> None:
    assert {(r.method, r.path.removeprefix(names.API_BASE_PATH)) for r in VAULT_ROUTES} == {
        ("POST", "/payment-instruments"),
        ("GET", "/payment-instruments"),
        ("GET", "/payment-instruments/{id}"),
        ("DELETE", "/payment-instruments/{id}"),
    }
    assert {(r.method, r.path.removeprefix(names.API_BASE_PATH)) for r in AUDIT_ROUTES} == {
        ("GET", "/audit/events"),
        ("GET", "/audit/checkpoints/latest"),
        ("GET", "/audit/proofs/{seq}"),
    }


@pytest.mark.parametrize(
    ("route", "function"),
    [(route, FunctionName.VAULT) for route in VAULT_ROUTES] + [(route, FunctionName.AUDIT) for route in AUDIT_ROUTES],
    ids=lambda value: f"{value.method} {value.path}" if isinstance(value, Route) else str(value),
)
def test_vault_and_audit_routes_reach_their_function_behind_the_token_authorizer(
    route: Route, function: FunctionName, dev: Synthesized
) -> None:
    method = _methods(dev)[(route.method, route.path)]
    assert method["Integration"]["Type"] == "AWS_PROXY"
    targets = cfn.references(method["Integration"]["Uri"]) & set(
        cfn.of_type(dev.raw["service"], "AWS::Lambda::Function")
    )
    assert targets == {cfn.function_id(dev.raw["service"], function)}
    (authorizer_id,) = cfn.of_type(dev.raw["service"], "AWS::ApiGateway::Authorizer")
    assert (method["AuthorizationType"], method["AuthorizerId"]) == ("CUSTOM", {"Ref": authorizer_id})


@pytest.fixture
def authorizer(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The real authorizer handler, with only its Secrets Manager lookup replaced."""
    monkeypatch.setenv(names.ENV_JWT_SECRET_ARN, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jwt-AbCdEf")
    # Only accepted tokens here: nothing is ever sent to this queue.
    monkeypatch.setenv(names.ENV_AUDIT_INTAKE_QUEUE_URL, "https://sqs.eu-west-1.amazonaws.com/123456789012/unused")
    spec = importlib.util.spec_from_file_location(
        "_infra_authorizer_handler", REPO_ROOT / "functions/authorizer/handler.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "token_settings", lambda: LOCAL_TOKEN_SETTINGS)
    yield module
    sys.modules.pop(spec.name, None)


def test_authorizer_hands_the_auditor_scope_on_and_its_cached_decision_covers_every_route(
    authorizer: ModuleType, dev: Synthesized
) -> None:
    # API Gateway reuses one decision for every route for five minutes: the audit function, not the authorizer,
    # must refuse a token without the auditor scope, so the scope has to reach it in the context.
    stage = dev.built.config.name
    token = issue_token(LOCAL_TOKEN_SETTINGS, UUID(int=7), "auditor-1", scopes=[names.AUDITOR_SCOPE])
    first = AUDIT_ROUTES[0]
    event = {
        "type": "TOKEN",
        "authorizationToken": f"Bearer {token}",
        "methodArn": method_arn(first.method, first.path, stage=stage),
    }

    answer = authorizer.lambda_handler(event, LocalLambdaContext("billing-authorizer"))

    assert names.AUDITOR_SCOPE in scopes_of(answer["context"]["scopes"])
    for route in VAULT_ROUTES + AUDIT_ROUTES:
        concrete = route.path.replace("{id}", "pi_1").replace("{seq}", "41")
        assert policy_allows(answer["policyDocument"], method_arn(route.method, concrete, stage=stage)), route


# --- log retention (PCI DSS 10.5.1) ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("stage", STAGES)
def test_every_log_group_keeps_its_logs_at_least_a_year(stack: str, stage: str, request: pytest.FixtureRequest) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    groups = cfn.of_type(synth.raw[stack], "AWS::Logs::LogGroup")
    assert groups or stack == "network"
    for logical_id, group in groups.items():
        # Absent RetentionInDays would mean "never expire", which is long enough; the app always sets one.
        assert group["Properties"]["RetentionInDays"] >= 365, logical_id


@pytest.mark.parametrize("stage", STAGES)
def test_every_function_of_the_app_logs_to_a_retained_group_of_its_own(
    stage: str, request: pytest.FixtureRequest
) -> None:
    synth: Synthesized = request.getfixturevalue(stage)
    service = synth.raw["service"]
    groups = cfn.of_type(service, "AWS::Logs::LogGroup")
    ours = {
        logical_id: function
        for logical_id, function in cfn.of_type(service, "AWS::Lambda::Function").items()
        # The CDK's own custom resource provider (the triggers') logs to the group Lambda creates, never expiring.
        if not logical_id.startswith("AWSCDK")
    }
    assert len(ours) == len(FunctionName) + 1  # every function, and the seeding one
    used = [function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] for function in ours.values()]
    assert len(set(used)) == len(used)
    assert all(groups[group]["Properties"]["RetentionInDays"] >= 365 for group in used)
    # The authorizer's log group holds the rejected-token audit lines (billing.audit.log_sink).
    authorizer_group = cfn.function_props(service, FunctionName.AUTHORIZER)["LoggingConfig"]["LogGroup"]["Ref"]
    assert groups[authorizer_group]["Properties"]["RetentionInDays"] >= 365
