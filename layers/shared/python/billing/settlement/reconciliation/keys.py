"""What the engine remembers across chunks, at 16 bytes an entry instead of a Python object per item.

A million-line file must not become a million tuples (a dict of them costs ~150 MB; a Lambda has 512 MB for all of
it). Items and executions are remembered as 64-bit digests in a flat open-addressing table of two arrays, which is
exact for the digests: two different items are confused only if their BLAKE2b-64 digests collide, about 3 in 10^8
for a million pairs. Temporary tables would cost nothing in memory, but the run-time roles may not create them
(billing.db.roles.secure_database), and they are session state behind RDS Proxy.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from hashlib import blake2b
from typing import Final
from uuid import UUID

_INITIAL_CAPACITY: Final = 1 << 12
_UNSET: Final = 0
SEPARATOR: Final = "\x1f"
_LOW_64: Final = (1 << 64) - 1
# Knuth's multiplicative constant (2^64 / golden ratio): spreads the tenant's bits over the whole word.
_MIX: Final = 0x9E3779B97F4A7C15


def digest64(parts: Iterable[str]) -> int:
    """A non-zero 64-bit digest of `parts` (0 marks an empty slot of the table)."""
    return digest_text(SEPARATOR.join(parts))


def digest_text(text: str) -> int:
    """digest64 of parts already joined with SEPARATOR (the engine builds them in one f-string a row)."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "little") or 1


def execution_key(tenant_id: UUID, execution_id: UUID) -> int:
    """The 64 bits an execution is remembered under: the id's low 64 bits (62 of them random in a uuid4 or uuid7)
    mixed with the tenant's, without a hash function (this runs for every execution of the period)."""
    return ((tenant_id.int * _MIX) ^ execution_id.int) & _LOW_64 or 1


class KeyTable:
    """A map of non-zero 64-bit keys to 64-bit values (linear probing, at most half full, grows by doubling)."""

    __slots__ = ("_keys", "_mask", "_size", "_values")

    def __init__(self, capacity: int = _INITIAL_CAPACITY) -> None:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("capacity is a power of two")
        self._keys = array("Q", bytes(8 * capacity))
        self._values = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None

    def get(self, key: int) -> int | None:
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._values[slot]
            if found == _UNSET:
                return None
            slot = (slot + 1) & mask

    def setdefault(self, key: int, value: int = 0) -> int | None:
        """Remember `key` with `value` unless it is there: None when it was new, else the value it already had."""
        if key == _UNSET:
            raise ValueError("0 is not a key")
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self._values[slot]
            if found == _UNSET:
                break
            slot = (slot + 1) & mask
        keys[slot] = key
        self._values[slot] = value
        self._size += 1
        if self._size * 2 > mask:
            self._grow()
        return None

    def add(self, key: int) -> bool:
        """Remember `key`; True if it was new."""
        if key == _UNSET:
            raise ValueError("0 is not a key")
        keys, mask = self._keys, self._mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return False
            if found == _UNSET:
                break
            slot = (slot + 1) & mask
        # setdefault's checks and growth, for the new key only (most keys are new once and then seen again).
        return self.setdefault(key) is None

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        capacity = (self._mask + 1) * 2
        self._keys = keys = array("Q", bytes(8 * capacity))
        self._values = values = array("Q", bytes(8 * capacity))
        self._mask = mask = capacity - 1
        for key, value in zip(old_keys, old_values, strict=True):
            if key != _UNSET:
                slot = key & mask
                while keys[slot] != _UNSET:
                    slot = (slot + 1) & mask
                keys[slot] = key
                values[slot] = value
