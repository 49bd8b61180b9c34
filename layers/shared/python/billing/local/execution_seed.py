"""Seeds executions server-side, through the real tables, for the query-plan bench and its test (dev-only code).

Each batch is one transaction of one tenant (row-level security scoped to it, as the application's are), and
every row goes in the way the engine writes it: executions are born `created` and walk the status machine one
statement per transition, each statement writing the change with its lifecycle event, outbox row and workflow row;
refunds are reversal rows with their event. So every trigger and commit-time check of sql/ runs on every row, and
the tables end up shaped as production's would: about four events, outbox rows and workflow rows per execution.
Nothing crosses the wire but the batch's bounds.

The mix (per mille, by a hash of the row number): 840 completed, 80 failed (declines), 20 refunded (completed, then
a provider-reported refund), 20 canceled, 20 awaiting settlement at the provider (SEPA and ACH debits, most with a
reconciliation schedule), 10 pending before submission, 5 created, 5 processing (half of them stuck for longer than
the reconciliation sweep waits). Card charges are nine in ten; debits settle through `pending` at the provider.
Ages spread over `days`, except what only exists briefly (created, pending, a fresh processing, awaiting
settlement), which is recent. Outbox rows are published, but for a backlog: the executions still created or pending
whose row number hashes to it, plus a few executions whose first row failed (backing off) or was parked.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from uuid import UUID

from billing.db.connection import Connection, connect
from billing.domain.workflow import SERVICE_ACTOR, BillingWorkflowConfig


class Part(StrEnum):
    """Which rows of the mix a seed run writes: all of them, or the outbox backlog's executions or the rest."""

    ALL = "all"
    BACKLOG = "backlog"
    PUBLISHED = "published"


BASE_TENANT: Final = UUID("00000000-0000-4000-8000-00000000a000")


@dataclass(frozen=True, slots=True)
class SeedShape:
    """How many executions over how many tenants: the first tenant holds `big_share` of them, the next `mid_tenants`
    `mid_share` between them, the others share the rest evenly (a few large merchants, a long tail)."""

    executions: int
    tenants: int
    big_share: float = 0.1
    mid_tenants: int = 9
    mid_share: float = 0.18
    days: int = 180
    batch: int = 20_000
    # Tenant ids are base_tenant + n, so a run can find its tenants again.
    base_tenant: UUID = BASE_TENANT

    def tenant(self, n: int) -> UUID:
        return UUID(int=self.base_tenant.int + n)

    def tenant_counts(self) -> list[tuple[UUID, int]]:
        """Each tenant and its number of executions, largest first."""
        if self.tenants == 1:
            return [(self.tenant(0), self.executions)]
        mids = min(self.mid_tenants, self.tenants - 1)
        big = int(self.executions * self.big_share)
        mid_each = int(self.executions * self.mid_share / mids) if mids else 0
        rest = self.tenants - 1 - mids
        left = self.executions - big - mid_each * mids
        if rest == 0:
            return [(self.tenant(0), big + left)] + [(self.tenant(1 + n), mid_each) for n in range(mids)]
        each, extra = divmod(left, rest)
        counts = [big] + [mid_each] * mids + [each + (1 if n < extra else 0) for n in range(rest)]
        return [(self.tenant(n), count) for n, count in enumerate(counts)]


# Per tenant: customers buy about twenty times each over the period, on one of two cards; a dozen plans.
_PLAN = """
create temp table seed_plan on commit drop as
select t.*, now() - {ages} as created_at from (
select s.*,
       case when s.outcome = 'settling' then case when s.r2 < 80 then 'sepa_debit' else 'ach_debit' end
            when s.outcome in ('refunded', 'pending', 'created', 'processing', 'canceled') then 'card'
            when s.r2 < 90 then 'card' when s.r2 < 98 then 'sepa_debit' else 'ach_debit' end as rail,
       case when s.r3 < 55 then 'stripe' when s.r3 < 90 then 'adyen' else 'sandbox' end as provider,
       'customer-' || s.h1 %% %(customers)s as customer,
       'plan-' || s.h2 %% 12 as plan,
       'tok_' || s.h1 %% %(customers)s || '_' || s.h3 %% 2 as token,
       -- Not a hex digest: runs of digits in one would trip the card number guard now and then.
       'idem-' || %(salt)s || '-' || s.i as idempotency_key,
       100 + s.h3 %% 50000 as amount,
       case when s.r1 < 70 then 'EUR' when s.r1 < 90 then 'USD' else 'GBP' end as currency,
       s.r2 < 50 as submitted,
       s.unpublished_by_hash and s.outcome in ('created', 'pending') or s.parked or s.backoff as unpublished
  from (
    select i, gen_random_uuid() as id, h1, h2, h3, h4,
           h1 %% 100 as r1, h2 %% 100 as r2, h3 %% 100 as r3,
           (h4 %% 1000000)::float8 / 1e6 as f,
           o.outcome,
           h4 %% 10 = 0 as unpublished_by_hash,
           o.outcome = 'completed' and h3 %% 100000 = 1 as parked,
           o.outcome = 'completed' and h3 %% 100000 between 2 and 11 as backoff
      from generate_series(%(first)s::bigint, %(last)s::bigint) i
     cross join lateral (
         select abs(hashint8extended(i, %(salt)s)) as h1, abs(hashint8extended(i, %(salt)s + 1)) as h2,
                abs(hashint8extended(i, %(salt)s + 2)) as h3, abs(hashint8extended(i, %(salt)s + 3)) as h4
     ) h
     cross join lateral (
         select case when h1 %% 1000 < 840 then 'completed' when h1 %% 1000 < 920 then 'failed'
                     when h1 %% 1000 < 940 then 'refunded' when h1 %% 1000 < 960 then 'canceled'
                     when h1 %% 1000 < 980 then 'settling' when h1 %% 1000 < 990 then 'pending'
                     when h1 %% 1000 < 995 then 'created' else 'processing' end as outcome
     ) o
  ) s
) t
"""

# When each one began: long-lived outcomes over the whole period (a settled debit or a refund needs days behind
# it), short-lived ones recently; a stuck processing one is older than the sweep's ten minutes.
_AGES = """case
    when outcome in ('created', 'pending') then f * interval '2 hours'
    when outcome = 'processing' and r1 < 50 then f * interval '2 minutes'
    when outcome = 'processing' then interval '15 minutes' + f * interval '2 days'
    when outcome = 'settling' then interval '10 minutes' + f * interval '5 days'
    when outcome = 'refunded' then interval '4 days' + f * (%(days)s - 4) * interval '1 day'
    when outcome = 'completed' and rail <> 'card'
        then interval '2 days 1 minute' + f * (%(days)s - 3) * interval '1 day'
    else interval '1 minute' + f * %(days)s * interval '1 day' end"""
_PLAN = _PLAN.replace("{ages}", _AGES)
_KEEP = {
    Part.ALL: "",
    Part.BACKLOG: "delete from seed_plan where not unpublished",
    Part.PUBLISHED: "delete from seed_plan where unpublished",
}

_EVENT_ID = "md5(w.id::text || %(event_type)s)::uuid"

# The companions of one written row, as the repository's statements write them (billing.db.execution_repository),
# set-based: the lifecycle event, the outbox row (published or not as the row's plan says), the workflow row.
_COMPANIONS = f"""
, event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select w.tenant_id, {_EVENT_ID}, w.id, %(event_type)s, %(old_status)s, w.status, {{metadata}}, %(actor)s, null,
           w.updated_at
      from written w
), outbox as (
    insert into billing.billing_outbox (
        tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at, published_at,
        publish_attempts, failed_attempts, next_attempt_at, last_error
    )
    select w.tenant_id, {_EVENT_ID}, w.id, %(event_type)s,
           billing.execution_event_payload(row(w.*)::billing.billing_executions, {_EVENT_ID}, %(event_type)s,
                                           %(old_status)s, null, w.updated_at),
           null, w.updated_at,
           case when not p.unpublished then least(w.updated_at + interval '500 milliseconds', now()) end,
           case when not p.unpublished then 1 when %(first)s and p.parked then 25 when %(first)s and p.backoff then 2
                else 0 end,
           case when p.unpublished and %(first)s and p.parked then 25
                when p.unpublished and %(first)s and p.backoff then 2 else 0 end,
           case when p.unpublished and %(first)s and p.backoff then now() + interval '10 minutes' end,
           case when p.unpublished and %(first)s and (p.parked or p.backoff) then 'ThrottlingException: Rate exceeded'
           end
      from written w join seed_plan p on p.id = w.id
), workflow as (
    insert into billing.contract_term_datetimes (
        tenant_id, transition_id, workflow_key, contract_id, subject_type, subject_id, event_id, phase_code, term_at,
        source, actor_id, correlation_id
    )
    select w.tenant_id, billing.workflow_transition_id(%(wf_key)s, w.tenant_id, w.id, {_EVENT_ID}), %(wf_key)s,
           w.entity_contract_id, %(wf_subject)s, w.id, {_EVENT_ID}, billing.workflow_phase_for_event(%(event_type)s),
           w.updated_at, 'service', %(actor)s, null
      from written w
)
select count(*) as n from written
"""

_CREATE = """
with written as (
    insert into billing.billing_executions (
        tenant_id, id, entity_contract_id, plan_contract_id, amount, currency, payment_rail, payment_provider,
        payment_instrument_id, idempotency_key, request_fingerprint, correlation_id, metadata, created_at, updated_at
    )
    select %(tenant)s, p.id, p.customer, p.plan, p.amount, p.currency, p.rail, p.provider, p.token,
           p.idempotency_key, encode(sha256(convert_to(p.idempotency_key, 'UTF8')), 'hex'), null, '{}'::jsonb,
           p.created_at, p.created_at
      from seed_plan p
    returning *
)""" + _COMPANIONS.format(metadata="jsonb_build_object('amount', w.amount, 'currency', w.currency)")

_REFERENCE = "'ch_' || replace(e.id::text, '-', '')"


@dataclass(frozen=True, slots=True)
class _Step:
    """One transition for the plan rows of `outcomes` (and `condition`), as one statement with its companions."""

    event_type: str
    old_status: str
    outcomes: tuple[str, ...]
    assignments: str
    condition: str = "true"
    metadata: str = "'{}'::jsonb"

    def sql(self) -> str:
        return f"""
with written as (
    update billing.billing_executions e
       set {self.assignments}
      from seed_plan p
     where e.tenant_id = %(tenant)s and e.id = p.id and e.status = %(old_status)s
       and p.outcome = any(%(outcomes)s) and ({self.condition})
    returning e.*
)""" + _COMPANIONS.format(metadata=self.metadata)


_CARD = "p.rail = 'card'"
_DEBIT = "p.rail <> 'card'"
_STEPS: Final = (
    _Step(
        "billing.execution.canceled", "created", ("canceled",),
        "status = 'canceled', updated_at = p.created_at + interval '1 second', "
        "finished_at = p.created_at + interval '1 second'",
    ),
    _Step(
        "billing.execution.pending", "created",
        ("completed", "failed", "refunded", "settling", "pending", "processing"),
        "status = 'pending', updated_at = p.created_at + interval '20 milliseconds'",
    ),
    _Step(
        "billing.execution.processing", "pending", ("completed", "failed", "refunded", "settling", "processing"),
        "status = 'processing', updated_at = p.created_at + interval '40 milliseconds', "
        "attempt_count = e.attempt_count + 1",
    ),
    _Step(
        "billing.execution.completed", "processing", ("completed", "refunded"),
        f"status = 'completed', provider_reference = {_REFERENCE}, "
        "submitted_at = p.created_at + interval '600 milliseconds', "
        "updated_at = p.created_at + interval '700 milliseconds', "
        "finished_at = p.created_at + interval '700 milliseconds'",
        condition=_CARD,
        metadata="jsonb_build_object('provider_reference', w.provider_reference)",
    ),
    _Step(
        "billing.execution.failed", "processing", ("failed",),
        f"status = 'failed', provider_reference = case when p.submitted then {_REFERENCE} end, "
        "submitted_at = case when p.submitted then p.created_at + interval '600 milliseconds' end, "
        "last_error_code = 'card_declined', updated_at = p.created_at + interval '700 milliseconds', "
        "finished_at = p.created_at + interval '700 milliseconds'",
        metadata="jsonb_build_object('error_code', w.last_error_code)",
    ),
    _Step(
        "billing.execution.settlement_pending", "processing", ("completed", "settling"),
        f"status = 'pending', provider_reference = {_REFERENCE}, "
        "submitted_at = p.created_at + interval '800 milliseconds', "
        "updated_at = p.created_at + interval '900 milliseconds'",
        condition=_DEBIT,
        metadata="jsonb_build_object('provider_reference', w.provider_reference)",
    ),
    _Step(
        "billing.execution.confirmed", "pending", ("completed",),
        "status = 'completed', updated_at = least(p.created_at + interval '2 days', now()), "
        "finished_at = least(p.created_at + interval '2 days', now())",
        condition=f"{_DEBIT} and e.submitted_at is not null",
    ),
)  # fmt: skip

# Velocity history: the attempt every assessed execution left (billing.risk.gate keys a token's instrument so).
_ATTEMPTS = """
insert into billing.risk_attempts (
    tenant_id, execution_id, recorded_at, instrument_key, customer_key, amount, currency, rail, initiator
)
select %(tenant)s, p.id, p.created_at + interval '10 milliseconds', 'token:' || p.customer || ':' || p.token,
       p.customer, p.amount, p.currency, p.rail, 'customer'
  from seed_plan p
 where p.outcome not in ('created', 'canceled')
"""

# Debits awaiting settlement that reconciliation asked about already (four in five), each due again within the
# hour (the backoff's cap) or since up to the five minutes between runs.
_LEASES = """
insert into billing.reconciliation_leases (tenant_id, execution_id, status, attempts, next_check_at, last_outcome)
select %(tenant)s, p.id, 'pending', 1 + p.h2 %% 5, now() - interval '5 minutes' + p.f * interval '1 hour',
       'still_pending'
  from seed_plan p
 where p.outcome = 'settling' and p.r3 < 80
"""

# A long seed's first schedules would all be due by its end: as a steady state leaves them, relative to the end.
_RETIME = """
update billing.reconciliation_leases
   set next_check_at = now() - interval '5 minutes' + (abs(hashtext(execution_id::text)) % 3600) * interval '1 second'
 where next_check_at is not null
"""

_REFUND_EVENT_ID = "md5(r.id::text || 'billing.execution.reversed')::uuid"
# A provider-reported refund of each refunded execution three days after it completed (half of them partial), with
# its reversal event and outbox row, as billing.db.reversal_repository records one.
_REFUNDS = f"""
with execution as (
    select e.* from billing.billing_executions e join seed_plan p on p.id = e.id
     where e.tenant_id = %(tenant)s and p.outcome = 'refunded' and e.status = 'completed'
), reversal as (
    insert into billing.execution_reversals (
        tenant_id, id, execution_id, provider, provider_event_id, provider_event_type, kind, amount, currency,
        status, initiated_by, provider_reference, occurred_at, recorded_at
    )
    select e.tenant_id, md5(e.id::text || ':refund')::uuid, e.id, e.payment_provider,
           'evt_' || md5(e.id::text || ':refund'), 'charge.refunded', 'refund',
           case when e.amount %% 2 = 0 then e.amount else greatest(1, e.amount / 2) end, e.currency, 'succeeded',
           'provider', 're_' || md5(e.id::text), e.finished_at + interval '3 days', e.finished_at + interval '3 days'
      from execution e
    returning *
), event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select r.tenant_id, {_REFUND_EVENT_ID}, r.execution_id, 'billing.execution.reversed', 'completed', 'completed',
           jsonb_build_object('reversal_id', r.id, 'reversal_status', r.status, 'kind', r.kind, 'amount', r.amount,
                              'currency', r.currency, 'provider_reference', r.provider_reference,
                              'initiated_by', r.initiated_by),
           'provider:' || r.provider, null, r.occurred_at
      from reversal r
    returning *
)
insert into billing.billing_outbox (
    tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at, published_at,
    publish_attempts
)
select ev.tenant_id, ev.id, ev.execution_id, ev.type,
       billing.execution_event_payload(e, ev.id, ev.type, e.status, null, ev.occurred_at)
       || jsonb_build_object('reversal', ev.metadata || jsonb_build_object('occurred_at', ev.occurred_at)),
       null, ev.occurred_at, least(ev.occurred_at + interval '500 milliseconds', now()), 1
  from event ev
  join execution e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
"""

# A batch is far bigger than any request (no statement timeout); no JIT for one-off statements; the seed is
# repeatable, so its commits need not wait for the disk.
_SCOPE = (
    "select set_config('billing.tenant_id', %s, true), set_config('billing.scope', 'tenant', true), "
    "set_config('jit', 'off', true), set_config('synchronous_commit', 'off', true), "
    "set_config('statement_timeout', '0', true)"
)
TABLES: Final = (
    "billing_executions",
    "billing_execution_events",
    "billing_outbox",
    "contract_term_datetimes",
    "execution_reversals",
    "risk_attempts",
    "reconciliation_leases",
)


def _customers(count: int) -> int:
    return max(5, count // 20)


def seed_batch(conn: Connection, tenant: UUID, salt: int, first: int, last: int, *, count: int, days: int,
               part: Part) -> None:  # fmt: skip
    """Rows first..last of `tenant` (of `count`), in one transaction of the tenant's scope, on an admin's `conn`."""
    common: dict[str, Any] = {
        "tenant": tenant,
        "actor": SERVICE_ACTOR,
        "wf_key": BillingWorkflowConfig.WORKFLOW_KEY,
        "wf_subject": BillingWorkflowConfig.SUBJECT_TYPE,
    }
    with conn.transaction():
        conn.execute(_SCOPE, [str(tenant)])
        conn.execute(_PLAN, {"tenant": tenant, "salt": salt, "first": first, "last": last,
                             "customers": _customers(count), "days": days})  # fmt: skip
        if _KEEP[part]:
            conn.execute(_KEEP[part])
        # The tenant's fresh rows have no statistics yet, so the planner may loop over the plan once per execution:
        # an index makes each of those loops one probe.
        conn.execute("create index on seed_plan (id)")
        conn.execute("analyze seed_plan")
        conn.execute(_CREATE, {**common, "event_type": "billing.execution.created", "old_status": None, "first": True})
        for step in _STEPS:
            if step.old_status == "pending" and step.event_type == "billing.execution.processing":
                conn.execute(_ATTEMPTS, {"tenant": tenant})
            params = {**common, "event_type": step.event_type, "old_status": step.old_status,
                      "outcomes": list(step.outcomes), "first": False}  # fmt: skip
            conn.execute(step.sql(), params)
        conn.execute(_REFUNDS, {"tenant": tenant})
        conn.execute(_LEASES, {"tenant": tenant})


def seed(admin_url: str, shape: SeedShape, *, part: Part = Part.ALL, connections: int = 2) -> None:
    """Seed `shape` on `connections` admin connections, a tenant's batch per transaction."""
    batches = queue.SimpleQueue[tuple[UUID, int, int, int, int]]()
    for n, (tenant, count) in enumerate(shape.tenant_counts()):
        for first in range(1, count + 1, shape.batch):
            batches.put((tenant, n * 10, first, min(count, first + shape.batch - 1), count))
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            with connect(admin_url, application_name="billing-seed") as conn:
                while True:
                    try:
                        tenant, salt, first, last, count = batches.get_nowait()
                    except queue.Empty:
                        return
                    seed_batch(conn, tenant, salt, first, last, count=count, days=shape.days, part=part)
        except BaseException as error:  # reported by the caller: a half-seeded table measures nothing
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(max(1, connections))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    with connect(admin_url, application_name="billing-seed") as conn:
        conn.execute(_RETIME)


def vacuum_analyze(admin_url: str, tables: Sequence[str] = TABLES) -> None:
    """VACUUM (ANALYZE) the seeded tables: statistics, and the visibility map index-only scans read."""
    with connect(admin_url, application_name="billing-seed") as conn:  # autocommit: VACUUM
        for table in tables:
            conn.execute(f"vacuum (analyze) billing.{table}")


# --- Volume for plan tests ----------------------------------------------------------------------------------------

# Copies of every seeded row, `copies` times, in the same tenant under new ids, keys and references and earlier by
# 37 s per copy (so copies never tie). Written with triggers off (session_replication_role = replica): the copies
# are the rows the triggers checked above, differing only in identifiers and times, and a copy costs a
# hundredth of a checked row. Only for tests that need volume for the planner to see, never for a bench's numbers.
_NEW_ID = "md5({column}::text || ':' || k)::uuid"
_SHIFT = "k * interval '37 seconds'"
_COPIES: Final = (
    f"""
insert into billing.billing_executions (
    tenant_id, id, entity_contract_id, plan_contract_id, amount, currency, status, payment_rail, payment_provider,
    payment_instrument_id, provider_reference, idempotency_key, request_fingerprint, correlation_id, metadata,
    attempt_count, last_error_code, next_attempt_at, created_at, updated_at, submitted_at, finished_at
)
select e.tenant_id, {_NEW_ID.format(column="e.id")}, e.entity_contract_id || 'c' || k, e.plan_contract_id, e.amount,
       e.currency, e.status, e.payment_rail, e.payment_provider, e.payment_instrument_id || 'c' || k,
       e.provider_reference || 'c' || k, e.idempotency_key || 'c' || k, e.request_fingerprint, e.correlation_id,
       e.metadata, e.attempt_count, e.last_error_code, e.next_attempt_at, e.created_at - {_SHIFT},
       e.updated_at - {_SHIFT}, e.submitted_at - {_SHIFT}, e.finished_at - {_SHIFT}
  from billing.billing_executions e cross join generate_series(1, %(copies)s) k
""",
    f"""
insert into billing.billing_execution_events (
    tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
)
select v.tenant_id, {_NEW_ID.format(column="v.id")}, {_NEW_ID.format(column="v.execution_id")}, v.type, v.old_status,
       v.new_status, v.metadata, v.user_id, v.correlation_id, v.occurred_at - {_SHIFT}
  from billing.billing_execution_events v cross join generate_series(1, %(copies)s) k
 order by k, v.sequence
""",
    f"""
insert into billing.billing_outbox (
    tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at, published_at,
    publish_attempts, failed_attempts, next_attempt_at, last_error
)
select o.tenant_id, {_NEW_ID.format(column="o.event_id")}, {_NEW_ID.format(column="o.aggregate_id")}, o.event_type,
       o.payload || jsonb_build_object('event_id', {_NEW_ID.format(column="o.event_id")},
                                       'execution_id', {_NEW_ID.format(column="o.aggregate_id")}),
       o.correlation_id, o.occurred_at - {_SHIFT}, o.published_at - {_SHIFT}, o.publish_attempts, o.failed_attempts,
       o.next_attempt_at, o.last_error
  from billing.billing_outbox o cross join generate_series(1, %(copies)s) k
 order by k, o.id
""",
    f"""
insert into billing.contract_term_datetimes (
    tenant_id, transition_id, workflow_key, contract_id, subject_type, subject_id, event_id, phase_code, term_at,
    source, actor_id, correlation_id
)
select w.tenant_id,
       billing.workflow_transition_id(w.workflow_key, w.tenant_id, {_NEW_ID.format(column="w.subject_id")},
                                      {_NEW_ID.format(column="w.event_id")}),
       w.workflow_key, w.contract_id || 'c' || k, w.subject_type, {_NEW_ID.format(column="w.subject_id")},
       {_NEW_ID.format(column="w.event_id")}, w.phase_code, w.term_at - {_SHIFT}, w.source, w.actor_id,
       w.correlation_id
  from billing.contract_term_datetimes w cross join generate_series(1, %(copies)s) k
""",
    f"""
insert into billing.execution_reversals (
    tenant_id, id, execution_id, provider, provider_event_id, provider_event_type, kind, amount, currency, status,
    initiated_by, provider_reference, occurred_at, recorded_at
)
select r.tenant_id, {_NEW_ID.format(column="r.id")}, {_NEW_ID.format(column="r.execution_id")}, r.provider,
       r.provider_event_id || 'c' || k, r.provider_event_type, r.kind, r.amount, r.currency, r.status,
       r.initiated_by, r.provider_reference || 'c' || k, r.occurred_at - {_SHIFT}, r.recorded_at - {_SHIFT}
  from billing.execution_reversals r cross join generate_series(1, %(copies)s) k
""",
    f"""
insert into billing.risk_attempts (
    tenant_id, execution_id, recorded_at, instrument_key, customer_key, amount, currency, rail, initiator, declined
)
select a.tenant_id, {_NEW_ID.format(column="a.execution_id")}, a.recorded_at - {_SHIFT},
       a.instrument_key || 'c' || k, a.customer_key || 'c' || k, a.amount, a.currency, a.rail, a.initiator,
       a.declined
  from billing.risk_attempts a cross join generate_series(1, %(copies)s) k
""",
    f"""
insert into billing.reconciliation_leases (tenant_id, execution_id, status, attempts, next_check_at, last_outcome)
select l.tenant_id, {_NEW_ID.format(column="l.execution_id")}, l.status, l.attempts, l.next_check_at, l.last_outcome
  from billing.reconciliation_leases l cross join generate_series(1, %(copies)s) k
""",
)


def multiply(admin_url: str, copies: int) -> None:
    """Add `copies` copies of every seeded row (see _COPIES); needs a superuser (session_replication_role)."""
    with connect(admin_url, application_name="billing-seed") as conn, conn.transaction():
        conn.execute(
            "select set_config('session_replication_role', 'replica', true), set_config('jit', 'off', true), "
            "set_config('synchronous_commit', 'off', true), set_config('statement_timeout', '0', true)"
        )
        for statement in _COPIES:
            conn.execute(statement, {"copies": copies})
