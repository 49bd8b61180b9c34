-- billing.billing_executions: one row per charge the engine executes, followed to a final state.
--
-- Citus-ready: tenant_id is the distribution column and leads every primary key, unique index and foreign
-- key, so create_distributed_table('billing.billing_executions', 'tenant_id') succeeds.
-- Money is bigint minor units plus an ISO 4217 code; never numeric/float.
-- "Pending before submission" and "pending settlement at the provider" are told apart by submitted_at:
-- only rows with submitted_at set (and therefore a provider_reference) are ever polled at a provider.

create schema if not exists billing;

create table billing.billing_executions (
    tenant_id             uuid        not null,
    id                    uuid        not null,
    entity_contract_id    text        not null,
    plan_contract_id      text        not null,
    amount                bigint      not null,
    currency              char(3)     not null,
    status                text        not null default 'created',
    payment_rail          text        not null,
    payment_provider      text        not null,
    payment_instrument_id text,
    provider_reference    text,
    idempotency_key       text,
    request_fingerprint   text        not null,
    correlation_id        text,
    metadata              jsonb       not null default '{}'::jsonb,
    attempt_count         integer     not null default 0,
    last_error_code       text,
    next_attempt_at       timestamptz,
    created_at            timestamptz not null default now(),
    updated_at            timestamptz not null default now(),
    submitted_at          timestamptz,
    finished_at           timestamptz,

    constraint billing_executions_pkey primary key (tenant_id, id),
    constraint billing_executions_amount_positive check (amount > 0),
    constraint billing_executions_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    constraint billing_executions_payment_rail_known check (payment_rail in ('card', 'sepa_debit', 'ach_debit')),
    constraint billing_executions_idempotency_key_printable
        check (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    constraint billing_executions_fingerprint_sha256 check (request_fingerprint ~ '^[0-9a-f]{64}$'),
    constraint billing_executions_metadata_object check (jsonb_typeof(metadata) = 'object'),
    constraint billing_executions_attempt_count_nonnegative check (attempt_count >= 0),
    -- A row awaiting settlement must say where to ask about it.
    constraint billing_executions_submitted_has_reference
        check (submitted_at is null or status <> 'pending' or provider_reference is not null)
);

-- Layer 2 of idempotency: the loser of a concurrent create hits this index (ON CONFLICT) and reads the winner.
create unique index billing_executions_idempotency_key_uniq
    on billing.billing_executions (tenant_id, idempotency_key)
    where idempotency_key is not null;

-- Webhooks and reconciliation find an execution by the provider's reference.
create unique index billing_executions_provider_reference_uniq
    on billing.billing_executions (tenant_id, payment_provider, provider_reference)
    where provider_reference is not null;
create index billing_executions_provider_reference_lookup
    on billing.billing_executions (payment_provider, provider_reference)
    where provider_reference is not null;

-- Reconciliation scans only rows awaiting settlement, oldest first.
create index billing_executions_awaiting_settlement
    on billing.billing_executions (submitted_at)
    where status = 'pending' and submitted_at is not null;

-- Stuck-in-processing recovery scans by age.
create index billing_executions_processing_since
    on billing.billing_executions (updated_at)
    where status = 'processing';

-- Listing per tenant in a stable order (created_at, id) for cursor pagination.
create index billing_executions_tenant_created
    on billing.billing_executions (tenant_id, created_at desc, id desc);
