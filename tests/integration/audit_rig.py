"""The audit checkpoint function's AWS side in moto (its key ring and Object Lock bucket) and the function itself,
loaded as Lambda would load it; shared by the audit trail's integration tests."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import boto3
import pytest

from billing import resource_names as names
from billing.audit.keys import key_ring_secret_value, rotated
from tests.lambda_harness import load_handler, set_function_environment


def seed_checkpoint_resources(region: str, bucket: str) -> str:
    """A fresh key ring and an Object Lock bucket in moto (mock_aws must be active; the tests' region is
    eu-west-1); the key ring's ARN."""
    secrets = boto3.client("secretsmanager", region_name=region)
    arn: str = secrets.create_secret(
        Name=names.AUDIT_CHECKPOINT_KEY_SECRET_NAME, SecretString=key_ring_secret_value(rotated(None))
    )["ARN"]
    boto3.client("s3", region_name=region).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}, ObjectLockEnabledForBucket=True
    )
    return arn


def load_checkpoint_function(
    monkeypatch: pytest.MonkeyPatch, database_url: str, key_ring: str, bucket: str, **environment: Any
) -> ModuleType:
    """One container of the audit_checkpoint function with its environment (plus `environment`)."""
    set_function_environment(
        monkeypatch,
        names.FunctionName.AUDIT_CHECKPOINT,
        {
            "DATABASE_URL": database_url,
            names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: key_ring,
            names.ENV_AUDIT_CHECKPOINTS_BUCKET: bucket,
            **environment,
        },
    )
    return load_handler("audit_checkpoint")
