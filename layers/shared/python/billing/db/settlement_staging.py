"""SQL of the settlement report's fast path: a run's file lines staged, the exact matches decided in one statement.

The engine (billing.settlement.reconciliation.staged) hands over each file's data lines and the layout of its
header; here they are copied into billing.settlement_staged_lines (sql/20261223_billing_settlement_staging.sql),
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

from psycopg import sql
from psycopg.rows import tuple_row

from billing.db.connection import Connection
from billing.db.settlement_queries import extend_statement_timeout, uuid_of
from billing.db.tenancy import system_transaction
from billing.domain.status import ExecutionStatus
from billing.settlement.reconciliation.ours import OurExecution
from billing.settlement.reconciliation.ports import FEE_TYPES, MatchedSums, Rules, StagedLayout

# Rows per pickled batch of a spool file: small enough to stay in the MB, large enough to cost little per row.
_SPOOL_BATCH: Final = 10_000
_CLEAN_STALE = "select billing.discard_stale_settlement_runs()"
_START = "insert into billing.settlement_staging_runs (run_id, provider) values (%s, %s)"
_COPY_LINES = "copy billing.settlement_staged_lines (run_id, file, line_number, line, cells) from stdin"
_DISCARD = "select billing.discard_settlement_run(%(run)s)"
_ANALYZE = "select billing.analyze_settlement_staging()"

# One file's cells by name. A line's cells are its `cells`, or its `line` cut at commas (it has no quote, so that is
# what the csv module reads); a position past the last cell (a line of the wrong width) reads as empty. OFFSET 0
# keeps the planner from inlining the split into every cell reference: one split per line, not twenty (7x faster).
_FILE_CELLS = """
select s.file, s.line_number, cardinality(c.cells) = {width} as well_formed,
       {type} as type, {psp} as psp, {payment_method} as payment_method, {creation_date} as creation_date,
       {time_zone} as time_zone, {gross_currency} as gross_currency, {gross_debit} as gross_debit,
       {gross_credit} as gross_credit, {net_currency} as net_currency, {net_debit} as net_debit,
       {net_credit} as net_credit, {batch} as batch, {exchange_rate} as exchange_rate,
       {fee_1} as fee_1, {fee_2} as fee_2, {fee_3} as fee_3, {fee_4} as fee_4
  from billing.settlement_staged_lines s
 cross join lateral (select coalesce(s.cells, string_to_array(s.line, ',')) offset 0) c (cells)
 where s.run_id = %(run)s and s.file = {file}
"""

# One cell of every line of one file (a Psp Reference, a Creation Date), without splitting the whole line.
_FILE_CELL = """
select coalesce(s.cells[{position}], split_part(s.line, ',', {position})) as cell
  from billing.settlement_staged_lines s
 where s.run_id = %(run)s and s.file = {file}
"""

# An amount cell as the parser converts it (billing.settlement.formats.amounts.to_minor_units): empty is zero, else
# a plain decimal of at most 32 characters, scaled by the currency's exponent; NULL when it is not one. Exactness
# (no more decimals than the currency has) and the bound are checked on the result.
_UNSIGNED = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
_SIGNED = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?$"


def _amount(cell: str, pattern: str) -> str:
    return (
        f"case when k.{cell} = '' then 0::numeric"
        f" when length(k.{cell}) <= 32 and k.{cell} ~ '{pattern}' then k.{cell}::numeric * x.scale end"
    )


# The gross is not converted: a matched line's Gross Credit is the execution's amount as Adyen writes it.
_AMOUNTS: Final = {
    "net_debit": _UNSIGNED,
    "net_credit": _UNSIGNED,
    "fee_1": _SIGNED,
    "fee_2": _SIGNED,
    "fee_3": _SIGNED,
    "fee_4": _SIGNED,
}
_CONVERTED = ",\n           ".join(f"{_amount(cell, pattern)} as {cell}" for cell, pattern in _AMOUNTS.items())
_EXACT = "\n       and ".join(f"m.{cell} = trunc(m.{cell}) and abs(m.{cell}) <= %(max_amount)s" for cell in _AMOUNTS)
_DATE_TIME = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]) ([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$"

# sql.SQL.format reads braces: the pattern's repetition counts are written doubled.
_DATE_TIME_IN_SQL = _DATE_TIME.replace("{", "{{").replace("}", "}}")

# The exact matches, as billing.settlement.reconciliation.matching.Matcher decides a settled row it finds no problem
# with (Matcher._payment_agrees), restricted to lines whose every cell the parser would accept without a question:
# * a Settled line of the file's width whose Psp Reference no other line of the run carries (so it is listed once,
#   and no refund or chargeback line refers to it), gross and net in one reportable currency, amounts exact in that
#   currency, a fixed-offset TimeZone with a real Creation Date, a numeric batch, a positive exchange rate;
# * exactly one execution of the provider carries the reference, completed, in that currency, its amount written
#   in the Gross Credit cell as Adyen writes amounts (another spelling of the same amount is left to the parser);
# * its fees within the tenant's band for the payment method (or for every method, "*"), when there is one.
# CASE guards every cast: SQL does not promise the order in which a WHERE clause's conditions are evaluated.
_DECIDE = f"""
with cells as (
{{cells}}
), repeated as (
    select cell as psp from ({{references}}) r where cell <> '' group by cell having count(*) > 1
), scales as (
    select code, exponent, round(power(10::numeric, exponent)) as scale
      from unnest(%(codes)s::text[], %(exponents)s::int[]) u (code, exponent)
), dates as (
    -- A day's lines share some tens of thousands of creation times: each is checked once, not once a line.
    select d.cell as creation_date from (select distinct cell from ({{dates}}) c) d
     where case when d.cell ~ '{_DATE_TIME_IN_SQL}'
                then substr(d.cell, 9, 2)::int <= extract(day from make_date(
                         substr(d.cell, 1, 4)::int, substr(d.cell, 6, 2)::int, 1) + interval '1 month - 1 day')
                else false end
), amounts as (
    select m.file, m.line_number, m.psp, m.currency, m.payment_method, m.batch, m.gross_credit, m.exponent,
           m.scale, (m.net_credit - m.net_debit)::bigint as net,
           m.fee_1::bigint as fee_1, m.fee_2::bigint as fee_2, m.fee_3::bigint as fee_3, m.fee_4::bigint as fee_4
      from (
        select k.file, k.line_number, k.psp, k.net_currency as currency, k.payment_method, k.batch,
               k.gross_credit, x.exponent, x.scale,
               {_CONVERTED}
          from cells k
          join scales x on x.code = k.net_currency
          join dates d on d.creation_date = k.creation_date
         where k.well_formed and k.type = 'Settled' and k.gross_currency = k.net_currency and k.gross_debit = ''
           and k.psp ~ '^[A-Za-z0-9]+$' and length(k.psp) <= 64
           and k.time_zone = any(%(zones)s::text[])
           and (k.batch = '' or k.batch ~ '^[0-9]+$' and length(k.batch) <= 18)
           and (k.exchange_rate = ''
                or case when length(k.exchange_rate) <= 32 and k.exchange_rate ~ '^[0-9]+(\\.[0-9]+)?$'
                        then btrim(k.exchange_rate, '0.') <> '' else false end)
           and not exists (select 1 from repeated r where r.psp = k.psp)
        -- OFFSET 0: each cell converted once, however often the checks below name it
        offset 0
      ) m
     where {_EXACT}
       and (m.net_debit = 0 or m.net_credit = 0)
), named as (
    select a.file, a.line_number, a.currency, a.payment_method, a.batch, a.net,
           a.fee_1, a.fee_2, a.fee_3, a.fee_4, a.fee_1 + a.fee_2 + a.fee_3 + a.fee_4 as fees,
           e.tenant_id, e.id as execution_id, e.amount as gross, e.currency as execution_currency, e.status,
           -- the execution's amount written as Adyen writes it (12.34 EUR, 1500 JPY, 1.234 KWD)
           a.gross_credit = round(e.amount / a.scale, a.exponent)::text as same_amount,
           count(*) over (partition by a.file, a.line_number) as executions
      from amounts a
      join billing.billing_executions e on e.payment_provider = %(provider)s and e.provider_reference = a.psp
), fast as (
    select n.*
      from named n
      left join billing.settlement_fee_bands own
        on own.provider = %(provider)s and own.tenant_id = n.tenant_id and own.payment_method = n.payment_method
       and own.currency = n.currency
      left join billing.settlement_fee_bands every
        on every.provider = %(provider)s and every.tenant_id = n.tenant_id and every.payment_method = '*'
       and every.currency = n.currency
      cross join lateral (
          select coalesce(own.fixed_minor, every.fixed_minor) as fixed,
                 coalesce(own.min_basis_points, every.min_basis_points) as low_bp,
                 coalesce(own.max_basis_points, every.max_basis_points) as high_bp
      ) b
     where n.executions = 1 and n.status = 'completed' and n.execution_currency = n.currency and n.same_amount
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
    select s.file, s.line_number, coalesce(s.cells, string_to_array(s.line, ','))
      from billing.settlement_staged_lines s
     where s.run_id = %(run)s
       and not exists (select 1 from billing.settlement_staged_matches m
                        where m.run_id = s.run_id and m.file = s.file and m.line_number = s.line_number)
     order by s.file, s.line_number
) to stdout (format binary)
"""
_PERIOD = """
e.payment_provider = %(provider)s and e.status = 'completed' and e.provider_reference is not null
   and e.finished_at >= %(start)s and e.finished_at < %(end)s
"""
_EXPECTED = f"select e.currency, sum(e.amount)::bigint from billing.billing_executions e where {_PERIOD} group by 1"
_UNMATCHED = f"""
copy (
    select uuid_send(e.tenant_id), uuid_send(e.id), e.provider_reference, e.amount, e.currency, e.finished_at
      from billing.billing_executions e
     where {_PERIOD}
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

    def stage(self, run: UUID, file: int, lines: Iterable[tuple[int, str | None, list[str] | None]]) -> None:
        """Copy one file's data lines: (line number, the line if it has no quote, else its cells)."""
        with self._conn.transaction(), self._conn.cursor().copy(_COPY_LINES) as copy:
            for number, line, cells in lines:
                copy.write_row((run, file, number, line, cells))

    def decide(self, run: UUID, provider: str, layouts: Sequence[StagedLayout], rules: Rules) -> list[MatchedSums]:
        """Record the run's exact matches; their sums per file and currency."""
        union = sql.SQL("union all\n").join
        statement = sql.SQL(_DECIDE).format(
            cells=union(_file_cells(file, layout) for file, layout in enumerate(layouts)),
            references=union(_file_cell(file, layout.psp_reference) for file, layout in enumerate(layouts)),
            dates=union(_file_cell(file, layout.creation_date) for file, layout in enumerate(layouts)),
        )
        params = {
            "run": run,
            "provider": provider,
            "codes": list(rules.exponents),
            "exponents": list(rules.exponents.values()),
            "zones": list(rules.time_zones),
            "max_amount": rules.max_amount,
        }
        with system_transaction(self._conn), self._conn.cursor(row_factory=tuple_row) as cursor:
            extend_statement_timeout(self._conn)
            # The lines just staged, counted for the planner (the function analyses as the tables' owner); and
            # one statement of whole-run hash joins, never a nested loop over a million lines. Memory for the
            # joins' hash tables, on the database's side.
            self._conn.execute(_ANALYZE)
            self._conn.execute("set local enable_nestloop = off")
            self._conn.execute("set local enable_mergejoin = off")
            self._conn.execute("set local enable_memoize = off")
            self._conn.execute("set local work_mem = '256MB'")
            rows = cursor.execute(statement, params).fetchall()
        # The matches just recorded, counted for the anti-joins that read them next (a separate transaction: the
        # statistics then cover the committed rows).
        with self._conn.transaction():
            self._conn.execute(_ANALYZE)
        return _sums(rows)

    def left_over(self, run: UUID) -> Iterator[tuple[int, int, list[str]]]:
        """Every staged line not matched, as (file, line number, cells), in file and line order; spooled first."""
        return self._spooled(_LEFT_OVER, {"run": run}, ("int2", "int4", "text[]"))

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
        completed = ExecutionStatus.COMPLETED
        for tenant, execution, reference, amount, currency, finished in rows:
            tenant_id = tenants.get(tenant)
            if tenant_id is None:
                tenant_id = tenants[tenant] = uuid_of(tenant)
            yield OurExecution(
                tenant_id, uuid_of(execution), provider, reference, amount, currency, completed, None, finished
            )

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


def _file_cell(file: int, position: int | None) -> sql.Composed:
    if position is None:  # a file without the column: no cell to count
        return sql.SQL("select ''::text as cell where false")
    return sql.SQL(_FILE_CELL).format(file=sql.Literal(file), position=sql.Literal(position))


def _file_cells(file: int, layout: StagedLayout) -> sql.Composed:
    def cell(position: int | None) -> sql.Composable:
        if position is None:
            return sql.SQL("''::text")
        return sql.SQL("coalesce(c.cells[{}], '')").format(sql.Literal(position))

    fees = {f"fee_{n}": cell(position) for n, position in enumerate(layout.fees, start=1)}
    return sql.SQL(_FILE_CELLS).format(
        file=sql.Literal(file),
        width=sql.Literal(layout.width),
        type=cell(layout.type),
        psp=cell(layout.psp_reference),
        payment_method=cell(layout.payment_method),
        creation_date=cell(layout.creation_date),
        time_zone=cell(layout.time_zone),
        gross_currency=cell(layout.gross_currency),
        gross_debit=cell(layout.gross_debit),
        gross_credit=cell(layout.gross_credit),
        net_currency=cell(layout.net_currency),
        net_debit=cell(layout.net_debit),
        net_credit=cell(layout.net_credit),
        batch=cell(layout.batch),
        exchange_rate=cell(layout.exchange_rate),
        **fees,
    )


def _sums(rows: Sequence[tuple[Any, ...]]) -> list[MatchedSums]:
    per_currency: dict[tuple[int, str], tuple[Any, ...]] = {}
    methods: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}
    batches: dict[tuple[int, str], dict[str, tuple[int, int]]] = {}
    for row in rows:
        file, currency, method, batch, grouped = row[:5]
        key = (file, currency)
        if grouped == _PER_CURRENCY:
            per_currency[key] = row
        elif grouped == _PER_METHOD:
            if row[-1]:
                methods.setdefault(key, {})[method] = (int(row[-2]), int(row[-1]))
        elif grouped == _PER_BATCH:
            batches.setdefault(key, {})[batch] = (int(row[7]), int(row[5]))
    sums: list[MatchedSums] = []
    for (file, currency), row in sorted(per_currency.items()):
        fee_types = {
            fee: (int(row[9 + 2 * n]), int(row[10 + 2 * n])) for n, fee in enumerate(FEE_TYPES) if row[10 + 2 * n]
        }
        sums.append(
            MatchedSums(
                file=file,
                currency=currency,
                items=int(row[5]),
                gross=int(row[6]),
                net=int(row[7]),
                fees=int(row[8]),
                fee_types=fee_types,
                payment_methods=methods.get((file, currency), {}),
                batches=batches.get((file, currency), {}),
            )
        )
    return sums
