"""`python -m billing.audit`: verify the trail, answer a regulator's question, show a proof, checkpoint, rotate keys.

    python -m billing.audit verify [--bucket B] [--key-ring-file F]
    python -m billing.audit events --resource-id pi_123 --from 2026-03-01 --to 2026-04-01
    python -m billing.audit proof 41 --tree-size 100
    python -m billing.audit checkpoint          # one audit_checkpoint run (local stack, demo)
    python -m billing.audit rotate-key          # new active checkpoint key; the old ones keep verifying

The database is DATABASE_URL_BILLING_AUDITOR, DATABASE_URL or (locally) the embedded server as billing_auditor;
checkpoint and rotate-key connect as billing_worker. The key ring comes from Secrets Manager
(AUDIT_CHECKPOINT_KEY_SECRET_ID, default billing/audit/checkpoint-keys) unless --key-ring-file names an export.
Every read of the trail made here is itself recorded in it (actor: the operating-system user).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from billing import resource_names as names
from billing.audit.events import AuditEvent, AuditEventType, AuditOutcome
from billing.audit.keys import KeyRing, SecretsManagerKeyRing, parse_key_ring, rotated
from billing.audit.queries import EventQuery, decode_cursor
from billing.audit.recorder import record_audit_event
from billing.audit.service import AuditAccess, AuditReader
from billing.audit.verify import verify
from billing.db.connection import Connection, connect
from billing.db.connection_provider import role_url_variable
from billing.db.roles import DatabaseRole, login_url


def _url(explicit: str | None, role: DatabaseRole) -> str:
    if explicit:
        return explicit
    found = os.environ.get(role_url_variable(role)) or os.environ.get("DATABASE_URL")
    if found:
        return found
    from billing.local.embedded_postgres import database_url

    return login_url(database_url(), role)


def _moment(value: str) -> datetime:
    """2026-03-01 (midnight UTC) or an RFC 3339 time with its offset."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date or an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} has no UTC offset")
    return moment


def _secrets_client() -> Any:
    import boto3

    return boto3.client("secretsmanager")


def _key_secret_id() -> str:
    return os.environ.get(names.ENV_AUDIT_CHECKPOINT_KEY_SECRET_ID) or names.AUDIT_CHECKPOINT_KEY_SECRET_NAME


def _key_ring(path: Path | None) -> KeyRing:
    if path is not None:
        return parse_key_ring(path.read_text(encoding="utf-8"))
    return SecretsManagerKeyRing(_secrets_client(), _key_secret_id()).key_ring()


def _access(request: str) -> AuditAccess:
    return AuditAccess(
        actor=f"os:{getpass.getuser()}"[:200],
        correlation_id=None,
        source=f"cli:{socket.gethostname()}"[:200],
        request=request,
    )


def _verify(args: argparse.Namespace, conn: Connection) -> int:
    store = None
    if args.bucket:
        import boto3

        from billing.audit.wiring import checkpoint_store

        store = checkpoint_store(boto3.client("s3"), args.bucket)
    report = verify(conn, _key_ring(args.key_ring_file), store)
    outcome = {"problems": str(len(report.problems)), "tree_size": str(report.tree_size)}
    record_audit_event(conn, _access("verify").event(AuditOutcome.GRANTED, "verify", outcome))
    print(report.summary())
    if report.ok:
        print("OK: every leaf, tree index and checkpoint verifies")
        return 0
    print(f"FIRST DIFFERENCE: {report.problems[0]}")
    for problem in report.problems[1:20]:
        print(f"  also: {problem}")
    if len(report.problems) > 20:
        print(f"  ... and {len(report.problems) - 20} more")
    return 1


def _events(args: argparse.Namespace, conn: Connection) -> int:
    reader = AuditReader(conn)
    after = None
    while True:
        query = EventQuery(
            tenant_id=args.tenant,
            resource_id=args.resource_id,
            event_type=args.event_type,
            occurred_from=getattr(args, "from"),
            occurred_to=args.to,
            after=after,
            limit=500,
        )
        items, cursor = reader.events(query, _access("events"))
        for item in items:
            print(json.dumps({k: v for k, v in item.items() if k != "leaf"}, sort_keys=True))
        if cursor is None:
            return 0
        after = decode_cursor(cursor)


def _proof(args: argparse.Namespace, conn: Connection) -> int:
    proof = AuditReader(conn).inclusion_proof(args.seq, args.tree_size, _access("proof"))
    print(json.dumps(proof.as_document(), indent=2, sort_keys=True))
    return 0


def _checkpoint(args: argparse.Namespace, conn: Connection) -> int:
    import boto3

    from billing.audit.sequencer import AuditCheckpointer
    from billing.audit.wiring import checkpoint_store

    bucket = args.bucket or os.environ.get(names.ENV_AUDIT_CHECKPOINTS_BUCKET)
    if not bucket:
        raise SystemExit(f"no checkpoint bucket: pass --bucket or set {names.ENV_AUDIT_CHECKPOINTS_BUCKET}")
    keys = SecretsManagerKeyRing(_secrets_client(), _key_secret_id())
    run = AuditCheckpointer(conn, keys, checkpoint_store(boto3.client("s3"), bucket)).run()
    print(json.dumps(run.as_dict()))
    return 0


def _rotate_key(args: argparse.Namespace, conn: Connection) -> int:
    source = SecretsManagerKeyRing(_secrets_client(), _key_secret_id())
    ring = rotated(source.key_ring())
    source.store(ring)
    record_audit_event(
        conn,
        AuditEvent(
            AuditEventType.KEY_ROTATED,
            AuditOutcome.SUCCEEDED,
            actor=f"os:{getpass.getuser()}"[:200],
            tenant_id=None,
            resource_type="audit_checkpoint_key",
            resource_id=ring.active,
            source=f"cli:{socket.gethostname()}"[:200],
            details={"keys_in_ring": str(len(ring.keys))},
        ),
    )
    print(f"active checkpoint key is now {ring.active}; {len(ring.keys)} keys in the ring")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m billing.audit", description="The PCI DSS audit trail.")
    parser.add_argument("--database-url", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="recompute the tree and check every checkpoint")
    check.add_argument("--bucket", default=None, help="also check the checkpoints in this S3 bucket")
    check.add_argument("--key-ring-file", type=Path, default=None, help="an exported key ring (JSON)")
    events = commands.add_parser("events", help="audit events, one JSON line each")
    events.add_argument("--resource-id", default=None)
    events.add_argument("--tenant", type=UUID, default=None)
    events.add_argument("--event-type", choices=[t.value for t in AuditEventType], default=None)
    events.add_argument("--from", type=_moment, default=None, help="inclusive: 2026-03-01 or RFC 3339")
    events.add_argument("--to", type=_moment, default=None, help="exclusive: 2026-04-01 or RFC 3339")
    proof = commands.add_parser("proof", help="the inclusion proof of tree index SEQ against a checkpoint")
    proof.add_argument("seq", type=int)
    proof.add_argument("--tree-size", type=int, required=True)
    run = commands.add_parser("checkpoint", help="sequence new entries and checkpoint (as billing_worker)")
    run.add_argument("--bucket", default=None)
    commands.add_parser("rotate-key", help="make a new checkpoint key active (as billing_worker)")
    return parser


_COMMANDS = {
    "verify": _verify,
    "events": _events,
    "proof": _proof,
    "checkpoint": _checkpoint,
    "rotate-key": _rotate_key,
}
_WORKER_COMMANDS = frozenset({"checkpoint", "rotate-key"})


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    role = DatabaseRole.WORKER if args.command in _WORKER_COMMANDS else DatabaseRole.AUDITOR
    with connect(_url(args.database_url, role), application_name="billing-audit-cli") as conn:
        return _COMMANDS[args.command](args, conn)


if __name__ == "__main__":
    sys.exit(main())
