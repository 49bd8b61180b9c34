"""`python -m billing.audit verify`: check the whole trail again from what is stored, trusting nothing derived.

For every entry: its leaf bytes are the canonical leaf of its columns, and its leaf hash the hash of those bytes.
For every tree index 0, 1, 2, ...: the row exists, names an existing entry and carries that entry's recomputed
leaf hash. Entries the sequencer has passed (below its floor) are all in the tree. For every checkpoint, oldest
first: the signature holds under the key it names, the root is the root of the recomputed tree of that size, the
stored frontier is that tree's, and it is consistent with the checkpoint before it (an RFC 6962 consistency proof
from the recomputed tree, verified against the two stored roots). With a checkpoint store (S3), every checkpoint
there must be one the database holds, byte for byte, so a history rewritten in the database (even re-signed)
disagrees with the locked copies.

Problems are reported in order (entries, tree, checkpoints); the first one is the row to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing.audit import merkle
from billing.audit.checkpoints import Checkpoint, signature_problem
from billing.audit.keys import KeyRing
from billing.audit.leaf import canonical_leaf
from billing.audit.postgres import _checkpoint
from billing.db.connection import Connection

_ENTRIES = (
    "select id, occurred_at, event_type, outcome, actor, tenant_id, resource_type, resource_id, purpose,"
    " correlation_id, source, details, database_user, leaf, leaf_hash from billing_audit.entries order by id"
)
_LEAVES = "select seq, entry_id, leaf_hash from billing_audit.leaves order by seq"
_CHECKPOINTS = (
    "select tree_size, root_hash, created_at, key_id, algorithm, signature, compact_range"
    " from billing_audit.checkpoints order by tree_size"
)
_FLOOR = "select coalesce(max(floor_entry_id), 0) as floor from billing_audit.sequencer_runs"


class ListableCheckpointStore(Protocol):
    def sizes(self) -> list[int]: ...

    def get(self, tree_size: int) -> Checkpoint | None: ...


@dataclass(frozen=True)
class Problem:
    where: str  # "entry 42", "tree index 7", "checkpoint 100", "s3 checkpoint 100"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class VerifyReport:
    entries: int = 0
    tree_size: int = 0
    checkpoints: int = 0
    pending: int = 0
    store_checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"{self.entries} entries, tree of {self.tree_size} leaves, {self.checkpoints} checkpoints"
            f" ({self.store_checkpoints} in the store), {self.pending} entries awaiting their tree index"
        )


def _stream(conn: Connection, query: str) -> Iterator[dict[str, Any]]:
    with conn.cursor(name=f"audit_verify_{abs(hash(query))}") as cursor:
        cursor.itersize = 5_000
        cursor.execute(query)
        yield from cursor


def verify(conn: Connection, ring: KeyRing, store: ListableCheckpointStore | None = None) -> VerifyReport:
    """Check everything (see the module docstring); one repeatable-read snapshot, so concurrent appends do not
    confuse it."""
    report = VerifyReport()
    conn.execute("begin isolation level repeatable read read only")
    try:
        recomputed, floor = _check_entries(conn, report)
        tree = _check_tree(conn, report, recomputed)
        _check_unsequenced(report, recomputed, floor)
        _check_checkpoints(conn, report, ring, tree)
        if store is not None:
            _check_store(conn, report, ring, tree, store)
    finally:
        conn.execute("rollback")
    return report


def _check_entries(conn: Connection, report: VerifyReport) -> tuple[dict[int, bytes], int]:
    """id -> the leaf hash recomputed from the entry's columns (None-free), and the sequencer's floor."""
    recomputed: dict[int, bytes] = {}
    for row in _stream(conn, _ENTRIES):
        report.entries += 1
        leaf = bytes(row["leaf"])
        expected_leaf = canonical_leaf(row)
        if leaf != expected_leaf:
            report.problems.append(Problem(f"entry {row['id']}", "leaf bytes do not match the entry's columns"))
        if bytes(row["leaf_hash"]) != merkle.leaf_hash(leaf):
            report.problems.append(Problem(f"entry {row['id']}", "stored leaf hash is not the hash of its leaf"))
        recomputed[row["id"]] = merkle.leaf_hash(expected_leaf)
    floor_row = conn.execute(_FLOOR).fetchone()
    return recomputed, int(floor_row["floor"]) if floor_row else 0


def _check_tree(conn: Connection, report: VerifyReport, recomputed: dict[int, bytes]) -> merkle.MerkleTree:
    tree = merkle.MerkleTree()
    for row in _stream(conn, _LEAVES):
        seq, entry_id, stored = row["seq"], row["entry_id"], bytes(row["leaf_hash"])
        if seq != tree.size:
            report.problems.append(
                Problem(f"tree index {tree.size}", f"missing (the next stored index is {seq}): a leaf was deleted")
            )
            # Carry on with the stored hashes so later checks still say something; the tree is broken anyway.
            while tree.size < seq:
                tree.append(b"\x00" * merkle.HASH_SIZE)
        expected = recomputed.pop(entry_id, None)
        if expected is None:
            report.problems.append(Problem(f"tree index {seq}", f"entry {entry_id} is missing: it was deleted"))
        elif stored != expected:
            report.problems.append(
                Problem(f"tree index {seq}", f"leaf hash differs from entry {entry_id}'s recomputed leaf hash")
            )
        tree.append(expected if expected is not None else stored)
    report.tree_size = tree.size
    return tree


def _check_unsequenced(report: VerifyReport, unsequenced: dict[int, bytes], floor: int) -> None:
    # What is left in `unsequenced` has no tree index. Above the floor that is normal (the next run gives it one);
    # below, the sequencer passed it: the row was inserted around the sequencer (an owner with triggers off).
    report.pending = sum(1 for entry_id in unsequenced if entry_id > floor)
    for entry_id in sorted(e for e in unsequenced if e <= floor):
        report.problems.append(Problem(f"entry {entry_id}", "below the sequencer's floor but not in the tree"))


def _check_checkpoints(conn: Connection, report: VerifyReport, ring: KeyRing, tree: merkle.MerkleTree) -> None:
    previous: Checkpoint | None = None
    for row in _stream(conn, _CHECKPOINTS):
        stored = _checkpoint(row)
        checkpoint = stored.checkpoint
        where = f"checkpoint {checkpoint.tree_size}"
        report.checkpoints += 1
        problem = signature_problem(checkpoint, ring)
        if problem:
            report.problems.append(Problem(where, problem))
        if checkpoint.tree_size > tree.size:
            report.problems.append(Problem(where, f"names {checkpoint.tree_size} leaves; the tree has {tree.size}"))
            previous = checkpoint
            continue
        if checkpoint.root_hash != tree.root(checkpoint.tree_size):
            report.problems.append(Problem(where, "root hash is not the root of the stored tree of that size"))
        if stored.frontier != tree.frontier(checkpoint.tree_size):
            report.problems.append(Problem(where, "stored frontier is not the tree's"))
        if previous is not None and previous.tree_size <= tree.size:
            try:
                proof = tree.consistency_proof(previous.tree_size, checkpoint.tree_size)
                merkle.verify_consistency(
                    previous.tree_size, checkpoint.tree_size, proof, previous.root_hash, checkpoint.root_hash
                )
            except merkle.ProofError as exc:
                report.problems.append(Problem(where, f"not consistent with checkpoint {previous.tree_size}: {exc}"))
        previous = checkpoint


def _check_store(
    conn: Connection, report: VerifyReport, ring: KeyRing, tree: merkle.MerkleTree, store: ListableCheckpointStore
) -> None:
    held = {
        row["tree_size"]: _checkpoint(row).checkpoint
        for row in conn.execute(_CHECKPOINTS.replace(" order by tree_size", "")).fetchall()
    }
    for size in store.sizes():
        report.store_checkpoints += 1
        where = f"s3 checkpoint {size}"
        locked = store.get(size)
        if locked is None:
            continue
        if held.get(size) != locked:
            report.problems.append(Problem(where, "the database holds no identical checkpoint of this size"))
        problem = signature_problem(locked, ring)
        if problem:
            report.problems.append(Problem(where, problem))
        if size > tree.size or locked.root_hash != tree.root(size):
            report.problems.append(Problem(where, "root hash is not the root of the stored tree of that size"))
