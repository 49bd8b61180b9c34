"""A credential rotated outside the engine (Secrets Manager's rotation Lambda, an operator's new key version)
becomes exactly one audit entry, through the checkpoint function, against moto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.audit.rotations import SecretsManagerVersions, record_rotations
from billing.db.connection import Connection, connect
from tests.integration.audit_rig import load_checkpoint_function, seed_checkpoint_resources
from tests.lambda_harness import call

WATCHED = "billing/auth/jwt"
BUCKET = "billing-audit-checkpoints-rotations"


@pytest.fixture
def secrets(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=aws_credentials)
        client.create_secret(Name=WATCHED, SecretString=json.dumps({"key": "first"}))
        yield client


def _rotations(admin: Connection) -> list[dict[str, Any]]:
    return admin.execute(
        "select resource_id, actor, outcome, details from billing_audit.entries"
        " where event_type = 'admin.secret_rotated' order by id"
    ).fetchall()


def test_first_sight_and_each_new_version_are_recorded_once(
    secrets: Any, db: Connection, private_admin: Connection
) -> None:
    versions = SecretsManagerVersions(secrets)
    assert record_rotations(db, versions, [WATCHED]) == [WATCHED]
    assert record_rotations(db, versions, [WATCHED]) == []  # nothing new: nothing recorded
    first = _rotations(private_admin)
    assert [(r["resource_id"], r["details"]["previous_version_id"]) for r in first] == [(WATCHED, "none")]

    secrets.put_secret_value(SecretId=WATCHED, SecretString=json.dumps({"key": "second"}))
    assert record_rotations(db, versions, [WATCHED]) == [WATCHED]
    entries = _rotations(private_admin)
    assert len(entries) == 2
    assert entries[1]["details"]["previous_version_id"] == first[0]["details"]["version_id"]
    assert entries[1]["details"]["version_id"] == versions.current_version(WATCHED)
    assert (entries[1]["actor"], entries[1]["outcome"]) == ("function:audit_checkpoint", "succeeded")


def test_concurrent_runs_record_a_rotation_once(secrets: Any, private_db_url: str, private_admin: Connection) -> None:
    versions = SecretsManagerVersions(secrets)

    def run() -> list[str]:
        with connect(private_db_url) as conn:
            return record_rotations(conn, versions, [WATCHED])

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda _: run(), range(4)))
    assert sorted(len(o) for o in outcomes) == [0, 0, 0, 1]
    assert len(_rotations(private_admin)) == 1


def test_the_app_role_cannot_write_or_rewrite_the_seen_versions(conn: Connection) -> None:
    import psycopg

    for statement in (
        "insert into billing_audit.credential_versions (credential, version_id) values ('x', 'y')",
        "delete from billing_audit.credential_versions",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement)


def test_the_checkpoint_function_records_rotations_of_the_watched_secrets(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, private_db_url: str, private_admin: Connection
) -> None:
    key_ring = seed_checkpoint_resources("eu-west-1", BUCKET)
    watched = {names.ENV_AUDIT_WATCHED_CREDENTIALS: json.dumps([WATCHED, key_ring])}
    handler = load_checkpoint_function(monkeypatch, private_db_url, key_ring, BUCKET, **watched)
    first = call(handler, {})
    assert first["rotations"] == [WATCHED, key_ring]
    assert first["tree_size"] >= 2  # the rotations are in the tree this very run
    assert call(handler, {})["rotations"] == []
    assert len(_rotations(private_admin)) == 2
