"""Tokenize, detokenize and shred card numbers. Detokenization is for a declared purpose only, and audited.

A vault token ('vtok_' + 32 hex, random, meaningless outside the vault) stands for one encrypted card number of one
tenant. Only this module turns a token back into a number, only for a purpose from the closed set below, and every
attempt is recorded in the audit trail, granted or denied, before any number is handed back.
"""

# S105 flags "token" in constant names; these are names of tokens and attributes, never secrets.
# ruff: noqa: S105

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Final
from uuid import UUID

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.audit.events import MAX_FIELD_LENGTH, MAX_PURPOSE_LENGTH
from billing.db.connection import Connection
from billing.domain.errors import DetokenizationDenied, VaultIntegrityError
from billing.domain.execution import looks_like_card_number
from billing.instruments.model import Caller
from billing.vault.envelope import DataKeyService, SealedCard, encryption_context, seal, unseal
from billing.vault.store import CardSecretStore

TOKEN_PREFIX: Final = "vtok_"
RESOURCE_TYPE: Final = "vault_token"


class DetokenizePurpose(StrEnum):
    """Why a card number may leave the vault's storage; nothing else is a reason."""

    # A provider needs the card to issue its own token for it (a new PSP, a network token).
    PROVISION_PROVIDER_TOKEN = "provision_provider_token"
    # A fingerprint key was rotated: the stored cards are fingerprinted again under the new version.
    REFINGERPRINT = "refingerprint"


def new_vault_token() -> str:
    """'vtok_' + 32 random hex digits, drawn again if it would hold a Luhn-valid digit window (1 in 600)."""
    while True:
        candidate = TOKEN_PREFIX + secrets.token_hex(16)
        if not looks_like_card_number(candidate):
            return candidate


class CardVault:
    """The card numbers of every tenant, on the vault role's connection."""

    def __init__(self, conn: Connection, keys: DataKeyService) -> None:
        self._conn = conn
        self._keys = keys
        self._store = CardSecretStore(conn)

    def seal(self, tenant_id: UUID, pan: str) -> tuple[str, SealedCard]:
        """A new token and the number sealed under it (a KMS call: do it with no transaction open)."""
        token = new_vault_token()
        return token, seal(pan, self._keys, encryption_context(tenant_id, token))

    def store(self, tenant_id: UUID, token: str, sealed: SealedCard) -> None:
        """Store a sealed card (in the caller's transaction, with the instrument that refers to it)."""
        self._store.insert(tenant_id, token, sealed)

    def shred(self, tenant_id: UUID, token: str) -> bool:
        """Destroy the stored card number for good (crypto-shredding); True if this call did."""
        return self._store.shred(tenant_id, token)

    def detokenize(self, caller: Caller, token: str, purpose: DetokenizePurpose | str, *, resource: str) -> str:
        """The card number behind `token`, for `purpose`; DetokenizationDenied otherwise. Audited either way, and
        the number is returned only once the granted entry is recorded."""
        declared = purpose if isinstance(purpose, DetokenizePurpose) else _declared(purpose)
        denial: str | None = None
        pan: str | None = None
        if declared is None:
            denial = "undeclared_purpose"
        else:
            sealed = self._store.get(caller.tenant_id, token)
            if sealed is None:
                denial = "no_such_card"
            else:
                try:
                    pan = unseal(sealed, self._keys, encryption_context(caller.tenant_id, token))
                except VaultIntegrityError:
                    denial = "integrity_check_failed"
        record_audit_event(
            self._conn,
            AuditEvent(
                event_type=AuditEventType.CARDHOLDER_DATA_DETOKENIZED,
                outcome=AuditOutcome.DENIED if denial else AuditOutcome.GRANTED,
                actor=caller.actor,
                tenant_id=caller.tenant_id,
                resource_type="payment_instrument",
                resource_id=resource[:MAX_FIELD_LENGTH],
                purpose=(declared.value if declared else str(purpose))[:MAX_PURPOSE_LENGTH],
                correlation_id=caller.correlation_id,
                source=caller.source,
                details={"reason": denial} if denial else {},
            ),
        )
        if denial is not None or pan is None:
            if denial == "integrity_check_failed":
                raise VaultIntegrityError(f"the card secret of {resource[:64]} failed authentication")
            raise DetokenizationDenied(f"detokenization refused: {denial}", reason=denial)
        return pan


def _declared(purpose: str) -> DetokenizePurpose | None:
    try:
        return DetokenizePurpose(purpose)
    except ValueError:
        return None
