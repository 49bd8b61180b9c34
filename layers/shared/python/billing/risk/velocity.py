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
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from billing.db.connection import Connection
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import PaymentRail
from billing.domain.money import Money
from billing.rails.ports import ChargeInitiator


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
    attempts_per_tenant_1m: int
    # True when this call recorded the attempt; False when the execution's attempt was recorded before (a retry).
    recorded: bool


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

_RECORD = """
insert into billing.risk_attempts (
    tenant_id, execution_id, instrument_key, customer_key, device_key, ip_key, amount, currency, rail, initiator
) values (
    %(tenant)s, %(execution)s, %(instrument)s, %(customer)s, %(device)s, %(ip)s, %(amount)s, %(currency)s,
    %(rail)s, %(initiator)s
)
on conflict (tenant_id, execution_id) do nothing
returning execution_id
"""

# Every window's rows, and this execution's own row once more when it lies outside the window (a resubmission's row
# is as old as its first assessment): "this attempt included, exactly once".
_COUNT: Final = """
with mine as (
    select * from billing.risk_attempts where tenant_id = %(tenant)s and execution_id = %(execution)s
), by_instrument as (
    select r.execution_id, r.recorded_at, r.declined, r.customer_key from billing.risk_attempts r
     where r.tenant_id = %(tenant)s and r.instrument_key = %(instrument)s
       and r.recorded_at > now() - interval '24 hours'
), by_customer as (
    select r.execution_id, r.recorded_at, r.instrument_key, r.amount, r.currency from billing.risk_attempts r
     where r.tenant_id = %(tenant)s and r.customer_key = %(customer)s and r.recorded_at > now() - interval '24 hours'
), by_device as (
    select r.customer_key from billing.risk_attempts r
     where %(device)s::text is not null and r.tenant_id = %(tenant)s and r.device_key = %(device)s
       and r.recorded_at > now() - interval '24 hours'
), by_ip as (
    select r.execution_id from billing.risk_attempts r
     where %(ip)s::text is not null and r.tenant_id = %(tenant)s and r.ip_key = %(ip)s
       and r.recorded_at > now() - interval '1 hour'
), outside as (
    select (m.recorded_at <= now() - interval '1 minute')::int as m1,
           (m.recorded_at <= now() - interval '1 hour')::int as h1,
           (m.recorded_at <= now() - interval '24 hours')::int as h24
      from mine m
)
select
    (select count(*) from by_instrument where recorded_at > now() - interval '1 hour') + o.h1
        as attempts_per_instrument_1h,
    (select count(*) from by_instrument) + o.h24 as attempts_per_instrument_24h,
    (select count(*) from by_instrument where declined) as declines_per_instrument_24h,
    (select count(*) from by_customer where recorded_at > now() - interval '1 hour') + o.h1
        as attempts_per_customer_1h,
    (select coalesce(sum(amount), 0) from by_customer where currency = %(currency)s)
        + case when o.h24 = 1 then %(amount)s else 0 end as amount_per_customer_24h,
    (select count(*) from (select instrument_key from by_customer union select %(instrument)s) k)
        as distinct_instruments_per_customer_24h,
    (select count(*) from (select customer_key from by_instrument union select %(customer)s) k)
        as distinct_customers_per_instrument_24h,
    case when %(device)s::text is null then null
         else (select count(*) from (select customer_key from by_device union select %(customer)s) k) end
        as distinct_customers_per_device_24h,
    case when %(ip)s::text is null then null
         else (select count(*) from by_ip)
              + (select count(*) from mine m
                  where m.recorded_at <= now() - interval '1 hour' or m.ip_key is distinct from %(ip)s) end
        as attempts_per_ip_1h,
    (select count(*) from billing.risk_attempts r
      where r.tenant_id = %(tenant)s and r.recorded_at > now() - interval '1 minute') + o.m1 as attempts_per_tenant_1m
  from outside o
"""


class VelocityCounter:
    """Records an attempt and counts its velocity, on the caller's connection (its own transaction)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def count(self, keys: AttemptKeys) -> Velocity:
        """Record the execution's attempt (once: a resubmission finds its row) and count its velocity."""
        counted = self._count(keys, record=True)
        assert counted is not None, "an attempt recorded now is there to count"
        return counted

    def count_recorded(self, keys: AttemptKeys) -> Velocity | None:
        """Count a resubmission by the execution's existing row, recording nothing; None if it has none (an
        execution never assessed)."""
        return self._count(keys, record=False)

    def _count(self, keys: AttemptKeys, *, record: bool) -> Velocity | None:
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
            "keys": [
                f"instrument:{keys.instrument_key}",
                f"customer:{keys.customer_key}",
                *([f"device:{keys.device_key}"] if keys.device_key else []),
                *([f"ip:{keys.ip_key}"] if keys.ip_key else []),
            ],
        }
        with tenant_transaction(self._conn, keys.tenant_id):
            self._conn.execute(_LOCK, params)
            recorded = record and self._conn.execute(_RECORD, params).fetchone() is not None
            row = self._conn.execute(_COUNT, params).fetchone()
        if row is None:
            # Counted "from" the execution's own row (the query's `mine`): none, nothing to count the attempt by.
            assert not recorded, "a row recorded now is there to count"
            return None
        return Velocity(
            attempts_per_instrument_1h=row["attempts_per_instrument_1h"],
            attempts_per_instrument_24h=row["attempts_per_instrument_24h"],
            declines_per_instrument_24h=row["declines_per_instrument_24h"],
            attempts_per_customer_1h=row["attempts_per_customer_1h"],
            amount_per_customer_24h=Money(int(row["amount_per_customer_24h"]), keys.amount.currency),
            distinct_instruments_per_customer_24h=row["distinct_instruments_per_customer_24h"],
            distinct_customers_per_instrument_24h=row["distinct_customers_per_instrument_24h"],
            distinct_customers_per_device_24h=row["distinct_customers_per_device_24h"],
            attempts_per_ip_1h=row["attempts_per_ip_1h"],
            attempts_per_tenant_1m=row["attempts_per_tenant_1m"],
            recorded=recorded,
        )
