-- Database-enforced immutability of billing executions, effective even against raw SQL:
--   * a terminal row (completed, failed, canceled) rejects every UPDATE;
--   * a status change outside billing.execution_status_transitions is rejected;
--   * identity and money (tenant, id, amount, currency, idempotency key, ...) never change;
--   * a provider reference, once recorded, never changes;
--   * DELETE and TRUNCATE are rejected.
-- Each refusal carries its own SQLSTATE (BE001..BE004) so the application maps it without reading messages.

create function billing.guard_execution_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'billing.billing_executions row % cannot be deleted', old.id
            using errcode = 'BE004', hint = 'executions are financial records; cancel or fail them instead';
    end if;

    if old.status in ('completed', 'failed', 'canceled') then
        raise exception 'billing.billing_executions row % is terminal (%) and immutable', old.id, old.status
            using errcode = 'BE001';
    end if;

    if new.status is distinct from old.status and not exists (
        select 1 from billing.execution_status_transitions t
        where t.from_status = old.status and t.to_status = new.status
    ) then
        raise exception 'billing.billing_executions row %: transition % -> % is not allowed',
            old.id, old.status, new.status
            using errcode = 'BE002';
    end if;

    if (new.tenant_id, new.id, new.amount, new.currency, new.idempotency_key, new.request_fingerprint,
        new.entity_contract_id, new.plan_contract_id, new.payment_rail, new.created_at)
       is distinct from
       (old.tenant_id, old.id, old.amount, old.currency, old.idempotency_key, old.request_fingerprint,
        old.entity_contract_id, old.plan_contract_id, old.payment_rail, old.created_at) then
        raise exception 'billing.billing_executions row %: identity and money columns are immutable', old.id
            using errcode = 'BE003';
    end if;

    if old.provider_reference is not null and new.provider_reference is distinct from old.provider_reference then
        raise exception 'billing.billing_executions row %: provider_reference is immutable once set', old.id
            using errcode = 'BE003';
    end if;

    return new;
end;
$$;

create trigger billing_executions_immutability
    before update or delete on billing.billing_executions
    for each row execute function billing.guard_execution_change();

create function billing.reject_execution_truncate() returns trigger
language plpgsql as $$
begin
    raise exception 'billing.billing_executions cannot be truncated' using errcode = 'BE004';
end;
$$;

create trigger billing_executions_no_truncate
    before truncate on billing.billing_executions
    for each statement execute function billing.reject_execution_truncate();
