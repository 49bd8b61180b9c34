"""Migration runner for sql/: ordered files, recorded with a checksum, each applied in its own transaction.

Re-running is a no-op. An applied file whose content changed is refused: production and the repository would
otherwise disagree about what the schema is. Concurrent runners (two deploys) serialise on an advisory lock.

The runner connects as the cluster's admin, ensures the roles (billing.db.roles), hands anything of ours the admin
still owns to billing_owner, and applies every file as billing_owner (SET ROLE): the owner owns everything, and
the run-time roles get only what the files grant them.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from billing.db.connection import Connection, connect, session_options
from billing.db.roles import DatabaseRole, ensure_roles, hand_over_ownership
from billing.domain.errors import MigrationChecksumMismatch
from billing.paths import migrations_dir

_FILENAME = re.compile(r"^(?P<version>\d{8}_[a-z0-9_]+)\.sql$")
# Arbitrary but fixed: every runner of this schema takes the same advisory lock.
_ADVISORY_LOCK_KEY = 0x6269_6C6C  # "bill"

_BOOKKEEPING = """
create schema if not exists billing_meta;
create table if not exists billing_meta.schema_migrations (
    version    text primary key,
    checksum   text not null,
    applied_at timestamptz not null default now()
);
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path | None = None) -> list[Migration]:
    """All migration files in version order; anything else in the folder is an error, not silently skipped."""
    folder = directory or migrations_dir()
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILENAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration files are named YYYYMMDD_snake_case.sql")
        migrations.append(Migration(match["version"], path, path.read_text(encoding="utf-8")))
    return migrations


def applied_versions(conn: Connection) -> dict[str, str]:
    """version -> checksum of every migration already applied."""
    rows = conn.execute("select version, checksum from billing_meta.schema_migrations").fetchall()
    return {row["version"]: row["checksum"] for row in rows}


def apply_migrations(
    conn: Connection,
    migrations: Iterable[Migration] | None = None,
    *,
    target: str | None = None,
    passwords: Mapping[DatabaseRole, str] | None = None,
) -> list[str]:
    """Apply pending migrations up to and including `target` (all if None); return the versions applied.

    `conn` is the cluster admin's; `passwords` are the login users' (see billing.db.roles.ensure_roles).
    """
    pending = list(discover() if migrations is None else migrations)
    applied_now: list[str] = []
    conn.execute("select pg_advisory_lock(%s)", [_ADVISORY_LOCK_KEY])
    try:
        with conn.transaction():
            ensure_roles(conn, passwords)
            hand_over_ownership(conn)
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(DatabaseRole.OWNER)))
        with conn.transaction():
            conn.execute(_BOOKKEEPING)
        done = applied_versions(conn)
        for migration in pending:
            if target is not None and migration.version > target:
                break
            recorded = done.get(migration.version)
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationChecksumMismatch(
                        f"migration {migration.version} was applied with checksum {recorded[:12]}... but the "
                        f"file now hashes to {migration.checksum[:12]}...; add a new migration instead of "
                        "editing an applied one",
                        version=migration.version,
                    )
                continue
            # One transaction per file: a failing file names itself and leaves the earlier ones applied.
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "insert into billing_meta.schema_migrations (version, checksum) values (%s, %s)",
                    [migration.version, migration.checksum],
                )
                _audit_migration(conn, migration)
            applied_now.append(migration.version)
    finally:
        if not conn.broken:
            conn.execute("reset role")
            conn.execute("select pg_advisory_unlock(%s)", [_ADVISORY_LOCK_KEY])
    return applied_now


def _audit_migration(conn: Connection, migration: Migration) -> None:
    """One audit row per applied file, in its transaction, once the audit trail exists (the migrations before
    sql/20261210_billing_audit_trail.sql ran before there was a trail to write to)."""
    from billing.audit import record_audit_event
    from billing.audit.hooks import migration_applied

    row = conn.execute("select to_regclass('billing_audit.entries') is not null as present").fetchone()
    if row and row["present"]:
        record_audit_event(conn, migration_applied(migration.version, migration.checksum))


def main(argv: list[str] | None = None) -> int:
    from billing.local.embedded_postgres import database_url

    parser = argparse.ArgumentParser(description="Apply sql/ migrations.")
    parser.add_argument("--database-url", default=None, help="defaults to DATABASE_URL or the embedded server")
    parser.add_argument("--target", default=None, help="stop after this version")
    args = parser.parse_args(argv)
    # Migrations may scan whole tables (backfills): no statement timeout, but never wait forever on a lock.
    options = session_options(statement_timeout_ms=0, lock_timeout_ms=30_000)
    with connect(args.database_url or database_url(), application_name="billing-migrations", options=options) as conn:
        applied = apply_migrations(conn, target=args.target)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
