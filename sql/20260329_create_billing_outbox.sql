-- billing.billing_outbox: the transactional outbox. A row is written in the same transaction as the state
-- change it announces, so an event exists if and only if the change committed. The relay claims unpublished
-- rows in id order with FOR UPDATE SKIP LOCKED and publishes them to EventBridge (at least once; consumers
-- de-duplicate on event_id).
--
-- The payload is built inside the transaction from the committed execution row by billing.execution_event_payload,
-- never from caller data that may be stale.

create table billing.billing_outbox (
    tenant_id        uuid        not null,
    id               bigint      generated always as identity,
    event_id         uuid        not null,
    aggregate_type   text        not null default 'billing_execution',
    aggregate_id     uuid        not null,
    event_type       text        not null,
    payload          jsonb       not null,
    correlation_id   text,
    occurred_at      timestamptz not null default now(),
    published_at     timestamptz,
    publish_attempts integer     not null default 0,
    last_error       text,

    constraint billing_outbox_pkey primary key (tenant_id, id),
    constraint billing_outbox_event_id_uniq unique (tenant_id, event_id),
    constraint billing_outbox_payload_object check (jsonb_typeof(payload) = 'object'),
    constraint billing_outbox_attempts_nonnegative check (publish_attempts >= 0)
);

-- The relay's claim query: unpublished rows in global id order.
create index billing_outbox_unpublished on billing.billing_outbox (id) where published_at is null;
-- Per-execution ordering and operator replay by execution or time range.
create index billing_outbox_aggregate on billing.billing_outbox (aggregate_id, id);
create index billing_outbox_occurred on billing.billing_outbox (occurred_at);

-- Only publication bookkeeping may change; what was announced never does. Published rows may be pruned.
create function billing.guard_outbox_change() returns trigger
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
    return new;
end;
$$;

create trigger billing_outbox_guard
    before update or delete on billing.billing_outbox
    for each row execute function billing.guard_outbox_change();

-- The event payload every consumer sees, built from the execution row as committed in this transaction.
create function billing.execution_event_payload(
    e billing.billing_executions, event_id uuid, event_type text, old_status text, correlation_id text,
    occurred_at timestamptz
) returns jsonb
language sql immutable as $$
    select jsonb_build_object(
        'event_id', event_id,
        'event_type', event_type,
        'tenant_id', e.tenant_id,
        'execution_id', e.id,
        'entity_contract_id', e.entity_contract_id,
        'plan_contract_id', e.plan_contract_id,
        'amount', e.amount,
        'currency', e.currency,
        'old_status', old_status,
        'new_status', e.status,
        'payment_rail', e.payment_rail,
        'payment_provider', e.payment_provider,
        'provider_reference', e.provider_reference,
        'idempotency_key', e.idempotency_key,
        'correlation_id', correlation_id,
        'attempt_count', e.attempt_count,
        'error_code', e.last_error_code,
        'occurred_at', occurred_at
    )
$$;
