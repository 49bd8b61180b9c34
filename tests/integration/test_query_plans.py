"""No hot query reads billing_executions, billing_execution_events or billing_outbox with a sequential scan.

On a table large enough for the planner to prefer indexes once analyzed: about 22,500 executions over 15 tenants
with their events, outbox and workflow rows (the bench's mix, billing.local.execution_seed: 1,500 of them through
every trigger, then copies of those under new ids), vacuumed and analyzed. Every query of billing.local.query_plans
(the catalogue bench/query_plans.py times at a million) runs through the engine's own code as its production role,
with parameters drawn from those rows; its statements' EXPLAIN (FORMAT JSON) plans are walked node by node, and the
transaction's table counters catch a sequential scan inside a function (the webhook's reference lookup, the refund
cap) that a plan shows only as a function call.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url, secure_database
from billing.local.execution_seed import SeedShape, multiply, seed, vacuum_analyze
from billing.local.query_plans import (
    BIG_TABLES,
    HotQuery,
    Sample,
    draw_sample,
    explain,
    hot_queries,
    recorded,
    sequential_scans_of_a_call,
)

CHECKED = 1_500
COPIES = 14


@pytest.fixture(scope="module")
def seeded_url(server_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database of this module's own, seeded and analyzed once; its admin URL."""
    name = f"billing_plans_{uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'create database "{name}" template "{migrated_template}"')
    url = make_conninfo(server_url, dbname=name)
    try:
        with connect(url) as conn:
            secure_database(conn)
        seed(url, SeedShape(executions=CHECKED, tenants=15, batch=CHECKED), connections=1)
        multiply(url, COPIES)
        vacuum_analyze(url)
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="module")
def sample(seeded_url: str) -> Sample:
    with connect(seeded_url) as admin:
        return draw_sample(admin, size=20, references=200)


@pytest.fixture(scope="module")
def role_connections(seeded_url: str) -> Iterator[dict[DatabaseRole, Connection]]:
    connections = {role: connect(login_url(seeded_url, role)) for role in (DatabaseRole.APP, DatabaseRole.WORKER)}
    try:
        yield connections
    finally:
        for conn in connections.values():
            conn.close()


def test_the_seeded_tables_are_large_enough_to_prefer_indexes(seeded_url: str) -> None:
    with connect(seeded_url) as admin:
        counts = {table: admin.execute(f"select count(*) as n from billing.{table}").fetchone() for table in BIG_TABLES}
    assert {table: row["n"] >= 20_000 for table, row in counts.items() if row} == dict.fromkeys(BIG_TABLES, True)


def _params(query: HotQuery, sample: Sample) -> list[object]:
    return list(query.params(sample))[:3]


def test_no_hot_query_plans_a_sequential_scan_of_executions_events_or_outbox(
    sample: Sample, role_connections: dict[DatabaseRole, Connection]
) -> None:
    found: dict[str, list[str]] = {}
    for query in hot_queries(sample):
        conn = role_connections[query.role]
        for param in _params(query, sample):
            plans = explain(conn, recorded(conn, query, param), analyze=False).plans
            assert plans, f"{query.name}: sent no statement"
            scanned = [table for plan in plans for table in plan.seq_scanned()]
            if scanned:
                found[query.name] = scanned
    assert found == {}


def test_no_hot_query_scans_them_sequentially_inside_functions_either(
    sample: Sample, role_connections: dict[DatabaseRole, Connection]
) -> None:
    found: dict[str, dict[str, int]] = {}
    for query in hot_queries(sample):
        for param in _params(query, sample):
            counted = sequential_scans_of_a_call(role_connections[query.role], query, param)
            if any(counted.values()):
                found[query.name] = counted
    assert found == {}
