"""Operator replay: publish copies of already-published events again, without touching the outbox rows.

    python -m billing.outbox.replay --execution-id UUID [--tenant-id UUID] [--dry-run]
    python -m billing.outbox.replay --since 2026-04-01T00:00:00Z --until 2026-04-02T00:00:00Z [--dry-run]

A copy is the original entry with "replayed": true added to its Detail and the same event_id, so consumers that
already processed the original drop it. Only published rows are replayed: unpublished ones are the relay's, and
sending one ahead of it could put it on the bus before an earlier event of its execution. Copies go out in outbox
id order under the relay's chunking rules (one event per execution per call); once a copy fails, its execution's
later copies are skipped. Reads only: the rows' published_at, publish_attempts and last_error stay as they are.
Rows the relay has archived (billing.outbox.archive) are replayed from the archive, the same way.
Every replay (dry runs too) is an operator action in the audit trail (PCI DSS 10.2.1.2): what was asked, by whom,
and how it ended.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import sql

from billing import resource_names as names
from billing.audit import AuditOutcome, record_audit_event
from billing.audit.hooks import operator_action
from billing.db.connection import Connection
from billing.db.tenancy import system_transaction
from billing.outbox.chunking import next_chunk, too_large
from billing.outbox.events import OutboundEvent, event_from_outbox_row
from billing.outbox.ports import EventPublisher, PublishUnavailable

# Rows read per query: bounded memory for a replay of a long time range.
_PAGE_SIZE = 500
# Published rows live in the outbox for a day, then in its archive (billing.outbox.archive): a row is in exactly one
# of the two, moved in one statement, so a page's snapshot finds it once. Ids stay unique across both.
_COLUMNS = "tenant_id, id, event_id, aggregate_id, event_type, payload, occurred_at, published_at"
_PUBLISHED = (
    f"select {_COLUMNS} from billing.billing_outbox union all select {_COLUMNS} from billing.billing_outbox_archive"
)


@dataclass(frozen=True, slots=True)
class ReplayFailure:
    """A copy the bus did not accept."""

    outbox_id: int
    event_id: UUID
    error: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """selected rows matched; published + failed + skipped = selected unless dry_run (then nothing is sent)."""

    selected: int
    published: int
    skipped: int
    failures: tuple[ReplayFailure, ...] = field(default=())
    dry_run: bool = False

    @property
    def complete(self) -> bool:
        return self.dry_run or self.published == self.selected

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _page(conn: Connection, query: sql.Composed, params: dict[str, Any]) -> list[dict[str, Any]]:
    # Operators replay across tenants: a system scope under row-level security.
    with system_transaction(conn):
        return conn.execute(query, params).fetchall()


def replay(
    conn: Connection,
    publisher: EventPublisher,
    *,
    execution_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant_id: UUID | None = None,
    dry_run: bool = False,
    operator: str | None = None,
) -> ReplayReport:
    """Publish copies of the published events of one execution, or that occurred in [since, until); recorded in
    the audit trail as `operator`'s action (default: the operating-system user)."""
    asked = {
        "execution_id": execution_id,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "tenant_id": tenant_id,
        "dry_run": str(dry_run).lower(),
    }
    audit = {key: str(value) for key, value in asked.items() if value is not None}
    try:
        report = _replay(conn, publisher, execution_id, since, until, tenant_id, dry_run)
    except BaseException as exc:
        # The replay's own error is what the operator must see; an audit row that cannot be written (the
        # connection broke) must not replace it.
        with contextlib.suppress(Exception):
            _audit(conn, operator, tenant_id, AuditOutcome.FAILED, {**audit, "error": type(exc).__name__})
        raise
    counts = {"selected": str(report.selected), "published": str(report.published), "failed": str(len(report.failures))}
    outcome = AuditOutcome.SUCCEEDED if report.complete else AuditOutcome.FAILED
    _audit(conn, operator, tenant_id, outcome, {**audit, **counts})
    return report


def _audit(
    conn: Connection, operator: str | None, tenant_id: UUID | None, outcome: AuditOutcome, details: dict[str, str]
) -> None:
    event = operator_action(
        "outbox_replay",
        actor=operator or f"os:{getpass.getuser()}",
        resource_type="outbox",
        resource_id=details.get("execution_id"),
        outcome=outcome,
        tenant_id=tenant_id,
        source="billing.outbox.replay",
        details=details,
    )
    record_audit_event(conn, event)


def _replay(
    conn: Connection,
    publisher: EventPublisher,
    execution_id: UUID | None,
    since: datetime | None,
    until: datetime | None,
    tenant_id: UUID | None,
    dry_run: bool,
) -> ReplayReport:
    if execution_id is None and (since is None or until is None):
        raise ValueError("replay needs an execution_id, or both since and until")
    for bound in (since, until):
        if bound is not None and bound.tzinfo is None:
            raise ValueError("since and until must carry a UTC offset")
    if since is not None and until is not None and since >= until:
        raise ValueError("since must be before until")

    conditions = [sql.SQL("published_at is not null"), sql.SQL("id > %(after)s")]
    if execution_id is not None:
        conditions.append(sql.SQL("aggregate_id = %(execution_id)s"))
    if tenant_id is not None:
        conditions.append(sql.SQL("tenant_id = %(tenant_id)s"))
    if since is not None:
        conditions.append(sql.SQL("occurred_at >= %(since)s"))
    if until is not None:
        conditions.append(sql.SQL("occurred_at < %(until)s"))
    query = sql.SQL("select * from ({}) o where {} order by id limit %(limit)s").format(
        sql.SQL(_PUBLISHED), sql.SQL(" and ").join(conditions)
    )
    params: dict[str, Any] = {
        "execution_id": execution_id,
        "tenant_id": tenant_id,
        "since": since,
        "until": until,
        "limit": _PAGE_SIZE,
        "after": 0,
    }

    selected = published = 0
    failures: list[ReplayFailure] = []
    failed_keys: set[tuple[UUID, UUID]] = set()
    unavailable = False
    while rows := _page(conn, query, params):
        params["after"] = rows[-1]["id"]
        selected += len(rows)
        if dry_run or unavailable:
            continue
        pending: list[OutboundEvent] = []
        for row in rows:
            event = event_from_outbox_row(row, replayed=True)
            if event.ordering_key in failed_keys:
                continue
            if too_large(event):
                failures.append(ReplayFailure(event.outbox_id, event.event_id, "EntryTooLarge"))
                failed_keys.add(event.ordering_key)
                continue
            pending.append(event)
        while pending:
            chunk, pending = next_chunk(pending)
            try:
                results = publisher.publish(chunk)
            except PublishUnavailable as exc:
                failures.extend(ReplayFailure(e.outbox_id, e.event_id, str(exc)) for e in chunk)
                unavailable = True
                break
            for event, result in zip(chunk, results, strict=True):
                if result.accepted:
                    published += 1
                else:
                    failures.append(ReplayFailure(event.outbox_id, event.event_id, result.error))
                    failed_keys.add(event.ordering_key)
            pending = [event for event in pending if event.ordering_key not in failed_keys]
    return ReplayReport(
        selected=selected,
        published=published,
        skipped=0 if dry_run else selected - published - len(failures),
        failures=tuple(failures),
        dry_run=dry_run,
    )


def _aware_datetime(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset; write e.g. 2026-04-01T00:00:00Z")
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m billing.outbox.replay",
        description="Publish copies of published billing events again (consumers de-duplicate on event_id).",
    )
    parser.add_argument("--execution-id", type=UUID, help="replay every published event of this execution")
    parser.add_argument("--since", type=_aware_datetime, help="replay events that occurred at or after this time")
    parser.add_argument("--until", type=_aware_datetime, help="... and before this time")
    parser.add_argument("--tenant-id", type=UUID, help="only this tenant's events")
    parser.add_argument("--dry-run", action="store_true", help="count what would be replayed, publish nothing")
    args = parser.parse_args(argv)
    if args.execution_id is None and (args.since is None or args.until is None):
        parser.error("give --execution-id, or both --since and --until")
    if args.since is not None and args.until is not None and args.since >= args.until:
        parser.error("--since must be before --until")
    bus_name = os.environ.get(names.ENV_EVENT_BUS_NAME)
    if not bus_name:
        parser.error(f"set {names.ENV_EVENT_BUS_NAME} to the event bus to publish to")

    from billing.db.connection import connect
    from billing.db.connection_provider import database_url_from_environment
    from billing.outbox.eventbridge import build_event_publisher

    with connect(database_url_from_environment(), application_name="billing-outbox-replay") as conn:
        report = replay(
            conn,
            build_event_publisher(bus_name),
            execution_id=args.execution_id,
            since=args.since,
            until=args.until,
            tenant_id=args.tenant_id,
            dry_run=args.dry_run,
        )
    print(json.dumps(report.as_dict(), default=str))
    return 0 if report.complete else 1


if __name__ == "__main__":
    sys.exit(main())
