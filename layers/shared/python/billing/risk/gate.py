"""The assessment a charge passes before it is submitted: velocity counted, rules evaluated, the result kept.

One transaction holds it all: the advisory locks per velocity key, the attempt's row, the counts, the assessment
row and its lifecycle event (billing.execution.risk_assessed, with its outbox row). So a second request on the same
instrument waits until this one's attempt and decision are committed, and an assessment is never visible without
its event. An execution is assessed once per attempt: asking again (a replayed request, a driver resuming a stalled
execution) returns the decision kept for that attempt instead of deciding anew.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID, uuid4

from billing.db.attempts import queue_annotation
from billing.db.connection import Connection
from billing.db.tenancy import commit_without_flush_wait, pipelined_tenant_transaction
from billing.domain.execution import Execution, PaymentRail
from billing.domain.money import Money
from billing.domain.transitions import EVENT_PREFIX
from billing.domain.workflow import WorkflowWriteContext
from billing.instruments.model import is_instrument_id
from billing.rails.ports import INITIATOR_METADATA_KEY, ChargeInitiator
from billing.risk.attributes import COUNTRY_PATTERN, Attribute, RiskFacts
from billing.risk.evaluation import Assessment, assess
from billing.risk.postgres import (
    AssessmentRecord,
    assessment_record,
    queue_current,
    queue_new_record,
    queue_of_attempt,
)
from billing.risk.rules import Action, RiskSettings
from billing.risk.velocity import AttemptKeys, Velocity, queue_count

RISK_ASSESSED_EVENT_TYPE: Final = EVENT_PREFIX + "risk_assessed"
# The customer's country, when the billing system sends it (ISO 3166-1 alpha-2, in the execution's metadata).
CUSTOMER_COUNTRY_METADATA_KEY: Final = "customer_country"
# Longest client-supplied identifier kept (as a digest) for velocity; anything longer is not a fingerprint.
MAX_SIGNAL_LENGTH: Final = 256

_RISK_FACTS = "select * from billing.payment_instrument_risk_facts(%s, %s)"
_FIRST_CHARGE_AUTHENTICATED = """
select a.state in ('succeeded') as authenticated
  from billing.billing_executions e
  left join billing.authentications a on a.tenant_id = e.tenant_id and a.execution_id = e.id
 where e.tenant_id = %s and e.payment_instrument_id = %s and e.status = 'completed'
 order by e.finished_at, e.id
 limit 1
"""


@dataclass(frozen=True, slots=True)
class ClientSignals:
    """What the request says about the client's device and network (X-Device-Fingerprint, the source IP)."""

    device_fingerprint: str | None = None
    ip_address: str | None = None

    @classmethod
    def of(cls, device_fingerprint: str | None, ip_address: str | None) -> ClientSignals:
        """Signals as a request carries them: blank or oversized values count as absent, never as an error."""
        return cls(_signal(device_fingerprint), _signal(ip_address))


NO_SIGNALS: Final = ClientSignals()


def _signal(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value if 0 < len(value) <= MAX_SIGNAL_LENGTH else None


@dataclass(frozen=True, slots=True)
class InstrumentFacts:
    """What risk knows of the instrument: its velocity key and, for a vault instrument, its age and issuer."""

    instrument_key: str
    created_at: datetime | None = None
    issuer_country: str | None = None
    brand: str | None = None
    first_charge_authenticated: bool | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision kept for this attempt, with the tenant's settings the next step acts on."""

    record: AssessmentRecord
    settings: RiskSettings
    instrument: InstrumentFacts
    initiator: ChargeInitiator
    # True when this call made the decision; False when it is the one kept for the attempt (asked again).
    fresh: bool = False

    @property
    def decision(self) -> str:
        return self.record.decision


# Called inside the assessment's transaction with the decision just made (RiskGate.assess); True when what it sent
# must be durable when the transaction commits (a claim that lets a provider be called next).
WithinDecision = Callable[[Verdict], bool]
# Called inside the assessment's transaction with the velocity key of the instrument, after the locks are queued and
# before the first result is read: a read the decision's caller may need is sent in the same round trip, under the
# instrument's lock (RiskGate.assess).
BeforeDecision = Callable[[str], None]


def initiator_of(execution: Execution) -> ChargeInitiator:
    return ChargeInitiator(execution.metadata.get(INITIATOR_METADATA_KEY, ChargeInitiator.CUSTOMER.value))


class RiskGate:
    """Assesses executions on one connection (the execute function's, or the retry worker's)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def assess(
        self,
        execution: Execution,
        signals: ClientSignals,
        *,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        within: WithinDecision | None = None,
        before: BeforeDecision | None = None,
    ) -> Verdict:
        """The decision for the execution's next attempt (its first submission).

        `within`, if given, is called with a decision made now (not one kept from before) inside the assessment's
        transaction, before it commits: what it sends commits with the decision or not at all. `before`, if given,
        is called with the instrument's velocity key once its lock is queued, to send reads `within` will use in the
        assessment's first round trip. Statements only; nothing outside the database is called there.
        """
        verdict = self._assess(
            execution, signals, execution.attempt_count + 1, True, context, correlation_id, within, before
        )
        assert verdict is not None, "a first assessment records its attempt"
        return verdict

    def reassess(
        self, execution: Execution, *, context: WorkflowWriteContext, correlation_id: str | None
    ) -> Verdict | None:
        """The assessment of a resubmission (attempt N, already claimed): kept and shown, its attempt not counted
        again; None for an execution that was never assessed (nothing to count it by)."""
        return self._assess(execution, NO_SIGNALS, execution.attempt_count, False, context, correlation_id, None, None)

    def _assess(
        self,
        execution: Execution,
        signals: ClientSignals,
        attempt: int,
        record_attempt: bool,
        context: WorkflowWriteContext,
        correlation_id: str | None,
        within: WithinDecision | None,
        before: BeforeDecision | None,
    ) -> Verdict | None:
        # Two round trips in all: the locks, the attempt's row, the counts, the rule set, any kept assessment and
        # what `before` asks in the first; the assessment, its event and the commit in the second. Every read comes
        # after the locks, so an assessment of the same key that committed while this one waited is counted (and
        # kept, if it was this attempt's).
        conn, tenant = self._conn, execution.tenant_id
        started = time.perf_counter_ns()
        with pipelined_tenant_transaction(conn, tenant):
            rules = queue_current(conn, tenant)
            instrument = self.instrument_facts(tenant, execution.payment_instrument_id, execution.entity_contract_id)
            initiator = initiator_of(execution)
            keys = AttemptKeys(
                tenant_id=tenant,
                execution_id=execution.id,
                instrument_key=instrument.instrument_key,
                customer_key=execution.entity_contract_id,
                amount=Money(execution.amount, execution.currency),
                rail=execution.payment_rail,
                initiator=initiator,
                device_fingerprint=signals.device_fingerprint,
                ip_address=signals.ip_address,
            )
            counted = queue_count(conn, keys, record=record_attempt, as_rules_need=True)
            earlier = queue_of_attempt(conn, tenant, execution.id, attempt)
            if before is not None:
                before(instrument.instrument_key)
            stored = rules.rule_set().rule_set
            velocity = counted.velocity()
            kept = earlier.record()
            if velocity is None:
                return None
            if velocity.attempts_per_tenant_1m is None and stored.reads(Attribute.ATTEMPTS_PER_TENANT_1M):
                # A replacement of the rule set committed between the two reads: count what the newer one reads.
                velocity = queue_count(conn, keys, record=False).velocity()
                assert velocity is not None, "the attempt counted a moment ago is there"
            if kept is not None:
                return Verdict(kept, stored.settings, instrument, initiator, fresh=False)
            facts = _facts(execution, initiator, instrument, velocity, signals)
            assessment = assess(stored, facts)
            duration_us = (time.perf_counter_ns() - started) // 1000
            assessment_id = uuid4()
            inserted = queue_new_record(
                conn, assessment_id, tenant, execution.id, attempt, assessment, facts, duration_us
            )
            queue_annotation(
                conn,
                tenant,
                execution.id,
                RISK_ASSESSED_EVENT_TYPE,
                _event_metadata(assessment_id, attempt, assessment),
                context=context,
                correlation_id=correlation_id,
            )
            durable = assessment.decision is Action.REVIEW
            if within is not None:
                # As the row will read: assessed_at is now(), the transaction's start, which the count returned.
                record = AssessmentRecord(
                    id=assessment_id,
                    execution_id=execution.id,
                    attempt=attempt,
                    score=assessment.score,
                    decision=assessment.decision.value,
                    fired=assessment.fired_json(),
                    facts=facts.as_json(),
                    rule_set_version=assessment.rule_set_version,
                    assessed_at=velocity.counted_at,
                    duration_us=duration_us,
                )
                durable = within(Verdict(record, stored.settings, instrument, initiator, fresh=True)) or durable
            if not durable:
                # Allowed, blocked or sent to 3-D Secure, the charge goes on to a transition that commits normally
                # before anything leaves the engine; a review is answered to the client as it stands.
                commit_without_flush_wait(conn)
        row = inserted.fetchone()
        assert row is not None, "an inserted assessment returns its row"
        return Verdict(assessment_record(row), stored.settings, instrument, initiator, fresh=True)

    def instrument_facts(self, tenant_id: UUID, instrument_id: str | None, customer: str) -> InstrumentFacts:
        """A vault card by its fingerprint (the same card stored twice is one instrument to velocity); any other
        token by itself, per customer: a provider's test token such as tok_visa names no card of its own."""
        if instrument_id is None:
            return InstrumentFacts(instrument_key=f"default:{customer}")
        if not is_instrument_id(instrument_id):
            return InstrumentFacts(instrument_key=f"token:{customer}:{instrument_id}")
        row = self._conn.execute(_RISK_FACTS, [tenant_id, instrument_id]).fetchone()
        if row is None:
            return InstrumentFacts(instrument_key=f"instrument:{instrument_id}")
        country = row["issuer_country"]
        return InstrumentFacts(
            instrument_key=f"fingerprint:{row['fingerprint']}" if row["fingerprint"] else f"instrument:{instrument_id}",
            created_at=row["created_at"],
            issuer_country=country if country and COUNTRY_PATTERN.fullmatch(country) else None,
            brand=row["brand"],
            first_charge_authenticated=self._first_charge_authenticated(tenant_id, instrument_id),
        )

    def _first_charge_authenticated(self, tenant_id: UUID, instrument_id: str) -> bool:
        row = self._conn.execute(_FIRST_CHARGE_AUTHENTICATED, [tenant_id, instrument_id]).fetchone()
        return bool(row and row["authenticated"])


def _facts(
    execution: Execution,
    initiator: ChargeInitiator,
    instrument: InstrumentFacts,
    velocity: Velocity,
    signals: ClientSignals,
) -> RiskFacts:
    country = execution.metadata.get(CUSTOMER_COUNTRY_METADATA_KEY)
    age: int | None = None
    if instrument.created_at is not None:
        # The database's clock, as for the counters.
        age = max(0, int((velocity.counted_at - instrument.created_at).total_seconds()))
    return RiskFacts(
        amount=Money(execution.amount, execution.currency),
        rail=PaymentRail(execution.payment_rail),
        initiator=initiator,
        instrument_age_seconds=age,
        first_charge_authenticated=instrument.first_charge_authenticated,
        issuer_country=instrument.issuer_country,
        customer_country=country if isinstance(country, str) and COUNTRY_PATTERN.fullmatch(country) else None,
        device_fingerprint_present=signals.device_fingerprint is not None,
        ip_address_present=signals.ip_address is not None,
        attempts_per_instrument_1h=velocity.attempts_per_instrument_1h,
        attempts_per_instrument_24h=velocity.attempts_per_instrument_24h,
        declines_per_instrument_24h=velocity.declines_per_instrument_24h,
        attempts_per_customer_1h=velocity.attempts_per_customer_1h,
        amount_per_customer_24h=velocity.amount_per_customer_24h,
        distinct_instruments_per_customer_24h=velocity.distinct_instruments_per_customer_24h,
        distinct_customers_per_instrument_24h=velocity.distinct_customers_per_instrument_24h,
        distinct_customers_per_device_24h=velocity.distinct_customers_per_device_24h,
        attempts_per_ip_1h=velocity.attempts_per_ip_1h,
        attempts_per_tenant_1m=velocity.attempts_per_tenant_1m,
    )


def _event_metadata(assessment_id: UUID, attempt: int, assessment: Assessment) -> dict[str, object]:
    return {
        "assessment_id": str(assessment_id),
        "attempt": attempt,
        "decision": assessment.decision.value,
        "score": assessment.score,
        "rule_set_version": assessment.rule_set_version,
        "fired": [rule.rule_id for rule in assessment.fired],
    }
