-- Expected fee bands for settlement reconciliation, and the index its execution-id fallback needs.
--
-- billing.settlement_fee_bands: per tenant, provider, payment method (as the provider's report names it: Adyen
-- `visa`, `mc`, `sepadirectdebit`; Stripe `card`, ...; `*` for every method without a band of its own) and
-- currency, the fees a settled item may carry: fixed_minor + gross x [min_basis_points, max_basis_points] / 10000,
-- in minor units of the currency (billing.settlement.reconciliation.fee_bands). An item outside its band is
-- `fee_out_of_range` in the report. Defaults: there are none. A tenant, method or currency without a row is not
-- checked: the engine does not know a tenant's pricing, and a guessed band would flag every item or none.
-- Rows are kept by operators (the owner, through migrations or an admin session); the settlement function only
-- reads them. Tenant-scoped like every tenant table (row-level security); the function reads in system scope.
--
-- billing_executions_id_lookup: a settlement row whose provider reference is missing or unknown is matched by the
-- execution id the provider echoes (Adyen Merchant Reference, Stripe payment_metadata[execution_id]), which comes
-- without our tenant: the primary key (tenant_id, id) cannot serve that lookup. Without this index each chunk of
-- a file with unknown references would scan every execution.

create table billing.settlement_fee_bands (
    tenant_id         uuid        not null,
    provider          text        not null,
    payment_method    text        not null,
    currency          char(3)     not null,
    min_basis_points  integer     not null,
    max_basis_points  integer     not null,
    fixed_minor       bigint      not null default 0,
    note              text,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz,

    constraint settlement_fee_bands_pkey primary key (tenant_id, provider, payment_method, currency),
    constraint settlement_fee_bands_provider_is_a_folder_name check (provider ~ '^[a-z][a-z0-9_-]{0,39}$'),
    constraint settlement_fee_bands_payment_method_named check (length(payment_method) between 1 and 64),
    constraint settlement_fee_bands_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    -- 0 to 100 %: a band above the item's own amount is a typo, not a price.
    constraint settlement_fee_bands_basis_points_ordered check (
        0 <= min_basis_points and min_basis_points <= max_basis_points and max_basis_points <= 10000),
    constraint settlement_fee_bands_fixed_not_negative check (fixed_minor >= 0 and fixed_minor <= 1000000000000000),
    constraint settlement_fee_bands_note_length check (note is null or length(note) <= 500)
);

select billing.enable_tenant_isolation('billing.settlement_fee_bands');

-- The settlement function (billing_worker) reads the bands; nothing at run time writes them.
select billing.grant_dml('billing.settlement_fee_bands', 'billing_worker', 'select');

create index billing_executions_id_lookup on billing.billing_executions (id);

-- Operators type these rows: no column may carry a card number (tests/integration/test_instruments_card_data_guard.py).
create trigger settlement_fee_bands_card_data_guard
    before insert or update on billing.settlement_fee_bands
    for each row execute function billing.refuse_card_numbers('provider', 'payment_method', 'currency', 'note');
