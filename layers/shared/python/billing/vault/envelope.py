"""Envelope encryption of card numbers: a fresh KMS data key per card, AES-256-GCM, the context bound in twice.

    KMS key (alias/billing-vault, never leaves KMS)
      └─ data key (GenerateDataKey, 256 bits, one per card) with EncryptionContext {tenant_id, vault_token}
           └─ PAN ciphertext: AES-256-GCM(data key, 96-bit random nonce, PAN, associated data = the same context)

Only the wrapped data key is stored; unwrapping it needs KMS Decrypt with the same encryption context, which only
the vault function's IAM role may call (and CloudTrail logs). The context is also the cipher's associated data, so
a ciphertext moved to another token's or tenant's row fails authentication even with the right data key. A
tampered ciphertext, nonce or wrapped key fails too: VaultIntegrityError, never a wrong number.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billing.domain.errors import VaultIntegrityError

SCHEME: Final = "kms-aes-256-gcm-v1"
NONCE_BYTES: Final = 12
DATA_KEY_BYTES: Final = 32


def encryption_context(tenant_id: UUID, token: str) -> dict[str, str]:
    """What a card's data key and ciphertext are bound to: its tenant and its vault token."""
    return {"tenant_id": str(tenant_id), "vault_token": token}


def associated_data(context: Mapping[str, str]) -> bytes:
    """The context as AES-GCM associated data: canonical JSON (sorted keys, no spaces)."""
    return json.dumps(dict(context), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class DataKey:
    """A data key as KMS hands it out: the plaintext (used once, then dropped) and the wrapped form (stored)."""

    key_id: str
    plaintext: bytes = field(repr=False)
    wrapped: bytes


class DataKeyService(Protocol):
    """The key service (AWS KMS; moto locally)."""

    def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        """A new 256-bit data key bound to `context`."""
        ...

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        """The plaintext of a wrapped data key; VaultIntegrityError if the context or the wrapped key is wrong."""
        ...


@dataclass(frozen=True, slots=True)
class SealedCard:
    """An encrypted card number as stored in billing_vault.card_secrets."""

    scheme: str
    key_id: str
    encrypted_data_key: bytes
    nonce: bytes
    ciphertext: bytes


def seal(pan: str, keys: DataKeyService, context: Mapping[str, str]) -> SealedCard:
    """Encrypt a card number under a new data key bound to `context`."""
    data_key = keys.generate_data_key(context)
    if len(data_key.plaintext) != DATA_KEY_BYTES:
        raise VaultIntegrityError("the key service returned a data key of the wrong size")
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key.plaintext).encrypt(nonce, pan.encode("ascii"), associated_data(context))
    return SealedCard(SCHEME, data_key.key_id, data_key.wrapped, nonce, ciphertext)


def unseal(sealed: SealedCard, keys: DataKeyService, context: Mapping[str, str]) -> str:
    """The card number of a sealed card; VaultIntegrityError if anything about it was altered or misfiled."""
    if sealed.scheme != SCHEME:
        raise VaultIntegrityError(f"unknown vault scheme {sealed.scheme!r}")
    plaintext_key = keys.decrypt_data_key(sealed.encrypted_data_key, context, sealed.key_id)
    try:
        pan = AESGCM(plaintext_key).decrypt(sealed.nonce, sealed.ciphertext, associated_data(context))
    except (InvalidTag, ValueError) as exc:
        raise VaultIntegrityError("a stored card secret failed authentication") from exc
    return pan.decode("ascii")
