"""The CheckpointStore port over one S3 bucket, one object per checkpoint, under Object Lock when the bucket has it.

In AWS the bucket is created with Object Lock in compliance mode (retention of at least a year, PCI DSS 10.5.1):
nobody, the root user included, can delete or overwrite an object version before its retain-until date. Each
object is also written with ObjectLockMode=COMPLIANCE and its own retain-until date, so the retention holds even if
the bucket's default were changed. A bucket without Object Lock (an unconfigured local run) is written to plainly,
unless the store is told to require the lock, as the deployed function is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Final

from billing.audit.checkpoints import Checkpoint

PREFIX: Final = "checkpoints/"
_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_NO_LOCK: Final = frozenset({"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"})


def checkpoint_key(tree_size: int) -> str:
    """checkpoints/00000000000000000042.json: zero-padded so keys list in tree order."""
    return f"{PREFIX}{tree_size:020d}.json"


class ObjectLockMissing(RuntimeError):
    """The bucket has no Object Lock although the store requires it."""


class S3CheckpointStore:
    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        retention: timedelta,
        require_object_lock: bool = False,
        clock: Any = None,
    ) -> None:
        self._s3 = s3
        self.bucket = bucket
        self._retention = retention
        self._require_object_lock = require_object_lock
        self._clock = clock or (lambda: datetime.now(UTC))

    @cached_property
    def object_lock_enabled(self) -> bool:
        try:
            response = self._s3.get_object_lock_configuration(Bucket=self.bucket)
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NO_LOCK:
                return False
            raise
        return bool(response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def put(self, checkpoint: Checkpoint) -> None:
        arguments: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": checkpoint_key(checkpoint.tree_size),
            "Body": checkpoint.to_json(),
            "ContentType": "application/json",
        }
        if self.object_lock_enabled:
            arguments["ObjectLockMode"] = "COMPLIANCE"
            arguments["ObjectLockRetainUntilDate"] = self._clock() + self._retention
            # Object Lock requires an integrity checksum on the request.
            arguments["ChecksumAlgorithm"] = "SHA256"
        elif self._require_object_lock:
            raise ObjectLockMissing(f"bucket {self.bucket} has no Object Lock; checkpoints must be immutable")
        existing = self.get(checkpoint.tree_size)
        if existing is not None:
            if existing != checkpoint:
                # Two different signed heads for one tree size would be a fork: never paper over it.
                raise RuntimeError(f"checkpoint {checkpoint.tree_size} in S3 differs from the one being written")
            return
        self._s3.put_object(**arguments)

    def get(self, tree_size: int) -> Checkpoint | None:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=checkpoint_key(tree_size))
        except self._s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise
        return Checkpoint.from_document(json.loads(response["Body"].read()))

    def sizes(self) -> list[int]:
        """The tree sizes of every checkpoint object in the bucket, ascending."""
        found = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=PREFIX):
            for item in page.get("Contents", []):
                name = item["Key"][len(PREFIX) :]
                if name.endswith(".json") and name[:-5].isdigit():
                    found.append(int(name[:-5]))
        return sorted(found)
