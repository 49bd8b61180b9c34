"""Shared fixtures: a real PostgreSQL per test run (embedded unless DATABASE_URL is set), fresh tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billing.db.connection import Connection, connect
from billing.db.migrations import apply_migrations
from billing.local.embedded_postgres import database_url

AWS_REGION = "eu-west-1"


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


@pytest.fixture(scope="session")
def migrated_template(database_factory: Callable[[], str]) -> str:
    """Name of a migrated database that private databases are copied from (faster than migrating each)."""
    url = database_factory()
    with connect(url) as conn:
        apply_migrations(conn)
    return str(conninfo_to_dict(url)["dbname"])


@pytest.fixture
def private_db_url(server_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database of this test's own, for code that scans every tenant (workers, the relay)."""
    name = f"billing_private_{uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'create database "{name}" template "{migrated_template}"')
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def db(private_db_url: str) -> Iterator[Connection]:
    """A connection to the test's private database (see private_db_url)."""
    with connect(private_db_url) as connection:
        yield connection


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's fake credentials and a region, so nothing can ever reach a real account; returns the region."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": AWS_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    return AWS_REGION


@pytest.fixture
def conn(db_url: str) -> Iterator[Connection]:
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def tenant_id() -> UUID:
    """A tenant no other test uses, so rows never leak between tests."""
    return uuid4()
