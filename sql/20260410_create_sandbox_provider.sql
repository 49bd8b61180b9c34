-- sandbox_provider.charges: the memory of the sandbox payment provider (billing.rails.sandbox), which stands in
-- for a real PSP locally and in tests. It simulates an external system, so it lives in its own schema, is
-- written only through the sandbox's own connections (never inside a billing transaction) and is never joined
-- with billing tables. The reconcile worker and the demo webhooks see the same state through the sandbox API.
--
-- One row per provider idempotency key: the key is the primary key, so a repeated or concurrent request with the
-- same key finds the original row and can never create a second charge. A row is written on the first request
-- even when no charge results (status not_charged) so that "fail transiently N times" can count attempts per key.
-- reference is the provider's charge id (sbx_...), present exactly when a charge exists.
-- Money is bigint minor units plus an ISO 4217 code, as everywhere else.

create schema if not exists sandbox_provider;

create table sandbox_provider.charges (
    idempotency_key         text        not null,
    reference               text,
    -- The merchant's identifiers, echoed as a real provider echoes metadata; never used for lookups.
    tenant_id               uuid        not null,
    execution_id            uuid        not null,
    rail                    text        not null,
    amount                  bigint      not null,
    currency                char(3)     not null,
    payment_instrument_id   text,
    status                  text        not null,
    -- The status the charge was created with: a repeated request with the same key replays this answer.
    initial_status          text,
    failure_code            text,
    attempts                integer     not null default 0,
    -- Asynchronous rails: when the pending charge settles, and as what.
    settle_at               timestamptz,
    settles_as              text,
    settlement_failure_code text,
    created_at              timestamptz not null,
    charged_at              timestamptz,
    settled_at              timestamptz,
    updated_at              timestamptz not null,

    constraint charges_pkey primary key (idempotency_key),
    constraint charges_reference_uniq unique (reference),
    constraint charges_reference_format check (reference ~ '^sbx_[0-9a-f]{24}$'),
    constraint charges_rail_known check (rail in ('card', 'sepa_debit', 'ach_debit')),
    constraint charges_amount_positive check (amount > 0),
    constraint charges_currency_iso4217 check (currency ~ '^[A-Z]{3}$'),
    constraint charges_attempts_nonnegative check (attempts >= 0),
    constraint charges_status_known
        check (status in ('not_charged', 'succeeded', 'failed', 'pending_settlement', 'requires_action')),
    constraint charges_initial_status_known
        check (initial_status in ('succeeded', 'failed', 'pending_settlement', 'requires_action')),
    -- A charge exists (has a reference, a creation time and an initial status) iff the status says so.
    constraint charges_reference_iff_charged
        check ((status = 'not_charged') = (reference is null)
               and (reference is null) = (initial_status is null)
               and (reference is null) = (charged_at is null)),
    -- Failed charges say why, and nothing else carries a failure code.
    constraint charges_failed_has_code check ((status = 'failed') = (failure_code is not null)),
    -- A pending charge knows when and how it will settle.
    constraint charges_pending_knows_settlement
        check (status <> 'pending_settlement' or (settle_at is not null and settles_as is not null)),
    constraint charges_settles_as_known check (settles_as in ('succeeded', 'failed')),
    constraint charges_settlement_failure_has_code
        check (settles_as is null or (settles_as = 'failed') = (settlement_failure_code is not null))
);

-- Settlement sweeps (settle_due) read only the pending charges, earliest first.
create index charges_pending_settlement on sandbox_provider.charges (settle_at) where status = 'pending_settlement';
