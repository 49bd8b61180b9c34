"""What billing.db.connection.connect() leaves on the server: no prepared statements (RDS Proxy would pin them)."""

from __future__ import annotations

from billing.db.connection import Connection, connect

# psycopg's default prepare_threshold is 5: a statement run more often than that on one connection is prepared.
RUNS = 10


def _prepared_statements(conn: Connection) -> list[str]:
    # pg_prepared_statements lists the statements prepared in the current session only.
    rows = conn.execute("select name from pg_prepared_statements").fetchall()
    return [str(row["name"]) for row in rows]


def _run_repeatedly(conn: Connection) -> None:
    for amount in range(RUNS):
        with conn.transaction():
            conn.execute("select %s::bigint as amount", (amount,)).fetchone()


def test_connect_never_prepares_a_statement_however_often_it_runs(db_url: str) -> None:
    with connect(db_url) as conn:
        _run_repeatedly(conn)

        assert _prepared_statements(conn) == []
        assert conn.prepare_threshold is None


def test_the_same_statements_are_prepared_with_psycopgs_default_threshold(db_url: str) -> None:
    # The probe above can fail: with psycopg's default the repeated statement shows up in pg_prepared_statements.
    with connect(db_url, prepare_threshold=5) as conn:
        _run_repeatedly(conn)

        assert len(_prepared_statements(conn)) == 1
