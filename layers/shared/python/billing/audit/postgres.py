"""The audit trail's SQL: sequencing, leaves, checkpoints. The tables are in sql/20261210_billing_audit_trail.sql."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.audit.checkpoints import Checkpoint
from billing.audit.merkle import CompactRange
from billing.db.connection import Connection

_CHECKPOINT_COLUMNS = "tree_size, root_hash, created_at, key_id, algorithm, signature, compact_range"


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    # The frontier as stored: verify compares it, the sequencer extends it (compact_range()).
    frontier: list[bytes]

    def compact_range(self) -> CompactRange:
        return CompactRange(self.checkpoint.tree_size, self.frontier)


def _checkpoint(row: dict[str, Any]) -> StoredCheckpoint:
    checkpoint = Checkpoint(
        tree_size=row["tree_size"],
        root_hash=bytes(row["root_hash"]),
        created_at=row["created_at"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
        algorithm=row["algorithm"],
    )
    return StoredCheckpoint(checkpoint, [bytes(h) for h in row["compact_range"]])


def sequence_entries(conn: Connection, max_entries: int) -> tuple[int, int]:
    """Give up to max_entries committed entries their tree index; (tree size after, entries added)."""
    row = conn.execute("select * from billing_audit.sequence_entries(%s)", [max_entries]).fetchone()
    assert row is not None
    return int(row["tree_size"]), int(row["sequenced"])


def tree_size(conn: Connection) -> int:
    row = conn.execute("select coalesce(max(seq) + 1, 0) as size from billing_audit.leaves").fetchone()
    assert row is not None
    return int(row["size"])


def leaf_hashes(conn: Connection, start: int, end: int) -> list[bytes]:
    """The leaf hashes of tree indexes start <= seq < end, in order."""
    rows = conn.execute(
        "select leaf_hash from billing_audit.leaves where seq >= %s and seq < %s order by seq", [start, end]
    ).fetchall()
    return [bytes(row["leaf_hash"]) for row in rows]


def latest_checkpoint(conn: Connection) -> StoredCheckpoint | None:
    row = conn.execute(
        f"select {_CHECKPOINT_COLUMNS} from billing_audit.checkpoints order by tree_size desc limit 1"
    ).fetchone()
    return None if row is None else _checkpoint(row)


def checkpoint_of_size(conn: Connection, size: int) -> StoredCheckpoint | None:
    row = conn.execute(
        f"select {_CHECKPOINT_COLUMNS} from billing_audit.checkpoints where tree_size = %s", [size]
    ).fetchone()
    return None if row is None else _checkpoint(row)


def recent_checkpoints(conn: Connection, limit: int) -> list[StoredCheckpoint]:
    rows = conn.execute(
        f"select {_CHECKPOINT_COLUMNS} from billing_audit.checkpoints order by tree_size desc limit %s", [limit]
    ).fetchall()
    return [_checkpoint(row) for row in rows]


def insert_checkpoint(conn: Connection, checkpoint: Checkpoint, frontier: CompactRange) -> None:
    conn.execute(
        f"insert into billing_audit.checkpoints ({_CHECKPOINT_COLUMNS}) values (%s, %s, %s, %s, %s, %s, %s)",
        [
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.created_at,
            checkpoint.key_id,
            checkpoint.algorithm,
            checkpoint.signature,
            frontier.hashes,
        ],
    )
