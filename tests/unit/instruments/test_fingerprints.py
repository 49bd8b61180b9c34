"""Fingerprints: per tenant, keyed outside the database, versioned, never a plain hash and never card-like."""

from __future__ import annotations

import base64
import hashlib
from uuid import uuid4

import pytest

from billing.domain.execution import looks_like_card_number
from billing.instruments.fingerprints import (
    FingerprintKeysMisconfigured,
    SecretsManagerFingerprintKeys,
    StaticFingerprintKeys,
    card_fingerprint,
    fingerprint_secret_value,
    iban_fingerprint,
    parse_fingerprint_secret,
)

KEYS = StaticFingerprintKeys("v1", {"v1": b"k" * 32, "v2": b"j" * 32})
PAN = "4242424242424242"


def test_same_card_same_tenant_gives_the_same_fingerprint_with_its_key_version() -> None:
    tenant = uuid4()
    first, second = card_fingerprint(KEYS, tenant, PAN), card_fingerprint(KEYS, tenant, PAN)
    assert first == second
    assert first.key_version == "v1"


def test_same_card_in_another_tenant_gives_another_fingerprint() -> None:
    assert card_fingerprint(KEYS, uuid4(), PAN).value != card_fingerprint(KEYS, uuid4(), PAN).value


def test_other_card_or_other_key_version_gives_another_fingerprint() -> None:
    tenant = uuid4()
    base = card_fingerprint(KEYS, tenant, PAN)
    assert card_fingerprint(KEYS, tenant, "5555555555554444").value != base.value
    rotated = card_fingerprint(KEYS, tenant, PAN, version="v2")
    assert (rotated.key_version, rotated.value != base.value) == ("v2", True)


def test_card_and_iban_with_the_same_text_never_share_a_fingerprint() -> None:
    tenant = uuid4()
    assert (
        card_fingerprint(KEYS, tenant, "123456789012345").value
        != iban_fingerprint(KEYS, tenant, "123456789012345").value
    )


def test_fingerprint_is_not_an_unkeyed_hash_of_the_pan() -> None:
    value = card_fingerprint(KEYS, uuid4(), PAN).value
    plain = base64.urlsafe_b64encode(hashlib.sha256(PAN.encode()).digest()).rstrip(b"=").decode()
    assert value != plain
    assert len(value) == 43


def test_fingerprints_never_look_like_card_numbers() -> None:
    tenant = uuid4()
    for n in range(2000):
        assert not looks_like_card_number(card_fingerprint(KEYS, tenant, f"4{n:015d}").value)


def test_secret_round_trips_and_is_read_through_the_provider() -> None:
    value = fingerprint_secret_value("v2", {"v1": b"a" * 32, "v2": b"b" * 32})
    assert parse_fingerprint_secret(value) == ("v2", {"v1": b"a" * 32, "v2": b"b" * 32})

    class Provider:
        def get(self, name: str, max_age: int) -> str:
            assert (name, max_age) == ("billing/vault/fingerprint-keys", 300)
            return value

    keys = SecretsManagerFingerprintKeys("billing/vault/fingerprint-keys", provider=Provider())
    assert keys.current() == ("v2", b"b" * 32)
    assert keys.key("v1") == b"a" * 32


@pytest.mark.parametrize(
    "value",
    ['{"current": "v3", "keys": {"v1": "YWFh"}}', "not json", '{"current": "v1", "keys": {"v1": "c2hvcnQ="}}', "[]"],
)
def test_malformed_secret_is_a_deployment_fault_that_never_echoes_the_value(value: str) -> None:
    with pytest.raises(FingerprintKeysMisconfigured) as refused:
        parse_fingerprint_secret(value)
    assert "YWFh" not in str(refused.value)
    assert "c2hvcnQ" not in str(refused.value)
