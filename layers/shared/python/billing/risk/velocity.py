"""Velocity counted in the database: the attempt recorded and every counter of billing.risk.attributes read, in one
transaction serialised per key.

The transaction takes a transaction-scoped advisory lock on each key the attempt carries (tenant + instrument,
customer, device, IP; in a fixed order, so two assessments never wait on each other crosswise), inserts the
execution's attempt row (once: a resubmission finds it and is not counted again), and counts. A second assessment
on the same instrument waits for the first to commit and then counts it, so twenty parallel requests cannot all slip
under a limit of five. The database's clock is the clock (now(): the transaction's start, the same for every
counter of one assessment).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from psycopg import Cursor
from psycopg.rows import DictRow

from billing.db.connection import Connection
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator
from billing.risk.attributes import Attribute
from billing.risk.defaults import default_rule_set


@dataclass(frozen=True, slots=True)
class AttemptKeys:
    """What one attempt is counted by; device and IP only when the request carried them."""

    tenant_id: UUID
    execution_id: UUID
    instrument_key: str
    customer_key: str
    amount: Money
    rail: PaymentRail
    initiator: ChargeInitiator
    device_fingerprint: str | None = None
    ip_address: str | None = None

    @property
    def device_key(self) -> str | None:
        return _digest(self.tenant_id, "device", self.device_fingerprint)

    @property
    def ip_key(self) -> str | None:
        return _digest(self.tenant_id, "ip", self.ip_address)


@dataclass(frozen=True, slots=True)
class Velocity:
    """The counters of billing.risk.attributes.RiskFacts, as counted for one attempt (it included)."""

    attempts_per_instrument_1h: int
    attempts_per_instrument_24h: int
    declines_per_instrument_24h: int
    attempts_per_customer_1h: int
    amount_per_customer_24h: Money
    distinct_instruments_per_customer_24h: int
    distinct_customers_per_instrument_24h: int
    distinct_customers_per_device_24h: int | None
    attempts_per_ip_1h: int | None
    attempts_per_tenant_1m: int | None  # None: not counted (no rule reads it)
    # True when this call recorded the attempt; False when the execution's attempt was recorded before (a retry).
    recorded: bool
    # The database's clock at the count (the transaction's start): instrument ages are measured by it too. Not one
    # of the counts, so two Velocity values with the same counts are equal whenever they were counted.
    counted_at: datetime = field(compare=False, default=datetime.min)


def _digest(tenant_id: UUID, kind: str, value: str | None) -> str | None:
    """A stable digest of a client-supplied identifier: velocity needs equality, never the value itself."""
    if value is None:
        return None
    return hashlib.sha256(f"{tenant_id}:{kind}:{value}".encode()).hexdigest()


_LOCK = """
select pg_advisory_xact_lock(k) from (
    select hashtextextended(%(tenant)s::text || ':' || key, 0) as k from unnest(%(keys)s::text[]) as key
) locks order by k
"""

# Locks, records (if asked) and counts: sql/20261218_billing_risk_velocity_counts.sql. Every window counts this
# attempt exactly once, also when its row is older than the window (a resubmission's row is as old as its first
# assessment); no row when the execution has no attempt row.
_COUNT: Final = """
select * from billing.count_risk_attempt(
    %(tenant)s, %(execution)s, %(record)s, %(instrument)s, %(customer)s, %(device)s, %(ip)s, %(amount)s,
    %(currency)s, %(rail)s, %(initiator)s, %(keys)s::text[], %(count_tenant)s
)
"""
# The tenant-wide counter is counted when the tenant's current rule set (read in the same statement, so the same
# snapshot as the rule set the caller evaluates) mentions it anywhere; the test is textual, so it may count when no
# condition reads it (a description naming it), never the other way round. No stored rule set: the defaults decide.
_COUNT_AS_RULES_NEED: Final = _COUNT.replace(
    "%(count_tenant)s",
    "coalesce((select position('" + Attribute.ATTEMPTS_PER_TENANT_1M.value + "' in s.rules::text) > 0"
    " from billing.risk_rule_sets s where s.tenant_id = %(tenant)s order by s.version desc limit 1),"
    " %(count_tenant)s)",
)
_DEFAULTS_READ_TENANT: Final = default_rule_set().reads(Attribute.ATTEMPTS_PER_TENANT_1M)


class VelocityCounter:
    """Records an attempt and counts its velocity, on the caller's connection (its own transaction)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def count(self, keys: AttemptKeys) -> Velocity:
        """Record the execution's attempt (once: a resubmission finds its row) and count its velocity."""
        with tenant_transaction(self._conn, keys.tenant_id):
            counted = queue_count(self._conn, keys, record=True).velocity()
        assert counted is not None, "an attempt recorded now is there to count"
        return counted

    def count_recorded(self, keys: AttemptKeys) -> Velocity | None:
        """Count a resubmission by the execution's existing row, recording nothing; None if it has none (an
        execution never assessed)."""
        with tenant_transaction(self._conn, keys.tenant_id):
            return queue_count(self._conn, keys, record=False).velocity()


@dataclass(frozen=True, slots=True)
class QueuedCount:
    """The lock, the attempt row and the count, sent; their answers read when the caller first needs them."""

    keys: AttemptKeys
    counted: Cursor[DictRow]

    def velocity(self) -> Velocity | None:
        row = self.counted.fetchone()
        if row is None:
            # Counted "from" the execution's own row: none, nothing to count the attempt by.
            return None
        return Velocity(
            attempts_per_instrument_1h=row["attempts_per_instrument_1h"],
            attempts_per_instrument_24h=row["attempts_per_instrument_24h"],
            declines_per_instrument_24h=row["declines_per_instrument_24h"],
            attempts_per_customer_1h=row["attempts_per_customer_1h"],
            amount_per_customer_24h=Money(int(row["amount_per_customer_24h"]), self.keys.amount.currency),
            distinct_instruments_per_customer_24h=row["distinct_instruments_per_customer_24h"],
            distinct_customers_per_instrument_24h=row["distinct_customers_per_instrument_24h"],
            distinct_customers_per_device_24h=row["distinct_customers_per_device_24h"],
            attempts_per_ip_1h=row["attempts_per_ip_1h"],
            attempts_per_tenant_1m=row["attempts_per_tenant_1m"],
            recorded=row["recorded"],
            counted_at=row["counted_at"],
        )


def lock_keys(keys: AttemptKeys) -> list[str]:
    """The advisory-lock keys of an attempt, as _LOCK hashes them with the tenant."""
    return [
        instrument_lock_key(keys.instrument_key),
        f"customer:{keys.customer_key}",
        *([f"device:{keys.device_key}"] if keys.device_key else []),
        *([f"ip:{keys.ip_key}"] if keys.ip_key else []),
    ]


def instrument_lock_key(instrument_key: str) -> str:
    return f"instrument:{instrument_key}"


def lock_instrument(conn: Connection, tenant_id: UUID, instrument_key: str) -> None:
    """Take (queue, in a pipeline) the instrument's advisory lock: counters of the instrument read after it and
    written before the transaction ends are serialised with every assessment of the same instrument."""
    conn.execute(_LOCK, {"tenant": tenant_id, "keys": [instrument_lock_key(instrument_key)]})


def queue_count(conn: Connection, keys: AttemptKeys, *, record: bool, as_rules_need: bool = False) -> QueuedCount:
    """Send the locks, the attempt's row (if `record`) and the count on `conn`, already in the tenant's scope.

    Nothing is read back here: in a pipeline the call travels with whatever the caller sends next, and the answer
    arrives in the same round trip when QueuedCount.velocity() is first called. `as_rules_need`: count the
    tenant-wide counter only if the tenant's rule set reads it (the gate); else always (callers that show counts).
    """
    params: dict[str, Any] = {
        "tenant": keys.tenant_id,
        "execution": keys.execution_id,
        "instrument": keys.instrument_key,
        "customer": keys.customer_key,
        "device": keys.device_key,
        "ip": keys.ip_key,
        "amount": keys.amount.amount,
        "currency": keys.amount.currency,
        "rail": keys.rail.value,
        "initiator": keys.initiator.value,
        "keys": lock_keys(keys),
        "record": record,
        "count_tenant": _DEFAULTS_READ_TENANT if as_rules_need else True,
    }
    return QueuedCount(keys, conn.execute(_COUNT_AS_RULES_NEED if as_rules_need else _COUNT, params))
