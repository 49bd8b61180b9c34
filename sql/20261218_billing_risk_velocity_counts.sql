-- Velocity counted in one call with plans the server keeps, over indexes that answer without reading the table.
--
-- billing.count_risk_attempt takes the attempt's advisory locks, records its row (when asked: a resubmission is
-- counted by the row its first assessment left) and counts every window, in the caller's transaction and under the
-- caller's row-level security (it is not a definer's function: it sees only the scoped tenant's rows). The
-- statements used to travel as three ad-hoc queries that the server planned on every assessment (the engine never
-- prepares statements, for RDS Proxy); PL/pgSQL keeps each statement's plan per server connection, which is not
-- session state a proxy has to pin. Semantics are those of the queries it replaces: every window counts this
-- attempt exactly once, also when its row is older than the window (a resubmission), and now() (the transaction's
-- start) is the clock. No row comes back when the execution has no attempt row (an execution never assessed).
--
-- The indexes are replaced by covering ones (INCLUDE the columns the counters read), so a count is an index-only
-- scan wherever the visibility map allows, instead of a heap page read per attempt in the window; with random keys
-- those page reads were the slowest assessments. The tables are new; on a populated table this would be
-- CREATE INDEX CONCURRENTLY outside a migration's transaction.

create index risk_attempts_by_instrument_covering on billing.risk_attempts (tenant_id, instrument_key, recorded_at)
    include (declined, customer_key);
create index risk_attempts_by_customer_covering on billing.risk_attempts (tenant_id, customer_key, recorded_at)
    include (instrument_key, amount, currency);
create index risk_attempts_by_device_covering on billing.risk_attempts (tenant_id, device_key, recorded_at)
    include (customer_key) where device_key is not null;
drop index billing.risk_attempts_by_instrument;
drop index billing.risk_attempts_by_customer;
drop index billing.risk_attempts_by_device;

create function billing.count_risk_attempt(
    p_tenant uuid,
    p_execution uuid,
    p_record boolean,
    p_instrument text,
    p_customer text,
    p_device text,
    p_ip text,
    p_amount bigint,
    p_currency text,
    p_rail text,
    p_initiator text,
    p_lock_keys text[],
    -- The tenant-wide counter costs what the tenant's volume is: counted only when a rule reads it (else null).
    p_count_tenant boolean
) returns table (
    recorded boolean,
    attempts_per_instrument_1h bigint,
    attempts_per_instrument_24h bigint,
    declines_per_instrument_24h bigint,
    attempts_per_customer_1h bigint,
    amount_per_customer_24h bigint,
    distinct_instruments_per_customer_24h bigint,
    distinct_customers_per_instrument_24h bigint,
    distinct_customers_per_device_24h bigint,
    attempts_per_ip_1h bigint,
    attempts_per_tenant_1m bigint,
    counted_at timestamptz
)
language plpgsql volatile set search_path = pg_catalog, billing as $$
declare
    mine billing.risk_attempts;
    -- 1 when this attempt's own row lies outside the window (a resubmission), so it is added once.
    outside_1m int;
    outside_1h int;
    outside_24h int;
begin
    -- In a fixed order, so two assessments never wait on each other crosswise.
    perform pg_advisory_xact_lock(k)
       from (select hashtextextended(p_tenant::text || ':' || key, 0) as k from unnest(p_lock_keys) as key) locks
      order by k;
    recorded := false;
    if p_record then
        insert into billing.risk_attempts (
            tenant_id, execution_id, instrument_key, customer_key, device_key, ip_key, amount, currency, rail,
            initiator
        ) values (
            p_tenant, p_execution, p_instrument, p_customer, p_device, p_ip, p_amount, p_currency, p_rail,
            p_initiator
        )
        on conflict (tenant_id, execution_id) do nothing;
        recorded := found;
    end if;
    select * into mine from billing.risk_attempts r where r.tenant_id = p_tenant and r.execution_id = p_execution;
    if not found then
        return;
    end if;
    outside_1m := (mine.recorded_at <= now() - interval '1 minute')::int;
    outside_1h := (mine.recorded_at <= now() - interval '1 hour')::int;
    outside_24h := (mine.recorded_at <= now() - interval '24 hours')::int;

    select count(*) filter (where r.recorded_at > now() - interval '1 hour') + outside_1h,
           count(*) + outside_24h,
           count(*) filter (where r.declined),
           count(distinct r.customer_key) filter (where r.customer_key <> p_customer) + 1
      into attempts_per_instrument_1h, attempts_per_instrument_24h, declines_per_instrument_24h,
           distinct_customers_per_instrument_24h
      from billing.risk_attempts r
     where r.tenant_id = p_tenant and r.instrument_key = p_instrument and r.recorded_at > now() - interval '24 hours';

    select count(*) filter (where r.recorded_at > now() - interval '1 hour') + outside_1h,
           coalesce(sum(r.amount) filter (where r.currency = p_currency), 0)
               + case when outside_24h = 1 then p_amount else 0 end,
           count(distinct r.instrument_key) filter (where r.instrument_key <> p_instrument) + 1
      into attempts_per_customer_1h, amount_per_customer_24h, distinct_instruments_per_customer_24h
      from billing.risk_attempts r
     where r.tenant_id = p_tenant and r.customer_key = p_customer and r.recorded_at > now() - interval '24 hours';

    distinct_customers_per_device_24h := null;
    if p_device is not null then
        select count(distinct r.customer_key) filter (where r.customer_key <> p_customer) + 1
          into distinct_customers_per_device_24h
          from billing.risk_attempts r
         where r.tenant_id = p_tenant and r.device_key = p_device and r.recorded_at > now() - interval '24 hours';
    end if;

    attempts_per_ip_1h := null;
    if p_ip is not null then
        select count(*) + (mine.recorded_at <= now() - interval '1 hour' or mine.ip_key is distinct from p_ip)::int
          into attempts_per_ip_1h
          from billing.risk_attempts r
         where r.tenant_id = p_tenant and r.ip_key = p_ip and r.recorded_at > now() - interval '1 hour';
    end if;

    attempts_per_tenant_1m := null;
    if p_count_tenant then
        select count(*) + outside_1m into attempts_per_tenant_1m
          from billing.risk_attempts r
         where r.tenant_id = p_tenant and r.recorded_at > now() - interval '1 minute';
    end if;

    counted_at := now();
    return next;
end;
$$;

revoke all on function billing.count_risk_attempt(
    uuid, uuid, boolean, text, text, text, text, bigint, text, text, text, text[], boolean
) from public;
grant execute on function billing.count_risk_attempt(
    uuid, uuid, boolean, text, text, text, text, bigint, text, text, text, text[], boolean
) to billing_app, billing_worker;
