"""The database roles: who owns the schema, who the functions connect as, and what each may do.

Group roles (NOLOGIN) hold the privileges; login users are members of exactly one of them, so a password
can rotate (Secrets Manager, one secret per login user) without touching a single grant:

- `billing_owner` owns the schemas and every object in them. Only the migration runner acts as it (it connects
  as the cluster's admin and `SET ROLE`s); nothing at run time can, so no function can disable a trigger, switch
  row-level security off or drop a guard.
- `billing_app` is the execute, webhook and authorizer functions: table-by-table DML, never ownership, TRUNCATE,
  DDL or BYPASSRLS. Row-level security confines it to the tenant its transaction names; no setting widens that.
- `billing_worker` is the outbox relay, retry consumer, reconciliation and settlement functions. They work across
  tenants by design, which a row-level security policy grants to this role alone (not a variable any session can
  set).
- `billing_vault` is the card vault function, the only role that can read the encrypted card numbers.
- `billing_auditor` is the auditors' read-only view of the audit trail.
- `billing_finance` is the settlement reports API: it reads the saved reports (platform-wide, every tenant's) and
  writes a discrepancy's resolution, nothing else.

The grants themselves live in the migrations (sql/), next to the tables they are about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from psycopg import sql
from psycopg.conninfo import make_conninfo

from billing.db.connection import Connection
from billing.resource_names import FunctionName


class DatabaseRole(StrEnum):
    """A group role; its value is the role's name in PostgreSQL."""

    OWNER = "billing_owner"
    APP = "billing_app"
    WORKER = "billing_worker"
    # The card vault: the only role that reads encrypted card numbers (and the only code that sees a PAN).
    VAULT = "billing_vault"
    # Auditors' read-only view of the audit trail.
    AUDITOR = "billing_auditor"
    # Finance's view of the saved settlement reports, every tenant's; it may write a discrepancy's resolution.
    FINANCE = "billing_finance"


RUNTIME_ROLES: Final = (
    DatabaseRole.APP,
    DatabaseRole.WORKER,
    DatabaseRole.VAULT,
    DatabaseRole.AUDITOR,
    DatabaseRole.FINANCE,
)
# The roles whose functions change executions (the raw-SQL guard tests run as each).
EXECUTION_WRITERS: Final = (DatabaseRole.APP, DatabaseRole.WORKER)


@dataclass(frozen=True, slots=True)
class LoginUser:
    name: str
    role: DatabaseRole
    # Local runs only: the password the embedded server (and any DATABASE_URL server) gets when no other is given.
    # In AWS each login user's password lives in its own rotated Secrets Manager secret.
    dev_password: str


LOGIN_USERS: Final = {
    DatabaseRole.APP: LoginUser("billing_app_user", DatabaseRole.APP, "billing_app_dev_NOT_FOR_PRODUCTION"),
    DatabaseRole.WORKER: LoginUser("billing_worker_user", DatabaseRole.WORKER, "billing_worker_dev_NOT_FOR_PRODUCTION"),
    DatabaseRole.VAULT: LoginUser("billing_vault_user", DatabaseRole.VAULT, "billing_vault_dev_NOT_FOR_PRODUCTION"),
    DatabaseRole.AUDITOR: LoginUser(
        "billing_auditor_user", DatabaseRole.AUDITOR, "billing_auditor_dev_NOT_FOR_PRODUCTION"
    ),
    DatabaseRole.FINANCE: LoginUser(
        "billing_finance_user", DatabaseRole.FINANCE, "billing_finance_dev_NOT_FOR_PRODUCTION"
    ),
}

# The schemas the owner owns; anything created in them by another role is handed over on every migration run.
OWNED_SCHEMAS: Final = (
    "billing",
    "billing_audit",
    "billing_inbox",
    "billing_meta",
    "billing_vault",
    "sandbox_provider",
)

# Cluster-level objects cannot live in a per-database migration (roles are shared by every database of a cluster),
# so the runner ensures them on every run, idempotently. Concurrent runners on other databases of the same cluster
# may race on CREATE ROLE: a duplicate is fine.
_ENSURE_GROUP_ROLE = """
do $$ begin
    execute format('create role %I nologin noinherit', {name});
exception when duplicate_object or unique_violation then null;
end $$
"""
_ENSURE_LOGIN_USER = """
do $$ begin
    execute format('create role %I login inherit in role %I password %L', {name}, {role}, {password});
exception when duplicate_object or unique_violation then null;
end $$
"""

# The admin must be able to SET ROLE to the owner (on RDS the master user is no superuser). Idempotent, and a
# concurrent runner granting the same membership is fine.
_ACT_AS_OWNER = """
do $$ begin
    if not pg_has_role(current_user, 'billing_owner', 'member') then
        grant billing_owner to current_user;
    end if;
exception when unique_violation or duplicate_object then null;
end $$
"""

# Objects a previous runner created as the admin (before the owner existed) are handed to the owner, so the
# ownership rule holds for every database whatever its history. Extensions' objects are left to their extension.
_HAND_OVER = """
do $$
declare
    item record;
begin
    for item in
        select format('alter schema %I owner to billing_owner', n.nspname) as ddl
          from pg_namespace n
         where n.nspname = any({schemas}) and pg_get_userbyid(n.nspowner) <> 'billing_owner'
        union all
        select format('alter %s %s owner to billing_owner',
                      case c.relkind when 'S' then 'sequence' when 'v' then 'view' when 'm' then 'materialized view'
                                     else 'table' end,
                      c.oid::regclass)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any({schemas}) and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
           and pg_get_userbyid(c.relowner) <> 'billing_owner'
           and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype in ('i', 'a', 'e'))
        union all
        select format('alter %s %s owner to billing_owner',
                      case p.prokind when 'p' then 'procedure' else 'function' end, p.oid::regprocedure)
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = any({schemas}) and pg_get_userbyid(p.proowner) <> 'billing_owner'
           and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')
        union all
        select format('alter type %s owner to billing_owner', t.oid::regtype)
          from pg_type t join pg_namespace n on n.oid = t.typnamespace
         where n.nspname = any({schemas}) and t.typtype in ('c', 'd', 'e') and t.typrelid = 0
           and pg_get_userbyid(t.typowner) <> 'billing_owner'
    loop
        execute item.ddl;
    end loop;
end $$
"""


def ensure_roles(conn: Connection, passwords: Mapping[DatabaseRole, str] | None = None) -> None:
    """Create the group roles and login users if missing and let the connected admin act as the owner.

    Runs as the cluster's admin (a superuser locally, the RDS master user in AWS). `passwords` sets the login
    users' passwords (AWS: read from their secrets); without it they get their development passwords.
    """
    for role in DatabaseRole:
        conn.execute(sql.SQL(_ENSURE_GROUP_ROLE).format(name=sql.Literal(role.value)))
    for user in LOGIN_USERS.values():
        given = (passwords or {}).get(user.role)
        conn.execute(
            sql.SQL(_ENSURE_LOGIN_USER).format(
                name=sql.Literal(user.name),
                role=sql.Literal(user.role),
                password=sql.Literal(given or user.dev_password),
            )
        )
        # Only a given password is (re)written: local runs keep the development one, and concurrent runners on
        # other databases of the cluster (the test suite in parallel) never update the same role row at once.
        if given:
            conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(user.name), sql.Literal(given)))
    conn.execute(_ACT_AS_OWNER)
    secure_database(conn)


def secure_database(conn: Connection) -> None:
    """Database-level privileges (they are not copied with a template): the owner creates schemas, the run-time
    roles connect, nobody else creates anything or uses temporary tables."""
    conn.execute(
        sql.SQL(
            "grant create, connect on database {db} to {owner}; "
            "revoke create, temporary on database {db} from public; "
            "grant connect on database {db} to {roles}"
        ).format(
            db=sql.Identifier(conn.info.dbname),
            owner=sql.Identifier(DatabaseRole.OWNER),
            roles=sql.SQL(", ").join(sql.Identifier(role) for role in RUNTIME_ROLES),
        )
    )


def hand_over_ownership(conn: Connection) -> None:
    """Make billing_owner the owner of every schema and object of ours that another role still owns."""
    conn.execute(sql.SQL(_HAND_OVER).format(schemas=sql.Literal(list(OWNED_SCHEMAS))))


def login_url(admin_url: str, role: DatabaseRole, password: str | None = None) -> str:
    """The URL of `role`'s login user on the same server and database as `admin_url` (local runs and tests)."""
    user = LOGIN_USERS[role]
    return make_conninfo(admin_url, user=user.name, password=password or user.dev_password)


# Which role each function connects as (its own secret in AWS, its own URL locally). The migrate function is the
# admin that acts as the owner; nothing else may.
FUNCTION_ROLES: Final = MappingProxyType(
    {
        FunctionName.EXECUTE: DatabaseRole.APP,
        FunctionName.WEBHOOK: DatabaseRole.APP,
        FunctionName.AUTHORIZER: DatabaseRole.APP,
        FunctionName.OUTBOX_RELAY: DatabaseRole.WORKER,
        FunctionName.RETRY_DLQ: DatabaseRole.WORKER,
        FunctionName.RECONCILE: DatabaseRole.WORKER,
        FunctionName.SETTLEMENT_REPORT: DatabaseRole.WORKER,
        FunctionName.MIGRATE: DatabaseRole.OWNER,
        FunctionName.AUDIT: DatabaseRole.AUDITOR,
        FunctionName.AUDIT_CHECKPOINT: DatabaseRole.WORKER,
        FunctionName.VAULT: DatabaseRole.VAULT,
        FunctionName.THREE_DS: DatabaseRole.APP,
        FunctionName.SETTLEMENT_API: DatabaseRole.FINANCE,
    }
)
