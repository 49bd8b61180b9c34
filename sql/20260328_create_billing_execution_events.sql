-- billing.billing_execution_events: the append-only lifecycle event store. Every transition of an execution
-- records one row (type, old/new status, metadata, actor, correlation id). Rows are evidence: the trigger
-- below refuses UPDATE, DELETE and TRUNCATE even for raw SQL.

create table billing.billing_execution_events (
    tenant_id      uuid        not null,
    id             uuid        not null,
    -- Insertion order; timestamps tie when several transitions share one transaction.
    sequence       bigint      generated always as identity,
    execution_id   uuid        not null,
    type           text        not null,
    old_status     text,
    new_status     text        not null,
    metadata       jsonb       not null default '{}'::jsonb,
    user_id        text,
    correlation_id text,
    occurred_at    timestamptz not null default now(),

    constraint billing_execution_events_pkey primary key (tenant_id, id),
    constraint billing_execution_events_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint billing_execution_events_type_format check (type ~ '^billing\.[a-z_]+\.[a-z_]+$'),
    constraint billing_execution_events_metadata_object check (jsonb_typeof(metadata) = 'object')
);

create index billing_execution_events_timeline
    on billing.billing_execution_events (tenant_id, execution_id, sequence);

-- Shared by every append-only table: refuse any change to history, naming the table in the message.
create function billing.reject_append_only_change() returns trigger
language plpgsql as $$
begin
    raise exception '% is append-only: % is not allowed', tg_table_schema || '.' || tg_table_name, tg_op
        using errcode = 'BE005', hint = 'record a new event instead of changing history';
end;
$$;

create trigger billing_execution_events_append_only
    before update or delete on billing.billing_execution_events
    for each row execute function billing.reject_append_only_change();

create trigger billing_execution_events_no_truncate
    before truncate on billing.billing_execution_events
    for each statement execute function billing.reject_append_only_change();
