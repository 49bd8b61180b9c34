"""The sandbox provider against real PostgreSQL: every magic value, idempotency under concurrency, async settlement.

Time is a manual clock and sleeping is recorded, never performed.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from billing.db.connection import Connection
from billing.domain.errors import (
    AdapterMismatch,
    ProviderChargeAlreadySettled,
    ProviderChargeNotFound,
    ProviderUnavailable,
    UnknownPaymentProvider,
)
from billing.domain.execution import PaymentRail
from billing.rails.adapters import adapter_for, build_rail_adapter
from billing.rails.ports import ProviderCharge, provider_idempotency_key
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    StatusOutcome,
    SubmitOutcome,
    SubmitResult,
)
from billing.rails.sandbox import (
    CANCELED_CODE,
    ChargeStatus,
    SandboxCharge,
    SandboxProvider,
    Settlement,
    connections_to,
)
from tests.factories import create_execution

START = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_sandbox(db_url: str, clock: ManualClock, sleeps: list[float]) -> Callable[..., SandboxProvider]:
    def make(**options: Any) -> SandboxProvider:
        return SandboxProvider(connections_to(db_url), clock=clock, sleep=sleeps.append, **options)

    return make


@pytest.fixture
def sandbox(make_sandbox: Callable[..., SandboxProvider]) -> SandboxProvider:
    return make_sandbox()


def charge(instrument: str | None, rail: PaymentRail = PaymentRail.CARD, amount: int = 1999) -> ProviderCharge:
    currency = "USD" if rail is PaymentRail.ACH_DEBIT else "EUR"
    return ProviderCharge(uuid4(), uuid4(), amount, currency, rail, instrument, {"invoice": "INV-1"})


def new_key() -> str:
    return f"test:{uuid4()}"


def charge_rows(admin: Connection, key: str) -> int:
    """Charges stored under `key`, counted on the admin's inspection connection."""
    row = admin.execute(
        "select count(*) as n from sandbox_provider.charges where idempotency_key = %s", [key]
    ).fetchone()
    assert row is not None
    return int(row["n"])


# --- card: instrument tokens ------------------------------------------------------------------------------------


def test_submit_tok_visa_on_card_succeeds_and_stores_one_charge(sandbox: SandboxProvider, admin: Connection) -> None:
    key = new_key()
    request = charge("tok_visa", amount=10**15)

    result = sandbox.submit(request, key)

    assert result.outcome is SubmitOutcome.SUCCEEDED
    assert result.provider_reference is not None
    assert result.provider_reference.startswith("sbx_")
    assert (result.http_status, result.error) == (200, None)
    assert result.request_id is not None
    stored = sandbox.find_charge(idempotency_key=key)
    assert stored is not None
    assert (stored.reference, stored.status, stored.amount, stored.attempts) == (
        result.provider_reference,
        ChargeStatus.SUCCEEDED,
        10**15,
        1,
    )
    assert (stored.tenant_id, stored.execution_id) == (request.tenant_id, request.execution_id)
    assert charge_rows(admin, key) == 1


@pytest.mark.parametrize("instrument", [None, "pm_not_magic"])
def test_submit_card_without_magic_instrument_succeeds(sandbox: SandboxProvider, instrument: str | None) -> None:
    assert sandbox.submit(charge(instrument), new_key()).outcome is SubmitOutcome.SUCCEEDED


@pytest.mark.parametrize(
    ("instrument", "code"),
    [
        ("tok_decline", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
        ("tok_expired_card", "expired_card"),
    ],
)
def test_submit_declining_card_token_fails_with_code_and_402(
    sandbox: SandboxProvider, instrument: str, code: str
) -> None:
    key = new_key()

    result = sandbox.submit(charge(instrument), key)

    assert (result.outcome, result.error_code, result.http_status) == (SubmitOutcome.FAILED, code, 402)
    assert result.error is not None
    assert not result.error.retryable
    assert result.provider_reference is not None  # a declined charge exists at the provider, as a failed one
    status = sandbox.check_status(idempotency_key=key)
    assert (status.outcome, status.error_code, status.provider_reference) == (
        StatusOutcome.FAILED,
        code,
        result.provider_reference,
    )
    assert sandbox.decision_for(code) is Decision.FAIL


def test_submit_tok_3ds_requires_action_with_reference_and_action_url(sandbox: SandboxProvider) -> None:
    result = sandbox.submit(charge("tok_3ds"), new_key())

    assert result.outcome is SubmitOutcome.REQUIRES_ACTION
    assert result.provider_reference is not None
    assert result.action_url is not None
    assert result.action_url.endswith(result.provider_reference)
    status = sandbox.check_status(provider_reference=result.provider_reference)
    assert status.outcome is StatusOutcome.REQUIRES_ACTION


def test_settle_requires_action_charge_as_paid_completes_it(sandbox: SandboxProvider) -> None:
    reference = sandbox.submit(charge("tok_3ds"), new_key()).provider_reference
    assert reference is not None

    settled = sandbox.settle(reference, Settlement.PAID)

    assert settled.outcome is StatusOutcome.PAID
    assert sandbox.check_status(provider_reference=reference).outcome is StatusOutcome.PAID


def test_settle_requires_action_charge_as_failed_uses_authentication_failed(sandbox: SandboxProvider) -> None:
    reference = sandbox.submit(charge("tok_3ds"), new_key()).provider_reference
    assert reference is not None

    settled = sandbox.settle(reference, Settlement.FAILED)

    assert (settled.outcome, settled.error_code) == (StatusOutcome.FAILED, "authentication_failed")


@pytest.mark.parametrize(
    ("rail", "instrument"),
    [(PaymentRail.SEPA_DEBIT, "tok_visa"), (PaymentRail.CARD, "iban_settles_paid"), (PaymentRail.ACH_DEBIT, "tok_3ds")],
)
def test_submit_token_of_another_rail_fails_as_unsupported_with_400(
    sandbox: SandboxProvider, rail: PaymentRail, instrument: str
) -> None:
    result = sandbox.submit(charge(instrument, rail), new_key())
    assert (result.outcome, result.error_code, result.http_status) == (
        SubmitOutcome.FAILED,
        "payment_method_unsupported",
        400,
    )


# --- transient errors, counted per idempotency key ----------------------------------------------------------------


def test_submit_tok_transient_2_fails_twice_then_succeeds_once(sandbox: SandboxProvider, admin: Connection) -> None:
    key = new_key()
    request = charge("tok_transient_2")

    first, second = sandbox.submit(request, key), sandbox.submit(request, key)
    missing_meanwhile = sandbox.check_status(idempotency_key=key)
    third, fourth = sandbox.submit(request, key), sandbox.submit(request, key)

    for transient in (first, second):
        assert (transient.outcome, transient.error_code, transient.http_status) == (
            SubmitOutcome.TRANSIENT_ERROR,
            "processing_error",
            500,
        )
        assert transient.error is not None
        assert transient.error.retryable
        assert transient.provider_reference is None
    assert missing_meanwhile.outcome is StatusOutcome.NOT_FOUND
    assert third.outcome is SubmitOutcome.SUCCEEDED
    assert (fourth.outcome, fourth.provider_reference) == (SubmitOutcome.SUCCEEDED, third.provider_reference)
    stored = sandbox.find_charge(idempotency_key=key)
    assert stored is not None
    assert stored.attempts == 3  # the replay in `fourth` is not an attempt
    assert charge_rows(admin, key) == 1


def test_submit_transient_tokens_count_attempts_per_key_independently(sandbox: SandboxProvider) -> None:
    key_a, key_b = new_key(), new_key()
    request_a, request_b = charge("tok_transient_2"), charge("tok_transient_2")

    outcomes = [
        sandbox.submit(request_a, key_a).outcome,
        sandbox.submit(request_b, key_b).outcome,
        sandbox.submit(request_a, key_a).outcome,
        sandbox.submit(request_a, key_a).outcome,
        sandbox.submit(request_b, key_b).outcome,
        sandbox.submit(request_b, key_b).outcome,
    ]

    transient, succeeded = SubmitOutcome.TRANSIENT_ERROR, SubmitOutcome.SUCCEEDED
    assert outcomes == [transient, transient, transient, succeeded, transient, succeeded]


def test_submit_tok_rate_limited_answers_429_once_then_succeeds(sandbox: SandboxProvider) -> None:
    key, request = new_key(), charge("tok_rate_limited")

    first, second = sandbox.submit(request, key), sandbox.submit(request, key)

    assert (first.outcome, first.error_code, first.http_status) == (SubmitOutcome.TRANSIENT_ERROR, "rate_limited", 429)
    assert second.outcome is SubmitOutcome.SUCCEEDED


def test_submit_tok_always_transient_never_charges(sandbox: SandboxProvider) -> None:
    key, request = new_key(), charge("tok_always_transient", PaymentRail.SEPA_DEBIT)

    outcomes = {sandbox.submit(request, key).outcome for _ in range(6)}

    assert outcomes == {SubmitOutcome.TRANSIENT_ERROR}
    assert sandbox.check_status(idempotency_key=key).outcome is StatusOutcome.NOT_FOUND
    stored = sandbox.find_charge(idempotency_key=key)
    assert stored is not None
    assert (stored.status, stored.reference, stored.attempts) == (ChargeStatus.NOT_CHARGED, None, 6)


# --- timeouts: the answer is lost, the key recovers the truth -----------------------------------------------------


def test_submit_tok_timeout_is_unknown_but_check_status_by_key_finds_the_charge(
    sandbox: SandboxProvider, admin: Connection
) -> None:
    key, request = new_key(), charge("tok_timeout")

    lost = sandbox.submit(request, key)
    found = sandbox.check_status(idempotency_key=key)
    resubmitted = sandbox.submit(request, key)

    assert (lost.outcome, lost.error_code, lost.provider_reference) == (
        SubmitOutcome.UNKNOWN,
        OUTCOME_UNKNOWN_CODE,
        None,
    )
    assert sandbox.decision_for(OUTCOME_UNKNOWN_CODE) is Decision.RECONCILE_LATER
    assert found.outcome is StatusOutcome.PAID
    assert found.provider_reference is not None
    assert (resubmitted.outcome, resubmitted.provider_reference) == (SubmitOutcome.SUCCEEDED, found.provider_reference)
    assert charge_rows(admin, key) == 1


def test_submit_tok_timeout_on_debit_is_found_pending_by_key(make_sandbox: Callable[..., SandboxProvider]) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=3))
    key = new_key()

    lost = sandbox.submit(charge("tok_timeout", PaymentRail.SEPA_DEBIT), key)
    found = sandbox.check_status(idempotency_key=key)

    assert lost.outcome is SubmitOutcome.UNKNOWN
    assert found.outcome is StatusOutcome.STILL_PENDING
    assert found.provider_reference is not None


def test_submit_tok_timeout_no_charge_is_not_found_then_resubmission_charges(sandbox: SandboxProvider) -> None:
    key, request = new_key(), charge("tok_timeout_no_charge")

    lost = sandbox.submit(request, key)
    missing = sandbox.check_status(idempotency_key=key)
    resubmitted = sandbox.submit(request, key)

    assert lost.outcome is SubmitOutcome.UNKNOWN
    assert missing.outcome is StatusOutcome.NOT_FOUND
    assert resubmitted.outcome is SubmitOutcome.SUCCEEDED
    assert sandbox.check_status(idempotency_key=key).provider_reference == resubmitted.provider_reference


# --- idempotency --------------------------------------------------------------------------------------------------


def test_submit_same_key_twice_replays_original_answer_without_second_charge(
    sandbox: SandboxProvider, admin: Connection
) -> None:
    key, request = new_key(), charge("tok_decline")

    first, second = sandbox.submit(request, key), sandbox.submit(request, key)

    assert (second.outcome, second.provider_reference, second.error_code) == (
        SubmitOutcome.FAILED,
        first.provider_reference,
        "card_declined",
    )
    assert charge_rows(admin, key) == 1


def test_submit_same_key_with_other_amount_is_refused_and_original_kept(sandbox: SandboxProvider) -> None:
    key, request = new_key(), charge("tok_visa")
    original = sandbox.submit(request, key)

    reused = sandbox.submit(dataclasses.replace(request, amount=request.amount + 1), key)

    assert (reused.outcome, reused.error_code, reused.http_status, reused.provider_reference) == (
        SubmitOutcome.FAILED,
        "idempotency_key_reused",
        400,
        None,
    )
    stored = sandbox.find_charge(idempotency_key=key)
    assert stored is not None
    assert (stored.reference, stored.amount) == (original.provider_reference, request.amount)


def submit_concurrently(sandbox: SandboxProvider, request: ProviderCharge, key: str, n: int) -> list[SubmitResult]:
    """n threads submit the same key at the same moment, each on its own connection."""
    barrier = threading.Barrier(n)

    def one() -> SubmitResult:
        barrier.wait(timeout=10)
        return sandbox.submit(request, key)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return [future.result() for future in [pool.submit(one) for _ in range(n)]]


def test_submit_same_key_from_20_threads_creates_exactly_one_charge(
    sandbox: SandboxProvider, admin: Connection
) -> None:
    key = new_key()

    results = submit_concurrently(sandbox, charge("tok_visa"), key, 20)

    assert {r.outcome for r in results} == {SubmitOutcome.SUCCEEDED}
    assert len({r.provider_reference for r in results}) == 1
    assert charge_rows(admin, key) == 1
    stored = sandbox.find_charge(idempotency_key=key)
    assert stored is not None
    assert stored.attempts == 1


def test_submit_transient_token_from_20_threads_fails_exactly_n_times(
    sandbox: SandboxProvider, admin: Connection
) -> None:
    key = new_key()

    results = submit_concurrently(sandbox, charge("tok_transient_2"), key, 20)

    outcomes = [r.outcome for r in results]
    assert outcomes.count(SubmitOutcome.TRANSIENT_ERROR) == 2
    assert outcomes.count(SubmitOutcome.SUCCEEDED) == 18
    assert len({r.provider_reference for r in results if r.provider_reference}) == 1
    assert charge_rows(admin, key) == 1


# --- asynchronous rails: pending, then settled ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rail", "instrument", "outcome", "code"),
    [
        (PaymentRail.SEPA_DEBIT, "iban_settles_paid", StatusOutcome.PAID, None),
        (PaymentRail.SEPA_DEBIT, None, StatusOutcome.PAID, None),
        (PaymentRail.SEPA_DEBIT, "iban_settles_failed", StatusOutcome.FAILED, "AM04"),
        (PaymentRail.SEPA_DEBIT, "iban_account_closed", StatusOutcome.FAILED, "AC04"),
        (PaymentRail.ACH_DEBIT, "ach_settles_paid", StatusOutcome.PAID, None),
        (PaymentRail.ACH_DEBIT, "ach_settles_failed", StatusOutcome.FAILED, "R01"),
        (PaymentRail.ACH_DEBIT, "ach_account_closed", StatusOutcome.FAILED, "R02"),
    ],
)
def test_check_status_on_debit_is_pending_until_settle_at_then_settled(
    make_sandbox: Callable[..., SandboxProvider],
    clock: ManualClock,
    rail: PaymentRail,
    instrument: str | None,
    outcome: StatusOutcome,
    code: str | None,
) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=3))
    submitted = sandbox.submit(charge(instrument, rail), new_key())
    reference = submitted.provider_reference
    assert submitted.outcome is SubmitOutcome.PENDING_SETTLEMENT
    assert reference is not None

    clock.advance(timedelta(days=3) - timedelta(seconds=1))
    before = sandbox.check_status(provider_reference=reference)
    clock.advance(timedelta(seconds=1))
    after = sandbox.check_status(provider_reference=reference)

    assert before.outcome is StatusOutcome.STILL_PENDING
    assert (after.outcome, after.error_code, after.settled_at) == (outcome, code, START + timedelta(days=3))
    if code is not None:
        assert sandbox.decision_for(code) is Decision.FAIL


def test_check_status_with_default_settle_delay_settles_on_first_check(sandbox: SandboxProvider) -> None:
    reference = sandbox.submit(charge("ach_settles_failed", PaymentRail.ACH_DEBIT), new_key()).provider_reference
    assert reference is not None

    assert sandbox.check_status(provider_reference=reference).error_code == "R01"


def test_submit_replay_after_settlement_still_answers_pending_settlement(sandbox: SandboxProvider) -> None:
    key, request = new_key(), charge("iban_settles_paid", PaymentRail.SEPA_DEBIT)
    first = sandbox.submit(request, key)
    assert sandbox.check_status(idempotency_key=key).outcome is StatusOutcome.PAID

    replay = sandbox.submit(request, key)

    assert (replay.outcome, replay.provider_reference) == (SubmitOutcome.PENDING_SETTLEMENT, first.provider_reference)


def test_settle_due_settles_only_charges_past_settle_at(
    make_sandbox: Callable[..., SandboxProvider], clock: ManualClock
) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=2))
    early = sandbox.submit(charge("iban_settles_failed", PaymentRail.SEPA_DEBIT), new_key()).provider_reference
    clock.advance(timedelta(days=1))
    late = sandbox.submit(charge("ach_settles_paid", PaymentRail.ACH_DEBIT), new_key()).provider_reference
    clock.advance(timedelta(days=1))

    settled = sandbox.settle_due()

    # The database is shared by the run: other tests' due charges settle too, so look at ours by reference.
    by_reference = {s.provider_reference: (s.outcome, s.error_code) for s in settled}
    assert by_reference[early] == (StatusOutcome.FAILED, "AM04")
    assert late not in by_reference
    assert all(s.settled_at is not None and s.settled_at <= clock.now for s in settled)
    assert [s.settled_at for s in settled] == sorted(s.settled_at for s in settled if s.settled_at is not None)
    assert late is not None
    late_charge = sandbox.find_charge(provider_reference=late)
    assert late_charge is not None
    assert late_charge.status is ChargeStatus.PENDING_SETTLEMENT


# --- forced settlement (demo webhooks) ----------------------------------------------------------------------------


def test_settle_pending_debit_as_paid_is_idempotent_and_final(
    make_sandbox: Callable[..., SandboxProvider],
) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=5))
    reference = sandbox.submit(charge("iban_settles_failed", PaymentRail.SEPA_DEBIT), new_key()).provider_reference
    assert reference is not None

    first = sandbox.settle(reference, Settlement.PAID)
    again = sandbox.settle(reference, Settlement.PAID)

    assert first.outcome is StatusOutcome.PAID
    assert again == first
    with pytest.raises(ProviderChargeAlreadySettled):
        sandbox.settle(reference, Settlement.FAILED)
    assert sandbox.check_status(provider_reference=reference).outcome is StatusOutcome.PAID


@pytest.mark.parametrize(
    ("rail", "instrument", "failure_code", "expected"),
    [
        (PaymentRail.SEPA_DEBIT, "iban_settles_paid", None, "AM04"),
        (PaymentRail.SEPA_DEBIT, "iban_settles_paid", "AC04", "AC04"),
        (PaymentRail.ACH_DEBIT, "ach_settles_paid", None, "R01"),
    ],
)
def test_settle_pending_debit_as_failed_uses_given_or_rail_default_code(
    make_sandbox: Callable[..., SandboxProvider],
    rail: PaymentRail,
    instrument: str,
    failure_code: str | None,
    expected: str,
) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=5))
    reference = sandbox.submit(charge(instrument, rail), new_key()).provider_reference
    assert reference is not None

    settled = sandbox.settle(reference, Settlement.FAILED, failure_code=failure_code)

    assert (settled.outcome, settled.error_code) == (StatusOutcome.FAILED, expected)
    assert sandbox.check_status(provider_reference=reference).error_code == expected


def test_settle_unknown_reference_raises_not_found(sandbox: SandboxProvider) -> None:
    with pytest.raises(ProviderChargeNotFound):
        sandbox.settle("sbx_000000000000000000000000", Settlement.PAID)


def test_settle_declined_card_as_paid_is_refused(sandbox: SandboxProvider) -> None:
    reference = sandbox.submit(charge("tok_decline"), new_key()).provider_reference
    assert reference is not None
    with pytest.raises(ProviderChargeAlreadySettled):
        sandbox.settle(reference, Settlement.PAID)


# --- lookups, latency, unreachable provider -----------------------------------------------------------------------


def test_check_status_unknown_reference_is_not_found(sandbox: SandboxProvider) -> None:
    assert sandbox.check_status(provider_reference="sbx_ffffffffffffffffffffffff").outcome is StatusOutcome.NOT_FOUND


@pytest.mark.parametrize("lookup", [{}, {"provider_reference": "sbx_1", "idempotency_key": "k"}])
def test_check_status_without_exactly_one_lookup_is_refused(sandbox: SandboxProvider, lookup: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        sandbox.check_status(**lookup)


def test_submit_and_check_status_with_latency_sleep_that_long(
    make_sandbox: Callable[..., SandboxProvider], sleeps: list[float]
) -> None:
    sandbox = make_sandbox(latency=timedelta(milliseconds=250))
    key = new_key()

    sandbox.submit(charge("tok_visa"), key)
    sandbox.check_status(idempotency_key=key)

    assert sleeps == [0.25, 0.25]


def test_submit_with_default_latency_never_sleeps(sandbox: SandboxProvider, sleeps: list[float]) -> None:
    sandbox.submit(charge("tok_visa"), new_key())
    assert sleeps == []


def test_submit_when_sandbox_unreachable_is_transient_and_check_status_raises() -> None:
    # Port 1 on localhost refuses at once: the request never leaves, so nothing can have been charged.
    unreachable = SandboxProvider(connections_to("postgresql://127.0.0.1:1/none?connect_timeout=2"))

    result = unreachable.submit(charge("tok_visa"), new_key())

    assert (result.outcome, result.error_code, result.http_status) == (
        SubmitOutcome.TRANSIENT_ERROR,
        "provider_unavailable",
        503,
    )
    with pytest.raises(ProviderUnavailable):
        unreachable.check_status(idempotency_key=new_key())


# --- rail adapters over the sandbox -------------------------------------------------------------------------------


def test_adapter_submit_card_execution_succeeds_and_retry_reuses_the_charge(
    sandbox: SandboxProvider, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(conn, tenant_id, payment_rail=PaymentRail.CARD, payment_instrument_id="tok_visa")
    adapter = build_rail_adapter(PaymentRail.CARD, sandbox)

    first, second = adapter.submit(execution), adapter.submit(execution)

    assert (adapter.is_async, adapter.max_retries, adapter.provider_name) == (False, 3, "sandbox")
    assert first.outcome is SubmitOutcome.SUCCEEDED
    assert second.provider_reference == first.provider_reference
    assert charge_rows(admin, provider_idempotency_key(execution)) == 1


def test_adapter_submit_sepa_execution_is_pending_then_check_status_by_key_and_reference_agree(
    sandbox: SandboxProvider, conn: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(
        conn, tenant_id, payment_rail=PaymentRail.SEPA_DEBIT, payment_instrument_id="iban_settles_failed"
    )
    adapter = build_rail_adapter(PaymentRail.SEPA_DEBIT, sandbox)

    submitted = adapter.submit(execution)
    by_key = adapter.check_status(execution)
    by_reference = adapter.check_status(dataclasses.replace(execution, provider_reference=submitted.provider_reference))

    assert (adapter.is_async, adapter.max_retries) == (True, 5)
    assert submitted.outcome is SubmitOutcome.PENDING_SETTLEMENT
    assert by_key.outcome is StatusOutcome.FAILED
    assert by_key.error is not None
    assert (by_key.provider_reference, by_key.error_code) == (submitted.provider_reference, "AM04")
    assert (by_reference.outcome, by_reference.error_code, by_reference.settled_at) == (
        by_key.outcome,
        by_key.error_code,
        by_key.settled_at,
    )
    assert not adapter.is_retryable(by_key.error)


def test_adapter_is_retryable_for_transient_error_only(
    sandbox: SandboxProvider, conn: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(
        conn, tenant_id, payment_rail=PaymentRail.ACH_DEBIT, currency="USD", payment_instrument_id="tok_transient_1"
    )
    adapter = build_rail_adapter(PaymentRail.ACH_DEBIT, sandbox)

    transient = adapter.submit(execution)
    accepted = adapter.submit(execution)

    assert transient.error is not None
    assert adapter.is_retryable(transient.error)
    assert adapter.decision_for(transient.error) is Decision.RETRY
    assert accepted.outcome is SubmitOutcome.PENDING_SETTLEMENT


def test_adapter_same_client_key_in_two_tenants_makes_two_charges(sandbox: SandboxProvider, conn: Connection) -> None:
    adapter = build_rail_adapter(PaymentRail.CARD, sandbox)
    first = create_execution(conn, uuid4(), idempotency_key="order-1", payment_instrument_id="tok_visa")
    second = create_execution(conn, uuid4(), idempotency_key="order-1", payment_instrument_id="tok_visa")

    references = {adapter.submit(first).provider_reference, adapter.submit(second).provider_reference}

    assert len(references) == 2


def test_adapter_given_execution_of_another_rail_raises_before_calling_provider(
    sandbox: SandboxProvider, conn: Connection, admin: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(conn, tenant_id, payment_rail=PaymentRail.SEPA_DEBIT)
    card = build_rail_adapter(PaymentRail.CARD, sandbox)

    with pytest.raises(AdapterMismatch):
        card.submit(execution)
    with pytest.raises(AdapterMismatch):
        card.check_status(execution)
    assert charge_rows(admin, provider_idempotency_key(execution)) == 0


def test_adapter_for_execution_routes_by_provider_and_refuses_unknown_provider(
    sandbox: SandboxProvider, conn: Connection, tenant_id: UUID
) -> None:
    execution = create_execution(conn, tenant_id, payment_rail=PaymentRail.ACH_DEBIT, currency="USD")

    adapter = adapter_for(execution, {"sandbox": sandbox})

    assert (adapter.rail, adapter.provider_name) == (PaymentRail.ACH_DEBIT, "sandbox")
    with pytest.raises(UnknownPaymentProvider):
        adapter_for(execution, {})


# --- cancel -------------------------------------------------------------------------------------------------------


def stored(sandbox: SandboxProvider, reference: str) -> SandboxCharge:
    found = sandbox.find_charge(provider_reference=reference)
    assert found is not None
    return found


def three_ds_charge(sandbox: SandboxProvider) -> str:
    reference = sandbox.submit(charge("tok_3ds"), new_key()).provider_reference
    assert reference is not None
    return reference


def test_cancel_requires_action_charge_fails_it_with_canceled_for_good(
    sandbox: SandboxProvider, clock: ManualClock
) -> None:
    reference = three_ds_charge(sandbox)
    clock.advance(timedelta(hours=1))

    canceled = sandbox.cancel(reference, new_key())

    assert (canceled.outcome, canceled.provider_reference, canceled.settled_at, canceled.error) == (
        StatusOutcome.CANCELED,
        reference,
        clock.now,
        None,
    )
    row = stored(sandbox, reference)
    assert (row.status, row.failure_code, row.settled_at) == (ChargeStatus.FAILED, CANCELED_CODE, clock.now)
    assert sandbox.check_status(provider_reference=reference).outcome is StatusOutcome.CANCELED
    # The customer finishing 3-D Secure afterwards cannot make it succeed.
    with pytest.raises(ProviderChargeAlreadySettled):
        sandbox.settle(reference, Settlement.PAID)
    assert stored(sandbox, reference).status is ChargeStatus.FAILED


def test_cancel_sent_again_answers_canceled_and_changes_nothing(sandbox: SandboxProvider, clock: ManualClock) -> None:
    reference = three_ds_charge(sandbox)
    key = new_key()
    first = sandbox.cancel(reference, key)
    after_first = stored(sandbox, reference)
    clock.advance(timedelta(minutes=5))

    again, other_key = sandbox.cancel(reference, key), sandbox.cancel(reference, new_key())

    assert (again.outcome, again.settled_at) == (first.outcome, first.settled_at)
    assert (other_key.outcome, other_key.settled_at) == (first.outcome, first.settled_at)
    assert stored(sandbox, reference) == after_first


def test_cancel_after_the_customer_completed_the_action_leaves_the_payment_standing(sandbox: SandboxProvider) -> None:
    reference = three_ds_charge(sandbox)
    sandbox.settle(reference, Settlement.PAID)
    before = stored(sandbox, reference)

    answer = sandbox.cancel(reference, new_key())

    assert (answer.outcome, answer.provider_reference) == (StatusOutcome.PAID, reference)
    assert stored(sandbox, reference) == before


def test_cancel_after_the_customer_failed_the_action_reports_the_failure(sandbox: SandboxProvider) -> None:
    reference = three_ds_charge(sandbox)
    sandbox.settle(reference, Settlement.FAILED)

    answer = sandbox.cancel(reference, new_key())

    assert (answer.outcome, answer.error_code) == (StatusOutcome.FAILED, "authentication_failed")


def test_cancel_of_a_pending_debit_leaves_it_on_its_way(make_sandbox: Callable[..., SandboxProvider]) -> None:
    sandbox = make_sandbox(settle_delay=timedelta(days=2))
    reference = sandbox.submit(charge("iban_settles_paid", PaymentRail.SEPA_DEBIT), new_key()).provider_reference
    assert reference is not None

    answer = sandbox.cancel(reference, new_key())

    assert answer.outcome is StatusOutcome.STILL_PENDING
    assert stored(sandbox, reference).status is ChargeStatus.PENDING_SETTLEMENT


def test_cancel_of_an_unknown_reference_is_not_found(sandbox: SandboxProvider) -> None:
    assert sandbox.cancel("sbx_eeeeeeeeeeeeeeeeeeeeeeee", new_key()).outcome is StatusOutcome.NOT_FOUND


def test_cancel_without_a_key_is_refused_and_cancels_nothing(sandbox: SandboxProvider) -> None:
    reference = three_ds_charge(sandbox)

    with pytest.raises(ValueError, match="idempotency key"):
        sandbox.cancel(reference, "")

    assert stored(sandbox, reference).status is ChargeStatus.REQUIRES_ACTION


def test_cancel_when_sandbox_unreachable_raises_provider_unavailable() -> None:
    unreachable = SandboxProvider(connections_to("postgresql://127.0.0.1:1/none?connect_timeout=2"))

    with pytest.raises(ProviderUnavailable):
        unreachable.cancel("sbx_eeeeeeeeeeeeeeeeeeeeeeee", new_key())


def test_cancel_takes_the_simulated_latency(make_sandbox: Callable[..., SandboxProvider], sleeps: list[float]) -> None:
    sandbox = make_sandbox(latency=timedelta(milliseconds=100))
    reference = three_ds_charge(sandbox)
    sleeps.clear()

    sandbox.cancel(reference, new_key())

    assert sleeps == [0.1]


def test_settle_with_the_cancel_code_is_refused(sandbox: SandboxProvider) -> None:
    reference = three_ds_charge(sandbox)

    with pytest.raises(ValueError, match="cancel"):
        sandbox.settle(reference, Settlement.FAILED, failure_code=CANCELED_CODE)

    assert stored(sandbox, reference).status is ChargeStatus.REQUIRES_ACTION
