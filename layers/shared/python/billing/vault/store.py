"""billing_vault.card_secrets: encrypted card numbers, one row per vault token; the vault role's alone."""

from __future__ import annotations

from uuid import UUID

from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import tenant_transaction
from billing.vault.envelope import SealedCard

_INSERT = """
insert into billing_vault.card_secrets (tenant_id, token, scheme, key_id, encrypted_data_key, nonce, ciphertext)
values (%s, %s, %s, %s, %s, %s, %s)
"""
_SELECT = """
select scheme, key_id, encrypted_data_key, nonce, ciphertext, shredded_at from billing_vault.card_secrets
 where tenant_id = %s and token = %s
"""
# Shredding: the wrapped key, nonce and ciphertext are gone for good; the row says the card existed.
_SHRED = """
update billing_vault.card_secrets
   set encrypted_data_key = null, nonce = null, ciphertext = null, shredded_at = clock_timestamp()
 where tenant_id = %s and token = %s and shredded_at is null
"""


class CardSecretStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def insert(self, tenant_id: UUID, token: str, sealed: SealedCard) -> None:
        with translated_guard_errors(), tenant_transaction(self._conn, tenant_id):
            self._conn.execute(
                _INSERT,
                [tenant_id, token, sealed.scheme, sealed.key_id, sealed.encrypted_data_key, sealed.nonce,
                 sealed.ciphertext],
            )  # fmt: skip

    def get(self, tenant_id: UUID, token: str) -> SealedCard | None:
        """The sealed card under a token of the tenant; None if there is none or it was shredded."""
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_SELECT, [tenant_id, token]).fetchone()
        if row is None or row["shredded_at"] is not None:
            return None
        return SealedCard(
            row["scheme"],
            row["key_id"],
            bytes(row["encrypted_data_key"]),
            bytes(row["nonce"]),
            bytes(row["ciphertext"]),
        )

    def shred(self, tenant_id: UUID, token: str) -> bool:
        """Destroy a card's secret; True if this call shredded it (False: already shredded or unknown)."""
        with translated_guard_errors(), tenant_transaction(self._conn, tenant_id):
            return self._conn.execute(_SHRED, [tenant_id, token]).rowcount == 1
