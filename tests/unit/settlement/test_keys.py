"""The compact tables the engine remembers items and executions in: exact for their digests, 16 bytes an entry."""

from __future__ import annotations

from uuid import uuid4

import pytest

from billing.settlement.reconciliation.keys import KeyTable, digest64, execution_key


def test_a_key_is_new_once_then_answers_the_value_it_was_first_given() -> None:
    table = KeyTable()

    assert table.setdefault(12345, 7) is None
    assert (table.setdefault(12345, 9), table.get(12345), 12345 in table, len(table)) == (7, 7, True, 1)
    assert (table.get(54321), 54321 in table) == (None, False)


def test_the_table_grows_and_keeps_every_key_and_value() -> None:
    table = KeyTable(capacity=4)
    keys = [digest64([str(n)]) for n in range(10_000)]

    for n, key in enumerate(keys):
        assert table.add(key) if n % 2 else table.setdefault(key, n) is None

    assert len(table) == 10_000
    assert all(table.get(key) == (0 if n % 2 else n) for n, key in enumerate(keys))


def test_colliding_slots_are_probed_past() -> None:
    table = KeyTable(capacity=8)
    # All three land on slot 1 of 8.
    for key in (1, 9, 17):
        table.setdefault(key, key * 10)

    assert [table.get(k) for k in (1, 9, 17, 25)] == [10, 90, 170, None]


def test_zero_is_not_a_key_and_digests_never_are() -> None:
    with pytest.raises(ValueError, match="0 is not a key"):
        KeyTable().add(0)
    with pytest.raises(ValueError, match="power of two"):
        KeyTable(capacity=12)
    assert digest64(["a", "b"]) == digest64(["a", "b"]) > 0
    assert digest64(["a", "b"]) != digest64(["ab", ""])


def test_an_execution_is_remembered_under_its_tenant_and_id() -> None:
    tenant, execution = uuid4(), uuid4()

    assert execution_key(tenant, execution) == execution_key(tenant, execution)
    assert execution_key(tenant, execution) != execution_key(uuid4(), execution)
