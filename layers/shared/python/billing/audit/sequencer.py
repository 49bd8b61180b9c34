"""The audit_checkpoint function's work: sequence new entries into the tree, sign a checkpoint when it grew, and
keep a copy of every checkpoint in the checkpoint store (S3 under Object Lock).

One transaction holds the sequencer's advisory lock (taken by billing_audit.sequence_entries), the new leaves and
the checkpoint of the tree they make, so a checkpoint never names leaves that did not commit. The store is written
after the commit: a checkpoint in S3 is always one the database has. If that write fails (or the function dies
before it), the next run finds the database's recent checkpoints missing from the store and writes them then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from billing.audit import postgres
from billing.audit.checkpoints import Checkpoint, sign
from billing.audit.keys import KeyRing, KeyRingSource
from billing.audit.merkle import CompactRange
from billing.audit.ports import CheckpointStore
from billing.db.connection import Connection
from billing.db.tenancy import apply_timeouts

# Entries per sequencing statement (each a few milliseconds per thousand); batches per run bound one run's work.
BATCH_SIZE: Final = 5_000
MAX_BATCHES: Final = 20
# How many of the latest checkpoints each run makes sure the store holds.
EXPORT_WINDOW: Final = 10


@dataclass(frozen=True)
class CheckpointRun:
    tree_size: int
    sequenced: int
    checkpoint: Checkpoint | None
    exported: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "tree_size": self.tree_size,
            "sequenced": self.sequenced,
            "checkpoint": None if self.checkpoint is None else self.checkpoint.tree_size,
            "exported": self.exported,
        }


class AuditCheckpointer:
    def __init__(
        self,
        conn: Connection,
        keys: KeyRingSource,
        store: CheckpointStore,
        *,
        batch_size: int = BATCH_SIZE,
        max_batches: int = MAX_BATCHES,
        clock: Callable[[Connection], datetime] | None = None,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._store = store
        self._batch_size = batch_size
        self._max_batches = max_batches
        self._clock = clock or _database_now

    def run(self) -> CheckpointRun:
        """Sequence what is pending and checkpoint the grown tree; then bring the store up to date."""
        ring = self._keys.key_ring()  # before the transaction: no network call while the lock is held
        with self._conn.transaction():
            apply_timeouts(self._conn)
            size, sequenced = self._sequence()
            checkpoint = self._checkpoint(size, ring)
        exported = self._export()
        return CheckpointRun(size, sequenced, checkpoint, exported)

    def _sequence(self) -> tuple[int, int]:
        size, total = postgres.tree_size(self._conn), 0
        for _ in range(self._max_batches):
            size, added = postgres.sequence_entries(self._conn, self._batch_size)
            total += added
            if added < self._batch_size:
                break
        return size, total

    def _checkpoint(self, size: int, ring: KeyRing) -> Checkpoint | None:
        previous = postgres.latest_checkpoint(self._conn)
        start = previous.checkpoint.tree_size if previous else 0
        if size <= start:
            return None
        frontier = previous.compact_range() if previous else CompactRange()
        frontier.extend(postgres.leaf_hashes(self._conn, start, size))
        checkpoint = sign(size, frontier.root(), self._clock(self._conn), ring)
        postgres.insert_checkpoint(self._conn, checkpoint, frontier)
        return checkpoint

    def _export(self) -> list[int]:
        with self._conn.transaction():
            apply_timeouts(self._conn)
            recent = postgres.recent_checkpoints(self._conn, EXPORT_WINDOW)
        written = []
        for stored in reversed(recent):
            if self._store.get(stored.checkpoint.tree_size) is None:
                self._store.put(stored.checkpoint)
                written.append(stored.checkpoint.tree_size)
        return written


def _database_now(conn: Connection) -> datetime:
    # The database clock, like the entries' occurred_at; microsecond precision, as the signed body states it.
    row = conn.execute("select now() as now").fetchone()
    assert row is not None
    moment: datetime = row["now"]
    return moment
