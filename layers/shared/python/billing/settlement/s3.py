"""The ObjectStore port over one S3 bucket (boto3 client handed in, so the caller decides when boto3 is imported).

Settlement files are streamed: `chunks` reads the StreamingBody a MiB at a time and never calls read() on the whole
object, and `put_stream` writes a report as a multipart upload of 8 MiB parts (one part in memory at a time). The
reports bucket's lifecycle rule removes an upload left incomplete (stacks/data.py), so a failed write costs nothing
even when the abort itself is not allowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any, Final

from billing.settlement.reconciliation.streams import CHUNK_BYTES

# What S3 answers for a missing key when the caller may list the bucket (without s3:ListBucket it would be 403).
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
# S3's smallest part is 5 MiB (the last one may be smaller); 8 MiB keeps 10 000 parts above 80 GB.
PART_BYTES: Final = 8 << 20


class S3ObjectStore:
    """get / chunks / put / put_stream / folders / keys on one bucket."""

    def __init__(self, s3: Any, bucket: str, *, part_bytes: int = PART_BYTES) -> None:
        if part_bytes < 5 << 20:
            raise ValueError("S3 parts are at least 5 MiB")
        self._s3 = s3
        self.bucket = bucket
        self._part_bytes = part_bytes

    def get(self, key: str) -> bytes | None:
        response = self._get_object(key)
        if response is None:
            return None
        body: bytes = response["Body"].read()
        return body

    def chunks(self, key: str) -> Iterator[bytes] | None:
        response = self._get_object(key)
        if response is None:
            return None
        return _streamed(response["Body"])

    def put(self, key: str, body: bytes, content_type: str) -> None:
        # Encryption is the bucket's default (SSE-KMS with the data key); versioning keeps what a re-run replaced.
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def put_stream(self, key: str, chunks: Iterable[bytes], content_type: str) -> None:
        buffer = bytearray()
        source = iter(chunks)
        for chunk in source:
            buffer += chunk
            if len(buffer) >= self._part_bytes:
                break
        else:
            # Small enough for one request: no multipart bookkeeping.
            self.put(key, bytes(buffer), content_type)
            return
        upload = self._s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            while True:
                while len(buffer) >= self._part_bytes:
                    parts.append(self._part(key, upload, len(parts) + 1, bytes(buffer[: self._part_bytes])))
                    del buffer[: self._part_bytes]
                more = next(source, None)
                if more is None:
                    break
                buffer += more
            if buffer or not parts:
                parts.append(self._part(key, upload, len(parts) + 1, bytes(buffer)))
            self._s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Not granted, or already gone: either way the bucket's lifecycle rule removes the parts.
            with contextlib.suppress(self._s3.exceptions.ClientError):
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def folders(self, prefix: str) -> list[str]:
        if not prefix.endswith("/"):
            raise ValueError("a folder prefix ends with '/'")
        names: set[str] = set()
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", []):
                names.add(common["Prefix"][len(prefix) :].rstrip("/"))
        return sorted(names)

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    def _get_object(self, key: str) -> Any:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def _part(self, key: str, upload: str, number: int, body: bytes) -> dict[str, Any]:
        answer = self._s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}


def _streamed(body: Any) -> Iterator[bytes]:
    """The StreamingBody's chunks; the connection goes back to the pool when the stream ends or is dropped."""
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()
