"""Velocity counted in PostgreSQL, as the app role: windows on the database's clock, this attempt included once,
retries never counted twice, declines marked by the database, and 20 parallel attempts serialised per key."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.domain.execution import Execution, PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator
from billing.risk.defaults import default_rule_set
from billing.risk.evaluation import assess
from billing.risk.postgres import AssessmentLog
from billing.risk.rules import Action
from billing.risk.velocity import AttemptKeys, Velocity, VelocityCounter
from tests.integration.raw_sql import CTX, S, execution_in, refusal
from tests.unit.risk.facts import make_facts

pytestmark = pytest.mark.integration
THREADS = 20


def keys(execution: Execution, **overrides: object) -> AttemptKeys:
    fields: dict[str, object] = {
        "tenant_id": execution.tenant_id,
        "execution_id": execution.id,
        "instrument_key": "fp_card_1",
        "customer_key": execution.entity_contract_id,
        "amount": Money(execution.amount, execution.currency),
        "rail": PaymentRail.CARD,
        "initiator": ChargeInitiator.CUSTOMER,
    }
    fields.update(overrides)
    return AttemptKeys(**fields)  # type: ignore[arg-type]


def backdate(admin: Connection, tenant_id: UUID, execution_id: UUID, interval: str) -> None:
    """Move an attempt into the past, as the owner (run-time roles cannot rewrite the velocity history)."""
    with admin.transaction():
        admin.execute("set local role billing_owner")
        admin.execute("alter table billing.risk_attempts disable trigger risk_attempts_change_rules")
        admin.execute(
            "update billing.risk_attempts set recorded_at = recorded_at - %s::interval"
            " where tenant_id = %s and execution_id = %s",
            [interval, tenant_id, execution_id],
        )
        admin.execute("alter table billing.risk_attempts enable trigger risk_attempts_change_rules")


def test_counters_include_this_attempt_and_count_only_their_key_and_window(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    counter = VelocityCounter(conn)
    first = execution_in(conn, tenant_id, S.CREATED)
    assert counter.count(keys(first, device_fingerprint="dev-1", ip_address="10.0.0.1")) == Velocity(
        attempts_per_instrument_1h=1, attempts_per_instrument_24h=1, declines_per_instrument_24h=0,
        attempts_per_customer_1h=1, amount_per_customer_24h=Money(first.amount, first.currency),
        distinct_instruments_per_customer_24h=1, distinct_customers_per_instrument_24h=1,
        distinct_customers_per_device_24h=1, attempts_per_ip_1h=1, attempts_per_tenant_1m=1, recorded=True,
    )  # fmt: skip
    old = execution_in(conn, tenant_id, S.CREATED)
    counter.count(keys(old))
    backdate(admin, tenant_id, old.id, "2 hours")
    other_customer = execution_in(conn, tenant_id, S.CREATED, entity_contract_id="contract-2")
    counter.count(keys(other_customer, device_fingerprint="dev-1"))
    other_card = execution_in(conn, tenant_id, S.CREATED)

    velocity = counter.count(keys(other_card, instrument_key="fp_card_2", device_fingerprint="dev-1"))

    assert velocity.attempts_per_instrument_1h == 1  # its own card has no other attempt
    assert velocity.distinct_instruments_per_customer_24h == 2  # fp_card_1 and fp_card_2 for contract-1
    assert velocity.attempts_per_customer_1h == 2  # first and this one; `old` is 2 hours ago
    assert velocity.amount_per_customer_24h == Money(3 * first.amount, first.currency)  # first, old, this one
    assert velocity.distinct_customers_per_device_24h == 2  # contract-1 and contract-2 on dev-1
    assert velocity.attempts_per_ip_1h is None  # no IP on this request
    again = counter.count(keys(first))
    # fp_card_1: first, other_customer in the hour; old 2 hours ago; other_card used fp_card_2.
    assert (again.attempts_per_instrument_1h, again.attempts_per_instrument_24h) == (2, 3)
    assert again.distinct_customers_per_instrument_24h == 2


def test_a_retry_of_the_same_execution_is_not_counted_again(conn: Connection, tenant_id: UUID) -> None:
    counter = VelocityCounter(conn)
    execution = execution_in(conn, tenant_id, S.CREATED)
    first = counter.count(keys(execution))
    retry = counter.count(keys(execution))
    assert (first.recorded, retry.recorded) == (True, False)
    assert first.attempts_per_instrument_1h == retry.attempts_per_instrument_1h == 1


def test_a_provider_decline_is_marked_by_the_database_and_an_own_refusal_is_not(
    conn: Connection, tenant_id: UUID
) -> None:
    counter = VelocityCounter(conn)
    repository = ExecutionRepository(conn)
    for code in ("card_declined", "risk_blocked"):
        execution = execution_in(conn, tenant_id, S.PROCESSING)
        counter.count(keys(execution))
        repository.settle_from_processing(tenant_id, execution.id, CTX, provider_reference=f"ref_{uuid4().hex}")
        repository.reconcile(tenant_id, execution.id, CTX, outcome=S.FAILED, error_code=code)
    probe = execution_in(conn, tenant_id, S.CREATED)
    assert counter.count(keys(probe)).declines_per_instrument_24h == 1


def test_the_app_role_cannot_rewrite_or_delete_velocity_history(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    VelocityCounter(conn).count(keys(execution))
    where = " where tenant_id = %s and execution_id = %s"
    ids = [tenant_id, execution.id]
    assert (
        refusal(
            conn, tenant_id, "update billing.risk_attempts set recorded_at = now() - interval '2 days'" + where, ids
        )
        == "42501"
    )
    assert refusal(conn, tenant_id, "delete from billing.risk_attempts" + where, ids) == "42501"
    assert refusal(conn, tenant_id, "truncate billing.risk_attempts") == "42501"


def test_twenty_parallel_attempts_on_one_card_cannot_slip_under_the_limit(
    db_url: str, conn: Connection, tenant_id: UUID
) -> None:
    executions = [execution_in(conn, tenant_id, S.CREATED) for _ in range(THREADS)]
    connections = [connect(db_url) for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    rules = default_rule_set()

    def attempt(index: int) -> Action:
        counter = VelocityCounter(connections[index])
        barrier.wait()
        velocity = counter.count(keys(executions[index], amount=Money(1000, "EUR")))
        return assess(rules, make_facts(attempts_per_instrument_1h=velocity.attempts_per_instrument_1h)).decision

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            decisions = list(pool.map(attempt, range(THREADS)))
    finally:
        for connection in connections:
            connection.close()
    # Each attempt saw a distinct count, 1 to 20: exactly five were under the limit of five per hour.
    assert sorted(decisions).count(Action.BLOCK) == THREADS - 5, decisions


def test_keys_hold_digests_of_the_device_and_the_ip_never_the_values(
    conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    VelocityCounter(conn).count(keys(execution, device_fingerprint="device-abc", ip_address="203.0.113.7"))
    row = admin.execute(
        "select device_key, ip_key from billing.risk_attempts where tenant_id = %s", [tenant_id]
    ).fetchone()
    assert row is not None
    assert "device-abc" not in str(row)
    assert "203.0.113.7" not in str(row)
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        conn.execute("select set_config('billing.tenant_id', %s, true)", [str(tenant_id)])
        other = execution_in(conn, tenant_id, S.CREATED)
        conn.execute(
            "insert into billing.risk_attempts (tenant_id, execution_id, instrument_key, customer_key, ip_key, amount,"
            " currency, rail, initiator) values (%s, %s, 'k', 'c', '203.0.113.7', 1, 'EUR', 'card', 'customer')",
            [tenant_id, other.id],
        )


def test_an_assessment_is_kept_once_per_attempt_and_never_rewritten(conn: Connection, tenant_id: UUID) -> None:
    execution = execution_in(conn, tenant_id, S.CREATED)
    velocity = VelocityCounter(conn).count(keys(execution))
    probe = make_facts(attempts_per_instrument_1h=velocity.attempts_per_instrument_1h)
    assessment = assess(default_rule_set(), probe)
    log = AssessmentLog(conn)

    kept = log.record(tenant_id, execution.id, 1, assessment, probe, duration_us=420)
    again = log.record(tenant_id, execution.id, 1, assessment, probe, duration_us=420)

    assert kept is not None
    assert again is None
    assert (kept.decision, kept.rule_set_version, kept.facts["amount"]) == (
        "allow", 0, {"amount": 1000, "currency": "EUR"}
    )  # fmt: skip
    assert [r.id for r in log.of_execution(tenant_id, execution.id)] == [kept.id]
    where = " where tenant_id = %s and id = %s"
    assert refusal(conn, tenant_id, "update billing.risk_assessments set score = 0" + where, [tenant_id, kept.id]) == (
        "42501"
    )


def test_a_second_attempt_on_a_card_waits_for_the_first_to_commit(
    db_url: str, conn: Connection, tenant_id: UUID
) -> None:
    """The first assessment's transaction holds the card's key until it ends: the second cannot count before the
    first's attempt is visible (deterministic, unlike racing threads). It gives up at the default lock timeout."""
    first_execution, second_execution = (execution_in(conn, tenant_id, S.CREATED) for _ in range(2))
    with connect(db_url) as first, connect(db_url) as second, first.transaction(force_rollback=True):
        assert VelocityCounter(first).count(keys(first_execution)).attempts_per_instrument_1h == 1
        with pytest.raises(psycopg.errors.LockNotAvailable):
            VelocityCounter(second).count(keys(second_execution))
