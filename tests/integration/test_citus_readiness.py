"""Every tenant table could be distributed on tenant_id: it leads each primary key, unique index and foreign key."""

from __future__ import annotations

from billing.db.connection import Connection
from tests.integration.table_kinds import PLATFORM_TABLES, REFERENCE_TABLES

_TABLES = """
select c.oid, c.relname
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
 where n.nspname = 'billing' and c.relkind in ('r', 'p')
"""
_UNIQUE_INDEXES = """
select i.indexrelid::regclass::text as name, a.attname as first_column
  from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
 where i.indrelid = %s and (i.indisunique or i.indisprimary)
"""
_FOREIGN_KEYS = """
select con.conname, a.attname as first_column, ref.relname as referenced_table, ra.attname as referenced_first
  from pg_constraint con
  join pg_attribute a on a.attrelid = con.conrelid and a.attnum = con.conkey[1]
  join pg_class ref on ref.oid = con.confrelid
  join pg_attribute ra on ra.attrelid = con.confrelid and ra.attnum = con.confkey[1]
 where con.conrelid = %s and con.contype = 'f'
"""


def test_every_tenant_table_key_is_led_by_tenant_id(conn: Connection) -> None:
    tables = conn.execute(_TABLES).fetchall()
    tenant_tables = [t for t in tables if t["relname"] not in REFERENCE_TABLES | PLATFORM_TABLES]
    assert {t["relname"] for t in tenant_tables} >= {
        "billing_executions",
        "billing_execution_events",
        "billing_outbox",
        "contract_term_datetimes",
    }
    problems: list[str] = []
    for table in tenant_tables:
        name = table["relname"]
        column = conn.execute(
            "select format_type(atttypid, atttypmod) as type, attnotnull from pg_attribute"
            " where attrelid = %s and attname = 'tenant_id'",
            [table["oid"]],
        ).fetchone()
        if column is None or column["type"] != "uuid" or not column["attnotnull"]:
            problems.append(f"{name}: tenant_id uuid not null is missing")
        unique = conn.execute(_UNIQUE_INDEXES, [table["oid"]]).fetchall()
        if not unique:
            problems.append(f"{name}: has no primary key")
        problems += [
            f"{name}: unique index {idx['name']} starts with {idx['first_column']}"
            for idx in unique
            if idx["first_column"] != "tenant_id"
        ]
        for fk in conn.execute(_FOREIGN_KEYS, [table["oid"]]).fetchall():
            if fk["referenced_table"] in REFERENCE_TABLES:
                continue
            if fk["first_column"] != "tenant_id" or fk["referenced_first"] != "tenant_id":
                problems.append(f"{name}: foreign key {fk['conname']} is not led by tenant_id on both sides")
    assert problems == []


def test_reference_tables_carry_no_tenant_data(conn: Connection) -> None:
    rows = conn.execute(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id'"
        " where n.nspname = 'billing' and c.relname = any(%s)",
        [list(REFERENCE_TABLES)],
    ).fetchall()
    assert rows == []
