"""What the audit trail needs from the outside world, as small Protocols."""

from __future__ import annotations

from typing import Protocol

from billing.audit.checkpoints import Checkpoint


class CheckpointStore(Protocol):
    """Where checkpoints are kept outside the database: an S3 bucket under Object Lock in AWS."""

    def put(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint's object (never replacing another checkpoint of the same size)."""
        ...

    def get(self, tree_size: int) -> Checkpoint | None:
        """The stored checkpoint of that tree size, or None."""
        ...
