"""The vault function's API as the real role (billing_vault), with moto KMS and Secrets Manager.

Saving a card, replays and reused keys, bad cards refused with stable codes and nothing written, SEPA debits and
provider tokens, reads and pages, deactivation that keeps history and shreds the number, the tenant wall, the
audit entries of every access, and logs that never hold a card number or a security code.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import boto3
import pytest

from billing import resource_names as names
from billing.db.connection import Connection
from billing.db.connection_provider import role_url_variable
from billing.db.roles import DatabaseRole, login_url
from billing.local.stack import seed_vault_keys
from billing.observability import logger
from billing.resource_names import FunctionName
from tests.lambda_harness import api_event, call, load_handler, response_json, set_function_environment

PATH = "/api/v1/billing/payment-instruments"
PAN = "4242424242424242"
CVC = "987"
CARD: dict[str, Any] = {"number": "4242 4242 4242 4242", "exp_month": 12, "exp_year": 2031, "cvc": CVC,
                        "holder_name": "Ada Lovelace"}  # fmt: skip


def fresh_key(prefix: str = "key") -> str:
    """An idempotency key no test shares; random base64url, which (unlike a UUID, 1 in 400) never holds a
    Luhn-valid digit window that the API would refuse as card data."""
    return f"{prefix}-{secrets.token_urlsafe(12)}"


def card_body(entity: str = "contract-1", **card: Any) -> dict[str, Any]:
    return {"entity_contract_id": entity, "type": "card", "card": {**CARD, **card}}


@dataclass(frozen=True)
class Vault:
    handler: ModuleType
    kms_key_arn: str

    def post(self, tenant: UUID, body: Any, key: str | None = "key-1") -> dict[str, Any]:
        headers = {"Idempotency-Key": key} if key is not None else {}
        return call(self.handler, api_event("POST", PATH, tenant_id=tenant, body=body, headers=headers))

    def get(self, tenant: UUID, instrument_id: str) -> dict[str, Any]:
        return call(self.handler, api_event("GET", f"{PATH}/{instrument_id}", tenant_id=tenant))

    def list(self, tenant: UUID, **query: str) -> dict[str, Any]:
        return call(self.handler, api_event("GET", PATH, tenant_id=tenant, query=query))

    def delete(self, tenant: UUID, instrument_id: str) -> dict[str, Any]:
        return call(self.handler, api_event("DELETE", f"{PATH}/{instrument_id}", tenant_id=tenant))

    def save(self, tenant: UUID, body: Any | None = None, key: str | None = None) -> dict[str, Any]:
        response = self.post(tenant, body or card_body(), key or fresh_key())
        assert response["statusCode"] == 201, response["body"]
        saved: dict[str, Any] = response_json(response)
        return saved


@pytest.fixture(scope="module")
def vault(aws: dict[str, str], admin_db_url: str) -> Iterator[Vault]:
    """One warm container of the vault function, in the module's moto (beside the execute function's)."""
    with pytest.MonkeyPatch.context() as env:
        secret_arn = seed_vault_keys(boto3.client("kms"), boto3.client("secretsmanager"))
        key_arn = boto3.client("kms").describe_key(KeyId=names.VAULT_KMS_KEY_ALIAS)["KeyMetadata"]["Arn"]
        set_function_environment(
            env,
            FunctionName.VAULT,
            {
                role_url_variable(DatabaseRole.VAULT): login_url(admin_db_url, DatabaseRole.VAULT),
                names.ENV_VAULT_KMS_KEY_ID: names.VAULT_KMS_KEY_ALIAS,
                names.ENV_FINGERPRINT_SECRET_ID: secret_arn,
            },
        )
        yield Vault(load_handler("vault"), key_arn)


def _count(admin: Connection, sql: str, *params: Any) -> int:
    row = admin.execute(sql, params).fetchone()
    assert row is not None
    return int(row["n"])


def _terms(admin: Connection, tenant: UUID) -> dict[str, str]:
    rows = admin.execute(
        "select attr_key, attr_value from billing.contract_term_attrs where tenant_id = %s", [tenant]
    ).fetchall()
    return {r["attr_key"]: r["attr_value"] for r in rows}


def _audit(admin: Connection, tenant: UUID) -> list[tuple[str, str, str | None, str | None]]:
    rows = admin.execute(
        "select event_type, outcome, resource_id, purpose from billing_audit.entries where tenant_id = %s order by id",
        [tenant],
    ).fetchall()
    return [(r["event_type"], r["outcome"], r["resource_id"], r["purpose"]) for r in rows]


def test_save_card_returns_the_instrument_never_the_number(vault: Vault, admin: Connection, tenant_id: UUID) -> None:
    response = vault.post(tenant_id, card_body())
    assert response["statusCode"] == 201, response["body"]
    saved = response_json(response)
    assert saved["id"].startswith("pi_")
    assert {k: saved[k] for k in ("type", "status", "brand", "last4", "exp_month", "exp_year", "source")} == {
        "type": "card", "status": "active", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2031,
        "source": "vault",
    }  # fmt: skip
    assert saved["fingerprint"]
    assert saved["fingerprint_key_version"] == "local-v1"
    assert PAN not in response["body"]
    # The CVC is three digits, so it can occur by chance inside a random id: look for it as a value, not a substring.
    assert "cvc" not in saved
    assert CVC not in {str(v) for v in saved.values()}
    # Stored: the contract, its terms (a sandbox token provisioned), the sealed number; never the PAN or the CVC.
    terms = _terms(admin, tenant_id)
    assert terms["iin"] == "42424242"
    assert terms["provider_token.sandbox"] == "tok_visa"
    assert terms["vault_token"].startswith("vtok_")
    assert all(PAN not in v and v != CVC for v in terms.values())
    secret = admin.execute(
        "select key_id, octet_length(ciphertext) as size, ciphertext from billing_vault.card_secrets"
        " where tenant_id = %s and token = %s",
        [tenant_id, terms["vault_token"]],
    ).fetchone()
    assert secret is not None
    assert (secret["key_id"], secret["size"]) == (vault.kms_key_arn, 16 + 16)
    assert PAN.encode() not in bytes(secret["ciphertext"])
    assert _audit(admin, tenant_id) == [("chd.tokenized", "succeeded", saved["id"], "save_instrument")]


def test_same_key_and_body_replays_the_instrument(vault: Vault, admin: Connection, tenant_id: UUID) -> None:
    first = vault.post(tenant_id, card_body(), key="replay-1")
    again = vault.post(tenant_id, card_body(number=PAN), key="replay-1")  # same card, typed without spaces
    assert (first["statusCode"], again["statusCode"]) == (201, 200)
    assert response_json(again)["id"] == response_json(first)["id"]
    assert _count(admin, "select count(*) as n from billing.contracts where tenant_id = %s", tenant_id) == 1
    assert _count(admin, "select count(*) as n from billing_vault.card_secrets where tenant_id = %s", tenant_id) == 1


def test_same_key_with_another_body_is_422_idempotency_key_reused(vault: Vault, tenant_id: UUID) -> None:
    vault.save(tenant_id, key="reused-1")
    other = vault.post(tenant_id, card_body(number="5555555555554444"), key="reused-1")
    assert other["statusCode"] == 422
    assert response_json(other)["code"] == "idempotency_key_reused"


def test_missing_idempotency_key_is_400(vault: Vault, tenant_id: UUID) -> None:
    response = vault.post(tenant_id, card_body(), key=None)
    assert response["statusCode"] == 400
    assert response_json(response)["code"] == "idempotency_key_invalid"


@pytest.mark.parametrize(
    ("card", "code"),
    [
        ({"number": "4242424242424241"}, "card_number_invalid"),
        ({"number": "4242 4242 4242"}, "card_number_invalid"),
        ({"number": "1111111111111117"}, "card_brand_unsupported"),
        ({"exp_month": 1, "exp_year": 2020}, "card_expired"),
        ({"cvc": "1234"}, "card_security_code_invalid"),
        ({"holder_name": "card 4242 4242 4242 4242"}, "validation_failed"),
    ],
)
def test_bad_card_is_422_with_a_stable_code_and_writes_nothing(
    vault: Vault, admin: Connection, tenant_id: UUID, card: dict[str, Any], code: str
) -> None:
    response = vault.post(tenant_id, card_body(**card), key=fresh_key("bad"))
    assert response["statusCode"] == 422, response["body"]
    problem = response_json(response)
    assert problem["code"] == code
    assert PAN not in response["body"]
    for table in ("billing.contracts", "billing.contract_term_attrs", "billing_vault.card_secrets"):
        assert _count(admin, f"select count(*) as n from {table} where tenant_id = %s", tenant_id) == 0
    assert _audit(admin, tenant_id) == []


def test_sepa_debit_keeps_last4_bank_code_and_mandate_never_the_iban(
    vault: Vault, admin: Connection, tenant_id: UUID
) -> None:
    mandate = {
        "iban": "DE62 3704 0044 0532 0130 01",
        "holder_name": "Ada Lovelace",
        "mandate_reference": "MANDATE-0001",
    }
    body = {"entity_contract_id": "contract-1", "type": "sepa_debit", "sepa_debit": mandate}
    saved = vault.save(tenant_id, body)
    assert {k: saved[k] for k in ("type", "country", "bank_code", "last4", "mandate_reference")} == {
        "type": "sepa_debit", "country": "DE", "bank_code": "37040044", "last4": "3001",
        "mandate_reference": "MANDATE-0001",
    }  # fmt: skip
    values = list(_terms(admin, tenant_id).values())
    assert "DE62370400440532013001" not in values
    assert "iban_settles_failed" in values  # the sandbox token of this test account
    invalid = vault.post(tenant_id, {**body, "sepa_debit": {**mandate, "iban": "DE62370400440532013002"}}, key="bad")
    assert (invalid["statusCode"], response_json(invalid)["code"]) == (422, "iban_invalid")


def test_provider_token_instrument_needs_no_card_number(vault: Vault, admin: Connection, tenant_id: UUID) -> None:
    body = {"entity_contract_id": "contract-1", "type": "card",
            "provider_token": {"provider": "stripe", "token": "pm_card_chargeDeclined"}}  # fmt: skip
    saved = vault.save(tenant_id, body)
    assert (saved["source"], saved["brand"], saved["last4"]) == ("provider_token", "visa", "0002")
    terms = _terms(admin, tenant_id)
    assert terms["provider_token.stripe"] == "pm_card_chargeDeclined"
    assert terms["provider_token.sandbox"] == "tok_decline"
    assert "vault_token" not in terms
    assert _count(admin, "select count(*) as n from billing_vault.card_secrets where tenant_id = %s", tenant_id) == 0


def test_same_card_same_tenant_same_fingerprint_other_tenant_other(vault: Vault, tenant_id: UUID) -> None:
    first = vault.save(tenant_id)["fingerprint"]
    second = vault.save(tenant_id, card_body("contract-2", holder_name="A L"))["fingerprint"]
    elsewhere = vault.save(uuid4())["fingerprint"]
    assert first == second
    assert elsewhere != first


def test_get_is_audited_and_another_tenant_gets_404(vault: Vault, admin: Connection, tenant_id: UUID) -> None:
    saved = vault.save(tenant_id)
    read = vault.get(tenant_id, saved["id"])
    assert read["statusCode"] == 200
    assert response_json(read) == saved
    other_tenant = uuid4()
    stranger = vault.get(other_tenant, saved["id"])
    assert stranger["statusCode"] == 404
    assert response_json(stranger)["code"] == "payment_instrument_not_found"
    assert _audit(admin, tenant_id)[-1] == ("chd.instrument_read", "granted", saved["id"], "read")
    assert _audit(admin, other_tenant) == [("chd.instrument_read", "denied", saved["id"], "read")]


def test_card_number_in_the_path_is_masked_in_the_answer_and_the_audit(
    vault: Vault, admin: Connection, tenant_id: UUID
) -> None:
    response = vault.get(tenant_id, PAN)
    assert response["statusCode"] == 404
    assert PAN not in response["body"]
    assert _audit(admin, tenant_id) == [("chd.instrument_read", "denied", "***", "read")]


def test_list_pages_an_entity_contracts_instruments_newest_first(vault: Vault, tenant_id: UUID) -> None:
    ids = [vault.save(tenant_id, card_body("contract-list"))["id"] for _ in range(3)]
    vault.save(tenant_id, card_body("contract-other"))
    first = response_json(vault.list(tenant_id, entity_contract_id="contract-list", limit="2"))
    assert [i["id"] for i in first["items"]] == ids[::-1][:2]
    second = response_json(vault.list(tenant_id, entity_contract_id="contract-list", limit="2",
                                      cursor=first["next_cursor"]))  # fmt: skip
    assert ([i["id"] for i in second["items"]], second["next_cursor"]) == ([ids[0]], None)
    assert response_json(vault.list(uuid4(), entity_contract_id="contract-list"))["items"] == []


def test_delete_deactivates_keeps_history_and_shreds_the_number(
    vault: Vault, admin: Connection, tenant_id: UUID
) -> None:
    saved = vault.save(tenant_id)
    response = vault.delete(tenant_id, saved["id"])
    assert response["statusCode"] == 200
    ended = response_json(response)
    assert ended["status"] == "deactivated"
    assert ended["valid_to"] is not None
    contract = admin.execute(
        "select status, valid_to from billing.contracts where tenant_id = %s and id = %s", [tenant_id, saved["id"]]
    ).fetchone()
    assert contract is not None
    assert contract["status"] == "deactivated"
    assert _count(admin, "select count(*) as n from billing.contract_term_attrs where tenant_id = %s", tenant_id) > 5
    secret = admin.execute(
        "select ciphertext, encrypted_data_key, shredded_at from billing_vault.card_secrets where tenant_id = %s",
        [tenant_id],
    ).fetchone()
    assert secret is not None
    assert (secret["ciphertext"], secret["encrypted_data_key"]) == (None, None)
    assert secret["shredded_at"] is not None
    again = vault.delete(tenant_id, saved["id"])
    assert (again["statusCode"], response_json(again)["status"]) == (200, "deactivated")
    assert [e[0] for e in _audit(admin, tenant_id)].count("chd.instrument_deactivated") == 2
    assert vault.delete(uuid4(), saved["id"])["statusCode"] == 404


def test_tenant_comes_from_the_authorizer_only(vault: Vault) -> None:
    response = call(vault.handler, api_event("POST", PATH, tenant_id=None, body=card_body(),
                                             headers={"Idempotency-Key": "k"}))  # fmt: skip
    assert response["statusCode"] == 401


def test_logs_of_a_tokenize_call_hold_no_card_number_and_no_security_code(vault: Vault, tenant_id: UUID) -> None:
    # Everything the functions' logger writes (the handlers' JSON lines, with the formatter production uses).
    captured = io.StringIO()
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(captured)
    try:
        vault.save(tenant_id, card_body(number="3782 822463 10005", cvc="7364"))
        vault.save(tenant_id)
        vault.post(tenant_id, card_body(number="4242424242424241"), key="log-bad")  # refused: its number is no PAN
    finally:
        handler.setStream(previous)
    logs = captured.getvalue()
    assert '"message":"billing.vault.request"' in logs  # the requests were logged at all
    typed_numbers = (PAN, "4242 4242 4242 4242", "378282246310005", "3782 822463 10005", "4242424242424241")
    for secret in (*typed_numbers, '"987"', '"7364"', "Ada Lovelace"):
        assert secret not in logs, secret
