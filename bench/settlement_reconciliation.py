"""Settlement reconciliation at a million lines: the whole report against DuckDB's FULL OUTER JOIN of the same inputs.

1. Seeds SETTLEMENT_BENCH_EXECUTIONS (default 1,000,000) Adyen card executions over TENANTS tenants, all finished on
   one day (yesterday, UTC), server-side through the real tables: born created, then pending, processing and
   completed (a few failed), one statement per transition writing its lifecycle event and outbox row, so every
   trigger and commit-time check runs; refunds (full and two partial ones), and chargebacks, as provider reversals
   with their events. Each tenant has a fee band per currency. Then VACUUM (ANALYZE).
2. Writes the day's Adyen Settlement Detail Report from them (the classic 30-column layout, one file, BATCHES payout
   batches): every payment Settled with Adyen's four fee columns, every recorded refund and chargeback, a Fee and an
   unmapped ReserveAdjustment row per batch, and a MerchantPayout per batch and currency, except for the last
   CARRIED_FORWARD batches (not paid out yet). Injected: payments left out, amounts and currencies changed, fees out
   of band, duplicates, refunds nobody recorded, a partial refund of another amount, references we never made, and
   one payout that does not balance.
3. The report, end to end, in a fresh process: `python -m billing.settlement run --provider adyen --file ... --out`,
   exactly as an operator runs it (the settlement function's engine: the file staged in the database and the exact
   matches decided there, the rest matched as billing_worker, saved with COPY, JSON/CSV/HTML written, the report
   JSON on stdout). Wall time, and the process's peak RSS and CPU time (wait4's rusage of that child alone, so the
   seeding does not count). Then the same report with `--row-by-row --dry-run` (every line read in Python, nothing
   saved), for the figure the staged path replaces and the same counts.
4. The baseline, in a fresh process, timed the same way: the executions exported with COPY ... TO STDOUT as
   billing_worker (what the engine reads from the database), then DuckDB reads both CSVs (read_csv) and FULL OUTER
   JOINs the payments to the executions on the PSP reference, classifies each pair (matched, missing on either
   side, currency, amount, status) and writes the pairs that differ to CSV.

Goals: the report within 3x the baseline's time, at a peak RSS within 512 MB (a Lambda's memory).

    make bench                                                      # embedded PostgreSQL
    SETTLEMENT_BENCH_EXECUTIONS=100000 SETTLEMENT_BENCH_DATABASE=billing_bench_settlement_small \
        .venv/bin/python bench/settlement_reconciliation.py       # a smaller run, beside the million's database
    .venv/bin/python bench/settlement_reconciliation.py --reuse     # the seeded database again, a new file
    .venv/bin/python bench/settlement_reconciliation.py --profile engine.prof   # the report under cProfile
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from uuid import UUID

from billing.db.connection import connect
from billing.db.connection_provider import role_url_variable
from billing.db.roles import DatabaseRole, login_url
from billing.local.embedded_postgres import database_url, fresh_database
from billing.local.provider_settlement_files import (
    NO_FEES,
    AdyenSettlementDetailWriter,
    ReportItem,
    adyen_card_fees,
    reference,
)
from billing.paths import REPO_ROOT
from billing.settlement.formats.records import RecordKind

EXECUTIONS: Final = int(os.environ.get("SETTLEMENT_BENCH_EXECUTIONS", "1000000"))
DATABASE: Final = os.environ.get("SETTLEMENT_BENCH_DATABASE", "billing_bench_settlement")
TENANTS: Final = 50
SEED_BATCH: Final = 20_000
SEED_CONNECTIONS: Final = 2
BATCHES: Final = 20
FIRST_BATCH: Final = 1001
CARRIED_FORWARD: Final = 3  # the last batches have no MerchantPayout line yet
UNBALANCED_BATCH: Final = FIRST_BATCH + 2
UNBALANCED_BY: Final = -1234  # minor units of EUR: the payout is 12.34 short
BASE_TENANT: Final = UUID("00000000-0000-4000-8000-00000000b500")
PROVIDER: Final = "adyen"
MAX_RSS_MB: Final = 512
MAX_RATIO: Final = 3.0
# Injected per payment, by one draw each (cumulative bounds): what the report must find.
OMITTED: Final = 0.001  # missing_from_file
AMOUNT_CHANGED: Final = 0.0015  # amount_mismatch (+1.00)
CURRENCY_CHANGED: Final = 0.0016  # currency_mismatch
FEES_OUT_OF_BAND: Final = 0.0018  # fee_out_of_range (interchange at 3 %)
DUPLICATED: Final = 0.0020  # duplicate_in_file
UNRECORDED_REFUND: Final = 0.0022  # reversal_missing (a refund of half, nobody recorded)
UNKNOWN_REFERENCE: Final = 0.0027  # missing_internally (an extra payment we never made)
PARTIAL_OF_ANOTHER_AMOUNT: Final = 0.1  # of the payments with two partial refunds: reversal_amount_mismatch

# One transaction per tenant batch, as the admin with row-level security scoped to the tenant. The plan decides
# each row by hashes of its number: currency (85 % EUR, 8 % USD, 5 % GBP, 2 % JPY), amount, outcome (0.05 %
# failed), reversals (2 % refunded, 1 % two partial refunds, 0.3 % charged back), and when it finished on the day.
_PLAN = """
create temp table bench_plan on commit drop as
select i, gen_random_uuid() as id,
       case when h1 %% 100 < 85 then 'EUR' when h1 %% 100 < 93 then 'USD' when h1 %% 100 < 98 then 'GBP'
            else 'JPY' end as currency,
       500 + h2 %% 20000 as amount,
       case when h3 %% 10000 < 5 then 'failed' else 'completed' end as outcome,
       case when h3 %% 10000 < 5 then 'none' when h4 %% 1000 < 20 then 'refund' when h4 %% 1000 < 30 then 'partial'
            when h4 %% 1000 < 33 then 'chargeback' else 'none' end as reversal,
       %(day)s::timestamptz + interval '30 minutes' + (h5 %% 82800000) * interval '1 millisecond' as finished_at
  from generate_series(%(first)s::bigint, %(last)s::bigint) i
 cross join lateral (
     select abs(hashint8extended(i, %(salt)s)) as h1, abs(hashint8extended(i, %(salt)s + 1)) as h2,
            abs(hashint8extended(i, %(salt)s + 2)) as h3, abs(hashint8extended(i, %(salt)s + 3)) as h4,
            abs(hashint8extended(i, %(salt)s + 4)) as h5
 ) h
"""
_EVENT_ID: Final = "md5(w.id::text || %(event_type)s)::uuid"
# The lifecycle event and outbox row (published) of every row a statement wrote, as the repository writes them.
_COMPANIONS = f"""
, event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select w.tenant_id, {_EVENT_ID}, w.id, %(event_type)s, %(old_status)s, w.status, {{metadata}}, 'bench', null,
           w.updated_at
      from written w
)
insert into billing.billing_outbox (
    tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at, published_at, publish_attempts
)
select w.tenant_id, {_EVENT_ID}, w.id, %(event_type)s,
       billing.execution_event_payload(row(w.*)::billing.billing_executions, {_EVENT_ID}, %(event_type)s,
                                       %(old_status)s, null, w.updated_at),
       null, w.updated_at, w.updated_at + interval '500 milliseconds', 1
  from written w
"""
_CREATE = """
with written as (
    insert into billing.billing_executions (
        tenant_id, id, entity_contract_id, plan_contract_id, amount, currency, payment_rail, payment_provider,
        payment_instrument_id, idempotency_key, request_fingerprint, metadata, created_at, updated_at
    )
    select %(tenant)s, p.id, 'customer-' || p.i %% 5000, 'plan-' || p.i %% 12, p.amount, p.currency, 'card',
           'adyen', 'tok_' || p.i %% 5000, 'bench-' || p.i, encode(sha256(convert_to('bench-' || p.i, 'UTF8')), 'hex'),
           '{}'::jsonb, p.finished_at - interval '2 seconds', p.finished_at - interval '2 seconds'
      from bench_plan p
    returning *
)""" + _COMPANIONS.format(metadata="jsonb_build_object('amount', w.amount, 'currency', w.currency)")
# Adyen's pspReference: 16 upper-case alphanumerics; a leading letter, so none can look like a card number.
_PSP_REFERENCE: Final = "'P' || upper(substr(md5(e.id::text), 1, 15))"


def _step(event_type: str, old_status: str, assignments: str, outcome: str | None = None, metadata: str = "") -> str:
    condition = "true" if outcome is None else f"p.outcome = '{outcome}'"
    return f"""
with written as (
    update billing.billing_executions e set {assignments}
      from bench_plan p
     where e.tenant_id = %(tenant)s and e.id = p.id and e.status = '{old_status}' and {condition}
    returning e.*
)""" + _COMPANIONS.format(metadata=metadata or "'{}'::jsonb")


_STEPS: Final = (
    ("billing.execution.pending", "created", _step(
        "billing.execution.pending", "created", "status = 'pending', updated_at = p.finished_at - interval '1500 ms'"
    )),
    ("billing.execution.processing", "pending", _step(
        "billing.execution.processing", "pending",
        "status = 'processing', attempt_count = 1, updated_at = p.finished_at - interval '1 second'",
    )),
    ("billing.execution.completed", "processing", _step(
        "billing.execution.completed", "processing",
        f"status = 'completed', provider_reference = {_PSP_REFERENCE}, "
        "submitted_at = p.finished_at - interval '500 ms', updated_at = p.finished_at, finished_at = p.finished_at",
        "completed", "jsonb_build_object('provider_reference', w.provider_reference)",
    )),
    ("billing.execution.failed", "processing", _step(
        "billing.execution.failed", "processing",
        f"status = 'failed', provider_reference = {_PSP_REFERENCE}, last_error_code = 'card_declined', "
        "submitted_at = p.finished_at - interval '500 ms', updated_at = p.finished_at, finished_at = p.finished_at",
        "failed", "jsonb_build_object('error_code', w.last_error_code)",
    )),
)  # fmt: skip

_REVERSAL_EVENT_ID: Final = "md5(r.id::text || 'billing.execution.reversed')::uuid"
# Provider-reported refunds and chargebacks an hour after the payment (the webhook path's rows), with the reversal
# event and its outbox row: a full refund, two partial ones (a quarter and a third), or a chargeback of it all.
_REVERSALS = f"""
with execution as (
    select e.*, p.reversal from billing.billing_executions e join bench_plan p on p.id = e.id
     where e.tenant_id = %(tenant)s and p.reversal <> 'none' and e.status = 'completed'
), planned as (
    select e.*, v.n, v.kind, v.amount as reversed
      from execution e
     cross join lateral (values
         (1, case when e.reversal = 'chargeback' then 'chargeback' else 'refund' end,
             case when e.reversal = 'partial' then e.amount / 4 else e.amount end),
         (2, 'refund', e.amount / 3)
     ) v (n, kind, amount)
     where v.n = 1 or e.reversal = 'partial'
), reversal as (
    insert into billing.execution_reversals (
        tenant_id, id, execution_id, provider, provider_event_id, provider_event_type, kind, amount, currency,
        status, initiated_by, provider_reference, occurred_at, recorded_at
    )
    select p.tenant_id, md5(p.id::text || ':reversal:' || p.n)::uuid, p.id, p.payment_provider,
           'evt_' || md5(p.id::text || ':reversal:' || p.n), upper(p.kind), p.kind, p.reversed, p.currency,
           'succeeded', 'provider', 'M' || upper(substr(md5(p.id::text || ':' || p.n), 1, 15)),
           p.finished_at + p.n * interval '1 hour', p.finished_at + p.n * interval '1 hour'
      from planned p
    returning *
), event as (
    insert into billing.billing_execution_events (
        tenant_id, id, execution_id, type, old_status, new_status, metadata, user_id, correlation_id, occurred_at
    )
    select r.tenant_id, {_REVERSAL_EVENT_ID}, r.execution_id, 'billing.execution.reversed', 'completed', 'completed',
           jsonb_build_object('reversal_id', r.id, 'reversal_status', r.status, 'kind', r.kind, 'amount', r.amount,
                              'currency', r.currency, 'provider_reference', r.provider_reference,
                              'initiated_by', r.initiated_by),
           'provider:' || r.provider, null, r.occurred_at
      from reversal r
    returning *
)
insert into billing.billing_outbox (
    tenant_id, event_id, aggregate_id, event_type, payload, correlation_id, occurred_at, published_at, publish_attempts
)
select ev.tenant_id, ev.id, ev.execution_id, ev.type,
       billing.execution_event_payload(e, ev.id, ev.type, e.status, null, ev.occurred_at)
       || jsonb_build_object('reversal', ev.metadata || jsonb_build_object('occurred_at', ev.occurred_at)),
       null, ev.occurred_at, ev.occurred_at + interval '500 milliseconds', 1
  from event ev
  join billing.billing_executions e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
"""
# Every tenant's contract with Adyen: 0.10 fixed plus at most 1 % of the payment, in each currency it sells in.
_FEE_BANDS = """
insert into billing.settlement_fee_bands
    (tenant_id, provider, payment_method, currency, min_basis_points, max_basis_points, fixed_minor, note)
select %(tenant)s, 'adyen', '*', c, 0, 100, 10, 'bench contract: 0.10 + up to 1 %%'
  from unnest(array['EUR', 'USD', 'GBP', 'JPY']) c
"""
_SCOPE = (
    "select set_config('billing.tenant_id', %s, true), set_config('billing.scope', 'tenant', true), "
    "set_config('jit', 'off', true), set_config('synchronous_commit', 'off', true), "
    "set_config('statement_timeout', '0', true)"
)
_SYSTEM_SCOPE = (
    "select set_config('billing.tenant_id', '', true), set_config('billing.scope', 'system', true), "
    "set_config('statement_timeout', '0', true)"
)
# What the file is written from: the provider's executions of the day with their reversals, in time order.
_OURS = """
select e.tenant_id, e.id, e.provider_reference, e.amount, e.currency, e.status, e.finished_at,
       rv.kinds, rv.amounts, rv.references
  from billing.billing_executions e
  left join lateral (
      select array_agg(r.kind order by r.recorded_at, r.id) as kinds,
             array_agg(r.amount order by r.recorded_at, r.id) as amounts,
             array_agg(r.provider_reference order by r.recorded_at, r.id) as references
        from billing.execution_reversals r where r.tenant_id = e.tenant_id and r.execution_id = e.id
  ) rv on true
 where e.payment_provider = 'adyen' and e.provider_reference is not null
   and e.finished_at >= %(start)s and e.finished_at < %(end)s
 order by e.finished_at, e.id
"""
# The baseline's export: what the engine reads of each execution (its reversals' sum included), as CSV.
_EXPORT = """
copy (
    select e.tenant_id, e.id, e.provider_reference, e.amount, e.currency, e.status, e.finished_at,
           coalesce((select sum(r.amount) from billing.execution_reversals r
                      where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.status <> 'failed'), 0)
               as reversed
      from billing.billing_executions e
     where e.payment_provider = 'adyen'
) to stdout (format csv, header)
"""
# The baseline: payments FULL OUTER JOIN executions on the reference, in DuckDB, each pair classified.
_DUCKDB_JOIN = """
create table pairs as
with payments as (
    select "Psp Reference" as reference, "Merchant Reference" as merchant_reference, "Gross Currency" as currency,
           cast(round((coalesce("Gross Credit (GC)", 0) - coalesce("Gross Debit (GC)", 0))
                      * case "Gross Currency" when 'JPY' then 1 else 100 end) as bigint) as amount,
           "Batch Number" as batch
      from read_csv(?, header = true, all_varchar = false,
                    types = {'Gross Credit (GC)': 'DECIMAL(18,3)', 'Gross Debit (GC)': 'DECIMAL(18,3)',
                             'Psp Reference': 'VARCHAR', 'Merchant Reference': 'VARCHAR', 'Batch Number': 'VARCHAR'})
     where "Type" = 'Settled'
), ours as (
    select * from read_csv(?, header = true, types = {'amount': 'BIGINT', 'reversed': 'BIGINT'})
)
select coalesce(p.reference, o.provider_reference) as reference, o.tenant_id, o.id as execution_id,
       o.amount as expected_amount, o.currency as expected_currency, p.amount as reported_amount,
       p.currency as reported_currency,
       case when o.id is null then 'missing_internally'
            when p.reference is null then case when o.status = 'completed' then 'missing_from_file' else 'matched' end
            when p.currency <> o.currency then 'currency_mismatch'
            when p.amount <> o.amount then 'amount_mismatch'
            when o.status <> 'completed' then 'status_mismatch'
            else 'matched' end as class
  from payments p full outer join ours o on p.reference = o.provider_reference
"""


@dataclass(frozen=True, slots=True)
class Measured:
    seconds: float
    max_rss_mb: float
    # The process's own CPU time, user + system, all its threads (DuckDB runs several): on a shared machine the wall
    # time moves with everyone else's load, the CPU time much less. The database server's is in neither.
    cpu_seconds: float


@dataclass(frozen=True, slots=True)
class ProviderFile:
    path: Path
    lines: int
    payments: int
    expected: Counter[str]


def _tenant(n: int) -> UUID:
    return UUID(int=BASE_TENANT.int + n)


def seed(admin_url: str, day: date) -> float:
    """The executions, their reversals and the fee bands, a tenant batch per transaction on SEED_CONNECTIONS admin
    connections; then VACUUM (ANALYZE). The seconds it took."""
    started = time.perf_counter()
    each, extra = divmod(EXECUTIONS, TENANTS)
    batches = queue.SimpleQueue[tuple[UUID, int, int, int]]()
    for n in range(TENANTS):
        count = each + (1 if n < extra else 0)
        for first in range(1, count + 1, SEED_BATCH):
            batches.put((_tenant(n), n * 10, first, min(count, first + SEED_BATCH - 1)))
    failures: list[BaseException] = []
    start = datetime.combine(day, datetime.min.time(), UTC)

    def worker() -> None:
        try:
            with connect(admin_url, application_name="bench-settlement-seed") as conn:
                while True:
                    try:
                        tenant, salt, first, last = batches.get_nowait()
                    except queue.Empty:
                        return
                    common = {"tenant": tenant}
                    with conn.transaction():
                        conn.execute(_SCOPE, [str(tenant)])
                        conn.execute(_PLAN, {"salt": salt, "first": first, "last": last, "day": start})
                        conn.execute("create index on bench_plan (id)")
                        conn.execute("analyze bench_plan")
                        created = {"event_type": "billing.execution.created", "old_status": None}
                        conn.execute(_CREATE, common | created)
                        for event_type, old_status, statement in _STEPS:
                            conn.execute(statement, common | {"event_type": event_type, "old_status": old_status})
                        conn.execute(_REVERSALS, common)
                        if first == 1:
                            conn.execute(_FEE_BANDS, common)
        except BaseException as error:  # reported by the main thread: a half-seeded table measures nothing
            failures.append(error)

    threads = [threading.Thread(target=worker) for _ in range(SEED_CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    with connect(admin_url, application_name="bench-settlement-seed") as conn:  # autocommit: VACUUM
        for table in ("billing_executions", "execution_reversals", "billing_execution_events", "billing_outbox"):
            conn.execute(f"vacuum (analyze) billing.{table}")
    return time.perf_counter() - started


def seeded_day(admin_url: str) -> tuple[date, int] | None:
    """The day and number of the executions a previous run seeded, if the database has them."""
    with connect(admin_url, application_name="bench-settlement") as conn, conn.transaction():
        conn.execute(_SYSTEM_SCOPE)
        row = conn.execute(
            "select min(finished_at) as first, count(*) as n from billing.billing_executions"
            " where payment_provider = 'adyen'"
        ).fetchone()
    if row is None or not row["n"]:
        return None
    return row["first"].astimezone(UTC).date(), int(row["n"])


def _ours(admin_url: str, day: date) -> Iterator[dict[str, Any]]:
    start = datetime.combine(day, datetime.min.time(), UTC)
    with connect(admin_url, application_name="bench-settlement-file") as conn, conn.transaction():
        conn.execute(_SYSTEM_SCOPE)
        with conn.cursor(name="bench_ours") as cursor:
            cursor.itersize = 20_000
            cursor.execute(_OURS, {"start": start, "end": start + timedelta(days=1)})
            yield from cursor


class _FileMaker:
    """Writes the report's lines from our executions, one payment at a time, counting what it injects."""

    def __init__(self, writer: AdyenSettlementDetailWriter, total: int) -> None:
        self.writer = writer
        self.total = total
        self.expected: Counter[str] = Counter()
        self._rng = random.Random(13)
        self._batch = ""
        self._currencies: set[str] = set()
        self._later: list[tuple[ReportItem, str]] = []
        self._last_at = datetime.now(UTC)

    def add(self, position: int, ours: dict[str, Any]) -> None:
        batch = str(FIRST_BATCH + position * BATCHES // max(1, self.total))
        if batch != self._batch:
            self.close()
            self._batch = batch
        self._last_at = ours["finished_at"]
        account = f"BenchMerchant{UUID(str(ours['tenant_id'])).int - BASE_TENANT.int:02d}ECOM"
        completed = ours["status"] == "completed"
        draw = self._rng.random() if completed else 1.0
        if draw < OMITTED:
            self.expected["missing_from_file"] += 1
            return
        amount, currency = ours["amount"], ours["currency"]
        fees = adyen_card_fees(amount)
        if draw < AMOUNT_CHANGED:
            amount += 100
            self.expected["amount_mismatch"] += 1
        elif draw < CURRENCY_CHANGED:
            currency = "USD" if currency == "EUR" else "EUR"
            self.expected["currency_mismatch"] += 1
        elif draw < FEES_OUT_OF_BAND:
            fees["interchange"] = amount * 300 // 10_000
            self.expected["fee_out_of_range"] += 1
        # Only the changed payments differ (a duplicate's first listing matches); a failed one is a status mismatch.
        if not completed:
            self.expected["status_mismatch"] += 1
        elif draw >= FEES_OUT_OF_BAND:
            self.expected["matched"] += 1
        when = ours["finished_at"] + timedelta(seconds=30)
        psp, execution_id = ours["provider_reference"], str(ours["id"])
        payment = ReportItem(
            RecordKind.SETTLED, amount, currency, when, payment_reference=psp, execution_id=execution_id, fees=fees
        )
        self._write(payment, account)
        if FEES_OUT_OF_BAND <= draw < DUPLICATED:
            self._later.append((payment, account))
            self.expected["duplicate_in_file"] += 1
        kinds, amounts, references = ours["kinds"] or [], ours["amounts"] or [], ours["references"] or []
        other_amount = len(kinds) == 2 and self._rng.random() < PARTIAL_OF_ANOTHER_AMOUNT
        for n, (kind, recorded, modification) in enumerate(zip(kinds, amounts, references, strict=True)):
            listed = recorded + (1 if other_amount and n == 0 else 0)
            back = RecordKind.CHARGEBACK if kind == "chargeback" else RecordKind.REFUNDED
            later = when + timedelta(hours=1 + n)
            # In the payment's own currency, also when its Settled line's was changed: one injection, one finding.
            refund = ReportItem(back, listed, ours["currency"], later, psp, modification, execution_id, fees=NO_FEES)
            self._write(refund, account)
            self.expected["reversal_amount_mismatch" if listed != recorded else "matched"] += 1
        if DUPLICATED <= draw < UNRECORDED_REFUND and not kinds:
            modification = reference("M", execution_id, "unrecorded")
            later = when + timedelta(hours=2)
            self._write(
                ReportItem(RecordKind.REFUNDED, amount // 2, currency, later, psp, modification, execution_id), account
            )
            self.expected["reversal_missing"] += 1
        elif UNRECORDED_REFUND <= draw < UNKNOWN_REFERENCE:
            stranger = ReportItem(
                RecordKind.SETTLED, 1000, "EUR", when, reference("X", execution_id), None, f"order-{position}",
                fees=adyen_card_fees(1000),
            )  # fmt: skip
            self._write(stranger, account)
            self.expected["missing_internally"] += 1

    def close(self) -> None:
        """The batch's end: its duplicates listed again, a Fee and a ReserveAdjustment row, then its payouts."""
        batch = self._batch
        if not batch:
            return
        for item, account in self._later:
            self._write(item, account)
        self._later.clear()
        fee = ReportItem(
            RecordKind.FEE, 2500, "EUR", self._last_at, modification_reference=f"Fee batch {batch}", payment_method=None
        )
        self.writer.write(fee, batch=batch)
        reserve = ReportItem(
            RecordKind.OTHER, 100, "EUR", self._last_at, raw_type="ReserveAdjustment", payment_method=None
        )
        self.writer.write(reserve, batch=batch)
        self.expected["unmapped_type"] += 1
        if int(batch) < FIRST_BATCH + BATCHES - CARRIED_FORWARD:
            for currency in sorted(self._currencies | {"EUR"}):
                off_by = UNBALANCED_BY if int(batch) == UNBALANCED_BATCH and currency == "EUR" else 0
                self.writer.payout(batch, currency, off_by=off_by, when=self._last_at)
                self.expected["payout_mismatch"] += 1 if off_by else 0
        self._currencies.clear()
        self._batch = ""

    def _write(self, item: ReportItem, account: str) -> None:
        self.writer.write(item, batch=self._batch, merchant_account=account)
        self._currencies.add(item.currency)


def write_provider_file(admin_url: str, day: date, directory: Path, name: str) -> ProviderFile:
    """The day's Settlement Detail Report from the seeded executions, with the injected discrepancies counted."""
    with connect(admin_url) as conn, conn.transaction():
        conn.execute(_SYSTEM_SCOPE)
        row = conn.execute(
            "select count(*) as n from billing.billing_executions where payment_provider = 'adyen'"
            " and provider_reference is not null"
        ).fetchone()
    total = int(row["n"]) if row else 0
    path = directory / name
    with path.open("w", newline="") as stream:
        maker = _FileMaker(AdyenSettlementDetailWriter(stream, company_account="BenchCompany"), total)
        for position, ours in enumerate(_ours(admin_url, day)):
            maker.add(position, ours)
        maker.close()
    return ProviderFile(path, maker.writer.lines, total, maker.expected)


def measure(argv: Sequence[str], env: dict[str, str], stdout: Path) -> tuple[Measured, int]:
    """Run `argv` in a fresh process; its wall time, its own peak RSS and CPU time (wait4's rusage of that child
    alone) and its exit code."""
    started = time.perf_counter()
    with stdout.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, cwd=REPO_ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime), process.returncode


def baseline(provider_csv: Path, directory: Path, worker_url: str) -> None:
    """The baseline process: export the executions as billing_worker, then DuckDB's FULL OUTER JOIN of the two CSVs;
    prints its phases' seconds and the classes it found as JSON."""
    import duckdb

    started = time.perf_counter()
    executions_csv = directory / "executions.csv"
    with (
        connect(worker_url, application_name="bench-settlement-baseline") as conn,
        conn.transaction(),
        executions_csv.open("wb") as out,
    ):
        conn.execute(_SYSTEM_SCOPE)
        with conn.cursor().copy(_EXPORT) as copy:
            for data in copy:
                out.write(data)
    exported = time.perf_counter() - started
    db = duckdb.connect()
    db.execute(_DUCKDB_JOIN, [str(provider_csv), str(executions_csv)])
    differing = directory / "duckdb_differences.csv"
    db.execute(f"copy (select * from pairs where class <> 'matched') to '{differing}' (header)")
    counts = {str(name): int(n) for name, n in db.execute("select class, count(*) from pairs group by 1").fetchall()}
    threads = db.execute("select current_setting('threads')").fetchone()
    print(json.dumps({"export_seconds": exported, "join_seconds": time.perf_counter() - started - exported,
                      "counts": counts, "threads": None if threads is None else int(threads[0])}))  # fmt: skip


def _met(condition: bool) -> str:
    return "met" if condition else "NOT met"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--reuse", action="store_true", help="keep a database seeded by an earlier run")
    parser.add_argument("--profile", type=Path, help="run the report under cProfile, its stats to this file")
    parser.add_argument(
        "--baseline", nargs=3, metavar=("PROVIDER_CSV", "DIRECTORY", "WORKER_URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.baseline:
        baseline(Path(args.baseline[0]), Path(args.baseline[1]), args.baseline[2])
        return 0

    run_started = time.perf_counter()
    from psycopg.conninfo import make_conninfo

    admin_url = make_conninfo(database_url(), dbname=DATABASE)
    found = seeded_day(admin_url) if args.reuse else None
    if found is None:
        admin_url = fresh_database(database_url(), DATABASE)
        day = datetime.now(UTC).date() - timedelta(days=1)
        took = seed(admin_url, day)
        print(
            f"settlement reconciliation: {EXECUTIONS:,} Adyen executions over {TENANTS} tenants finished on {day}, "
            f"with their lifecycle events, outbox rows and reversals, seeded and vacuumed in {took:.0f} s"
        )
    else:
        day, seeded = found
        # The seeded database keeps its data; migrations added since it was seeded are applied to it.
        from billing.db.migrations import apply_migrations

        with connect(admin_url) as conn:
            applied = apply_migrations(conn)
        print(f"settlement reconciliation: reusing {seeded:,} Adyen executions finished on {day}"
              + (f" (migrations applied since: {', '.join(applied)})" if applied else ""))  # fmt: skip
    worker_url = login_url(admin_url, DatabaseRole.WORKER)
    directory = Path(tempfile.mkdtemp(prefix="bench-settlement-"))
    try:
        started = time.perf_counter()
        name = f"settlement_detail_report_{datetime.now(UTC):%Y%m%dT%H%M%S}.csv"
        provider_file = write_provider_file(admin_url, day, directory, name)
        size = provider_file.path.stat().st_size / 1e6
        print(f"  provider file: {provider_file.lines:,} lines ({size:.0f} MB) against {provider_file.payments:,} "
              f"executions, written in {time.perf_counter() - started:.0f} s")  # fmt: skip
        env = {**os.environ, role_url_variable(DatabaseRole.WORKER): worker_url}
        report = [sys.executable, "-m", "billing.settlement", "run", "--provider", PROVIDER, "--file",
                  str(provider_file.path), "--date", day.isoformat(), "--out", str(directory / "out")]  # fmt: skip
        if args.profile is not None:
            report[1:1] = ["-m", "cProfile", "-o", str(args.profile.resolve())]
        engine, code = measure(report, env, directory / "report.json")
        if code != 0:
            raise SystemExit(f"the report failed (exit {code})")
        printed = json.loads((directory / "report.json").read_bytes())
        # The same report without the staged fast path, for the figure it replaces (and the same findings).
        row_by_row, code = measure([*report, "--row-by-row", "--dry-run"], env, directory / "row_by_row.json")
        if code != 0:
            raise SystemExit(f"the row-by-row report failed (exit {code})")
        same = json.loads((directory / "row_by_row.json").read_bytes())["counts"] == printed["counts"]
        duck, code = measure([sys.executable, __file__, "--baseline", str(provider_file.path), str(directory),
                              worker_url], env, directory / "baseline.json")  # fmt: skip
        if code != 0:
            raise SystemExit(f"the baseline failed (exit {code})")
        duck_found = json.loads((directory / "baseline.json").read_text())
        _print(printed, provider_file, engine, duck, duck_found)
        print(f"  the same report row by row (--row-by-row --dry-run: nothing saved or written), fresh process: "
              f"{row_by_row.seconds:6.1f} s   CPU {row_by_row.cpu_seconds:6.1f} s   peak RSS "
              f"{row_by_row.max_rss_mb:5.0f} MB; the same counts: {same}; staged is "
              f"{row_by_row.seconds / engine.seconds:.1f}x faster")  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"whole run: {time.perf_counter() - run_started:.0f} s")
    return 0


def _print(printed: dict[str, Any], provider_file: ProviderFile, engine: Measured, duck: Measured,
           duck_found: dict[str, Any]) -> None:  # fmt: skip
    counts = {k: v for k, v in printed["counts"].items() if v}
    differs = {k: (counts.get(k, 0), v) for k, v in provider_file.expected.items() if counts.get(k, 0) != v}
    unbalanced = [p["batch"] for p in printed["payouts"] if p["balances"] is False]
    waiting = [p["batch"] for p in printed["payouts"] if p["balances"] is None]
    print(f"  report {printed['report_id']}: {printed['discrepancy_count']:,} discrepancies, "
          f"{counts.get('matched', 0):,} matched; by class {counts}")  # fmt: skip
    print(f"    payouts: {len(printed['payouts'])} checked, unbalanced {sorted(set(unbalanced))}, "
          f"not paid out yet {sorted(set(waiting))}; the injected ones "
          f"{'all found' if not differs else f'differ (found, injected): {differs}'}")  # fmt: skip
    print(f"  the whole report (parse, match, save with COPY, JSON/CSV/HTML), fresh process: {engine.seconds:6.1f} s"
          f"   CPU {engine.cpu_seconds:6.1f} s   peak RSS {engine.max_rss_mb:5.0f} MB")  # fmt: skip
    print(f"  baseline: COPY executions out {duck_found['export_seconds']:.1f} s + DuckDB FULL OUTER JOIN "
          f"{duck_found['join_seconds']:.1f} s ({duck_found['threads']} threads), fresh process: {duck.seconds:6.1f} s"
          f"   CPU {duck.cpu_seconds:6.1f} s   peak RSS {duck.max_rss_mb:5.0f} MB")  # fmt: skip
    print(f"    DuckDB's pairs by class: {duck_found['counts']}")
    ratio = engine.seconds / duck.seconds
    print(f"  ratio report / baseline: {ratio:.2f} (wall), {engine.cpu_seconds / duck.cpu_seconds:.2f} (CPU)")
    print(f"  goal time <= {MAX_RATIO:.0f} x DuckDB -> {_met(ratio <= MAX_RATIO)} ({ratio:.2f})")
    print(f"  goal peak RSS <= {MAX_RSS_MB} MB -> {_met(engine.max_rss_mb <= MAX_RSS_MB)} "
          f"({engine.max_rss_mb:.0f} MB)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
