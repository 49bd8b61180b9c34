-- Indexes for the hot queries that bench/query_plans.py found reading far more than they return at a million
-- executions (docs/database.md, "Hot queries and their indexes"). Each is named for the query it serves.
--
-- On a populated table each CREATE INDEX here would be CREATE INDEX CONCURRENTLY outside a migration's transaction
-- (and the DROP after it), so writes never wait on the build; the runner applies a file in one transaction.

-- GET /executions?entity_contract_id=...: a customer's charges, newest first. Without it the page walks the
-- tenant's whole (tenant_id, created_at, id) index, filtering: a customer holds a few dozen of a large tenant's
-- hundreds of thousands of rows, so finding a page (or learning there is none) read every one of them.
create index billing_executions_tenant_customer_created
    on billing.billing_executions (tenant_id, entity_contract_id, created_at desc, id desc);

-- GET /executions?status=...: the same for a status. Common statuses fill a page from the tenant index quickly, but
-- the ones a dashboard asks for (failed, canceled, processing) are a few per cent or less of a tenant's rows, and a
-- status the tenant has none of read the whole tenant. payment_rail and plan_contract_id stay on the tenant index:
-- a handful of values each, each a sizeable share of a tenant's charges.
create index billing_executions_tenant_status_created
    on billing.billing_executions (tenant_id, status, created_at desc, id desc);

-- Reconciliation's fresh walks order by (since, tenant_id, id) and stop after a batch: with the partial indexes
-- holding only the time, the planner read every execution awaiting settlement (or stuck) and sorted them all for
-- each batch of twenty. The same rows, in the walk's order, so the walk reads a batch and stops.
drop index billing.billing_executions_awaiting_settlement;
create index billing_executions_awaiting_settlement
    on billing.billing_executions (submitted_at, tenant_id, id)
    where status = 'pending' and submitted_at is not null;
drop index billing.billing_executions_processing_since;
create index billing_executions_processing_since
    on billing.billing_executions (updated_at, tenant_id, id)
    where status = 'processing';

-- The settlement run's period scan pages through (finished_at, tenant_id, id): in that order a page is read, not
-- the whole rest of the period sorted again for every page.
drop index billing.billing_executions_finished_at_submitted;
create index billing_executions_finished_at_submitted
    on billing.billing_executions (finished_at, tenant_id, id)
    where provider_reference is not null;

-- Every outbox row is updated twice after its insert: leased by the relay's claim, then marked published. The lease
-- changes no indexed column, so with room left on its page it is a HOT update, which writes no index entry: on a
-- full page it wrote one into each of the five indexes, and the claim index kept an entry per leased version for
-- the next claims to step over until vacuum. 30 % of each new page stays free for those two versions (publishing
-- changes published_at, which the claim index's predicate reads, so it is never HOT). Pages written before this
-- keep their fill; archiving (sql/20261220_billing_outbox_archive.sql) keeps the table small enough for the room.
alter table billing.billing_outbox set (fillfactor = 70);
