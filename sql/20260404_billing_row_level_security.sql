-- Row-level security on every tenant table: the second wall behind the tenant filter each query carries.
--
-- A transaction sees a row only if the row's tenant is the one named by the transaction-local setting
-- billing.tenant_id, or if it declared a system scope (billing.scope = 'system': the outbox relay,
-- reconciliation and webhook lookups by provider reference span tenants by design). A transaction that sets
-- neither sees and writes nothing. FORCE applies the policies to the tables' owner as well; only roles with
-- BYPASSRLS (superusers) are exempt, and the application never connects as one in AWS.

create function billing.row_visible(row_tenant uuid) returns boolean
language sql stable as $$
    select row_tenant = nullif(current_setting('billing.tenant_id', true), '')::uuid
        or current_setting('billing.scope', true) = 'system'
$$;

-- One place that turns isolation on for a tenant table; later migrations call it for their own tables.
create function billing.enable_tenant_isolation(target regclass) returns void
language plpgsql as $$
begin
    execute format('alter table %s enable row level security', target);
    execute format('alter table %s force row level security', target);
    execute format(
        'create policy tenant_isolation on %s using (billing.row_visible(tenant_id)) '
        'with check (billing.row_visible(tenant_id))', target);
end;
$$;

select billing.enable_tenant_isolation('billing.billing_executions');
select billing.enable_tenant_isolation('billing.billing_execution_events');
select billing.enable_tenant_isolation('billing.billing_outbox');
select billing.enable_tenant_isolation('billing.contract_term_datetimes');
