"""`verify` on a trail that was tampered with by someone able to switch the triggers off (the owner, a superuser):
every kind of change is reported, at the row that differs, and the command exits 1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest

from billing.audit import AuditEvent, AuditEventType, AuditOutcome, record_audit_event
from billing.audit.__main__ import main
from billing.audit.checkpoints import sign
from billing.audit.keys import KeyRing, StaticKeyRing, key_ring_secret_value
from billing.audit.sequencer import AuditCheckpointer
from billing.audit.verify import verify
from billing.db.connection import Connection, connect
from billing.db.roles import DatabaseRole, login_url
from tests.integration.test_audit_checkpoints import MemoryStore

RING = KeyRing(active="k1", keys={"k1": b"k" * 32})


def _event(n: int) -> AuditEvent:
    return AuditEvent(
        AuditEventType.INSTRUMENT_USED_IN_CHARGE,
        AuditOutcome.GRANTED,
        actor=f"function:execute#{n}",
        tenant_id=uuid4(),
        resource_type="payment_instrument",
        resource_id=f"pi_{n}",
        purpose="charge",
        details={"execution_id": str(uuid4())},
    )


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def base(db: Connection, store: MemoryStore) -> int:
    """The tree the migrations' own audit entries make, sequenced and checkpointed first: B leaves."""
    return AuditCheckpointer(db, StaticKeyRing(RING), store).run().tree_size


@pytest.fixture
def trail(app_db: Connection, db: Connection, store: MemoryStore, base: int) -> AuditCheckpointer:
    """After the migrations' B leaves, ten entries in three checkpoints (sizes B+4, B+7, B+10) and two entries
    still unsequenced."""
    checkpointer = AuditCheckpointer(db, StaticKeyRing(RING), store)
    for batch in (range(4), range(4, 7), range(7, 10)):
        for n in batch:
            record_audit_event(app_db, _event(n))
        checkpointer.run()
    for n in (10, 11):
        record_audit_event(app_db, _event(n))
    return checkpointer


@pytest.fixture
def auditor(private_admin_url: str) -> Iterator[Connection]:
    with connect(login_url(private_admin_url, DatabaseRole.AUDITOR)) as connection:
        yield connection


def _tamper(private_admin: Connection, statement: str, params: list[object] | None = None) -> None:
    """What only a superuser (or the owner disabling triggers) can do: change rows with every trigger off."""
    with private_admin.transaction():
        private_admin.execute("set local session_replication_role = replica")
        private_admin.execute(statement, params or [])


def _entry_at(private_admin: Connection, seq: int) -> int:
    row = private_admin.execute("select entry_id from billing_audit.leaves where seq = %s", [seq]).fetchone()
    assert row is not None
    return int(row["entry_id"])


def _first(auditor: Connection, store: MemoryStore | None = None) -> str:
    report = verify(auditor, RING, store)
    assert not report.ok
    return str(report.problems[0])


def test_a_clean_trail_verifies(trail: AuditCheckpointer, auditor: Connection, store: MemoryStore, base: int) -> None:
    report = verify(auditor, RING, store)
    assert report.ok, report.problems
    checkpoints = 3 + (1 if base else 0)
    counts = (report.entries, report.tree_size, report.checkpoints, report.pending)
    assert counts == (base + 12, base + 10, checkpoints, 2)
    assert report.store_checkpoints == checkpoints


def test_the_owner_cannot_edit_a_row_while_the_triggers_stand(
    trail: AuditCheckpointer, private_admin: Connection
) -> None:
    with pytest.raises(Exception, match="append-only"), private_admin.transaction():
        private_admin.execute("set local role billing_owner")
        private_admin.execute("update billing_audit.entries set actor = 'someone else'")


def test_an_edited_column_is_reported_at_its_entry(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, base: int
) -> None:
    entry = _entry_at(private_admin, base + 5)
    _tamper(private_admin, "update billing_audit.entries set actor = 'nobody' where id = %s", [entry])
    assert _first(auditor) == f"entry {entry}: leaf bytes do not match the entry's columns"


def test_edited_leaf_bytes_are_reported_at_their_entry(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, base: int
) -> None:
    entry = _entry_at(private_admin, base + 2)
    _tamper(
        private_admin,
        "update billing_audit.entries set leaf = convert_to(replace(convert_from(leaf, 'UTF8'), 'pi_2', 'pi_X'),"
        " 'UTF8') where id = %s",
        [entry],
    )
    assert _first(auditor).startswith(f"entry {entry}: leaf bytes do not match")


def test_a_consistent_rewrite_of_one_entry_is_caught_by_the_signed_roots(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, base: int
) -> None:
    # Columns, leaf, leaf hash and the tree's copy all rewritten to agree: only the checkpoints still remember.
    entry = _entry_at(private_admin, base + 5)
    with private_admin.transaction():
        private_admin.execute("set local session_replication_role = replica")
        private_admin.execute("update billing_audit.entries set resource_id = 'pi_forged' where id = %s", [entry])
        private_admin.execute(
            "update billing_audit.entries set leaf = billing_audit.canonical_leaf(entries) where id = %s", [entry]
        )
        private_admin.execute(
            "update billing_audit.entries set leaf_hash = sha256('\\x00'::bytea || leaf) where id = %s", [entry]
        )
        private_admin.execute(
            "update billing_audit.leaves l set leaf_hash = e.leaf_hash from billing_audit.entries e"
            " where e.id = l.entry_id and l.entry_id = %s",
            [entry],
        )
    report = verify(auditor, RING)
    problems = [str(p) for p in report.problems]
    assert problems[0] == f"checkpoint {base + 7}: root hash is not the root of the stored tree of that size"
    assert not any(
        p.startswith(f"checkpoint {base + 4}:") for p in problems
    )  # the tree before the change still verifies


def test_a_deleted_leaf_is_reported_at_its_tree_index(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, base: int
) -> None:
    _tamper(private_admin, "delete from billing_audit.leaves where seq = %s", [base + 6])
    expected = f"tree index {base + 6}: missing (the next stored index is {base + 7}): a leaf was deleted"
    assert _first(auditor) == expected


def test_a_deleted_entry_is_reported_at_its_tree_index(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, base: int
) -> None:
    entry = _entry_at(private_admin, base + 3)
    _tamper(private_admin, "delete from billing_audit.entries where id = %s", [entry])
    assert _first(auditor) == f"tree index {base + 3}: entry {entry} is missing: it was deleted"


def test_a_forged_checkpoint_signature_is_reported(
    trail: AuditCheckpointer, auditor: Connection, app_db: Connection, db: Connection
) -> None:
    record_audit_event(app_db, _event(99))
    with db.transaction():
        db.execute("select * from billing_audit.sequence_entries(100)")
        row = db.execute("select max(seq) + 1 as size from billing_audit.leaves").fetchone()
        assert row is not None
        db.execute(
            "insert into billing_audit.checkpoints values (%s, %s, now(), 'k1', 'HMAC-SHA256', %s, '{}')",
            [row["size"], b"r" * 32, b"s" * 32],
        )
    problems = [str(p) for p in verify(auditor, RING).problems]
    assert problems[0] == f"checkpoint {row['size']}: signature does not match"
    assert f"checkpoint {row['size']}: root hash is not the root of the stored tree of that size" in problems


def test_a_validly_signed_checkpoint_of_another_history_is_reported_as_inconsistent(
    trail: AuditCheckpointer, auditor: Connection, app_db: Connection, db: Connection, base: int
) -> None:
    # Someone holding the key signs a root of a different tree: the signature holds, the tree disagrees.
    record_audit_event(app_db, _event(99))
    forged = sign(base + 11, b"f" * 32, datetime.now(UTC), RING)
    with db.transaction():
        db.execute("select * from billing_audit.sequence_entries(100)")
        db.execute(
            "insert into billing_audit.checkpoints values (%s, %s, %s, %s, %s, %s, %s)",
            [base + 11, forged.root_hash, forged.created_at, forged.key_id, forged.algorithm, forged.signature, []],
        )
    problems = [str(p) for p in verify(auditor, RING).problems]
    assert problems[0] == f"checkpoint {base + 11}: root hash is not the root of the stored tree of that size"
    inconsistent = f"checkpoint {base + 11}: not consistent with checkpoint {base + 10}"
    assert any(p.startswith(inconsistent) for p in problems)


def test_a_checkpoint_deleted_from_the_database_is_caught_by_its_locked_copy(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection, store: MemoryStore, base: int
) -> None:
    _tamper(private_admin, "delete from billing_audit.checkpoints where tree_size = %s", [base + 7])
    assert verify(auditor, RING).ok  # the database alone is still self-consistent
    expected = f"s3 checkpoint {base + 7}: the database holds no identical checkpoint of this size"
    assert _first(auditor, store) == expected


def test_an_entry_slipped_in_below_the_sequencers_floor_is_reported(
    trail: AuditCheckpointer, auditor: Connection, private_admin: Connection
) -> None:
    # Entry ids start at 1 and the floor at 0: an id of 0 is below any floor, so the sequencer never looks at it.
    _tamper(
        private_admin,
        "insert into billing_audit.entries (id, occurred_at, event_type, outcome, actor, resource_type,"
        " database_user, leaf, leaf_hash) values (0, now(), 'chd.instrument_read', 'granted',"
        " 'ghost', 'payment_instrument', 'ghost', 'x', sha256('x'))",
    )
    problems = [str(p) for p in verify(auditor, RING).problems]
    assert "entry 0: below the sequencer's floor but not in the tree" in problems


def test_the_command_exits_1_and_names_the_first_difference(
    trail: AuditCheckpointer,
    private_admin: Connection,
    private_admin_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    base: int,
) -> None:
    ring_file = tmp_path / "ring.json"
    ring_file.write_text(key_ring_secret_value(RING))
    url = login_url(private_admin_url, DatabaseRole.AUDITOR)
    assert main(["--database-url", url, "verify", "--key-ring-file", str(ring_file)]) == 0
    assert "OK" in capsys.readouterr().out
    _tamper(private_admin, "delete from billing_audit.leaves where seq = %s", [base + 8])
    assert main(["--database-url", url, "verify", "--key-ring-file", str(ring_file)]) == 1
    out = capsys.readouterr().out
    assert f"FIRST DIFFERENCE: tree index {base + 8}: missing" in out
    # Running verify is an access to the audit log, and is recorded as one.
    recorded = private_admin.execute(
        "select count(*) as n from billing_audit.entries where event_type = 'audit.accessed' and resource_id = 'verify'"
    ).fetchone()
    assert recorded == {"n": 2}
