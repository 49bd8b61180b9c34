"""The audit and audit_checkpoint handlers, as Lambda runs them: the checkpoint function against moto (the key ring
in Secrets Manager, checkpoints in an Object Lock bucket), the auditors' API as billing_auditor behind the
`auditor` scope, every read (and every refused read) recorded in the trail."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.audit import AuditEvent, AuditEventType, AuditOutcome, merkle, record_audit_event
from billing.audit.keys import key_ring_secret_value, rotated
from billing.audit.s3 import checkpoint_key
from billing.db.connection import Connection
from billing.db.roles import DatabaseRole, login_url
from tests.lambda_harness import api_event, call, header, load_handler, response_json, set_function_environment

AUDIT = f"{names.API_BASE_PATH}/audit"
BUCKET = "billing-audit-checkpoints-test"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, aws_credentials: str) -> Iterator[dict[str, Any]]:
    with mock_aws():
        secrets = boto3.client("secretsmanager", region_name=aws_credentials)
        s3 = boto3.client("s3", region_name=aws_credentials)
        arn = secrets.create_secret(
            Name=names.AUDIT_CHECKPOINT_KEY_SECRET_NAME, SecretString=key_ring_secret_value(rotated(None))
        )["ARN"]
        s3.create_bucket(
            Bucket=BUCKET,
            CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
            ObjectLockEnabledForBucket=True,
        )
        yield {"secret_arn": arn, "s3": s3, "secrets": secrets}


@pytest.fixture
def checkpoint_function(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, private_db_url: str) -> ModuleType:
    set_function_environment(
        monkeypatch,
        names.FunctionName.AUDIT_CHECKPOINT,
        {
            "DATABASE_URL": private_db_url,
            names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: aws["secret_arn"],
            names.ENV_AUDIT_CHECKPOINTS_BUCKET: BUCKET,
            names.ENV_AUDIT_REQUIRE_OBJECT_LOCK: "true",
        },
    )
    return load_handler("audit_checkpoint")


@pytest.fixture
def audit_function(monkeypatch: pytest.MonkeyPatch, private_admin_url: str) -> ModuleType:
    url = login_url(private_admin_url, DatabaseRole.AUDITOR)
    set_function_environment(monkeypatch, names.FunctionName.AUDIT, {"DATABASE_URL": url})
    return load_handler("audit")


def _record(conn: Connection, resource_id: str, tenant: UUID, event_type: AuditEventType) -> None:
    record_audit_event(
        conn,
        AuditEvent(
            event_type,
            AuditOutcome.GRANTED,
            actor="user-7",
            tenant_id=tenant,
            resource_type="payment_instrument",
            resource_id=resource_id,
            purpose="display",
        ),
    )


def _get(
    handler: ModuleType, path: str, query: dict[str, str] | None = None, scopes: str = "auditor"
) -> dict[str, Any]:
    event = api_event("GET", path, tenant_id=uuid4(), query=query, subject="auditor-ann")
    event["requestContext"]["authorizer"]["scopes"] = scopes
    return call(handler, event)


@pytest.fixture
def seeded(app_db: Connection, checkpoint_function: ModuleType) -> dict[str, Any]:
    tenant, other = uuid4(), uuid4()
    for n in range(5):
        _record(app_db, "pi_watched" if n % 2 == 0 else f"pi_{n}", tenant, AuditEventType.INSTRUMENT_READ)
    _record(app_db, "pi_watched", other, AuditEventType.INSTRUMENT_USED_IN_CHARGE)
    run = call(checkpoint_function, {})
    return {"tenant": tenant, "other": other, "run": run}


def test_the_checkpoint_function_sequences_and_writes_a_locked_checkpoint(
    seeded: dict[str, Any], aws: dict[str, Any]
) -> None:
    assert seeded["run"]["sequenced"] >= 6
    size = seeded["run"]["checkpoint"]
    head = aws["s3"].head_object(Bucket=BUCKET, Key=checkpoint_key(size))
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert "ObjectLockRetainUntilDate" in head


def test_the_checkpoint_function_refuses_a_bucket_without_object_lock(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch, private_db_url: str, app_db: Connection
) -> None:
    aws["s3"].create_bucket(Bucket="plain", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    set_function_environment(
        monkeypatch,
        names.FunctionName.AUDIT_CHECKPOINT,
        {
            "DATABASE_URL": private_db_url,
            names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: aws["secret_arn"],
            names.ENV_AUDIT_CHECKPOINTS_BUCKET: "plain",
            names.ENV_AUDIT_REQUIRE_OBJECT_LOCK: "true",
        },
    )
    _record(app_db, "pi_1", uuid4(), AuditEventType.INSTRUMENT_READ)
    with pytest.raises(Exception, match="Object Lock"):
        call(load_handler("audit_checkpoint"), {})


def test_events_filter_by_resource_and_tenant_and_page_with_a_cursor(
    seeded: dict[str, Any], audit_function: ModuleType
) -> None:
    watched = response_json(_get(audit_function, f"{AUDIT}/events", {"resource_id": "pi_watched"}))
    assert [item["resource_id"] for item in watched["items"]] == ["pi_watched"] * 4
    assert all(item["seq"] is not None for item in watched["items"])
    mine = response_json(
        _get(audit_function, f"{AUDIT}/events", {"resource_id": "pi_watched", "tenant_id": str(seeded["tenant"])})
    )
    assert len(mine["items"]) == 3
    charged = response_json(_get(audit_function, f"{AUDIT}/events", {"event_type": "chd.instrument_charged"}))
    assert [item["tenant_id"] for item in charged["items"]] == [str(seeded["other"])]
    first = response_json(_get(audit_function, f"{AUDIT}/events", {"resource_id": "pi_watched", "limit": "3"}))
    assert len(first["items"]) == 3
    assert first["next_cursor"]
    rest = response_json(
        _get(
            audit_function,
            f"{AUDIT}/events",
            {"resource_id": "pi_watched", "limit": "3", "cursor": first["next_cursor"]},
        )
    )
    assert len(rest["items"]) == 1
    assert rest["next_cursor"] is None
    assert {i["id"] for i in first["items"]}.isdisjoint({i["id"] for i in rest["items"]})


def test_events_in_a_time_range(seeded: dict[str, Any], audit_function: ModuleType) -> None:
    none = _get(audit_function, f"{AUDIT}/events", {"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"})
    assert response_json(none)["items"] == []
    some = _get(audit_function, f"{AUDIT}/events", {"from": "2020-01-01T00:00:00Z", "resource_id": "pi_watched"})
    assert len(response_json(some)["items"]) == 4


def test_an_inclusion_proof_verifies_against_the_latest_checkpoint(
    seeded: dict[str, Any], audit_function: ModuleType
) -> None:
    latest = response_json(_get(audit_function, f"{AUDIT}/checkpoints/latest"))
    size = latest["tree_size"]
    answer = _get(audit_function, f"{AUDIT}/proofs/2", {"tree_size": str(size)})
    assert answer["statusCode"] == 200
    proof = response_json(answer)
    leaf = base64.b64decode(proof["entry"]["leaf"])
    assert base64.b64decode(proof["leaf_hash"]) == merkle.leaf_hash(leaf)
    merkle.verify_inclusion(
        2,
        size,
        merkle.leaf_hash(leaf),
        [base64.b64decode(h) for h in proof["proof"]],
        base64.b64decode(latest["root_hash"]),
    )


@pytest.mark.parametrize(
    ("path", "query", "status", "code"),
    [
        ("proofs/2", {"tree_size": "999999"}, 404, "audit_record_not_found"),
        ("proofs/999", {"tree_size": "SIZE"}, 422, "validation_failed"),
        ("proofs/-1", {"tree_size": "SIZE"}, 422, "validation_failed"),
        ("proofs/abc", {"tree_size": "SIZE"}, 422, "validation_failed"),
        ("proofs/1", {}, 422, "validation_failed"),
        ("proofs/1", {"tree_size": "zero"}, 422, "validation_failed"),
        ("events", {"cursor": "not-a-cursor"}, 400, "malformed_request"),
        ("events", {"event_type": "made.up"}, 422, "validation_failed"),
        ("events", {"tenant_id": "not-a-uuid"}, 422, "validation_failed"),
        ("elsewhere", {}, 404, "audit_record_not_found"),
    ],
)
def test_bad_requests_are_problems(
    seeded: dict[str, Any], audit_function: ModuleType, path: str, query: dict[str, str], status: int, code: str
) -> None:
    query = {k: (str(seeded["run"]["checkpoint"]) if v == "SIZE" else v) for k, v in query.items()}
    answer = _get(audit_function, f"{AUDIT}/{path}", query)
    assert answer["statusCode"] == status
    assert header(answer, "Content-Type") == "application/problem+json"
    assert response_json(answer)["code"] == code


@pytest.mark.parametrize("scopes", ["", "billing:read", "auditors", "auditor-ish"])
def test_without_the_auditor_scope_every_route_is_403_and_the_refusal_is_recorded(
    seeded: dict[str, Any], audit_function: ModuleType, private_admin: Connection, scopes: str
) -> None:
    for path in ("events", "checkpoints/latest", "proofs/1"):
        answer = _get(audit_function, f"{AUDIT}/{path}", {"tree_size": "1"}, scopes=scopes)
        assert answer["statusCode"] == 403
        assert response_json(answer)["code"] == "insufficient_scope"
    refused = private_admin.execute(
        "select count(*) as n from billing_audit.entries where event_type = 'audit.accessed' and outcome = 'denied'"
    ).fetchone()
    assert refused == {"n": 3}


def test_every_read_is_recorded_with_who_and_from_where(
    seeded: dict[str, Any], audit_function: ModuleType, private_admin: Connection
) -> None:
    _get(audit_function, f"{AUDIT}/events", {"resource_id": "pi_watched"})
    row = private_admin.execute(
        "select actor, outcome, source, resource_id, details from billing_audit.entries"
        " where event_type = 'audit.accessed' order by id desc limit 1"
    ).fetchone()
    assert row is not None
    assert (row["actor"], row["outcome"], row["source"], row["resource_id"]) == (
        "auditor-ann",
        "granted",
        "127.0.0.1",
        "events",
    )
    assert row["details"]["resource_id"] == "pi_watched"
    assert row["details"]["returned"] == "4"
    assert row["details"]["request"] == f"GET {AUDIT}/events"
