"""Deploy only: writes the first version of the fingerprint key and checkpoint key secrets, in their JSON shapes.

CloudFormation can generate a secret's value only as one random string at one top-level key. Both secrets nest each
key under its version or key id: {"current": "v1", "keys": {"v1": "<base64>"}} (billing.instruments.fingerprints)
and {"active": "<key id>", "keys": {"<key id>": "<base64>"}} (billing.audit.keys). So the data stack creates them
with a generated placeholder, and a trigger of the service stack runs this function once, before the functions that
read them, to put the first real version: 32 random bytes per key, built by the code that parses it.

It never overwrites. A secret is seeded only while it holds its single placeholder version; once anything else has
been written (this function's seed, an operator's new key version), it is left alone, so a rerun changes nothing.
Its role may describe and write these two secrets, never read them.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

from billing import resource_names as names
from billing.audit.keys import key_ring_secret_value, rotated
from billing.instruments.fingerprints import MIN_KEY_BYTES, fingerprint_secret_value

# The first fingerprint key version; operators add v2, v3, ... (docs/infrastructure.md, "Keys").
INITIAL_FINGERPRINT_VERSION: Final = "v1"
# PutSecretValue's idempotency token for the seeded version (32 to 64 characters): a retried call is a no-op.
SEED_VERSION_ID: Final = "billing-initial-key-material-000000000001"


def initial_fingerprint_keys() -> str:
    return fingerprint_secret_value(INITIAL_FINGERPRINT_VERSION, {INITIAL_FINGERPRINT_VERSION: _random_key()})


def initial_checkpoint_key_ring() -> str:
    return key_ring_secret_value(rotated(None))


def _random_key() -> bytes:
    return secrets.token_bytes(MIN_KEY_BYTES)


# Environment variable naming each secret (the same names the functions read) -> its first value.
INITIAL_VALUES: Final[Mapping[str, Callable[[], str]]] = {
    names.ENV_FINGERPRINT_SECRET_ID: initial_fingerprint_keys,
    names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID: initial_checkpoint_key_ring,
}


def seed(client: Any, secret_id: str, initial_value: Callable[[], str]) -> bool:
    """Put the first value if the secret holds only its placeholder; True if it did."""
    versions: Mapping[str, list[str]] = client.describe_secret(SecretId=secret_id).get("VersionIdsToStages", {})
    # Any second version (ours, or an operator's) means the placeholder is gone: never write over real keys.
    if len(versions) != 1 or SEED_VERSION_ID in versions:
        return False
    client.put_secret_value(SecretId=secret_id, ClientRequestToken=SEED_VERSION_ID, SecretString=initial_value())
    return True


def seed_all(client: Any, environment: Mapping[str, str]) -> dict[str, bool]:
    """Seed every secret named in the environment; secret id -> whether it was seeded now."""
    return {
        environment[variable]: seed(client, environment[variable], initial_value)
        for variable, initial_value in INITIAL_VALUES.items()
    }


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    import boto3  # the Lambda runtime provides it

    # Secret ids and outcomes only: the values never leave this function.
    return {"seeded": seed_all(boto3.client("secretsmanager"), os.environ)}
