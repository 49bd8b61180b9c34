-- Historical backfill: every lifecycle event recorded before the authoritative workflow write path existed
-- gets its billing.contract_term_datetimes row. Transition ids are the deterministic SHA-256 of
-- billing.workflow_transition_id, and ON CONFLICT DO NOTHING makes a second run add nothing (and skips rows
-- the live path already wrote).
--
-- billing.workflow_phase_for_event is the SQL twin of billing.domain.transitions.TRANSITIONS; a test checks
-- that both give the same phase for every event type.

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
    end
$$;

insert into billing.contract_term_datetimes (
    tenant_id, transition_id, workflow_key, contract_id, subject_type, subject_id, event_id,
    phase_code, term_at, source, actor_id, correlation_id
)
select ev.tenant_id,
       billing.workflow_transition_id('wf:billing.execution', ev.tenant_id, ev.execution_id, ev.id),
       'wf:billing.execution',
       e.entity_contract_id,
       'billing_execution',
       ev.execution_id,
       ev.id,
       billing.workflow_phase_for_event(ev.type),
       ev.occurred_at,
       'backfill',
       coalesce(ev.user_id, 'migration:20260403_billing_workflow_event_backfill'),
       ev.correlation_id
from billing.billing_execution_events ev
join billing.billing_executions e on e.tenant_id = ev.tenant_id and e.id = ev.execution_id
where billing.workflow_phase_for_event(ev.type) is not null
order by ev.tenant_id, ev.occurred_at, ev.id
on conflict do nothing;
