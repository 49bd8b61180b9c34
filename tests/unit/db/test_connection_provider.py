from __future__ import annotations

from typing import Any

import psycopg
import pytest

import billing.db.connection_provider as module
from billing.db.connection_provider import ConnectionProvider


class _FakeConnection:
    closed = False
    broken = False


def test_stale_password_after_rotation_refreshes_secret_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def url_factory(*, refresh: bool = False) -> str:
        asked.append(refresh)
        return "postgresql://new-password" if refresh else "postgresql://old-password"

    def fake_connect(url: str, **_: Any) -> _FakeConnection:
        if "old" in url:
            raise psycopg.errors.InvalidPassword("password authentication failed")
        return _FakeConnection()

    monkeypatch.setattr(module, "connect", fake_connect)
    provider = ConnectionProvider(url_factory)
    first = provider.get()
    assert isinstance(first, _FakeConnection)
    assert provider.get() is first  # reused while warm
    assert asked == [False, True]


def test_other_connection_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_connect(url: str, **_: Any) -> _FakeConnection:
        raise psycopg.errors.ConnectionException("server closed the connection")

    monkeypatch.setattr(module, "connect", fake_connect)
    with pytest.raises(psycopg.errors.ConnectionException):
        ConnectionProvider(lambda *, refresh=False: "postgresql://x").get()


def test_broken_connection_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[_FakeConnection] = []

    def fake_connect(url: str, **_: Any) -> _FakeConnection:
        opened.append(_FakeConnection())
        return opened[-1]

    monkeypatch.setattr(module, "connect", fake_connect)
    provider = ConnectionProvider(lambda *, refresh=False: "postgresql://x")
    first = provider.get()
    opened[0].broken = True
    assert provider.get() is not first
    assert len(opened) == 2
