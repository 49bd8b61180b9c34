"""One database connection per Lambda container: opened lazily, reused while warm, replaced when broken."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import make_conninfo

from billing import resource_names as names
from billing.db.connection import Connection, connect


def role_url_variable(role: str) -> str:
    """The variable naming one role's URL when several functions share one process (the local stack)."""
    return f"DATABASE_URL_{role.upper()}"


def database_url_from_environment(
    get_secret: Callable[[str], dict[str, Any]] | None = None, *, refresh: bool = False, role: str | None = None
) -> str:
    """The role's own URL (DATABASE_URL_<ROLE>) or DATABASE_URL when set (local runs, tests); otherwise RDS Proxy
    host + the function's RDS-format secret (AWS, where each function is given the secret of its own login user).

    A missing setting is an error, never a silent default: a function must not guess which database to use.
    """
    url = (os.environ.get(role_url_variable(role)) if role else None) or os.environ.get("DATABASE_URL")
    if url:
        return url
    try:
        secret_arn = os.environ[names.ENV_DATABASE_SECRET_ARN]
        host = os.environ[names.ENV_DATABASE_PROXY_ENDPOINT]
        dbname = os.environ[names.ENV_DATABASE_NAME]
    except KeyError as missing:
        raise RuntimeError(f"database not configured: set DATABASE_URL or {missing.args[0]}") from None
    if get_secret is None:
        from aws_lambda_powertools.utilities import parameters

        def get_secret(arn: str) -> dict[str, Any]:
            # Cached for 5 minutes; after a rotation the first failed login asks again with refresh=True.
            value: dict[str, Any] = parameters.get_secret(arn, transform="json", max_age=0 if refresh else 300)
            return value

    secret = get_secret(secret_arn)
    return make_conninfo(
        host=host,
        port=secret.get("port", 5432),
        dbname=dbname,
        user=secret["username"],
        password=secret["password"],
        sslmode="require",
    )


class UrlFactory(Protocol):
    def __call__(self, *, refresh: bool = False) -> str: ...


class _EnvironmentUrl:
    def __init__(self, role: str | None) -> None:
        self._role = role

    def __call__(self, *, refresh: bool = False) -> str:
        return database_url_from_environment(refresh=refresh, role=self._role)


class ConnectionProvider:
    """Hands out the container's connection, reconnecting if the previous one died (failover, idle timeout).

    `role` names the database role the function connects as (billing.db.roles.FUNCTION_ROLES): locally, where
    every function shares one process, it picks that role's URL from the environment.
    """

    def __init__(self, url_factory: UrlFactory | None = None, *, role: str | None = None, **connect_kwargs: Any):
        self._url_factory = url_factory or _EnvironmentUrl(role)
        self._connect_kwargs = connect_kwargs
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def get(self) -> Connection:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._open()
            return self._conn

    def _open(self) -> Connection:
        try:
            return connect(self._url_factory(), **self._connect_kwargs)
        except psycopg.errors.InvalidPassword:
            # A rotated password: the cached secret is stale. Ask Secrets Manager again, once.
            return connect(self._url_factory(refresh=True), **self._connect_kwargs)

    def discard(self) -> None:
        """Drop the connection after an error that may have left it unusable; the next get() reconnects."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
