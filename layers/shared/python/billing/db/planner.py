"""A planner setting for the workers' claims: walk the claim's index in the claim's order and stop at its LIMIT.

Under the worker's system scope the planner cannot see through row-level security. The policy's check
(`current_setting('billing.scope', true) = 'system' or tenant_id = ...`, billing.worker_scope_visible) gets a
default selectivity of half a per cent, so every claim looks as if a row or two qualified. For a row or two,
collecting every candidate (a bitmap scan) and sorting them is as cheap as walking the index in the claim's order,
so that is the plan it takes; for the real thousands (a week of debits awaiting settlement, an outbox backlog) it
reads and sorts all of them for each batch of twenty or a hundred. Each claim's index is in the claim's ORDER BY
(sql/20261219_billing_hot_query_indexes.sql), so with bitmap and sequential scans off the claim reads one batch
and stops (bench/query_plans.py shows both plans).

Transaction-local (set_config(..., true)), like every setting of billing.db.tenancy: a claim runs in a short
transaction of its own, which the setting does not outlive, and behind RDS Proxy nothing leaks to the next client.
"""

from __future__ import annotations

from typing import Final

from billing.db.connection import Connection

_WALK_IN_INDEX_ORDER: Final = (
    "select set_config('enable_bitmapscan', 'off', true), set_config('enable_seqscan', 'off', true)"
)
_NOR_SORT: Final = ", set_config('enable_sort', 'off', true)"


def walk_in_index_order(conn: Connection, *, forbid_sort: bool = False) -> None:
    """For the rest of the open transaction, plan with index scans only (see the module docstring). `forbid_sort`
    also rules out reading a range and sorting it, for a page whose index is in the page's order (the settlement
    period scan, the relay's claim: another index's range plus a sort looks cheaper than the walk for the same
    misjudged selectivity). A sort nothing else can replace (an ORDER BY over a CTE's rows) still runs."""
    conn.execute(_WALK_IN_INDEX_ORDER + (_NOR_SORT if forbid_sort else ""))
