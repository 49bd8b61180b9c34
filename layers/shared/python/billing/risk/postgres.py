"""PostgreSQL side of risk: the tenants' versioned rule sets and the log of assessments.

A rule set is replaced by inserting the next version (the database refuses any other, BE019, and a concurrent
replacement collides on the key): the current one is the highest, and a tenant that never stored one has the
engine's defaults (version 0). Stored bodies are validated again when read, so a rule set that no longer parses
(an attribute since removed) fails loudly rather than assessing on half its rules.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from threading import Lock
from typing import Any, Final
from uuid import UUID, uuid4

import psycopg
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from billing.db.connection import Connection
from billing.db.sqlstates import translated_guard_errors
from billing.db.tenancy import tenant_transaction
from billing.domain.errors import RiskHistoryRefused
from billing.risk.attributes import RiskFacts
from billing.risk.defaults import default_rule_set
from billing.risk.evaluation import Assessment
from billing.risk.rules import RuleSet, parse_rule_set

_CURRENT = """
select version, rules, created_at, created_by from billing.risk_rule_sets
 where tenant_id = %s order by version desc limit 1
"""
_INSERT = """
insert into billing.risk_rule_sets (tenant_id, version, rules, created_by) values (%s, %s, %s, %s)
returning created_at
"""
_RECORD = """
insert into billing.risk_assessments (
    tenant_id, id, execution_id, attempt, score, decision, fired, facts, rule_set_version, duration_us
) values (
    %(tenant)s, %(id)s, %(execution)s, %(attempt)s, %(score)s, %(decision)s, %(fired)s, %(facts)s, %(version)s,
    %(duration)s
)
on conflict (tenant_id, execution_id, attempt) do nothing
returning *
"""
# For a writer that read the attempt's kept assessment under the velocity locks: a conflict here is a bug, and must
# abort the transaction (with the event sent beside it) rather than pass as "kept before".
_RECORD_NEW = _RECORD.replace("on conflict (tenant_id, execution_id, attempt) do nothing\n", "")
_OF_EXECUTION = """
select * from billing.risk_assessments where tenant_id = %s and execution_id = %s order by attempt, assessed_at
"""
_OF_ATTEMPT = """
select * from billing.risk_assessments where tenant_id = %s and execution_id = %s and attempt = %s
"""
# Parsed rule sets by (tenant, version): a stored version never changes (BE019), so a container parses each once.
_PARSED_MAX: Final = 512
_parsed: OrderedDict[tuple[UUID, int], RuleSet] = OrderedDict()
_parsed_lock = Lock()


def _parsed_rule_set(tenant_id: UUID, row: dict[str, Any]) -> RuleSet:
    key = (tenant_id, int(row["version"]))
    with _parsed_lock:
        cached = _parsed.get(key)
        if cached is not None:
            _parsed.move_to_end(key)
            return cached
    rule_set = parse_rule_set(row["rules"], version=row["version"])
    with _parsed_lock:
        _parsed[key] = rule_set
        while len(_parsed) > _PARSED_MAX:
            _parsed.popitem(last=False)
    return rule_set


@dataclass(frozen=True, slots=True)
class StoredRuleSet:
    rule_set: RuleSet
    # None for the engine's defaults, which nobody stored.
    created_at: datetime | None
    created_by: str | None


@dataclass(frozen=True, slots=True)
class AssessmentRecord:
    """A billing.risk_assessments row."""

    id: UUID
    execution_id: UUID
    attempt: int
    score: int
    decision: str
    fired: list[dict[str, Any]]
    facts: dict[str, Any]
    rule_set_version: int
    assessed_at: datetime
    duration_us: int


def assessment_record(row: dict[str, Any]) -> AssessmentRecord:
    return AssessmentRecord(
        id=row["id"],
        execution_id=row["execution_id"],
        attempt=row["attempt"],
        score=row["score"],
        decision=row["decision"],
        fired=row["fired"],
        facts=row["facts"],
        rule_set_version=row["rule_set_version"],
        assessed_at=row["assessed_at"],
        duration_us=row["duration_us"],
    )


class RuleSetStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def current(self, tenant_id: UUID) -> StoredRuleSet:
        with tenant_transaction(self._conn, tenant_id):
            return queue_current(self._conn, tenant_id).rule_set()

    def replace(
        self, tenant_id: UUID, body: object, *, actor: str, expected_version: int | None = None
    ) -> StoredRuleSet:
        """Store `body` as the tenant's next version; ValidationFailed (nothing stored) for a bad rule set,
        RiskHistoryRefused when another replacement got there first (or `expected_version` is not current)."""
        candidate = parse_rule_set(body, version=0)
        current = self.current(tenant_id).rule_set.version
        if expected_version is not None and expected_version != current:
            raise RiskHistoryRefused(
                f"the rule set is at version {current}, not {expected_version}", current_version=current
            )
        try:
            with translated_guard_errors(), tenant_transaction(self._conn, tenant_id):
                row = self._conn.execute(
                    _INSERT, [tenant_id, current + 1, Jsonb(candidate.document()), actor]
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            raise RiskHistoryRefused(
                "another replacement of this rule set was stored first; read it and try again"
            ) from None
        assert row is not None
        return StoredRuleSet(candidate.with_version(current + 1), row["created_at"], actor)


@dataclass(frozen=True, slots=True)
class QueuedRuleSet:
    """The tenant's current rule set, asked for; read when first needed (one round trip with what follows)."""

    tenant_id: UUID
    cursor: Cursor[DictRow]

    def rule_set(self) -> StoredRuleSet:
        row = self.cursor.fetchone()
        if row is None:
            return StoredRuleSet(default_rule_set(), None, None)
        return StoredRuleSet(_parsed_rule_set(self.tenant_id, row), row["created_at"], row["created_by"])


def queue_current(conn: Connection, tenant_id: UUID) -> QueuedRuleSet:
    """Ask for the tenant's current rule set on `conn`, already in the tenant's scope."""
    return QueuedRuleSet(tenant_id, conn.execute(_CURRENT, [tenant_id]))


class AssessmentLog:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def record(
        self,
        tenant_id: UUID,
        execution_id: UUID,
        attempt: int,
        assessment: Assessment,
        facts: RiskFacts,
        *,
        duration_us: int,
    ) -> AssessmentRecord | None:
        """Keep the assessment of one attempt; None if that attempt's assessment was kept before (a redelivery)."""
        with tenant_transaction(self._conn, tenant_id):
            params = _record_params(uuid4(), tenant_id, execution_id, attempt, assessment, facts, duration_us)
            row = self._conn.execute(_RECORD, params).fetchone()
        return assessment_record(row) if row else None

    def of_attempt(self, tenant_id: UUID, execution_id: UUID, attempt: int) -> AssessmentRecord | None:
        with tenant_transaction(self._conn, tenant_id):
            return queue_of_attempt(self._conn, tenant_id, execution_id, attempt).record()

    def of_execution(self, tenant_id: UUID, execution_id: UUID) -> list[AssessmentRecord]:
        with tenant_transaction(self._conn, tenant_id):
            rows = self._conn.execute(_OF_EXECUTION, [tenant_id, execution_id]).fetchall()
        return [assessment_record(row) for row in rows]


@dataclass(frozen=True, slots=True)
class QueuedAssessment:
    cursor: Cursor[DictRow]

    def record(self) -> AssessmentRecord | None:
        row = self.cursor.fetchone()
        return assessment_record(row) if row else None


def queue_of_attempt(conn: Connection, tenant_id: UUID, execution_id: UUID, attempt: int) -> QueuedAssessment:
    """Ask for the assessment kept for one attempt, on `conn` already in the tenant's scope."""
    return QueuedAssessment(conn.execute(_OF_ATTEMPT, [tenant_id, execution_id, attempt]))


def queue_new_record(
    conn: Connection,
    assessment_id: UUID,
    tenant_id: UUID,
    execution_id: UUID,
    attempt: int,
    assessment: Assessment,
    facts: RiskFacts,
    duration_us: int,
) -> Cursor[DictRow]:
    """Send the insert of an attempt's first assessment on `conn`, already in the tenant's scope (see _RECORD_NEW)."""
    params = _record_params(assessment_id, tenant_id, execution_id, attempt, assessment, facts, duration_us)
    return conn.execute(_RECORD_NEW, params)


def _record_params(
    assessment_id: UUID,
    tenant_id: UUID,
    execution_id: UUID,
    attempt: int,
    assessment: Assessment,
    facts: RiskFacts,
    duration_us: int,
) -> dict[str, Any]:
    return {
        "tenant": tenant_id,
        "id": assessment_id,
        "execution": execution_id,
        "attempt": attempt,
        "score": assessment.score,
        "decision": assessment.decision.value,
        "fired": Jsonb(assessment.fired_json()),
        "facts": Jsonb(facts.as_json()),
        "version": assessment.rule_set_version,
        "duration": duration_us,
    }
