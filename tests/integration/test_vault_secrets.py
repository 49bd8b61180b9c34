"""billing_vault.card_secrets: readable and writable by billing_vault alone; secrets are shredded, never rewritten;
detokenization happens for a declared purpose only, audited granted or denied, and a tampered secret is caught."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import boto3
import psycopg
import pytest
from moto import mock_aws

from billing.db.connection import Connection, connect
from billing.db.roles import LOGIN_USERS, RUNTIME_ROLES, DatabaseRole, login_url
from billing.db.sqlstates import GuardState
from billing.domain.errors import DetokenizationDenied, VaultIntegrityError
from billing.instruments.fingerprints import StaticFingerprintKeys
from billing.instruments.model import Caller
from billing.vault.kms import KmsDataKeys
from billing.vault.provisioning import CardForProvider, SandboxCardTokenizer
from billing.vault.service import VaultService
from billing.vault.vault import CardVault, DetokenizePurpose
from tests.integration.raw_sql import refusal
from tests.integration.test_vault_api import fresh_key

PAN = "4000000000000002"
OTHERS = [role for role in RUNTIME_ROLES if role is not DatabaseRole.VAULT]


def test_no_role_but_the_vault_holds_any_privilege_on_the_vault_schema(admin: Connection) -> None:
    names = [r.value for r in OTHERS] + [LOGIN_USERS[r].name for r in OTHERS] + ["public"]
    rows = admin.execute(
        "select r, p from unnest(%s::text[]) r, unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',"
        " 'REFERENCES', 'TRIGGER']) p where has_table_privilege(r, 'billing_vault.card_secrets', p)",
        [names],
    ).fetchall()
    assert rows == []
    usage = admin.execute(
        "select r from unnest(%s::text[]) r where has_schema_privilege(r, 'billing_vault', 'USAGE')", [names]
    ).fetchall()
    assert usage == []
    vault = admin.execute(
        "select has_table_privilege('billing_vault', 'billing_vault.card_secrets', 'SELECT') as s,"
        " has_table_privilege('billing_vault', 'billing_vault.card_secrets', 'DELETE') as d"
    ).fetchone()
    assert vault == {"s": True, "d": False}


@pytest.mark.parametrize("role", OTHERS, ids=[r.value for r in OTHERS])
def test_app_worker_and_auditor_cannot_read_the_encrypted_card_numbers(admin_db_url: str, role: DatabaseRole) -> None:
    with connect(login_url(admin_db_url, role)) as conn:
        for scope in ("select set_config('billing.scope', 'system', true)", "select 1"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(scope)
                conn.execute("select * from billing_vault.card_secrets")


@pytest.fixture
def kms() -> Iterator[KmsDataKeys]:
    with pytest.MonkeyPatch.context() as env, mock_aws():
        for name, value in {
            "AWS_ACCESS_KEY_ID": "t",
            "AWS_SECRET_ACCESS_KEY": "t",
            "AWS_DEFAULT_REGION": "eu-west-1",
        }.items():
            env.setenv(name, value)
        client = boto3.client("kms")
        key_id = client.create_key(Description="test vault key")["KeyMetadata"]["KeyId"]
        yield KmsDataKeys(key_id, client)


@pytest.fixture
def vault_conn(private_admin_url: str) -> Iterator[Connection]:
    with connect(login_url(private_admin_url, DatabaseRole.VAULT)) as connection:
        yield connection


def _service(conn: Connection, kms: KmsDataKeys) -> VaultService:
    return VaultService(
        conn, CardVault(conn, kms), StaticFingerprintKeys("v1", {"v1": b"k" * 32}), [SandboxCardTokenizer()]
    )


def _saved_card(conn: Connection, kms: KmsDataKeys, tenant: UUID) -> tuple[str, str]:
    from billing.instruments.api import InstrumentCreateRequest

    request = InstrumentCreateRequest.model_validate(
        {"entity_contract_id": "c-1", "type": "card", "card": {"number": PAN, "exp_month": 12, "exp_year": 2031}}
    )
    instrument = _service(conn, kms).create(Caller(tenant, "user-1", "corr-1", "203.0.113.9"), request,
                                             idempotency_key=fresh_key()).instrument  # fmt: skip
    token = instrument.term("vault_token")
    assert token is not None
    return instrument.id, token


def _detokenize_audit(admin: Connection, tenant: UUID) -> list[tuple[str, str | None, str | None]]:
    rows = admin.execute(
        "select outcome, purpose, details ->> 'reason' as reason from billing_audit.entries"
        " where tenant_id = %s and event_type = 'chd.detokenized' order by id",
        [tenant],
    ).fetchall()
    return [(r["outcome"], r["purpose"], r["reason"]) for r in rows]


class RecordingTokenizer:
    def __init__(self) -> None:
        self.cards: list[str] = []

    @property
    def provider(self) -> str:
        return "stripe"

    def tokenize(self, card: CardForProvider) -> str:
        self.cards.append(card.number)
        return "pm_provisioned"


def test_provisioning_detokenizes_for_its_declared_purpose_and_is_audited(
    vault_conn: Connection, kms: KmsDataKeys, private_admin: Connection, tenant_id: UUID
) -> None:
    instrument_id, _ = _saved_card(vault_conn, kms, tenant_id)
    tokenizer = RecordingTokenizer()
    caller = Caller(tenant_id, "ops-1", "corr-2", "function:vault")
    updated = _service(vault_conn, kms).provision_provider_token(caller, instrument_id, tokenizer)
    assert tokenizer.cards == [PAN]
    assert updated.provider_tokens == {"sandbox": "tok_decline", "stripe": "pm_provisioned"}
    assert _detokenize_audit(private_admin, tenant_id) == [("granted", "provision_provider_token", None)]


@pytest.mark.parametrize("purpose", ["export", "debugging", ""])
def test_an_undeclared_purpose_is_denied_and_audited(
    vault_conn: Connection, kms: KmsDataKeys, private_admin: Connection, tenant_id: UUID, purpose: str
) -> None:
    instrument_id, token = _saved_card(vault_conn, kms, tenant_id)
    with pytest.raises(DetokenizationDenied):
        CardVault(vault_conn, kms).detokenize(
            Caller(tenant_id, "u", None, None), token, purpose, resource=instrument_id
        )
    assert _detokenize_audit(private_admin, tenant_id) == [("denied", purpose, "undeclared_purpose")]


def test_another_tenants_token_and_a_shredded_card_are_denied_and_audited(
    vault_conn: Connection, kms: KmsDataKeys, private_admin: Connection, tenant_id: UUID
) -> None:
    instrument_id, token = _saved_card(vault_conn, kms, tenant_id)
    vault, stranger = CardVault(vault_conn, kms), uuid4()
    purpose = DetokenizePurpose.PROVISION_PROVIDER_TOKEN
    with pytest.raises(DetokenizationDenied):
        vault.detokenize(Caller(stranger, "u", None, None), token, purpose, resource=instrument_id)
    assert _detokenize_audit(private_admin, stranger) == [("denied", purpose.value, "no_such_card")]
    assert vault.shred(tenant_id, token)
    assert not vault.shred(tenant_id, token)
    with pytest.raises(DetokenizationDenied):
        vault.detokenize(Caller(tenant_id, "u", None, None), token, purpose, resource=instrument_id)
    assert _detokenize_audit(private_admin, tenant_id) == [("denied", purpose.value, "no_such_card")]


def test_a_tampered_or_misfiled_secret_is_caught_never_decrypted_wrongly(
    vault_conn: Connection, kms: KmsDataKeys, private_admin: Connection, tenant_id: UUID
) -> None:
    first_id, first = _saved_card(vault_conn, kms, tenant_id)
    _, second = _saved_card(vault_conn, kms, tenant_id)
    # Someone with the database's keys (triggers off) swaps two cards' secrets, and flips a bit in another.
    with private_admin.transaction():
        private_admin.execute("set local session_replication_role = replica")
        private_admin.execute(
            "update billing_vault.card_secrets a set ciphertext = b.ciphertext, nonce = b.nonce,"
            " encrypted_data_key = b.encrypted_data_key from billing_vault.card_secrets b"
            " where a.tenant_id = %s and a.token = %s and b.tenant_id = a.tenant_id and b.token = %s",
            [tenant_id, first, second],
        )
    purpose = DetokenizePurpose.PROVISION_PROVIDER_TOKEN
    with pytest.raises(VaultIntegrityError):
        CardVault(vault_conn, kms).detokenize(Caller(tenant_id, "u", None, None), first, purpose, resource=first_id)
    assert _detokenize_audit(private_admin, tenant_id) == [("denied", purpose.value, "integrity_check_failed")]


@pytest.mark.parametrize(
    "statement",
    [
        "update billing_vault.card_secrets set ciphertext = ciphertext || '\\x00'::bytea"
        " where tenant_id = %s and token = %s",
        "update billing_vault.card_secrets set token = 'vtok_' || repeat('0', 32) where tenant_id = %s and token = %s",
    ],
)
def test_a_secret_is_never_rewritten(vault_conn: Connection, kms: KmsDataKeys, tenant_id: UUID, statement: str) -> None:
    _, token = _saved_card(vault_conn, kms, tenant_id)
    assert refusal(vault_conn, tenant_id, statement, [tenant_id, token]) == GuardState.SEALED_CARD_IMMUTABLE


def test_a_shredded_secret_stays_shredded_and_none_is_deleted(
    vault_conn: Connection, kms: KmsDataKeys, tenant_id: UUID
) -> None:
    _, token = _saved_card(vault_conn, kms, tenant_id)
    CardVault(vault_conn, kms).shred(tenant_id, token)
    restore = (
        "update billing_vault.card_secrets set shredded_at = null, ciphertext = '\\x00', nonce = '\\x00',"
        " encrypted_data_key = '\\x00' where tenant_id = %s and token = %s"
    )
    assert refusal(vault_conn, tenant_id, restore, [tenant_id, token]) == GuardState.SEALED_CARD_IMMUTABLE
    delete = "delete from billing_vault.card_secrets where tenant_id = %s and token = %s"
    assert refusal(vault_conn, tenant_id, delete, [tenant_id, token]) == "42501"
