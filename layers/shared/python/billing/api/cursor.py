"""Opaque pagination cursors: the (created_at, id) of the last row of the previous page."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from uuid import UUID

from billing.domain.errors import MalformedRequest


def encode_cursor(created_at: datetime, execution_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(execution_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, execution_id = json.loads(raw)
        return datetime.fromisoformat(created_at), UUID(execution_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise MalformedRequest("cursor is not one this API issued") from exc
