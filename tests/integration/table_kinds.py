"""The tables that are not any one tenant's, named once for every test that sorts the schema's tables by kind."""

from __future__ import annotations

from typing import Final

# Small global lookup tables, replicated to every node in Citus (create_reference_table), hence no tenant_id.
REFERENCE_TABLES: Final = frozenset(
    {"execution_status_transitions", "execution_event_types", "execution_event_transitions"}
)
# Platform-wide records, outside tenancy on purpose: one provider's settlement file covers many tenants, so a
# discrepancy's tenant_id says whose item it is, not who may read it (and the worker writes them with COPY, which
# row-level security does not allow). They stay on the coordinator in Citus (local tables), written by the
# settlement function in bulk and read by finance, never joined per tenant. Only billing_worker and
# billing_finance hold any privilege on the reports and discrepancies
# (test_settlement_store.py::test_no_other_role_holds_any_privilege_on_the_settlement_tables), only billing_worker
# on the staged lines of one report run (sql/20261223_billing_settlement_staging.sql).
PLATFORM_TABLES: Final = frozenset(
    {
        "settlement_reports",
        "settlement_discrepancies",
        "settlement_staging_runs",
        "settlement_staged_lines",
        "settlement_staged_matches",
    }
)
