-- An annotation (a risk decision, an exemption) may name a status the execution held earlier in the same
-- transaction: the pre-submission decision commits with the claim that moves the charge from pending to processing,
-- so the commit-time check sees processing. The execution's own record of this transaction's changes
-- (changed_statuses, kept by the status trigger) says which statuses it passed through; nothing else changes.

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
        -- The status the execution has, or one it held earlier in this transaction: a risk decision recorded in
        -- pending commits with the claim that moves the execution on to processing.
        if new.old_status is distinct from new.new_status
           or (new.new_status is distinct from e.status
               and not (e.changed_txid = pg_current_xact_id() and exists (
                        select 1 from unnest(e.changed_statuses) c where split_part(c, '>', 1) = new.new_status
                                                                      or split_part(c, '>', 2) = new.new_status)))
        then
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
