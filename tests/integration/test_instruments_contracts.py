"""Instruments as contracts, as the vault role writes them: the lifecycle and the term history hold against raw SQL
(BE014, BE015), the repository's typed updates keep every period, and the other roles reach one instrument's few
charge fields only through the SECURITY DEFINER functions, for their own tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url
from billing.db.sqlstates import GuardState
from billing.domain.errors import InstrumentLifecycleViolated
from billing.instruments.model import (
    Deactivated,
    Expired,
    ExpiryUpdated,
    InstrumentStatus,
    ProviderTokenProvisioned,
    new_instrument_id,
)
from billing.instruments.repository import InstrumentListQuery, InstrumentRepository, NewInstrument
from tests.integration.raw_sql import refusal, rolled_back

LIFECYCLE, HISTORY = GuardState.CONTRACT_LIFECYCLE, GuardState.TERM_HISTORY
TERMS = {"instrument_type": "card", "brand": "visa", "last4": "4242", "exp_month": "12", "exp_year": "2031",
         "provider_token.sandbox": "tok_visa"}  # fmt: skip


@pytest.fixture
def vault_conn(admin_db_url: str) -> Iterator[Connection]:
    with connect(login_url(admin_db_url, DatabaseRole.VAULT)) as connection:
        yield connection


def _instrument(vault_conn: Connection, tenant_id: UUID, entity: str = "contract-1") -> str:
    instrument_id = new_instrument_id()
    saved = InstrumentRepository(vault_conn).insert(
        tenant_id, instrument_id, NewInstrument(entity, TERMS), idempotency_key=None, request_fingerprint=None
    )
    assert saved is not None
    return instrument_id


def test_insert_is_idempotent_per_key(vault_conn: Connection, tenant_id: UUID) -> None:
    repository = InstrumentRepository(vault_conn)
    new = NewInstrument("contract-1", TERMS)
    first = repository.insert(tenant_id, new_instrument_id(), new, idempotency_key="k", request_fingerprint="a" * 64)
    second = repository.insert(tenant_id, new_instrument_id(), new, idempotency_key="k", request_fingerprint="a" * 64)
    assert first is not None
    assert second is None
    found = repository.find_by_idempotency_key(tenant_id, "k")
    assert found is not None
    assert (found[0].id, found[1]) == (first.id, "a" * 64)


def test_term_change_closes_the_old_row_and_opens_the_new_at_one_instant(
    vault_conn: Connection, tenant_id: UUID
) -> None:
    repository = InstrumentRepository(vault_conn)
    instrument_id = _instrument(vault_conn, tenant_id)
    updated = repository.apply(tenant_id, instrument_id, ExpiryUpdated(3, 2033))
    assert updated.expiry == (3, 2033)
    repository.apply(tenant_id, instrument_id, ExpiryUpdated(3, 2033))  # unchanged: no new period
    repository.apply(tenant_id, instrument_id, ProviderTokenProvisioned("stripe", "pm_123"))
    periods = [p for p in repository.history(tenant_id, instrument_id) if p.key == "exp_year"]
    assert [(p.value, p.valid_to is None) for p in periods] == [("2031", False), ("2033", True)]
    assert periods[0].valid_to == periods[1].valid_from
    assert repository.require(tenant_id, instrument_id).provider_tokens == {"sandbox": "tok_visa", "stripe": "pm_123"}


def test_deactivation_sets_valid_to_freezes_the_terms_and_keeps_history(
    vault_conn: Connection, tenant_id: UUID
) -> None:
    repository = InstrumentRepository(vault_conn)
    instrument_id = _instrument(vault_conn, tenant_id)
    at = datetime.now(UTC)
    ended = repository.apply(tenant_id, instrument_id, Deactivated(at))
    assert (ended.status, ended.valid_to) == (InstrumentStatus.DEACTIVATED, at)
    again = repository.apply(tenant_id, instrument_id, Expired(datetime.now(UTC)))
    assert again.status is InstrumentStatus.DEACTIVATED  # an ended instrument stays as it ended
    with pytest.raises(InstrumentLifecycleViolated):
        repository.apply(tenant_id, instrument_id, ExpiryUpdated(1, 2035))
    assert len(repository.history(tenant_id, instrument_id)) == len(TERMS)


def test_list_pages_newest_first_per_entity_contract(vault_conn: Connection, tenant_id: UUID) -> None:
    repository = InstrumentRepository(vault_conn)
    ids = [_instrument(vault_conn, tenant_id, "contract-p") for _ in range(3)]
    page, more = repository.list_page(tenant_id, InstrumentListQuery("contract-p", limit=2))
    assert ([i.id for i in page], more) == (ids[::-1][:2], True)
    assert repository.list_page(uuid4(), InstrumentListQuery("contract-p")) == ([], False)


_UPDATE = "update billing.contracts set {} where tenant_id = %s and id = %s"


@pytest.mark.parametrize(
    "assignment",
    ["status = 'active', valid_to = null", "status = 'expired'", "entity_contract_id = 'contract-other'",
     "id = 'pi_" + "0" * 32 + "'", "valid_from = now() - interval '1 day'"],
)  # fmt: skip
def test_an_ended_contract_never_changes_and_identity_never_does(
    vault_conn: Connection, tenant_id: UUID, assignment: str
) -> None:
    instrument_id = _instrument(vault_conn, tenant_id)
    if assignment.startswith("status"):
        InstrumentRepository(vault_conn).apply(tenant_id, instrument_id, Deactivated(datetime.now(UTC)))
    statement = _UPDATE.format(assignment)
    assert refusal(vault_conn, tenant_id, statement, [tenant_id, instrument_id]) == LIFECYCLE


def test_status_moves_only_with_valid_to_and_never_back(vault_conn: Connection, tenant_id: UUID) -> None:
    instrument_id = _instrument(vault_conn, tenant_id)
    with pytest.raises(psycopg.errors.CheckViolation), vault_conn.transaction():
        vault_conn.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
        vault_conn.execute(_UPDATE.format("status = 'deactivated'"), [tenant_id, instrument_id])
    with rolled_back(vault_conn, tenant_id):
        vault_conn.execute(_UPDATE.format("status = 'expired', valid_to = now()"), [tenant_id, instrument_id])


def test_contracts_are_born_active_and_never_deleted(vault_conn: Connection, tenant_id: UUID) -> None:
    born_ended = (
        "insert into billing.contracts (tenant_id, id, contract_type, entity_contract_id, status, valid_to)"
        " values (%s, %s, 'payment_instrument', 'c-1', 'deactivated', now())"
    )
    assert refusal(vault_conn, tenant_id, born_ended, [tenant_id, new_instrument_id()]) == LIFECYCLE
    instrument_id = _instrument(vault_conn, tenant_id)
    delete = "delete from billing.contracts where tenant_id = %s and id = %s"
    assert refusal(vault_conn, tenant_id, delete, [tenant_id, instrument_id]) == "42501"  # no DELETE grant at all


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("update billing.contract_term_attrs set attr_value = 'mastercard'"
         " where tenant_id = %s and contract_id = %s and attr_key = 'brand'", HISTORY),
        ("update billing.contract_term_attrs set valid_from = valid_from - interval '1 day'"
         " where tenant_id = %s and contract_id = %s and attr_key = 'brand'", HISTORY),
        ("insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value, valid_to)"
         " values (%s, %s, 'funding', 'credit', now())", HISTORY),
        ("insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value)"
         " values (%s, %s, 'brand', 'amex')", "23505"),
        ("delete from billing.contract_term_attrs where tenant_id = %s and contract_id = %s", "42501"),
    ],
)  # fmt: skip
def test_terms_are_only_ever_closed_and_opened(
    vault_conn: Connection, tenant_id: UUID, statement: str, expected: str
) -> None:
    instrument_id = _instrument(vault_conn, tenant_id)
    assert refusal(vault_conn, tenant_id, statement, [tenant_id, instrument_id]) == expected


def test_a_closed_term_never_changes_again(vault_conn: Connection, tenant_id: UUID) -> None:
    instrument_id = _instrument(vault_conn, tenant_id)
    InstrumentRepository(vault_conn).apply(tenant_id, instrument_id, ExpiryUpdated(1, 2034))
    reopen = (
        "update billing.contract_term_attrs set valid_to = null"
        " where tenant_id = %s and contract_id = %s and attr_key = 'exp_year' and valid_to is not null"
    )
    assert refusal(vault_conn, tenant_id, reopen, [tenant_id, instrument_id]) == HISTORY


def test_the_vault_role_sees_no_other_tenants_instruments(vault_conn: Connection, tenant_id: UUID) -> None:
    _instrument(vault_conn, tenant_id)
    with vault_conn.transaction():
        vault_conn.execute("select set_config('billing.tenant_id', %s, true)", [str(uuid4())])
        rows = vault_conn.execute("select count(*) as n from billing.contracts").fetchone()
    assert rows == {"n": 0}


def test_other_roles_read_only_a_charges_fields_of_their_own_tenants_instrument(
    vault_conn: Connection, admin_db_url: str, tenant_id: UUID
) -> None:
    instrument_id = _instrument(vault_conn, tenant_id)
    for role in (DatabaseRole.APP, DatabaseRole.WORKER, DatabaseRole.AUDITOR):
        with connect(login_url(admin_db_url, role)) as conn:
            for table in ("billing.contracts", "billing.contract_term_attrs"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute(f"select * from {table}")
            if role is DatabaseRole.AUDITOR:
                continue
            with conn.transaction():
                conn.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
                token = conn.execute(
                    "select billing.payment_instrument_provider_token(%s, %s, 'sandbox') as t",
                    [tenant_id, instrument_id],
                ).fetchone()
            assert token == {"t": "tok_visa"}
            with conn.transaction():
                # The tenant its transaction names is the wall, whatever tenant the call passes.
                conn.execute("select set_config('billing.tenant_id', %s, true)", [str(uuid4())])
                stranger = conn.execute(
                    "select billing.payment_instrument_provider_token(%s, %s, 'sandbox') as t",
                    [tenant_id, instrument_id],
                ).fetchone()
            assert stranger == {"t": None}
    with connect(login_url(admin_db_url, DatabaseRole.APP)) as app, app.transaction():
        app.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
        row = app.execute("select * from billing.payment_instrument_for_charge(%s, %s)", [tenant_id, instrument_id])
        assert row.fetchall() == [{"id": instrument_id, "entity_contract_id": "contract-1", "status": "active",
                                   "instrument_type": "card", "exp_month": 12, "exp_year": 2031}]  # fmt: skip
