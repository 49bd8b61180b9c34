"""The canonical leaf bytes of an audit entry (format v1), the Python twin of billing_audit.canonical_leaf.

A JSON object, UTF-8, no insignificant whitespace, keys in ascending code-point order, exactly FIELDS (null when
absent), strings escaped as JSON's minimum (json.dumps with ensure_ascii=False escapes exactly what PostgreSQL's
to_json does), occurred_at in UTC as RFC 3339 with microseconds and 'Z'. `verify` rebuilds every stored leaf from
its row with this function; a test checks it against the SQL function byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

LEAF_FORMAT_VERSION: Final = 1
FIELDS: Final = (
    "actor",
    "correlation_id",
    "database_user",
    "details",
    "event_type",
    "id",
    "occurred_at",
    "outcome",
    "purpose",
    "resource_id",
    "resource_type",
    "source",
    "tenant_id",
    "v",
)


def rfc3339_utc(moment: datetime) -> str:
    """2026-03-01T12:00:00.000000Z: UTC, microseconds always present."""
    if moment.tzinfo is None:
        raise ValueError("audit times are timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_leaf(row: Mapping[str, Any]) -> bytes:
    """The leaf bytes of an entry row (the columns of billing_audit.entries)."""
    tenant_id: UUID | None = row["tenant_id"]
    document = {
        "actor": row["actor"],
        "correlation_id": row["correlation_id"],
        "database_user": row["database_user"],
        "details": dict(row["details"] or {}),
        "event_type": row["event_type"],
        "id": int(row["id"]),
        "occurred_at": rfc3339_utc(row["occurred_at"]),
        "outcome": row["outcome"],
        "purpose": row["purpose"],
        "resource_id": row["resource_id"],
        "resource_type": row["resource_type"],
        "source": row["source"],
        "tenant_id": None if tenant_id is None else str(tenant_id),
        "v": LEAF_FORMAT_VERSION,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
