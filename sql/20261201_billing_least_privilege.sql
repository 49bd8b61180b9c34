-- Least privilege and invariants that hold against the run-time roles themselves.
--
-- Runs as billing_owner (the runner SETs ROLE; see billing.db.roles). After this file:
--   * billing_app (execute, webhook, authorizer) and billing_worker (relay, retries, reconciliation, settlement)
--     hold table-by-table DML and nothing else: no ownership, TRUNCATE, DDL or BYPASSRLS;
--   * row-level security confines every role to the tenant its transaction names; only billing_worker may
--     widen that to all tenants (billing.scope = 'system'), by a policy keyed on the role, so setting the
--     variable does nothing for anyone else;
--   * executions are born `created`, every column has a rule, and events, outbox rows and workflow rows can
--     only be written by the transaction that changes their execution, matching that change.
-- Each refusal has its own SQLSTATE (see billing.db.sqlstates).

-- --- Row-level security keyed on roles -------------------------------------------------------------------------

-- Only the named tenant: no variable any session can set widens it (billing.scope now means something only to
-- the worker policy below).
create or replace function billing.row_visible(row_tenant uuid) returns boolean
language sql stable as $$
    select row_tenant = nullif(current_setting('billing.tenant_id', true), '')::uuid
$$;

create function billing.worker_scope_visible(row_tenant uuid) returns boolean
language sql stable as $$
    select current_setting('billing.scope', true) = 'system' or billing.row_visible(row_tenant)
$$;

-- The policies every tenant table gets: tenant isolation for everyone; the system scope for the worker role
-- only; the owner (migrations, and the narrow SECURITY DEFINER functions below) sees every row.
create or replace function billing.enable_tenant_isolation(target regclass) returns void
language plpgsql as $$
begin
    execute format('alter table %s enable row level security', target);
    execute format('alter table %s force row level security', target);
    if not exists (select 1 from pg_policy where polrelid = target and polname = 'tenant_isolation') then
        execute format(
            'create policy tenant_isolation on %s using (billing.row_visible(tenant_id)) '
            'with check (billing.row_visible(tenant_id))', target);
    end if;
    execute format(
        'create policy worker_cross_tenant on %s to billing_worker using (billing.worker_scope_visible(tenant_id)) '
        'with check (billing.worker_scope_visible(tenant_id))', target);
    execute format('create policy owner_maintenance on %s to billing_owner using (true) with check (true)', target);
end;
$$;

do $$
declare
    t regclass;
begin
    for t in select c.oid::regclass from pg_class c join pg_namespace n on n.oid = c.relnamespace
              where n.nspname = 'billing' and c.relkind = 'r' and c.relrowsecurity
    loop
        perform billing.enable_tenant_isolation(t);
    end loop;
end $$;

-- --- Privileges --------------------------------------------------------------------------------------------------

-- Nothing for PUBLIC, now or for objects created later; every privilege below is granted by name.
revoke all on all tables in schema billing, billing_inbox, billing_meta, sandbox_provider from public;
revoke all on all sequences in schema billing, billing_inbox, billing_meta, sandbox_provider from public;
revoke all on all functions in schema billing, billing_inbox, billing_meta, sandbox_provider from public;
revoke all on schema billing, billing_inbox, billing_meta, sandbox_provider from public;
alter default privileges for role billing_owner revoke all on tables from public;
alter default privileges for role billing_owner revoke all on sequences from public;
alter default privileges for role billing_owner revoke execute on functions from public;

grant usage on schema billing, billing_inbox, sandbox_provider to billing_app, billing_worker;

-- Grants are whole-table DML, table by table: one function so later migrations state theirs the same way.
create function billing.grant_dml(target regclass, grantee text, privileges text) returns void
language plpgsql as $$
begin
    if privileges ~* '(truncate|references|trigger|maintain)' then
        raise exception 'run-time roles get DML only, not %', privileges;
    end if;
    execute format('grant %s on %s to %I', privileges, target, grantee);
end;
$$;

select billing.grant_dml('billing.billing_executions', 'billing_app', 'select, insert, update');
select billing.grant_dml('billing.billing_execution_events', 'billing_app', 'select, insert');
select billing.grant_dml('billing.billing_outbox', 'billing_app', 'insert');
select billing.grant_dml('billing.contract_term_datetimes', 'billing_app', 'select, insert');
select billing.grant_dml('billing.execution_reversals', 'billing_app', 'select, insert');
select billing.grant_dml('billing.execution_status_transitions', 'billing_app', 'select');
select billing.grant_dml('billing_inbox.webhook_events', 'billing_app', 'select, insert, update');

-- Workers never create executions or reversals; the relay is the only writer of publication bookkeeping.
select billing.grant_dml('billing.billing_executions', 'billing_worker', 'select, update');
select billing.grant_dml('billing.billing_execution_events', 'billing_worker', 'select, insert');
select billing.grant_dml('billing.billing_outbox', 'billing_worker', 'select, insert, update');
select billing.grant_dml('billing.contract_term_datetimes', 'billing_worker', 'select, insert');
select billing.grant_dml('billing.execution_reversals', 'billing_worker', 'select');
select billing.grant_dml('billing.execution_status_transitions', 'billing_worker', 'select');

-- The sandbox provider simulates an external system (local runs and tests only): both roles call it.
select billing.grant_dml('sandbox_provider.charges', 'billing_app', 'select, insert, update');
select billing.grant_dml('sandbox_provider.charges', 'billing_worker', 'select, insert, update');

grant execute on function billing.row_visible(uuid), billing.worker_scope_visible(uuid),
    billing.execution_event_payload(billing.billing_executions, uuid, text, text, text, timestamptz),
    billing.workflow_transition_id(text, uuid, uuid, uuid), billing.workflow_phase_for_event(text)
    to billing_app, billing_worker;

-- --- Event types: which change each lifecycle event may record ---------------------------------------------------

-- kind 'change': recorded by the statement that changes the execution, old -> new as listed below;
-- 'annotation': an operational record that changes nothing (old = new = the execution's status);
-- 'reversal': recorded with an execution_reversals row of the same transaction (completed -> completed).
-- The Python twin is billing.domain.transitions; a test compares them.
create table billing.execution_event_types (
    type text not null,
    kind text not null,
    constraint execution_event_types_pkey primary key (type),
    constraint execution_event_types_kind_known check (kind in ('change', 'annotation', 'reversal'))
);

create table billing.execution_event_transitions (
    type        text not null references billing.execution_event_types (type),
    from_status text,
    to_status   text not null
);
create unique index execution_event_transitions_uniq
    on billing.execution_event_transitions (type, coalesce(from_status, ''), to_status);

insert into billing.execution_event_types (type, kind) values
    ('billing.execution.created', 'change'),
    ('billing.execution.pending', 'change'),
    ('billing.execution.processing', 'change'),
    ('billing.execution.completed', 'change'),
    ('billing.execution.failed', 'change'),
    ('billing.execution.canceled', 'change'),
    ('billing.execution.confirmed', 'change'),
    ('billing.execution.rejected', 'change'),
    ('billing.execution.settlement_pending', 'change'),
    ('billing.execution.reconciled', 'change'),
    ('billing.execution.retry_scheduled', 'change'),
    ('billing.execution.retry_attempt', 'change'),
    ('billing.execution.dead_lettered', 'annotation'),
    ('billing.execution.redriven', 'annotation'),
    -- a provider confirmed another amount or currency than the execution's: left for an operator
    ('billing.execution.amount_mismatch', 'annotation'),
    ('billing.execution.reversed', 'reversal');

insert into billing.execution_event_transitions (type, from_status, to_status) values
    ('billing.execution.created', null, 'created'),
    ('billing.execution.pending', 'created', 'pending'),
    ('billing.execution.processing', 'pending', 'processing'),
    ('billing.execution.completed', 'processing', 'completed'),
    ('billing.execution.failed', 'processing', 'failed'),
    ('billing.execution.canceled', 'created', 'canceled'),
    ('billing.execution.canceled', 'pending', 'canceled'),
    ('billing.execution.confirmed', 'pending', 'completed'),
    ('billing.execution.rejected', 'pending', 'failed'),
    ('billing.execution.settlement_pending', 'processing', 'pending'),
    ('billing.execution.reconciled', 'pending', 'completed'),
    ('billing.execution.reconciled', 'pending', 'failed'),
    ('billing.execution.retry_scheduled', 'processing', 'processing'),
    ('billing.execution.retry_attempt', 'processing', 'processing'),
    ('billing.execution.reversed', 'completed', 'completed');

select billing.grant_dml('billing.execution_event_types', 'billing_app', 'select');
select billing.grant_dml('billing.execution_event_types', 'billing_worker', 'select');
select billing.grant_dml('billing.execution_event_transitions', 'billing_app', 'select');
select billing.grant_dml('billing.execution_event_transitions', 'billing_worker', 'select');

-- --- Executions: every column has a rule -------------------------------------------------------------------------

-- Which changes the current transaction made to the row ('old>new', in order), so that a lifecycle event can
-- be checked against a change of its own transaction. Written only by the trigger below, whatever a statement
-- tries to set.
alter table billing.billing_executions
    add column changed_txid xid8,
    add column changed_statuses text[];

-- Rows that ended before every path recorded a finish time get the time of their last change; the guard that
-- freezes terminal rows steps aside for this one statement of the owner's.
alter table billing.billing_executions disable trigger billing_executions_immutability;
update billing.billing_executions set finished_at = updated_at
 where finished_at is null and status in ('completed', 'failed', 'canceled');
update billing.billing_executions set finished_at = null
 where finished_at is not null and status not in ('completed', 'failed', 'canceled');
alter table billing.billing_executions enable trigger billing_executions_immutability;

alter table billing.billing_executions
    add constraint billing_executions_finished_iff_terminal
    check ((finished_at is not null) = (status in ('completed', 'failed', 'canceled')));

create function billing.guard_execution_insert() returns trigger
language plpgsql as $$
begin
    if new.status <> 'created' or new.provider_reference is not null or new.submitted_at is not null
       or new.finished_at is not null or new.attempt_count <> 0 or new.last_error_code is not null
       or new.next_attempt_at is not null then
        raise exception 'billing.billing_executions row % must be born created, unsubmitted and unattempted', new.id
            using errcode = 'BE007';
    end if;
    new.changed_txid := pg_current_xact_id();
    new.changed_statuses := array['>created'];
    return new;
end;
$$;

create trigger billing_executions_insert_guard
    before insert on billing.billing_executions
    for each row execute function billing.guard_execution_insert();

create or replace function billing.guard_execution_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'billing.billing_executions row % cannot be deleted', old.id
            using errcode = 'BE004', hint = 'executions are financial records; cancel or fail them instead';
    end if;

    if old.status in ('completed', 'failed', 'canceled') then
        raise exception 'billing.billing_executions row % is terminal (%) and immutable', old.id, old.status
            using errcode = 'BE001';
    end if;

    if new.status is distinct from old.status and not exists (
        select 1 from billing.execution_status_transitions t
        where t.from_status = old.status and t.to_status = new.status
    ) then
        raise exception 'billing.billing_executions row %: transition % -> % is not allowed',
            old.id, old.status, new.status
            using errcode = 'BE002';
    end if;

    -- A charge lodged at the provider is followed to its end there; it is never driven (submitted) again.
    if old.submitted_at is not null and new.status = 'processing' and old.status <> 'processing' then
        raise exception 'billing.billing_executions row %: a submitted execution cannot go back to processing',
            old.id
            using errcode = 'BE002';
    end if;

    -- The request as the client made it (and what it was charged with) never changes.
    if (new.tenant_id, new.id, new.entity_contract_id, new.plan_contract_id, new.amount, new.currency,
        new.payment_rail, new.payment_provider, new.payment_instrument_id, new.idempotency_key,
        new.request_fingerprint, new.correlation_id, new.metadata, new.created_at)
       is distinct from
       (old.tenant_id, old.id, old.entity_contract_id, old.plan_contract_id, old.amount, old.currency,
        old.payment_rail, old.payment_provider, old.payment_instrument_id, old.idempotency_key,
        old.request_fingerprint, old.correlation_id, old.metadata, old.created_at) then
        raise exception 'billing.billing_executions row %: identity, request and money columns are immutable', old.id
            using errcode = 'BE003';
    end if;

    if old.provider_reference is not null and new.provider_reference is distinct from old.provider_reference then
        raise exception 'billing.billing_executions row %: provider_reference is immutable once set', old.id
            using errcode = 'BE003';
    end if;

    -- Lifecycle columns move one way only.
    if old.submitted_at is not null and new.submitted_at is distinct from old.submitted_at then
        raise exception 'billing.billing_executions row %: submitted_at is set once and never changes', old.id
            using errcode = 'BE008';
    end if;
    if new.attempt_count < old.attempt_count then
        raise exception 'billing.billing_executions row %: attempt_count only grows', old.id
            using errcode = 'BE008';
    end if;
    if new.status = 'completed' and new.provider_reference is null then
        raise exception 'billing.billing_executions row %: a completed execution names the provider''s charge', old.id
            using errcode = 'BE008';
    end if;
    if new.submitted_at is not null and new.provider_reference is null then
        raise exception 'billing.billing_executions row %: a submitted execution names the provider''s charge', old.id
            using errcode = 'BE008';
    end if;

    if old.changed_txid = pg_current_xact_id() then
        new.changed_statuses := old.changed_statuses || (old.status || '>' || new.status);
    else
        new.changed_statuses := array[old.status || '>' || new.status];
    end if;
    new.changed_txid := pg_current_xact_id();
    return new;
end;
$$;

-- --- Companion rows: only with the change they record ------------------------------------------------------------

alter table billing.billing_execution_events add column recorded_txid xid8;
alter table billing.execution_reversals add column recorded_txid xid8;

create function billing.stamp_recording_transaction() returns trigger
language plpgsql as $$
begin
    new.recorded_txid := pg_current_xact_id();
    return new;
end;
$$;

create trigger billing_execution_events_stamp
    before insert on billing.billing_execution_events
    for each row execute function billing.stamp_recording_transaction();

create trigger execution_reversals_stamp
    before insert on billing.execution_reversals
    for each row execute function billing.stamp_recording_transaction();

-- A reversal is money coming back on a completed execution, and nothing else.
create function billing.guard_reversal_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if not exists (
        select 1 from billing.billing_executions e
         where e.tenant_id = new.tenant_id and e.id = new.execution_id and e.status = 'completed'
    ) then
        raise exception 'billing.execution_reversals: execution % is not completed', new.execution_id
            using errcode = 'BE009';
    end if;
    return new;
end;
$$;

create trigger execution_reversals_completed_only
    before insert on billing.execution_reversals
    for each row execute function billing.guard_reversal_insert();

-- Checked at commit (the statement's CTEs run in no fixed order, and callers may compose several statements):
-- a lifecycle event names a change its own transaction made to the execution, no more events than changes.
-- SECURITY DEFINER so the check sees the rows whatever tenant scope the caller's transaction ended in; it only
-- reads, and only the rows of this one event.
create function billing.check_event_recorded_with_change() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
declare
    kind text;
    e billing.billing_executions;
    change text := coalesce(new.old_status, '') || '>' || new.new_status;
    made integer;
    recorded integer;
begin
    select t.kind into kind from billing.execution_event_types t where t.type = new.type;
    select * into e from billing.billing_executions x where x.tenant_id = new.tenant_id and x.id = new.execution_id;
    if kind is null then
        raise exception 'billing.billing_execution_events: unknown event type %', new.type using errcode = 'BE009';
    end if;
    if kind = 'annotation' then
        if new.old_status is distinct from e.status or new.new_status is distinct from e.status then
            raise exception 'billing.billing_execution_events: % must name the execution''s status (%)', new.type,
                e.status using errcode = 'BE009';
        end if;
        return null;
    end if;
    if not exists (
        select 1 from billing.execution_event_transitions t
         where t.type = new.type and t.from_status is not distinct from new.old_status and t.to_status = new.new_status
    ) then
        raise exception 'billing.billing_execution_events: % cannot record %', new.type, change using errcode = 'BE009';
    end if;
    if kind = 'reversal' then
        if not exists (
            select 1 from billing.execution_reversals r
             where r.tenant_id = new.tenant_id and r.execution_id = new.execution_id
               and r.id::text = new.metadata ->> 'reversal_id' and r.recorded_txid = pg_current_xact_id()
        ) then
            raise exception 'billing.billing_execution_events: % without its reversal in this transaction', new.type
                using errcode = 'BE009';
        end if;
        return null;
    end if;
    made := coalesce((select count(*) from unnest(e.changed_statuses) c where c = change
                       and e.changed_txid = pg_current_xact_id()), 0);
    select count(*) into recorded from billing.billing_execution_events ev
     where ev.tenant_id = new.tenant_id and ev.execution_id = new.execution_id
       and ev.recorded_txid = pg_current_xact_id()
       and coalesce(ev.old_status, '') || '>' || ev.new_status = change
       and ev.type in (select t.type from billing.execution_event_types t where t.kind = 'change');
    if recorded > made then
        raise exception 'billing.billing_execution_events: % (%) for execution % without a change of its own '
            'transaction', new.type, change, new.execution_id
            using errcode = 'BE009', hint = 'lifecycle events are written by the statement that changes the execution';
    end if;
    return null;
end;
$$;

create constraint trigger billing_execution_events_recorded_with_change
    after insert on billing.billing_execution_events
    deferrable initially deferred
    for each row execute function billing.check_event_recorded_with_change();

-- And the other way round: every change a transaction makes to an execution is recorded by exactly one event of
-- that transaction, so no status moves without its lifecycle event (and with it its outbox row, below).
create function billing.check_change_recorded_by_event() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
declare
    e billing.billing_executions;
    unrecorded text;
begin
    select * into e from billing.billing_executions x where x.tenant_id = new.tenant_id and x.id = new.id;
    if e.changed_txid is distinct from pg_current_xact_id() then
        return null;
    end if;
    select made.change into unrecorded
      from (select c as change, count(*) as n from unnest(e.changed_statuses) c group by c) made
      left join (
          select coalesce(ev.old_status, '') || '>' || ev.new_status as change, count(*) as n
            from billing.billing_execution_events ev
            join billing.execution_event_types t on t.type = ev.type and t.kind = 'change'
           where ev.tenant_id = e.tenant_id and ev.execution_id = e.id and ev.recorded_txid = pg_current_xact_id()
           group by 1
      ) recorded on recorded.change = made.change
     where recorded.n is distinct from made.n
     limit 1;
    if unrecorded is not null then
        raise exception 'billing.billing_executions row %: change % has no lifecycle event of its own', e.id, unrecorded
            using errcode = 'BE009', hint = 'write the event, outbox row and workflow row in the changing statement';
    end if;
    return null;
end;
$$;

create constraint trigger billing_executions_change_recorded
    after insert or update on billing.billing_executions
    deferrable initially deferred
    for each row execute function billing.check_change_recorded_by_event();

-- Every lifecycle event is announced: its outbox row commits with it.
create function billing.check_event_announced() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if not exists (
        select 1 from billing.billing_outbox o where o.tenant_id = new.tenant_id and o.event_id = new.id
    ) then
        raise exception 'billing.billing_execution_events: event % has no outbox row', new.id
            using errcode = 'BE009', hint = 'an event exists if and only if it is announced';
    end if;
    return null;
end;
$$;

create constraint trigger billing_execution_events_announced
    after insert on billing.billing_execution_events
    deferrable initially deferred
    for each row execute function billing.check_event_announced();

-- An outbox row announces an event of its own transaction, exactly as recorded.
create function billing.check_outbox_announces_event() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if not exists (
        select 1 from billing.billing_execution_events ev
         where ev.tenant_id = new.tenant_id and ev.id = new.event_id and ev.recorded_txid = pg_current_xact_id()
           and ev.execution_id = new.aggregate_id and ev.type = new.event_type
           and new.payload ->> 'event_id' = ev.id::text
           and new.payload ->> 'execution_id' = ev.execution_id::text
           and new.payload ->> 'tenant_id' = ev.tenant_id::text
           and new.payload ->> 'event_type' = ev.type
           and (new.payload ->> 'old_status') is not distinct from ev.old_status
           and new.payload ->> 'new_status' = ev.new_status
    ) then
        raise exception 'billing.billing_outbox: row for event % does not announce an event of this transaction',
            new.event_id
            using errcode = 'BE009';
    end if;
    return null;
end;
$$;

create constraint trigger billing_outbox_announces_event
    after insert on billing.billing_outbox
    deferrable initially deferred
    for each row execute function billing.check_outbox_announces_event();

-- A workflow row records the phase of an event of its own transaction.
create function billing.check_workflow_records_event() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if not exists (
        select 1 from billing.billing_execution_events ev
         where ev.tenant_id = new.tenant_id and ev.id = new.event_id and ev.recorded_txid = pg_current_xact_id()
           and ev.execution_id = new.subject_id
           and billing.workflow_phase_for_event(ev.type) = new.phase_code
    ) then
        raise exception 'billing.contract_term_datetimes: row for event % does not record an event of this '
            'transaction', new.event_id
            using errcode = 'BE009';
    end if;
    return null;
end;
$$;

create constraint trigger contract_term_datetimes_records_event
    after insert on billing.contract_term_datetimes
    deferrable initially deferred
    for each row execute function billing.check_workflow_records_event();

-- --- Outbox: publication is the relay's, once -------------------------------------------------------------------

create or replace function billing.guard_outbox_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        if old.published_at is null then
            raise exception 'billing.billing_outbox row % is unpublished and cannot be deleted', old.id
                using errcode = 'BE005';
        end if;
        return old;
    end if;
    if (new.tenant_id, new.id, new.event_id, new.aggregate_type, new.aggregate_id, new.event_type, new.payload,
        new.correlation_id, new.occurred_at)
       is distinct from
       (old.tenant_id, old.id, old.event_id, old.aggregate_type, old.aggregate_id, old.event_type, old.payload,
        old.correlation_id, old.occurred_at) then
        raise exception 'billing.billing_outbox row % is immutable except for publication bookkeeping', old.id
            using errcode = 'BE005';
    end if;
    if old.published_at is not null and new.published_at is distinct from old.published_at then
        raise exception 'billing.billing_outbox row % was published at % and stays so', old.id, old.published_at
            using errcode = 'BE010';
    end if;
    if new.published_at is not null and old.published_at is null
       and not pg_has_role(current_user, 'billing_worker', 'usage') then
        raise exception 'billing.billing_outbox row %: only the relay (billing_worker) records publication', old.id
            using errcode = 'BE010';
    end if;
    if new.publish_attempts < old.publish_attempts then
        raise exception 'billing.billing_outbox row %: publish_attempts only grows', old.id using errcode = 'BE010';
    end if;
    return new;
end;
$$;

create trigger billing_outbox_no_truncate
    before truncate on billing.billing_outbox
    for each statement execute function billing.reject_append_only_change();

create trigger webhook_events_no_truncate
    before truncate on billing_inbox.webhook_events
    for each statement execute function billing.reject_append_only_change();

grant execute on function billing.reject_append_only_change() to billing_app, billing_worker;

-- --- Cross-tenant lookups the app role needs, and nothing more ---------------------------------------------------

-- A webhook names the provider's reference, not our tenant. This returns who owns the reference (two rows prove
-- ambiguity), so the app role never needs a scope that sees other tenants' rows.
create function billing.executions_with_provider_reference(provider text, reference text)
returns table (tenant_id uuid, id uuid, status text, amount bigint, currency text)
language sql stable security definer set search_path = pg_catalog, billing as $$
    select e.tenant_id, e.id, e.status, e.amount, e.currency::text from billing.billing_executions e
     where e.payment_provider = provider and e.provider_reference = reference
     order by e.tenant_id, e.id
     limit 2
$$;

revoke all on function billing.executions_with_provider_reference(text, text) from public;
grant execute on function billing.executions_with_provider_reference(text, text) to billing_app;

-- --- Webhook inbox: a confirmation of another amount is recorded, not applied ------------------------------------

alter table billing_inbox.webhook_events
    drop constraint webhook_events_result_known,
    add constraint webhook_events_result_known check (
        result in ('applied', 'already_terminal', 'out_of_order', 'reversal', 'ignored', 'orphan', 'ambiguous',
                   'amount_mismatch')
    ),
    drop constraint webhook_events_result_names_execution,
    add constraint webhook_events_result_names_execution check (
        result is null
        or (result in ('applied', 'already_terminal', 'out_of_order', 'reversal', 'amount_mismatch'))
           = (execution_id is not null)
    ),
    -- What the provider said was paid, when it says: minor units and ISO 4217, like every amount here.
    add column amount bigint,
    add column currency char(3),
    add constraint webhook_events_amount_with_currency check ((amount is null) = (currency is null)),
    add constraint webhook_events_currency_iso4217 check (currency ~ '^[A-Z]{3}$');

create or replace function billing_inbox.guard_webhook_event_change() returns trigger
language plpgsql as $$
begin
    if old.result is not null then
        raise exception 'billing_inbox.webhook_events (%, %) is resolved and immutable', old.provider, old.provider_event_id
            using errcode = 'BE005';
    end if;
    if (new.provider, new.provider_event_id, new.event_type, new.outcome, new.provider_reference, new.failure_code,
        new.occurred_at, new.payload_sha256, new.received_at, new.amount, new.currency)
       is distinct from
       (old.provider, old.provider_event_id, old.event_type, old.outcome, old.provider_reference, old.failure_code,
        old.occurred_at, old.payload_sha256, old.received_at, old.amount, old.currency) then
        raise exception 'billing_inbox.webhook_events (%, %): what was received is immutable',
            old.provider, old.provider_event_id
            using errcode = 'BE005';
    end if;
    return new;
end;
$$;
