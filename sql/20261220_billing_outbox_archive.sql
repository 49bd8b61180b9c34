-- The live outbox keeps what the relay still works on; published rows move to an archive.
--
-- billing.billing_outbox is a work queue that used to keep every row it ever held: published rows are dead weight
-- there (the relay claims through a partial index of unpublished rows and never reads them again), but every one
-- of them still costs the table's five indexes on every insert's page splits, autovacuum's passes, backups and the
-- cache. So published rows older than the relay's retention move, in the relay's own runs, to
-- billing.billing_outbox_archive, where operator replay (billing.outbox.replay) still finds them.
--
-- billing.billing_outbox_archive: every column of the outbox row as it was when it moved (so the announcement and
-- its publication history stay evidence, append-only like the events), plus when it moved and which login moved
-- it. Not a queue any more: no lease or backoff columns. Its indexes serve replay (by execution in id order, by
-- time range), nothing else. An event's identity stays guarded where it always was: billing_execution_events'
-- primary key (the events are never archived; every outbox row announces one of them, BE009).
--
-- billing.archive_published_outbox(older_than, max_rows) is the only way a row leaves the live outbox: SECURITY
-- DEFINER (the owner's DELETE, which no run-time role holds), callable by billing_worker only, one statement that
-- deletes published rows older than `older_than` and inserts exactly those rows into the archive, so a row is in
-- one table or the other, never neither. It touches nothing unpublished (the outbox's own guard, BE005, refuses that
-- too), at most 10,000 rows a call, oldest first through billing_outbox_occurred, and skips rows another
-- transaction has locked. The rows it deletes are the ones it locked, found again by their ctid (stable while the
-- statement holds their lock) rather than a second primary-key lookup each. Runs as billing_owner.

create table billing.billing_outbox_archive (
    tenant_id        uuid        not null,
    id               bigint      not null,
    event_id         uuid        not null,
    aggregate_type   text        not null,
    aggregate_id     uuid        not null,
    event_type       text        not null,
    payload          jsonb       not null,
    correlation_id   text,
    occurred_at      timestamptz not null,
    published_at     timestamptz not null,
    publish_attempts integer     not null,
    failed_attempts  integer     not null,
    last_error       text,
    archived_at      timestamptz not null,
    archived_by      text        not null,

    constraint billing_outbox_archive_pkey primary key (tenant_id, id),
    constraint billing_outbox_archive_published_before check (published_at <= archived_at)
);

-- Replay by execution (its rows in id order) and by time range, as it reads the live outbox.
create index billing_outbox_archive_aggregate on billing.billing_outbox_archive (aggregate_id, id);
create index billing_outbox_archive_occurred on billing.billing_outbox_archive (occurred_at);

create trigger billing_outbox_archive_append_only
    before update or delete on billing.billing_outbox_archive
    for each row execute function billing.reject_append_only_change();

create trigger billing_outbox_archive_no_truncate
    before truncate on billing.billing_outbox_archive
    for each statement execute function billing.reject_append_only_change();

select billing.enable_tenant_isolation('billing.billing_outbox_archive');
-- Replay reads it (in the worker's system scope); rows arrive only through the function below.
select billing.grant_dml('billing.billing_outbox_archive', 'billing_worker', 'select');

create function billing.archive_published_outbox(older_than interval, max_rows integer) returns integer
language plpgsql volatile security definer set search_path = pg_catalog, billing as $$
declare
    cutoff timestamptz := clock_timestamp() - older_than;
    moved integer;
begin
    if older_than is null or older_than < interval '0' or max_rows is null or max_rows < 1 then
        raise exception 'billing.archive_published_outbox: older_than must be >= 0 and max_rows >= 1'
            using errcode = '22023';
    end if;
    -- published_at >= occurred_at, so the occurred_at bound lets billing_outbox_occurred start and stop the scan.
    with candidates as (
        select o.ctid
          from billing.billing_outbox o
         where o.occurred_at < cutoff and o.published_at < cutoff
         order by o.occurred_at
         limit least(max_rows, 10000)
           for update skip locked
    ), gone as (
        delete from billing.billing_outbox o
         using candidates c
         where o.ctid = c.ctid and o.published_at is not null
        returning o.*
    )
    insert into billing.billing_outbox_archive (
        tenant_id, id, event_id, aggregate_type, aggregate_id, event_type, payload, correlation_id, occurred_at,
        published_at, publish_attempts, failed_attempts, last_error, archived_at, archived_by
    )
    select g.tenant_id, g.id, g.event_id, g.aggregate_type, g.aggregate_id, g.event_type, g.payload,
           g.correlation_id, g.occurred_at, g.published_at, g.publish_attempts, g.failed_attempts, g.last_error,
           clock_timestamp(), session_user
      from gone g;
    get diagnostics moved = row_count;
    return moved;
end;
$$;

revoke all on function billing.archive_published_outbox(interval, integer) from public;
grant execute on function billing.archive_published_outbox(interval, integer) to billing_worker;
