"""Fixtures for integration tests that invoke Lambda handlers: moto AWS and handler module instances."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from billing.db.connection import Connection, connect
from billing.local.lambda_loader import load_handler
from billing.resource_names import FunctionName
from tests.lambda_harness import set_function_environment


@pytest.fixture(scope="module")
def aws(db_url: str) -> Iterator[dict[str, str]]:
    """moto for the module's tests, with the environment a deployed function would have."""
    with pytest.MonkeyPatch.context() as env, mock_aws():
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        set_function_environment(env, FunctionName.EXECUTE, {"DATABASE_URL": db_url})
        queue_url = boto3.client("sqs").create_queue(QueueName="billing-retry")["QueueUrl"]
        env.setenv("RETRY_QUEUE_URL", queue_url)
        yield {"queue_url": queue_url}


@pytest.fixture(scope="module")
def execute(aws: dict[str, str]) -> ModuleType:
    """One warm container of the execute function."""
    return load_handler("execute")


@pytest.fixture
def worker(worker_db_url: str) -> Iterator[Connection]:
    """billing_worker's connection to the shared database: what reconciliation and the retry consumer run as, for
    tests that drive a shared-database execution the way a worker would."""
    with connect(worker_db_url) as connection:
        yield connection
