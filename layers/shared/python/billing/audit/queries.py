"""The auditors' questions: which events (by tenant, resource, type, time), the latest checkpoint, and the inclusion
proof of one entry against a checkpoint. Runs as billing_auditor, the only role that reads the trail."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import sql

from billing.audit import merkle, postgres
from billing.audit.checkpoints import Checkpoint
from billing.audit.leaf import rfc3339_utc
from billing.db.connection import Connection
from billing.domain.errors import AuditRecordNotFound, FieldError, MalformedRequest, ValidationFailed

MAX_PAGE: Final = 500
# An inclusion proof is computed from the leaf hashes of the checkpoint's tree (32 bytes each, read in order).
_ENTRY_COLUMNS = (
    "e.id, l.seq, e.occurred_at, e.event_type, e.outcome, e.actor, e.tenant_id, e.resource_type, e.resource_id,"
    " e.purpose, e.correlation_id, e.source, e.details, e.database_user, e.leaf, e.leaf_hash"
)


@dataclass(frozen=True)
class EventQuery:
    tenant_id: UUID | None = None
    resource_id: str | None = None
    event_type: str | None = None
    occurred_from: datetime | None = None  # inclusive
    occurred_to: datetime | None = None  # exclusive
    after: tuple[datetime, int] | None = None
    limit: int = 100


def encode_cursor(occurred_at: datetime, entry_id: int) -> str:
    raw = json.dumps([occurred_at.isoformat(), entry_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        occurred_at, entry_id = json.loads(raw)
        moment = datetime.fromisoformat(occurred_at)
        if not isinstance(entry_id, int) or moment.tzinfo is None:
            raise ValueError("cursor")
        return moment, entry_id
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedRequest("cursor is not one this API issued") from exc


def entry_document(row: dict[str, Any]) -> dict[str, Any]:
    """An entry as auditors see it: its columns, its tree index (null until sequenced) and its leaf bytes."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "occurred_at": rfc3339_utc(row["occurred_at"]),
        "event_type": row["event_type"],
        "outcome": row["outcome"],
        "actor": row["actor"],
        "tenant_id": None if row["tenant_id"] is None else str(row["tenant_id"]),
        "resource_type": row["resource_type"],
        "resource_id": row["resource_id"],
        "purpose": row["purpose"],
        "correlation_id": row["correlation_id"],
        "source": row["source"],
        "details": row["details"],
        "database_user": row["database_user"],
        "leaf": base64.b64encode(bytes(row["leaf"])).decode(),
        "leaf_hash": base64.b64encode(bytes(row["leaf_hash"])).decode(),
    }


def list_events(conn: Connection, query: EventQuery) -> tuple[list[dict[str, Any]], str | None]:
    """One page of entries in (occurred_at, id) order and the cursor of the next page (None on the last)."""
    if not 1 <= query.limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for column, value in (
        ("tenant_id", query.tenant_id),
        ("resource_id", query.resource_id),
        ("event_type", query.event_type),
    ):
        if value is not None:
            conditions.append(sql.SQL("e.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if query.occurred_from is not None:
        conditions.append(sql.SQL("e.occurred_at >= %s"))
        params.append(query.occurred_from)
    if query.occurred_to is not None:
        conditions.append(sql.SQL("e.occurred_at < %s"))
        params.append(query.occurred_to)
    if query.after is not None:
        conditions.append(sql.SQL("(e.occurred_at, e.id) > (%s, %s)"))
        params.extend(query.after)
    where = sql.SQL(" where ") + sql.SQL(" and ").join(conditions) if conditions else sql.SQL("")
    statement = sql.SQL(
        "select {columns} from billing_audit.entries e left join billing_audit.leaves l on l.entry_id = e.id"
        "{where} order by e.occurred_at, e.id limit %s"
    ).format(columns=sql.SQL(_ENTRY_COLUMNS), where=where)
    rows = conn.execute(statement, [*params, query.limit + 1]).fetchall()
    page, more = rows[: query.limit], len(rows) > query.limit
    cursor = encode_cursor(page[-1]["occurred_at"], page[-1]["id"]) if more else None
    return [entry_document(row) for row in page], cursor


def latest_checkpoint(conn: Connection) -> Checkpoint | None:
    stored = postgres.latest_checkpoint(conn)
    return None if stored is None else stored.checkpoint


@dataclass(frozen=True)
class InclusionProof:
    entry: dict[str, Any]
    checkpoint: Checkpoint
    proof: list[bytes]

    def as_document(self) -> dict[str, Any]:
        return {
            "seq": self.entry["seq"],
            "tree_size": self.checkpoint.tree_size,
            "leaf_hash": self.entry["leaf_hash"],
            "proof": [base64.b64encode(h).decode() for h in self.proof],
            "checkpoint": self.checkpoint.as_document(),
            "entry": self.entry,
            "algorithm": "RFC 6962 (SHA-256); verify with the leaf hash, seq, tree_size and the checkpoint root",
        }


def inclusion_proof(conn: Connection, seq: int, tree_size: int) -> InclusionProof:
    """The audit path of tree index `seq` in the checkpointed tree of `tree_size`, verified before it is returned."""
    if not 0 <= seq < tree_size:
        raise ValidationFailed([FieldError("seq", "not_in_tree", f"tree index {seq} is not in a tree of {tree_size}")])
    stored = postgres.checkpoint_of_size(conn, tree_size)
    if stored is None:
        raise AuditRecordNotFound(f"no checkpoint of tree size {tree_size}")
    row = conn.execute(
        f"select {_ENTRY_COLUMNS} from billing_audit.leaves l join billing_audit.entries e on e.id = l.entry_id"
        " where l.seq = %s",
        [seq],
    ).fetchone()
    if row is None:
        raise AuditRecordNotFound(f"no entry at tree index {seq}")
    tree = merkle.MerkleTree(postgres.leaf_hashes(conn, 0, tree_size))
    proof = tree.inclusion_proof(seq, tree_size)
    # A proof we hand out must hold against the signed root; if it does not, the trail was changed: say so loudly.
    merkle.verify_inclusion(seq, tree_size, bytes(row["leaf_hash"]), proof, stored.checkpoint.root_hash)
    return InclusionProof(entry_document(row), stored.checkpoint, proof)
