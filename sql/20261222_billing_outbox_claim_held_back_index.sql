-- The relay claim's held-back check (billing.outbox.relay, rule 1) asks, for each claimed row, whether an earlier
-- unpublished row of its execution exists outside the claim. Through billing_outbox_aggregate (aggregate_id, id)
-- that probe reads every earlier row of the execution, published or not, and fetches each from the heap to see
-- published_at: it grows with an execution's history and with every published row the outbox keeps until it is
-- archived. This index holds only unpublished rows (the claim's own predicate), keyed as the check asks, so the
-- probe is an index-only look-up among the backlog, flat however many rows were published (bench/query_plans.py).
--
-- On a populated table this would be CREATE INDEX CONCURRENTLY outside a migration's transaction; the runner
-- applies a file in one transaction.
create index billing_outbox_unpublished_aggregate
    on billing.billing_outbox (tenant_id, aggregate_id, id)
    where published_at is null;
