-- Acting on the risk decision before a charge is submitted, and 3-D Secure as an entity of its own.
--
-- billing.risk_reviews: an operator's (or the review timeout's) decision on an execution the assessment sent to
-- review; one per execution, append-only.
--
-- billing.authentications: one 3-D Secure authentication (or claimed exemption) per execution, with its EMV
-- identifiers and outcome. The authentication value (CAVV/AAV) is never stored: only its SHA-256 digest, so the
-- value can be used once (value_used_at is set once) and matched, never read back.
--
-- The database's last word on submission: an execution whose latest assessment blocked it, sent it to review
-- without an approval, or required 3-D Secure without an authentication that lets the charge go on, cannot move to
-- processing (BE020), whatever the application's own role tries.
--
-- sandbox_provider.acs_challenges: the sandbox ACS's open challenges (the ACS's own state, as an issuer's ACS would
-- keep it). The stored session never holds an authentication value: the ACS draws it when the challenge ends and
-- hands it on in the RReq at once.

create table billing.risk_reviews (
    tenant_id     uuid        not null,
    execution_id  uuid        not null,
    assessment_id uuid        not null,
    decision      text        not null,
    decided_by    text        not null,
    note          text,
    decided_at    timestamptz not null default now(),

    constraint risk_reviews_pkey primary key (tenant_id, execution_id),
    constraint risk_reviews_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint risk_reviews_assessment_fkey foreign key (tenant_id, assessment_id)
        references billing.risk_assessments (tenant_id, id),
    constraint risk_reviews_decision_known check (decision in ('approve', 'reject', 'expired')),
    constraint risk_reviews_note_length check (note is null or length(note) <= 500)
);

create table billing.authentications (
    tenant_id                   uuid        not null,
    id                          uuid        not null,
    execution_id                uuid        not null,
    provider                    text        not null,
    -- engine: the engine's own 3DS Server ran it (the sandbox); provider: Stripe or Adyen ran theirs.
    performed_by                text        not null,
    instrument_key              text        not null,
    amount                      bigint      not null,
    currency                    char(3)     not null,
    scheme                      text,
    state                       text        not null default 'started',
    exemption                   text,
    message_version             text,
    three_ds_server_trans_id    text,
    acs_trans_id                text,
    ds_trans_id                 text,
    trans_status                text,
    trans_status_reason         text,
    eci                         text,
    challenge_indicator         text,
    challenge_url               text,
    return_url                  text,
    authentication_value_digest text,
    value_used_at               timestamptz,
    liability_shift             boolean,
    created_at                  timestamptz not null default now(),
    updated_at                  timestamptz not null default now(),
    expires_at                  timestamptz,
    finished_at                 timestamptz,

    constraint authentications_pkey primary key (tenant_id, id),
    constraint authentications_one_per_execution unique (tenant_id, execution_id),
    constraint authentications_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint authentications_performed_by_known check (performed_by in ('engine', 'provider')),
    constraint authentications_state_known check (state in (
        'started', 'challenge_required', 'succeeded', 'failed', 'rejected', 'unavailable', 'expired', 'exempted')),
    constraint authentications_exemption_known check (exemption in (
        'low_value', 'merchant_initiated', 'transaction_risk_analysis')),
    constraint authentications_exempted_has_exemption check ((state = 'exempted') = (exemption is not null)),
    constraint authentications_trans_status_known check (trans_status in ('Y', 'A', 'N', 'R', 'U', 'C', 'D', 'I')),
    constraint authentications_amount_positive check (amount > 0),
    constraint authentications_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    -- A digest, never the value.
    constraint authentications_value_is_a_digest check (authentication_value_digest ~ '^[0-9a-f]{64}$'),
    constraint authentications_value_used_once check (value_used_at is null or authentication_value_digest is not null),
    -- An exemption or a failed authentication shifts nothing.
    constraint authentications_shift_only_if_succeeded check (liability_shift is not true or state = 'succeeded'),
    constraint authentications_final_has_end check (
        (state in ('started', 'challenge_required')) = (finished_at is null))
);

create index authentications_instrument on billing.authentications (tenant_id, instrument_key, created_at);
create index authentications_open on billing.authentications (expires_at)
    where state in ('started', 'challenge_required');

-- States only move forward (billing.authentication.states); identity and money never change; a final row changes
-- only to record the single use of its authentication value.
create function billing.guard_authentication_change() returns trigger
language plpgsql as $$
begin
    if (new.tenant_id, new.id, new.execution_id, new.provider, new.performed_by, new.instrument_key, new.amount,
        new.currency, new.created_at)
       is distinct from
       (old.tenant_id, old.id, old.execution_id, old.provider, old.performed_by, old.instrument_key, old.amount,
        old.currency, old.created_at) then
        raise exception 'billing.authentications row %: identity and money are immutable', old.id
            using errcode = 'BE020';
    end if;
    if old.value_used_at is not null and new.value_used_at is distinct from old.value_used_at then
        raise exception 'billing.authentications row %: the authentication value was used once already', old.id
            using errcode = 'BE020';
    end if;
    if old.authentication_value_digest is not null
       and new.authentication_value_digest is distinct from old.authentication_value_digest then
        raise exception 'billing.authentications row %: the authentication value is set once', old.id
            using errcode = 'BE020';
    end if;
    if old.state not in ('started', 'challenge_required') then
        if to_jsonb(new) - 'value_used_at' - 'updated_at' <> to_jsonb(old) - 'value_used_at' - 'updated_at' then
            raise exception 'billing.authentications row %: % is final', old.id, old.state using errcode = 'BE020';
        end if;
        if new.value_used_at is not null and old.state <> 'succeeded' then
            raise exception 'billing.authentications row %: only a succeeded authentication is used', old.id
                using errcode = 'BE020';
        end if;
        return new;
    end if;
    if new.state is distinct from old.state and not (
        (old.state = 'started' and new.state in ('challenge_required', 'succeeded', 'failed', 'rejected',
                                                 'unavailable', 'expired', 'exempted'))
        or (old.state = 'challenge_required' and new.state in ('succeeded', 'failed', 'rejected', 'unavailable',
                                                               'expired'))
    ) then
        raise exception 'billing.authentications row %: % -> % is not allowed', old.id, old.state, new.state
            using errcode = 'BE020';
    end if;
    if new.value_used_at is not null then
        raise exception 'billing.authentications row %: an unfinished authentication is not used', old.id
            using errcode = 'BE020';
    end if;
    return new;
end;
$$;

create trigger authentications_change_rules
    before update on billing.authentications
    for each row execute function billing.guard_authentication_change();

create trigger authentications_not_deletable
    before delete on billing.authentications
    for each row execute function billing.reject_append_only_change();

create trigger authentications_card_data_guard
    before insert or update on billing.authentications
    for each row execute function billing.refuse_card_numbers('instrument_key', 'scheme', 'trans_status_reason');

create trigger risk_reviews_append_only
    before update or delete on billing.risk_reviews
    for each row execute function billing.reject_append_only_change();

create trigger risk_reviews_card_data_guard
    before insert on billing.risk_reviews
    for each row execute function billing.refuse_card_numbers('decided_by', 'note');

do $$
declare
    t text;
begin
    foreach t in array array['billing.risk_reviews', 'billing.authentications'] loop
        execute format('create trigger %s_no_truncate before truncate on %s for each statement '
                       'execute function billing.reject_append_only_change()', split_part(t, '.', 2), t);
        execute format('alter table %s enable row level security', t);
        execute format('alter table %s force row level security', t);
        perform billing.enable_tenant_isolation(t::regclass);
    end loop;
end $$;

-- --- Nothing reaches a provider against the risk decision ---------------------------------------------------------

create function billing.guard_submission_after_risk() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
declare
    latest billing.risk_assessments;
begin
    select * into latest from billing.risk_assessments a
     where a.tenant_id = new.tenant_id and a.execution_id = new.id
     order by a.attempt desc, a.assessed_at desc limit 1;
    if not found then
        return new;
    end if;
    if latest.decision = 'block' then
        raise exception 'billing.billing_executions row %: risk blocked it; nothing is submitted', new.id
            using errcode = 'BE020';
    end if;
    if latest.decision = 'review' and not exists (
        select 1 from billing.risk_reviews r
         where r.tenant_id = new.tenant_id and r.execution_id = new.id and r.decision = 'approve'
    ) then
        raise exception 'billing.billing_executions row %: waiting for review; nothing is submitted', new.id
            using errcode = 'BE020';
    end if;
    if latest.decision = 'require_3ds' and not exists (
        select 1 from billing.authentications x
         where x.tenant_id = new.tenant_id and x.execution_id = new.id
           and (x.performed_by = 'provider' or x.state in ('succeeded', 'exempted', 'unavailable'))
    ) then
        raise exception 'billing.billing_executions row %: 3-D Secure is required first', new.id
            using errcode = 'BE020';
    end if;
    return new;
end;
$$;

create trigger billing_executions_submission_after_risk
    before update of status on billing.billing_executions
    for each row when (old.status = 'pending' and new.status = 'processing')
    execute function billing.guard_submission_after_risk();

revoke all on function billing.guard_submission_after_risk() from public;

-- The engine's own refusals are no declines (the velocity counters' declined flag): review timeouts and
-- authentication outcomes join the list. They are never submitted anyway; the list says so where it is read.
create or replace function billing.record_risk_decline() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if new.status = 'failed' and old.status is distinct from 'failed' and new.submitted_at is not null
       and coalesce(new.last_error_code, '') not in (
           'risk_blocked', 'risk_review_rejected', 'risk_review_expired', 'authentication_failed',
           'authentication_rejected', 'authentication_unavailable', 'authentication_expired',
           'canceled_at_provider', 'canceled') then
        update billing.risk_attempts set declined = true
         where tenant_id = new.tenant_id and execution_id = new.id and not declined;
    end if;
    return null;
end;
$$;

-- --- Event types ------------------------------------------------------------------------------------------------

insert into billing.execution_event_types (type, kind) values
    -- the execution failed before submission: blocked by risk, rejected or timed out in review, or its
    -- authentication failed
    ('billing.execution.refused', 'change'),
    ('billing.execution.risk_assessed', 'annotation'),
    ('billing.execution.review_approved', 'annotation'),
    ('billing.execution.authentication_required', 'annotation'),
    ('billing.execution.authenticated', 'annotation');

insert into billing.execution_event_transitions (type, from_status, to_status) values
    ('billing.execution.refused', 'pending', 'failed');

-- --- The sandbox ACS's challenges --------------------------------------------------------------------------------

create table sandbox_provider.acs_challenges (
    acs_trans_id  text        not null,
    tenant_id     uuid        not null,
    authentication_id uuid    not null,
    merchant_name text        not null,
    amount        bigint      not null,
    currency      char(3)     not null,
    session       jsonb       not null,
    status        text        not null,
    updated_at    timestamptz not null default now(),

    constraint acs_challenges_pkey primary key (acs_trans_id),
    constraint acs_challenges_status_known check (status in ('open', 'authenticated', 'failed', 'canceled',
                                                             'timed_out')),
    -- The ACS hands the authentication value on in the RReq; it never rests here.
    constraint acs_challenges_no_authentication_value check (session ->> 'authentication_value' is null)
);

-- --- What risk reads of an instrument ----------------------------------------------------------------------------

-- The execute function may not read contracts or their terms: these are the facts an assessment needs (never a
-- card number: the fingerprint is a keyed hash, the brand and issuer country come from the IIN table).
create function billing.payment_instrument_risk_facts(tenant uuid, instrument_id text)
returns table (created_at timestamptz, fingerprint text, issuer_country text, brand text)
language sql stable security definer set search_path = pg_catalog, billing as $$
    select c.created_at,
           max(a.attr_value) filter (where a.attr_key = 'fingerprint'),
           max(a.attr_value) filter (where a.attr_key = 'issuer_country'),
           max(a.attr_value) filter (where a.attr_key = 'brand')
      from billing.contracts c
      left join billing.contract_term_attrs a
        on a.tenant_id = c.tenant_id and a.contract_id = c.id and a.valid_to is null
       and a.attr_key in ('fingerprint', 'issuer_country', 'brand')
     where c.tenant_id = tenant and c.id = instrument_id and c.contract_type = 'payment_instrument'
       and billing.row_visible(c.tenant_id)
     group by c.id, c.created_at
$$;

revoke all on function billing.payment_instrument_risk_facts(uuid, text) from public;
grant execute on function billing.payment_instrument_risk_facts(uuid, text) to billing_app, billing_worker;

create trigger acs_challenges_card_data_guard
    before insert on sandbox_provider.acs_challenges
    for each row execute function billing.refuse_card_numbers('merchant_name');

-- The workflow phase of each lifecycle event type (the SQL twin of billing.domain.transitions).
create or replace function billing.workflow_phase_for_event(event_type text) returns text
language sql immutable as $$
    select case event_type
        when 'billing.execution.created' then 'created'
        when 'billing.execution.pending' then 'pending'
        when 'billing.execution.processing' then 'processing'
        when 'billing.execution.completed' then 'completed'
        when 'billing.execution.failed' then 'failed'
        when 'billing.execution.canceled' then 'canceled'
        when 'billing.execution.confirmed' then 'completed'
        when 'billing.execution.rejected' then 'failed'
        when 'billing.execution.settlement_pending' then 'settlement_pending'
        when 'billing.execution.reconciled' then 'reconciled'
        when 'billing.execution.refused' then 'failed'
    end
$$;

-- --- Privileges -------------------------------------------------------------------------------------------------

-- The execute function assesses, holds for review, authenticates and serves the challenge; the reconciliation
-- worker ends reviews and authentications that waited too long.
select billing.grant_dml('billing.risk_reviews', 'billing_app', 'select, insert');
select billing.grant_dml('billing.risk_reviews', 'billing_worker', 'select, insert');
-- The outcome columns only: identity, money and the instrument are written once, by the insert.
select billing.grant_dml('billing.authentications', 'billing_app',
    'select, insert, update (state, message_version, three_ds_server_trans_id, acs_trans_id, ds_trans_id, '
    'trans_status, trans_status_reason, eci, challenge_indicator, challenge_url, authentication_value_digest, '
    'value_used_at, liability_shift, scheme, updated_at, expires_at, finished_at)');
-- The sweep ends overdue ones (one guarded statement shared with the execute function, so the same columns).
select billing.grant_dml('billing.authentications', 'billing_worker',
    'select, update (state, message_version, three_ds_server_trans_id, acs_trans_id, ds_trans_id, '
    'trans_status, trans_status_reason, eci, challenge_indicator, challenge_url, authentication_value_digest, '
    'liability_shift, scheme, updated_at, expires_at, finished_at)');
select billing.grant_dml('sandbox_provider.acs_challenges', 'billing_app', 'select, insert, update (session, status, updated_at)');
select billing.grant_dml('sandbox_provider.acs_challenges', 'billing_worker', 'select, update (session, status, updated_at)');
