-- Refunds with amounts, and every reversal with its own amount, status and provider reference.
--
-- billing.execution_reversals held provider-reported reversals only (a chargeback, a refund made elsewhere), final
-- when recorded and without an amount. It now also holds the refunds the engine requests
-- (POST /executions/{id}/refunds): born `requested` before the provider is asked, then `pending` or final as the
-- provider answers, final by webhook or reconciliation. The execution row still never changes.
--
-- Rules, each against the application's own roles (SQLSTATE in brackets; billing.db.sqlstates maps them):
--   * a refund the engine requests never takes the execution past what it captured: the sum of its refunds that
--     have not failed, plus its chargebacks, less what came back, stays within the execution's amount, whatever
--     the concurrency: requests for one execution are serialised on a transaction-scoped advisory lock [BE017];
--   * a reversal's identity, kind, amount and origin never change; its status only moves forward
--     (requested -> pending -> succeeded | failed), its provider reference is set once, and a final row never
--     changes again; rows are never deleted [BE018];
--   * a reversal row and its status changes commit with their lifecycle event (kind 'reversal') [BE009].
-- Rows recorded before this migration keep kind 'unspecified' and no amount; every new row names both.

alter table billing.execution_reversals
    alter column provider_event_id drop not null,
    alter column provider_event_type drop not null,
    add column kind                text        not null default 'unspecified',
    add column amount              bigint,
    add column currency            char(3),
    add column status              text        not null default 'succeeded',
    add column initiated_by        text        not null default 'provider',
    -- The provider's id of the reversal itself (Stripe re_... / dp_..., Adyen's modification pspReference).
    add column provider_reference  text,
    -- A refund the engine requested: the client's key (unique per tenant) and what was asked under it.
    add column idempotency_key     text,
    add column request_fingerprint text,
    add column requested_by        text,
    add column failure_code        text,
    add column updated_at          timestamptz,
    -- Stamped by every status change, so the commit-time checks can ask for the change's lifecycle event.
    add column changed_txid        xid8,
    -- Reconciliation of refunds still waiting on the provider: when to look next, how often it looked.
    add column next_check_at       timestamptz,
    add column check_attempts      integer     not null default 0;

-- The defaults only described the rows already there; new rows state all three.
alter table billing.execution_reversals
    alter column kind drop default,
    alter column status drop default,
    alter column initiated_by drop default;

alter table billing.execution_reversals
    add constraint execution_reversals_kind_known check (kind in (
        'refund', 'cancel_or_refund', 'chargeback', 'second_chargeback', 'chargeback_reversed', 'refund_reversed',
        'unspecified')),
    add constraint execution_reversals_status_known check (status in ('requested', 'pending', 'succeeded', 'failed')),
    add constraint execution_reversals_initiator_known check (initiated_by in ('merchant', 'provider')),
    add constraint execution_reversals_amount_positive check (amount > 0),
    add constraint execution_reversals_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    add constraint execution_reversals_money_whole check ((amount is null) = (currency is null)),
    add constraint execution_reversals_unspecified_has_no_amount check ((kind = 'unspecified') = (amount is null)),
    -- Ours: a refund under a client key, asked before any provider event exists.
    add constraint execution_reversals_merchant_shape check (
        initiated_by <> 'merchant'
        or (kind = 'refund' and idempotency_key is not null and request_fingerprint is not null
            and requested_by is not null and provider_event_id is null)),
    -- The provider's: reported by one of its events, never under a client key, never merely requested.
    add constraint execution_reversals_provider_shape check (
        initiated_by <> 'provider'
        or (provider_event_id is not null and provider_event_type is not null and idempotency_key is null
            and status <> 'requested')),
    add constraint execution_reversals_failure_code_only_if_failed check (status = 'failed' or failure_code is null),
    add constraint execution_reversals_check_attempts_nonnegative check (check_attempts >= 0);

-- New rows must say what they are; the rows recorded before this migration are left as they were.
alter table billing.execution_reversals
    add constraint execution_reversals_kind_stated check (kind <> 'unspecified') not valid;

create unique index execution_reversals_idempotency_uniq
    on billing.execution_reversals (tenant_id, idempotency_key) where idempotency_key is not null;
-- One row per movement: a dispute's chargeback, second chargeback and reversal share the provider's reference.
create unique index execution_reversals_provider_reference_uniq
    on billing.execution_reversals (tenant_id, provider, provider_reference, kind)
    where provider_reference is not null;
-- The reconciliation sweep: refunds still waiting, by when they are due.
create index execution_reversals_due
    on billing.execution_reversals (next_check_at) where status in ('requested', 'pending');

-- --- Amount cap -------------------------------------------------------------------------------------------------

-- What a refund may still take: the execution's amount less every reversal that has not failed (money coming back
-- counts negative). Provider-reported reversals are never refused (they already happened); a requested refund is.
create function billing.execution_refundable_amount(tenant uuid, execution uuid) returns bigint
language sql stable security definer set search_path = pg_catalog, billing as $$
    select e.amount - coalesce((
        select sum(case when r.kind in ('chargeback_reversed', 'refund_reversed') then -r.amount else r.amount end)
          from billing.execution_reversals r
         where r.tenant_id = e.tenant_id and r.execution_id = e.id and r.status <> 'failed' and r.amount is not null
    ), 0)
      from billing.billing_executions e
     where e.tenant_id = tenant and e.id = execution and billing.row_visible(e.tenant_id)
$$;

create function billing.guard_refund_within_captured() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
declare
    e billing.billing_executions;
    refundable bigint;
begin
    if new.initiated_by <> 'merchant' then
        return new;
    end if;
    -- The lock below serialises requests for one execution, and the sum after it must see what the request before
    -- committed: only a statement snapshot taken after the lock does, which READ COMMITTED gives and higher
    -- isolation levels (one snapshot per transaction) do not.
    if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'billing.execution_reversals: refunds are requested in READ COMMITTED transactions'
            using errcode = 'BE017';
    end if;
    perform pg_advisory_xact_lock(hashtextextended('billing.refunds:' || new.tenant_id || ':' || new.execution_id, 0));
    select * into e from billing.billing_executions x where x.tenant_id = new.tenant_id and x.id = new.execution_id;
    if new.currency is distinct from e.currency then
        raise exception 'billing.execution_reversals: a refund of execution % is in %, not %', new.execution_id,
            e.currency, new.currency using errcode = 'BE017';
    end if;
    refundable := billing.execution_refundable_amount(new.tenant_id, new.execution_id);
    if new.amount > refundable then
        raise exception 'billing.execution_reversals: refund of % % exceeds the % % still refundable on execution %',
            new.amount, new.currency, refundable, e.currency, new.execution_id
            using errcode = 'BE017', detail = format('refundable=%s', refundable);
    end if;
    return new;
end;
$$;

-- After the "completed only" guard (trigger names order same-timing triggers): a refund of a pending execution is
-- refused for that, not for its amount.
create trigger execution_reversals_within_captured
    before insert on billing.execution_reversals
    for each row execute function billing.guard_refund_within_captured();

-- --- Change rules -----------------------------------------------------------------------------------------------

drop trigger execution_reversals_append_only on billing.execution_reversals;

create trigger execution_reversals_not_deletable
    before delete on billing.execution_reversals
    for each row execute function billing.reject_append_only_change();

create function billing.guard_reversal_change() returns trigger
language plpgsql as $$
begin
    if (new.tenant_id, new.id, new.execution_id, new.provider, new.provider_event_id, new.provider_event_type,
        new.reason, new.occurred_at, new.recorded_at, new.recorded_txid, new.kind, new.amount, new.currency,
        new.initiated_by, new.idempotency_key, new.request_fingerprint, new.requested_by)
       is distinct from
       (old.tenant_id, old.id, old.execution_id, old.provider, old.provider_event_id, old.provider_event_type,
        old.reason, old.occurred_at, old.recorded_at, old.recorded_txid, old.kind, old.amount, old.currency,
        old.initiated_by, old.idempotency_key, old.request_fingerprint, old.requested_by) then
        raise exception 'billing.execution_reversals row %: only its status, provider reference and checks change',
            old.id using errcode = 'BE018';
    end if;
    if old.status in ('succeeded', 'failed') then
        raise exception 'billing.execution_reversals row % is % and stays so', old.id, old.status
            using errcode = 'BE018';
    end if;
    if new.status is distinct from old.status and not (
        (old.status = 'requested' and new.status in ('pending', 'succeeded', 'failed'))
        or (old.status = 'pending' and new.status in ('succeeded', 'failed'))
    ) then
        raise exception 'billing.execution_reversals row %: % -> % is not allowed', old.id, old.status, new.status
            using errcode = 'BE018';
    end if;
    if old.provider_reference is not null and new.provider_reference is distinct from old.provider_reference then
        raise exception 'billing.execution_reversals row %: the provider reference is set once', old.id
            using errcode = 'BE018';
    end if;
    if new.check_attempts < old.check_attempts then
        raise exception 'billing.execution_reversals row %: check_attempts only grows', old.id using errcode = 'BE018';
    end if;
    new.updated_at := now();
    if new.status <> old.status then
        new.changed_txid := pg_current_xact_id();
    end if;
    return new;
end;
$$;

create trigger execution_reversals_change_rules
    before update on billing.execution_reversals
    for each row execute function billing.guard_reversal_change();

create trigger execution_reversals_failure_code_card_data_guard
    before update of failure_code on billing.execution_reversals
    for each row execute function billing.refuse_card_numbers('failure_code');

create trigger execution_reversals_new_columns_card_data_guard
    before insert on billing.execution_reversals
    for each row execute function billing.refuse_card_numbers('idempotency_key', 'requested_by', 'failure_code');

-- --- Companion rows: a reversal and each of its status changes commit with their lifecycle event -----------------

create function billing.check_reversal_recorded_with_event() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if tg_op = 'UPDATE' and new.status is not distinct from old.status then
        return null;
    end if;
    if not exists (
        select 1 from billing.billing_execution_events ev
         join billing.execution_event_types t on t.type = ev.type and t.kind = 'reversal'
         where ev.tenant_id = new.tenant_id and ev.execution_id = new.execution_id
           and ev.metadata ->> 'reversal_id' = new.id::text and ev.recorded_txid = pg_current_xact_id()
           and coalesce(ev.metadata ->> 'reversal_status', new.status) = new.status
    ) then
        raise exception 'billing.execution_reversals row % (%) without its lifecycle event in this transaction',
            new.id, new.status using errcode = 'BE009';
    end if;
    return null;
end;
$$;

create constraint trigger execution_reversals_recorded_with_event
    after insert or update of status on billing.execution_reversals
    deferrable initially deferred
    for each row execute function billing.check_reversal_recorded_with_event();

-- A reversal event names a reversal row this transaction inserted or moved (it used to be inserted only).
create or replace function billing.check_event_recorded_with_change() returns trigger
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
               and r.id::text = new.metadata ->> 'reversal_id'
               and (r.recorded_txid = pg_current_xact_id() or r.changed_txid = pg_current_xact_id())
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

-- --- Event types ------------------------------------------------------------------------------------------------

insert into billing.execution_event_types (type, kind) values
    ('billing.execution.refund_requested', 'reversal'),
    ('billing.execution.refund_pending', 'reversal'),
    ('billing.execution.refunded', 'reversal'),
    ('billing.execution.refund_failed', 'reversal'),
    -- a provider reported a success for an execution that had already failed or been canceled: money may have
    -- moved that the engine does not book; left for an operator, never applied
    ('billing.execution.paid_after_failure', 'annotation');

insert into billing.execution_event_transitions (type, from_status, to_status) values
    ('billing.execution.refund_requested', 'completed', 'completed'),
    ('billing.execution.refund_pending', 'completed', 'completed'),
    ('billing.execution.refunded', 'completed', 'completed'),
    ('billing.execution.refund_failed', 'completed', 'completed');

-- --- Privileges -------------------------------------------------------------------------------------------------

-- The execute function requests refunds and applies the provider's first answer; the webhook function records
-- provider reversals and moves refunds on; the reconciliation worker follows refunds still waiting.
select billing.grant_dml('billing.execution_reversals', 'billing_app',
    'update (status, provider_reference, failure_code, next_check_at, check_attempts)');
select billing.grant_dml('billing.execution_reversals', 'billing_worker',
    'update (status, provider_reference, failure_code, next_check_at, check_attempts)');
grant execute on function billing.execution_refundable_amount(uuid, uuid) to billing_app, billing_worker;
revoke all on function billing.execution_refundable_amount(uuid, uuid) from public;
revoke all on function billing.guard_refund_within_captured() from public;
revoke all on function billing.check_reversal_recorded_with_event() from public;

-- --- Routing: which providers hold a token for an instrument ------------------------------------------------------

create function billing.payment_instrument_providers(tenant uuid, instrument_id text) returns text[]
language sql stable security definer set search_path = pg_catalog, billing as $$
    select coalesce(array_agg(substr(a.attr_key, length('provider_token.') + 1) order by a.attr_key), '{}')
      from billing.contract_term_attrs a
     where a.tenant_id = tenant and a.contract_id = instrument_id and a.attr_key like 'provider\_token.%'
       and a.valid_to is null and billing.row_visible(a.tenant_id)
$$;

revoke all on function billing.payment_instrument_providers(uuid, text) from public;
grant execute on function billing.payment_instrument_providers(uuid, text) to billing_app;

-- --- The sandbox provider's refunds -----------------------------------------------------------------------------

-- Like its charges: one row per idempotency key, so a repeated request replays its answer; a refund never takes a
-- charge past its amount (the sandbox refuses as a PSP would, with Stripe's code, under the charge's row lock).
create table sandbox_provider.refunds (
    idempotency_key  text        not null,
    reference        text        not null,
    charge_reference text        not null references sandbox_provider.charges (reference),
    refund_id        uuid        not null,
    amount           bigint      not null,
    currency         char(3)     not null,
    status           text        not null,
    created_at       timestamptz not null,

    constraint refunds_pkey primary key (idempotency_key),
    constraint refunds_reference_uniq unique (reference),
    constraint refunds_reference_format check (reference ~ '^sbxr_[0-9a-f]{24}$'),
    constraint refunds_amount_positive check (amount > 0),
    constraint refunds_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    constraint refunds_status_known check (status in ('succeeded', 'pending'))
);

create index refunds_charge on sandbox_provider.refunds (charge_reference);

select billing.grant_dml('sandbox_provider.refunds', 'billing_app', 'select, insert');
select billing.grant_dml('sandbox_provider.refunds', 'billing_worker', 'select, insert');
