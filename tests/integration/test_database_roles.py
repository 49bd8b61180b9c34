"""The catalog says what the run-time roles can do: nothing they own, no DDL, no TRUNCATE or DELETE, no way out of
their tenant. Each rule is read from the catalog over every object, so a new table cannot slip past it."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import psycopg
import pytest

from billing.db.connection import Connection, connect
from billing.db.roles import FUNCTION_ROLES, LOGIN_USERS, OWNED_SCHEMAS, RUNTIME_ROLES, DatabaseRole, login_url
from billing.resource_names import FunctionName
from tests.integration.raw_sql import S, execution_in, provider_reversal_of, role_conn
from tests.integration.table_kinds import PLATFORM_TABLES, REFERENCE_TABLES

__all__ = ["role_conn"]  # a fixture, imported for the tests below


@pytest.fixture(params=RUNTIME_ROLES, ids=[role.value for role in RUNTIME_ROLES])
def runtime_conn(request: pytest.FixtureRequest, admin_db_url: str) -> Iterator[Connection]:
    """A connection as every run-time role in turn."""
    with connect(login_url(admin_db_url, request.param)) as connection:
        yield connection


OUR_ROLES = [role.value for role in DatabaseRole] + [user.name for user in LOGIN_USERS.values()]
RUNTIME_NAMES = [role.value for role in RUNTIME_ROLES] + [user.name for user in LOGIN_USERS.values()]
DENIED = "42501"

_OWNED_OBJECTS = """
select 'schema ' || nspname as object, pg_get_userbyid(nspowner) as owner from pg_namespace
 where nspname = any(%(schemas)s)
union all
select c.relkind::text || ' ' || c.oid::regclass, pg_get_userbyid(c.relowner) from pg_class c
  join pg_namespace n on n.oid = c.relnamespace where n.nspname = any(%(schemas)s)
union all
select 'function ' || p.oid::regprocedure, pg_get_userbyid(p.proowner) from pg_proc p
  join pg_namespace n on n.oid = p.pronamespace where n.nspname = any(%(schemas)s)
union all
select 'type ' || t.oid::regtype, pg_get_userbyid(t.typowner) from pg_type t
  join pg_namespace n on n.oid = t.typnamespace where n.nspname = any(%(schemas)s)
"""

_TABLES = """
select c.oid::regclass::text as name, c.relname, n.nspname as schema, c.relrowsecurity, c.relforcerowsecurity,
       exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id'
                                              and not a.attisdropped) as has_tenant,
       array(select polname::text from pg_policy where polrelid = c.oid order by 1) as policies
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p')
 order by 1
"""


def _tables(admin: Connection) -> list[dict[str, object]]:
    return admin.execute(_TABLES, {"schemas": list(OWNED_SCHEMAS)}).fetchall()


def test_billing_owner_owns_every_object_and_no_runtime_role_owns_anything(admin: Connection) -> None:
    objects = admin.execute(_OWNED_OBJECTS, {"schemas": list(OWNED_SCHEMAS)}).fetchall()
    assert len(objects) > 50
    assert [o for o in objects if o["owner"] != DatabaseRole.OWNER] == []
    owned_elsewhere = admin.execute(
        "select count(*) as n from pg_class where pg_get_userbyid(relowner) = any(%(roles)s)"
        " union all select count(*) from pg_proc where pg_get_userbyid(proowner) = any(%(roles)s)"
        " union all select count(*) from pg_namespace where pg_get_userbyid(nspowner) = any(%(roles)s)",
        {"roles": RUNTIME_NAMES},
    ).fetchall()
    assert [row["n"] for row in owned_elsewhere] == [0, 0, 0]


def test_no_role_of_ours_has_a_privileged_attribute(admin: Connection) -> None:
    rows = admin.execute(
        "select rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication, rolcanlogin"
        " from pg_roles where rolname = any(%s) order by rolname",
        [OUR_ROLES],
    ).fetchall()
    assert {row["rolname"] for row in rows} == set(OUR_ROLES)
    privileged = [r["rolname"] for r in rows if r["rolsuper"] or r["rolbypassrls"] or r["rolcreaterole"]]
    privileged += [r["rolname"] for r in rows if r["rolcreatedb"] or r["rolreplication"]]
    assert privileged == []
    # Only the login users log in; the groups hold the privileges.
    assert {r["rolname"] for r in rows if r["rolcanlogin"]} == {user.name for user in LOGIN_USERS.values()}


def test_login_users_belong_to_exactly_their_group(admin: Connection) -> None:
    for user in LOGIN_USERS.values():
        rows = admin.execute(
            "select r.rolname from pg_auth_members m join pg_roles r on r.oid = m.roleid"
            " where m.member = (select oid from pg_roles where rolname = %s)",
            [user.name],
        ).fetchall()
        assert [row["rolname"] for row in rows] == [user.role.value]


@pytest.mark.parametrize("privilege", ["TRUNCATE", "DELETE", "REFERENCES", "TRIGGER"])
def test_no_runtime_role_holds_a_destructive_privilege_on_any_table(admin: Connection, privilege: str) -> None:
    holders = admin.execute(
        "select t.oid::regclass::text as name, r as role from pg_class t"
        " join pg_namespace n on n.oid = t.relnamespace cross join unnest(%(roles)s::text[]) r"
        " where n.nspname = any(%(schemas)s) and t.relkind in ('r', 'p')"
        "   and has_table_privilege(r, t.oid, %(privilege)s)",
        {"roles": RUNTIME_NAMES, "schemas": list(OWNED_SCHEMAS), "privilege": privilege},
    ).fetchall()
    assert holders == []


def test_every_tenant_table_has_row_security_enabled_forced_and_a_policy(admin: Connection) -> None:
    tables = [t for t in _tables(admin) if t["schema"] == "billing"]
    assert {t["relname"] for t in tables} >= {"billing_executions", "billing_outbox", "contract_term_datetimes"}
    problems = []
    for table in tables:
        if table["relname"] in PLATFORM_TABLES:
            if table["relrowsecurity"] or table["policies"]:
                problems.append(f"{table['name']}: platform-wide, yet given row-level security")
            continue
        if not table["has_tenant"]:
            if table["relname"] not in REFERENCE_TABLES:
                problems.append(f"{table['name']}: no tenant_id and not a reference table")
            continue
        if not (table["relrowsecurity"] and table["relforcerowsecurity"]):
            problems.append(f"{table['name']}: row-level security not enabled and forced")
        if "tenant_isolation" not in table["policies"]:  # type: ignore[operator]
            problems.append(f"{table['name']}: no tenant_isolation policy")
    assert problems == []


def test_reference_tables_are_read_only_for_runtime_roles(admin: Connection) -> None:
    rows = admin.execute(
        "select c.relname, r as role, p as privilege from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " cross join unnest(%(roles)s::text[]) r cross join unnest(array['INSERT', 'UPDATE', 'DELETE']) p"
        " where n.nspname = 'billing' and c.relname = any(%(tables)s) and has_table_privilege(r, c.oid, p)",
        {"roles": RUNTIME_NAMES, "tables": list(REFERENCE_TABLES)},
    ).fetchall()
    assert rows == []


def test_security_definer_functions_are_the_owners_with_a_fixed_search_path(admin: Connection) -> None:
    rows = admin.execute(
        "select p.oid::regprocedure::text as name, pg_get_userbyid(p.proowner) as owner, p.proconfig"
        " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
        " where n.nspname = any(%s) and p.prosecdef",
        [list(OWNED_SCHEMAS)],
    ).fetchall()
    assert rows
    assert [r["name"] for r in rows if r["owner"] != DatabaseRole.OWNER] == []
    assert [r["name"] for r in rows if not any(c.startswith("search_path=") for c in r["proconfig"] or [])] == []


def test_runtime_roles_cannot_run_the_owners_maintenance_functions(admin: Connection) -> None:
    callable_by_runtime = admin.execute(
        "select r, p from unnest(%s::text[]) r,"
        " unnest(array['billing.grant_dml(regclass,text,text)', 'billing.enable_tenant_isolation(regclass)']) p"
        " where has_function_privilege(r, p, 'EXECUTE')",
        [RUNTIME_NAMES],
    ).fetchall()
    assert callable_by_runtime == []


@pytest.mark.parametrize(
    "statement",
    [
        "alter table billing.billing_executions disable trigger all",
        "alter table billing.billing_executions disable trigger billing_executions_immutability",
        "alter table billing.billing_outbox no force row level security",
        "alter table billing.billing_outbox disable row level security",
        "drop trigger billing_executions_immutability on billing.billing_executions",
        "drop policy tenant_isolation on billing.billing_executions",
        "create policy open_door on billing.billing_executions using (true)",
        "alter table billing.billing_executions drop constraint billing_executions_amount_positive",
        "create or replace function billing.row_visible(row_tenant uuid) returns boolean language sql as 'select true'",
        "create table billing.shadow (id int)",
        "create temporary table shadow (id int)",
        "truncate billing.billing_execution_events",
        "insert into billing.execution_status_transitions values ('completed', 'pending')",
        "set role billing_owner",
        "set session authorization billing_owner",
        "alter role billing_app_user bypassrls",
        "alter role current_user bypassrls",
        "grant billing_worker to current_user",
    ],
)
def test_runtime_roles_cannot_alter_disable_or_escape_the_guards(runtime_conn: Connection, statement: str) -> None:
    with pytest.raises(psycopg.Error) as caught, runtime_conn.transaction():
        runtime_conn.execute(statement)
    assert caught.value.sqlstate == DENIED


def test_the_app_role_cannot_become_the_worker(conn: Connection) -> None:
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute("set role billing_worker")
    assert caught.value.sqlstate == DENIED


@pytest.fixture
def other_tenants_rows(conn: Connection) -> UUID:
    """A tenant with a row in every tenant table: executions, events, outbox, workflow, reversals."""
    tenant = uuid4()
    execution = execution_in(conn, tenant, S.COMPLETED)
    provider_reversal_of(conn, execution)
    return tenant


# Every way a session can try to widen its scope: none may show the app role a row of another tenant.
_ESCAPES = {
    "no scope at all": [],
    "system scope, transaction-local": ["select set_config('billing.scope', 'system', true)"],
    "system scope, session-wide": ["select set_config('billing.scope', 'system', false)"],
    "set command": ["set billing.scope = 'system'"],
    "empty tenant with system scope": [
        "select set_config('billing.tenant_id', '', true), set_config('billing.scope', 'system', true)"
    ],
    "own tenant plus system scope": [
        "select set_config('billing.tenant_id', %(mine)s, true), set_config('billing.scope', 'system', true)"
    ],
    "reset everything": ["reset all", "select set_config('billing.scope', 'system', true)"],
}


@pytest.mark.parametrize("escape", list(_ESCAPES))
def test_app_role_sees_zero_rows_of_another_tenant_whatever_it_sets(
    admin: Connection, db_url: str, other_tenants_rows: UUID, escape: str
) -> None:
    tables = [str(t["name"]) for t in _tables(admin) if t["has_tenant"] and t["schema"] == "billing"]
    seeded = {
        name: admin.execute(f"select count(*) as n from {name} where tenant_id = %s", [other_tenants_rows]).fetchone()
        for name in tables
    }
    # Worker bookkeeping tables (leases) have no rows for a finished execution; every history table has some.
    history = {"billing.billing_executions", "billing.billing_execution_events", "billing.billing_outbox",
               "billing.contract_term_datetimes", "billing.execution_reversals"}  # fmt: skip
    assert all(row is not None and row["n"] > 0 for name, row in seeded.items() if name in history), seeded
    assert history <= set(seeded)
    seen: dict[str, object] = {}
    with connect(db_url) as app:
        for name in tables:
            try:
                with app.transaction():
                    for statement in _ESCAPES[escape]:
                        app.execute(statement, {"mine": str(uuid4())})
                    row = app.execute(f"select count(*) as n from {name} where tenant_id = %s", [other_tenants_rows])
                    seen[name] = row.fetchone()
            except psycopg.errors.InsufficientPrivilege:
                seen[name] = "no select at all"  # e.g. the outbox, which the app role only inserts into
    assert all(value in ({"n": 0}, "no select at all") for value in seen.values()), seen
    assert {"n": 0} in seen.values()


def test_app_role_finds_another_tenants_execution_only_through_the_reference_lookup(
    conn: Connection, admin: Connection, other_tenants_rows: UUID
) -> None:
    # The webhook's one cross-tenant need: who owns a provider reference. It answers that and nothing more.
    with conn.transaction():
        rows = conn.execute(
            "select e.provider_reference from billing.billing_executions e where e.tenant_id = %s",
            [other_tenants_rows],
        ).fetchall()
    assert rows == []
    row = admin.execute(
        "select provider_reference from billing.billing_executions where tenant_id = %s", [other_tenants_rows]
    ).fetchone()
    assert row is not None
    reference = row["provider_reference"]
    found = conn.execute(
        "select tenant_id, status from billing.executions_with_provider_reference('sandbox', %s)", [reference]
    ).fetchall()
    assert found == [{"tenant_id": other_tenants_rows, "status": "completed"}]


def test_every_function_is_given_a_database_role() -> None:
    assert set(FUNCTION_ROLES) == set(FunctionName)
    assert {role for name, role in FUNCTION_ROLES.items() if name is not FunctionName.MIGRATE} <= set(RUNTIME_ROLES)


@pytest.mark.parametrize("role", RUNTIME_ROLES, ids=[r.value for r in RUNTIME_ROLES])
def test_login_urls_connect_as_their_role(admin_db_url: str, role: DatabaseRole) -> None:
    with connect(login_url(admin_db_url, role)) as conn:
        row = conn.execute("select current_user as me").fetchone()
    assert row == {"me": LOGIN_USERS[role].name}
