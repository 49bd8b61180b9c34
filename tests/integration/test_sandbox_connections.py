"""The sandbox provider's kept connection: reused while a container is warm, never reused in a doubtful state."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billing.db.connection import connect
from billing.rails.sandbox import KeptConnections

pytestmark = pytest.mark.integration


def _backend(connections: KeptConnections) -> int:
    with connections() as conn:
        conn.execute("select 1")
        return conn.info.backend_pid


def test_consecutive_calls_share_one_connection(db_url: str) -> None:
    connections = KeptConnections(db_url)

    first, second = _backend(connections), _backend(connections)
    connections.close()

    assert first == second
    assert _backend(connections) != first  # closed: the next call connects anew


def test_a_call_that_raises_does_not_hand_its_connection_on(db_url: str) -> None:
    connections = KeptConnections(db_url)
    first = _backend(connections)

    with pytest.raises(RuntimeError, match="mid-call"), connections() as conn:
        conn.execute("select 1")
        raise RuntimeError("mid-call")

    assert _backend(connections) != first


def test_a_connection_left_in_a_transaction_is_not_kept(db_url: str) -> None:
    connections = KeptConnections(db_url)
    with connections() as conn:
        conn.execute("begin")
        left_open = conn.info.backend_pid

    assert _backend(connections) != left_open


def test_concurrent_calls_get_their_own_connections(db_url: str) -> None:
    connections = KeptConnections(db_url)
    with connections() as outer, connections() as inner:
        assert outer is not inner


def test_a_kept_connection_whose_server_process_went_away_is_replaced_before_use(
    db_url: str, admin_db_url: str
) -> None:
    # Kept "too long" at once: checked before every reuse, as after a quiet spell.
    connections = KeptConnections(db_url, revalidate_after=timedelta(0))
    first = _backend(connections)
    with connect(admin_db_url) as admin:
        admin.execute("select pg_terminate_backend(%s)", [first])

    second = _backend(connections)

    assert second != first
