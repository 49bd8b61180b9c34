"""Shared fixtures: a real PostgreSQL per test run (embedded unless DATABASE_URL is set), fresh tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from billing.db.connection import Connection, connect
from billing.db.migrations import apply_migrations
from billing.local.embedded_postgres import database_url


@pytest.fixture(scope="session")
def server_url() -> str:
    """Admin URL of the PostgreSQL server the tests use."""
    return database_url()


@pytest.fixture(scope="session")
def database_factory(server_url: str) -> Iterator[Callable[[], str]]:
    """Creates empty, uniquely named databases and drops them all at the end of the run."""
    created: list[str] = []

    def create() -> str:
        name = f"billing_test_{uuid4().hex[:12]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'create database "{name}"')
        created.append(name)
        return make_conninfo(server_url, dbname=name)

    yield create
    with psycopg.connect(server_url, autocommit=True) as admin:
        for name in created:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def db_url(database_factory: Callable[[], str]) -> str:
    """A database with every migration applied, shared by the run; tests isolate themselves by tenant."""
    url = database_factory()
    with connect(url) as conn:
        apply_migrations(conn)
    return url


@pytest.fixture
def conn(db_url: str) -> Iterator[Connection]:
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def tenant_id() -> UUID:
    """A tenant no other test uses, so rows never leak between tests."""
    return uuid4()
