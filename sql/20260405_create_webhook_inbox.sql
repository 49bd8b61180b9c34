-- billing_inbox.webhook_events: the webhook inbox, one row per provider event we have processed, keyed by
-- (provider, provider event id). A delivery is claimed by inserting its row and resolved in the same transaction as
-- the effect it has, so an event is marked seen only once that effect committed; a redelivery finds the row and gets
-- the stored result back without touching the execution again. Concurrent deliveries of one event serialise on the
-- primary key: the losers wait on their insert until the winner commits, then see the conflict.
--
-- Its own schema, outside billing, on purpose: deliveries arrive before we know the tenant and orphans never have
-- one, so tenant_id is nullable here and cannot lead the keys as every table in schema billing must (Citus). In
-- Citus this table stays a plain coordinator table or is distributed on provider_event_id; nothing references it.
-- No row-level security for the same reason: rows are written before any tenant is known, and only the webhook
-- path reads them.
--
-- Deliberately no raw payload: bodies may carry personal data (names, IBAN fragments, e-mail addresses). What is
-- kept is the SHA-256 of the exact body bytes (to match a delivery against the provider's logs) and the few parsed
-- facts the engine acted on.

create schema if not exists billing_inbox;

create table billing_inbox.webhook_events (
    provider           text        not null,
    provider_event_id  text        not null,
    event_type         text        not null,
    outcome            text        not null,
    provider_reference text,
    failure_code       text,
    -- The provider's own timestamp for the event, when it sends one.
    occurred_at        timestamptz,
    payload_sha256     text        not null,
    received_at        timestamptz not null,
    -- Filled in by the transaction that claimed the row, before it commits (see the deferred check below).
    result             text,
    tenant_id          uuid,
    execution_id       uuid,
    -- The execution's status as this event found it (or left it, for an applied transition).
    execution_status   text,
    processed_at       timestamptz,

    constraint webhook_events_pkey primary key (provider, provider_event_id),
    constraint webhook_events_outcome_known check (outcome in ('succeeded', 'failed', 'reversed', 'ignored')),
    constraint webhook_events_result_known check (
        result in ('applied', 'already_terminal', 'out_of_order', 'reversal', 'ignored', 'orphan', 'ambiguous')
    ),
    constraint webhook_events_payload_sha256_hex check (payload_sha256 ~ '^[0-9a-f]{64}$'),
    constraint webhook_events_execution_status_known
        check (execution_status in ('created', 'pending', 'processing', 'completed', 'failed', 'canceled')),
    constraint webhook_events_execution_is_tenant_and_id check ((tenant_id is null) = (execution_id is null)),
    constraint webhook_events_execution_has_status check ((execution_id is null) = (execution_status is null)),
    -- Exactly the results that concern one execution name it; ignored, orphan and ambiguous events name none.
    constraint webhook_events_result_names_execution check (
        result is null
        or (result in ('applied', 'already_terminal', 'out_of_order', 'reversal')) = (execution_id is not null)
    ),
    constraint webhook_events_processed_with_result check ((result is null) = (processed_at is null))
);

-- Investigation: orphans (and ambiguous references) by the reference they named, e.g. once the execution appears.
create index webhook_events_unmatched_reference
    on billing_inbox.webhook_events (provider, provider_reference)
    where result in ('orphan', 'ambiguous');

-- Investigation: every delivery that concerned one execution.
create index webhook_events_execution
    on billing_inbox.webhook_events (tenant_id, execution_id)
    where execution_id is not null;

-- A claim and its result commit together: checked at commit time, so no row can ever be committed unresolved.
-- The current row is re-read because a deferred trigger sees the row as inserted, not as later updated.
create function billing_inbox.require_webhook_event_result() returns trigger
language plpgsql as $$
begin
    if exists (
        select 1 from billing_inbox.webhook_events w
         where w.provider = new.provider and w.provider_event_id = new.provider_event_id and w.result is null
    ) then
        raise exception 'billing_inbox.webhook_events (%, %) would be committed without a result',
            new.provider, new.provider_event_id
            using errcode = 'BE006', hint = 'claim and resolve a webhook event in one transaction';
    end if;
    return null;
end;
$$;

create constraint trigger webhook_events_result_recorded
    after insert on billing_inbox.webhook_events
    deferrable initially deferred
    for each row execute function billing_inbox.require_webhook_event_result();

-- A resolved row is evidence of what a delivery did: only the one update that resolves a claim is allowed, and it
-- may not change what was received. Deleting (retention pruning of old rows) stays possible.
create function billing_inbox.guard_webhook_event_change() returns trigger
language plpgsql as $$
begin
    if old.result is not null then
        raise exception 'billing_inbox.webhook_events (%, %) is resolved and immutable', old.provider, old.provider_event_id
            using errcode = 'BE005';
    end if;
    if (new.provider, new.provider_event_id, new.event_type, new.outcome, new.provider_reference, new.failure_code,
        new.occurred_at, new.payload_sha256, new.received_at)
       is distinct from
       (old.provider, old.provider_event_id, old.event_type, old.outcome, old.provider_reference, old.failure_code,
        old.occurred_at, old.payload_sha256, old.received_at) then
        raise exception 'billing_inbox.webhook_events (%, %): what was received is immutable',
            old.provider, old.provider_event_id
            using errcode = 'BE005';
    end if;
    return new;
end;
$$;

create trigger webhook_events_guard
    before update on billing_inbox.webhook_events
    for each row execute function billing_inbox.guard_webhook_event_change();


-- billing.execution_reversals: money that came back after an execution completed (chargeback, refund, late failure
-- reported by the provider). The execution row is immutable once completed, so a reversal is never a status
-- rewrite: it is recorded here, beside the unchanged row, together with a lifecycle event
-- (billing.execution.reversed, old and new status both completed) and an outbox row, all in one statement.
--
-- Citus-ready like every billing table: tenant_id leads the primary key, the unique index and the foreign key.
-- (tenant_id, provider, provider_event_id) is unique so a provider event can reverse an execution at most once,
-- even if its inbox row were pruned and the event redelivered.

create table billing.execution_reversals (
    tenant_id           uuid        not null,
    id                  uuid        not null,
    execution_id        uuid        not null,
    provider            text        not null,
    provider_event_id   text        not null,
    provider_event_type text        not null,
    -- The provider's reason code (dispute reason, return code), when it gives one.
    reason              text,
    -- When the provider says the reversal happened (its event time, else when we received the event).
    occurred_at         timestamptz not null,
    recorded_at         timestamptz not null default now(),

    constraint execution_reversals_pkey primary key (tenant_id, id),
    constraint execution_reversals_provider_event_uniq unique (tenant_id, provider, provider_event_id),
    constraint execution_reversals_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id)
);

create index execution_reversals_execution on billing.execution_reversals (tenant_id, execution_id, recorded_at);

create trigger execution_reversals_append_only
    before update or delete on billing.execution_reversals
    for each row execute function billing.reject_append_only_change();

create trigger execution_reversals_no_truncate
    before truncate on billing.execution_reversals
    for each statement execute function billing.reject_append_only_change();

select billing.enable_tenant_isolation('billing.execution_reversals');
