"""Embedded PostgreSQL (the pgserver package) for local runs and tests when DATABASE_URL is not set."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import warnings
from pathlib import Path

import psycopg

from billing.paths import local_state_dir

# Every Lambda container keeps one connection, and the local stack and the test suite run many containers
# (and 32-thread races) against this one server: PostgreSQL's default of 100 is too tight.
MAX_CONNECTIONS = 300


def _data_dir() -> str:
    state = local_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return str(state / "pgdata")


def embedded_database_url() -> str:
    """Start the embedded server if it is not running (reuse it if it is) and return its URL.

    Serialised across processes (the test suite runs in parallel workers): the first boot of a data directory
    restarts the server once, which another process must not race.
    """
    state = local_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "embedded-postgres.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_embedded()


def _start_embedded() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        # cleanup_mode=None keeps the server running after this process exits so the next command reuses it.
        server = pgserver.get_server(_data_dir(), cleanup_mode=None)  # type: ignore[attr-defined]
    url = str(server.get_uri())
    _ensure_max_connections(url, server.system_user)
    return url


def _ensure_max_connections(url: str, system_user: str | None) -> None:
    """Raise max_connections once, on the first boot of a data directory (it needs a restart)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("select current_setting('max_connections')::int").fetchone()
        if row is not None and row[0] >= MAX_CONNECTIONS:
            return
        conn.execute(f"alter system set max_connections = {MAX_CONNECTIONS}")
    # pg_ctl restart reuses the options the server was started with (socket directory, no TCP); as root it must
    # run as the unprivileged user pgserver created for the server.
    _pg_ctl(["-w", "-m", "fast", "restart"], system_user)


def _pg_ctl(args: list[str], system_user: str | None) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined,import-untyped,unused-ignore]

    pg_ctl(args, pgdata=Path(_data_dir()), user=system_user, timeout=60)


def database_url() -> str:
    """DATABASE_URL when set (any PostgreSQL, Aurora in production), else the embedded server."""
    return os.environ.get("DATABASE_URL") or embedded_database_url()


def fresh_database(server_url: str, name: str) -> str:
    """Drop and recreate database `name` on the server, apply every migration, return its admin URL (benches)."""
    from psycopg.conninfo import make_conninfo

    from billing.db.connection import connect
    from billing.db.migrations import apply_migrations

    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')
        admin.execute(f'create database "{name}"')
    url = make_conninfo(server_url, dbname=name)
    with connect(url) as conn:
        apply_migrations(conn)
    return url


def stop_embedded() -> None:
    """Stop the embedded server if it is running."""
    data = Path(_data_dir())
    if (data / "postmaster.pid").exists():
        owner = data.owner()
        _pg_ctl(["-w", "-m", "fast", "stop"], owner if os.geteuid() == 0 and owner != "root" else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["url", "stop"])
    args = parser.parse_args(argv)
    if args.command == "url":
        print(database_url())
    else:
        stop_embedded()
    return 0


if __name__ == "__main__":
    sys.exit(main())
