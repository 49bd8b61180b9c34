"""SQL of the settlement report's fast path: a run's file lines staged, the exact matches decided in one statement.

The engine (billing.settlement.reconciliation.staged) hands over each file's data lines as the parser read them;
here they are copied into billing.settlement_staged_lines (sql/20261223_billing_settlement_staging.sql),
and `decide` runs the one statement that finds the lines that match exactly, records them (with the execution each
listed) in billing.settlement_staged_matches and returns their sums. Every other line is streamed back to a local
file for the Python parser and matcher, as are the period's completed executions that no matched line listed.

Each call is its own transaction; none is open while the engine reads a file (it reads from local disk before
staging) or works on what came back (the leftovers are spooled to disk first, since the engine's own lookups run
on this connection while it reads them).
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import IO, Any, Final
from uuid import UUID, uuid4

from psycopg.rows import dict_row, tuple_row

from billing.db.connection import Connection
from billing.db.settlement_queries import (
    OWED_A_LISTING,
    PERIOD_COLUMNS,
    extend_statement_timeout,
    period_execution,
    uuid_of,
)
from billing.db.tenancy import system_transaction
from billing.settlement.reconciliation.ours import OurExecution
from billing.settlement.reconciliation.ports import FEE_TYPES, MatchedSums, StagedLine

# Rows per pickled batch of a spool file: small enough to stay in the MB, large enough to cost little per row.
_SPOOL_BATCH: Final = 10_000
_CLEAN_STALE = "select billing.discard_stale_settlement_runs()"
_START = "insert into billing.settlement_staging_runs (run_id, provider) values (%s, %s)"
_COPY_LINES = (
    "copy billing.settlement_staged_lines (run_id, file, line_number, psp_reference, gross, net,"
    " fee_1, fee_2, fee_3, fee_4, currency, payment_method, batch) from stdin (format binary)"
)
# Binary COPY: integers travel as integers, and no text escaping on either side.
_COPY_TYPES: Final = (
    "uuid", "int2", "int4", "text", "int8", "int8", "int8", "int8", "int8", "int8", "text", "text", "text",
)  # fmt: skip
_DISCARD = "select billing.discard_settlement_run(%(run)s)"
_ANALYZE = "select billing.analyze_settlement_staging(%s)"

# The exact matches, as billing.settlement.reconciliation.matching.Matcher decides a settled row it finds no problem
# with (Matcher._payment_agrees), for the items the parser read (gross and net in one currency) whose Psp Reference
# no other line of the run carries (so each is listed once, and no refund or chargeback line refers to it):
# exactly one execution of the provider carries the reference, completed, of that amount and currency, and its
# fees are within the tenant's band for the payment method (or for every method, "*") when there is one.
_DECIDE = """
with repeated as (
    select psp_reference from billing.settlement_staged_lines
     where run_id = %(run)s and psp_reference <> '' group by 1 having count(*) > 1
), named as (
    select s.file, s.line_number, s.currency, s.payment_method, s.batch, s.gross, s.net,
           s.fee_1, s.fee_2, s.fee_3, s.fee_4, s.fee_1 + s.fee_2 + s.fee_3 + s.fee_4 as fees,
           e.tenant_id, e.id as execution_id, e.amount, e.currency as execution_currency, e.status,
           count(*) over (partition by s.file, s.line_number) as executions
      from billing.settlement_staged_lines s
      join billing.billing_executions e on e.payment_provider = %(provider)s and e.provider_reference = s.psp_reference
     where s.run_id = %(run)s and s.gross is not null
       and not exists (select 1 from repeated r where r.psp_reference = s.psp_reference)
), bands as materialized (
    select tenant_id, payment_method, currency, fixed_minor, min_basis_points, max_basis_points
      from billing.settlement_fee_bands where provider = %(provider)s
), fast as (
    select n.*
      from named n
      left join bands own
        on own.tenant_id = n.tenant_id and own.payment_method = n.payment_method and own.currency = n.currency
      left join bands every on every.tenant_id = n.tenant_id and every.payment_method = '*'
       and every.currency = n.currency
      cross join lateral (
          select coalesce(own.fixed_minor, every.fixed_minor) as fixed,
                 coalesce(own.min_basis_points, every.min_basis_points) as low_bp,
                 coalesce(own.max_basis_points, every.max_basis_points) as high_bp
      ) b
     where n.executions = 1 and n.status = 'completed' and n.execution_currency = n.currency
       and n.amount = n.gross
       and (b.fixed is null
            or n.fees between b.fixed + floor(abs(n.gross)::numeric * b.low_bp / 10000)
                          and b.fixed + ceil(abs(n.gross)::numeric * b.high_bp / 10000))
), saved as (
    insert into billing.settlement_staged_matches (run_id, file, line_number, tenant_id, execution_id)
    select %(run)s, file, line_number, tenant_id, execution_id from fast
)
select file, currency, payment_method, batch, grouping(payment_method, batch) as grouped,
       count(*) as lines, sum(gross) as gross, sum(net) as net, sum(fees) as fees,
       sum(fee_1) as fee_1, count(*) filter (where fee_1 <> 0) as fee_1_lines,
       sum(fee_2) as fee_2, count(*) filter (where fee_2 <> 0) as fee_2_lines,
       sum(fee_3) as fee_3, count(*) filter (where fee_3 <> 0) as fee_3_lines,
       sum(fee_4) as fee_4, count(*) filter (where fee_4 <> 0) as fee_4_lines,
       sum(fees) filter (where fee_1 <> 0 or fee_2 <> 0 or fee_3 <> 0 or fee_4 <> 0) as charged,
       count(*) filter (where fee_1 <> 0 or fee_2 <> 0 or fee_3 <> 0 or fee_4 <> 0) as charged_lines
  from fast
 group by grouping sets ((file, currency), (file, currency, payment_method), (file, currency, batch))
"""
# grouping(payment_method, batch): 1 for the per-currency rows (both rolled up) is 3, per method 1, per batch 2.
_PER_CURRENCY, _PER_METHOD, _PER_BATCH = 3, 1, 2

_LEFT_OVER = """
copy (
    select s.file, s.line_number
      from billing.settlement_staged_lines s
     where s.run_id = %(run)s
       and not exists (select 1 from billing.settlement_staged_matches m
                        where m.run_id = s.run_id and m.file = s.file and m.line_number = s.line_number)
     order by s.file, s.line_number
) to stdout (format binary)
"""
_EXPECTED = (
    f"select e.currency, sum(e.amount)::bigint from billing.billing_executions e where {OWED_A_LISTING} group by 1"
)
_UNMATCHED = f"""
copy (
    select {PERIOD_COLUMNS}
      from billing.billing_executions e
     where {OWED_A_LISTING}
       and not exists (select 1 from billing.settlement_staged_matches m
                        where m.run_id = %(run)s and m.tenant_id = e.tenant_id and m.execution_id = e.id)
     order by e.finished_at, e.tenant_id, e.id
) to stdout (format binary)
"""


class PostgresSettlementStaging:
    """The staged fast path's SQL over one connection; one run at a time (begin, stage, decide, read, discard)."""

    def __init__(self, conn: Connection, *, spool_directory: str | None = None) -> None:
        self._conn = conn
        self._spool_directory = spool_directory

    def begin(self, provider: str) -> UUID:
        """A new run's id, after deleting what runs that died left behind."""
        run = uuid4()
        with self._conn.transaction():
            self._conn.execute(_CLEAN_STALE)
            self._conn.execute(_START, [run, provider])
        return run

    def stage(self, run: UUID, file: int, lines: Iterable[StagedLine]) -> None:
        """Copy one file's data lines."""
        with self._conn.transaction(), self._conn.cursor().copy(_COPY_LINES) as copy:
            copy.set_types(list(_COPY_TYPES))
            write = copy.write_row
            for line in lines:
                write((run, file, *line))

    def decide(self, run: UUID, provider: str) -> list[MatchedSums]:
        """Record the run's exact matches; their sums per file and currency."""
        with system_transaction(self._conn), self._conn.cursor(row_factory=dict_row) as cursor:
            extend_statement_timeout(self._conn)
            # The lines just staged, counted for the planner (the function analyses as the tables' owner); and
            # one statement of whole-run hash joins, never a nested loop over a million lines. Memory for the
            # joins' hash tables, on the database's side.
            self._conn.execute(_ANALYZE, ["lines"])
            self._conn.execute("set local enable_nestloop = off")
            self._conn.execute("set local enable_mergejoin = off")
            self._conn.execute("set local work_mem = '256MB'")
            rows = cursor.execute(_DECIDE, {"run": run, "provider": provider}).fetchall()
        # The matches just recorded, counted for the anti-joins that read them next (a separate transaction: the
        # statistics then cover the committed rows).
        with self._conn.transaction():
            self._conn.execute(_ANALYZE, ["matches"])
        return _sums(rows)

    def left_over(self, run: UUID) -> Iterator[tuple[int, int]]:
        """Every staged line not matched, as (file, line number), in file and line order; spooled first."""
        return self._spooled(_LEFT_OVER, {"run": run}, ("int2", "int4"))

    def expected(self, provider: str, start: datetime, end: datetime) -> dict[str, int]:
        """The amounts of the provider's executions completed in [start, end), per currency."""
        with system_transaction(self._conn), self._conn.cursor(row_factory=tuple_row) as cursor:
            extend_statement_timeout(self._conn)
            rows = cursor.execute(_EXPECTED, {"provider": provider, "start": start, "end": end}).fetchall()
        return {currency: int(amount) for currency, amount in rows}

    def unmatched(self, run: UUID, provider: str, start: datetime, end: datetime) -> Iterator[OurExecution]:
        """The provider's executions completed in [start, end) that no matched line listed, in the period scan's
        order (finished_at, tenant_id, id); spooled first."""
        params = {"run": run, "provider": provider, "start": start, "end": end}
        rows = self._spooled(_UNMATCHED, params, ("bytea", "bytea", "text", "int8", "text", "timestamptz"))
        tenants: dict[bytes, UUID] = {}
        for row in rows:
            tenant_id = tenants.get(row[0])
            if tenant_id is None:
                tenant_id = tenants[row[0]] = uuid_of(row[0])
            yield period_execution(provider, tenant_id, row)

    def discard(self, run: UUID) -> None:
        with self._conn.transaction():
            self._conn.execute(_DISCARD, {"run": run})

    def _spooled(self, statement: str, params: Mapping[str, Any], types: Sequence[str]) -> Iterator[Any]:
        """The rows of a COPY TO, written to a local file in one transaction, then read back from it."""
        with tempfile.TemporaryFile(dir=self._spool_directory, prefix="settlement-staged-") as spool:
            with system_transaction(self._conn):
                extend_statement_timeout(self._conn)
                self._conn.execute("set local enable_nestloop = off")
                self._write_spool(spool, statement, params, types)
            spool.seek(0)
            yield from _read_spool(spool)

    def _write_spool(self, spool: IO[bytes], statement: str, params: Mapping[str, Any], types: Sequence[str]) -> None:
        with self._conn.cursor().copy(statement, params) as copy:
            copy.set_types(list(types))
            batch: list[tuple[Any, ...]] = []
            for row in copy.rows():
                batch.append(row)
                if len(batch) >= _SPOOL_BATCH:
                    pickle.dump(batch, spool, protocol=pickle.HIGHEST_PROTOCOL)
                    batch = []
            if batch:
                pickle.dump(batch, spool, protocol=pickle.HIGHEST_PROTOCOL)


def _read_spool(spool: IO[bytes]) -> Iterator[Any]:
    while True:
        try:
            batch = pickle.load(spool)  # noqa: S301 - our own file, written just above
        except EOFError:
            return
        yield from batch


def _sums(rows: Sequence[Mapping[str, Any]]) -> list[MatchedSums]:
    """The grouping sets' rows as one MatchedSums per file and currency."""
    per_currency: dict[tuple[int, str], Mapping[str, Any]] = {}
    methods: dict[tuple[int, str], dict[str | None, int]] = {}
    batches: dict[tuple[int, str], dict[str | None, tuple[int, int]]] = {}
    for row in rows:
        key = (row["file"], row["currency"])
        if row["grouped"] == _PER_CURRENCY:
            per_currency[key] = row
        elif row["grouped"] == _PER_METHOD:
            if row["charged_lines"]:
                methods.setdefault(key, {})[row["payment_method"]] = int(row["charged"])
        elif row["grouped"] == _PER_BATCH:
            batches.setdefault(key, {})[row["batch"]] = (int(row["net"]), int(row["lines"]))
    return [
        MatchedSums(
            file=file,
            currency=currency,
            items=int(row["lines"]),
            gross=int(row["gross"]),
            net=int(row["net"]),
            fees=int(row["fees"]),
            fee_types={fee: int(row[f"fee_{n}"]) for n, fee in enumerate(FEE_TYPES, start=1) if row[f"fee_{n}_lines"]},
            payment_methods=methods.get((file, currency), {}),
            batches=batches.get((file, currency), {}),
        )
        for (file, currency), row in sorted(per_currency.items())
    ]
