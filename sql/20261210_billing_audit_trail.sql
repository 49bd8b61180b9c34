-- billing_audit: the tamper-evident audit trail (PCI DSS v4.0 requirement 10). docs/pci.md, "Audit trail", is the
-- long form; billing.audit is the code that writes, sequences, checkpoints and verifies it.
--
-- The log is one global RFC 6962 Merkle tree, so its own schema and not tenant-distributed: a tree index (seq) is
-- a position in one sequence across every tenant, and an auditor proves a checkpoint over all of it. tenant_id is a
-- column (nullable: failed logins, migrations and operator actions have no tenant), never the key. In Citus these
-- tables stay on the coordinator (or become reference tables); nothing in schema billing references them.
--
-- Append-only for everyone, the owner included: triggers refuse UPDATE, DELETE and TRUNCATE whoever runs them. An
-- edit made anyway with the triggers disabled (the owner, or a superuser with session_replication_role = replica)
-- is caught by `python -m billing.audit verify`: each entry stores its leaf bytes and leaf hash, each tree index is
-- a row of billing_audit.leaves, and signed checkpoints (also written to an S3 bucket with Object Lock in
-- compliance mode) commit to the tree's root.
--
-- Concurrency: writers never take a shared lock. An entry is one INSERT whose trigger assigns the entry id (a
-- sequence, no lock held to commit), the database time and the leaf bytes/hash. Only the sequencer (the
-- audit_checkpoint function, one at a time under an advisory lock) gives entries their tree index, in id order,
-- to the committed entries it finds unsequenced; an entry that commits after its snapshot simply gets a later
-- index on the next run. Indexes are contiguous from 0 (checked on insert) and never change (append-only).
--
-- Runs as billing_owner.

create schema billing_audit;

revoke all on schema billing_audit from public;
grant usage on schema billing_audit to billing_app, billing_worker, billing_vault, billing_auditor;

-- Entry ids come from this sequence, one value per insert (cache 1, so last_value is the id handed out last,
-- which the sequencer relies on; see billing_audit.sequence_entries).
create sequence billing_audit.entry_ids as bigint minvalue 1 cache 1;

-- billing_audit.entries: one row per audited event (PCI DSS 10.2.2: who, what, when, where from, outcome, which
-- resource). Columns are what the caller states (billing.audit.AuditEvent) plus what the database states about the
-- writer: the id, occurred_at (the database clock) and database_user (the login the row came from). `leaf` is the
-- canonical serialisation of the row (format v1 below), `leaf_hash` its RFC 6962 leaf hash, both computed by the
-- insert trigger, so a writer cannot state a leaf that disagrees with its columns.
create table billing_audit.entries (
    id             bigint      not null,
    occurred_at    timestamptz not null,
    event_type     text        not null,
    outcome        text        not null,
    actor          text        not null,
    tenant_id      uuid,
    resource_type  text        not null,
    resource_id    text,
    purpose        text,
    correlation_id text,
    source         text,
    details        jsonb       not null default '{}'::jsonb,
    database_user  text        not null,
    leaf           bytea       not null,
    leaf_hash      bytea       not null,

    constraint entries_pkey primary key (id),
    constraint entries_event_type_format check (event_type ~ '^[a-z]+\.[a-z_]+$'),
    constraint entries_outcome_known check (outcome in ('granted', 'denied', 'succeeded', 'failed')),
    constraint entries_actor_present check (length(actor) between 1 and 200),
    constraint entries_resource_type_present check (length(resource_type) between 1 and 100),
    constraint entries_short_fields check (
        coalesce(length(resource_id), 0) <= 200 and coalesce(length(purpose), 0) <= 100
        and coalesce(length(correlation_id), 0) <= 200 and coalesce(length(source), 0) <= 200
    ),
    constraint entries_leaf_hash_sha256 check (octet_length(leaf_hash) = 32)
);

-- details: a small object of string values (never cardholder data or secrets: the callers' rule, docs/pci.md).
create function billing_audit.details_well_formed(details jsonb) returns boolean
language sql immutable set search_path = pg_catalog as $$
    select jsonb_typeof(details) = 'object'
       and octet_length(details::text) <= 4096
       and (select count(*) from jsonb_object_keys(details)) <= 32
       and not exists (select 1 from jsonb_each(details) d where jsonb_typeof(d.value) <> 'string')
$$;

alter table billing_audit.entries
    add constraint entries_details_small_strings check (billing_audit.details_well_formed(details));

-- Auditors' questions: by time; by tenant, resource or event type over a time range (billing.audit.queries).
create index entries_occurred_at on billing_audit.entries (occurred_at, id);
create index entries_tenant on billing_audit.entries (tenant_id, occurred_at, id) where tenant_id is not null;
create index entries_resource on billing_audit.entries (resource_id, occurred_at, id) where resource_id is not null;
create index entries_event_type on billing_audit.entries (event_type, occurred_at, id);

-- Leaf format v1: a JSON object, UTF-8, no insignificant whitespace, keys in ascending code-point order, exactly the
-- fields below (null when absent), strings escaped as JSON's minimum (", \, and control characters; \b \f \n \r \t
-- by name, others as \u00xx in lower case), occurred_at in UTC as RFC 3339 with microseconds and "Z", details an
-- object of strings with sorted keys, id and v numbers. billing.audit.leaf.canonical_leaf is the Python twin (a
-- test compares the two byte for byte), and `verify` rebuilds every leaf from its row's columns with it.
create function billing_audit.canonical_leaf(entry billing_audit.entries) returns bytea
language sql immutable set search_path = pg_catalog as $$
    select convert_to(
        '{"actor":' || to_json(entry.actor)::text
        || ',"correlation_id":' || coalesce(to_json(entry.correlation_id)::text, 'null')
        || ',"database_user":' || to_json(entry.database_user)::text
        || ',"details":{' || coalesce((
               select string_agg(to_json(d.key)::text || ':' || to_json(d.value)::text, ',' order by d.key collate "C")
                 from jsonb_each_text(entry.details) d), '') || '}'
        || ',"event_type":' || to_json(entry.event_type)::text
        || ',"id":' || entry.id::text
        || ',"occurred_at":"' || to_char(entry.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '"'
        || ',"outcome":' || to_json(entry.outcome)::text
        || ',"purpose":' || coalesce(to_json(entry.purpose)::text, 'null')
        || ',"resource_id":' || coalesce(to_json(entry.resource_id)::text, 'null')
        || ',"resource_type":' || to_json(entry.resource_type)::text
        || ',"source":' || coalesce(to_json(entry.source)::text, 'null')
        || ',"tenant_id":' || coalesce(to_json(entry.tenant_id::text)::text, 'null')
        || ',"v":1}',
        'UTF8')
$$;

-- What the database states about every entry, whatever the insert said. SECURITY DEFINER for the sequence only
-- (writers get no privilege on it). The transaction id is assigned before the entry id is drawn: the sequencer's
-- proof that no entry is skipped rests on "an id handed out before I looked belongs to a transaction my snapshot
-- knows about" (see billing_audit.sequence_entries).
create function billing_audit.stamp_entry() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing_audit as $$
begin
    perform pg_current_xact_id();
    new.id := nextval('billing_audit.entry_ids');
    new.occurred_at := clock_timestamp();
    new.database_user := session_user;
    new.details := coalesce(new.details, '{}'::jsonb);
    new.leaf := billing_audit.canonical_leaf(new);
    new.leaf_hash := sha256('\x00'::bytea || new.leaf);
    return new;
end;
$$;

create trigger entries_stamp
    before insert on billing_audit.entries
    for each row execute function billing_audit.stamp_entry();

-- billing_audit.leaves: the tree. Row seq is leaf seq of the RFC 6962 tree; seq runs 0, 1, 2, ... with no gap (the
-- trigger below) and each entry appears at most once. Written only by billing_audit.sequence_entries.
create table billing_audit.leaves (
    seq          bigint      not null,
    entry_id     bigint      not null,
    leaf_hash    bytea       not null,
    sequenced_at timestamptz not null default now(),

    constraint leaves_pkey primary key (seq),
    constraint leaves_entry_once unique (entry_id),
    constraint leaves_entry_fkey foreign key (entry_id) references billing_audit.entries (id),
    constraint leaves_seq_nonnegative check (seq >= 0),
    constraint leaves_leaf_hash_sha256 check (octet_length(leaf_hash) = 32)
);

create function billing_audit.guard_leaf_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing_audit as $$
declare
    expected bigint;
begin
    select coalesce(max(l.seq) + 1, 0) into expected from billing_audit.leaves l;
    if new.seq <> expected then
        raise exception 'billing_audit.leaves: leaf % would leave the tree with a gap (next index is %)', new.seq,
            expected
            using errcode = 'BE011', hint = 'tree indexes are assigned by billing_audit.sequence_entries only';
    end if;
    if not exists (select 1 from billing_audit.entries e where e.id = new.entry_id and e.leaf_hash = new.leaf_hash)
    then
        raise exception 'billing_audit.leaves: leaf % does not carry entry %''s leaf hash', new.seq, new.entry_id
            using errcode = 'BE011';
    end if;
    return new;
end;
$$;

create trigger leaves_contiguous
    before insert on billing_audit.leaves
    for each row execute function billing_audit.guard_leaf_insert();

-- billing_audit.sequencer_runs: the sequencer's own bookkeeping, so that it scans only entries it may not have
-- seen: every committed entry with id <= floor_entry_id is in the tree. ceiling_entry_id is the id handed out last
-- when the run began and horizon_xid the run's own transaction id, assigned just after: every entry with an id up
-- to the ceiling belongs to a transaction with a smaller id (stamp_entry takes the transaction id before the entry
-- id). Once no transaction below horizon_xid is running, no entry with id <= ceiling_entry_id can still commit, and
-- a run that then drains the queue may raise the floor to that ceiling.
create table billing_audit.sequencer_runs (
    id               bigint generated always as identity,
    floor_entry_id   bigint      not null,
    ceiling_entry_id bigint      not null,
    horizon_xid      xid8        not null,
    tree_size        bigint      not null,
    ran_at           timestamptz not null default now(),

    constraint sequencer_runs_pkey primary key (id),
    constraint sequencer_runs_floor_below_ceiling check (floor_entry_id <= ceiling_entry_id)
);

-- The sequencer: gives the committed, unsequenced entries their tree indexes, in id order, after the last index.
-- Serialised by an advisory lock (one sequencer at a time; writers never take it). Returns the tree size after the
-- call and how many entries it added. READ COMMITTED only: each statement below must see a fresh snapshot, and the
-- ceiling must be read before the horizon is taken. Callable several times in one transaction (batches): only a
-- call that assigned the transaction its id may state a new (ceiling, horizon) pair.
create function billing_audit.sequence_entries(max_entries integer)
returns table (tree_size bigint, sequenced bigint)
language plpgsql security definer set search_path = pg_catalog, billing_audit as $$
declare
    fresh boolean;
    ceiling bigint;
    horizon xid8;
    oldest_running xid8;
    previous billing_audit.sequencer_runs;
    next_seq bigint;
    added bigint;
    new_floor bigint;
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'billing_audit.sequence_entries runs in READ COMMITTED only' using errcode = 'BE011';
    end if;
    if max_entries < 1 then
        raise exception 'billing_audit.sequence_entries: max_entries must be positive' using errcode = 'BE011';
    end if;
    -- 0x61756469 = "audi": the one lock of the sequencer.
    perform pg_advisory_xact_lock(1635083369);
    fresh := pg_current_xact_id_if_assigned() is null;

    -- 1. The id handed out last. Every entry with an id up to it belongs to a transaction whose id was assigned
    --    before this read (stamp_entry), hence below the horizon taken next (ids are assigned in increasing order).
    select case when s.is_called then s.last_value else 0 end into ceiling from billing_audit.entry_ids s;
    -- 2. The horizon (this transaction's id: assigned now when the call is fresh) and who may still be running.
    horizon := pg_current_xact_id();
    select pg_snapshot_xmin(pg_current_snapshot()) into oldest_running;

    select * into previous from billing_audit.sequencer_runs r order by r.id desc limit 1;
    select coalesce(max(l.seq) + 1, 0) into next_seq from billing_audit.leaves l;

    -- 3. The committed entries not yet in the tree, above the floor, in id order (this statement's snapshot is
    --    newer than step 2's: whatever had ended by then is visible here).
    insert into billing_audit.leaves (seq, entry_id, leaf_hash)
    select next_seq + row_number() over (order by p.id) - 1, p.id, p.leaf_hash
      from (
          select e.id, e.leaf_hash from billing_audit.entries e
           where e.id > coalesce(previous.floor_entry_id, 0)
             and not exists (select 1 from billing_audit.leaves l where l.entry_id = e.id)
           order by e.id
           limit max_entries
      ) p
     order by p.id;
    get diagnostics added = row_count;

    -- 4. The floor rises only when the queue was drained, to the highest ceiling none of whose transactions was
    --    running at step 2: no transaction below its horizon was (this call's own, when it is fresh).
    new_floor := coalesce(previous.floor_entry_id, 0);
    if added < max_entries then
        new_floor := greatest(new_floor, coalesce((
            select max(r.ceiling_entry_id) from billing_audit.sequencer_runs r where r.horizon_xid <= oldest_running
        ), 0), case when fresh and horizon <= oldest_running then ceiling else 0 end);
    end if;
    if fresh and (previous.id is null or added > 0 or new_floor > previous.floor_entry_id
                  or ceiling > previous.ceiling_entry_id) then
        insert into billing_audit.sequencer_runs (floor_entry_id, ceiling_entry_id, horizon_xid, tree_size)
        values (new_floor, greatest(ceiling, new_floor), horizon, next_seq + added);
    elsif new_floor > previous.floor_entry_id then
        -- Not fresh: this call's ceiling may postdate the horizon, so it keeps the previous (ceiling, horizon).
        insert into billing_audit.sequencer_runs (floor_entry_id, ceiling_entry_id, horizon_xid, tree_size)
        values (new_floor, greatest(previous.ceiling_entry_id, new_floor), previous.horizon_xid, next_seq + added);
    end if;
    return query select next_seq + added, added;
end;
$$;

-- billing_audit.checkpoints: signed tree heads. The signature (billing.audit.checkpoints) covers the tree size, the
-- root hash and created_at, under the key named by key_id (a key rotation changes the id; old keys stay available
-- to verify the checkpoints they signed). compact_range is the tree's frontier (the roots of its perfect subtrees,
-- left to right) so the next checkpoint extends it without reading every leaf; verify recomputes it anyway. Each
-- checkpoint is also written to S3 under Object Lock (billing.audit.s3).
create table billing_audit.checkpoints (
    tree_size     bigint      not null,
    root_hash     bytea       not null,
    created_at    timestamptz not null,
    key_id        text        not null,
    algorithm     text        not null,
    signature     bytea       not null,
    compact_range bytea[]     not null,

    constraint checkpoints_pkey primary key (tree_size),
    constraint checkpoints_tree_not_empty check (tree_size > 0),
    constraint checkpoints_root_sha256 check (octet_length(root_hash) = 32),
    constraint checkpoints_algorithm_known check (algorithm in ('HMAC-SHA256')),
    constraint checkpoints_key_id_present check (length(key_id) between 1 and 200)
);

create index checkpoints_created_at on billing_audit.checkpoints (created_at);

-- A checkpoint is of a tree that exists, and trees only grow.
create function billing_audit.guard_checkpoint_insert() returns trigger
language plpgsql security definer set search_path = pg_catalog, billing_audit as $$
begin
    if new.tree_size > (select coalesce(max(l.seq) + 1, 0) from billing_audit.leaves l) then
        raise exception 'billing_audit.checkpoints: tree size % is larger than the tree', new.tree_size
            using errcode = 'BE011';
    end if;
    if new.tree_size <= (select coalesce(max(c.tree_size), 0) from billing_audit.checkpoints c) then
        raise exception 'billing_audit.checkpoints: tree size % does not grow the last checkpoint', new.tree_size
            using errcode = 'BE011';
    end if;
    return new;
end;
$$;

create trigger checkpoints_grow
    before insert on billing_audit.checkpoints
    for each row execute function billing_audit.guard_checkpoint_insert();

-- --- Append-only, for everyone ---------------------------------------------------------------------------------

create trigger entries_append_only
    before update or delete on billing_audit.entries
    for each row execute function billing.reject_append_only_change();
create trigger entries_no_truncate
    before truncate on billing_audit.entries
    for each statement execute function billing.reject_append_only_change();
create trigger leaves_append_only
    before update or delete on billing_audit.leaves
    for each row execute function billing.reject_append_only_change();
create trigger leaves_no_truncate
    before truncate on billing_audit.leaves
    for each statement execute function billing.reject_append_only_change();
create trigger checkpoints_append_only
    before update or delete on billing_audit.checkpoints
    for each row execute function billing.reject_append_only_change();
create trigger checkpoints_no_truncate
    before truncate on billing_audit.checkpoints
    for each statement execute function billing.reject_append_only_change();
create trigger sequencer_runs_append_only
    before update or delete on billing_audit.sequencer_runs
    for each row execute function billing.reject_append_only_change();
create trigger sequencer_runs_no_truncate
    before truncate on billing_audit.sequencer_runs
    for each statement execute function billing.reject_append_only_change();

-- --- Row-level security and privileges ------------------------------------------------------------------------

-- The trail is cross-tenant evidence: the roles that record events (app, worker, vault, and the auditor, whose
-- reads are audited too) may only insert, with no read-back (no SELECT, so no RETURNING either); the auditor reads
-- every row. The policies say the same as the grants, so neither alone opens the table.
alter table billing_audit.entries enable row level security;
alter table billing_audit.entries force row level security;
create policy entries_record on billing_audit.entries for insert
    to billing_app, billing_worker, billing_vault, billing_auditor with check (true);
create policy entries_audit on billing_audit.entries for select to billing_auditor using (true);
create policy owner_maintenance on billing_audit.entries to billing_owner using (true) with check (true);

revoke all on all tables in schema billing_audit from public;
revoke all on all sequences in schema billing_audit from public;
revoke all on all functions in schema billing_audit from public;

select billing.grant_dml('billing_audit.entries', 'billing_app', 'insert');
select billing.grant_dml('billing_audit.entries', 'billing_worker', 'insert');
select billing.grant_dml('billing_audit.entries', 'billing_vault', 'insert');
select billing.grant_dml('billing_audit.entries', 'billing_auditor', 'select, insert');
-- The checkpoint function (billing_worker) reads leaf hashes (no event content) and writes checkpoints.
select billing.grant_dml('billing_audit.leaves', 'billing_worker', 'select');
select billing.grant_dml('billing_audit.checkpoints', 'billing_worker', 'select, insert');
select billing.grant_dml('billing_audit.leaves', 'billing_auditor', 'select');
select billing.grant_dml('billing_audit.checkpoints', 'billing_auditor', 'select');
select billing.grant_dml('billing_audit.sequencer_runs', 'billing_auditor', 'select');

grant execute on function billing_audit.sequence_entries(integer) to billing_worker;
grant execute on function billing_audit.details_well_formed(jsonb), billing_audit.canonical_leaf(billing_audit.entries)
    to billing_app, billing_worker, billing_vault, billing_auditor;
grant execute on function billing.reject_append_only_change() to billing_vault, billing_auditor;
