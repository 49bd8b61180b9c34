-- Staging tables for the settlement report's fast path: a provider file's lines copied into the database, decided
-- there in whole-file joins, and deleted when the report is built.
--
-- A million-line Settlement Detail Report parsed and matched row by row in Python takes minutes; the same rows
-- copied in with COPY and compared to billing_executions in a few hash joins take seconds. The report engine
-- (billing.settlement.reconciliation.staged) parses each file's lines, stages them here, lets one statement decide
-- the rows that match exactly (a settled item whose reference names exactly one execution of the same amount,
-- currency and completed status, with fees inside the tenant's band, listed once in the run), and reads every
-- other line back through the Python matcher, which explains what is wrong with it.
--
-- billing.settlement_staging_runs: one row per report run that staged files (who cleans up after a run that died:
-- the next run deletes rows of runs started more than a day ago).
-- billing.settlement_staged_lines: every data line of every file of a run, by file (its position in the run) and
-- physical line number, with its Psp Reference cell (a reference two lines carry is never matched here); and, for
-- a line the parser read as a settled item in one currency, its amounts in minor units, fees, payment method and
-- batch. Never the line's text: a provider's file is not ours to copy, and a cell could hold a card number; the
-- engine reads the lines left to it from its own local copy of the file.
-- billing.settlement_staged_matches: the lines the database matched, with the execution each one listed (the
-- period's completed executions no line listed are missing_from_file).
--
-- Unlogged: the rows live for one report run and can always be staged again from the files; no WAL is written for
-- them (and a crash empties them, which only makes that run fail and be retried). Platform-wide like the reports
-- (a file spans tenants) and outside tenancy: only billing_worker, the settlement function's role, holds any
-- privilege, to insert and read. No index: every statement over them is a whole-run hash join or scan.
--
-- No run-time role deletes rows of any table; a run's rows go through two SECURITY DEFINER functions, callable by
-- billing_worker only: billing.discard_settlement_run(run_id) deletes one run's rows (the engine calls it when the
-- report is built, or failed), billing.discard_stale_settlement_runs() those of runs started more than a day ago
-- (a report run lasts minutes; a function that died left them). Both touch the staging tables and nothing else.

create unlogged table billing.settlement_staging_runs (
    run_id     uuid        not null,
    provider   text        not null,
    started_at timestamptz not null default now(),

    constraint settlement_staging_runs_pkey primary key (run_id)
);

create unlogged table billing.settlement_staged_lines (
    run_id         uuid     not null,
    file           smallint not null,
    line_number    integer  not null,
    psp_reference  text     not null,
    -- A settled item as the parser read it (gross and net in one currency): what the statement matches.
    gross          bigint,
    net            bigint,
    fee_1          bigint,
    fee_2          bigint,
    fee_3          bigint,
    fee_4          bigint,
    currency       text,
    payment_method text,
    batch          text,

    constraint settlement_staged_lines_line_number check (line_number > 1),
    constraint settlement_staged_lines_item check ((gross is null) = (currency is null))
);

create unlogged table billing.settlement_staged_matches (
    run_id       uuid     not null,
    file         smallint not null,
    line_number  integer  not null,
    tenant_id    uuid     not null,
    execution_id uuid     not null
);

select billing.grant_dml('billing.settlement_staging_runs', 'billing_worker', 'select, insert');
select billing.grant_dml('billing.settlement_staged_lines', 'billing_worker', 'select, insert');
select billing.grant_dml('billing.settlement_staged_matches', 'billing_worker', 'select, insert');

create function billing.discard_settlement_run(run uuid) returns void
language sql volatile security definer set search_path = pg_catalog, billing as $$
    delete from billing.settlement_staged_lines where run_id = run;
    delete from billing.settlement_staged_matches where run_id = run;
    delete from billing.settlement_staging_runs where run_id = run;
$$;

create function billing.discard_stale_settlement_runs() returns integer
language sql volatile security definer set search_path = pg_catalog, billing as $$
    with stale as (
        delete from billing.settlement_staging_runs where started_at < now() - interval '1 day' returning run_id
    ), lines as (
        delete from billing.settlement_staged_lines where run_id in (select run_id from stale)
    ), matches as (
        delete from billing.settlement_staged_matches where run_id in (select run_id from stale)
    )
    select count(*)::integer from stale;
$$;

-- Statistics for the planner: a staged file is a million lines the tables did not have a moment ago, and an
-- estimate of one line would plan the run's joins as nested loops (hours instead of seconds). ANALYZE needs the
-- owner; it samples, so it costs a fraction of a second whatever the tables hold. `staged` names the table just
-- written: 'lines' before the matching statement, 'matches' after it.
create function billing.analyze_settlement_staging(staged text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, billing as $$
begin
    case staged
        when 'lines' then analyze billing.settlement_staged_lines;
        when 'matches' then analyze billing.settlement_staged_matches;
        else raise exception 'no staging table %', staged using errcode = '22023';
    end case;
end;
$$;

revoke all on function billing.discard_settlement_run(uuid), billing.discard_stale_settlement_runs(),
    billing.analyze_settlement_staging(text) from public;
grant execute on function billing.discard_settlement_run(uuid), billing.discard_stale_settlement_runs(),
    billing.analyze_settlement_staging(text) to billing_worker;
