"""The entry an outbox row becomes: Source, DetailType and a Detail consumers can de-duplicate on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from billing.outbox.events import PublishResult, event_from_outbox_row


def outbox_row(**overrides: Any) -> dict[str, Any]:
    event_id = uuid4()
    row: dict[str, Any] = {
        "tenant_id": uuid4(),
        "id": 42,
        "event_id": event_id,
        "aggregate_id": uuid4(),
        "event_type": "billing.execution.completed",
        "payload": {"event_id": str(event_id), "amount": 1999, "currency": "EUR", "note": "café"},
        "occurred_at": datetime(2026, 4, 1, 12, tzinfo=UTC),
    }
    row.update(overrides)
    return row


def test_event_from_row_uses_billing_source_and_event_type_as_detail_type() -> None:
    row = outbox_row()

    event = event_from_outbox_row(row)

    assert event.source == "billing.execution"
    assert event.detail_type == "billing.execution.completed"
    assert event.time == row["occurred_at"]
    assert event.ordering_key == (row["tenant_id"], row["aggregate_id"])


def test_event_from_row_detail_is_payload_plus_event_id_and_outbox_id() -> None:
    row = outbox_row()

    detail = json.loads(event_from_outbox_row(row).detail)

    assert detail == {**row["payload"], "event_id": str(row["event_id"]), "outbox_id": 42}
    assert "replayed" not in detail
    assert "café" in event_from_outbox_row(row).detail  # UTF-8, not \\u escapes: sized as EventBridge counts


def test_event_from_row_replayed_keeps_event_id_and_says_replayed() -> None:
    row = outbox_row()

    detail = json.loads(event_from_outbox_row(row, replayed=True).detail)

    assert detail["replayed"] is True
    assert detail["event_id"] == str(row["event_id"])


def test_publish_result_error_names_code_and_message() -> None:
    assert PublishResult(False, "InternalFailure", "boom").error == "InternalFailure: boom"
    assert PublishResult(False).error == "unknown: no message"
