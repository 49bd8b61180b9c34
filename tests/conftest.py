"""Shared fixtures: a real PostgreSQL per test run (embedded unless DATABASE_URL is set), fresh tenants.

Tests connect as the roles production uses (billing.db.roles): `db_url`/`conn` are billing_app, the execute and
webhook functions' role, on a database shared by the run; `private_db_url`/`db` are billing_worker, the
cross-tenant workers' role, on a database of the test's own, with `private_app_url`/`app_db` beside it for what
the app role writes there. The admin (`admin_db_url`, `private_admin_url`) only migrates and inspects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from uuid import UUID, uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from billing.db.connection import Connection, connect
from billing.db.migrations import apply_migrations
from billing.db.roles import DatabaseRole, login_url, secure_database
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
def admin_db_url(database_factory: Callable[[], str]) -> str:
    """A database with every migration applied, shared by the run (tests isolate themselves by tenant); the admin's
    URL, for migrating and inspecting only."""
    url = database_factory()
    with connect(url) as conn:
        apply_migrations(conn)
    return url


@pytest.fixture(scope="session")
def db_url(admin_db_url: str) -> str:
    """The shared database as billing_app."""
    return login_url(admin_db_url, DatabaseRole.APP)


@pytest.fixture(scope="session")
def worker_db_url(admin_db_url: str) -> str:
    """The shared database as billing_worker."""
    return login_url(admin_db_url, DatabaseRole.WORKER)


@pytest.fixture(scope="session")
def migrated_template(database_factory: Callable[[], str]) -> str:
    """Name of a migrated database that private databases are copied from (faster than migrating each)."""
    url = database_factory()
    with connect(url) as conn:
        apply_migrations(conn)
    return str(conninfo_to_dict(url)["dbname"])


@pytest.fixture
def private_admin_url(server_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database of this test's own, for code that scans every tenant (workers, the relay); admin URL."""
    name = f"billing_private_{uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'create database "{name}" template "{migrated_template}"')
    url = make_conninfo(server_url, dbname=name)
    with connect(url) as conn:
        secure_database(conn)
    yield url
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def private_db_url(private_admin_url: str) -> str:
    """The test's private database as billing_worker."""
    return login_url(private_admin_url, DatabaseRole.WORKER)


@pytest.fixture
def private_app_url(private_admin_url: str) -> str:
    """The test's private database as billing_app."""
    return login_url(private_admin_url, DatabaseRole.APP)


@pytest.fixture
def db(private_db_url: str) -> Iterator[Connection]:
    """billing_worker's connection to the test's private database (see private_admin_url)."""
    with connect(private_db_url) as connection:
        yield connection


@pytest.fixture
def app_db(private_app_url: str) -> Iterator[Connection]:
    """billing_app's connection to the test's private database."""
    with connect(private_app_url) as connection:
        yield connection


@pytest.fixture
def private_admin(private_admin_url: str) -> Iterator[Connection]:
    """The admin's connection to the test's private database: inspection only."""
    with connect(private_admin_url) as connection:
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
    """billing_app's connection to the shared database."""
    with connect(db_url) as connection:
        yield connection


@pytest.fixture
def admin(admin_db_url: str) -> Iterator[Connection]:
    """The admin's connection to the shared database: inspection only, never the code under test."""
    with connect(admin_db_url) as connection:
        yield connection


@pytest.fixture
def tenant_id() -> UUID:
    """A tenant no other test uses, so rows never leak between tests."""
    return uuid4()
