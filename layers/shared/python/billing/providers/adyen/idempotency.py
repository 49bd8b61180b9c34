"""The Idempotency-Key header Adyen gets for one of our provider keys.

Adyen accepts keys of at most 64 characters (its API idempotency guide, and the Idempotency-Key parameter of the
OpenAPI document); ours are longer ("<tenant>:<execution>" is 73, a refund's 117). The key sent is a UUID derived
from ours by name (UUID v5): the same on every attempt, so a resubmission still gets Adyen's replay of the first
answer, and distinct for the charge, its cancel and each refund. Adyen scopes keys to the company account, which
every tenant on the platform account shares; the execution id inside our key keeps them apart.
"""

from __future__ import annotations

import uuid
from typing import Final

# Adyen's documented maximum length of an idempotency key.
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 64
# Fixed forever: changing it changes every key, and a resubmission after the change would charge again.
_NAMESPACE: Final = uuid.UUID("0b5c7f3e-6a4d-5d8e-9c1f-2e7a4b9d6c30")


def adyen_idempotency_key(provider_key: str) -> str:
    """The header value for `provider_key` (provider_idempotency_key, provider_cancel_key, provider_refund_key)."""
    if not provider_key:
        raise ValueError("an Adyen request needs its idempotency key")
    return str(uuid.uuid5(_NAMESPACE, provider_key))
