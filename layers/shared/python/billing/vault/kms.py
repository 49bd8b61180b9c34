"""The DataKeyService port on AWS KMS (GenerateDataKey, Decrypt), with the encryption context on both calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from billing.domain.errors import VaultIntegrityError
from billing.vault.envelope import DATA_KEY_BYTES, DataKey


class KmsDataKeys:
    """Data keys from one KMS key (an id, ARN or alias). Decrypt names the key it expects, so a wrapped key from any
    other KMS key is refused rather than decrypted."""

    def __init__(self, key_id: str, client: Any | None = None) -> None:
        self._key_id = key_id
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # deferred: only the vault's card paths need it

            self._client = boto3.client("kms")
        return self._client

    def generate_data_key(self, context: Mapping[str, str]) -> DataKey:
        answer = self.client.generate_data_key(
            KeyId=self._key_id, NumberOfBytes=DATA_KEY_BYTES, EncryptionContext=dict(context)
        )
        return DataKey(key_id=answer["KeyId"], plaintext=answer["Plaintext"], wrapped=answer["CiphertextBlob"])

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            answer = self.client.decrypt(CiphertextBlob=wrapped, EncryptionContext=dict(context), KeyId=key_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in {"InvalidCiphertextException", "IncorrectKeyException"}:
                raise VaultIntegrityError("KMS refused the card's data key (context or key mismatch)") from exc
            raise
        plaintext: bytes = answer["Plaintext"]
        return plaintext
