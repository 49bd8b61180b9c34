-- Risk assessment before every submission: the attempts velocity is counted over, each assessment as it was made,
-- and the tenants' versioned rule sets.
--
-- billing.risk_attempts: one row per execution (its first assessment; a retry of the same execution is never
-- counted twice), keyed by what velocity is counted on: the instrument (a vault card's fingerprint, else the token
-- the caller sent), the customer (the entity contract), and the client's device fingerprint and IP when the request
-- carried them (as SHA-256 digests: velocity needs equality, never the value). Times are the database's clock.
-- `declined` is set when the execution fails with a provider's decline, by a trigger on the execution, so the
-- counters never depend on the application remembering to.
--
-- billing.risk_assessments: append-only, one row per assessment (per attempt): score, decision, the rules that fired
-- with the inputs they read, the rule-set version, and how long the assessment took.
--
-- billing.risk_rule_sets: append-only, one row per version of a tenant's rule set; the highest version is current.
-- A tenant without a row uses the engine's default rule set (version 0, billing.risk.defaults).

create table billing.risk_attempts (
    tenant_id      uuid        not null,
    execution_id   uuid        not null,
    recorded_at    timestamptz not null default now(),
    instrument_key text        not null,
    customer_key   text        not null,
    device_key     text,
    ip_key         text,
    amount         bigint      not null,
    currency       char(3)     not null,
    rail           text        not null,
    initiator      text        not null,
    declined       boolean     not null default false,

    constraint risk_attempts_pkey primary key (tenant_id, execution_id),
    constraint risk_attempts_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint risk_attempts_amount_positive check (amount > 0),
    constraint risk_attempts_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    constraint risk_attempts_rail_known check (rail in ('card', 'sepa_debit', 'ach_debit')),
    constraint risk_attempts_initiator_known check (initiator in ('customer', 'merchant')),
    -- Digests only: a device fingerprint or an IP address is never stored as the client sent it.
    constraint risk_attempts_device_is_a_digest check (device_key ~ '^[0-9a-f]{64}$'),
    constraint risk_attempts_ip_is_a_digest check (ip_key ~ '^[0-9a-f]{64}$')
);

-- One index per velocity key, each ending in the time the windows slide over.
create index risk_attempts_by_instrument on billing.risk_attempts (tenant_id, instrument_key, recorded_at);
create index risk_attempts_by_customer on billing.risk_attempts (tenant_id, customer_key, recorded_at);
create index risk_attempts_by_device on billing.risk_attempts (tenant_id, device_key, recorded_at)
    where device_key is not null;
create index risk_attempts_by_ip on billing.risk_attempts (tenant_id, ip_key, recorded_at) where ip_key is not null;
create index risk_attempts_by_time on billing.risk_attempts (tenant_id, recorded_at);

-- Only `declined` ever changes, and only from false to true, by the trigger below.
create function billing.guard_risk_attempt_change() returns trigger
language plpgsql as $$
begin
    if (new.tenant_id, new.execution_id, new.recorded_at, new.instrument_key, new.customer_key, new.device_key,
        new.ip_key, new.amount, new.currency, new.rail, new.initiator)
       is distinct from
       (old.tenant_id, old.execution_id, old.recorded_at, old.instrument_key, old.customer_key, old.device_key,
        old.ip_key, old.amount, old.currency, old.rail, old.initiator)
       or (old.declined and not new.declined) then
        raise exception 'billing.risk_attempts row for execution %: only declined changes, once', old.execution_id
            using errcode = 'BE019';
    end if;
    return new;
end;
$$;

create trigger risk_attempts_change_rules
    before update on billing.risk_attempts
    for each row execute function billing.guard_risk_attempt_change();

create trigger risk_attempts_not_deletable
    before delete on billing.risk_attempts
    for each row execute function billing.reject_append_only_change();

-- A provider's refusal of the charge counts as a decline; the engine's own refusals (risk_blocked, an expired
-- customer action, a canceled intent) do not. SECURITY DEFINER: whoever fails the execution records it.
create function billing.record_risk_decline() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
begin
    if new.status = 'failed' and old.status is distinct from 'failed' and new.submitted_at is not null
       and coalesce(new.last_error_code, '') not in ('risk_blocked', 'risk_review_rejected', 'authentication_expired',
                                                     'canceled_at_provider', 'canceled') then
        update billing.risk_attempts set declined = true
         where tenant_id = new.tenant_id and execution_id = new.id and not declined;
    end if;
    return null;
end;
$$;

create trigger billing_executions_record_risk_decline
    after update of status on billing.billing_executions
    for each row execute function billing.record_risk_decline();

create table billing.risk_assessments (
    tenant_id        uuid        not null,
    id               uuid        not null,
    execution_id     uuid        not null,
    attempt          integer     not null,
    score            integer     not null,
    decision         text        not null,
    fired            jsonb       not null,
    facts            jsonb       not null,
    rule_set_version integer     not null,
    assessed_at      timestamptz not null default now(),
    duration_us      integer     not null,

    constraint risk_assessments_pkey primary key (tenant_id, id),
    constraint risk_assessments_attempt_uniq unique (tenant_id, execution_id, attempt),
    constraint risk_assessments_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint risk_assessments_score_range check (score between 0 and 100),
    constraint risk_assessments_decision_known check (decision in ('allow', 'review', 'require_3ds', 'block')),
    constraint risk_assessments_fired_is_a_list check (jsonb_typeof(fired) = 'array'),
    constraint risk_assessments_attempt_positive check (attempt >= 1),
    constraint risk_assessments_version_nonnegative check (rule_set_version >= 0),
    constraint risk_assessments_duration_nonnegative check (duration_us >= 0)
);

create index risk_assessments_execution on billing.risk_assessments (tenant_id, execution_id, assessed_at);

create table billing.risk_rule_sets (
    tenant_id  uuid        not null,
    version    integer     not null,
    rules      jsonb       not null,
    created_at timestamptz not null default now(),
    created_by text        not null,

    constraint risk_rule_sets_pkey primary key (tenant_id, version),
    -- Version 0 is the engine's default, never stored.
    constraint risk_rule_sets_version_positive check (version >= 1),
    constraint risk_rule_sets_rules_is_a_list check (jsonb_typeof(rules -> 'rules') = 'array')
);

-- A new version is the next one: concurrent replacements of one tenant's rules conflict on the key, never skip.
create function billing.guard_risk_rule_set_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing as $$
declare
    latest integer;
begin
    select coalesce(max(version), 0) into latest from billing.risk_rule_sets where tenant_id = new.tenant_id;
    if new.version <> latest + 1 then
        raise exception 'billing.risk_rule_sets: tenant % is at version %, not %', new.tenant_id, latest,
            new.version - 1 using errcode = 'BE019';
    end if;
    return new;
end;
$$;

create trigger risk_rule_sets_next_version
    before insert on billing.risk_rule_sets
    for each row execute function billing.guard_risk_rule_set_insert();

do $$
declare
    t text;
begin
    foreach t in array array['billing.risk_assessments', 'billing.risk_rule_sets'] loop
        execute format('create trigger %s_append_only before update or delete on %s for each row '
                       'execute function billing.reject_append_only_change()',
                       replace(split_part(t, '.', 2), '.', '_'), t);
    end loop;
    foreach t in array array['billing.risk_attempts', 'billing.risk_assessments', 'billing.risk_rule_sets'] loop
        execute format('create trigger %s_no_truncate before truncate on %s for each statement '
                       'execute function billing.reject_append_only_change()', split_part(t, '.', 2), t);
        execute format('alter table %s enable row level security', t);
        execute format('alter table %s force row level security', t);
        perform billing.enable_tenant_isolation(t::regclass);
    end loop;
end $$;

create trigger risk_attempts_card_data_guard
    before insert on billing.risk_attempts
    for each row execute function billing.refuse_card_numbers('instrument_key', 'customer_key');

create trigger risk_rule_sets_card_data_guard
    before insert on billing.risk_rule_sets
    for each row execute function billing.refuse_card_numbers('rules', 'created_by');

-- The execute function assesses before it submits and replaces rule sets; the retry worker assesses a resubmission
-- (no new attempt row: the execution's first one stands) and the webhook function's failures mark declines through
-- the trigger (SECURITY DEFINER), so it needs nothing here.
select billing.grant_dml('billing.risk_attempts', 'billing_app', 'select, insert');
select billing.grant_dml('billing.risk_assessments', 'billing_app', 'select, insert');
select billing.grant_dml('billing.risk_rule_sets', 'billing_app', 'select, insert');
select billing.grant_dml('billing.risk_attempts', 'billing_worker', 'select');
select billing.grant_dml('billing.risk_assessments', 'billing_worker', 'select, insert');
select billing.grant_dml('billing.risk_rule_sets', 'billing_worker', 'select');
revoke all on function billing.record_risk_decline() from public;
revoke all on function billing.guard_risk_rule_set_insert() from public;
