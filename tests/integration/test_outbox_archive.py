"""Published outbox rows move to the archive, whole and only through the worker's function; replay still finds them.

As the production roles: billing_app writes executions (their outbox rows), billing_worker publishes, archives and
replays, on a database of the test's own (the archive spans tenants).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection
from billing.db.execution_repository import ExecutionRepository
from billing.db.sqlstates import GuardState
from billing.domain.workflow import WorkflowWriteContext
from billing.outbox.archive import archive_published
from billing.outbox.events import OutboundEvent, PublishResult
from billing.outbox.relay import OutboxRelay, StopReason
from billing.outbox.replay import replay
from tests.factories import create_execution

CTX = WorkflowWriteContext.service_default()
NOW = timedelta(0)
DENIED = "42501"
_OUTBOX_COLUMNS = (
    "tenant_id, id, event_id, aggregate_type, aggregate_id, event_type, payload, correlation_id, occurred_at, "
    "published_at, publish_attempts, failed_attempts, last_error"
)


class AcceptAll:
    """A bus that takes every event."""

    def __init__(self) -> None:
        self.published: list[OutboundEvent] = []

    def publish(self, events: Sequence[OutboundEvent]) -> list[PublishResult]:
        self.published.extend(events)
        return [PublishResult(accepted=True) for _ in events]


def executions_with_events(app_db: Connection, tenant_id: UUID, count: int) -> list[UUID]:
    """`count` executions with two outbox rows each (created, pending), written as the execute function does."""
    repository = ExecutionRepository(app_db)
    ids = []
    for _ in range(count):
        execution = create_execution(app_db, tenant_id)
        repository.mark_pending(tenant_id, execution.id, CTX)
        ids.append(execution.id)
    return ids


def rows(admin: Connection, table: str) -> list[dict[str, Any]]:
    return admin.execute(f"select {_OUTBOX_COLUMNS} from billing.{table} order by id").fetchall()


def test_published_rows_older_than_the_retention_move_whole_and_unpublished_ones_stay(
    db: Connection, app_db: Connection, private_admin: Connection, tenant_id: UUID
) -> None:
    executions_with_events(app_db, tenant_id, 3)
    report = OutboxRelay(db, AcceptAll(), archive_after=None).run(lambda: 60_000.0)
    assert report.published == 6
    published = rows(private_admin, "billing_outbox")
    later = executions_with_events(app_db, tenant_id, 1)  # its two rows stay unpublished

    assert archive_published(db, older_than=timedelta(days=1)) == 0
    moved = archive_published(db, older_than=NOW)

    assert moved == 6
    assert rows(private_admin, "billing_outbox_archive") == published
    left = rows(private_admin, "billing_outbox")
    assert [(r["aggregate_id"], r["published_at"]) for r in left] == [(later[0], None), (later[0], None)]
    stamps = private_admin.execute(
        "select distinct archived_by, archived_at >= published_at as after from billing.billing_outbox_archive"
    ).fetchall()
    assert stamps == [{"archived_by": "billing_worker_user", "after": True}]


def test_one_call_moves_at_most_max_rows_oldest_first(
    db: Connection, app_db: Connection, private_admin: Connection, tenant_id: UUID
) -> None:
    executions_with_events(app_db, tenant_id, 3)
    OutboxRelay(db, AcceptAll(), archive_after=None).run(lambda: 60_000.0)
    oldest = [r["id"] for r in rows(private_admin, "billing_outbox")][:4]

    assert archive_published(db, older_than=NOW, max_rows=4) == 4
    assert [r["id"] for r in rows(private_admin, "billing_outbox_archive")] == oldest
    assert archive_published(db, older_than=NOW, max_rows=4) == 2


def test_a_drained_relay_run_archives_what_was_published_before_its_retention(
    db: Connection, app_db: Connection, private_admin: Connection, tenant_id: UUID
) -> None:
    executions_with_events(app_db, tenant_id, 2)

    keeping = OutboxRelay(db, AcceptAll()).run(lambda: 60_000.0)
    assert (keeping.published, keeping.archived, keeping.stop_reason) == (4, 0, StopReason.DRAINED)
    archiving = OutboxRelay(db, AcceptAll(), archive_after=NOW).run(lambda: 60_000.0)

    assert (archiving.published, archiving.archived) == (0, 4)
    assert rows(private_admin, "billing_outbox") == []
    assert len(rows(private_admin, "billing_outbox_archive")) == 4


def test_a_relay_run_out_of_time_archives_nothing(db: Connection, app_db: Connection, tenant_id: UUID) -> None:
    executions_with_events(app_db, tenant_id, 1)
    OutboxRelay(db, AcceptAll(), archive_after=None).run(lambda: 60_000.0)

    report = OutboxRelay(db, AcceptAll(), archive_after=NOW).run(lambda: 0.0)

    assert (report.stop_reason, report.archived) == (StopReason.TIME_BUDGET, 0)


def test_replay_republishes_archived_events_of_an_execution_in_order(
    db: Connection, app_db: Connection, tenant_id: UUID
) -> None:
    [execution_id] = executions_with_events(app_db, tenant_id, 1)
    OutboxRelay(db, AcceptAll(), archive_after=None).run(lambda: 60_000.0)
    assert archive_published(db, older_than=NOW, max_rows=1) == 1  # one row archived, one still live
    bus = AcceptAll()

    report = replay(db, bus, execution_id=execution_id, operator="test")

    assert (report.selected, report.published) == (2, 2)
    assert [e.detail_type for e in bus.published] == ["billing.execution.created", "billing.execution.pending"]
    assert all(json.loads(e.detail)["replayed"] for e in bus.published)


def test_only_the_worker_role_may_archive(app_db: Connection) -> None:
    with pytest.raises(psycopg.Error) as caught, app_db.transaction():
        app_db.execute("select billing.archive_published_outbox(interval '0', 10)")
    assert caught.value.sqlstate == DENIED


def test_nonsense_arguments_are_refused(db: Connection) -> None:
    for older_than, max_rows in ((timedelta(seconds=-1), 10), (NOW, 0)):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            archive_published(db, older_than=older_than, max_rows=max_rows)


def test_the_archive_is_append_only_for_the_worker_and_the_owner(
    db: Connection, app_db: Connection, private_admin: Connection, tenant_id: UUID
) -> None:
    executions_with_events(app_db, tenant_id, 1)
    OutboxRelay(db, AcceptAll(), archive_after=NOW).run(lambda: 60_000.0)
    for statement in (
        "update billing.billing_outbox_archive set payload = '{}'",
        "delete from billing.billing_outbox_archive",
        "truncate billing.billing_outbox_archive",
        "insert into billing.billing_outbox_archive select * from billing.billing_outbox_archive",
    ):
        with pytest.raises(psycopg.Error) as caught, db.transaction():
            db.execute("select set_config('billing.scope', 'system', true)")
            db.execute(statement)
        assert caught.value.sqlstate == DENIED, statement
    for statement in (
        "update billing.billing_outbox_archive set payload = '{}'",
        "delete from billing.billing_outbox_archive",
        "truncate billing.billing_outbox_archive",
    ):
        with pytest.raises(psycopg.Error) as caught, private_admin.transaction():
            private_admin.execute("set local role billing_owner")
            private_admin.execute(statement)
        assert caught.value.sqlstate == GuardState.APPEND_ONLY, statement


def test_the_app_role_sees_nothing_of_the_archive(app_db: Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), app_db.transaction():
        app_db.execute("select set_config('billing.tenant_id', %s, true)", [str(uuid4())])
        app_db.execute("select count(*) from billing.billing_outbox_archive")
