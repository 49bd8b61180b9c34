"""Audited reads per second against the same reads without audit, and the sequencer's throughput, in one run.

Each transaction is what an audited instrument read costs the execute/vault path: a small tenant-scoped read (one
execution by primary key, as billing_app) and, for the audited side, `record_audit_event` in the same transaction.
Eight connections, BENCH_SECONDS per phase (default 5):

  1. reads without audit;
  2. the same reads, audited;
  3. the same audited reads while the checkpointer (sequencer + signed checkpoint) runs back to back, to show that
     writers do not wait for it;
  4. the sequencer alone draining a backlog of BACKLOG entries: entries given a tree index (and checkpointed) per
     second.

An audited read is a write transaction: most of its cost over the plain read is the commit's WAL flush, which
PostgreSQL's group commit shares between concurrent writers (docs/pci.md, "Audit trail", has the figures).

    make bench                     # embedded PostgreSQL
    DATABASE_URL=... python bench/audit_append.py
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from uuid import UUID, uuid4

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.audit.checkpoints import Checkpoint
from billing.audit.keys import StaticKeyRing, rotated
from billing.audit.sequencer import AuditCheckpointer
from billing.db.connection import Connection, connect
from billing.db.execution_repository import ExecutionRepository
from billing.db.roles import DatabaseRole, login_url
from billing.db.tenancy import tenant_transaction
from billing.domain.execution import ExecutionRequest, PaymentRail
from billing.domain.workflow import WorkflowWriteContext
from billing.local.embedded_postgres import database_url, fresh_database

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
CONNECTIONS = 8
TENANTS = 16
PER_TENANT = 8
BACKLOG = int(os.environ.get("BENCH_AUDIT_BACKLOG", "50000"))
CONTEXT = WorkflowWriteContext.service_default()
_READ = "select id, status, amount, currency from billing.billing_executions where tenant_id = %s and id = %s"


class _NoStore:
    """Checkpoints stay in the database only: S3 latency is not what this measures."""

    def put(self, checkpoint: Checkpoint) -> None:
        del checkpoint

    def get(self, tree_size: int) -> Checkpoint | None:
        del tree_size
        return None


def bench_database(server: str) -> str:
    return fresh_database(server, "billing_bench_audit")


def seed(app_url: str) -> list[tuple[UUID, UUID]]:
    """A few executions per tenant to read (created through the repository, as the execute path does)."""
    rows: list[tuple[UUID, UUID]] = []
    request = ExecutionRequest(
        entity_contract_id="bench", plan_contract_id="bench", amount=1999, currency="EUR", payment_rail=PaymentRail.CARD
    )
    with connect(app_url) as conn:
        repository = ExecutionRepository(conn)
        for _ in range(TENANTS):
            tenant = uuid4()
            for n in range(PER_TENANT):
                # Unique per tenant, which is all an idempotency key needs to be.
                execution, _ = repository.insert_idempotent(
                    tenant, request, idempotency_key=f"bench-{n}", payment_provider="sandbox",
                    correlation_id="bench", context=CONTEXT,
                )  # fmt: skip
                rows.append((tenant, execution.id))
    return rows


def _read(conn: Connection, tenant: UUID, execution: UUID, audited: bool) -> None:
    with tenant_transaction(conn, tenant):
        row = conn.execute(_READ, [tenant, execution]).fetchone()
        assert row is not None
        if audited:
            record_audit_event(
                conn,
                AuditEvent(
                    AuditEventType.INSTRUMENT_READ,
                    AuditOutcome.GRANTED,
                    actor="bench-user",
                    tenant_id=tenant,
                    resource_type="payment_instrument",
                    resource_id=f"pi_{execution.hex[:16]}",
                    purpose="display",
                    correlation_id="bench",
                    source="203.0.113.1",
                ),
            )


def run_phase(app_url: str, targets: list[tuple[UUID, UUID]], *, audited: bool) -> float:
    """Transactions per second over CONNECTIONS connections for SECONDS."""
    counts = [0] * CONNECTIONS
    start = threading.Barrier(CONNECTIONS + 1)
    stop = threading.Event()

    def worker(index: int) -> None:
        rng = random.Random(index)
        with connect(app_url) as conn:
            start.wait()
            while not stop.is_set():
                tenant, execution = rng.choice(targets)
                _read(conn, tenant, execution, audited)
                counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(SECONDS)  # the measurement window, not a wait for a condition
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def with_sequencer_running(worker_url: str, phase: Callable[[], float]) -> tuple[float, int]:
    """Run `phase` while the checkpointer runs back to back; (phase result, checkpointer runs)."""
    stop = threading.Event()
    runs = [0]

    def sequencer() -> None:
        with connect(worker_url) as conn:
            checkpointer = AuditCheckpointer(conn, StaticKeyRing(rotated(None)), _NoStore())
            while not stop.is_set():
                checkpointer.run()
                runs[0] += 1

    thread = threading.Thread(target=sequencer)
    thread.start()
    try:
        return phase(), runs[0]
    finally:
        stop.set()
        thread.join()


def backlog(app_url: str, entries: int) -> None:
    """`entries` audit rows in one statement (the insert trigger stamps each, as for record_audit_event)."""
    with connect(app_url) as conn, conn.transaction():
        conn.execute(
            "insert into billing_audit.entries (event_type, outcome, actor, resource_type, resource_id)"
            " select 'chd.instrument_read', 'granted', 'bench', 'payment_instrument', 'pi_' || g"
            " from generate_series(1, %s) g",
            [entries],
        )


def drain(worker_url: str) -> tuple[int, float]:
    """Sequence every pending entry; (entries sequenced, seconds)."""
    with connect(worker_url) as conn:
        checkpointer = AuditCheckpointer(conn, StaticKeyRing(rotated(None)), _NoStore())
        began = time.perf_counter()
        total = 0
        while (run := checkpointer.run()).sequenced:
            total += run.sequenced
        return total, time.perf_counter() - began


def main() -> None:
    url = bench_database(database_url())
    app_url, worker_url = login_url(url, DatabaseRole.APP), login_url(url, DatabaseRole.WORKER)
    targets = seed(app_url)
    print(f"audited reads: {CONNECTIONS} connections, {SECONDS:.0f} s per phase, as billing_app under row security")
    plain = run_phase(app_url, targets, audited=False)
    audited = run_phase(app_url, targets, audited=True)
    print(f"  reads without audit           {plain:9.1f} tx/s")
    print(f"  reads + record_audit_event    {audited:9.1f} tx/s   ratio {audited / plain:.2f}")
    concurrent, runs = with_sequencer_running(worker_url, lambda: run_phase(app_url, targets, audited=True))
    print(f"  ... while the sequencer runs  {concurrent:9.1f} tx/s   ratio {concurrent / plain:.2f}"
          f"   ({runs} checkpointer runs meanwhile)")  # fmt: skip
    drain(worker_url)
    backlog(app_url, BACKLOG)
    sequenced, seconds = drain(worker_url)
    rate = sequenced / seconds if seconds else 0.0
    print(f"sequencer: a backlog of {sequenced} entries given tree indexes and checkpointed in {seconds:.2f} s"
          f" -> {rate:,.0f} entries/s")  # fmt: skip


if __name__ == "__main__":
    main()
