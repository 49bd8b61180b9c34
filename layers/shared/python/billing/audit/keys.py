"""The checkpoint signing keys: a key ring in one Secrets Manager secret (AUDIT_CHECKPOINT_KEY_SECRET_NAME).

The secret's value is {"active": "<key id>", "keys": {"<key id>": "<base64 key>", ...}}. The active key signs new
checkpoints; every listed key verifies the checkpoints that name it (each checkpoint stores its key_id), so a
rotation adds a key and makes it active while the old keys stay for as long as their checkpoints are retained
(PCI DSS 10.5.1: twelve months at least). Keys are HMAC-SHA-256 keys of 32 random bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

MIN_KEY_BYTES: Final = 32


@dataclass(frozen=True)
class KeyRing:
    active: str
    keys: Mapping[str, bytes]

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError("the active checkpoint key is not in the key ring")
        if any(len(key) < MIN_KEY_BYTES for key in self.keys.values()):
            raise ValueError(f"checkpoint keys are at least {MIN_KEY_BYTES} bytes")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def signing_key(self) -> tuple[str, bytes]:
        return self.active, self.keys[self.active]

    def key(self, key_id: str) -> bytes | None:
        return self.keys.get(key_id)


def parse_key_ring(value: str | bytes) -> KeyRing:
    """The KeyRing of a secret value (see the module docstring); ValueError, never echoing a key, if malformed."""
    try:
        document = json.loads(value)
        keys = {str(key_id): base64.b64decode(key, validate=True) for key_id, key in document["keys"].items()}
        return KeyRing(active=str(document["active"]), keys=keys)
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise ValueError("the checkpoint key secret is not a key ring") from None


def key_ring_secret_value(ring: KeyRing) -> str:
    return json.dumps(
        {"active": ring.active, "keys": {key_id: base64.b64encode(key).decode() for key_id, key in ring.keys.items()}}
    )


def rotated(ring: KeyRing | None, *, now: datetime | None = None) -> KeyRing:
    """A ring with a new random key made active; the old keys stay to verify what they signed."""
    moment = now or datetime.now(UTC)
    key_id = f"ck-{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
    keys = dict(ring.keys) if ring else {}
    keys[key_id] = secrets.token_bytes(MIN_KEY_BYTES)
    return KeyRing(active=key_id, keys=keys)


class KeyRingSource(Protocol):
    def key_ring(self) -> KeyRing: ...


class SecretsManagerKeyRing:
    """The key ring from Secrets Manager, read on every call (the checkpointer runs once a minute)."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id

    def key_ring(self) -> KeyRing:
        value = self._client.get_secret_value(SecretId=self._secret_id)["SecretString"]
        return parse_key_ring(value)

    def store(self, ring: KeyRing) -> None:
        """Write `ring` as the secret's new current version (rotation)."""
        self._client.put_secret_value(SecretId=self._secret_id, SecretString=key_ring_secret_value(ring))


@dataclass(frozen=True)
class StaticKeyRing:
    """A fixed ring (tests, and verification from an exported key ring)."""

    ring: KeyRing

    def key_ring(self) -> KeyRing:
        return self.ring
