-- Settlement reports (billing.settlement) select the executions a provider should list for a period: those
-- finished in it, and those submitted in it that are still awaiting settlement. Only rows that reached a
-- provider (provider_reference set) can appear in a settlement file, so the indexes cover just those.

create index billing_executions_finished_at_submitted
    on billing.billing_executions (finished_at)
    where provider_reference is not null;

create index billing_executions_submitted_at_submitted
    on billing.billing_executions (submitted_at)
    where provider_reference is not null;
