-- Settlement reports as records: what each reconciliation run concluded (billing.settlement.outcome), kept for
-- finance to read and to work through discrepancy by discrepancy.
--
-- billing.settlement_reports: one row per report, one provider and one period each (period_end exclusive). The id is
-- the uuid5 of provider, period and the digests of the files read (billing.settlement.outcome.report_id_for), so a
-- re-run of the same files is the same row and the store writes nothing; a late or corrected file gives another
-- report, which supersedes the current one of its provider and period: the new row names the old in `supersedes`,
-- and the old gets `superseded_by`, once, in the same transaction. At most one report per provider and period is
-- current (superseded_by null), checked at commit. `summary` is ReportSummary.as_dict(); the columns beside it are
-- its own figures, for filtering, and must agree with it. Nothing of a report changes but superseded_by, once.
--
-- billing.settlement_discrepancies: one row per discrepancy of a report (Discrepancy; its id is deterministic too),
-- append-only. Amounts are minor units beside their ISO 4217 currency, or both null where one side has no figure.
-- The resolution (resolved_at, resolved_by, resolution_note) is the only change a row ever takes: once, the three
-- together, resolved_at the database's clock whatever the statement said, and never a card number in the note.
--
-- Platform-wide, both: one provider's file covers many tenants, so neither table has row-level security (the
-- discrepancies' tenant_id says whose item it is, not who may read it; COPY, which the worker writes with, is not
-- possible under row-level security anyway). Grants are the wall instead: billing_worker (the settlement_report
-- function) inserts both and sets superseded_by; billing_finance (the settlement_api function, behind the `finance`
-- token scope) reads both and writes the three resolution columns; no other role has any privilege on either.
-- Nobody deletes or truncates (BE005, the owner included); every other change is refused with BE021.

create table billing.settlement_reports (
    id                uuid        not null,
    provider          text        not null,
    period_start      date        not null,
    period_end        date        not null,
    generated_at      timestamptz not null,
    summary           jsonb       not null,
    discrepancy_count integer     not null,
    payouts_balance   boolean     not null,
    supersedes        uuid,
    superseded_by     uuid,
    created_at        timestamptz not null default now(),

    constraint settlement_reports_pkey primary key (id),
    constraint settlement_reports_supersedes_fkey foreign key (supersedes)
        references billing.settlement_reports (id),
    constraint settlement_reports_superseded_by_fkey foreign key (superseded_by)
        references billing.settlement_reports (id),
    constraint settlement_reports_provider_format check (provider ~ '^[a-z0-9_-]{1,64}$'),
    constraint settlement_reports_period_not_empty check (period_end > period_start),
    constraint settlement_reports_count_nonnegative check (discrepancy_count >= 0),
    constraint settlement_reports_not_its_own_successor check (supersedes <> id and superseded_by <> id),
    -- The columns are the summary's own figures, so a filter on them finds what the summary says.
    constraint settlement_reports_summary_agrees check (coalesce(
        jsonb_typeof(summary) = 'object'
        and summary ->> 'report_id' = id::text
        and summary ->> 'provider' = provider
        and (summary ->> 'discrepancy_count')::integer = discrepancy_count
        and (summary ->> 'payouts_balance')::boolean = payouts_balance
        and (summary ->> 'supersedes') is not distinct from supersedes::text, false)),
    -- One current report per provider and period. Deferred: the run that supersedes inserts its report before it
    -- marks the one it replaces.
    constraint settlement_reports_one_current
        exclude using btree (provider with =, period_start with =, period_end with =) where (superseded_by is null)
        deferrable initially deferred
);

-- The API's filters, newest first with a (created_at, id) cursor: all reports, or one provider's; by period.
create index settlement_reports_created on billing.settlement_reports (created_at, id);
create index settlement_reports_provider_created on billing.settlement_reports (provider, created_at, id);
create index settlement_reports_period on billing.settlement_reports (period_start, period_end);

create table billing.settlement_discrepancies (
    id                 uuid        not null,
    report_id          uuid        not null,
    class              text        not null,
    also               text[]      not null default '{}',
    source             text,
    line_number        integer,
    provider_reference text,
    record_kind        text,
    batch              text,
    payment_method     text,
    tenant_id          uuid,
    execution_id       uuid,
    expected_amount    bigint,
    expected_currency  char(3),
    reported_amount    bigint,
    reported_currency  char(3),
    detail             text        not null,
    resolved_at        timestamptz,
    resolved_by        text,
    resolution_note    text,

    constraint settlement_discrepancies_pkey primary key (id),
    constraint settlement_discrepancies_report_fkey foreign key (report_id)
        references billing.settlement_reports (id),
    -- billing.settlement.outcome.DISCREPANCY_CLASSES (every class but matched, which is no discrepancy); a test
    -- compares the two.
    constraint settlement_discrepancies_class_known check (class in (
        'payout_mismatch', 'missing_internally', 'missing_from_file', 'reversal_missing', 'status_mismatch',
        'currency_mismatch', 'amount_mismatch', 'reversal_amount_mismatch', 'duplicate_in_file',
        'ambiguous_reference', 'fee_out_of_range', 'unmapped_type')),
    constraint settlement_discrepancies_also_known check (also <@ array[
        'payout_mismatch', 'missing_internally', 'missing_from_file', 'reversal_missing', 'status_mismatch',
        'currency_mismatch', 'amount_mismatch', 'reversal_amount_mismatch', 'duplicate_in_file',
        'ambiguous_reference', 'fee_out_of_range', 'unmapped_type']::text[]),
    constraint settlement_discrepancies_line_positive check (line_number > 0),
    -- A RecordKind value of the row, or 'payout' for a payout check.
    constraint settlement_discrepancies_record_kind_format check (record_kind ~ '^[a-z_]{1,40}$'),
    constraint settlement_discrepancies_expected_with_currency check ((expected_amount is null) = (expected_currency is null)),
    constraint settlement_discrepancies_reported_with_currency check ((reported_amount is null) = (reported_currency is null)),
    constraint settlement_discrepancies_currencies_iso4217 check (
        expected_currency ~ '^[A-Z]{3}$' and reported_currency ~ '^[A-Z]{3}$'),
    constraint settlement_discrepancies_bounded_text check (
        coalesce(length(source), 0) <= 1024 and coalesce(length(provider_reference), 0) <= 512
        and coalesce(length(batch), 0) <= 512 and coalesce(length(payment_method), 0) <= 200
        and length(detail) <= 4000),
    -- A resolution is whole: who, when and why, together.
    constraint settlement_discrepancies_resolved_whole check (
        (resolved_at is null) = (resolved_by is null) and (resolved_at is null) = (resolution_note is null)),
    constraint settlement_discrepancies_resolved_by_length check (length(resolved_by) between 1 and 200),
    constraint settlement_discrepancies_note_length check (length(resolution_note) between 1 and 1000)
);

-- A report's discrepancies by class with a (class, id) cursor; the unresolved ones; one tenant's.
create index settlement_discrepancies_by_class on billing.settlement_discrepancies (report_id, class, id);
create index settlement_discrepancies_unresolved on billing.settlement_discrepancies (report_id, class, id)
    where resolved_at is null;
create index settlement_discrepancies_tenant on billing.settlement_discrepancies (tenant_id, report_id, class, id)
    where tenant_id is not null;

-- --- Immutability --------------------------------------------------------------------------------------------

-- A report is born current, and names as its predecessor only the current report of its own provider and period.
create function billing.guard_settlement_report_insert() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
begin
    if new.superseded_by is not null then
        raise exception 'billing.settlement_reports row %: a report is born current (superseded_by is set by the '
            'report that replaces it)', new.id
            using errcode = 'BE021';
    end if;
    if new.supersedes is not null and not exists (
        select 1 from billing.settlement_reports r
         where r.id = new.supersedes and r.provider = new.provider and r.period_start = new.period_start
           and r.period_end = new.period_end and r.superseded_by is null
    ) then
        raise exception 'billing.settlement_reports row %: % is not the current report of its provider and period',
            new.id, new.supersedes
            using errcode = 'BE021';
    end if;
    return new;
end;
$$;

create trigger settlement_reports_insert_guard
    before insert on billing.settlement_reports
    for each row execute function billing.guard_settlement_report_insert();

-- Nothing of a report changes but superseded_by: set once, to the report that names this one in `supersedes`.
create function billing.guard_settlement_report_change() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
begin
    if to_jsonb(new) - 'superseded_by' <> to_jsonb(old) - 'superseded_by' then
        raise exception 'billing.settlement_reports row %: a report is immutable (only superseded_by is set, once)',
            old.id
            using errcode = 'BE021';
    end if;
    if new.superseded_by is not distinct from old.superseded_by then
        return new;
    end if;
    if old.superseded_by is not null then
        raise exception 'billing.settlement_reports row % was superseded by % and stays so', old.id, old.superseded_by
            using errcode = 'BE021';
    end if;
    if not exists (
        select 1 from billing.settlement_reports r where r.id = new.superseded_by and r.supersedes = old.id
    ) then
        raise exception 'billing.settlement_reports row %: only the report that supersedes it (%) may be named',
            old.id, new.superseded_by
            using errcode = 'BE021';
    end if;
    return new;
end;
$$;

create trigger settlement_reports_change_rules
    before update on billing.settlement_reports
    for each row execute function billing.guard_settlement_report_change();

-- A discrepancy is born unresolved.
create function billing.guard_settlement_discrepancy_insert() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
begin
    if new.resolved_at is not null or new.resolved_by is not null or new.resolution_note is not null then
        raise exception 'billing.settlement_discrepancies row %: a discrepancy is born unresolved', new.id
            using errcode = 'BE021';
    end if;
    return new;
end;
$$;

create trigger settlement_discrepancies_insert_guard
    before insert on billing.settlement_discrepancies
    for each row execute function billing.guard_settlement_discrepancy_insert();

-- Append-only but for its resolution: set once, the three columns together, at the database's time.
create function billing.guard_settlement_discrepancy_change() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
begin
    if old.resolved_at is not null then
        raise exception 'billing.settlement_discrepancies row % was resolved at % and is final', old.id, old.resolved_at
            using errcode = 'BE021';
    end if;
    if to_jsonb(new) - array['resolved_at', 'resolved_by', 'resolution_note']
       <> to_jsonb(old) - array['resolved_at', 'resolved_by', 'resolution_note'] then
        raise exception 'billing.settlement_discrepancies row %: a discrepancy is append-only (only its resolution '
            'is set)', old.id
            using errcode = 'BE021';
    end if;
    if new.resolved_at is null or new.resolved_by is null or new.resolution_note is null then
        raise exception 'billing.settlement_discrepancies row %: a resolution sets resolved_at, resolved_by and '
            'resolution_note together', old.id
            using errcode = 'BE021';
    end if;
    -- The database's clock: a resolution is dated when it was made, whatever the statement said.
    new.resolved_at := now();
    return new;
end;
$$;

create trigger settlement_discrepancies_change_rules
    before update on billing.settlement_discrepancies
    for each row execute function billing.guard_settlement_discrepancy_change();

create trigger settlement_reports_not_deletable
    before delete on billing.settlement_reports
    for each row execute function billing.reject_append_only_change();
create trigger settlement_reports_no_truncate
    before truncate on billing.settlement_reports
    for each statement execute function billing.reject_append_only_change();
create trigger settlement_discrepancies_not_deletable
    before delete on billing.settlement_discrepancies
    for each row execute function billing.reject_append_only_change();
create trigger settlement_discrepancies_no_truncate
    before truncate on billing.settlement_discrepancies
    for each statement execute function billing.reject_append_only_change();

-- The file's key, its batches and payment methods, and what an operator types: never a card number (BE013). Not
-- the provider's reference (an Adyen PSP reference is 16 digits, one in ten of them Luhn-valid) nor the engine's
-- detail, which quotes it. The summary is not guarded as a whole either (a file's SHA-256 is hex, and one in a few
-- hundred holds a Luhn-valid run of digits); its free text is, below.
create trigger settlement_discrepancies_card_data_guard
    before insert or update on billing.settlement_discrepancies
    for each row execute function billing.refuse_card_numbers(
        'source', 'batch', 'payment_method', 'resolved_by', 'resolution_note');

-- The summary's free text: the files' names, their errors (which quote the value at fault), the missing files and
-- the notes.
create function billing.refuse_card_numbers_in_settlement_summary() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
declare
    part text;
begin
    foreach part in array array['file_errors', 'line_errors', 'missing_files', 'notes'] loop
        if billing.card_number_in_jsonb(coalesce(new.summary -> part, 'null'::jsonb)) then
            raise exception 'billing.settlement_reports.summary.% holds what looks like a card number', part
                using errcode = 'BE013', hint = 'mask the value a line error quotes before it is reported';
        end if;
    end loop;
    if exists (
        select 1 from jsonb_array_elements(case jsonb_typeof(new.summary -> 'files') when 'array'
                                                then new.summary -> 'files' else '[]'::jsonb end) f
         where billing.card_number_in(f ->> 'source')
    ) then
        raise exception 'billing.settlement_reports.summary.files holds what looks like a card number'
            using errcode = 'BE013';
    end if;
    return new;
end;
$$;

create trigger settlement_reports_card_data_guard
    before insert on billing.settlement_reports
    for each row execute function billing.refuse_card_numbers_in_settlement_summary();

-- --- Privileges ------------------------------------------------------------------------------------------------

grant usage on schema billing, billing_audit to billing_finance;
grant execute on function billing.card_number_in(text), billing.card_number_in_jsonb(jsonb),
    billing.reject_append_only_change(), billing_audit.details_well_formed(jsonb),
    billing_audit.canonical_leaf(billing_audit.entries)
    to billing_finance;

-- The settlement_report function: a report is written once, born current (the DB's clock for created_at), and only
-- marked superseded later; discrepancies are written born unresolved, and never read back.
select billing.grant_dml('billing.settlement_reports', 'billing_worker',
    'select, insert (id, provider, period_start, period_end, generated_at, summary, discrepancy_count, '
    'payouts_balance, supersedes), update (superseded_by)');
select billing.grant_dml('billing.settlement_discrepancies', 'billing_worker',
    'insert (id, report_id, class, also, source, line_number, provider_reference, record_kind, batch, '
    'payment_method, tenant_id, execution_id, expected_amount, expected_currency, reported_amount, '
    'reported_currency, detail)');
-- The settlement API: reads every report and discrepancy, writes a resolution and nothing else.
select billing.grant_dml('billing.settlement_reports', 'billing_finance', 'select');
select billing.grant_dml('billing.settlement_discrepancies', 'billing_finance',
    'select, update (resolved_at, resolved_by, resolution_note)');

-- Its resolutions are operator actions, recorded in the audit trail (PCI DSS 10.2.1.2) in their transaction.
select billing.grant_dml('billing_audit.entries', 'billing_finance', 'insert');
alter policy entries_record on billing_audit.entries
    to billing_app, billing_worker, billing_vault, billing_auditor, billing_finance;
