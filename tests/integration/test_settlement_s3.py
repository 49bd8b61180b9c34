"""The settlement buckets on moto S3: files streamed in chunks, reports written as multipart uploads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billing.settlement.reconciliation.streams import CHUNK_BYTES, text_lines
from billing.settlement.s3 import PART_BYTES, S3ObjectStore

BUCKET = "billing-reports-123456789012-eu-west-1"


@pytest.fixture
def s3(aws_credentials: str) -> Iterator[Any]:
    with mock_aws():
        client: Any = boto3.client("s3", region_name=aws_credentials)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": aws_credentials})
        yield client


def test_an_object_is_streamed_in_chunks_never_read_whole(s3: Any) -> None:
    lines = [f"{n},row\n".encode() for n in range(300_000)]
    body = b"".join(lines)
    s3.put_object(Bucket=BUCKET, Key="settlements/adyen/2026-04-10.csv", Body=body)

    chunks = S3ObjectStore(s3, BUCKET).chunks("settlements/adyen/2026-04-10.csv")

    assert chunks is not None
    received = list(chunks)
    assert len(body) > 2 * CHUNK_BYTES
    assert max(len(c) for c in received) <= CHUNK_BYTES
    assert b"".join(received) == body
    assert list(text_lines(received)) == [line.decode() for line in lines]


def test_a_missing_object_is_none(s3: Any) -> None:
    store = S3ObjectStore(s3, BUCKET)

    assert (store.chunks("settlements/nope.csv"), store.get("settlements/nope.csv")) == (None, None)


def test_a_small_report_is_one_put_and_a_large_one_a_multipart_upload(s3: Any) -> None:
    store = S3ObjectStore(s3, BUCKET)
    piece = b"x" * 1_000_000
    large = [piece] * (2 * PART_BYTES // len(piece) + 3)

    store.put_stream("reports/small.json", [b"{", b"}"], "application/json")
    store.put_stream("reports/large.csv", iter(large), "text/csv; charset=utf-8")

    assert s3.get_object(Bucket=BUCKET, Key="reports/small.json")["Body"].read() == b"{}"
    # A multipart object's ETag ends in its number of parts.
    assert s3.head_object(Bucket=BUCKET, Key="reports/large.csv")["ETag"].strip('"').endswith("-3")
    assert s3.get_object(Bucket=BUCKET, Key="reports/large.csv")["Body"].read() == b"".join(large)
    assert s3.head_object(Bucket=BUCKET, Key="reports/large.csv")["ContentType"] == "text/csv; charset=utf-8"


def test_a_failed_stream_leaves_no_object_and_no_upload(s3: Any) -> None:
    def failing() -> Iterator[bytes]:
        yield b"y" * (PART_BYTES + 1)
        raise RuntimeError("the spool broke")

    with pytest.raises(RuntimeError, match="the spool broke"):
        S3ObjectStore(s3, BUCKET).put_stream("reports/broken.csv", failing(), "text/csv")

    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="reports/broken")
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_keys_lists_every_object_under_a_prefix_and_folders_the_first_level(s3: Any) -> None:
    for key in ("settlements/adyen/2026-04-10.csv", "settlements/adyen/2026-04-10/b.csv", "settlements/stripe/x.csv"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"")
    store = S3ObjectStore(s3, BUCKET)

    assert store.keys("settlements/adyen/2026-04-10") == [
        "settlements/adyen/2026-04-10.csv",
        "settlements/adyen/2026-04-10/b.csv",
    ]
    assert store.folders("settlements/") == ["adyen", "stripe"]
