"""The migration runner: ordered, recorded with checksums, re-runnable, refusing edited history."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from billing.db.connection import connect
from billing.db.migrations import Migration, applied_versions, apply_migrations, discover
from billing.domain.errors import MigrationChecksumMismatch


def test_apply_on_empty_database_applies_every_file_in_order(database_factory: Callable[[], str]) -> None:
    with connect(database_factory()) as conn:
        applied = apply_migrations(conn)
        assert applied == [m.version for m in discover()]
        assert applied == sorted(applied)
        assert set(applied_versions(conn)) == set(applied)


def test_apply_twice_second_run_is_a_no_op(database_factory: Callable[[], str]) -> None:
    with connect(database_factory()) as conn:
        apply_migrations(conn)
        before = conn.execute("select version, applied_at from billing_meta.schema_migrations").fetchall()
        assert apply_migrations(conn) == []
        after = conn.execute("select version, applied_at from billing_meta.schema_migrations").fetchall()
        assert before == after


def test_apply_after_applied_file_changed_refuses_with_version_named(
    database_factory: Callable[[], str],
) -> None:
    migrations = discover()
    with connect(database_factory()) as conn:
        apply_migrations(conn, migrations)
        edited = [
            *migrations[:-1],
            Migration(migrations[-1].version, migrations[-1].path, migrations[-1].sql + "\n-- x"),
        ]
        with pytest.raises(MigrationChecksumMismatch) as caught:
            apply_migrations(conn, edited)
        assert migrations[-1].version in caught.value.detail


def test_apply_with_target_stops_after_that_version(database_factory: Callable[[], str]) -> None:
    migrations = discover()
    target = migrations[1].version
    with connect(database_factory()) as conn:
        assert apply_migrations(conn, migrations, target=target) == [m.version for m in migrations[:2]]
        assert apply_migrations(conn, migrations) == [m.version for m in migrations[2:]]


def test_failing_file_rolls_back_itself_and_keeps_earlier_ones(
    database_factory: Callable[[], str], tmp_path: Path
) -> None:
    # Files run as billing_owner, which creates in the schemas it owns (not in public).
    good = Migration("20990101_good", tmp_path / "a.sql", "create table billing_meta.good_one (id int);")
    bad = Migration("20990102_bad", tmp_path / "b.sql", "create table billing_meta.half (id int); select 1/0;")
    with connect(database_factory()) as conn:
        with pytest.raises(Exception, match="division by zero"):
            apply_migrations(conn, [good, bad])
        assert set(applied_versions(conn)) == {"20990101_good"}
        assert conn.execute("select to_regclass('billing_meta.half') as t").fetchone() == {"t": None}


def test_discover_with_misnamed_file_raises(tmp_path: Path) -> None:
    (tmp_path / "create_things.sql").write_text("select 1;")
    with pytest.raises(ValueError, match="YYYYMMDD"):
        discover(tmp_path)


def test_objects_the_admin_created_are_handed_to_the_owner_on_the_next_run(
    database_factory: Callable[[], str],
) -> None:
    with connect(database_factory()) as conn:
        apply_migrations(conn)
        # As a runner before the roles existed (or an operator by hand) would have left them.
        conn.execute("create table billing.legacy_notes (tenant_id uuid primary key)")
        conn.execute("create function billing.legacy_helper() returns int language sql as 'select 1'")
        apply_migrations(conn)
        owners = conn.execute(
            "select pg_get_userbyid(relowner) as owner from pg_class where oid = 'billing.legacy_notes'::regclass"
            " union all select pg_get_userbyid(proowner) from pg_proc"
            " where oid = 'billing.legacy_helper()'::regprocedure"
        ).fetchall()
    assert owners == [{"owner": "billing_owner"}, {"owner": "billing_owner"}]


def test_runner_ends_as_the_admin_it_connected_as(database_factory: Callable[[], str]) -> None:
    with connect(database_factory()) as conn:
        before = conn.execute("select current_user as me").fetchone()
        apply_migrations(conn)
        after = conn.execute("select current_user as me").fetchone()
    assert before == after
    assert after != {"me": "billing_owner"}
