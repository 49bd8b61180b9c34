"""The pure parts of the audit trail: leaf format v1, checkpoint signing, key rings, event bounds, log lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from billing.audit import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.checkpoints import Checkpoint, sign, signature_problem, signed_body
from billing.audit.events import REQUIREMENTS
from billing.audit.keys import KeyRing, key_ring_secret_value, parse_key_ring, rotated
from billing.audit.leaf import FIELDS, canonical_leaf, rfc3339_utc
from billing.audit.log_sink import audit_log_fields
from billing.audit.queries import decode_cursor, encode_cursor
from billing.domain.errors import MalformedRequest

ROW = {
    "id": 42,
    "occurred_at": datetime(2026, 3, 14, 10, 26, 53, 589793, tzinfo=timezone(timedelta(hours=1))),
    "event_type": "chd.instrument_read",
    "outcome": "granted",
    "actor": "user-7",
    "tenant_id": UUID("6f1c2f7e-1111-4222-8333-944444444444"),
    "resource_type": "payment_instrument",
    "resource_id": "pi_123",
    "purpose": None,
    "correlation_id": "req-1",
    "source": "203.0.113.7",
    "details": {"z": "1", "a": "é\n"},
    "database_user": "billing_app_user",
}
RING = KeyRing(active="k2", keys={"k1": b"1" * 32, "k2": b"2" * 32})
NOW = datetime(2026, 12, 10, 12, 0, 0, 123456, tzinfo=UTC)


def test_the_leaf_is_sorted_compact_utc_json_with_every_field() -> None:
    leaf = canonical_leaf(ROW)
    assert (
        leaf
        == (
            '{"actor":"user-7","correlation_id":"req-1","database_user":"billing_app_user","details":{"a":"é\\n","z":"1"},'
            '"event_type":"chd.instrument_read","id":42,"occurred_at":"2026-03-14T09:26:53.589793Z","outcome":"granted",'
            '"purpose":null,"resource_id":"pi_123","resource_type":"payment_instrument","source":"203.0.113.7",'
            '"tenant_id":"6f1c2f7e-1111-4222-8333-944444444444","v":1}'
        ).encode()
    )
    assert list(json.loads(leaf)) == list(FIELDS) == sorted(FIELDS)


def test_the_leaf_changes_with_every_column() -> None:
    original = canonical_leaf(ROW)
    for column, value in [("actor", "x"), ("id", 43), ("outcome", "denied"), ("tenant_id", None), ("details", {})]:
        assert canonical_leaf({**ROW, column: value}) != original, column


def test_times_are_utc_with_microseconds_and_naive_times_are_refused() -> None:
    assert rfc3339_utc(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    with pytest.raises(ValueError, match="timezone"):
        rfc3339_utc(datetime(2026, 1, 1))


def test_a_checkpoint_is_signed_by_the_active_key_and_verified_by_the_key_it_names() -> None:
    checkpoint = sign(7, b"r" * 32, NOW, RING)
    assert checkpoint.key_id == "k2"
    assert checkpoint.body() == signed_body(7, b"r" * 32, NOW)
    assert checkpoint.body().decode().splitlines() == [
        "billing-audit-log/v1",
        "7",
        "cnJycnJycnJycnJycnJycnJycnJycnJycnJycnJycnI=",
        "2026-12-10T12:00:00.123456Z",
    ]
    assert signature_problem(checkpoint, RING) is None
    # After a rotation the old key still verifies what it signed.
    old = sign(7, b"r" * 32, NOW, KeyRing(active="k1", keys=RING.keys))
    assert signature_problem(old, RING) is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"tree_size": 8}, "signature does not match"),
        ({"root_hash": b"s" * 32}, "signature does not match"),
        ({"created_at": NOW + timedelta(microseconds=1)}, "signature does not match"),
        ({"key_id": "k9"}, "signed with key 'k9', which the key ring does not hold"),
        ({"algorithm": "none"}, "unknown signature algorithm 'none'"),
    ],
)
def test_any_change_to_a_checkpoint_breaks_its_signature(change: dict[str, object], problem: str) -> None:
    fields = {**sign(7, b"r" * 32, NOW, RING).__dict__, **change}
    assert signature_problem(Checkpoint(**fields), RING) == problem


def test_checkpoint_documents_round_trip() -> None:
    checkpoint = sign(7, b"r" * 32, NOW, RING)
    assert Checkpoint.from_document(json.loads(checkpoint.to_json())) == checkpoint
    with pytest.raises(ValueError, match="not a checkpoint"):
        Checkpoint.from_document({**checkpoint.as_document(), "origin": "another-log"})


def test_key_rings_round_trip_and_rotation_keeps_the_old_keys() -> None:
    assert parse_key_ring(key_ring_secret_value(RING)) == RING
    first = rotated(None, now=NOW)
    second = rotated(first, now=NOW + timedelta(days=1))
    assert second.active != first.active
    assert set(second.keys) == {first.active, second.active}
    assert all(len(key) == 32 for key in second.keys.values())


@pytest.mark.parametrize(
    "value",
    ["", "{}", '{"active": "a", "keys": {}}', '{"active": "a", "keys": {"a": "c2hvcnQ="}}', '{"active": 1, "keys": 2}'],
)
def test_malformed_key_rings_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ValueError, match="not a key ring") as caught:
        parse_key_ring(value)
    assert "c2hvcnQ" not in str(caught.value)


def test_every_event_type_maps_to_a_pci_sub_requirement() -> None:
    assert set(REQUIREMENTS) == set(AuditEventType)
    subrequirements = {f"10.2.1.{n}" for n in range(1, 8)}
    assert {r for rs in REQUIREMENTS.values() for r in rs} == subrequirements


def _event(**overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "event_type": AuditEventType.AUTHENTICATION_FAILED,
        "outcome": AuditOutcome.DENIED,
        "actor": "anonymous",
        "tenant_id": None,
        "resource_type": "api",
    }
    return AuditEvent(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides",
    [
        {"actor": ""},
        {"actor": "x" * 201},
        {"resource_type": ""},
        {"resource_id": "x" * 201},
        {"purpose": "x" * 101},
        {"details": {str(n): "v" for n in range(33)}},
        {"details": {"n": 1}},
    ],
)
def test_events_out_of_bounds_are_refused_before_the_database(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        _event(**overrides)


def test_a_log_line_carries_the_entry_fields_and_the_requirement() -> None:
    fields = audit_log_fields(_event(details={"reason": "expired"}), NOW)
    assert fields == {
        "event_type": "auth.failed",
        "outcome": "denied",
        "actor": "anonymous",
        "tenant_id": None,
        "resource_type": "api",
        "resource_id": None,
        "purpose": None,
        "correlation_id": None,
        "source": None,
        "details": {"reason": "expired"},
        "occurred_at": "2026-12-10T12:00:00.123456Z",
        "pci_dss": ["10.2.1.4"],
    }


def test_cursors_round_trip_and_foreign_ones_are_malformed_requests() -> None:
    assert decode_cursor(encode_cursor(NOW, 42)) == (NOW, 42)
    for cursor in ("nope", encode_cursor(NOW, 42)[:-3], "W10"):
        with pytest.raises(MalformedRequest):
            decode_cursor(cursor)
