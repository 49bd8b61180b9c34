"""PostgreSQL repository for payment instruments over billing.contracts and billing.contract_term_attrs.

The vault function's role (billing_vault) is the only one with privileges on these tables. Every method runs in a
tenant-scoped transaction, or in a savepoint of the caller's when one is open, so the vault composes an
instrument's creation with its card secret and its audit entry in one transaction. A term change is one
statement: it closes the open row and opens the new one at the same instant, so the history has no gap and no
overlap (the partial unique index keeps one open row per key).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import PaymentInstrumentNotFound
from billing.instruments.model import (
    CONTRACT_TYPE,
    InstrumentStatus,
    InstrumentUpdate,
    PaymentInstrument,
    instrument_id_of,
    shown_id,
    status_change,
    term_changes,
)

# A contract with its open terms as one JSON object.
_SELECT = """
select c.*, coalesce(
           (select jsonb_object_agg(a.attr_key, a.attr_value) from billing.contract_term_attrs a
             where a.tenant_id = c.tenant_id and a.contract_id = c.id and a.valid_to is null),
           '{}'::jsonb) as terms
  from billing.contracts c
"""
_GET = _SELECT + " where c.tenant_id = %s and c.id = %s and c.contract_type = 'payment_instrument'"
_BY_KEY = _SELECT + " where c.tenant_id = %s and c.contract_type = 'payment_instrument' and c.idempotency_key = %s"
_LIST = (
    _SELECT
    + """
 where c.tenant_id = %(tenant_id)s and c.contract_type = 'payment_instrument'
   and c.entity_contract_id = %(entity_contract_id)s
   and (%(status)s::text is null or c.status = %(status)s)
   and (%(after_created_at)s::timestamptz is null or (c.created_at, c.id) < (%(after_created_at)s, %(after_id)s))
 order by c.created_at desc, c.id desc
 limit %(limit)s
"""
)

# Layer 2 of idempotency, as for executions: the loser of a concurrent create inserts nothing.
_INSERT_CONTRACT = """
insert into billing.contracts (tenant_id, id, contract_type, entity_contract_id, idempotency_key, request_fingerprint,
                               valid_from, created_at, updated_at)
select %(tenant_id)s, %(id)s, %(contract_type)s, %(entity_contract_id)s, %(idempotency_key)s,
       %(request_fingerprint)s, clock.at, clock.at, clock.at
  from (select clock_timestamp() as at) clock
on conflict (tenant_id, contract_type, idempotency_key) where idempotency_key is not null do nothing
returning id, valid_from
"""

_OPEN_TERMS = """
insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value, valid_from)
select %(tenant_id)s, %(contract_id)s, t.key, t.value, %(at)s
  from jsonb_each_text(%(terms)s) t
"""

# A change closes the open rows whose value differs and opens the new values at the same instant (the new row's
# valid_from is the old one's valid_to), in two statements of one transaction: closing first, so the one-open-row
# index never sees two. An unchanged value is left as it is (no new period for nothing).
_CLOSE_CHANGED_TERMS = """
update billing.contract_term_attrs a
   set valid_to = %(at)s
  from jsonb_each_text(%(terms)s) w
 where a.tenant_id = %(tenant_id)s and a.contract_id = %(contract_id)s and a.attr_key = w.key
   and a.valid_to is null and a.attr_value <> w.value
"""
_OPEN_CHANGED_TERMS = """
insert into billing.contract_term_attrs (tenant_id, contract_id, attr_key, attr_value, valid_from)
select %(tenant_id)s, %(contract_id)s, w.key, w.value, %(at)s
  from jsonb_each_text(%(terms)s) w
 where not exists (
     select 1 from billing.contract_term_attrs a
      where a.tenant_id = %(tenant_id)s and a.contract_id = %(contract_id)s and a.attr_key = w.key
        and a.valid_to is null)
"""

_END_CONTRACT = """
update billing.contracts
   set status = %(status)s, valid_to = greatest(%(at)s, valid_from), updated_at = clock_timestamp()
 where tenant_id = %(tenant_id)s and id = %(contract_id)s and status = 'active'
returning id
"""

_TOUCH = "update billing.contracts set updated_at = %(at)s where tenant_id = %(tenant_id)s and id = %(contract_id)s"

_HISTORY = """
select attr_key, attr_value, valid_from, valid_to from billing.contract_term_attrs
 where tenant_id = %s and contract_id = %s
 order by attr_key, valid_from
"""

_CLOCK = "select clock_timestamp() as at"


@dataclass(frozen=True, slots=True)
class NewInstrument:
    """What creating an instrument stores: its owner and its first terms."""

    entity_contract_id: str
    terms: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TermPeriod:
    """One row of an instrument's term history."""

    key: str
    value: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class InstrumentListQuery:
    entity_contract_id: str
    status: InstrumentStatus | None = None
    after: tuple[datetime, UUID] | None = None
    limit: int = 20


def instrument_from_row(row: Mapping[str, Any]) -> PaymentInstrument:
    return PaymentInstrument(
        tenant_id=row["tenant_id"],
        id=row["id"],
        entity_contract_id=row["entity_contract_id"],
        status=InstrumentStatus(row["status"]),
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        terms=dict(row["terms"] or {}),
    )


class InstrumentRepository:
    """Instruments of one connection (the vault function's, as billing_vault)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, tenant_id: UUID, instrument_id: str) -> PaymentInstrument | None:
        rows = self._run(tenant_id, _GET, [tenant_id, instrument_id])
        return instrument_from_row(rows[0]) if rows else None

    def require(self, tenant_id: UUID, instrument_id: str) -> PaymentInstrument:
        instrument = self.get(tenant_id, instrument_id)
        if instrument is None:
            raise PaymentInstrumentNotFound(f"payment instrument {shown_id(instrument_id)} not found")
        return instrument

    def find_by_idempotency_key(self, tenant_id: UUID, key: str) -> tuple[PaymentInstrument, str] | None:
        """The instrument a key created and the fingerprint of the request that created it."""
        rows = self._run(tenant_id, _BY_KEY, [tenant_id, key])
        return (instrument_from_row(rows[0]), rows[0]["request_fingerprint"]) if rows else None

    def list_page(self, tenant_id: UUID, query: InstrumentListQuery) -> tuple[list[PaymentInstrument], bool]:
        """One page of an entity contract's instruments, newest first, and whether more follow."""
        params = {
            "tenant_id": tenant_id,
            "entity_contract_id": query.entity_contract_id,
            "status": query.status.value if query.status else None,
            "after_created_at": query.after[0] if query.after else None,
            "after_id": instrument_id_of(query.after[1]) if query.after else None,
            "limit": query.limit + 1,
        }
        rows = self._run(tenant_id, _LIST, params)
        return [instrument_from_row(row) for row in rows[: query.limit]], len(rows) > query.limit

    def history(self, tenant_id: UUID, instrument_id: str) -> list[TermPeriod]:
        """Every period of every term, by key and time."""
        rows = self._run(tenant_id, _HISTORY, [tenant_id, instrument_id])
        return [TermPeriod(r["attr_key"], r["attr_value"], r["valid_from"], r["valid_to"]) for r in rows]

    # -- writes ------------------------------------------------------------------------------------------

    def insert(
        self,
        tenant_id: UUID,
        instrument_id: str,
        new: NewInstrument,
        *,
        idempotency_key: str | None,
        request_fingerprint: str | None,
    ) -> PaymentInstrument | None:
        """Create the contract and its first terms; None (nothing written) if another request holds the key."""
        with translated_guard_errors(), tenant_transaction(self._conn, tenant_id):
            inserted = self._conn.execute(
                _INSERT_CONTRACT,
                {
                    "tenant_id": tenant_id,
                    "id": instrument_id,
                    "contract_type": CONTRACT_TYPE,
                    "entity_contract_id": new.entity_contract_id,
                    "idempotency_key": idempotency_key,
                    "request_fingerprint": request_fingerprint,
                },
            ).fetchone()
            if inserted is None:
                return None
            self._conn.execute(
                _OPEN_TERMS,
                {
                    "tenant_id": tenant_id,
                    "contract_id": instrument_id,
                    "terms": Jsonb(dict(new.terms)),
                    "at": inserted["valid_from"],
                },
            )
            row = self._conn.execute(_GET, [tenant_id, instrument_id]).fetchone()
        assert row is not None
        return instrument_from_row(row)

    def apply(self, tenant_id: UUID, instrument_id: str, update: InstrumentUpdate) -> PaymentInstrument:
        """Apply one typed update. A term change closes the open rows it replaces and opens new ones; an end of
        life (Expired, Deactivated) moves an active contract and sets valid_to, and leaves an ended one as it is."""
        with translated_guard_errors(), tenant_transaction(self._conn, tenant_id):
            clock = self._conn.execute(_CLOCK).fetchone()
            assert clock is not None
            params: dict[str, Any] = {"tenant_id": tenant_id, "contract_id": instrument_id, "at": clock["at"]}
            ending = status_change(update)
            if ending is not None:
                status, at = ending
                self._conn.execute(_END_CONTRACT, {**params, "status": status.value, "at": at})
            else:
                params["terms"] = Jsonb(term_changes(update))
                self._conn.execute(_CLOSE_CHANGED_TERMS, params)
                if self._conn.execute(_OPEN_CHANGED_TERMS, params).rowcount:
                    self._conn.execute(_TOUCH, params)
            row = self._conn.execute(_GET, [tenant_id, instrument_id]).fetchone()
        if row is None:
            raise PaymentInstrumentNotFound(f"payment instrument {shown_id(instrument_id)} not found")
        return instrument_from_row(row)

    def _run(self, tenant_id: UUID, statement: str, params: Any) -> list[dict[str, Any]]:
        with tenant_transaction(self._conn, tenant_id):
            cursor = self._conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
