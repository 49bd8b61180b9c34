-- billing.contract_term_datetimes: the authoritative workflow record. Each transition of a billing execution
-- writes one row (workflow key, phase code, when, who) in the same transaction as the state change, so the
-- workflow view of a contract can never disagree with the executions that drive it.
--
-- transition_id is a deterministic SHA-256 of (workflow key, tenant, execution, event), which makes the
-- historical backfill idempotent and lets it skip rows the live path already wrote.

create table billing.contract_term_datetimes (
    tenant_id      uuid        not null,
    transition_id  text        not null,
    workflow_key   text        not null,
    contract_id    text        not null,
    subject_type   text        not null,
    subject_id     uuid        not null,
    event_id       uuid        not null,
    phase_code     text        not null,
    term_at        timestamptz not null,
    source         text        not null,
    actor_id       text        not null,
    correlation_id text,
    recorded_at    timestamptz not null default now(),

    constraint contract_term_datetimes_pkey primary key (tenant_id, transition_id),
    constraint contract_term_datetimes_event_uniq unique (tenant_id, event_id),
    constraint contract_term_datetimes_event_fkey foreign key (tenant_id, event_id)
        references billing.billing_execution_events (tenant_id, id),
    constraint contract_term_datetimes_transition_id_sha256 check (transition_id ~ '^[0-9a-f]{64}$'),
    constraint contract_term_datetimes_phase_code_known check (phase_code in (
        'created', 'pending', 'processing', 'completed', 'failed', 'canceled', 'settlement_pending', 'reconciled'
    )),
    constraint contract_term_datetimes_source_known check (source in ('service', 'webhook', 'user', 'system', 'backfill'))
);

create index contract_term_datetimes_subject
    on billing.contract_term_datetimes (tenant_id, subject_id, term_at);

create trigger contract_term_datetimes_append_only
    before update or delete on billing.contract_term_datetimes
    for each row execute function billing.reject_append_only_change();

create trigger contract_term_datetimes_no_truncate
    before truncate on billing.contract_term_datetimes
    for each statement execute function billing.reject_append_only_change();

-- The one formula for transition ids, used by the live write path and the backfill alike.
create function billing.workflow_transition_id(workflow_key text, tenant_id uuid, subject_id uuid, event_id uuid)
returns text
language sql immutable as $$
    select encode(sha256(convert_to(concat_ws(':', workflow_key, tenant_id, subject_id, event_id), 'UTF8')), 'hex')
$$;
