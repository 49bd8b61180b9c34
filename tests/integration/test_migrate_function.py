"""The migrate function: applies sql/ as the cluster admin and sets each login user's password from that user's own
secret (moto Secrets Manager, a real PostgreSQL).

The login users are cluster-wide and every test logs in with their development passwords, so a test that runs the
real migrations keeps those passwords in its secrets; the tests that prove which value is written stop short of the
database by recording what the function hands to apply_migrations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from billing import resource_names as names
from billing.db.connection import Connection, connect
from billing.db.migrations import Migration, discover
from billing.db.roles import LOGIN_USERS, DatabaseRole, login_url
from billing.paths import migrations_dir
from billing.resource_names import FunctionName
from tests.lambda_harness import call, load_handler, set_function_environment


@pytest.fixture
def secrets(aws_credentials: str) -> Iterator[Any]:
    """moto's Secrets Manager, where the login users' secrets live."""
    with mock_aws():
        yield boto3.client("secretsmanager")


def _login_secret(secrets: Any, role: DatabaseRole, password: str, *, username: str | None = None) -> str:
    """An RDS-format secret as the data stack generates it and the cluster attachment completes it; its ARN."""
    user = LOGIN_USERS[role]
    value = {
        "username": username or user.name,
        "password": password,
        "engine": "postgres",
        "host": "cluster.invalid",
        "port": 5432,
        "dbname": names.DATABASE_NAME,
    }
    created = secrets.create_secret(Name=names.database_login_secret_name(user.name), SecretString=json.dumps(value))
    arn: str = created["ARN"]
    return arn


def _migrate_function(monkeypatch: pytest.MonkeyPatch, admin_url: str, arns: Mapping[DatabaseRole, str]) -> ModuleType:
    """A cold migrate container with the environment the service stack gives it."""
    set_function_environment(
        monkeypatch,
        FunctionName.MIGRATE,
        {
            "DATABASE_URL": admin_url,
            names.ENV_MIGRATIONS_DIR: str(migrations_dir()),
            names.ENV_DATABASE_LOGIN_SECRET_ARNS: json.dumps({role.value: arn for role, arn in arns.items()}),
        },
    )
    return load_handler("migrate")


class _RecordedMigrations:
    """Stands in for apply_migrations: keeps what the function would apply and the passwords it would set."""

    def __init__(self) -> None:
        self.passwords: list[Mapping[DatabaseRole, str] | None] = []

    def __call__(
        self,
        conn: Connection,
        migrations: Sequence[Migration],
        *,
        passwords: Mapping[DatabaseRole, str] | None = None,
    ) -> list[str]:
        assert [m.version for m in migrations] == [m.version for m in discover()]
        self.passwords.append(passwords)
        return []


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Callable[[ModuleType], _RecordedMigrations]:
    def install(handler: ModuleType) -> _RecordedMigrations:
        recorder = _RecordedMigrations()
        monkeypatch.setattr(handler, "apply_migrations", recorder)
        return recorder

    return install


def test_migrate_sets_each_login_users_password_from_its_own_secret(
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_factory: Callable[[], str],
    recorded: Callable[[ModuleType], _RecordedMigrations],
) -> None:
    # Given each login user's secret holding a password of its own
    arns = {role: _login_secret(secrets, role, f"{role}-password-from-its-secret") for role in LOGIN_USERS}
    handler = _migrate_function(monkeypatch, database_factory(), arns)
    migrations = recorded(handler)

    # When the deploy trigger invokes the function
    call(handler, {})

    # Then each user is given the password its own secret holds, none a development default
    assert migrations.passwords == [{role: f"{role}-password-from-its-secret" for role in LOGIN_USERS}]


def test_migrate_in_a_warm_container_writes_the_password_a_rotation_left_in_the_secret(
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_factory: Callable[[], str],
    recorded: Callable[[ModuleType], _RecordedMigrations],
) -> None:
    arns = {role: _login_secret(secrets, role, f"{role}-before-rotation") for role in LOGIN_USERS}
    handler = _migrate_function(monkeypatch, database_factory(), arns)
    migrations = recorded(handler)
    call(handler, {})

    # A single-user rotation sets the new password in the database, then makes it the secret's current value.
    rotated = json.loads(secrets.get_secret_value(SecretId=arns[DatabaseRole.WORKER])["SecretString"])
    secrets.put_secret_value(SecretId=arns[DatabaseRole.WORKER], SecretString=json.dumps(rotated | {"password": "new"}))
    call(handler, {})

    expected = {role: f"{role}-before-rotation" for role in LOGIN_USERS} | {DatabaseRole.WORKER: "new"}
    assert migrations.passwords[-1] == expected


def test_migrate_refuses_a_secret_that_belongs_to_another_user_before_touching_the_database(
    secrets: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_factory: Callable[[], str],
    recorded: Callable[[ModuleType], _RecordedMigrations],
) -> None:
    # The worker's ARN given as the app's: the app user would get the worker's password.
    arns = {role: _login_secret(secrets, role, f"{role}-password") for role in LOGIN_USERS}
    handler = _migrate_function(monkeypatch, database_factory(), arns | {DatabaseRole.APP: arns[DatabaseRole.WORKER]})
    migrations = recorded(handler)

    with pytest.raises(RuntimeError, match="billing_worker_user's, not billing_app_user's"):
        call(handler, {})
    assert migrations.passwords == []


def test_migrate_refuses_to_start_without_a_secret_for_every_login_user(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, database_factory: Callable[[], str]
) -> None:
    # Without a secret the user would keep its development password, which is published in the repository.
    only_app = {DatabaseRole.APP: _login_secret(secrets, DatabaseRole.APP, "app-password")}
    with pytest.raises(RuntimeError, match=names.ENV_DATABASE_LOGIN_SECRET_ARNS):
        _migrate_function(monkeypatch, database_factory(), only_app)


def test_migrate_applies_every_migration_and_each_login_user_logs_in_with_its_secret(
    secrets: Any, monkeypatch: pytest.MonkeyPatch, database_factory: Callable[[], str]
) -> None:
    # Given an empty database and secrets holding the passwords the rest of the run logs in with (see the docstring)
    admin_url = database_factory()
    arns = {role: _login_secret(secrets, role, user.dev_password) for role, user in LOGIN_USERS.items()}
    handler = _migrate_function(monkeypatch, admin_url, arns)

    # When the function runs, then every migration is applied
    assert call(handler, {}) == {"applied": [m.version for m in discover()]}
    # And each login user logs in with its secret's password as itself, a member of its role only
    for role, arn in arns.items():
        secret = json.loads(secrets.get_secret_value(SecretId=arn)["SecretString"])
        with connect(login_url(admin_url, role, password=secret["password"])) as conn:
            me = conn.execute("select current_user as me").fetchone()
            member_of = {
                other
                for other in DatabaseRole
                if conn.execute("select pg_has_role(current_user, %s, 'member') as yes", [other.value]).fetchone()
                == {"yes": True}
            }
        assert me == {"me": LOGIN_USERS[role].name}
        assert member_of == {role}
    # And a second run applies nothing new
    assert call(handler, {}) == {"applied": []}
