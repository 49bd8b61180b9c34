"""What charging an instrument needs outside the vault: may this charge use it, and which token the provider takes.

The execute function (billing_app) checks an instrument before creating an execution with it, through
billing.payment_instrument_for_charge, and records the use in the audit trail whatever the answer. The providers
are always charged with a provider token, never a card number: InstrumentTokenProvider wraps a provider and swaps
an instrument id for that provider's token (billing.payment_instrument_provider_token) on every submit, first
attempt and retries alike, so the execute function and the retry worker send the same request under the same
provider idempotency key. Neither function ever reads the instrument's other terms.
"""

# S105 flags "token" in constant names; these are names of tokens and attributes, never secrets.
# ruff: noqa: S105

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from uuid import UUID

import psycopg

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.db.connection import Connection
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import (
    BillingError,
    PaymentInstrumentExpired,
    PaymentInstrumentInactive,
    PaymentInstrumentNotFound,
    PaymentInstrumentRailMismatch,
)
from billing.domain.execution import PaymentRail
from billing.instruments.cards import is_expired
from billing.instruments.model import InstrumentStatus, InstrumentType, chargeable_rail, is_instrument_id, shown_id
from billing.rails.ports import PaymentProvider, ProviderCharge, ProviderRefund
from billing.rails.results import Decision, ProviderError, RefundResult, StatusCheck, SubmitResult

RESOURCE_TYPE: Final = "payment_instrument"
CHARGE_PURPOSE: Final = "charge"
# Codes a provider's decision table already knows: a charge whose instrument has no token at this provider can never
# be made (fail), and a token that could not be looked up is a transient fault on our side (retry).
NO_PROVIDER_TOKEN_CODE: Final = "payment_method_unsupported"
LOOKUP_FAILED_CODE: Final = "provider_unavailable"

_FOR_CHARGE = "select * from billing.payment_instrument_for_charge(%s, %s)"
_PROVIDER_TOKEN = "select billing.payment_instrument_provider_token(%s, %s, %s) as token"
_PROVIDERS = "select billing.payment_instrument_providers(%s, %s) as providers"

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """Who wants to charge which instrument, for which entity contract, over which rail."""

    tenant_id: UUID
    instrument_id: str
    entity_contract_id: str
    rail: PaymentRail
    actor: str
    correlation_id: str | None
    source: str | None = None


class ChargeableInstruments:
    """The execute function's check of an instrument, audited (PCI DSS 10.2.1.1: every use of cardholder data)."""

    def __init__(self, conn: Connection, *, source: str | None = None, clock: Clock = _utc_now) -> None:
        self._conn = conn
        # Where the use comes from, for the audit entry (the function's name).
        self._source = source
        self._clock = clock

    def authorize_charge(self, request: ChargeRequest) -> frozenset[str]:
        """The providers holding a token for the instrument, if it may be charged now (routing reads only that,
        never a token); raise the reason otherwise. Nothing but the audit entry is written either way, and the entry
        commits even when the charge is refused."""
        with tenant_transaction(self._conn, request.tenant_id):
            row = self._conn.execute(_FOR_CHARGE, [request.tenant_id, request.instrument_id]).fetchone()
            refusal = self._refusal(request, row)
            held = (
                None
                if refusal
                else self._conn.execute(_PROVIDERS, [request.tenant_id, request.instrument_id]).fetchone()
            )
            record_audit_event(
                self._conn,
                AuditEvent(
                    event_type=AuditEventType.INSTRUMENT_USED_IN_CHARGE,
                    outcome=AuditOutcome.DENIED if refusal else AuditOutcome.GRANTED,
                    actor=request.actor,
                    tenant_id=request.tenant_id,
                    resource_type=RESOURCE_TYPE,
                    resource_id=shown_id(request.instrument_id, 200),
                    purpose=CHARGE_PURPOSE,
                    correlation_id=request.correlation_id,
                    source=request.source or self._source,
                    details={"reason": refusal.code} if refusal else {"rail": request.rail.value},
                ),
            )
        if refusal is not None:
            raise refusal
        return frozenset(held["providers"] if held and held["providers"] else ())

    def _refusal(self, request: ChargeRequest, row: dict[str, Any] | None) -> BillingError | None:
        shown = shown_id(request.instrument_id)
        # Another entity contract's instrument is as unknown as another tenant's.
        if row is None or row["entity_contract_id"] != request.entity_contract_id:
            return PaymentInstrumentNotFound(f"payment instrument {shown} not found", instrument_id=shown)
        status = InstrumentStatus(row["status"])
        if status is InstrumentStatus.DEACTIVATED:
            return PaymentInstrumentInactive(f"payment instrument {shown} was deactivated", instrument_id=shown)
        expired = row["exp_month"] is not None and is_expired(row["exp_month"], row["exp_year"], self._clock())
        if status is InstrumentStatus.EXPIRED or expired:
            return PaymentInstrumentExpired(f"payment instrument {shown} has expired", instrument_id=shown)
        if chargeable_rail(InstrumentType(row["instrument_type"])) is not request.rail:
            return PaymentInstrumentRailMismatch(
                f"payment instrument {shown} is a {row['instrument_type']} and cannot be charged over "
                f"{request.rail.value}",
                instrument_id=shown,
            )
        return None


ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


class ProviderTokenLookup:
    """Finds the token a provider charges an instrument with, on a connection of its own per lookup (like the
    providers it serves, it runs between the engine's transactions, never inside one)."""

    def __init__(self, connections: ConnectionFactory) -> None:
        self._connections = connections

    def token_for(self, tenant_id: UUID, instrument_id: str, provider: str) -> str | None:
        with self._connections() as conn, tenant_transaction(conn, tenant_id):
            row = conn.execute(_PROVIDER_TOKEN, [tenant_id, instrument_id, provider]).fetchone()
        return row["token"] if row else None


class InstrumentTokenProvider:
    """A PaymentProvider that charges vault instruments by the provider's token for them.

    Anything that is not an instrument id (the sandbox's tok_visa, an IBAN token) passes through unchanged, so the
    demo's magic tokens keep working. An instrument without a token at this provider fails the charge for good.
    """

    def __init__(self, inner: PaymentProvider, tokens: ProviderTokenLookup) -> None:
        self._inner = inner
        self._tokens = tokens

    @property
    def name(self) -> str:
        return self._inner.name

    def submit(self, charge: ProviderCharge, idempotency_key: str) -> SubmitResult:
        instrument_id = charge.payment_instrument_id
        if not is_instrument_id(instrument_id):
            return self._inner.submit(charge, idempotency_key)
        assert instrument_id is not None
        try:
            token = self._tokens.token_for(charge.tenant_id, instrument_id, self._inner.name)
        except psycopg.Error:
            # Nothing was sent to the provider: nothing can have been charged.
            error = ProviderError(LOOKUP_FAILED_CODE, "the instrument's provider token could not be read")
            return SubmitResult.from_error(error, Decision.RETRY)
        if token is None:
            error = ProviderError(NO_PROVIDER_TOKEN_CODE, f"the instrument has no {self._inner.name} token")
            return SubmitResult.from_error(error, Decision.FAIL)
        return self._inner.submit(dataclasses.replace(charge, payment_instrument_id=token), idempotency_key)

    def check_status(self, *, provider_reference: str | None = None, idempotency_key: str | None = None) -> StatusCheck:
        return self._inner.check_status(provider_reference=provider_reference, idempotency_key=idempotency_key)

    def cancel(self, reference: str, idempotency_key: str) -> StatusCheck:
        return self._inner.cancel(reference, idempotency_key)

    def decision_for(self, error_code: str) -> Decision:
        return self._inner.decision_for(error_code)

    def for_tenant(self, tenant_id: UUID) -> PaymentProvider:
        inner = self._inner.for_tenant(tenant_id)
        return self if inner is self._inner else InstrumentTokenProvider(inner, self._tokens)

    @property
    def polls_status(self) -> bool:
        return self._inner.polls_status

    def refund(self, refund: ProviderRefund, idempotency_key: str) -> RefundResult:
        # A refund names the charge by the provider's reference: no instrument token is involved.
        return self._inner.refund(refund, idempotency_key)

    def check_refund(self, refund: ProviderRefund, *, refund_reference: str | None) -> RefundResult:
        return self._inner.check_refund(refund, refund_reference=refund_reference)
