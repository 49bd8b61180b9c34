"""PostgreSQL side of 3-D Secure: billing.authentications (one per execution) and the sandbox ACS's open challenges.

The authentication value is never written: only its SHA-256 digest, which lets the value be used exactly once
(use_value) and nothing else. The database refuses any state change the EMV states do not allow (BE020).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID, uuid4

from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.recorder import record_audit_event
from billing.authentication.sandbox_acs import ChallengeSession
from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import system_transaction, tenant_transaction
from billing.domain.money import Money

OPEN_STATES: Final = ("started", "challenge_required")


def value_digest(authentication_value: str) -> str:
    return hashlib.sha256(authentication_value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class AuthenticationRecord:
    """A billing.authentications row."""

    tenant_id: UUID
    id: UUID
    execution_id: UUID
    provider: str
    performed_by: str
    instrument_key: str
    amount: Money
    scheme: str | None
    state: str
    exemption: str | None
    message_version: str | None
    three_ds_server_trans_id: str | None
    acs_trans_id: str | None
    ds_trans_id: str | None
    trans_status: str | None
    trans_status_reason: str | None
    eci: str | None
    challenge_indicator: str | None
    challenge_url: str | None
    return_url: str | None
    value_used: bool
    liability_shift: bool | None
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    finished_at: datetime | None

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES


def record_of(row: dict[str, Any]) -> AuthenticationRecord:
    return AuthenticationRecord(
        tenant_id=row["tenant_id"],
        id=row["id"],
        execution_id=row["execution_id"],
        provider=row["provider"],
        performed_by=row["performed_by"],
        instrument_key=row["instrument_key"],
        amount=Money(row["amount"], row["currency"]),
        scheme=row["scheme"],
        state=row["state"],
        exemption=row["exemption"],
        message_version=row["message_version"],
        three_ds_server_trans_id=row["three_ds_server_trans_id"],
        acs_trans_id=row["acs_trans_id"],
        ds_trans_id=row["ds_trans_id"],
        trans_status=row["trans_status"],
        trans_status_reason=row["trans_status_reason"],
        eci=row["eci"],
        challenge_indicator=row["challenge_indicator"],
        challenge_url=row["challenge_url"],
        return_url=row["return_url"],
        value_used=row["value_used_at"] is not None,
        liability_shift=row["liability_shift"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        finished_at=row["finished_at"],
    )


@dataclass(frozen=True, slots=True)
class NewAuthentication:
    tenant_id: UUID
    execution_id: UUID
    provider: str
    performed_by: str
    instrument_key: str
    amount: Money
    scheme: str | None = None
    state: str = "started"
    exemption: str | None = None
    return_url: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where an authentication ends (or waits, for challenge_required), as the EMV messages said it."""

    state: str
    message_version: str | None = None
    three_ds_server_trans_id: str | None = None
    acs_trans_id: str | None = None
    ds_trans_id: str | None = None
    trans_status: str | None = None
    trans_status_reason: str | None = None
    eci: str | None = None
    challenge_indicator: str | None = None
    challenge_url: str | None = None
    value_digest: str | None = None
    liability_shift: bool | None = None
    scheme: str | None = None
    expires_at: datetime | None = None


_INSERT = """
insert into billing.authentications (
    tenant_id, id, execution_id, provider, performed_by, instrument_key, amount, currency, scheme, state, exemption,
    return_url, finished_at
) values (
    %(tenant)s, %(id)s, %(execution)s, %(provider)s, %(performed_by)s, %(instrument_key)s, %(amount)s, %(currency)s,
    %(scheme)s, %(state)s, %(exemption)s, %(return_url)s,
    case when %(state)s in ('started', 'challenge_required') then null else clock_timestamp() end
)
on conflict (tenant_id, execution_id) do nothing
returning *
"""
# An exemption is recorded in a transaction that sends its event in the same round trip: a row already there must
# abort it (the event with it), not pass as "inserted".
_INSERT_NEW = _INSERT.replace("on conflict (tenant_id, execution_id) do nothing\n", "")
_OF_EXECUTION = "select * from billing.authentications where tenant_id = %s and execution_id = %s"
_GET = "select * from billing.authentications where tenant_id = %s and id = %s"
# Guarded on the open states: of two writers ending one authentication, the second changes nothing.
_MOVE = """
update billing.authentications set
    state = %(state)s,
    message_version = coalesce(%(message_version)s, message_version),
    three_ds_server_trans_id = coalesce(%(three_ds_server_trans_id)s, three_ds_server_trans_id),
    acs_trans_id = coalesce(%(acs_trans_id)s, acs_trans_id),
    ds_trans_id = coalesce(%(ds_trans_id)s, ds_trans_id),
    trans_status = coalesce(%(trans_status)s, trans_status),
    trans_status_reason = coalesce(%(trans_status_reason)s, trans_status_reason),
    eci = coalesce(%(eci)s, eci),
    challenge_indicator = coalesce(%(challenge_indicator)s, challenge_indicator),
    challenge_url = coalesce(%(challenge_url)s, challenge_url),
    authentication_value_digest = coalesce(%(value_digest)s, authentication_value_digest),
    liability_shift = %(liability_shift)s,
    scheme = coalesce(%(scheme)s, scheme),
    expires_at = coalesce(%(expires_at)s, expires_at),
    updated_at = clock_timestamp(),
    finished_at = case when %(state)s in ('started', 'challenge_required') then null else clock_timestamp() end
 where tenant_id = %(tenant)s and id = %(id)s and state in ('started', 'challenge_required')
returning *
"""
_USE_VALUE = """
update billing.authentications set value_used_at = clock_timestamp(), updated_at = clock_timestamp()
 where tenant_id = %s and id = %s and state = 'succeeded' and authentication_value_digest = %s
   and value_used_at is null
returning id
"""
# The PSD2 low-value counter (RTS art. 16): charges exempted as low value on this instrument since its last
# successful authentication.
_LOW_VALUE_SINCE_LAST = """
select count(*) as charges, coalesce(sum(amount), 0) as total from billing.authentications a
 where a.tenant_id = %(tenant)s and a.instrument_key = %(instrument)s and a.exemption = 'low_value'
   and a.currency = %(currency)s
   and a.created_at > coalesce((
       select max(s.finished_at) from billing.authentications s
        where s.tenant_id = %(tenant)s and s.instrument_key = %(instrument)s and s.state = 'succeeded'
   ), '-infinity')
"""
_OVERDUE = """
select * from billing.authentications
 where state in ('started', 'challenge_required') and expires_at < coalesce(%s, clock_timestamp())
 order by expires_at limit %s
"""


class AuthenticationRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def start(self, new: NewAuthentication) -> tuple[AuthenticationRecord, bool]:
        """The execution's authentication, inserted now (True) or as an earlier call left it (False)."""
        params = _insert_params(new, uuid4())
        with translated_guard_errors(), tenant_transaction(self._conn, new.tenant_id):
            row = self._conn.execute(_INSERT, params).fetchone()
            if row is None:
                row = self._conn.execute(_OF_EXECUTION, [new.tenant_id, new.execution_id]).fetchone()
                assert row is not None, "the conflicting row exists"
                return record_of(row), False
        return record_of(row), True

    def of_execution(self, tenant_id: UUID, execution_id: UUID) -> AuthenticationRecord | None:
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_OF_EXECUTION, [tenant_id, execution_id]).fetchone()
        return record_of(row) if row else None

    def get(self, tenant_id: UUID, authentication_id: UUID) -> AuthenticationRecord | None:
        with tenant_transaction(self._conn, tenant_id):
            row = self._conn.execute(_GET, [tenant_id, authentication_id]).fetchone()
        return record_of(row) if row else None

    def move(self, record: AuthenticationRecord, outcome: Outcome) -> AuthenticationRecord | None:
        """Record the outcome; None if the authentication had already ended (another writer got there first)."""
        params = {
            "tenant": record.tenant_id,
            "id": record.id,
            "state": outcome.state,
            "message_version": outcome.message_version,
            "three_ds_server_trans_id": outcome.three_ds_server_trans_id,
            "acs_trans_id": outcome.acs_trans_id,
            "ds_trans_id": outcome.ds_trans_id,
            "trans_status": outcome.trans_status,
            "trans_status_reason": outcome.trans_status_reason,
            "eci": outcome.eci,
            "challenge_indicator": outcome.challenge_indicator,
            "challenge_url": outcome.challenge_url,
            "value_digest": outcome.value_digest,
            "liability_shift": outcome.liability_shift,
            "scheme": outcome.scheme,
            "expires_at": outcome.expires_at,
        }
        with translated_guard_errors(), tenant_transaction(self._conn, record.tenant_id):
            row = self._conn.execute(_MOVE, params).fetchone()
        return record_of(row) if row else None

    def use_value(self, record: AuthenticationRecord, authentication_value: str, *, actor: str) -> bool:
        """Spend the authentication value on the charge; False if it was spent before or is not this one's. Audited
        like a use of cardholder data (the entry names the authentication, never the value), granted or denied."""
        with translated_guard_errors(), tenant_transaction(self._conn, record.tenant_id):
            row = self._conn.execute(
                _USE_VALUE, [record.tenant_id, record.id, value_digest(authentication_value)]
            ).fetchone()
            record_audit_event(
                self._conn,
                AuditEvent(
                    event_type=AuditEventType.AUTHENTICATION_VALUE_USED,
                    outcome=AuditOutcome.GRANTED if row is not None else AuditOutcome.DENIED,
                    actor=actor,
                    tenant_id=record.tenant_id,
                    resource_type="authentication",
                    resource_id=str(record.id),
                    purpose="charge",
                    details={"execution_id": str(record.execution_id)},
                ),
            )
        return row is not None

    def low_value_usage(self, tenant_id: UUID, instrument_key: str, currency: str) -> tuple[int, int]:
        """(charges, total minor units) exempted as low value on the instrument since its last authentication."""
        with tenant_transaction(self._conn, tenant_id):
            return low_value_usage_of(queue_low_value_usage(self._conn, tenant_id, instrument_key, currency))

    def queue_new(self, new: NewAuthentication, authentication_id: UUID) -> Cursor[DictRow]:
        """Send the insert of the execution's authentication on the connection, already in the tenant's scope; a
        row already there fails the transaction (UniqueViolation) instead of being returned."""
        return self._conn.execute(_INSERT_NEW, _insert_params(new, authentication_id))

    def overdue(self, limit: int = 100, *, as_of: datetime | None = None) -> list[AuthenticationRecord]:
        """Open authentications past their deadline at `as_of` (None: the database's clock), every tenant's."""
        with system_transaction(self._conn):
            rows = self._conn.execute(_OVERDUE, [as_of, limit]).fetchall()
        return [record_of(row) for row in rows]


def _insert_params(new: NewAuthentication, authentication_id: UUID) -> dict[str, Any]:
    return {
        "tenant": new.tenant_id,
        "id": authentication_id,
        "execution": new.execution_id,
        "provider": new.provider,
        "performed_by": new.performed_by,
        "instrument_key": new.instrument_key,
        "amount": new.amount.amount,
        "currency": new.amount.currency,
        "scheme": new.scheme,
        "state": new.state,
        "exemption": new.exemption,
        "return_url": new.return_url,
    }


def queue_low_value_usage(conn: Connection, tenant_id: UUID, instrument_key: str, currency: str) -> Cursor[DictRow]:
    """Ask, on `conn` already in the tenant's scope, what low_value_usage_of reads."""
    return conn.execute(
        _LOW_VALUE_SINCE_LAST, {"tenant": tenant_id, "instrument": instrument_key, "currency": currency}
    )


def low_value_usage_of(cursor: Cursor[DictRow]) -> tuple[int, int]:
    """(charges, total minor units) exempted as low value on the instrument since its last authentication."""
    row = cursor.fetchone()
    assert row is not None, "an aggregate returns its row"
    return int(row["charges"]), int(row["total"])


# --- The sandbox ACS's side ------------------------------------------------------------------------------------------

_ACS_INSERT = """
insert into sandbox_provider.acs_challenges (
    acs_trans_id, tenant_id, authentication_id, merchant_name, amount, currency, session, status
) values (%s, %s, %s, %s, %s, %s, %s, %s)
"""
_ACS_GET = "select * from sandbox_provider.acs_challenges where acs_trans_id = %s"
_ACS_SAVE = """
update sandbox_provider.acs_challenges set session = %s, status = %s, updated_at = clock_timestamp()
 where acs_trans_id = %s and status = 'open'
returning acs_trans_id
"""


@dataclass(frozen=True, slots=True)
class AcsChallenge:
    tenant_id: UUID
    authentication_id: UUID
    merchant_name: str
    amount: Money
    session: ChallengeSession


def _stored_session(session: ChallengeSession) -> dict[str, object]:
    # The value is handed on in the RReq the moment it is drawn; the ACS's own table never keeps it.
    document = session.to_dict()
    document["authentication_value"] = None
    return document


class AcsChallengeStore:
    """The sandbox ACS's challenges (the ACS is the issuer's system: its table sits in the sandbox's schema)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def open(self, challenge: AcsChallenge) -> None:
        session = challenge.session
        with self._conn.transaction():
            self._conn.execute(
                _ACS_INSERT,
                [
                    session.acs_trans_id,
                    challenge.tenant_id,
                    challenge.authentication_id,
                    challenge.merchant_name,
                    challenge.amount.amount,
                    challenge.amount.currency,
                    Jsonb(_stored_session(session)),
                    session.status.value,
                ],
            )

    def get(self, acs_trans_id: str) -> tuple[AcsChallenge, str] | None:
        """The challenge and its stored status; an ended one's session is as it was when it was last open."""
        with self._conn.transaction():
            row = self._conn.execute(_ACS_GET, [acs_trans_id]).fetchone()
        if row is None:
            return None
        stored = dict(row["session"])
        status = row["status"]
        session = ChallengeSession.from_dict(stored)
        challenge = AcsChallenge(
            row["tenant_id"], row["authentication_id"], row["merchant_name"], Money(row["amount"], row["currency"]),
            session,
        )  # fmt: skip
        return challenge, status

    def save(self, session: ChallengeSession) -> bool:
        """Keep the session's next state; False if it had ended meanwhile (a concurrent submission ended it)."""
        stored = _stored_session(session)
        if session.ended:
            # An ended session keeps its last open form and says how it ended; its value is gone with the RReq.
            stored.update(status="open", ended_at=None)
        with self._conn.transaction():
            row = self._conn.execute(_ACS_SAVE, [Jsonb(stored), session.status.value, session.acs_trans_id]).fetchone()
        return row is not None
