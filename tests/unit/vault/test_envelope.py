"""Envelope encryption: round trip, a data key per card, and every tampering detected (never a wrong number)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from billing.domain.errors import VaultIntegrityError
from billing.domain.execution import looks_like_card_number
from billing.vault.envelope import SCHEME, DataKey, encryption_context, seal, unseal
from billing.vault.vault import DetokenizePurpose, new_vault_token

PAN = "4242424242424242"


class FakeKms:
    """A key service that binds the wrapped key to its context as KMS does (AES-GCM under a master key)."""

    def __init__(self) -> None:
        self._master = AESGCM(os.urandom(32))
        self.generated: list[dict[str, str]] = []

    def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        plaintext = os.urandom(32)
        nonce = os.urandom(12)
        self.generated.append(dict(context))
        return DataKey(
            "key-1", plaintext, nonce + self._master.encrypt(nonce, plaintext, repr(sorted(context.items())).encode())
        )

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        try:
            return self._master.decrypt(wrapped[:12], wrapped[12:], repr(sorted(context.items())).encode())
        except Exception as exc:
            raise VaultIntegrityError("context mismatch") from exc


def test_seal_and_unseal_round_trip_under_a_fresh_data_key_per_card() -> None:
    kms, context = FakeKms(), encryption_context(uuid4(), new_vault_token())
    first, second = seal(PAN, kms, context), seal(PAN, kms, context)
    assert unseal(first, kms, context) == PAN
    assert first.scheme == SCHEME
    assert len(first.nonce) == 12
    assert len(first.ciphertext) == len(PAN) + 16
    assert first.encrypted_data_key != second.encrypted_data_key
    assert first.ciphertext != second.ciphertext
    assert PAN.encode() not in first.ciphertext
    assert kms.generated == [context, context]


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "encrypted_data_key"])
def test_flipping_one_bit_anywhere_is_detected(field: str) -> None:
    kms, context = FakeKms(), encryption_context(uuid4(), new_vault_token())
    sealed = seal(PAN, kms, context)
    value = bytearray(getattr(sealed, field))
    value[len(value) // 2] ^= 0x01
    changes: dict[str, Any] = {field: bytes(value)}
    with pytest.raises(VaultIntegrityError):
        unseal(dataclasses.replace(sealed, **changes), kms, context)


def test_a_secret_moved_to_another_token_or_tenant_fails_authentication() -> None:
    kms, tenant, token = FakeKms(), uuid4(), new_vault_token()
    sealed = seal(PAN, kms, encryption_context(tenant, token))
    for context in (encryption_context(tenant, new_vault_token()), encryption_context(uuid4(), token)):
        with pytest.raises(VaultIntegrityError):
            unseal(sealed, kms, context)


def test_even_with_the_right_data_key_a_misfiled_ciphertext_fails_the_associated_data() -> None:
    class TrustingKms(FakeKms):
        def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str], key_id: str) -> bytes:
            return self._master.decrypt(wrapped[:12], wrapped[12:], repr(sorted(self.generated[0].items())).encode())

    kms, tenant, token = TrustingKms(), uuid4(), new_vault_token()
    sealed = seal(PAN, kms, encryption_context(tenant, token))
    with pytest.raises(VaultIntegrityError):
        unseal(sealed, kms, encryption_context(tenant, new_vault_token()))


def test_unknown_scheme_is_refused() -> None:
    kms, context = FakeKms(), encryption_context(uuid4(), new_vault_token())
    with pytest.raises(VaultIntegrityError):
        unseal(dataclasses.replace(seal(PAN, kms, context), scheme="rot13"), kms, context)


def test_vault_tokens_are_random_opaque_and_never_card_like() -> None:
    tokens = {new_vault_token() for _ in range(3000)}
    assert len(tokens) == 3000
    assert all(t.startswith("vtok_") and len(t) == 37 and not looks_like_card_number(t) for t in tokens)


def test_the_purposes_are_a_closed_set() -> None:
    assert {p.value for p in DetokenizePurpose} == {"provision_provider_token", "refingerprint"}
