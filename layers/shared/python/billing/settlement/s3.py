"""The ObjectStore port over one S3 bucket (boto3 client handed in, so the caller decides when boto3 is imported)."""

from __future__ import annotations

from typing import Any, Final

# What S3 answers for a missing key when the caller may list the bucket (without s3:ListBucket it would be 403).
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})


class S3ObjectStore:
    """get / put / folders on one bucket."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    def get(self, key: str) -> bytes | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def put(self, key: str, body: bytes, content_type: str) -> None:
        # Encryption is the bucket's default (SSE-KMS with the data key); versioning keeps what a re-run replaced.
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def folders(self, prefix: str) -> list[str]:
        if not prefix.endswith("/"):
            raise ValueError("a folder prefix ends with '/'")
        names: set[str] = set()
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(prefix) :].rstrip("/"))
        return sorted(names)
