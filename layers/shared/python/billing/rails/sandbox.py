"""The sandbox payment provider: behaves like a real PSP, deterministically, with its state in PostgreSQL.

It stands in for an external system, so it keeps its own state (schema sandbox_provider, see
sql/20260410_create_sandbox_provider.sql) and writes it through its own connections, never inside a billing
transaction. Outcomes are chosen by the payment instrument token (full table in docs/sandbox.md):

Instrument tokens (what the charge does):

    rail        token                    outcome
    card        tok_visa (default)       SUCCEEDED
    card        tok_decline              FAILED card_declined (HTTP 402)
    card        tok_insufficient_funds   FAILED insufficient_funds (HTTP 402)
    card        tok_expired_card         FAILED expired_card (HTTP 402)
    card        tok_3ds                  REQUIRES_ACTION (settle() completes or fails it)
    sepa_debit  iban_settles_paid (def.) PENDING_SETTLEMENT, settles PAID
    sepa_debit  iban_settles_failed      PENDING_SETTLEMENT, settles FAILED AM04 (insufficient funds)
    sepa_debit  iban_account_closed      PENDING_SETTLEMENT, settles FAILED AC04 (account closed)
    ach_debit   ach_settles_paid (def.)  PENDING_SETTLEMENT, settles PAID
    ach_debit   ach_settles_failed       PENDING_SETTLEMENT, settles FAILED R01 (insufficient funds)
    ach_debit   ach_account_closed       PENDING_SETTLEMENT, settles FAILED R02 (account closed)

    No instrument, or a token not listed anywhere, behaves as the rail's default. A token listed for another
    rail is refused: FAILED payment_method_unsupported (HTTP 400).

Behaviour tokens (any rail; the charge, once made, behaves as the rail's default):

    tok_transient_<N>      N = 1..99: TRANSIENT_ERROR processing_error (HTTP 500) on the first N attempts under
                           an idempotency key, then the charge is made
    tok_rate_limited       TRANSIENT_ERROR rate_limited (HTTP 429) on the first attempt, then the charge is made
    tok_always_transient   TRANSIENT_ERROR processing_error (HTTP 500) on every attempt; never charges
    tok_timeout            first attempt: the charge is made but the answer is lost (UNKNOWN); check_status by
                           key finds it, and a resubmission with the same key replays it
    tok_timeout_no_charge  first attempt: UNKNOWN and nothing is charged (check_status: NOT_FOUND); the next
                           attempt with the same key makes the charge

Idempotency: one row per idempotency key. A repeated key replays the original answer (the response the charge was
created with, as Stripe does) without charging again; the same key with other parameters is refused with
FAILED idempotency_key_reused. Transient errors and lost answers are not replayed: the next attempt is processed.

Settlement: pending charges settle at charged_at + settle_delay (default 0: the next check_status settles them).
check_status and settle_due() apply due settlements; settle() forces an outcome (demo webhooks, 3-D Secure).

Cancel: cancel() ends a requires-action charge for good (stored as failed with code `canceled`, reported CANCELED);
it can never succeed afterwards. A charge that reached its outcome first is left as it is and reported as it stands.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, assert_never
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from billing.db.connection import connect
from billing.domain.errors import ProviderChargeAlreadySettled, ProviderChargeNotFound, ProviderUnavailable
from billing.domain.execution import PaymentRail
from billing.rails.ports import ProviderCharge, ProviderRefund
from billing.rails.results import (
    OUTCOME_UNKNOWN_CODE,
    Decision,
    NextAction,
    NextActionType,
    ProviderError,
    RefundResult,
    StatusCheck,
    SubmitResult,
)
from billing.rails.three_ds import ThreeDSecureMode

PROVIDER_NAME: Final = "sandbox"
# failure_code of a charge cancel() ended; check_status reports such a charge CANCELED, not FAILED.
CANCELED_CODE: Final = "canceled"

# A refund the sandbox refuses, as Stripe would: more than the charge has left to refund, or a charge not captured.
REFUND_TOO_LARGE_CODE: Final = "amount_too_large"
CHARGE_NOT_REFUNDABLE_CODE: Final = "charge_not_refundable"

Clock = Callable[[], datetime]
Sleeper = Callable[[float], None]
# Anything that hands out a connection for one unit of work: `lambda: connect(url)` or a pool's `.connection`.
ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
_APPLICATION_NAME: Final = "sandbox-provider"

# The sandbox's error-code table. Codes are the sandbox's own, as a real provider's would be kept as-is.
SANDBOX_DECISIONS: Final[Mapping[str, Decision]] = MappingProxyType(
    {
        # The customer's bank said no: the same request will always be refused.
        "card_declined": Decision.FAIL,
        "insufficient_funds": Decision.FAIL,
        "expired_card": Decision.FAIL,
        "authentication_failed": Decision.FAIL,
        # Canceled before the customer acted: that charge can never succeed.
        CANCELED_CODE: Decision.FAIL,
        # Debit returns: SEPA reason codes (AM04 insufficient funds, AC04 account closed) and NACHA return codes
        # (R01 insufficient funds, R02 account closed).
        "AM04": Decision.FAIL,
        "AC04": Decision.FAIL,
        "R01": Decision.FAIL,
        "R02": Decision.FAIL,
        # Our request was wrong; sending it unchanged again cannot help.
        "payment_method_unsupported": Decision.FAIL,
        "idempotency_key_reused": Decision.FAIL,
        # Nothing was charged and the provider says so: resubmit with the same key.
        "rate_limited": Decision.RETRY,
        "processing_error": Decision.RETRY,
        "timeout": Decision.RETRY,
        "provider_unavailable": Decision.RETRY,
        # No answer at all: the charge may exist, so ask check_status instead of guessing.
        OUTCOME_UNKNOWN_CODE: Decision.RECONCILE_LATER,
        # Refund refusals (Stripe's codes): more than the charge has left, or a charge that captured nothing.
        REFUND_TOO_LARGE_CODE: Decision.FAIL,
        CHARGE_NOT_REFUNDABLE_CODE: Decision.FAIL,
    }
)

# Codes for which the sandbox answers 402 Payment Required, like Stripe's card errors; other refusals are 400.
_PAYMENT_REQUIRED_CODES: Final = frozenset({"card_declined", "insufficient_funds", "expired_card"})
_TRANSIENT_N: Final = re.compile(r"^tok_transient_([1-9][0-9]?)$")
# Reserved TLD: a demo front end shows the link, nothing can ever resolve it.
_ACTION_URL: Final = "https://sandbox.invalid/authenticate/{reference}"


def sandbox_decision_for(error_code: str) -> Decision:
    """The sandbox's decision for one of its codes; a code it does not know is reconciled, not guessed at."""
    return SANDBOX_DECISIONS.get(error_code, Decision.RECONCILE_LATER)


class ChargeStatus(StrEnum):
    """Status of a row in sandbox_provider.charges."""

    # Requests arrived under the key but no charge exists (every attempt so far failed transiently or was lost).
    NOT_CHARGED = "not_charged"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING_SETTLEMENT = "pending_settlement"
    REQUIRES_ACTION = "requires_action"


class Settlement(StrEnum):
    """The outcome settle() forces on a pending or requires-action charge."""

    PAID = "paid"
    FAILED = "failed"


class LostResponse(StrEnum):
    """Whether the first attempt after any transient errors times out, and on which side of the charge."""

    NONE = "none"
    BEFORE_CHARGE = "before_charge"
    AFTER_CHARGE = "after_charge"


@dataclass(frozen=True, slots=True)
class ChargePlan:
    """What happens when the sandbox makes the charge."""

    status: ChargeStatus
    failure_code: str | None = None
    settles_as: ChargeStatus | None = None
    settlement_failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How requests under one idempotency key are answered before, and as, the charge is made."""

    transient_failures: int = 0
    always_transient: bool = False
    transient_code: str = "processing_error"
    transient_http_status: int = 500
    lost_response: LostResponse = LostResponse.NONE


@dataclass(frozen=True, slots=True)
class Scenario:
    """Everything the sandbox does for one instrument on one rail."""

    plan: ChargePlan
    behaviour: Behaviour = Behaviour()


class Step(StrEnum):
    """What the sandbox does on one processed attempt."""

    TRANSIENT_ERROR = "transient_error"
    LOSE_RESPONSE = "lose_response"
    CHARGE = "charge"
    CHARGE_AND_LOSE_RESPONSE = "charge_and_lose_response"


def _settles_paid() -> ChargePlan:
    return ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.SUCCEEDED)


def _settles_failed(code: str) -> ChargePlan:
    return ChargePlan(ChargeStatus.PENDING_SETTLEMENT, settles_as=ChargeStatus.FAILED, settlement_failure_code=code)


_INSTRUMENT_PLANS: Final[Mapping[PaymentRail, Mapping[str, ChargePlan]]] = MappingProxyType(
    {
        PaymentRail.CARD: {
            "tok_visa": ChargePlan(ChargeStatus.SUCCEEDED),
            "tok_decline": ChargePlan(ChargeStatus.FAILED, failure_code="card_declined"),
            "tok_insufficient_funds": ChargePlan(ChargeStatus.FAILED, failure_code="insufficient_funds"),
            "tok_expired_card": ChargePlan(ChargeStatus.FAILED, failure_code="expired_card"),
            "tok_3ds": ChargePlan(ChargeStatus.REQUIRES_ACTION),
        },
        PaymentRail.SEPA_DEBIT: {
            "iban_settles_paid": _settles_paid(),
            "iban_settles_failed": _settles_failed("AM04"),
            "iban_account_closed": _settles_failed("AC04"),
        },
        PaymentRail.ACH_DEBIT: {
            "ach_settles_paid": _settles_paid(),
            "ach_settles_failed": _settles_failed("R01"),
            "ach_account_closed": _settles_failed("R02"),
        },
    }
)

_BEHAVIOURS: Final[Mapping[str, Behaviour]] = MappingProxyType(
    {
        "tok_rate_limited": Behaviour(transient_failures=1, transient_code="rate_limited", transient_http_status=429),
        "tok_always_transient": Behaviour(always_transient=True),
        "tok_timeout": Behaviour(lost_response=LostResponse.AFTER_CHARGE),
        "tok_timeout_no_charge": Behaviour(lost_response=LostResponse.BEFORE_CHARGE),
    }
)


def default_instrument(rail: PaymentRail) -> str:
    """The token whose behaviour a rail gets when the instrument is absent or not magic."""
    match rail:
        case PaymentRail.CARD:
            return "tok_visa"
        case PaymentRail.SEPA_DEBIT:
            return "iban_settles_paid"
        case PaymentRail.ACH_DEBIT:
            return "ach_settles_paid"
        case _:
            assert_never(rail)


def scenario_for(rail: PaymentRail, payment_instrument_id: str | None) -> Scenario:
    """What the sandbox does for this instrument on this rail (see the module docstring)."""
    plans = _INSTRUMENT_PLANS[rail]
    default = plans[default_instrument(rail)]
    if payment_instrument_id is None:
        return Scenario(default)
    if payment_instrument_id in plans:
        return Scenario(plans[payment_instrument_id])
    if any(payment_instrument_id in _INSTRUMENT_PLANS[other] for other in PaymentRail if other is not rail):
        return Scenario(ChargePlan(ChargeStatus.FAILED, failure_code="payment_method_unsupported"))
    transient = _TRANSIENT_N.fullmatch(payment_instrument_id)
    if transient is not None:
        return Scenario(default, Behaviour(transient_failures=int(transient[1])))
    return Scenario(default, _BEHAVIOURS.get(payment_instrument_id, Behaviour()))


def step_for(behaviour: Behaviour, attempt: int) -> Step:
    """What the sandbox does on the attempt-th processed request (1-based) under one idempotency key."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    if behaviour.always_transient or attempt <= behaviour.transient_failures:
        return Step.TRANSIENT_ERROR
    # Only the first attempt after the transient ones times out; the retry that follows gets through.
    if attempt == behaviour.transient_failures + 1:
        match behaviour.lost_response:
            case LostResponse.BEFORE_CHARGE:
                return Step.LOSE_RESPONSE
            case LostResponse.AFTER_CHARGE:
                return Step.CHARGE_AND_LOSE_RESPONSE
            case LostResponse.NONE:
                return Step.CHARGE
            case _:
                assert_never(behaviour.lost_response)
    return Step.CHARGE


def forced_failure_code(rail: PaymentRail) -> str:
    """The code settle(..., FAILED) uses when none is given: the rail's most common failure."""
    match rail:
        case PaymentRail.CARD:
            # Only a requires-action card charge can be settled: the customer failed 3-D Secure.
            return "authentication_failed"
        case PaymentRail.SEPA_DEBIT:
            return "AM04"
        case PaymentRail.ACH_DEBIT:
            return "R01"
        case _:
            assert_never(rail)


@dataclass(frozen=True, slots=True)
class SandboxCharge:
    """One row of sandbox_provider.charges."""

    idempotency_key: str
    reference: str | None
    tenant_id: UUID
    execution_id: UUID
    rail: PaymentRail
    amount: int
    currency: str
    payment_instrument_id: str | None
    status: ChargeStatus
    initial_status: ChargeStatus | None
    failure_code: str | None
    attempts: int
    settle_at: datetime | None
    settles_as: ChargeStatus | None
    settlement_failure_code: str | None
    created_at: datetime
    charged_at: datetime | None
    settled_at: datetime | None
    updated_at: datetime

    def same_request(self, charge: ProviderCharge) -> bool:
        """True if the charge asks for what this key was first used for."""
        return (self.amount, self.currency, self.rail, self.payment_instrument_id) == (
            charge.amount,
            charge.currency,
            charge.rail,
            charge.payment_instrument_id,
        )

    @property
    def charge_reference(self) -> str:
        """The reference of a row that holds a charge."""
        if self.reference is None:
            raise ValueError(f"no charge exists under idempotency key {self.idempotency_key!r}")
        return self.reference

    @property
    def charge_failure_code(self) -> str:
        """The failure code of a failed charge (the table requires one)."""
        if self.failure_code is None:
            raise ValueError(f"charge {self.reference} has no failure code")
        return self.failure_code


def _optional_status(value: str | None) -> ChargeStatus | None:
    return ChargeStatus(value) if value is not None else None


def charge_from_row(row: Mapping[str, Any]) -> SandboxCharge:
    """Map a sandbox_provider.charges row to SandboxCharge."""
    return SandboxCharge(
        idempotency_key=row["idempotency_key"],
        reference=row["reference"],
        tenant_id=row["tenant_id"],
        execution_id=row["execution_id"],
        rail=PaymentRail(row["rail"]),
        amount=int(row["amount"]),
        currency=row["currency"],
        payment_instrument_id=row["payment_instrument_id"],
        status=ChargeStatus(row["status"]),
        initial_status=_optional_status(row["initial_status"]),
        failure_code=row["failure_code"],
        attempts=int(row["attempts"]),
        settle_at=row["settle_at"],
        settles_as=_optional_status(row["settles_as"]),
        settlement_failure_code=row["settlement_failure_code"],
        created_at=row["created_at"],
        charged_at=row["charged_at"],
        settled_at=row["settled_at"],
        updated_at=row["updated_at"],
    )


_RECEIVE = """
insert into sandbox_provider.charges (
    idempotency_key, tenant_id, execution_id, rail, amount, currency, payment_instrument_id, status, attempts,
    created_at, updated_at
) values (
    %(key)s, %(tenant_id)s, %(execution_id)s, %(rail)s, %(amount)s, %(currency)s, %(instrument)s, 'not_charged', 0,
    %(now)s, %(now)s
)
-- A concurrent request with the same key waits here for the first one to commit, then inserts nothing.
on conflict (idempotency_key) do nothing
"""

# Serialises every request under one key: the first decides, the others replay what it decided.
_LOCK_BY_KEY = "select * from sandbox_provider.charges where idempotency_key = %(key)s for update"

_COUNT_ATTEMPT = """
update sandbox_provider.charges
   set attempts = attempts + 1, updated_at = %(now)s
 where idempotency_key = %(key)s
"""

_CHARGE = """
update sandbox_provider.charges
   set attempts = attempts + 1,
       reference = %(reference)s,
       status = %(status)s,
       initial_status = %(status)s,
       failure_code = %(failure_code)s,
       settles_as = %(settles_as)s,
       settlement_failure_code = %(settlement_failure_code)s,
       settle_at = %(settle_at)s,
       charged_at = %(now)s,
       updated_at = %(now)s
 where idempotency_key = %(key)s and status = 'not_charged'
returning *
"""

# A pending charge whose settle_at has passed takes its planned outcome, dated when it was due.
_SETTLE_DUE_ONE = """
update sandbox_provider.charges
   set status = settles_as, failure_code = settlement_failure_code, settled_at = settle_at, updated_at = %(now)s
 where status = 'pending_settlement' and settle_at <= %(now)s
   and (reference = %(reference)s or idempotency_key = %(key)s)
"""

_SETTLE_DUE_ALL = """
update sandbox_provider.charges
   set status = settles_as, failure_code = settlement_failure_code, settled_at = settle_at, updated_at = %(now)s
 where status = 'pending_settlement' and settle_at <= %(now)s
returning *
"""

_FIND = "select * from sandbox_provider.charges where reference = %(reference)s or idempotency_key = %(key)s"

_LOCK_BY_REFERENCE = "select * from sandbox_provider.charges where reference = %(reference)s for update"

# Only a charge still waiting for the customer can be canceled; anything else keeps its outcome.
_CANCEL = """
update sandbox_provider.charges
   set status = 'failed', failure_code = %(code)s, settled_at = %(now)s, updated_at = %(now)s
 where reference = %(reference)s and status = 'requires_action'
returning *
"""

_FORCE_SETTLE = """
update sandbox_provider.charges
   set status = %(status)s, failure_code = %(failure_code)s, settled_at = %(now)s, updated_at = %(now)s
 where reference = %(reference)s
returning *
"""


_REFUND_BY_KEY = "select * from sandbox_provider.refunds where idempotency_key = %(key)s"
_REFUND_FIND = """
select * from sandbox_provider.refunds
 where (reference = %(reference)s or refund_id = %(refund_id)s) and charge_reference = %(charge)s
"""
_REFUNDED_SO_FAR = (
    "select coalesce(sum(amount), 0) as refunded from sandbox_provider.refunds where charge_reference = %s"
)
_RECORD_REFUND = """
insert into sandbox_provider.refunds (
    idempotency_key, reference, charge_reference, refund_id, amount, currency, status, created_at
) values (%(key)s, %(reference)s, %(charge)s, %(refund_id)s, %(amount)s, %(currency)s, 'succeeded', %(now)s)
returning *
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


def connections_to(url: str) -> ConnectionFactory:
    """A connection factory opening a fresh, autocommit connection to url for each sandbox call."""

    def open_connection() -> psycopg.Connection[Any]:
        return connect(url, application_name=_APPLICATION_NAME)

    return open_connection


class KeptConnections:
    """A connection factory that keeps a finished call's connection for the next call, as a provider's HTTP client
    keeps its connection alive: a warm function container charges through the sandbox without a new connection
    (a server process forked and authenticated, four milliseconds here) per call.

    One call at a time uses a connection; concurrent calls open their own and at most `keep` are kept. A connection
    is kept only when its call ended cleanly (no exception, no transaction left open), and one kept longer than
    `revalidate_after` is asked `select 1` before reuse, so a restarted server is met at connect time, where a
    failure means the request never left, rather than mid-call, where it means the answer was lost.
    """

    def __init__(self, url: str, *, keep: int = 1, revalidate_after: timedelta = timedelta(seconds=30)) -> None:
        self._url = url
        self._keep = keep
        self._revalidate_after = revalidate_after.total_seconds()
        self._kept: list[tuple[float, psycopg.Connection[Any]]] = []
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self) -> Iterator[psycopg.Connection[Any]]:
        conn = self._take() or connect(self._url, application_name=_APPLICATION_NAME)
        try:
            yield conn
        except BaseException:
            conn.close()  # it may be broken or mid-statement: never handed to the next call
            raise
        self._give_back(conn)

    def _take(self) -> psycopg.Connection[Any] | None:
        while True:
            with self._lock:
                if not self._kept:
                    return None
                kept_at, conn = self._kept.pop()
            if conn.closed or conn.broken:
                continue
            if time.monotonic() - kept_at < self._revalidate_after:
                return conn
            try:
                conn.execute("select 1")
            except psycopg.Error:
                conn.close()
                continue
            return conn

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        if conn.closed or conn.broken or conn.info.transaction_status is not psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            if len(self._kept) < self._keep:
                self._kept.append((time.monotonic(), conn))
                return
        conn.close()

    def close(self) -> None:
        """Close the kept connections (the next call opens a new one)."""
        with self._lock:
            kept, self._kept = self._kept, []
        for _, conn in kept:
            conn.close()


def _new_id(prefix: str, nbytes: int) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


class SandboxProvider:
    """The sandbox PSP; implements the PaymentProvider port. Thread-safe: every call uses its own connection."""

    def __init__(
        self,
        connections: ConnectionFactory,
        *,
        latency: timedelta = timedelta(0),
        settle_delay: timedelta = timedelta(0),
        clock: Clock = utc_now,
        sleep: Sleeper = time.sleep,
    ) -> None:
        if latency < timedelta(0) or settle_delay < timedelta(0):
            raise ValueError("latency and settle_delay cannot be negative")
        self._connections = connections
        self._latency = latency
        self._settle_delay = settle_delay
        self._clock = clock
        self._sleep = sleep

    @property
    def name(self) -> str:
        return PROVIDER_NAME

    def decision_for(self, error_code: str) -> Decision:
        return sandbox_decision_for(error_code)

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        """Charge once per idempotency key; provider trouble comes back as a result, never as an exception."""
        self._simulate_latency()
        request_id = _new_id("req_", 8)
        scenario = scenario_for(charge.rail, charge.payment_instrument_id)
        if (
            scenario.plan.status is ChargeStatus.REQUIRES_ACTION
            and charge.three_ds.mode is ThreeDSecureMode.AUTHENTICATED
        ):
            # The issuer asked for authentication and the authorisation carries it: nothing more to ask the customer.
            scenario = dataclasses.replace(scenario, plan=ChargePlan(ChargeStatus.SUCCEEDED))
        connected = False
        try:
            with self._connections() as conn:
                connected = True
                with conn.transaction():
                    return self._submit(conn, charge, idempotency_key, scenario, request_id)
        except psycopg.OperationalError as exc:
            if not connected:
                # The request never left: nothing can have been charged.
                return self._error_result("provider_unavailable", "sandbox unreachable", 503, request_id)
            # The request was sent (possibly committed) and the answer was lost: only check_status can tell.
            return self._lost_response(request_id, detail=type(exc).__name__)

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        """The charge's state by exactly one of reference or key, applying a settlement that has fallen due."""
        if (provider_reference is None) == (idempotency_key is None):
            raise ValueError("check_status needs exactly one of provider_reference or idempotency_key")
        self._simulate_latency()
        request_id = _new_id("req_", 8)
        params = {"reference": provider_reference, "key": idempotency_key, "now": self._clock()}
        try:
            with self._connections() as conn, conn.transaction():
                cursor = conn.cursor(row_factory=dict_row)
                cursor.execute(_SETTLE_DUE_ONE, params)
                row = cursor.execute(_FIND, params).fetchone()
        except psycopg.OperationalError as exc:
            # Never NOT_FOUND: a caller would take that as "never charged" and charge again.
            raise ProviderUnavailable(
                f"sandbox unreachable: {type(exc).__name__}", provider=PROVIDER_NAME, request_id=request_id
            ) from exc
        if row is None:
            return StatusCheck.not_found(request_id=request_id)
        return _status_of(charge_from_row(row), request_id)

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        """Cancel a requires-action charge for good; any other charge is left as it is. The charge's state after.

        Idempotent by the charge's state: a repeated cancel finds the charge canceled and says so, so the sandbox
        keeps no memory of the key (a real PSP de-duplicates on it). A pending debit is already on its way to the
        bank and answers STILL_PENDING; a charge the customer finished first answers PAID (or FAILED).
        """
        if not idempotency_key:
            raise ValueError("cancel needs the idempotency key of the cancel request")
        self._simulate_latency()
        request_id = _new_id("req_", 8)
        params = {"reference": reference, "key": None, "now": self._clock(), "code": CANCELED_CODE}
        try:
            with self._connections() as conn, conn.transaction():
                cursor = conn.cursor(row_factory=dict_row)
                cursor.execute(_SETTLE_DUE_ONE, params)
                row = cursor.execute(_LOCK_BY_REFERENCE, params).fetchone()
                if row is not None:
                    row = cursor.execute(_CANCEL, params).fetchone() or row
        except psycopg.OperationalError as exc:
            # The cancel may have committed before the connection failed: only a later check_status can tell.
            raise ProviderUnavailable(
                f"sandbox unreachable: {type(exc).__name__}", provider=PROVIDER_NAME, request_id=request_id
            ) from exc
        if row is None:
            return StatusCheck.not_found(request_id=request_id)
        return _status_of(charge_from_row(row), request_id)

    def for_tenant(self, tenant_id: UUID) -> SandboxProvider:
        """One sandbox for every tenant: it has no accounts."""
        return self

    @property
    def polls_status(self) -> bool:
        return True

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        """Refund a paid charge once per key, never past its amount; a card refund succeeds at once."""
        self._simulate_latency()
        request_id = _new_id("req_", 8)
        params = {
            "key": idempotency_key,
            "reference": _new_id("sbxr_", 12),
            "charge": refund.payment_reference,
            "refund_id": refund.refund_id,
            "amount": refund.amount,
            "currency": refund.currency,
            "now": self._clock(),
        }
        try:
            with self._connections() as conn, conn.transaction():
                cursor = conn.cursor(row_factory=dict_row)
                cursor.execute(
                    _SETTLE_DUE_ONE, {"reference": refund.payment_reference, "key": None, "now": params["now"]}
                )
                # The charge's row lock serialises refunds of one charge, so two cannot both fit under its amount.
                charge = cursor.execute(_LOCK_BY_REFERENCE, {"reference": refund.payment_reference}).fetchone()
                replayed = cursor.execute(_REFUND_BY_KEY, params).fetchone()
                if replayed is not None:
                    return RefundResult.succeeded(replayed["reference"], request_id=request_id)
                refusal = self._refund_refusal(cursor, charge, refund)
                if refusal is not None:
                    return RefundResult.failed(ProviderError(refusal, f"refund refused: {refusal}", 400, request_id))
                row = cursor.execute(_RECORD_REFUND, params).fetchone()
        except psycopg.OperationalError as exc:
            error = ProviderError(
                OUTCOME_UNKNOWN_CODE, f"no answer from the sandbox: {type(exc).__name__}", None, request_id
            )
            return RefundResult.from_error(error, Decision.RECONCILE_LATER)
        assert row is not None
        return RefundResult.succeeded(row["reference"], request_id=request_id)

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        """The refund made for this request (by its reference, else by our refund id), or NOT_FOUND."""
        request_id = _new_id("req_", 8)
        params = {"reference": refund_reference, "refund_id": refund.refund_id, "charge": refund.payment_reference}
        try:
            with self._connections() as conn:
                row = conn.cursor(row_factory=dict_row).execute(_REFUND_FIND, params).fetchone()
        except psycopg.OperationalError as exc:
            raise ProviderUnavailable(
                f"sandbox unreachable: {type(exc).__name__}", provider=PROVIDER_NAME, request_id=request_id
            ) from exc
        if row is None:
            return RefundResult.not_found(request_id=request_id)
        return RefundResult.succeeded(row["reference"], request_id=request_id)

    @staticmethod
    def _refund_refusal(
        cursor: psycopg.Cursor[dict[str, Any]], charge: dict[str, Any] | None, refund: ProviderRefund
    ) -> str | None:
        if charge is None or charge["status"] != ChargeStatus.SUCCEEDED.value or charge["currency"] != refund.currency:
            return CHARGE_NOT_REFUNDABLE_CODE
        refunded = cursor.execute(_REFUNDED_SO_FAR, [refund.payment_reference]).fetchone()
        assert refunded is not None
        if refunded["refunded"] + refund.amount > charge["amount"]:
            return REFUND_TOO_LARGE_CODE
        return None

    def settle_due(self) -> list[StatusCheck]:
        """Settle every pending charge whose settle_at has passed; return what each settled as, earliest first."""
        with self._connections() as conn, conn.transaction():
            rows = conn.cursor(row_factory=dict_row).execute(_SETTLE_DUE_ALL, {"now": self._clock()}).fetchall()
        charges = sorted((charge_from_row(row) for row in rows), key=lambda c: (c.settle_at, c.reference))
        return [_status_of(charge, request_id=None) for charge in charges]

    def settle(self, reference: str, outcome: Settlement, *, failure_code: str | None = None) -> StatusCheck:
        """Force the outcome of a pending (or requires-action) charge, as a bank or a customer would.

        Idempotent: settling a charge again with the outcome it already has returns it unchanged; a different
        outcome raises ProviderChargeAlreadySettled.
        """
        if outcome is Settlement.PAID and failure_code is not None:
            raise ValueError("a paid settlement has no failure code")
        if failure_code == CANCELED_CODE:
            # The code marks a charge cancel() ended (reported CANCELED): a bank or a customer cannot cancel.
            raise ValueError(f"{CANCELED_CODE!r} is the code of cancel(), not of a settlement")
        target = ChargeStatus.SUCCEEDED if outcome is Settlement.PAID else ChargeStatus.FAILED
        with self._connections() as conn, conn.transaction():
            cursor = conn.cursor(row_factory=dict_row)
            row = cursor.execute(_LOCK_BY_REFERENCE, {"reference": reference}).fetchone()
            if row is None:
                raise ProviderChargeNotFound(f"sandbox holds no charge {reference!r}", reference=reference)
            current = charge_from_row(row)
            code = None if target is ChargeStatus.SUCCEEDED else failure_code or forced_failure_code(current.rail)
            match current.status:
                case ChargeStatus.PENDING_SETTLEMENT | ChargeStatus.REQUIRES_ACTION:
                    params = {"reference": reference, "status": target, "failure_code": code, "now": self._clock()}
                    updated = cursor.execute(_FORCE_SETTLE, params).fetchone()
                    assert updated is not None  # the row is locked above
                    current = charge_from_row(updated)
                case ChargeStatus.SUCCEEDED | ChargeStatus.FAILED:
                    if current.status is not target or (
                        failure_code is not None and failure_code != current.failure_code
                    ):
                        raise ProviderChargeAlreadySettled(
                            f"sandbox charge {reference} already {current.status}"
                            + (f" ({current.failure_code})" if current.failure_code else ""),
                            reference=reference,
                            status=str(current.status),
                        )
                case ChargeStatus.NOT_CHARGED:
                    # Unreachable: rows without a charge have no reference to be found by.
                    raise ProviderChargeNotFound(f"sandbox holds no charge {reference!r}", reference=reference)
                case _:
                    assert_never(current.status)
        return _status_of(current, request_id=None)

    def find_charge(
        self, *, provider_reference: str | None = None, idempotency_key: str | None = None
    ) -> SandboxCharge | None:
        """The stored row, as is (no settlement applied): for tests, demos and support."""
        if (provider_reference is None) == (idempotency_key is None):
            raise ValueError("find_charge needs exactly one of provider_reference or idempotency_key")
        with self._connections() as conn:
            row = (
                conn.cursor(row_factory=dict_row)
                .execute(_FIND, {"reference": provider_reference, "key": idempotency_key})
                .fetchone()
            )
        return charge_from_row(row) if row is not None else None

    def _submit(
        self,
        conn: psycopg.Connection[Any],
        charge: ProviderCharge,
        idempotency_key: str,
        scenario: Scenario,
        request_id: str,
    ) -> SubmitResult:
        now = self._clock()
        cursor = conn.cursor(row_factory=dict_row)
        cursor.execute(
            _RECEIVE,
            {
                "key": idempotency_key,
                "tenant_id": charge.tenant_id,
                "execution_id": charge.execution_id,
                "rail": charge.rail,
                "amount": charge.amount,
                "currency": charge.currency,
                "instrument": charge.payment_instrument_id,
                "now": now,
            },
        )
        row = cursor.execute(_LOCK_BY_KEY, {"key": idempotency_key}).fetchone()
        assert row is not None  # inserted above, or by a concurrent request that has committed
        stored = charge_from_row(row)
        if not stored.same_request(charge):
            return self._error_result(
                "idempotency_key_reused",
                "this idempotency key was used with different parameters",
                400,
                request_id,
            )
        if stored.status is not ChargeStatus.NOT_CHARGED:
            return _replay(stored, request_id)
        step = step_for(scenario.behaviour, stored.attempts + 1)
        match step:
            case Step.TRANSIENT_ERROR:
                cursor.execute(_COUNT_ATTEMPT, {"key": idempotency_key, "now": now})
                behaviour = scenario.behaviour
                return self._error_result(
                    behaviour.transient_code, "try again later", behaviour.transient_http_status, request_id
                )
            case Step.LOSE_RESPONSE:
                cursor.execute(_COUNT_ATTEMPT, {"key": idempotency_key, "now": now})
                return self._lost_response(request_id, detail="timed out before the charge")
            case Step.CHARGE | Step.CHARGE_AND_LOSE_RESPONSE:
                charged = cursor.execute(_CHARGE, self._charge_params(scenario.plan, idempotency_key, now)).fetchone()
                assert charged is not None  # the row is locked and not charged
                if step is Step.CHARGE_AND_LOSE_RESPONSE:
                    return self._lost_response(request_id, detail="timed out after the charge")
                return _replay(charge_from_row(charged), request_id)
            case _:
                assert_never(step)

    def _charge_params(self, plan: ChargePlan, idempotency_key: str, now: datetime) -> dict[str, Any]:
        pending = plan.status is ChargeStatus.PENDING_SETTLEMENT
        return {
            "key": idempotency_key,
            "reference": _new_id("sbx_", 12),
            "status": plan.status,
            "failure_code": plan.failure_code,
            "settles_as": plan.settles_as,
            "settlement_failure_code": plan.settlement_failure_code,
            "settle_at": now + self._settle_delay if pending else None,
            "now": now,
        }

    def _error_result(self, code: str, message: str, http_status: int, request_id: str) -> SubmitResult:
        decision = self.decision_for(code)
        error = ProviderError(code, message, http_status, request_id, retryable=decision is Decision.RETRY)
        return SubmitResult.from_error(error, decision)

    def _lost_response(self, request_id: str, *, detail: str) -> SubmitResult:
        error = ProviderError(OUTCOME_UNKNOWN_CODE, f"no answer from the sandbox: {detail}", None, request_id)
        return SubmitResult.from_error(error, self.decision_for(OUTCOME_UNKNOWN_CODE))

    def _simulate_latency(self) -> None:
        if self._latency > timedelta(0):
            self._sleep(self._latency.total_seconds())


def _replay(stored: SandboxCharge, request_id: str) -> SubmitResult:
    """The answer the charge was created with; every repeat of the key gets the same one."""
    reference = stored.charge_reference
    match stored.initial_status:
        case ChargeStatus.SUCCEEDED:
            return SubmitResult.succeeded(reference, request_id=request_id)
        case ChargeStatus.PENDING_SETTLEMENT:
            return SubmitResult.pending_settlement(reference, request_id=request_id)
        case ChargeStatus.REQUIRES_ACTION:
            action = NextAction(NextActionType.REDIRECT_TO_URL, url=_ACTION_URL.format(reference=reference))
            return SubmitResult.requires_action(reference, next_action=action, request_id=request_id)
        case ChargeStatus.FAILED:
            # A charge created as failed never changes, so its failure code is still the one it was created with.
            code = stored.charge_failure_code
            http_status = 402 if code in _PAYMENT_REQUIRED_CODES else 400
            error = ProviderError(code, f"charge {reference} failed: {code}", http_status, request_id)
            return SubmitResult.from_error(error, Decision.FAIL, provider_reference=reference)
        case ChargeStatus.NOT_CHARGED | None:
            raise ValueError(f"no charge to replay under idempotency key {stored.idempotency_key!r}")
        case _:
            assert_never(stored.initial_status)


def _status_of(stored: SandboxCharge, request_id: str | None) -> StatusCheck:
    """What check_status reports for a stored row."""
    match stored.status:
        case ChargeStatus.NOT_CHARGED:
            return StatusCheck.not_found(request_id=request_id)
        case ChargeStatus.SUCCEEDED:
            settled_at = stored.settled_at or stored.charged_at
            return StatusCheck.paid(stored.charge_reference, settled_at=settled_at, request_id=request_id)
        case ChargeStatus.FAILED:
            reference = stored.charge_reference
            code = stored.charge_failure_code
            settled_at = stored.settled_at or stored.charged_at
            if code == CANCELED_CODE:
                return StatusCheck.canceled(reference, settled_at=settled_at, request_id=request_id)
            error = ProviderError(code, f"charge {reference} failed: {code}", None, request_id)
            return StatusCheck.failed(reference, error, settled_at=settled_at, request_id=request_id)
        case ChargeStatus.PENDING_SETTLEMENT:
            return StatusCheck.still_pending(stored.charge_reference, request_id=request_id)
        case ChargeStatus.REQUIRES_ACTION:
            return StatusCheck.requires_action(stored.charge_reference, request_id=request_id)
        case _:
            assert_never(stored.status)
