"""Fingerprints: the same card (or bank account) in one tenant always gives the same value, in another a different.

fingerprint = HMAC-SHA-256(tenant key, domain || normalised number), base64url without padding. The tenant key is
HMAC-SHA-256(fingerprint key of version v, "billing-fingerprint-tenant-v1:" || tenant id): the versioned keys live
in Secrets Manager (billing/vault/fingerprint-keys), never in the database, so a stolen database cannot be used to
test card numbers against the fingerprints, and one tenant's fingerprints say nothing about another's. The key
version is stored beside each fingerprint; after a rotation, fingerprints of the same card agree only within one
version (the vault can fingerprint its stored cards again under the new one). Velocity checks count on it.

base64url, not hex: 0.4 % of random 64-digit hex strings hold a Luhn-valid 13-19 digit window, which the
database's card number guard would refuse; 43 base64url characters practically never do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from uuid import UUID

_TENANT_KEY_LABEL: Final = b"billing-fingerprint-tenant-v1:"
# Domain separation: a card number and an IBAN never share a fingerprint.
CARD_DOMAIN: Final = b"card:"
IBAN_DOMAIN: Final = b"iban:"
MIN_KEY_BYTES: Final = 32


class FingerprintKeysMisconfigured(RuntimeError):
    """The fingerprint key secret does not have the expected shape: a deployment fault (500)."""


@dataclass(frozen=True, slots=True)
class Fingerprint:
    value: str
    key_version: str


class FingerprintKeys(Protocol):
    """The versioned fingerprint keys (Secrets Manager in AWS, moto locally)."""

    def current(self) -> tuple[str, bytes]:
        """(version, key) new fingerprints are made with."""
        ...

    def key(self, version: str) -> bytes:
        """The key of a version, to recompute fingerprints made under it."""
        ...


def parse_fingerprint_secret(value: str | bytes) -> tuple[str, dict[str, bytes]]:
    """{"current": "v2", "keys": {"v1": "<base64>", "v2": "<base64>"}} -> ("v2", {version: key}). Keys of at least
    32 bytes; the value is never echoed in an error."""
    try:
        document: Any = json.loads(value)
        current = document["current"]
        keys = {str(version): base64.b64decode(encoded, validate=True) for version, encoded in document["keys"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FingerprintKeysMisconfigured("fingerprint key secret is not {current, keys} JSON") from exc
    if current not in keys or any(len(key) < MIN_KEY_BYTES for key in keys.values()):
        raise FingerprintKeysMisconfigured(f"fingerprint keys need a current version and {MIN_KEY_BYTES}+ bytes each")
    return str(current), keys


def fingerprint_secret_value(current: str, keys: Mapping[str, bytes]) -> str:
    """The secret's JSON (local seeding, rotation tooling)."""
    return json.dumps({"current": current, "keys": {v: base64.b64encode(k).decode() for v, k in keys.items()}})


class StaticFingerprintKeys:
    """Keys held in memory: tests, and the adapter below once it has read the secret."""

    def __init__(self, current: str, keys: Mapping[str, bytes]) -> None:
        if current not in keys:
            raise ValueError("the current version must be one of the keys")
        self._current = current
        self._keys = dict(keys)

    def current(self) -> tuple[str, bytes]:
        return self._current, self._keys[self._current]

    def key(self, version: str) -> bytes:
        try:
            return self._keys[version]
        except KeyError:
            raise FingerprintKeysMisconfigured(f"no fingerprint key of version {version!r}") from None


class SecretsManagerFingerprintKeys:
    """The keys from a Secrets Manager secret, read through Powertools' cache (5 minutes)."""

    def __init__(self, secret_id: str, *, max_age_seconds: int = 300, provider: Any | None = None) -> None:
        self._secret_id = secret_id
        self._max_age = max_age_seconds
        self._provider = provider

    def _keys(self) -> StaticFingerprintKeys:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider()
        value = self._provider.get(self._secret_id, max_age=self._max_age)
        if not isinstance(value, str | bytes):
            raise FingerprintKeysMisconfigured(f"secret {self._secret_id} has no string value")
        return StaticFingerprintKeys(*parse_fingerprint_secret(value))

    def current(self) -> tuple[str, bytes]:
        return self._keys().current()

    def key(self, version: str) -> bytes:
        return self._keys().key(version)


def tenant_key(key: bytes, tenant_id: UUID) -> bytes:
    return hmac.new(key, _TENANT_KEY_LABEL + str(tenant_id).encode(), hashlib.sha256).digest()


def _fingerprint(keys: FingerprintKeys, tenant_id: UUID, message: bytes, version: str | None) -> Fingerprint:
    if version is None:
        version, key = keys.current()
    else:
        key = keys.key(version)
    digest = hmac.new(tenant_key(key, tenant_id), message, hashlib.sha256).digest()
    return Fingerprint(base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), version)


def card_fingerprint(keys: FingerprintKeys, tenant_id: UUID, pan: str, *, version: str | None = None) -> Fingerprint:
    """The fingerprint of a card number (digits only) in a tenant, under the current key or `version`."""
    return _fingerprint(keys, tenant_id, CARD_DOMAIN + pan.encode(), version)


def iban_fingerprint(keys: FingerprintKeys, tenant_id: UUID, iban: str, *, version: str | None = None) -> Fingerprint:
    """The fingerprint of a normalised IBAN in a tenant."""
    return _fingerprint(keys, tenant_id, IBAN_DOMAIN + iban.encode(), version)
