"""Embedded PostgreSQL (the pgserver package) for local runs and tests when DATABASE_URL is not set."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from billing.paths import local_state_dir


def _data_dir() -> str:
    state = local_state_dir()
    state.mkdir(parents=True, exist_ok=True)
    return str(state / "pgdata")


def embedded_database_url() -> str:
    """Start the embedded server if it is not running (reuse it if it is) and return its URL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on headless machines
        import pgserver  # type: ignore[import-untyped,unused-ignore]

        # cleanup_mode=None keeps the server running after this process exits so the next command reuses it.
        server = pgserver.get_server(_data_dir(), cleanup_mode=None)  # type: ignore[attr-defined]
    return str(server.get_uri())


def database_url() -> str:
    """DATABASE_URL when set (any PostgreSQL, Aurora in production), else the embedded server."""
    return os.environ.get("DATABASE_URL") or embedded_database_url()


def stop_embedded() -> None:
    """Stop the embedded server if it is running."""
    import subprocess
    from pathlib import Path

    import pgserver

    pg_ctl = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
    if (Path(_data_dir()) / "postmaster.pid").exists():
        subprocess.run([str(pg_ctl), "-D", _data_dir(), "stop", "-m", "fast"], check=False)  # noqa: S603


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
