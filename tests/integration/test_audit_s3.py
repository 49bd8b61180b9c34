"""The S3 checkpoint store under moto: one object per checkpoint, written under Object Lock in compliance mode with
a retain-until date when the bucket has Object Lock, refused when the lock is required and missing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billing.audit.checkpoints import Checkpoint, sign
from billing.audit.keys import KeyRing
from billing.audit.s3 import ObjectLockMissing, S3CheckpointStore, checkpoint_key
from billing.audit.wiring import checkpoint_store
from billing.resource_names import AUDIT_CHECKPOINT_RETENTION_DAYS

RING = KeyRing(active="k1", keys={"k1": b"k" * 32})
NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def s3(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("s3", region_name=aws_credentials)


def _bucket(s3: Any, name: str, *, locked: bool) -> str:
    s3.create_bucket(
        Bucket=name,
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
        ObjectLockEnabledForBucket=locked,
    )
    if locked:
        s3.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 400}},
            },
        )
    return name


def _checkpoint(size: int = 42) -> Checkpoint:
    return sign(size, bytes(range(32)), NOW, RING)


def test_checkpoints_go_to_a_locked_bucket_in_compliance_mode_with_a_retain_until_date(s3: Any) -> None:
    bucket = _bucket(s3, "audit-locked", locked=True)
    store = S3CheckpointStore(s3, bucket, retention=timedelta(days=400), require_object_lock=True, clock=lambda: NOW)
    store.put(_checkpoint())

    head = s3.head_object(Bucket=bucket, Key=checkpoint_key(42))
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == NOW + timedelta(days=400)
    assert store.get(42) == _checkpoint()
    assert store.sizes() == [42]


def test_a_locked_checkpoint_cannot_be_deleted(s3: Any) -> None:
    bucket = _bucket(s3, "audit-locked", locked=True)
    S3CheckpointStore(s3, bucket, retention=timedelta(days=400), clock=lambda: datetime.now(UTC)).put(_checkpoint())
    version = s3.head_object(Bucket=bucket, Key=checkpoint_key(42))["VersionId"]
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket=bucket, Key=checkpoint_key(42), VersionId=version)


def test_the_wired_store_keeps_checkpoints_for_more_than_a_year(s3: Any) -> None:
    bucket = _bucket(s3, "audit-locked", locked=True)
    checkpoint_store(s3, bucket, require_object_lock=True).put(_checkpoint())
    until = s3.head_object(Bucket=bucket, Key=checkpoint_key(42))["ObjectLockRetainUntilDate"]
    assert until - datetime.now(UTC) > timedelta(days=365)
    assert AUDIT_CHECKPOINT_RETENTION_DAYS >= 366


def test_a_bucket_without_object_lock_is_refused_when_the_lock_is_required(s3: Any) -> None:
    bucket = _bucket(s3, "audit-plain", locked=False)
    with pytest.raises(ObjectLockMissing):
        S3CheckpointStore(s3, bucket, retention=timedelta(days=400), require_object_lock=True).put(_checkpoint())
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_a_bucket_without_object_lock_is_written_plainly_when_not_required(s3: Any) -> None:
    bucket = _bucket(s3, "audit-plain", locked=False)
    store = S3CheckpointStore(s3, bucket, retention=timedelta(days=400))
    store.put(_checkpoint(7))
    assert "ObjectLockMode" not in s3.head_object(Bucket=bucket, Key=checkpoint_key(7))
    assert store.get(7) == _checkpoint(7)
    assert store.get(8) is None


def test_rewriting_a_checkpoint_is_idempotent_but_a_different_one_of_the_same_size_is_a_fork(s3: Any) -> None:
    bucket = _bucket(s3, "audit-plain", locked=False)
    store = S3CheckpointStore(s3, bucket, retention=timedelta(days=400))
    store.put(_checkpoint())
    store.put(_checkpoint())
    with pytest.raises(RuntimeError, match="differs"):
        store.put(sign(42, b"\x01" * 32, NOW, RING))
    assert store.get(42) == _checkpoint()


def test_object_keys_sort_in_tree_order() -> None:
    assert checkpoint_key(9) < checkpoint_key(10) < checkpoint_key(10**12)
