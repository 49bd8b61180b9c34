"""Signed checkpoints (tree heads) of the audit tree: what is signed, how, and how a checkpoint travels.

The signed body follows the shape of C2SP's tlog-checkpoint note: an origin line, the tree size, the base64 root
hash, then our own line, the creation time (UTC, RFC 3339 with microseconds), each ending in a newline. The
signature is HMAC-SHA-256 over those bytes with the key named by key_id (billing.audit.keys). Pure.
"""

from __future__ import annotations

import base64
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any, Final

from billing.audit.keys import KeyRing
from billing.audit.leaf import rfc3339_utc

ORIGIN: Final = "billing-audit-log/v1"
ALGORITHM: Final = "HMAC-SHA256"


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    root_hash: bytes
    created_at: datetime
    key_id: str
    signature: bytes
    algorithm: str = ALGORITHM

    def body(self) -> bytes:
        return signed_body(self.tree_size, self.root_hash, self.created_at)

    def as_document(self) -> dict[str, Any]:
        """The JSON form: the S3 object and the auditors' API."""
        return {
            "origin": ORIGIN,
            "tree_size": self.tree_size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "created_at": rfc3339_utc(self.created_at),
            "key_id": self.key_id,
            "algorithm": self.algorithm,
            "signature": base64.b64encode(self.signature).decode(),
            "signed_body": self.body().decode(),
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Checkpoint:
        if document.get("origin") != ORIGIN:
            raise ValueError("not a checkpoint of this log")
        return cls(
            tree_size=int(document["tree_size"]),
            root_hash=base64.b64decode(document["root_hash"]),
            created_at=datetime.fromisoformat(document["created_at"].replace("Z", "+00:00")),
            key_id=str(document["key_id"]),
            signature=base64.b64decode(document["signature"]),
            algorithm=str(document["algorithm"]),
        )

    def to_json(self) -> bytes:
        return json.dumps(self.as_document(), sort_keys=True, separators=(",", ":")).encode()


def signed_body(tree_size: int, root_hash: bytes, created_at: datetime) -> bytes:
    return f"{ORIGIN}\n{tree_size}\n{base64.b64encode(root_hash).decode()}\n{rfc3339_utc(created_at)}\n".encode()


def sign(tree_size: int, root_hash: bytes, created_at: datetime, ring: KeyRing) -> Checkpoint:
    """A checkpoint of (tree_size, root_hash) at created_at, signed with the ring's active key."""
    key_id, key = ring.signing_key()
    signature = hmac.new(key, signed_body(tree_size, root_hash, created_at), sha256).digest()
    return Checkpoint(tree_size, root_hash, created_at, key_id, signature)


def signature_problem(checkpoint: Checkpoint, ring: KeyRing) -> str | None:
    """Why the checkpoint's signature does not hold (unknown key, another algorithm, a mismatch), or None."""
    if checkpoint.algorithm != ALGORITHM:
        return f"unknown signature algorithm {checkpoint.algorithm!r}"
    key = ring.key(checkpoint.key_id)
    if key is None:
        return f"signed with key {checkpoint.key_id!r}, which the key ring does not hold"
    expected = hmac.new(key, checkpoint.body(), sha256).digest()
    if not hmac.compare_digest(expected, checkpoint.signature):
        return "signature does not match"
    return None
