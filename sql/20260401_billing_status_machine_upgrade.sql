-- The six-state execution machine. The status column is limited to the six states, and the allowed
-- transitions live in a reference table that the immutability trigger consults (and that a test compares with
-- the Python table in billing.domain.status, so code and database cannot drift).
--
-- execution_status_transitions is a Citus reference table (replicated, no tenant_id).

alter table billing.billing_executions
    add constraint billing_executions_status_known
    check (status in ('created', 'pending', 'processing', 'completed', 'failed', 'canceled'));

alter table billing.billing_execution_events
    add constraint billing_execution_events_new_status_known
        check (new_status in ('created', 'pending', 'processing', 'completed', 'failed', 'canceled')),
    add constraint billing_execution_events_old_status_known
        check (old_status in ('created', 'pending', 'processing', 'completed', 'failed', 'canceled'));

create table billing.execution_status_transitions (
    from_status text not null,
    to_status   text not null,
    constraint execution_status_transitions_pkey primary key (from_status, to_status)
);

insert into billing.execution_status_transitions (from_status, to_status) values
    ('created', 'pending'),
    ('created', 'canceled'),
    ('pending', 'processing'),
    ('pending', 'canceled'),
    ('pending', 'completed'),
    ('pending', 'failed'),
    ('processing', 'completed'),
    ('processing', 'failed'),
    -- accepted for asynchronous settlement (SEPA/ACH): the provider took it, the money moves later
    ('processing', 'pending');
