"""The sequencer and the checkpointer on a database of their own: entries get contiguous tree indexes in id order
of what had committed, late commits get later indexes, concurrent writers never wait, and every grown tree gets a
signed checkpoint in the database and in the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
import pytest

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, merkle, record_audit_event
from billing.audit.checkpoints import Checkpoint, signature_problem
from billing.audit.keys import KeyRing, StaticKeyRing
from billing.audit.sequencer import AuditCheckpointer
from billing.audit.verify import verify
from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url
from billing.db.sqlstates import GuardState

RING = KeyRing(active="k1", keys={"k1": b"k" * 32})


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[int, Checkpoint] = {}
        self.fail = False

    def put(self, checkpoint: Checkpoint) -> None:
        if self.fail:
            raise ConnectionError("s3 unavailable")
        self.objects[checkpoint.tree_size] = checkpoint

    def get(self, tree_size: int) -> Checkpoint | None:
        return self.objects.get(tree_size)

    def sizes(self) -> list[int]:
        return sorted(self.objects)


def event(n: int = 0) -> AuditEvent:
    return AuditEvent(
        AuditEventType.INSTRUMENT_READ,
        AuditOutcome.GRANTED,
        actor=f"user-{n}",
        tenant_id=uuid4(),
        resource_type="payment_instrument",
        resource_id=f"pi_{n}",
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def checkpointer(db: Connection, store: MemoryStore) -> AuditCheckpointer:
    return AuditCheckpointer(db, StaticKeyRing(RING), store)


@pytest.fixture(autouse=True)
def base(checkpointer: AuditCheckpointer, store: MemoryStore) -> int:
    """The tree the migrations left (their own audit entries), sequenced and checkpointed before the test."""
    return checkpointer.run().tree_size


@pytest.fixture
def auditor(private_admin_url: str) -> Iterator[Connection]:
    with connect(login_url(private_admin_url, DatabaseRole.AUDITOR)) as connection:
        yield connection


def _leaves(admin: Connection) -> list[dict[str, Any]]:
    return admin.execute(
        "select l.seq, l.entry_id, l.leaf_hash, e.leaf_hash as entry_hash from billing_audit.leaves l"
        " join billing_audit.entries e on e.id = l.entry_id order by l.seq"
    ).fetchall()


def test_a_run_sequences_committed_entries_in_id_order_and_signs_the_tree(
    app_db: Connection, checkpointer: AuditCheckpointer, store: MemoryStore, private_admin: Connection, base: int
) -> None:
    for n in range(5):
        record_audit_event(app_db, event(n))
    run = checkpointer.run()
    assert (run.tree_size, run.sequenced) == (base + 5, 5)
    leaves = _leaves(private_admin)
    assert [row["seq"] for row in leaves] == list(range(base + 5))
    assert [row["entry_id"] for row in leaves] == sorted(row["entry_id"] for row in leaves)
    assert all(row["leaf_hash"] == row["entry_hash"] for row in leaves)
    assert run.checkpoint is not None
    assert run.checkpoint.root_hash == merkle.root([bytes(row["leaf_hash"]) for row in leaves])
    assert signature_problem(run.checkpoint, RING) is None
    assert {size: c for size, c in store.objects.items() if size > base} == {base + 5: run.checkpoint}
    assert run.exported == [base + 5]


def test_a_run_with_nothing_new_writes_no_checkpoint(
    app_db: Connection, checkpointer: AuditCheckpointer, private_admin: Connection, base: int
) -> None:
    before = private_admin.execute("select count(*) as n from billing_audit.checkpoints").fetchone()
    assert before is not None
    record_audit_event(app_db, event())
    assert checkpointer.run().checkpoint is not None
    again = checkpointer.run()
    assert (again.tree_size, again.sequenced, again.checkpoint) == (base + 1, 0, None)
    row = private_admin.execute("select count(*) as n from billing_audit.checkpoints").fetchone()
    assert row == {"n": before["n"] + 1}


def test_an_entry_committed_after_the_sequencers_snapshot_gets_the_next_index_not_a_gap(
    private_app_url: str, app_db: Connection, checkpointer: AuditCheckpointer, private_admin: Connection, base: int
) -> None:
    with connect(private_app_url) as slow:
        slow.execute("begin")
        record_audit_event(slow, event(1))  # the lower id, still uncommitted
        record_audit_event(app_db, event(2))  # a higher id, committed
        first = checkpointer.run()
        assert (first.tree_size, first.sequenced) == (base + 1, 1)
        slow.execute("commit")
    second = checkpointer.run()
    assert (second.tree_size, second.sequenced) == (base + 2, 1)
    leaves = _leaves(private_admin)[base:]
    assert [row["seq"] for row in leaves] == [base, base + 1]
    ids = [row["entry_id"] for row in leaves]
    assert ids[0] > ids[1]  # tree order is the order of sequencing, not of ids: the late commit came last


def test_the_floor_never_passes_an_entry_still_in_flight(
    private_app_url: str, app_db: Connection, checkpointer: AuditCheckpointer, private_admin: Connection, base: int
) -> None:
    with connect(private_app_url) as slow:
        slow.execute("begin")
        record_audit_event(slow, event(1))
        for n in range(3):
            record_audit_event(app_db, event(n))
            checkpointer.run()
        floors = private_admin.execute("select max(floor_entry_id) as floor from billing_audit.sequencer_runs")
        in_flight = private_admin.execute("select last_value from billing_audit.entry_ids").fetchone()
        assert in_flight is not None
        floor = floors.fetchone()
        assert floor is not None
        assert floor["floor"] < in_flight["last_value"] - 2
        slow.execute("commit")
    run = checkpointer.run()
    assert run.tree_size == base + 4
    # However the floor moved (any long transaction of the cluster holds it back), nothing at or below it is
    # missing from the tree.
    record_audit_event(app_db, event(9))
    checkpointer.run()
    missed = private_admin.execute(
        "select count(*) as n from billing_audit.entries e"
        " where e.id <= (select max(floor_entry_id) from billing_audit.sequencer_runs)"
        " and not exists (select 1 from billing_audit.leaves l where l.entry_id = e.id)"
    ).fetchone()
    assert missed == {"n": 0}
    assert checkpointer.run().tree_size == base + 5


def test_batches_sequence_a_backlog_larger_than_one_statement(
    app_db: Connection, db: Connection, store: MemoryStore, private_admin: Connection, base: int
) -> None:
    for n in range(23):
        record_audit_event(app_db, event(n))
    run = AuditCheckpointer(db, StaticKeyRing(RING), store, batch_size=5, max_batches=3).run()
    assert (run.tree_size, run.sequenced) == (base + 15, 15)
    rest = AuditCheckpointer(db, StaticKeyRing(RING), store, batch_size=5, max_batches=3).run()
    assert (rest.tree_size, rest.sequenced) == (base + 23, 8)
    assert [row["seq"] for row in _leaves(private_admin)] == list(range(base + 23))


def test_checkpoints_extend_the_previous_frontier_to_the_full_trees_root(
    app_db: Connection, checkpointer: AuditCheckpointer, private_admin: Connection, base: int
) -> None:
    roots = []
    for batch in (3, 1, 4, 7):
        for n in range(batch):
            record_audit_event(app_db, event(n))
        run = checkpointer.run()
        assert run.checkpoint is not None
        roots.append((run.checkpoint.tree_size, run.checkpoint.root_hash))
    hashes = [bytes(row["leaf_hash"]) for row in _leaves(private_admin)]
    assert roots == [(size, merkle.root(hashes[:size])) for size in (base + 3, base + 4, base + 8, base + 15)]


def test_a_store_outage_is_caught_up_by_the_next_run(
    app_db: Connection, checkpointer: AuditCheckpointer, store: MemoryStore, base: int
) -> None:
    record_audit_event(app_db, event())
    store.fail = True
    with pytest.raises(ConnectionError):
        checkpointer.run()
    store.fail = False
    record_audit_event(app_db, event())
    run = checkpointer.run()
    assert run.exported == [base + 1, base + 2]
    assert store.sizes()[-2:] == [base + 1, base + 2]


def test_eight_writers_and_a_sequencer_at_once_leave_every_entry_in_the_tree_exactly_once(
    private_app_url: str, db: Connection, store: MemoryStore, auditor: Connection, private_admin: Connection, base: int
) -> None:
    per_writer, writers = 40, 8
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            with connect(private_app_url) as conn:
                for n in range(per_writer):
                    with conn.transaction():
                        record_audit_event(conn, event(n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    checkpointer = AuditCheckpointer(db, StaticKeyRing(RING), store, batch_size=7)
    runs = 0
    while any(thread.is_alive() for thread in threads) or runs == 0:
        checkpointer.run()
        runs += 1
    for thread in threads:
        thread.join()
    done.set()
    while checkpointer.run().sequenced:
        pass
    assert errors == []
    leaves = _leaves(private_admin)
    assert [row["seq"] for row in leaves] == list(range(base + per_writer * writers))
    assert len({row["entry_id"] for row in leaves}) == base + per_writer * writers
    report = verify(auditor, RING, store)
    assert report.ok, report.problems
    assert report.tree_size == base + per_writer * writers
    assert report.pending == 0


def test_the_tree_refuses_a_leaf_out_of_turn_or_a_checkpoint_that_does_not_grow(
    app_db: Connection, checkpointer: AuditCheckpointer, db: Connection, private_admin: Connection, base: int
) -> None:
    record_audit_event(app_db, event())
    run = checkpointer.run()
    assert run.checkpoint is not None
    entry = private_admin.execute("select id, leaf_hash from billing_audit.entries order by id desc").fetchone()
    assert entry is not None
    with pytest.raises(psycopg.Error) as caught, private_admin.transaction():
        private_admin.execute("set local role billing_owner")
        private_admin.execute(
            "insert into billing_audit.leaves (seq, entry_id, leaf_hash) values (%s, %s, %s)",
            [base + 5, entry["id"], entry["leaf_hash"]],
        )
    assert caught.value.sqlstate == GuardState.AUDIT_TREE
    with pytest.raises(psycopg.Error) as refused, db.transaction():
        db.execute(
            "insert into billing_audit.checkpoints values (%s, %s, now(), 'k1', 'HMAC-SHA256', %s, %s)",
            [base + 1, b"r" * 32, b"s" * 32, [b"r" * 32]],
        )
    assert refused.value.sqlstate in {GuardState.AUDIT_TREE, "23505"}
    with pytest.raises(psycopg.Error) as too_big, db.transaction():
        db.execute(
            "insert into billing_audit.checkpoints values (%s, %s, now(), 'k1', 'HMAC-SHA256', %s, %s)",
            [base + 2, b"r" * 32, b"s" * 32, [b"r" * 32]],
        )
    assert too_big.value.sqlstate == GuardState.AUDIT_TREE


def test_the_sequencer_refuses_a_snapshot_it_cannot_reason_about(db: Connection) -> None:
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute("set transaction isolation level repeatable read")
        db.execute("select * from billing_audit.sequence_entries(10)")
    assert caught.value.sqlstate == GuardState.AUDIT_TREE


def test_checkpoint_times_are_the_databases(checkpointer: AuditCheckpointer, app_db: Connection) -> None:
    record_audit_event(app_db, event())
    run = checkpointer.run()
    assert run.checkpoint is not None
    assert abs((run.checkpoint.created_at - datetime.now(UTC)).total_seconds()) < 60
