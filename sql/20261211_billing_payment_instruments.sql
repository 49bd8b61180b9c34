-- Payment instruments as contracts, the card vault's table, and card data refused by the database itself.
--
-- Runs as billing_owner. After this file:
--   * billing.contracts holds one row per payment instrument (contract_type 'payment_instrument'), owned by the
--     entity contract it belongs to, with a lifecycle active -> expired | deactivated that only moves forward;
--   * billing.contract_term_attrs holds what is known about it (brand, last4, expiry, fingerprint, tokens, ...) as
--     a history: a change closes the open row (valid_to) and opens a new one, closed rows never change;
--   * billing_vault.card_secrets holds the encrypted card numbers, readable and writable by billing_vault alone;
--   * a Luhn-valid 13-19 digit number, with or without separators, is refused in every column that takes free
--     input (SQLSTATE BE013), and attribute keys naming sensitive authentication data (CVC, PIN, ...) are refused.
--
-- Who does what: billing_vault (the vault function) creates, reads and deactivates instruments and is the only
-- role with privileges on the tables. The execute function (billing_app) reads only what a charge needs, through
-- billing.payment_instrument_for_charge; the app and the workers find the provider token a charge is made with
-- through billing.payment_instrument_provider_token. Both are SECURITY DEFINER, filter by the caller's tenant scope
-- (billing.row_visible) and return one instrument's few fields: no run-time role but the vault can list
-- instruments, read a fingerprint or a holder name.
--
-- SQLSTATEs (billing.db.sqlstates): BE013 card data refused; BE014 contract lifecycle; BE015 term history;
-- BE016 card secrets are shredded, never rewritten or deleted. (BE011/BE012 belong to the audit trail.)

-- --- Card numbers in text: the database's twin of billing.domain.execution.card_number_spans --------------------

-- True if `value` holds a Luhn-valid run of 13-19 digits, with any mix of the separators people type between
-- them (spaces and runs of spaces, tabs, no-break spaces, '-', '.', '/', '_'). Candidates start and end at a chunk
-- of digits between separators, exactly as in Python: '4111 1111 1111 1111 12/27' is found, one unbroken run of 20
-- digits is never cut into a card number. ASCII digits only (the API edge also refuses other Unicode digits).
-- tests/integration/test_instruments_card_data_guard.py compares it with the Python detector on generated text.
create function billing.card_number_in(value text) returns boolean
language plpgsql immutable strict parallel safe set search_path = pg_catalog as $$
declare
    digit_group text;
    chunk text;
    digits text;
    bounds integer[];
    even_last integer[];
    odd_last integer[];
    chunks integer;
    d integer;
    i integer;
    first_chunk integer;
    last_bound integer;
    window_start integer;
    window_end integer;
    sums integer[];
begin
    -- Canonical UUIDs are read past, as in Python (one random UUID in about 400 has a Luhn-valid window across its
    -- hyphens, and no one types a card number as 8-4-4-4-12 hex digits).
    value := regexp_replace(value,
        '(?<![0-9A-Fa-f])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![0-9A-Fa-f])',
        'u', 'g');
    -- The common case costs one scan: no 13 digits, no card number.
    if length(regexp_replace(value, '[^0-9]', '', 'g')) < 13 then
        return false;
    end if;
    for digit_group in
        select m[1] from regexp_matches(value, '([0-9]+(?:[ \t' || chr(160) || './_-]+[0-9]+)*)', 'g') m
    loop
        digits := regexp_replace(digit_group, '[^0-9]', '', 'g');
        if length(digits) < 13 then
            continue;
        end if;
        -- bounds[k]: index in `digits` where chunk k starts (0-based); bounds[chunks + 1] is the end.
        bounds := array[0];
        for chunk in select c[1] from regexp_matches(digit_group, '([0-9]+)', 'g') c loop
            bounds := bounds || (bounds[array_length(bounds, 1)] + length(chunk));
        end loop;
        chunks := array_length(bounds, 1) - 1;
        -- Prefix sums of the Luhn terms for a window whose last digit has an even / an odd (0-based) index:
        -- Luhn doubles every second digit from the right, so only that parity decides which digits double.
        even_last := array[0];
        odd_last := array[0];
        for i in 1 .. length(digits) loop
            d := ascii(substr(digits, i, 1)) - 48;
            if (i - 1) % 2 = 0 then
                even_last := even_last || (even_last[i] + d);
                odd_last := odd_last || (odd_last[i] + (case when d * 2 > 9 then d * 2 - 9 else d * 2 end));
            else
                even_last := even_last || (even_last[i] + (case when d * 2 > 9 then d * 2 - 9 else d * 2 end));
                odd_last := odd_last || (odd_last[i] + d);
            end if;
        end loop;
        for first_chunk in 1 .. chunks loop
            window_start := bounds[first_chunk];
            for last_bound in first_chunk + 1 .. chunks + 1 loop
                window_end := bounds[last_bound];
                exit when window_end - window_start > 19;
                continue when window_end - window_start < 13;
                sums := case when (window_end - 1) % 2 = 0 then even_last else odd_last end;
                if (sums[window_end + 1] - sums[window_start + 1]) % 10 = 0 then
                    return true;
                end if;
            end loop;
        end loop;
    end loop;
    return false;
end;
$$;

-- The same over a JSON document: every string, every number and every object key, at any depth.
create function billing.card_number_in_jsonb(document jsonb) returns boolean
language sql immutable strict parallel safe set search_path = pg_catalog as $$
    select exists (
        select 1
          from jsonb_path_query(document, 'strict $.**') item
          left join lateral (
              select key from jsonb_object_keys(case jsonb_typeof(item) when 'object' then item end) key
          ) keys on true
         where (jsonb_typeof(item) = 'string' and billing.card_number_in(item #>> '{}'))
            or (jsonb_typeof(item) = 'number' and billing.card_number_in(item::text))
            or billing.card_number_in(keys.key)
    )
$$;

-- Attribute keys that name sensitive authentication data or the card number itself, which is never stored after
-- authorisation (PCI DSS 3.3.1: card verification codes; 3.3.1.x: PINs, track data), or a full PAN under any name.
-- Whole key segments only, so 'expansion' or 'decide' are not refused for 'pan' or 'cid'.
create function billing.sensitive_attribute_key(attr_key text) returns boolean
language sql immutable strict parallel safe set search_path = pg_catalog as $$
    select lower(attr_key) ~ '(^|[._-])(cvc2?|cvv2?|cvn2?|cid|csc|cav2?|pin|pin_?block|pan|track[12]?|magstripe)($|[._-])'
        or lower(regexp_replace(attr_key, '[^A-Za-z]', '', 'g'))
           ~ '(cardnumber|primaryaccountnumber|accountnumber|securitycode|verificationcode|verificationvalue|iban)'
$$;

-- The trigger every guarded table gets: the columns named in its arguments must hold no card number. Text columns
-- are read as text, jsonb columns value by value and key by key. The value is never part of the message.
create function billing.refuse_card_numbers() returns trigger
language plpgsql set search_path = pg_catalog, billing as $$
declare
    row_document jsonb := to_jsonb(new);
    column_name text;
    item jsonb;
begin
    foreach column_name in array tg_argv loop
        item := row_document -> column_name;
        if item is null or jsonb_typeof(item) = 'null' then
            continue;
        end if;
        if (jsonb_typeof(item) = 'string' and billing.card_number_in(item #>> '{}'))
           or (jsonb_typeof(item) in ('object', 'array') and billing.card_number_in_jsonb(item)) then
            raise exception '%.%.% holds what looks like a card number', tg_table_schema, tg_table_name, column_name
                using errcode = 'BE013',
                      hint = 'card numbers are stored only in the vault; reference a payment instrument instead';
        end if;
    end loop;
    return new;
end;
$$;

-- --- billing.contracts ---------------------------------------------------------------------------------------------

-- One row per contract another contract holds; today only payment instruments ('pi_' + 32 hex: recognisable, so
-- the execute API tells them from the sandbox's magic tokens, and generated so that it never looks like a card
-- number itself). entity_contract_id is the subscriber's contract the instrument belongs to; a charge may use it
-- only for that contract. status moves active -> expired | deactivated and never back, and valid_to says when the
-- contract stopped being usable: set exactly when it is not active. Rows are never deleted: a deactivated
-- instrument's history is evidence (who was charged with what).
-- idempotency_key and request_fingerprint make creation idempotent as executions are (the fingerprint is of the
-- request with the card number replaced by the card's keyed fingerprint: never a plain hash of a PAN).
-- Citus-ready: tenant_id leads the primary key, every unique index and the foreign keys that point here.
create table billing.contracts (
    tenant_id           uuid        not null,
    id                  text        not null,
    contract_type       text        not null,
    entity_contract_id  text        not null,
    status              text        not null default 'active',
    valid_from          timestamptz not null default now(),
    valid_to            timestamptz,
    idempotency_key     text,
    request_fingerprint text,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),

    constraint contracts_pkey primary key (tenant_id, id),
    constraint contracts_type_known check (contract_type in ('payment_instrument')),
    constraint contracts_instrument_id_format check (contract_type <> 'payment_instrument' or id ~ '^pi_[0-9a-f]{32}$'),
    constraint contracts_entity_contract_id_format
        check (entity_contract_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    constraint contracts_status_known check (status in ('active', 'expired', 'deactivated')),
    constraint contracts_valid_to_iff_inactive check ((valid_to is null) = (status = 'active')),
    constraint contracts_validity_ordered check (valid_to is null or valid_to >= valid_from),
    constraint contracts_idempotency_key_printable check (idempotency_key ~ '^[\x21-\x7e]{1,255}$'),
    constraint contracts_request_fingerprint_sha256 check (request_fingerprint ~ '^[0-9a-f]{64}$'),
    constraint contracts_idempotent_request check ((idempotency_key is null) = (request_fingerprint is null))
);

-- A concurrent create with the same key inserts nothing (ON CONFLICT) and reads the winner.
create unique index contracts_idempotency_key_uniq
    on billing.contracts (tenant_id, contract_type, idempotency_key)
    where idempotency_key is not null;

-- Listing an entity contract's instruments, newest first, with keyset pagination.
create index contracts_entity_contract
    on billing.contracts (tenant_id, entity_contract_id, created_at desc, id desc);

create function billing.guard_contract_insert() returns trigger
language plpgsql as $$
begin
    if new.status <> 'active' or new.valid_to is not null then
        raise exception 'billing.contracts row % must be born active', new.id using errcode = 'BE014';
    end if;
    return new;
end;
$$;

create trigger contracts_insert_guard
    before insert on billing.contracts
    for each row execute function billing.guard_contract_insert();

create function billing.guard_contract_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'billing.contracts row % cannot be deleted', old.id
            using errcode = 'BE014', hint = 'deactivate it: its history is evidence';
    end if;
    if (new.tenant_id, new.id, new.contract_type, new.entity_contract_id, new.valid_from, new.idempotency_key,
        new.request_fingerprint, new.created_at)
       is distinct from
       (old.tenant_id, old.id, old.contract_type, old.entity_contract_id, old.valid_from, old.idempotency_key,
        old.request_fingerprint, old.created_at) then
        raise exception 'billing.contracts row %: identity and ownership never change', old.id using errcode = 'BE014';
    end if;
    if old.status <> 'active' then
        raise exception 'billing.contracts row % is % and immutable', old.id, old.status using errcode = 'BE014';
    end if;
    if new.status not in ('active', 'expired', 'deactivated') then
        raise exception 'billing.contracts row %: % -> % is not allowed', old.id, old.status, new.status
            using errcode = 'BE014';
    end if;
    return new;
end;
$$;

create trigger contracts_guard
    before update or delete on billing.contracts
    for each row execute function billing.guard_contract_change();

create trigger contracts_no_truncate
    before truncate on billing.contracts
    for each statement execute function billing.reject_append_only_change();

-- --- billing.contract_term_attrs -----------------------------------------------------------------------------------

-- What is known about a contract, one row per (attribute, period): an attribute change closes the open row
-- (valid_to) and opens a new one, so the history of every attribute is kept. At most one open row per key (the
-- partial unique index); rows are born open; a closed row never changes; nothing is deleted; a contract that is no
-- longer active has its terms frozen. For a card: instrument_type, brand, co_brand, last4, iin, exp_month,
-- exp_year, holder_name, fingerprint, fingerprint_key_version, vault_token, provider_token.<provider>; for a SEPA
-- debit: holder_name, country, last4, bank_code, fingerprint, fingerprint_key_version, mandate_reference, ... Never
-- a card number, a card verification code or a full IBAN: the key rule and the card number guard below refuse
-- them whoever writes.
create table billing.contract_term_attrs (
    tenant_id   uuid        not null,
    contract_id text        not null,
    attr_key    text        not null,
    attr_value  text        not null,
    valid_from  timestamptz not null default clock_timestamp(),
    valid_to    timestamptz,

    constraint contract_term_attrs_pkey primary key (tenant_id, contract_id, attr_key, valid_from),
    constraint contract_term_attrs_contract_fkey foreign key (tenant_id, contract_id)
        references billing.contracts (tenant_id, id),
    constraint contract_term_attrs_key_format check (attr_key ~ '^[a-z][a-z0-9_]{0,40}(\.[a-z0-9_]{1,40})?$'),
    constraint contract_term_attrs_value_bounded check (length(attr_value) between 1 and 512),
    constraint contract_term_attrs_period_ordered check (valid_to is null or valid_to >= valid_from)
);

create unique index contract_term_attrs_one_open
    on billing.contract_term_attrs (tenant_id, contract_id, attr_key)
    where valid_to is null;

-- Velocity checks will count a card by its fingerprint, per tenant.
create index contract_term_attrs_fingerprint
    on billing.contract_term_attrs (tenant_id, attr_value)
    where attr_key = 'fingerprint' and valid_to is null;

create function billing.guard_contract_term_attr() returns trigger
language plpgsql as $$
declare
    contract_status text;
begin
    if tg_op = 'DELETE' then
        raise exception 'billing.contract_term_attrs (%, %) cannot be deleted', old.contract_id, old.attr_key
            using errcode = 'BE015', hint = 'close the row (valid_to) and open a new one';
    end if;
    if tg_op = 'UPDATE' then
        if old.valid_to is not null then
            raise exception 'billing.contract_term_attrs (%, %) is closed and immutable', old.contract_id, old.attr_key
                using errcode = 'BE015';
        end if;
        if (new.tenant_id, new.contract_id, new.attr_key, new.attr_value, new.valid_from)
           is distinct from (old.tenant_id, old.contract_id, old.attr_key, old.attr_value, old.valid_from) then
            raise exception 'billing.contract_term_attrs (%, %): only closing the row is allowed',
                old.contract_id, old.attr_key
                using errcode = 'BE015', hint = 'close the row (valid_to) and open a new one';
        end if;
    else
        if new.valid_to is not null then
            raise exception 'billing.contract_term_attrs (%, %) must be born open', new.contract_id, new.attr_key
                using errcode = 'BE015';
        end if;
        if billing.sensitive_attribute_key(new.attr_key) then
            raise exception 'billing.contract_term_attrs: % names card data that is never stored', new.attr_key
                using errcode = 'BE013', hint = 'PCI DSS 3.3.1: no CVC, PIN or track data after authorisation';
        end if;
    end if;
    select c.status into contract_status
      from billing.contracts c where c.tenant_id = new.tenant_id and c.id = new.contract_id;
    if contract_status is distinct from 'active' then
        raise exception 'billing.contract_term_attrs: contract % is % and its terms are frozen',
            new.contract_id, coalesce(contract_status, 'unknown')
            using errcode = 'BE015';
    end if;
    return new;
end;
$$;

create trigger contract_term_attrs_guard
    before insert or update or delete on billing.contract_term_attrs
    for each row execute function billing.guard_contract_term_attr();

create trigger contract_term_attrs_no_truncate
    before truncate on billing.contract_term_attrs
    for each statement execute function billing.reject_append_only_change();

select billing.enable_tenant_isolation('billing.contracts');
select billing.enable_tenant_isolation('billing.contract_term_attrs');

-- --- billing_vault.card_secrets ------------------------------------------------------------------------------------

-- The vault's own schema: nobody but billing_vault has any privilege on it (no usage for the other roles at all).
-- One row per tokenized card: the PAN encrypted with AES-256-GCM under a data key of its own (KMS GenerateDataKey
-- with the encryption context {tenant_id, token}; the same context is the cipher's associated data), the data key
-- as KMS wrapped it, and which KMS key wrapped it. Nothing here is readable without KMS Decrypt, which only the
-- vault function's IAM role may call. scheme names the envelope format, so a later format can live beside this one.
-- Deactivating an instrument shreds its secret (ciphertext, nonce and wrapped key set to null): the card number is
-- gone for good, while the row says it existed. Otherwise a row changes only when its data key is re-wrapped under
-- another KMS key (encrypted_data_key, key_id); the ciphertext never changes and nothing is deleted.
create schema billing_vault;
revoke all on schema billing_vault from public;

create table billing_vault.card_secrets (
    tenant_id          uuid        not null,
    token              text        not null,
    scheme             text        not null,
    key_id             text        not null,
    encrypted_data_key bytea,
    nonce              bytea,
    ciphertext         bytea,
    created_at         timestamptz not null default now(),
    shredded_at        timestamptz,

    constraint card_secrets_pkey primary key (tenant_id, token),
    constraint card_secrets_token_format check (token ~ '^vtok_[0-9a-f]{32}$'),
    constraint card_secrets_scheme_known check (scheme in ('kms-aes-256-gcm-v1')),
    constraint card_secrets_key_id_present check (length(key_id) between 1 and 2048),
    constraint card_secrets_nonce_96_bits check (octet_length(nonce) = 12),
    -- AES-GCM adds a 16-byte tag to the 13-19 byte PAN.
    constraint card_secrets_ciphertext_size check (octet_length(ciphertext) between 29 and 35),
    constraint card_secrets_shredded_whole check (
        (shredded_at is null) = (ciphertext is not null)
        and (ciphertext is null) = (nonce is null)
        and (nonce is null) = (encrypted_data_key is null)
    )
);

create function billing_vault.guard_card_secret_change() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        raise exception 'billing_vault.card_secrets % cannot be deleted', old.token
            using errcode = 'BE016', hint = 'shred it: set ciphertext, nonce and encrypted_data_key to null';
    end if;
    if old.shredded_at is not null then
        raise exception 'billing_vault.card_secrets % is shredded and immutable', old.token using errcode = 'BE016';
    end if;
    if (new.tenant_id, new.token, new.scheme, new.created_at)
       is distinct from (old.tenant_id, old.token, old.scheme, old.created_at) then
        raise exception 'billing_vault.card_secrets %: identity never changes', old.token using errcode = 'BE016';
    end if;
    if new.shredded_at is null and (new.ciphertext, new.nonce) is distinct from (old.ciphertext, old.nonce) then
        raise exception 'billing_vault.card_secrets %: the ciphertext never changes (only the data key is re-wrapped)',
            old.token
            using errcode = 'BE016';
    end if;
    return new;
end;
$$;

create trigger card_secrets_guard
    before update or delete on billing_vault.card_secrets
    for each row execute function billing_vault.guard_card_secret_change();

create trigger card_secrets_no_truncate
    before truncate on billing_vault.card_secrets
    for each statement execute function billing.reject_append_only_change();

select billing.enable_tenant_isolation('billing_vault.card_secrets');

-- --- Privileges -----------------------------------------------------------------------------------------------------

grant usage on schema billing to billing_vault;
grant usage on schema billing_vault to billing_vault;
-- The tenant policies call it as the caller.
grant execute on function billing.row_visible(uuid) to billing_vault;

select billing.grant_dml('billing.contracts', 'billing_vault', 'select, insert, update');
select billing.grant_dml('billing.contract_term_attrs', 'billing_vault', 'select, insert, update');
select billing.grant_dml('billing_vault.card_secrets', 'billing_vault', 'select, insert, update');

grant execute on function billing.card_number_in(text), billing.card_number_in_jsonb(jsonb),
    billing.sensitive_attribute_key(text)
    to billing_app, billing_worker, billing_vault;

-- What a charge needs to know about an instrument, for the caller's tenant only (row_visible: the tenant its
-- transaction names). Its status, owner, type and expiry; nothing that identifies the card.
create function billing.payment_instrument_for_charge(tenant uuid, instrument_id text)
returns table (id text, entity_contract_id text, status text, instrument_type text, exp_month integer,
               exp_year integer)
language sql stable security definer set search_path = pg_catalog, billing as $$
    select c.id, c.entity_contract_id, c.status,
           max(a.attr_value) filter (where a.attr_key = 'instrument_type'),
           max(a.attr_value) filter (where a.attr_key = 'exp_month')::integer,
           max(a.attr_value) filter (where a.attr_key = 'exp_year')::integer
      from billing.contracts c
      left join billing.contract_term_attrs a
        on a.tenant_id = c.tenant_id and a.contract_id = c.id and a.valid_to is null
       and a.attr_key in ('instrument_type', 'exp_month', 'exp_year')
     where c.tenant_id = tenant and c.id = instrument_id and c.contract_type = 'payment_instrument'
       and billing.row_visible(c.tenant_id)
     group by c.id, c.entity_contract_id, c.status
$$;

-- The token a provider is charged with for an instrument (never a card number), for the caller's tenant only.
-- Whatever the instrument's status: a retry of a charge made while it was active is still the same charge.
create function billing.payment_instrument_provider_token(tenant uuid, instrument_id text, provider text)
returns text
language sql stable security definer set search_path = pg_catalog, billing as $$
    select a.attr_value
      from billing.contract_term_attrs a
     where a.tenant_id = tenant and a.contract_id = instrument_id and a.attr_key = 'provider_token.' || provider
       and a.valid_to is null and billing.row_visible(a.tenant_id)
$$;

revoke all on function billing.payment_instrument_for_charge(uuid, text) from public;
revoke all on function billing.payment_instrument_provider_token(uuid, text, text) from public;
grant execute on function billing.payment_instrument_for_charge(uuid, text) to billing_app;
grant execute on function billing.payment_instrument_provider_token(uuid, text, text) to billing_app, billing_worker;

-- --- Card numbers refused in every column that takes free input ---------------------------------------------------

-- Guarded: text that arrives from outside the engine (a client's request, a provider's message) without a format
-- that excludes digits. Insert-only where the column never changes afterwards (its table's guard says so).
--
--   billing.billing_executions   entity_contract_id, plan_contract_id, payment_instrument_id, metadata (keys and
--                                values) [insert]; last_error_code (a provider's code) [insert, update]
--   billing.contracts            id, entity_contract_id, idempotency_key
--   billing.contract_term_attrs  attr_key, attr_value (plus the sensitive-key rule above)
--   billing.execution_reversals  provider_event_type, reason
--   billing_inbox.webhook_events event_type, failure_code
--
-- Exempt (tests/integration/test_instruments_card_data_guard.py lists each with its reason, and fails on any text
-- or jsonb column of the owned schemas that is neither guarded nor listed there):
--   * identifiers that machines generate: provider references and event ids, UUID-based correlation ids, lease
--     owners, the vault's tokens, hashes. Measured on random values, 0.1-0.4 % of sandbox references, UUID
--     strings and hex hashes hold a Luhn-valid 13-19 digit window: refusing them would fail about one completed
--     charge in a thousand, and none of them is typed by a person;
--   * what the engine derives from guarded columns (the outbox payload, event metadata, workflow rows) or states
--     itself (statuses, types, codes under CHECK constraints, authenticated actors);
--   * the audit trail (refusing an entry would lose evidence; its details are never card data by contract), the
--     migration ledger, the sandbox provider's own memory (an external system; it is sent tokens only);
create trigger billing_executions_card_data_guard
    before insert on billing.billing_executions
    for each row execute function billing.refuse_card_numbers(
        'entity_contract_id', 'plan_contract_id', 'payment_instrument_id', 'metadata', 'last_error_code',
        'idempotency_key', 'correlation_id');

create trigger billing_executions_error_code_card_data_guard
    before update of last_error_code on billing.billing_executions
    for each row execute function billing.refuse_card_numbers('last_error_code');

create trigger contracts_card_data_guard
    before insert on billing.contracts
    for each row execute function billing.refuse_card_numbers('id', 'entity_contract_id', 'idempotency_key');

create trigger contract_term_attrs_card_data_guard
    before insert on billing.contract_term_attrs
    for each row execute function billing.refuse_card_numbers('attr_key', 'attr_value');

create trigger execution_reversals_card_data_guard
    before insert on billing.execution_reversals
    for each row execute function billing.refuse_card_numbers('provider_event_type', 'reason');

create trigger webhook_events_card_data_guard
    before insert on billing_inbox.webhook_events
    for each row execute function billing.refuse_card_numbers('event_type', 'failure_code');
