"""The database refuses card numbers in every column that takes free input, whoever writes (raw SQL as each
run-time role), and attribute keys naming sensitive authentication data. Its detector is the Python one's twin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.db.connection import Connection, connect
from billing.db.roles import OWNED_SCHEMAS, DatabaseRole, login_url
from billing.db.sqlstates import GuardState
from billing.domain.execution import looks_like_card_number
from billing.instruments.model import new_instrument_id
from tests.integration.raw_sql import S, execution_in, refusal, rolled_back, run

CARD_DATA = GuardState.CARD_DATA_REFUSED
# One card number as people type it: every separator the detector knows, runs of them included.
TYPED_PANS = [
    "4111111111111111",
    "4111 1111 1111 1111",
    "4111  1111   1111 1111",
    "4111-1111-1111-1111",
    "4111.1111.1111.1111",
    "4111/1111/1111/1111",
    "4111_1111_1111_1111",
    "4111\t1111\t1111\t1111",
    "4111\u00a01111\u00a01111\u00a01111",
    "paid with 378282246310005 yesterday",
]

# Every text or jsonb column of the owned schemas that the card number guard does not cover, and why. A new column
# must be guarded (billing.refuse_card_numbers) or listed here: test_every_free_text_column_is_guarded_or_exempt.
_GENERATED = "an identifier a machine generates (UUID- or hex-based: 0.1-0.4 % hold a Luhn-valid window)"
_DERIVED = "derived by the engine from guarded columns or its own state"
_FORMAT = "a format a CHECK or the engine fixes (status, type, code or hash), never free text"
_ACTOR = "an authenticated identity (the token's subject) or a function's name"
_AUDIT = "audit evidence: refusing an entry would lose it; its details are never card data by contract"
_SANDBOX = "the sandbox provider's own memory: an external system, sent provider tokens only"
_VAULT = "the vault's own table: tokens, key references and ciphertext only"
EXEMPT: dict[str, str] = {
    # 3-D Secure (sql/20261215_billing_authentications.sql): EMV codes, generated ids and URLs the engine builds.
    "billing.authentications.provider": "chosen by the engine (billing.rails.adapters)",
    "billing.authentications.performed_by": _FORMAT,
    "billing.authentications.currency": _FORMAT,
    "billing.authentications.state": _FORMAT,
    "billing.authentications.exemption": _FORMAT,
    "billing.authentications.message_version": _FORMAT,
    "billing.authentications.trans_status": _FORMAT,
    "billing.authentications.eci": _FORMAT,
    "billing.authentications.challenge_indicator": _FORMAT,
    "billing.authentications.authentication_value_digest": _FORMAT,
    "billing.authentications.three_ds_server_trans_id": _GENERATED,
    "billing.authentications.acs_trans_id": _GENERATED,
    "billing.authentications.ds_trans_id": _GENERATED,
    "billing.authentications.challenge_url": _DERIVED + " (the configured public URL and a generated id)",
    "billing.authentications.return_url": _DERIVED + " (the configured return URL)",
    "billing.risk_reviews.decision": _FORMAT,
    # Settlement reports (sql/20261216_billing_settlement_reports.sql). The summary's free text (file names, file
    # and line errors, missing files, notes) is checked by billing.refuse_card_numbers_in_settlement_summary.
    "billing.settlement_reports.provider": _FORMAT,
    "billing.settlement_reports.summary": _DERIVED + " (figures, file digests in hex; its free text checked apart)",
    "billing.settlement_discrepancies.class": _FORMAT,
    "billing.settlement_discrepancies.also": _FORMAT,
    "billing.settlement_discrepancies.record_kind": _FORMAT,
    "billing.settlement_discrepancies.expected_currency": _FORMAT,
    "billing.settlement_discrepancies.reported_currency": _FORMAT,
    "billing.settlement_discrepancies.provider_reference": _GENERATED
    + " (by the provider: an Adyen PSP reference is 16 digits, one in ten Luhn-valid)",
    "billing.settlement_discrepancies.detail": _DERIVED + " (the engine's words around the provider's reference)",
    # The settlement report's staged lines (sql/20261223_billing_settlement_staging.sql): never a line's text.
    "billing.settlement_staging_runs.provider": _FORMAT,
    "billing.settlement_staged_lines.psp_reference": _GENERATED + " (by the provider, as in the discrepancies)",
    "billing.settlement_staged_lines.currency": _FORMAT + " (an ISO 4217 code the parser checked)",
    "billing.settlement_staged_lines.payment_method": _DERIVED
    + " (the parser's value, staged only when masking would not change it: reconciliation.staged._data_lines)",
    "billing.settlement_staged_lines.batch": _DERIVED
    + " (the parser's digits, staged only when masking would not change them: reconciliation.staged._data_lines)",
    "sandbox_provider.acs_challenges.acs_trans_id": _GENERATED,
    "sandbox_provider.acs_challenges.currency": _FORMAT,
    "sandbox_provider.acs_challenges.status": _FORMAT,
    "sandbox_provider.acs_challenges.session": _DERIVED + " (the ACS's challenge state: generated ids, codes)",
    "billing.billing_executions.currency": _FORMAT,
    "billing.billing_executions.status": _FORMAT,
    "billing.billing_executions.payment_rail": _FORMAT,
    "billing.billing_executions.payment_provider": "chosen by the engine (billing.rails.adapters)",
    "billing.billing_executions.provider_reference": _GENERATED,
    "billing.billing_executions.request_fingerprint": _FORMAT,
    "billing.billing_executions.changed_statuses": _DERIVED,
    # Refused at the edge (validate_idempotency_key) before the only writer inserts it; tests/factories.py inserts
    # UUID-based keys directly (1 in 400 card-like). To be guarded once the factories draw keys that cannot be.
    "billing.billing_execution_events.type": _FORMAT,
    "billing.billing_execution_events.old_status": _FORMAT,
    "billing.billing_execution_events.new_status": _FORMAT,
    "billing.billing_execution_events.metadata": _DERIVED + " (provider references, UUIDs, codes)",
    "billing.billing_execution_events.user_id": _ACTOR,
    "billing.billing_execution_events.correlation_id": _GENERATED,
    "billing.billing_outbox.aggregate_type": _FORMAT,
    "billing.billing_outbox.event_type": _FORMAT,
    "billing.billing_outbox.payload": _DERIVED + " (billing.execution_event_payload of the guarded row)",
    "billing.billing_outbox.correlation_id": _GENERATED,
    "billing.billing_outbox.last_error": "the relay's own error text about EventBridge",
    "billing.billing_outbox.lease_owner": _GENERATED,
    # The outbox archive (sql/20261220_billing_outbox_archive.sql): outbox rows as they were, moved by one function.
    "billing.billing_outbox_archive.aggregate_type": _FORMAT,
    "billing.billing_outbox_archive.event_type": _FORMAT,
    "billing.billing_outbox_archive.payload": _DERIVED + " (the outbox row's payload, unchanged)",
    "billing.billing_outbox_archive.correlation_id": _GENERATED,
    "billing.billing_outbox_archive.last_error": "the relay's own error text about EventBridge",
    "billing.billing_outbox_archive.archived_by": _ACTOR,
    "billing.contract_term_datetimes.transition_id": _FORMAT,
    "billing.contract_term_datetimes.workflow_key": _DERIVED,
    "billing.contract_term_datetimes.contract_id": _DERIVED + " (the execution's guarded entity contract)",
    "billing.contract_term_datetimes.subject_type": _FORMAT,
    "billing.contract_term_datetimes.phase_code": _FORMAT,
    "billing.contract_term_datetimes.source": _FORMAT,
    "billing.contract_term_datetimes.actor_id": _ACTOR,
    "billing.contract_term_datetimes.correlation_id": _GENERATED,
    "billing.execution_event_transitions.type": _FORMAT,
    "billing.execution_event_transitions.from_status": _FORMAT,
    "billing.execution_event_transitions.to_status": _FORMAT,
    "billing.execution_event_types.type": _FORMAT,
    "billing.execution_event_types.kind": _FORMAT,
    "billing.execution_status_transitions.from_status": _FORMAT,
    "billing.execution_status_transitions.to_status": _FORMAT,
    "billing.execution_reversals.provider": _FORMAT,
    "billing.execution_reversals.provider_event_id": _GENERATED + " (by the provider, in a signed delivery)",
    "billing.execution_reversals.provider_reference": _GENERATED + " (by the provider: its refund or dispute id)",
    "billing.execution_reversals.kind": _FORMAT,
    "billing.execution_reversals.status": _FORMAT,
    "billing.execution_reversals.initiated_by": _FORMAT,
    "billing.execution_reversals.currency": _FORMAT,
    "billing.execution_reversals.request_fingerprint": _FORMAT,
    "billing.risk_attempts.device_key": _FORMAT + " (a SHA-256 digest, by CHECK)",
    "billing.risk_attempts.ip_key": _FORMAT + " (a SHA-256 digest, by CHECK)",
    "billing.risk_attempts.currency": _FORMAT,
    "billing.risk_attempts.rail": _FORMAT,
    "billing.risk_attempts.initiator": _FORMAT,
    "billing.risk_assessments.decision": _FORMAT,
    "billing.risk_assessments.fired": _DERIVED + " (the stored rules that fired and the facts they read)",
    "billing.risk_assessments.facts": _DERIVED + " (counters, amounts, countries, flags)",
    "billing.reconciliation_leases.status": _FORMAT,
    "billing.reconciliation_leases.lease_owner": _GENERATED,
    "billing.reconciliation_leases.last_outcome": _FORMAT,
    "billing.contracts.contract_type": _FORMAT,
    "billing.contracts.status": _FORMAT,
    "billing.contracts.request_fingerprint": _FORMAT,
    "billing.contract_term_attrs.contract_id": "a foreign key to billing.contracts.id, which is guarded",
    "billing_inbox.webhook_events.provider": _FORMAT,
    "billing_inbox.webhook_events.provider_event_id": _GENERATED + " (by the provider, in a signed delivery)",
    "billing_inbox.webhook_events.outcome": _FORMAT,
    "billing_inbox.webhook_events.provider_reference": _GENERATED + " (by the provider)",
    "billing_inbox.webhook_events.payload_sha256": _FORMAT,
    "billing_inbox.webhook_events.result": _FORMAT,
    "billing_inbox.webhook_events.execution_status": _FORMAT,
    "billing_inbox.webhook_events.currency": _FORMAT,
    "billing_meta.schema_migrations.version": "the migration ledger",
    "billing_meta.schema_migrations.checksum": "the migration ledger",
    "billing_vault.card_secrets.token": _VAULT,
    "billing_vault.card_secrets.scheme": _VAULT,
    "billing_vault.card_secrets.key_id": _VAULT,
    **{f"sandbox_provider.charges.{c}": _SANDBOX for c in (
        "idempotency_key", "reference", "rail", "currency", "payment_instrument_id", "status", "initial_status",
        "failure_code", "settles_as", "settlement_failure_code")},
    **{f"sandbox_provider.refunds.{c}": _SANDBOX for c in (
        "idempotency_key", "reference", "charge_reference", "currency", "status")},
}  # fmt: skip
# The audit trail's schema as a whole (its engineer evolves the columns; every one of them is _AUDIT).
AUDIT_SCHEMA = "billing_audit"

_TEXT_COLUMNS = """
select n.nspname || '.' || c.relname || '.' || a.attname as name
  from pg_attribute a join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = any(%s) and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
   and (a.atttypid in ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'json'::regtype, 'jsonb'::regtype,
                       'text[]'::regtype, 'varchar[]'::regtype, 'jsonb[]'::regtype))
"""
_GUARDED = """
select n.nspname || '.' || c.relname || '.' || arg as name
  from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
  cross join unnest(string_to_array(rtrim(encode(t.tgargs, 'escape'), '\\000'), '\\000')) arg
 where t.tgfoid = 'billing.refuse_card_numbers()'::regprocedure and not t.tgisinternal and t.tgenabled <> 'D'
"""


def test_every_free_text_column_is_guarded_or_exempt(admin: Connection) -> None:
    columns = {r["name"] for r in admin.execute(_TEXT_COLUMNS, [list(OWNED_SCHEMAS)]).fetchall()}
    guarded = {r["name"] for r in admin.execute(_GUARDED).fetchall()}
    audit = {c for c in columns if c.startswith(AUDIT_SCHEMA + ".")}  # exempt: _AUDIT
    assert guarded <= columns, guarded - columns  # every trigger names a real column
    assert columns - guarded - set(EXEMPT) - audit == set(), "guard these columns or exempt them with a reason"
    assert set(EXEMPT) - columns == set(), "stale exemptions"
    assert guarded & set(EXEMPT) == set()
    assert {
        "billing.billing_executions.metadata", "billing.billing_executions.entity_contract_id",
        "billing.billing_executions.idempotency_key", "billing.billing_executions.correlation_id",
        "billing.billing_executions.payment_instrument_id", "billing.contract_term_attrs.attr_value",
        "billing_inbox.webhook_events.failure_code", "billing.execution_reversals.reason",
    } <= guarded  # fmt: skip


@pytest.fixture(scope="module")
def detector(db_url: str) -> Iterator[Connection]:
    with connect(db_url) as connection:
        yield connection


_ALPHABET = "0123456789" * 3 + " \t\u00a0-./_ab,:"


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    text=st.text(alphabet=_ALPHABET, max_size=60),
    pan=st.sampled_from(["", "4111111111111111", "5555 5555 5555 4444", "3782-822463-10005", "6011.1111.1111.1117"]),
    at=st.integers(0, 60),
)
def test_the_databases_detector_agrees_with_the_pythons(detector: Connection, text: str, pan: str, at: int) -> None:
    value = text[:at] + pan + text[at:]
    row = detector.execute("select billing.card_number_in(%s) as found", [value]).fetchone()
    assert row == {"found": looks_like_card_number(value)}, repr(value)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(uuid=st.uuids(), prefix=st.sampled_from(["", "key-", "order_", "4111 1111 1111 1111 "]))
def test_both_detectors_read_past_canonical_uuids_but_not_a_card_beside_one(
    detector: Connection, uuid: UUID, prefix: str
) -> None:
    value = prefix + str(uuid)
    expected = prefix.startswith("4111")
    assert looks_like_card_number(value) is expected, value
    row = detector.execute("select billing.card_number_in(%s) as found", [value]).fetchone()
    assert row == {"found": expected}, value


def test_a_uuid_whose_digit_groups_form_a_luhn_valid_window_is_not_a_card_number(detector: Connection) -> None:
    # 12345678-1234-nnnn is 16 digits across two hyphens; for some nnnn the window is Luhn-valid.
    candidates = [f"12345678-1234-{n:04d}-abcd-abcdefabcdef" for n in range(10_000)]
    luhn_valid = next(c for c in candidates if looks_like_card_number(c[: len("12345678-1234-0000")]))
    assert not looks_like_card_number(luhn_valid)
    assert detector.execute("select billing.card_number_in(%s) as found", [luhn_valid]).fetchone() == {"found": False}


def test_json_detector_looks_at_every_string_number_and_key(detector: Connection) -> None:
    cases = {
        '{"note": "4111 1111 1111 1111"}': True,
        '{"4111111111111111": "x"}': True,
        '{"a": [1, {"b": 4111111111111111}]}': True,
        '{"a": "4111\\t1111\\t1111\\t1111"}': True,
        '{"a": ["4111 1111", "1111 1111"]}': False,
        '{"order": "12345678901234567890"}': False,
    }
    for document, found in cases.items():
        row = detector.execute("select billing.card_number_in_jsonb(%s::jsonb) as found", [document]).fetchone()
        assert row == {"found": found}, document


@pytest.fixture(params=(DatabaseRole.APP, DatabaseRole.WORKER), ids=["billing_app", "billing_worker"])
def execution_role(request: pytest.FixtureRequest, admin_db_url: str) -> Iterator[Connection]:
    with connect(login_url(admin_db_url, request.param)) as connection:
        yield connection


@pytest.fixture
def app_raw(db_url: str) -> Iterator[Connection]:
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def vault_raw(admin_db_url: str) -> Iterator[Connection]:
    with connect(login_url(admin_db_url, DatabaseRole.VAULT)) as connection:
        yield connection


_INSERT_EXECUTION = """
insert into billing.billing_executions (tenant_id, id, entity_contract_id, plan_contract_id, amount, currency,
    payment_rail, payment_provider, payment_instrument_id, idempotency_key, request_fingerprint, metadata)
values (%(tenant)s, gen_random_uuid(), %(entity_contract_id)s, %(plan_contract_id)s, 100, 'EUR', 'card', 'sandbox',
        %(payment_instrument_id)s, %(idempotency_key)s, repeat('a', 64), %(metadata)s::jsonb)
"""
_VALID_EXECUTION = {"entity_contract_id": "c-1", "plan_contract_id": "p-1", "payment_instrument_id": "tok_visa",
                    "idempotency_key": "k-1", "metadata": "{}"}  # fmt: skip


@pytest.mark.parametrize("pan", TYPED_PANS)
@pytest.mark.parametrize(
    "column", ["entity_contract_id", "plan_contract_id", "payment_instrument_id", "metadata-value", "metadata-key"],
)  # fmt: skip
def test_app_role_cannot_insert_a_card_number_into_an_execution(
    app_raw: Connection, tenant_id: UUID, column: str, pan: str
) -> None:
    params: dict[str, object] = {**_VALID_EXECUTION, "tenant": tenant_id}
    if column == "metadata-value":
        params["metadata"] = json.dumps({"note": pan})
    elif column == "metadata-key":
        params["metadata"] = json.dumps({pan: "x"})
    else:
        params[column] = pan
    assert refusal(app_raw, tenant_id, _INSERT_EXECUTION, params) == CARD_DATA


def test_the_same_execution_without_the_card_number_is_accepted(app_raw: Connection, tenant_id: UUID) -> None:
    with rolled_back(app_raw, tenant_id):
        app_raw.execute(_INSERT_EXECUTION, {**_VALID_EXECUTION, "tenant": tenant_id})


def test_neither_role_can_write_a_card_number_as_an_error_code(
    execution_role: Connection, conn: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.PROCESSING)
    update = "update billing.billing_executions set last_error_code = %s where tenant_id = %s and id = %s"
    assert refusal(execution_role, tenant_id, update, ["4111 1111 1111 1111", tenant_id, execution.id]) == CARD_DATA
    with rolled_back(execution_role, tenant_id):
        execution_role.execute(update, ["card_declined", tenant_id, execution.id])


@pytest.mark.parametrize("column", ["event_type", "failure_code"])
def test_app_role_cannot_store_a_card_number_from_a_webhook(app_raw: Connection, tenant_id: UUID, column: str) -> None:
    values = {"event_type": "charge.failed", "failure_code": "card_declined", column: "declined 4111111111111111"}
    statement = (
        "insert into billing_inbox.webhook_events (provider, provider_event_id, event_type, outcome, failure_code,"
        " payload_sha256, received_at) values ('sandbox', %s, %s, 'failed', %s, repeat('0', 64), now())"
    )
    assert refusal(app_raw, tenant_id, statement, [f"evt_{uuid4().hex}", values["event_type"],
                                                   values["failure_code"]]) == CARD_DATA  # fmt: skip


@pytest.mark.parametrize("column", ["provider_event_type", "reason"])
def test_app_role_cannot_store_a_card_number_in_a_reversal(app_raw: Connection, tenant_id: UUID, column: str) -> None:
    values = {"provider_event_type": "charge.refunded", "reason": "fraud", column: "4111-1111-1111-1111"}
    statement = (
        "insert into billing.execution_reversals (tenant_id, id, execution_id, provider, provider_event_id,"
        " provider_event_type, reason, occurred_at) values (%s, gen_random_uuid(), gen_random_uuid(), 'sandbox', %s,"
        " %s, %s, now())"
    )
    params = [tenant_id, f"evt_{uuid4().hex}", values["provider_event_type"], values["reason"]]
    assert refusal(app_raw, tenant_id, statement, params) == CARD_DATA


def _contract(vault_raw: Connection, tenant_id: UUID) -> str:
    instrument_id = new_instrument_id()
    statement = (
        "insert into billing.contracts (tenant_id, id, contract_type, entity_contract_id) values (%s, %s, %s, %s)"
    )
    run(vault_raw, tenant_id, statement, [tenant_id, instrument_id, "payment_instrument", "c-1"])
    return instrument_id


@pytest.mark.parametrize("pan", TYPED_PANS)
def test_vault_role_cannot_store_a_card_number_as_a_term(vault_raw: Connection, tenant_id: UUID, pan: str) -> None:
    contract = _contract(vault_raw, tenant_id)
    statement = (
        "insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value) values (%s, %s, %s, %s)"
    )
    assert refusal(vault_raw, tenant_id, statement, [tenant_id, contract, "holder_name", pan]) == CARD_DATA
    assert refusal(vault_raw, tenant_id, statement, [tenant_id, contract, "x4111111111111111", "v"]) == CARD_DATA


@pytest.mark.parametrize(
    "key", ["cvc", "cvv", "cvv2", "cvn", "cid", "card.cvc", "security_code", "card_number", "pan", "pin", "track2",
            "iban", "account_number", "verification_value"],
)  # fmt: skip
def test_vault_role_cannot_store_a_term_named_after_sensitive_card_data(
    vault_raw: Connection, tenant_id: UUID, key: str
) -> None:
    contract = _contract(vault_raw, tenant_id)
    statement = (
        "insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value) values (%s, %s, %s, %s)"
    )
    assert refusal(vault_raw, tenant_id, statement, [tenant_id, contract, key, "123"]) == CARD_DATA


@pytest.mark.parametrize("key", ["holder_name", "expansion", "decide", "last4", "provider_token.sandbox", "spin_off"])
def test_ordinary_term_keys_are_accepted(vault_raw: Connection, tenant_id: UUID, key: str) -> None:
    contract = _contract(vault_raw, tenant_id)
    with rolled_back(vault_raw, tenant_id):
        vault_raw.execute(
            "insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value)"
            " values (%s, %s, %s, 'v')",
            [tenant_id, contract, key],
        )


@pytest.mark.parametrize("column", ["entity_contract_id", "idempotency_key", "id"])
def test_vault_role_cannot_store_a_card_number_in_a_contract(
    vault_raw: Connection, tenant_id: UUID, column: str
) -> None:
    values: dict[str, object] = {"id": new_instrument_id(), "entity_contract_id": "c-1", "idempotency_key": "k"}
    values[column] = "pi_4111111111111111abcdefabcdefabcd" if column == "id" else "4111111111111111"
    statement = (
        "insert into billing.contracts (tenant_id, id, contract_type, entity_contract_id, idempotency_key,"
        " request_fingerprint) values (%s, %s, 'payment_instrument', %s, %s, repeat('a', 64))"
    )
    params = [tenant_id, values["id"], values["entity_contract_id"], values["idempotency_key"]]
    assert refusal(vault_raw, tenant_id, statement, params) == CARD_DATA
