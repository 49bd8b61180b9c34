"""Charging vault instruments through the execute API (billing_app) and the workers (billing_worker).

An instrument is charged only by its own tenant, for its own entity contract, while active and within its month,
over its own rail; otherwise 404/422 and nothing written. The provider is always charged with its token for the
instrument, never a card number, and every use is audited. The sandbox's magic tokens keep working beside them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import ModuleType
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url
from billing.domain.errors import PaymentInstrumentExpired
from billing.domain.execution import PaymentRail
from billing.instruments.charging import (
    ChargeableInstruments,
    ChargeRequest,
    InstrumentTokenProvider,
    ProviderTokenLookup,
)
from billing.instruments.fingerprints import StaticFingerprintKeys
from billing.instruments.model import Caller, new_instrument_id
from billing.rails.ports import ProviderCharge
from billing.rails.results import SubmitOutcome
from billing.rails.sandbox import SandboxProvider, connections_to
from billing.vault.provisioning import SandboxCardTokenizer
from billing.vault.service import VaultService
from billing.vault.vault import CardVault
from tests.factories import CARD_REQUEST
from tests.integration.test_vault_api import Vault, card_body, fresh_key, vault
from tests.lambda_harness import header, post_execution, response_json

__all__ = ["vault"]  # a fixture, imported for the tests below

SEPA: dict[str, Any] = {
    "entity_contract_id": "contract-1",
    "type": "sepa_debit",
    "sepa_debit": {"iban": "DE62370400440532013001", "holder_name": "Ada Lovelace", "mandate_reference": "M-1"},
}


def charge(execute: ModuleType, tenant: UUID, instrument_id: str, **overrides: Any) -> dict[str, Any]:
    key = overrides.pop("key", fresh_key("charge"))
    body = {**CARD_REQUEST, "payment_instrument_id": instrument_id, **overrides}
    return post_execution(execute, tenant, body, key=key)


def _executions(admin: Connection, tenant: UUID) -> int:
    row = admin.execute(
        "select count(*) as n from billing.billing_executions where tenant_id = %s", [tenant]
    ).fetchone()
    assert row is not None
    return int(row["n"])


def _charge_audit(admin: Connection, tenant: UUID) -> list[tuple[str, str | None]]:
    rows = admin.execute(
        "select outcome, details ->> 'reason' as reason from billing_audit.entries"
        " where tenant_id = %s and event_type = 'chd.instrument_charged' order by id",
        [tenant],
    ).fetchall()
    return [(r["outcome"], r["reason"]) for r in rows]


def test_saved_card_is_charged_with_the_providers_token_never_the_number(
    vault: Vault, execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(tenant_id)
    response = charge(execute, tenant_id, instrument["id"])
    assert response["statusCode"] == 201, response["body"]
    execution = response_json(response)
    assert (execution["status"], execution["payment_instrument_id"]) == ("completed", instrument["id"])
    sent = admin.execute(
        "select payment_instrument_id from sandbox_provider.charges where execution_id = %s", [execution["id"]]
    ).fetchone()
    assert sent == {"payment_instrument_id": "tok_visa"}
    assert _charge_audit(admin, tenant_id) == [("granted", None)]


def test_the_declining_test_card_declines_like_stripes(vault: Vault, execute: ModuleType, tenant_id: UUID) -> None:
    instrument = vault.save(tenant_id, card_body(number="4000000000000002"))
    execution = response_json(charge(execute, tenant_id, instrument["id"]))
    assert (execution["status"], execution["last_error_code"]) == ("failed", "card_declined")


def test_another_tenants_instrument_is_not_found_and_nothing_is_written(
    vault: Vault, execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(uuid4())
    response = charge(execute, tenant_id, instrument["id"])
    assert response["statusCode"] == 404
    problem = response_json(response)
    assert problem["code"] == "payment_instrument_not_found"
    assert header(response, "Content-Type") == "application/problem+json"
    assert _executions(admin, tenant_id) == 0
    assert _charge_audit(admin, tenant_id) == [("denied", "payment_instrument_not_found")]


def test_unknown_instrument_and_another_entity_contracts_are_not_found(
    vault: Vault, execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(tenant_id, card_body("contract-a"))
    for instrument_id, entity in ((new_instrument_id(), "contract-1"), (instrument["id"], "contract-b")):
        response = charge(execute, tenant_id, instrument_id, entity_contract_id=entity)
        assert (response["statusCode"], response_json(response)["code"]) == (404, "payment_instrument_not_found")
    assert _executions(admin, tenant_id) == 0


def test_deactivated_instrument_is_422_inactive_and_a_replay_still_answers(
    vault: Vault, execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(tenant_id)
    first = charge(execute, tenant_id, instrument["id"], key="before-deactivation")
    assert first["statusCode"] == 201
    vault.delete(tenant_id, instrument["id"])
    refused = charge(execute, tenant_id, instrument["id"])
    assert (refused["statusCode"], response_json(refused)["code"]) == (422, "payment_instrument_inactive")
    assert _executions(admin, tenant_id) == 1
    # The charge made before stays what it was: its key replays it without a second look at the instrument.
    replay = charge(execute, tenant_id, instrument["id"], key="before-deactivation")
    assert (replay["statusCode"], response_json(replay)["id"]) == (200, response_json(first)["id"])


def test_card_past_its_month_is_422_expired_at_charge_time(
    vault: Vault, execute: ModuleType, admin: Connection, admin_db_url: str, tenant_id: UUID
) -> None:
    # Saved while valid; read by the vault a year after its month ended, which records the lapse.
    instrument = vault.save(tenant_id, card_body(exp_month=12, exp_year=2031))
    later = datetime(2033, 1, 1, tzinfo=UTC)
    with connect(login_url(admin_db_url, DatabaseRole.VAULT)) as vault_conn:
        service = VaultService(
            vault_conn,
            CardVault(vault_conn, vault.handler.runtime.data_keys),
            StaticFingerprintKeys("v1", {"v1": b"k" * 32}),
            [SandboxCardTokenizer()],
            clock=lambda: later,
        )
        read = service.get(Caller(tenant_id, "user-1", "corr", None), instrument["id"])
    assert (read.status, read.valid_to) == ("expired", datetime(2032, 1, 1, tzinfo=UTC))
    refused = charge(execute, tenant_id, instrument["id"])
    assert (refused["statusCode"], response_json(refused)["code"]) == (422, "payment_instrument_expired")
    assert _executions(admin, tenant_id) == 0


def test_expiry_is_checked_against_the_cards_month_even_while_stored_active(
    vault: Vault, conn: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(tenant_id, card_body(exp_month=3, exp_year=2031))
    check = ChargeableInstruments(conn, clock=lambda: datetime(2031, 4, 1, tzinfo=UTC))
    request = ChargeRequest(tenant_id, instrument["id"], "contract-1", PaymentRail.CARD, "user-1", "corr")
    with pytest.raises(PaymentInstrumentExpired):
        check.authorize_charge(request)
    ChargeableInstruments(conn, clock=lambda: datetime(2031, 3, 31, 23, 59, tzinfo=UTC)).authorize_charge(request)


def test_card_over_a_debit_rail_is_422_rail_mismatch(vault: Vault, execute: ModuleType, tenant_id: UUID) -> None:
    instrument = vault.save(tenant_id)
    refused = charge(execute, tenant_id, instrument["id"], payment_rail="sepa_debit")
    assert (refused["statusCode"], response_json(refused)["code"]) == (422, "payment_instrument_rail_mismatch")


def test_sepa_instrument_is_debited_with_its_sandbox_token(
    vault: Vault, execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    instrument = vault.save(tenant_id, SEPA)
    execution = response_json(charge(execute, tenant_id, instrument["id"], payment_rail="sepa_debit"))
    assert (execution["status"], execution["awaiting_settlement"]) == ("pending", True)
    sent = admin.execute(
        "select payment_instrument_id from sandbox_provider.charges where execution_id = %s", [execution["id"]]
    ).fetchone()
    assert sent == {"payment_instrument_id": "iban_settles_failed"}


def test_sandbox_magic_tokens_are_not_instrument_checks(
    execute: ModuleType, admin: Connection, tenant_id: UUID
) -> None:
    assert response_json(charge(execute, tenant_id, "tok_visa"))["status"] == "completed"
    assert _charge_audit(admin, tenant_id) == []


def test_the_worker_role_resolves_the_same_token_for_a_retry(vault: Vault, worker_db_url: str, tenant_id: UUID) -> None:
    instrument = vault.save(tenant_id, card_body(number="4000000000000002"))
    connections = connections_to(worker_db_url)
    provider = InstrumentTokenProvider(SandboxProvider(connections), ProviderTokenLookup(connections))
    request = ProviderCharge(tenant_id, uuid4(), 500, "EUR", PaymentRail.CARD, instrument["id"])
    result = provider.submit(request, f"{tenant_id}:{request.execution_id}")
    assert (result.outcome, result.error_code) == (SubmitOutcome.FAILED, "card_declined")
    # Another tenant's instrument has no token for this tenant: the charge fails for good, nothing is sent.
    stranger = ProviderCharge(uuid4(), uuid4(), 500, "EUR", PaymentRail.CARD, instrument["id"])
    refused = provider.submit(stranger, f"{stranger.tenant_id}:{stranger.execution_id}")
    assert (refused.outcome, refused.error_code) == (SubmitOutcome.FAILED, "payment_method_unsupported")
