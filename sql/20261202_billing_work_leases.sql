-- Leases and per-item backoff for the two workers that call out of the database: the outbox relay (EventBridge
-- PutEvents) and reconciliation (the payment providers).
--
-- Both used to hold their batch's row locks while they called out, inside one transaction. A call slower than
-- idle_in_transaction_session_timeout (10 s) ended the session: the answers already received were rolled back,
-- the run stopped, and the next run claimed the same batch and met the same slow call. Now each works in three
-- phases: claim a batch (FOR UPDATE SKIP LOCKED on items no live lease holds) and write a lease on it, commit;
-- call out with no transaction open; record each answer in a short transaction of its own, which ends the lease.
-- A lease names the worker run that holds it and when it lapses: while it is live no other worker takes the item;
-- once it lapses (the holder died) the item can be claimed again. Lease and backoff times come from the worker's
-- clock, passed as parameters like the age cutoffs the workers already use.
--
-- Runs as billing_owner.

-- --- billing.billing_outbox: publication leases and backoff ----------------------------------------------------

-- New publication bookkeeping; the outbox guard freezes only what was announced and the publication rules.
--   lease_owner, lease_expires_at: the relay run publishing the row (both set or both null).
--   next_attempt_at: a row that failed is not sent again before this (exponential backoff), so a failing row waits
--     instead of heading every batch; its execution's later rows still wait behind it (billing.outbox.relay).
--   failed_attempts: failures since an operator last released the row; at the relay's limit the row is parked.
--     publish_attempts counts every attempt and only grows (BE010), so it cannot be reset to release a parked row;
--     failed_attempts can.
alter table billing.billing_outbox
    add column lease_owner      text,
    add column lease_expires_at timestamptz,
    add column next_attempt_at  timestamptz,
    add column failed_attempts  integer not null default 0;

alter table billing.billing_outbox
    add constraint billing_outbox_lease_complete check ((lease_owner is null) = (lease_expires_at is null)),
    add constraint billing_outbox_failed_attempts_counted
        check (failed_attempts >= 0 and failed_attempts <= publish_attempts);

-- Every attempt on a row still unpublished failed: rows parked before this migration stay parked.
update billing.billing_outbox
   set failed_attempts = publish_attempts
 where published_at is null and publish_attempts > 0;

-- The relay claims unpublished rows that never failed first, then the ones that did, each group in id order
-- (an execution's rows keep their order: a row is held back while an earlier one of its execution is unclaimed).
-- It replaces the plain id index, which only the old claim used; the backlog count reads this one as well.
create index billing_outbox_claim_order
    on billing.billing_outbox ((failed_attempts > 0), id)
    where published_at is null;
drop index billing.billing_outbox_unpublished;

-- --- billing.reconciliation_leases: who is asking a provider about an execution, and when to ask again --------

-- One row per execution the reconciliation worker has claimed, kept (never deleted) as its bookkeeping:
--   status: the execution status the row is about ('pending' at the provider, or stuck in 'processing'). When the
--     execution moves on (recovered from processing to settlement, say), the next claim starts the row afresh.
--   lease_owner, lease_expires_at: the worker run asking about it now (both set or both null).
--   attempts, next_check_at: checks in this status that left the execution as it was (still pending, provider
--     unavailable, an error), and when it may be asked again (exponential backoff). next_check_at is null when
--     nothing is scheduled: never checked, settled, or left the status; an execution without a schedule in its
--     current status is "fresh" and is claimed before those that are waiting for their next check.
--   last_outcome: what the last check found, for an operator wondering why an execution is still waiting.
-- Not columns of billing_executions: that table's trigger guards every column, and this is worker bookkeeping,
-- not part of the charge.
create table billing.reconciliation_leases (
    tenant_id        uuid        not null,
    execution_id     uuid        not null,
    status           text        not null,
    lease_owner      text,
    lease_expires_at timestamptz,
    attempts         integer     not null default 0,
    next_check_at    timestamptz,
    last_outcome     text,
    updated_at       timestamptz not null default now(),

    constraint reconciliation_leases_pkey primary key (tenant_id, execution_id),
    constraint reconciliation_leases_execution_fkey foreign key (tenant_id, execution_id)
        references billing.billing_executions (tenant_id, id),
    constraint reconciliation_leases_status_swept check (status in ('pending', 'processing')),
    constraint reconciliation_leases_lease_complete check ((lease_owner is null) = (lease_expires_at is null)),
    constraint reconciliation_leases_attempts_nonnegative check (attempts >= 0),
    -- A next check is only ever scheduled after a check that left the execution as it was.
    constraint reconciliation_leases_scheduled_after_a_check check (next_check_at is null or attempts > 0)
);

-- The claim of executions waiting for their next check, per swept status, earliest due first.
create index reconciliation_leases_due
    on billing.reconciliation_leases (status, next_check_at, tenant_id, execution_id)
    where next_check_at is not null;

select billing.enable_tenant_isolation('billing.reconciliation_leases');
-- Only the worker keeps this bookkeeping; rows are retired by update, never deleted.
select billing.grant_dml('billing.reconciliation_leases', 'billing_worker', 'select, insert, update');
